//! The one way the simulator takes a lock: a poisoned lock only means another request
//! panicked mid-update of counters; the counters are still usable, and the simulator must keep
//! answering. A leaf: every module that holds state uses it.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, taking the data of a poisoned lock as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
