//! [`MachineHooks`]: the run-time changes a test makes to what `DescribeMachines` lists (hide
//! an agent's machine, make it flap, make every listing fail). A leaf: the shared state holds
//! the hooks, `machines.rs` reads them when it answers.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::lock::lock;

/// Run-time changes to what `DescribeMachines` answers, for tests.
#[derive(Debug, Default)]
pub struct MachineHooks {
    hidden: Mutex<HashSet<String>>,
    flapping: Mutex<HashSet<String>>,
    /// Listings begun (requests at `Offset` 0, any type and region).
    listings: AtomicU64,
    failing: AtomicBool,
}

impl MachineHooks {
    /// Stops listing the machine of agent `uuid` (as if it were deleted).
    pub fn hide(&self, uuid: &str) {
        lock(&self.flapping).remove(uuid);
        lock(&self.hidden).insert(uuid.to_owned());
    }

    /// Lists the machine of agent `uuid` again.
    pub fn show(&self, uuid: &str) {
        lock(&self.flapping).remove(uuid);
        lock(&self.hidden).remove(uuid);
    }

    /// Makes the machine of agent `uuid` flap: listed by the first listing after this call
    /// (a request at `Offset` 0) and every other one after it, missing from the others; the
    /// pages of one listing agree. [`MachineHooks::show`] or [`MachineHooks::hide`] ends it.
    pub fn flap(&self, uuid: &str) {
        let mut flapping = lock(&self.flapping);
        if flapping.is_empty() {
            // The next listing is an even one: the machine is in it.
            self.listings.store(0, Ordering::Relaxed);
        }
        flapping.insert(uuid.to_owned());
    }

    /// Machines hidden from a request at `offset`: the hidden ones, and the flapping ones
    /// in every other listing.
    pub(crate) fn hidden_now(&self, offset: i64) -> HashSet<String> {
        let mut hidden = lock(&self.hidden).clone();
        let listing = if offset == 0 {
            self.listings.fetch_add(1, Ordering::Relaxed)
        } else {
            self.listings.load(Ordering::Relaxed).saturating_sub(1)
        };
        if listing % 2 == 1 {
            hidden.extend(lock(&self.flapping).iter().cloned());
        }
        hidden
    }

    /// `true`: every `DescribeMachines` answers `InternalError` until set back to `false`.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }

    /// Whether every `DescribeMachines` answers `InternalError` now.
    pub(crate) fn is_failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}
