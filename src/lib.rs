//! cwp-portwatch: watch Tencent Cloud CWP agents' open-port task status and report every change.
//!
//! Where things happen (one module per concern):
//! - [`config`] and [`watchlist`]: TOML files → validated settings (raw serde structs, then checks).
//! - [`credentials`]: where the SecretId/SecretKey come from (the credential chain).
//! - [`signing`]: TC3-HMAC-SHA256, pure.
//! - [`api`]: the signed HTTP client, response parsing, typed errors and their classification.
//! - [`status`]: API answer → agent status (the spec's Statuses table), pure.
//! - [`scheduler`]: which agent is polled next and when (due queue, priorities), pure.
//! - [`engine`]: the dispatcher that owns the rate limiter, sends polls, and feeds answers to
//!   the [`tracker`] (exactly-once transitions), which yields [`events`].
//! - [`logging`]: how events reach the terminal, JSON lines or journald.
//! - [`simulator`]: a faithful CWP API stand-in on loopback for the demo and the tests.
//! - [`demo`]: the newcomer's first run.

pub mod api;
pub mod check;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod cvm_role;
pub mod daemon;
pub mod demo;
pub mod engine;
pub mod events;
pub mod logging;
pub mod pacing;
pub mod rate_control;
pub mod scheduler;
pub mod shutdown;
pub mod signing;
pub mod simulator;
pub mod state;
pub mod status;
pub mod tracker;
pub mod watchlist;
