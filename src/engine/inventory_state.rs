//! What the engine keeps of the open-port inventory while it runs ([`InventoryState`]): the
//! options, the stored snapshots, the fetches in progress, and the inventory file's saver
//! (at most once per [`INVENTORY_SAVE_EVERY`] while snapshots change, and once at the end;
//! encoded and written off the dispatcher's thread, which only takes a cheap copy). Plain data: the dispatcher holds it, `inventory` carries out the lanes' jobs on
//! it, and `inventory_decide` reads its options.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::inventory_decide::{InventoryOptions, Reason};
use super::saver::begin_save;
use crate::inventory::Assembly;
use crate::inventory::store::{InventoryFile, InventoryMap, StoredAgent, save_copy};
use crate::scheduler::AgentId;
use crate::state::SaveBarrier;

/// While snapshots change, the inventory file is rewritten at most this often (it is larger
/// than the state file; a crash in between repeats at most this much of port events).
pub const INVENTORY_SAVE_EVERY: Duration = Duration::from_secs(2);

/// The inventory file and when it was last written (see `saver` for the state file's twin).
#[derive(Default)]
pub(super) struct InventorySaver {
    file: Option<InventoryFile>,
    /// Made durable before each write (`Engine::with_save_barrier`).
    pub(super) barrier: Option<SaveBarrier>,
    /// Snapshots changed since the last save.
    pub(super) dirty: bool,
    last_save: Option<Instant>,
    writing: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for InventorySaver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InventorySaver")
            .field("file", &self.file)
            .field("dirty", &self.dirty)
            .field("barrier", &self.barrier.is_some())
            .finish_non_exhaustive()
    }
}

impl InventorySaver {
    /// A saver for `file` (none: nothing is saved), calling `barrier` before each write.
    pub(super) fn new(file: Option<InventoryFile>, barrier: Option<SaveBarrier>) -> Self {
        InventorySaver {
            file,
            barrier,
            ..Default::default()
        }
    }

    /// Calls `barrier` before each write from now on.
    pub(super) fn set_barrier(&mut self, barrier: Option<SaveBarrier>) {
        self.barrier = barrier;
    }

    /// Starts a write when one is due and none is running. On this (the dispatcher's) thread
    /// only a [`save_copy`] is taken, a pointer per snapshot; encoding and the disk are the
    /// blocking thread's.
    pub(super) fn tick(&mut self, now: Instant, map: &[&InventoryMap]) {
        let Some(file) = &self.file else { return };
        let busy = self.writing.as_ref().is_some_and(|h| !h.is_finished());
        let recent = self
            .last_save
            .is_some_and(|t| now.duration_since(t) < INVENTORY_SAVE_EVERY);
        if !self.dirty || busy || recent {
            return;
        }
        self.last_save = Some(now);
        self.dirty = false;
        let entries = save_copy(map);
        let file = file.clone();
        let barrier = self.barrier.clone();
        self.writing = Some(tokio::task::spawn_blocking(move || {
            let _slot = begin_save(barrier.as_ref());
            save(&file, &entries);
        }));
    }

    pub(super) async fn finish(&mut self, map: &[&InventoryMap]) {
        if let Some(h) = self.writing.take() {
            let _ = h.await;
        }
        let Some(file) = self.file.clone() else {
            return;
        };
        if !self.dirty {
            return;
        }
        let entries = save_copy(map);
        let barrier = self.barrier.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let _slot = begin_save(barrier.as_ref());
            save(&file, &entries);
        })
        .await;
    }
}

/// Writes the inventory file from a save copy; a failure is logged (a file over the bound
/// loudly: the previous one is kept, and the snapshots since are lost at a restart).
fn save(file: &InventoryFile, entries: &[(String, StoredAgent)]) {
    if let Err(e) = file.write_entries(entries) {
        tracing::error!(
            error_code = e.code(),
            "cannot write the inventory file: {e}"
        );
    }
}

/// Everything the inventory keeps while the engine runs.
#[derive(Debug)]
pub(crate) struct InventoryState {
    pub(super) options: InventoryOptions,
    /// Stored snapshots and task times, by Uuid (watched agents only).
    pub(super) map: InventoryMap,
    /// Stored entries of agents not watched: those of the file not watched at start, and
    /// those discovery removed; discovery may add them back (their snapshot then counts, as
    /// their persisted status does). Saved with the rest until a `Control::Retain` or
    /// `Control::Forget` drops them.
    pub(super) held: InventoryMap,
    /// Fetches queued or in progress.
    pub(super) fetches: HashMap<AgentId, Fetch>,
    /// Why a queued task is wanted (absent: a rescan).
    pub(super) reasons: HashMap<AgentId, Reason>,
    /// Agents whose fetch failed since their last transition (no refetch until the next).
    pub(super) gave_up: HashSet<AgentId>,
    pub(super) saver: InventorySaver,
    /// The wall clock at the engine's start and the monotonic instant then: task times are
    /// Unix seconds (they outlive the run) counted on the monotonic clock, so a wall clock
    /// that jumps during the run moves no rescan (and paused test time drives them).
    pub(super) epoch: (Instant, u64),
}

impl InventoryState {
    /// Unix seconds now, on the monotonic clock since the start.
    pub(super) fn unix_now(&self) -> u64 {
        let (at, unix) = self.epoch;
        unix.saturating_add(Instant::now().saturating_duration_since(at).as_secs())
    }
}

/// A fetch of one agent's ports, queued or in progress. The pages' [`Assembly`] (a row set, the
/// machine's name and IP: about 130 bytes, with its map slot 300 at 50 × 1,800 queued first
/// fetches, 28 MB in all, issue 27) is made when the first page is answered: a queued fetch
/// is 16 bytes, and assemblies are alive only for fetches with a page answered, at most a
/// few per agent being paged.
#[derive(Debug, Default)]
pub(super) struct Fetch {
    /// 0: a fetch of its own; n: the n-th fetch in a row taken to confirm closes.
    confirming: u32,
    /// The pages so far; `None` until the first is answered.
    assembly: Option<Box<Assembly>>,
}

impl Fetch {
    /// A fetch queued, the `nth` confirming one in a row (0: one of its own).
    pub(super) fn queued(nth: u32) -> Self {
        Fetch {
            confirming: nth,
            assembly: None,
        }
    }

    /// 0 for a fetch of its own, else which confirming fetch in a row this is.
    pub(super) fn confirming_nth(&self) -> u32 {
        self.confirming
    }

    /// The offset of the next page to ask for.
    pub(super) fn offset(&self) -> u32 {
        self.assembly.as_ref().map_or(0, |a| a.offset())
    }

    /// Whether a page was answered (an assembly exists).
    #[cfg(test)]
    pub(super) fn started(&self) -> bool {
        self.assembly.is_some()
    }

    /// The pages so far, made at the first.
    pub(super) fn assembly(&mut self) -> &mut Assembly {
        let nth = self.confirming;
        self.assembly
            .get_or_insert_with(|| Box::new(Assembly::confirming(nth)))
    }
}

/// Unix seconds now; a clock before 1970 counts as 0.
pub(super) fn unix_secs() -> u64 {
    u64::try_from(crate::clock::unix_now()).unwrap_or(0)
}
