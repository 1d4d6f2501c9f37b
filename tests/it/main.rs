//! One integration test crate: the client, the engine and the binary against the real
//! simulator over HTTP on 127.0.0.1:0, and the dispatcher under paused tokio time. Its tests
//! run in parallel: each has its own temporary folder, simulator and port, and waits for what
//! it expects (an event, a log line, `READY=1`, a file) rather than for a fixed time. The few
//! tests that measure rates against the strict 1-second window on the real clock are in
//! `tests/rate`, which runs them one at a time.

#[path = "../support/mod.rs"]
mod support;

mod accounts;
mod alertmanager;
mod assume_role;
mod cli;
mod client;
mod cvm_role;
mod cwp;
mod daemon;
mod delivery;
mod delivery_e2e;
mod discovery;
mod dispatch;
#[cfg(feature = "ha")]
mod ha;
mod hostile;
mod inventory;
mod journald;
mod metrics;
mod observability;
mod packaging;
mod policy;
mod reliability;
mod systemd;
/// A real etcd for the HA tests (the lib tests' fixture, shared by path).
#[cfg(feature = "ha")]
#[path = "../../src/ha/test_etcd.rs"]
mod test_etcd;
