//! cwp-portwatch: watch Tencent Cloud CWP agents' open-port task status and report every change.
//!
//! Where things happen (one module per concern):
//! - [`config`] and [`watchlist`]: TOML files → validated settings (raw serde structs, then checks);
//!   [`problems`] places and reports what is wrong in them; [`agent_uuid`] is the validated Uuid.
//! - [`credentials`]: where the SecretId/SecretKey come from (the credential chain, profile files,
//!   the CVM instance role and its refresher).
//! - [`endpoint`] (which hosts may use plain http, base-URL normalisation) and [`clock`] (Unix
//!   seconds): small rules that several modules share, kept in one place each.
//! - [`signing`]: TC3-HMAC-SHA256, pure.
//! - [`api`]: the signed HTTP client, response parsing, typed errors and their classification.
//! - [`status`]: the [`status::Status`] type and API answer → agent status (the spec's
//!   Statuses table), pure.
//! - [`scheduler`]: which agent is polled next and when (due queue, priorities), pure.
//! - [`pacing`] and [`rate_control`]: the strict per-second limiter and the throttling
//!   feedback that sets its rate, pure but for tokio's clock.
//! - [`engine`]: the dispatcher that owns a lane (due queue, limiter, rate control) per API
//!   action, sends requests, and feeds answers to a pure `decide`; the [`tracker`] keeps
//!   transitions exactly-once, [`events`] is what comes out, [`state`] what is persisted.
//! - [`logging`]: how events reach the terminal, JSON lines or journald.
//! - [`simulator`]: a faithful CWP API stand-in on loopback for the demo and the tests.
//! - [`demo`]: the newcomer's first run.

pub mod agent_uuid;
pub mod api;
pub mod check;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod daemon;
pub mod demo;
pub mod endpoint;
pub mod engine;
pub mod events;
pub mod logging;
pub mod pacing;
pub mod problems;
pub mod rate_control;
pub mod scheduler;
pub mod signing;
pub mod simulator;
pub mod state;
pub mod status;
pub mod tracker;
pub mod watchlist;
