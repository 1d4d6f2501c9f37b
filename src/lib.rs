//! cwp-portwatch: watch Tencent Cloud CWP agents' open-port task status and report every change.
//!
//! Where things happen (one module per concern):
//! - [`commands`]: one module per command of the binary (`run`, `once`, `status`, `check`,
//!   `simulate`, `demo`), the start-up wiring they share ([`commands::startup`]) and what a
//!   SIGHUP may change ([`commands::reload`]). `main` only parses and dispatches.
//! - [`shutdown`]: SIGTERM/SIGINT → a cancellation token, and the tracker every background
//!   task runs on, waited for within a bound at the stop.
//! - [`config`] and [`watchlist`]: TOML files → validated settings (raw serde structs, then checks);
//!   [`problems`] places and reports what is wrong in them; [`agent_uuid`] is the validated Uuid.
//! - [`discovery`]: agents found with `DescribeMachines` (`[discovery]`), merged with the
//!   watchlist and applied like a reload.
//! - Several accounts (`[[account]]`): [`config::accounts`] turns the config into one plan per
//!   account, `commands::run` runs one engine per account, and [`account`] marks each
//!   account's events with its name ([`account_name`] is the rule for the name alone).
//! - [`credentials`]: where the SecretId/SecretKey come from (the credential chain, profile files,
//!   the CVM instance role, STS `AssumeRole`, and the refresh loop that keeps temporary ones
//!   fresh).
//! - [`endpoint`] (which hosts may use plain http, base-URL normalisation) and [`clock`] (Unix
//!   seconds): small rules that several modules share, kept in one place each.
//! - [`signing`]: TC3-HMAC-SHA256, pure: the `cwp-tc3` crate (`crates/tc3`), shared with the
//!   simulator, re-exported under this name.
//! - [`api`]: the signed HTTP client, response parsing, typed errors and their classification;
//!   [`api::body`] is the size-capped body reader every HTTP client of the daemon uses.
//! - [`status`]: the [`status::Status`] type and API answer → agent status (the spec's
//!   Statuses table), pure.
//! - [`scheduler`]: which agent is polled next and when (due queue, priorities), pure.
//! - [`pacing`] and [`rate_control`]: the strict per-second limiter and the throttling
//!   feedback that sets its rate, pure but for tokio's clock.
//! - [`engine`]: the dispatcher that owns a lane (due queue, limiter, rate control) per API
//!   action, sends requests, and feeds answers to a pure `decide`; [`tracker`] is the
//!   exactly-once rule (each agent's last known status lives in the engine's agent table),
//!   [`events`] is what comes out (its catalogue apart from the sinks that write it),
//!   [`state`] what is persisted.
//! - [`logging`]: how events reach the terminal, JSON lines or journald; [`escape`] keeps
//!   control characters out of every human-readable output.
//! - The simulator, a faithful CWP API stand-in on loopback for the demo and the tests, is the
//!   `cwp-simulator` crate (`crates/simulator`): only [`commands::simulate`] and
//!   [`commands::demo`] use it, through its public API. The text rules it shares with
//!   [`problems`] and [`escape`] are the `cwp-text` crate (`crates/text`).
//! - [`tls`]: which CAs every HTTPS client trusts (the system's store and `[api] ca_file`),
//!   and the one constructor of reqwest clients that applies it.
//! - [`ha`]: active/standby on etcd (`[ha]`, feature `ha`): the election, the fence every
//!   request passes, the state replicated to etcd and restored on a takeover.
//! - [`policy`]: the expected-ports policy (`docs/policy.md`): the policy file → checked rules,
//!   (host facts, open ports) → findings, two evaluations → the changes to report; pure.
//!
//! The life of one poll:
//! - scheduled: [`scheduler`] decides which agent is due next (due queue, `COLLECTING`
//!   first), pure; [`pacing`] and [`rate_control`] decide when the next request may start
//!   (strict per-second limit, slowed on throttling).
//! - sent: [`engine`], the dispatcher, owns the limiter and the requests in flight, and sends
//!   through the [`api`] client.
//! - signed: [`signing`], TC3-HMAC-SHA256, pure, called by the [`api`] client per request.
//! - classified: [`api`] parses the answer into typed errors and their class (status of the
//!   agent, throttling, transient, auth); [`status`] turns an answer into the agent's status
//!   (the spec's Statuses table), pure.
//! - turned into an event: `engine::decide` compares the answer with the agent's last known
//!   status by the [`tracker`] rule, so each transition is seen exactly once, and the engine
//!   emits it as one of the [`events`]; [`state`] persists what was seen.

#![deny(missing_docs)]

pub mod account;
pub mod account_name;
pub mod agent_uuid;
pub mod api;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod config;
pub mod credentials;
pub mod delivery;
pub mod discovery;
pub mod endpoint;
pub mod engine;
pub mod escape;
pub mod events;
pub mod ha;
pub mod inventory;
pub mod logging;
pub mod metrics;
pub mod pacing;
pub mod policy;
pub mod port_facts;
pub mod problems;
pub mod rate_control;
pub mod scheduler;
pub mod shutdown;
pub use cwp_tc3 as signing;
pub mod state;
pub mod status;
pub mod tls;
pub mod tracker;
pub mod watchlist;
