// Package deploy holds what runs Genesis outside this repository, and the
// tests that keep it honest. It has no Go API: its files are the artifacts.
//
//   - prometheus/: the scrape config for the reconciler replicas, the alert
//     rules, and their rule unit tests (promtool test rules).
//   - grafana/: the fleet dashboard.
//   - droplet/: what runs on every tenant droplet next to cloud-init's files:
//     the compose stack (n8n, Postgres 16, Caddy 2) and the agent's systemd
//     unit.
//   - reconciler/: the reconciler's systemd unit and container image.
//   - k8s/: the reconciler on Kubernetes.
//   - cloud-init/: the droplets' user data (its own package, cloudinit).
//
// The tests run promtool and systemd-analyze on these files, parse every
// YAML document, check the Kubernetes objects, the compose stack's memory
// budget on a 1 GB droplet, and that every metric an alert or a dashboard
// panel names is one the reconciler exports (or has planned), so renaming a
// metric fails a test rather than silencing an alert. README.md is the
// operator's guide.
package deploy
