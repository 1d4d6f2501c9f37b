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

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::STATE_SAVE_EVERY;
use super::agents::AgentTable;
use crate::state::{SaveBarrier, StateFile};

/// Runs the barrier, if any (on a blocking thread).
fn run_barrier(barrier: Option<&SaveBarrier>) {
    if let Some(barrier) = barrier {
        barrier();
    }
}

/// How many saves (state and inventory files, of every account in the process, barriers
/// included) write at once at most: one CPU fewer than the machine has, at least one.
///
/// Why a limit shared by the accounts (issue 27): at 50 accounts about 100 files a second
/// change, each save a blocking task that encodes JSON and fsyncs; the blocking pool ran 13 to
/// 85 threads, which took both CPUs of a 2-CPU machine in bursts (19 % of the daemon's CPU),
/// and the dispatcher's thread, whose wake-ups pace every lane, waited behind them on the run
/// queue (87 ms per second), which moves sends by milliseconds and eats the pacing slack. With
/// the limit, saves queue instead of competing: a CPU stays for the dispatchers, and a save
/// that waits carries every change made meanwhile (each saver keeps one write at a time and
/// copies at its start; the next carries the rest), so a crash loses at most the time the
/// queue takes, not a write.
fn save_slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1)
}

/// The process's save slots: a counting semaphore for blocking threads (a wait here keeps a
/// blocking thread, never the runtime's).
struct SaveSlots {
    busy: Mutex<usize>,
    freed: Condvar,
    limit: usize,
}

fn slots() -> &'static SaveSlots {
    static SLOTS: OnceLock<SaveSlots> = OnceLock::new();
    SLOTS.get_or_init(|| SaveSlots {
        busy: Mutex::new(0),
        freed: Condvar::new(),
        limit: save_slots(),
    })
}

/// One save slot, given back when dropped.
pub(super) struct SaveSlot(&'static SaveSlots);

impl Drop for SaveSlot {
    fn drop(&mut self) {
        let mut busy = self.0.busy.lock().unwrap_or_else(PoisonError::into_inner);
        *busy = busy.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// On the blocking thread that saves: waits for a save slot ([`save_slots`]), then runs the
/// barrier. The write is made while the slot is held.
pub(super) fn begin_save(barrier: Option<&SaveBarrier>) -> SaveSlot {
    let slots = slots();
    let mut busy = slots.busy.lock().unwrap_or_else(PoisonError::into_inner);
    while *busy >= slots.limit {
        busy = slots
            .freed
            .wait(busy)
            .unwrap_or_else(PoisonError::into_inner);
    }
    *busy += 1;
    drop(busy);
    let slot = SaveSlot(slots);
    run_barrier(barrier);
    slot
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
            let _slot = begin_save(barrier.as_ref());
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
            let _slot = begin_save(barrier.as_ref());
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

    #[tokio::test]
    async fn saves_of_many_accounts_write_at_most_save_slots_at_once() {
        // More savers (accounts) than slots, each saving at once; the barrier, which runs in
        // the slot, notes how many are inside and stays 20 ms.
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let barrier: SaveBarrier = {
            let (inside, most) = (inside.clone(), most.clone());
            Arc::new(move || {
                use std::sync::atomic::Ordering::SeqCst;
                let now = inside.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
                std::thread::sleep(Duration::from_millis(20));
                inside.fetch_sub(1, SeqCst);
            })
        };
        let dirs: Vec<_> = (0..save_slots() + 3)
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let table = AgentTable::with_capacity(0);
        let mut savers: Vec<StateSaver> = (dirs.iter())
            .map(|d| {
                let mut saver = StateSaver::default();
                saver.set_file(StateFile::in_dir(d.path()));
                saver.barrier = Some(barrier.clone());
                saver.mark_dirty();
                saver.tick(Instant::now(), &table);
                saver
            })
            .collect();
        for saver in &mut savers {
            saver.finish(&table).await;
        }
        let most = most.load(std::sync::atomic::Ordering::SeqCst);
        assert!(most >= 1 && most <= save_slots(), "{most} saves at once");
        for d in &dirs {
            assert!(StateFile::in_dir(d.path()).path().exists());
        }
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
