//! What the engine is doing, for the daemon's `sd_notify` STATUS and WATCHDOG: a few atomics
//! the dispatcher refreshes at least once per second, so a stale `beats` counter means the
//! loop is wedged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::agents::AgentTable;
use crate::status::Status;

/// What the engine is doing, shared with the daemon for `sd_notify` (STATUS, WATCHDOG).
/// Updated at least once per second while the dispatcher loop runs, so a stale `beats`
/// counter means the loop is wedged.
#[derive(Debug, Default)]
pub struct EngineStatus {
    /// Incremented on every loop turn that ends with a refresh (≥ once per second).
    pub beats: AtomicU64,
    /// Agents watched.
    pub agents: AtomicU64,
    /// Agents in COLLECTING.
    pub collecting: AtomicU64,
    /// Agents in AGENT_OFFLINE.
    pub offline: AtomicU64,
    /// The send rate in force.
    pub rate: AtomicU64,
    /// Requests sent in total.
    pub sent: AtomicU64,
    /// The API refuses our credentials (until an answer succeeds).
    pub credentials_failing: AtomicBool,
}

impl EngineStatus {
    /// One line for `systemctl status`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "watching {} agents: {} collecting, {} offline; {} requests/s",
            self.agents.load(Ordering::Relaxed),
            self.collecting.load(Ordering::Relaxed),
            self.offline.load(Ordering::Relaxed),
            self.rate.load(Ordering::Relaxed),
        );
        if self.credentials_failing.load(Ordering::Relaxed) {
            line.push_str("; CREDENTIALS REFUSED by the API");
        }
        line
    }
}

/// The figures of one refresh.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Figures {
    /// Agents watched.
    pub agents: usize,
    /// The status polling rate in force.
    pub rate: u32,
    /// Requests sent so far.
    pub sent: u64,
}

/// The dispatcher's side of [`EngineStatus`].
#[derive(Debug)]
pub(crate) struct Heartbeat {
    /// Shared with the daemon.
    pub status: Arc<EngineStatus>,
    last_refresh: Option<Instant>,
    /// Statuses changed since the agents were last counted. Counting is O(agents): at
    /// 100,000 agents, once a second, it cost more CPU than a poll (issue 13), and in a
    /// steady state nothing changes.
    counts_stale: bool,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            status: Arc::default(),
            last_refresh: None,
            counts_stale: true,
        }
    }
}

impl Heartbeat {
    /// Refreshes the shared status, at most once per second (counting agents per status is
    /// O(agents)); true when it did (the metrics refresh on the same beat).
    pub fn refresh(&mut self, now: Instant, agents: &AgentTable, figures: Figures) -> bool {
        if self
            .last_refresh
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return false;
        }
        self.last_refresh = Some(now);
        let s = &self.status;
        if std::mem::take(&mut self.counts_stale) {
            let (collecting, offline) = status_counts(agents);
            s.collecting.store(collecting as u64, Ordering::Relaxed);
            s.offline.store(offline as u64, Ordering::Relaxed);
        }
        s.agents.store(figures.agents as u64, Ordering::Relaxed);
        s.rate.store(u64::from(figures.rate), Ordering::Relaxed);
        s.sent.store(figures.sent, Ordering::Relaxed);
        s.beats.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// The next turn refreshes whatever the time, counts included (after a reload).
    pub fn refresh_soon(&mut self) {
        self.last_refresh = None;
        self.counts_stale = true;
    }

    /// An agent's status changed: count again at the next refresh.
    pub fn statuses_changed(&mut self) {
        self.counts_stale = true;
    }

    /// Mirrors the credentials gate for the status line.
    pub fn set_credentials_failing(&self, failing: bool) {
        self.status
            .credentials_failing
            .store(failing, Ordering::Relaxed);
    }
}

/// Watched agents in COLLECTING and in AGENT_OFFLINE: one pass over the table.
fn status_counts(agents: &AgentTable) -> (usize, usize) {
    let mut collecting = 0;
    let mut offline = 0;
    agents.for_each_status(&mut |status| match status {
        Status::Collecting => collecting += 1,
        Status::AgentOffline => offline += 1,
        _ => {}
    });
    (collecting, offline)
}
