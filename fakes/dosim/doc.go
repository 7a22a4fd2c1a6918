// Package dosim simulates the part of the DigitalOcean API v2 that the fleet
// reconciler drives (account, droplets, droplet actions, actions, snapshots,
// tags, domains and their records, reserved IPs and their actions), so that
// the real godo client can be exercised over HTTP in tests, benchmarks and
// the demo, and serves the hosted zones over real DNS on loopback.
//
// # Model
//
// A Sim holds accounts, each with a bearer token and a droplet limit, and the
// droplets, actions and snapshots each account owns. Ids are global (as on
// DigitalOcean) but every lookup is scoped to the calling account, so one
// account never sees another's resources.
//
// Time comes from a clock the Sim owns: the wall clock shifted by an offset
// that can be advanced, or frozen at an instant. Nothing that happens
// "later" is driven by timers. A droplet create records a create action due
// at created_at+BootDelay; every other action is due at
// started_at+ActionDelay. Before the Sim answers anything it settles: every
// in-progress action whose due time has passed completes (or errors, when a
// fault asked for it) in due-time order and applies its effect (the droplet
// becomes active and gets its address, goes off, comes back, or a snapshot
// appears). So a test that freezes or advances the clock sees exactly the
// same sequence every run. Run only adds a ticker that settles regularly so
// boot hooks start close to real time when nobody is polling.
//
// A droplet holds at most one in-progress action (its create action counts),
// so a second action gets DigitalOcean's 422 "Droplet already has a pending
// event.". Droplets in status new count against the account's droplet limit.
//
// # Requests
//
// Every /v2 request passes, in order: a per-request latency, authentication
// (401), a per-token sliding-window rate limit over the last minute and the
// last hour (429 with Retry-After), injected faults, random faults at the
// configured rate, and then the endpoint. Every response carries
// RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset and x-request-id;
// every error body is {"id","message","request_id"}. Listings paginate with
// page and per_page (default 20, at most 200) and answer absolute
// links.pages URLs built from the request's Host plus meta.total.
//
// # Side effects outside HTTP
//
// With a boot command, each droplet that becomes active runs it (sh -c, own
// process group) with DOSIM_* variables describing the droplet; power off,
// shutdown and destroy kill the group; power on, reboot and power cycle
// restart it. With a disk root, each droplet owns a directory that a
// snapshot copies and a droplet created from that snapshot starts from. With
// a state file, every change is written atomically (temp file and rename) and
// reloaded by New.
//
// # Domains, DNS and reserved IPs
//
// /v2/domains hosts zones per account (a zone name belongs to one account)
// and /v2/domains/{name}/records edits A, AAAA, CNAME, TXT and NS records
// (the SOA record only has its ttl changed), validated as DigitalOcean
// does with 422s that name the field. ListenDNS and DNSServer.Serve answer
// for the zones of every account, authoritatively, over UDP and TCP on a
// loopback address, straight from the current records: what the API
// changes, the next query sees. It is plain DNS, so Pebble's -dnsserver
// and a net.Resolver with PreferGo and a Dial function both use it.
//
// Reserved IPs come from 127.2.0.0/16 (droplets have 127.1.x.y). They are
// data only: assigning one records the droplet, but no traffic is routed.
// Assign and unassign are actions that complete after ActionDelay.
//
// Under /_sim/ an unauthenticated control API (and the matching Sim methods)
// injects faults, changes limits, moves the clock, lists everything and
// resets the simulator.
package dosim
