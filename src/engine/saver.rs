//! Saving the state file from the engine: while statuses change at most once per
//! [`STATE_SAVE_EVERY`], written off the dispatcher's thread; and once when the run ends.
//!
//! Why off-thread: the write fsyncs twice, and the dispatcher's pacing must never wait for a
//! disk. The dispatcher only copies the statuses (it owns the table; 64 bytes per agent); the
//! JSON is encoded straight into the file on a blocking thread whose handle this saver owns
//! and awaits, so the file's bytes never sit in memory whole (issue 13: at 100k agents they
//! were a 13 MB buffer per save).
//!
//! The save barrier ([`Engine::with_save_barrier`], alert delivery's outboxes) runs on that
//! same blocking thread right before each write, of this file and of the inventory's: an
//! event is on disk in its sinks' outboxes before the file that says it was emitted.

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::STATE_SAVE_EVERY;
use super::agents::AgentTable;
use crate::state::{SaveBarrier, StateFile};

/// Runs the barrier, if any (on a blocking thread).
pub(super) fn run_barrier(barrier: Option<&SaveBarrier>) {
    if let Some(barrier) = barrier {
        barrier();
    }
}

/// The state file and when it was last written.
#[derive(Default)]
pub(crate) struct StateSaver {
    file: Option<StateFile>,
    /// Made durable before each write ([`Engine::with_save_barrier`]).
    pub(super) barrier: Option<SaveBarrier>,
    /// Something changed since the last write began.
    dirty: bool,
    last_save: Option<Instant>,
    /// The write in progress (one at a time).
    writing: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for StateSaver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSaver")
            .field("file", &self.file)
            .field("barrier", &self.barrier.is_some())
            .finish_non_exhaustive()
    }
}

impl StateSaver {
    /// Saves to `file` from now on (without one, saving is a no-op).
    pub fn set_file(&mut self, file: StateFile) {
        self.file = Some(file);
    }

    /// Statuses changed (or agents were forgotten): a save is due.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Starts a write when one is due and none is running. A change during a write is saved
    /// by the next one.
    pub fn tick(&mut self, now: Instant, agents: &AgentTable) {
        let Some(file) = &self.file else { return };
        let busy = self.writing.as_ref().is_some_and(|h| !h.is_finished());
        let recent = self
            .last_save
            .is_some_and(|t| now.duration_since(t) < STATE_SAVE_EVERY);
        if !self.dirty || busy || recent {
            return;
        }
        self.last_save = Some(now);
        self.dirty = false;
        let entries = agents.known_copy();
        let file = file.clone();
        let barrier = self.barrier.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            run_barrier(barrier.as_ref());
            if let Err(e) = file.write_entries(&entries) {
                tracing::error!(error_code = e.code(), "cannot write the state file: {e}");
            }
        }));
    }

    /// At the end of a run: always written (`seen_at` moves even when no status changed),
    /// after any write still going.
    pub async fn finish(&mut self, agents: &AgentTable) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        let entries = agents.known_copy();
        let barrier = self.barrier.clone();
        let written = tokio::task::spawn_blocking(move || {
            run_barrier(barrier.as_ref());
            file.write_entries(&entries)
        })
        .await;
        if let Ok(Err(e)) = written {
            tracing::error!(error_code = e.code(), "cannot write the state file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::engine::inventory_state::InventorySaver;
    use crate::engine::{Engine, EngineConfig, Intervals, InventoryOptions, Poller};
    use crate::inventory::Baseline;
    use crate::inventory::store::{InventoryFile, InventoryMap};

    /// A barrier that notes, at each call, whether `path` existed then.
    fn noting(path: std::path::PathBuf) -> (SaveBarrier, Arc<Mutex<Vec<bool>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let noted = seen.clone();
        let barrier: SaveBarrier = Arc::new(move || noted.lock().unwrap().push(path.exists()));
        (barrier, seen)
    }

    #[tokio::test]
    async fn the_barrier_runs_before_each_state_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::in_dir(dir.path());
        let (barrier, seen) = noting(file.path().to_path_buf());
        let mut saver = StateSaver::default();
        saver.set_file(file.clone());
        saver.barrier = Some(barrier);
        let table = AgentTable::with_capacity(0);
        saver.mark_dirty();
        saver.tick(Instant::now(), &table);
        saver.finish(&table).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [false, true],
            "before the first write, then again"
        );
        assert!(file.path().exists());
    }

    #[tokio::test]
    async fn the_barrier_runs_before_each_inventory_write() {
        let dir = tempfile::tempdir().unwrap();
        let file = InventoryFile::in_dir(dir.path());
        let (barrier, seen) = noting(file.path().to_path_buf());
        let mut saver = InventorySaver::new(Some(file.clone()), Some(barrier));
        let map = InventoryMap::new();
        saver.dirty = true;
        saver.tick(Instant::now(), &[&map]);
        saver.dirty = true;
        saver.finish(&[&map]).await;
        assert_eq!(*seen.lock().unwrap(), [false, true]);
        assert!(file.path().exists());
    }

    /// Never answers: the builders are all that is tested.
    struct Silent;

    impl Poller for Silent {
        fn poll(
            &self,
            _uuid: &str,
        ) -> impl Future<Output = Result<crate::api::TaskStatus, crate::api::ApiError>> + Send
        {
            std::future::pending()
        }
    }

    fn engine() -> Engine<Silent> {
        let config = EngineConfig {
            requests_per_second: 1,
            max_in_flight: 1,
            intervals: Intervals {
                settled: Duration::from_secs(60),
                collecting: Duration::from_secs(5),
                offline: Duration::from_secs(30),
            },
            once: false,
        };
        let sink = Arc::new(crate::events::CollectingSink::default());
        Engine::new(Silent, sink, config, &[], Default::default())
    }

    #[tokio::test]
    async fn with_save_barrier_reaches_the_inventory_saver_in_either_order() {
        let options = InventoryOptions {
            enabled: true,
            rescan_interval: Duration::ZERO,
            create_missing: false,
            baseline: Baseline::Ports,
            action_rates: [20; 5],
            action_in_flight: [32; 5],
        };
        let barrier: SaveBarrier = Arc::new(|| {});
        let before = engine().with_save_barrier(barrier.clone()).with_inventory(
            options,
            InventoryMap::new(),
            None,
        );
        let after = engine()
            .with_inventory(options, InventoryMap::new(), None)
            .with_save_barrier(barrier);
        for e in [before, after] {
            assert!(e.saver.barrier.is_some());
            assert!(e.inventory.as_ref().unwrap().saver.barrier.is_some());
        }
    }
}
