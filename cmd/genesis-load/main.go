// Command genesis-load is the load tool behind `make bench`: it simulates
// many agents (real enrollment with one-time tokens, manifest long-polls
// with If-None-Match, heartbeats every 60 s compressed by --speedup)
// against a reconciler on real Postgres, and reports throughput and latency
// percentiles, each figure against a baseline measured in the same run.
//
// By default it is self-contained: it makes a real git state repository
// declaring one tenant per simulated droplet and starts, as a subprocess of
// itself (`genesis-load serve`), a throwaway Postgres and the reconciler
// genesis-reconciler runs, built by reconciler/service with
// Config.AgentSideOnly (no control loop, no DigitalOcean): the state
// repository's watcher triggered by a signed push webhook, agentapi,
// /metrics, on 127.0.0.1, so the reconciler's CPU and memory are its own;
// --server inproc runs it in this process instead. Droplets are fake: they are
// journaled in Postgres as the reconciler's create records them and get
// their tokens from agentapi's MintToken, as cloud-init user data would
// carry them; DigitalOcean is not involved (BenchmarkProvision1000 in
// reconciler/cloud measures provisioning). With --reconciler URL it targets
// a running reconciler instead (loopback only).
package main

import "genesis.dev/fleet/internal/cliexit"

func main() { cliexit.Main("genesis-load", cliexit.Runner(run)) }
