//! Jobs, actions and lanes: what one request does, which API action it calls, and the queue,
//! strict limiter and rate control that action has to itself.
//!
//! Why one lane per action: Tencent counts the 20 requests/s quota per action (and per
//! account), so inventory traffic must never cut the status polling rate; each lane has its
//! own [`Pacer`] and its own throttling feedback. Priorities (`COLLECTING` first, nobody
//! starves) stay inside each lane's [`DueQueue`].

use tokio::time::Instant;

use super::EngineConfig;
use crate::api::ApiError;
use crate::metrics::Metrics;
use crate::pacing::Pacer;
use crate::rate_control::{COOL_DOWN, RateControl};
use crate::scheduler::{AgentId, Cadence, DueQueue, later};

/// An API action, each with its own lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `DescribeOpenPortTaskStatus`.
    PollStatus,
    /// `CreateOpenPortTask`.
    CreateTask,
    /// `DescribeOpenPorts`.
    FetchPorts,
}

impl Action {
    /// Every action, in lane order.
    pub const ALL: [Action; 3] = [Action::PollStatus, Action::CreateTask, Action::FetchPorts];

    /// Its lane's index in [`super::account::Account::lanes`].
    pub fn index(self) -> usize {
        match self {
            Action::PollStatus => 0,
            Action::CreateTask => 1,
            Action::FetchPorts => 2,
        }
    }

    /// The API's name for it (`[api.actions.NAME]`, and the `action` label of the metrics).
    pub fn api_name(self) -> &'static str {
        match self {
            Action::PollStatus => "DescribeOpenPortTaskStatus",
            Action::CreateTask => "CreateOpenPortTask",
            Action::FetchPorts => "DescribeOpenPorts",
        }
    }
}

/// What one request does. A job knows its action, so it knows its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Job {
    /// Ask `DescribeOpenPortTaskStatus` for this agent.
    PollStatus(AgentId),
    /// `CreateOpenPortTask` for this agent (the reason is kept by the inventory).
    CreateTask(AgentId),
    /// The next page of `DescribeOpenPorts` for this agent (the offset is kept by the
    /// inventory's fetch in progress).
    FetchPorts(AgentId),
}

impl Job {
    /// The action it calls.
    pub fn action(self) -> Action {
        match self {
            Job::PollStatus(_) => Action::PollStatus,
            Job::CreateTask(_) => Action::CreateTask,
            Job::FetchPorts(_) => Action::FetchPorts,
        }
    }

    /// The agent it is about.
    pub fn agent(self) -> AgentId {
        match self {
            Job::PollStatus(id) | Job::CreateTask(id) | Job::FetchPorts(id) => id,
        }
    }
}

/// One action's due queue, strict limiter and rate control.
#[derive(Debug)]
pub(crate) struct Lane {
    /// The action this lane sends.
    pub action: Action,
    /// Who is due when.
    pub queue: DueQueue,
    /// Never more than the rate in force in any 1-second window.
    pub pacer: Pacer,
    /// The rate in force after throttling answers.
    pub rate: RateControl,
}

impl Lane {
    /// A lane at the configured rate.
    pub fn new(action: Action, config: &EngineConfig) -> Self {
        Lane {
            action,
            // A collecting agent goes before any other that became due less than one
            // collecting interval earlier: first in practice, yet nobody starves.
            queue: DueQueue::new(config.intervals.collecting),
            pacer: Pacer::new(config.requests_per_second),
            rate: RateControl::new(config.requests_per_second),
        }
    }

    /// New settings (reload): the rate never jumps above what throttling allows.
    pub fn reconfigure(&mut self, config: &EngineConfig) {
        self.rate.set_target(config.requests_per_second);
        self.queue.set_boost(config.intervals.collecting);
        self.pacer.set_rate(self.rate.rate());
    }

    /// This lane's own rate (`[api.actions.NAME] requests_per_second`): the target the rate
    /// control climbs back to, never above what throttling allows now.
    pub fn set_target_rate(&mut self, requests_per_second: u32) {
        self.rate.set_target(requests_per_second);
        self.pacer.set_rate(self.rate.rate());
    }

    /// Takes the most urgent due job if the limiter has a slot now; otherwise says when to
    /// look again (`None`: nothing queued).
    pub fn take(&mut self, now: Instant) -> Result<Job, Option<Instant>> {
        match self.queue.next_due() {
            Some(due) if due <= now => {
                self.pacer.try_acquire().map_err(Some)?;
                match self.queue.pop_due(now) {
                    Some(id) => Ok(self.job(id)),
                    // Unreachable (something was due); look again at once.
                    None => Err(Some(now)),
                }
            }
            due => Err(due),
        }
    }

    fn job(&self, id: AgentId) -> Job {
        match self.action {
            Action::PollStatus => Job::PollStatus(id),
            Action::CreateTask => Job::CreateTask(id),
            Action::FetchPorts => Job::FetchPorts(id),
        }
    }

    /// The answer for `id` came: due again at `next`, or (`None`) never again in this run.
    pub fn finish(&mut self, id: AgentId, next: Option<(Instant, Cadence)>, now: Instant) {
        match next {
            Some((at, cadence)) => {
                self.queue.finish(id, at, cadence);
            }
            None => {
                self.queue.remove(id);
                self.queue.finish(id, now, Cadence::Settled);
            }
        }
    }

    /// A throttling answer: maybe cut the rate and pause so the server's window empties.
    /// Returns the new rate when it was cut (for `rate_limited`).
    pub fn throttled(&mut self, now: Instant) -> Option<u32> {
        let rate = self.rate.on_throttled(now)?;
        self.pacer.set_rate(rate);
        self.pacer.pause_until(later(now, COOL_DOWN));
        Some(rate)
    }

    /// A request got through: the rate may climb back.
    pub fn succeeded(&mut self, now: Instant) {
        if let Some(rate) = self.rate.on_success(now) {
            self.pacer.set_rate(rate);
        }
    }
}

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
