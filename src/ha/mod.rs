//! High availability on etcd (`[ha]`, `docs/ha.md`): active/standby, one leader polls.
//!
//! The rooms:
//! - `settings.rs`: the checked `[ha]` section ([`HaSettings`]), always compiled so a config
//!   with `[ha]` gets a clear error from a build without the `ha` feature.
//! - `fence.rs`: the [`Fence`], pure: until when this process may send, set from each lease
//!   renewal (the instant the renewal was *sent* + the TTL etcd granted − a margin), checked
//!   by the API client before every request. Always compiled: the client holds one (always
//!   open without HA).
//! - `coordinator/` (feature `ha`): the etcd connection, the election (etcd's own v3election
//!   `Campaign` with a lease, never a home-made protocol), the keep-alive that moves the fence,
//!   and the `Leadership` that says when it was lost.
//! - `replicate/` (feature `ha`): the state files of `state_dir` replicated to etcd while
//!   leader (chunked, only what changed, at most every `REPLICATE_EVERY`), each write guarded
//!   by the leader's key (`Guard`); `restore` writes them back on a new leader before its
//!   engines start.
//! - `test_etcd.rs` (tests only): a real etcd on loopback for the lib's HA tests.
//!
//! The daemon's side (standby, a leader's term, exit 75 when deposed) is
//! `crate::commands::ha_run`.
//!
//! Keys under the deployment's `election` prefix `P`: the election is `P/leader` (etcd keeps
//! the candidates' keys `P/leader/<lease>`), the replicated state is `P/state/…`. They must not
//! share a prefix: etcd's election takes the oldest key under its prefix as the leader.

mod fence;
mod settings;

#[cfg(feature = "ha")]
mod coordinator;
#[cfg(feature = "ha")]
mod replicate;
#[cfg(all(test, feature = "ha"))]
pub(crate) mod test_etcd;

pub use fence::Fence;
pub use settings::HaSettings;

#[cfg(feature = "ha")]
pub use coordinator::{Coordinator, Guard, Leadership, Lost};
#[cfg(feature = "ha")]
pub use replicate::{PushReport, REPLICATE_EVERY, Replicator, RestoreReport, WATCH_EVERY, restore};

/// The election's name under the deployment's prefix.
pub fn election_name(prefix: &str) -> String {
    format!("{}/leader", prefix.trim_end_matches('/'))
}

/// The replicated state's key prefix under the deployment's prefix.
pub fn state_prefix(prefix: &str) -> String {
    format!("{}/state/", prefix.trim_end_matches('/'))
}

/// Errors of the HA layer, with stable codes ([`HaError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum HaError {
    /// etcd could not be reached or refused a request (transient: retried).
    #[error("etcd: {0}")]
    Etcd(String),
    /// A TLS or credential file of `[ha]` cannot be used.
    #[error("[ha] {what}: {problem}")]
    Files {
        /// Which key and file.
        what: String,
        /// What is wrong and what to do.
        problem: String,
    },
    /// The replicated state in etcd cannot be read back (a missing chunk, a bad hash).
    #[error("replicated state: {0}")]
    Replica(String),
    /// Writing the state files locally failed.
    #[error("state_dir: {0}")]
    Local(String),
    /// This process no longer leads: a guarded write was refused.
    #[error("not the leader any more")]
    NotLeader,
}

impl HaError {
    /// Stable error code for logs and events.
    pub fn code(&self) -> &'static str {
        match self {
            HaError::Etcd(_) => "HaError.Etcd",
            HaError::Files { .. } => "HaError.Files",
            HaError::Replica(_) => "HaError.Replica",
            HaError::Local(_) => "HaError.Local",
            HaError::NotLeader => "HaError.NotLeader",
        }
    }
}
