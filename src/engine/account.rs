//! One account: the poller signing with its credentials, a lane per action, the credentials
//! gate, and the clock skew learned from its answers.
//!
//! Why a unit of its own: Tencent's quota is per action *per account*, and refused
//! credentials stop one account, not the others. An engine has one account; several
//! accounts run one engine each (see "Adding accounts" in [`super`]).

use std::sync::Arc;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::backend::Backend;
use super::lane::{Action, Lane};
use super::{CLOCK_SKEW_WARN, CREDENTIALS_EVENT_EVERY, EngineConfig, Poller};
use crate::events::{Event, EventSink};
use crate::scheduler::later;

/// While the API refuses our credentials, one probe per [`CREDENTIALS_EVENT_EVERY`].
#[derive(Debug, Default)]
pub(crate) struct CredentialsGate {
    /// The API refuses the credentials (until an answer succeeds).
    pub refused: bool,
    /// When the last `credentials_failed` was emitted.
    pub last_event: Option<Instant>,
    /// When the last request was sent (probes are spaced from it).
    pub last_send: Option<Instant>,
}

impl CredentialsGate {
    /// Not before this, while the credentials are refused.
    pub fn closed_until(&self) -> Option<Instant> {
        if !self.refused {
            return None;
        }
        self.last_send.map(|t| later(t, CREDENTIALS_EVENT_EVERY))
    }
}

/// Everything that belongs to one set of credentials.
pub(crate) struct Account<P> {
    /// Sends the requests.
    pub poller: Arc<P>,
    /// The backend's lanes, one per action it calls, in [`Backend::actions`] order.
    pub lanes: Vec<Lane>,
    /// Which API and so which lanes.
    pub backend: Backend,
    /// Spaces probes while the credentials are refused.
    pub credentials: CredentialsGate,
    /// Where the credentials came from, for `credentials_failed`.
    pub credential_source: String,
    /// Wakes the credentials refresher (temporary credentials) on `AuthFailure.TokenFailure`.
    pub refresh_credentials: Option<Arc<Notify>>,
    /// The skew last reported by `clock_skew`, in seconds.
    skew_reported_s: i64,
}

impl<P: Poller> Account<P> {
    /// An account with a lane per action of its poller's backend, at the configured rate.
    pub fn new(poller: P, config: &EngineConfig) -> Self {
        let backend = poller.backend();
        Account {
            poller: Arc::new(poller),
            lanes: (backend.actions().iter())
                .map(|a| Lane::new(*a, config))
                .collect(),
            backend,
            credentials: CredentialsGate::default(),
            credential_source: String::new(),
            refresh_credentials: None,
            skew_reported_s: 0,
        }
    }

    /// The lane of `action`. Only the backend's own code paths name its actions (a job comes
    /// from its lane, follow-ups are decided per backend), so the lane is there; should a bug
    /// ask for another backend's action, the first lane stands in rather than a panic, and
    /// the bug is logged.
    pub fn lane(&mut self, action: Action) -> &mut Lane {
        let at = self.lanes.iter().position(|l| l.action == action);
        debug_assert!(
            at.is_some(),
            "{action:?} is not a lane of {:?}",
            self.backend
        );
        if at.is_none() {
            tracing::error!(
                "bug: {} asked of a {} account",
                action.api_name(),
                self.backend.name()
            );
        }
        &mut self.lanes[at.unwrap_or(0)]
    }

    /// The lanes whose queues hold agents ([`Action::holds_agents`]).
    pub fn agent_lanes(&mut self) -> impl Iterator<Item = &mut Lane> {
        self.lanes.iter_mut().filter(|l| l.action.holds_agents())
    }

    /// Whether a request of agent `id` is in flight in any lane.
    pub fn agent_in_flight(&self, id: crate::scheduler::AgentId) -> bool {
        self.lanes
            .iter()
            .any(|l| l.action.holds_agents() && l.queue.is_in_flight(id))
    }

    /// Whether this account has a lane for `action`.
    pub fn has_lane(&self, action: Action) -> bool {
        self.lanes.iter().any(|l| l.action == action)
    }

    /// Requests in flight in all lanes (orphans' included).
    pub fn in_flight(&self) -> usize {
        self.lanes.iter().map(|l| l.queue.in_flight()).sum()
    }

    /// A `clock_skew` event when the offset learned by the poller is large and has moved by
    /// more than 5 s since the last one.
    pub fn check_skew(&mut self, sink: &dyn EventSink) {
        let skew_s = self.poller.clock_offset_ms() / 1000;
        if skew_s.unsigned_abs() > CLOCK_SKEW_WARN.as_secs()
            && skew_s.abs_diff(self.skew_reported_s) > 5
        {
            self.skew_reported_s = skew_s;
            sink.emit(&Event::ClockSkew {
                skew_seconds: skew_s,
            });
        }
    }
}
