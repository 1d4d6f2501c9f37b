//! The engine's side of [`crate::metrics`]: what the dispatcher tells the registry, kept out
//! of the loop's code so the loop reads as before. Without `[metrics]` the engine holds no
//! registry and each hook is one `None` check.

use std::sync::Arc;

use tokio::time::Instant;

use super::Poller;
use super::dispatcher::Engine;
use super::lane::Action;
use crate::api::ApiError;
use crate::metrics::{Metrics, Snapshot};

/// One answer (or failure) of `action`, sent at `sent`: `api_requests_total` and
/// `api_request_duration_seconds`. Called in the request's task as the answer arrives, so the
/// duration is the request's, not the dispatcher's queueing.
pub(super) fn answered<T>(
    metrics: Option<&Metrics>,
    action: Action,
    result: &Result<T, ApiError>,
    sent: Instant,
) {
    if let Some(m) = metrics {
        let outcome = result.as_ref().map(|_| ()).map_err(ApiError::code);
        m.api_answer(action.api_name(), outcome, sent.elapsed());
    }
}

impl<P: Poller> Engine<P> {
    /// Exports to `metrics`: counts answers, refreshes its gauges with the heartbeat, and (for
    /// `agent_status`) tells it the statuses known from the state file.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        for record in self.agents.records() {
            if let Some(known) = self.tracker.known().get(&*record.uuid) {
                metrics.agent_known(&record.uuid, &record.name, &known.status);
            }
        }
        self.metrics = Some(metrics);
        self
    }

    /// The gauges, on the heartbeat's once-per-second beat.
    pub(super) fn refresh_metrics(&mut self, now: Instant) {
        let Some(metrics) = self.metrics.clone() else {
            return;
        };
        let mut rates = [("", 0u32); Action::ALL.len()];
        let mut poll_lag = std::time::Duration::ZERO;
        for (slot, lane) in rates.iter_mut().zip(self.account.lanes.iter_mut()) {
            *slot = (lane.action.api_name(), lane.pacer.rate());
            if let Some(due) = lane.queue.next_due() {
                poll_lag = poll_lag.max(now.saturating_duration_since(due));
            }
        }
        metrics.refresh(&Snapshot {
            agents: self.agents.len(),
            known: self.tracker.known(),
            rates: &rates,
            poll_lag,
            clock_skew_ms: self.account.poller.clock_offset_ms(),
        });
    }
}
