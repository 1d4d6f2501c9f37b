//! The fence: until when this process may send. Pure but for tokio's clock.

use std::sync::Arc;

/// Shared between the keep-alive (which moves it) and the API client (which checks it before
/// every request). Cloning shares it.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {}

impl Fence {
    /// A fence that is always open (no HA).
    pub fn always_open() -> Self {
        todo!("ha-elect")
    }

    /// A closed fence (a leader before its first renewal, a standby).
    pub fn closed() -> Self {
        todo!("ha-elect")
    }

    /// May a request be sent now?
    pub fn may_send(&self) -> bool {
        let _ = &self.inner;
        todo!("ha-elect")
    }
}
