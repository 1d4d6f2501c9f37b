//! One integration test crate: the client, the engine and the binary against the real
//! simulator over HTTP on 127.0.0.1:0, and the dispatcher under paused tokio time.

mod cli;
mod client;
mod cvm_role;
mod daemon;
mod dispatch;
mod engine_sim;
mod hostile;
mod journald;
mod reliability;
mod support;
mod systemd;
