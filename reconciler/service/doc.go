// Package service is the reconciler's one composition root: from a Config
// (the values of genesis-reconciler's flags) New opens the store, reads the
// keys and wires the state repository's watcher, the cloud pool factory,
// the control loop, the event listener, the agent protocol (agentapi), the
// tenant API (stateapi) and the HTTP server, exactly as a production
// replica runs them; Run runs them under one errgroup until its context
// ends. genesis-reconciler and the local fleet (package localfleet: the
// demo and the end-to-end tests) start their reconciler through it, so the
// demo and the tests run the server production runs; so does the load tool
// (cmd/genesis-load), with Config.AgentSideOnly: the same server without the
// control loop, which needs DigitalOcean, so its figures are the server's.
//
// It is a library of the control plane: it must not import a command, the
// fakes (the DigitalOcean simulator, the n8n emulator) or test scaffolding,
// and it parses no flags and registers nothing on the default Prometheus
// registry: the caller passes the logger and the registry.
package service
