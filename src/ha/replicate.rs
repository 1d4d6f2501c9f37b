//! The state files replicated to etcd while leader, and restored on a new leader.

use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Fence, Guard, HaError};

/// At most this often, changes are pushed (the bound on what a takeover can repeat).
pub const REPLICATE_EVERY: Duration = Duration::from_secs(1);

/// Pushes what changed in `state_dir`.
pub struct Replicator {}

/// One push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Files that changed.
    pub files: usize,
    /// Chunks written.
    pub chunks: usize,
    /// Bytes written to etcd (keys and values).
    pub bytes: u64,
}

/// What [`restore`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Files written into `state_dir`.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
}

impl Replicator {
    /// Replicates `state_dir` under the deployment `prefix`, guarded by `guard`.
    pub fn new(client: etcd_client::Client, prefix: &str, guard: Guard, state_dir: &Path) -> Self {
        let _ = (client, prefix, guard, state_dir);
        todo!("ha-state")
    }

    /// Pushes what changed since the last push.
    pub async fn push(&mut self) -> Result<PushReport, HaError> {
        todo!("ha-state")
    }

    /// Every [`REPLICATE_EVERY`] while `fence` is open, until `stop`; one last push then.
    pub async fn run(self, fence: Fence, stop: CancellationToken) {
        let _ = (fence, stop);
        todo!("ha-state")
    }
}

/// Writes the replicated state of `prefix` into `state_dir` (before the engines start).
pub async fn restore(
    client: &mut etcd_client::Client,
    prefix: &str,
    state_dir: &Path,
) -> Result<RestoreReport, HaError> {
    let _ = (client, prefix, state_dir);
    todo!("ha-state")
}
