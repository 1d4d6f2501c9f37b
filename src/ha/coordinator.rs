//! The etcd connection, the election, the keep-alive that moves the [`Fence`].

use tokio_util::sync::CancellationToken;

use super::{Fence, HaError, HaSettings};

/// The connection to etcd and this process's place in the election.
pub struct Coordinator {
    client: etcd_client::Client,
}

impl Coordinator {
    /// Connects (TLS and credentials from `[ha]`'s files).
    pub async fn connect(settings: &HaSettings) -> Result<Self, HaError> {
        let _ = settings;
        todo!("ha-elect")
    }

    /// The etcd client (cheap to clone), for the replication.
    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    /// Waits in the election until this process leads (retrying etcd faults with backoff and
    /// saying so), or `stop` is cancelled (`Ok(None)`).
    pub async fn campaign(&self, stop: &CancellationToken) -> Result<Option<Leadership>, HaError> {
        let _ = stop;
        todo!("ha-elect")
    }

    /// The current leader's name, if any.
    pub async fn leader(&self) -> Result<Option<String>, HaError> {
        todo!("ha-elect")
    }
}

/// What a replicated write compares: the leader's election key still bound to its lease.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The election key this process created (`P/leader/<lease>`).
    pub key: Vec<u8>,
    /// Its lease.
    pub lease: i64,
}

/// Why leadership ended.
#[derive(Debug, Clone)]
pub struct Lost {
    /// What happened, for the event and the log.
    pub reason: String,
    /// Who leads now, when known.
    pub holder: Option<String>,
}

/// This process leads: its fence, its guard, and the signal that it no longer does.
pub struct Leadership {
    fence: Fence,
    guard: Guard,
}

impl Leadership {
    /// The fence the API clients check before each request.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The guard of replicated writes.
    pub fn guard(&self) -> Guard {
        self.guard.clone()
    }

    /// Resolves when leadership is lost (the lease expired or the key is gone); the fence is
    /// closed by then.
    pub async fn deposed(&mut self) -> Lost {
        todo!("ha-elect")
    }

    /// At a clean stop: closes the fence, then resigns so a standby takes over at once.
    pub async fn resign(self) {
        todo!("ha-elect")
    }
}
