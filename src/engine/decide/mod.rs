//! What one `DescribeOpenPortTaskStatus` answer means for its agent. Pure: no I/O, no clock
//! (`now` and the jitter draw come in), so every rule is unit-tested on plain values.
//!
//! The rules, in one place:
//! - a status (including the four error codes that are statuses) ends a failure streak
//!   (`poll_recovered`), and is a `status_changed` when it differs from the known one
//!   (exactly once: [`Transition::between`]); the agent is due again after its status's
//!   interval;
//! - throttling is not the agent's fault: no failure counted, due again at once, and the lane
//!   lowers its rate;
//! - a clock error is retried at once (the client re-learned the server's time from that very
//!   answer), repeats back off;
//! - a bad token wakes the credentials refresher when there is one, and is retried with
//!   backoff; otherwise it counts as refused credentials;
//! - refused credentials alert (`credentials_failed`, at most once per
//!   [`CREDENTIALS_EVENT_EVERY`]), close the credentials gate, and stop a `once` run;
//! - permission denied for this agent's request (`UnauthorizedOperation`) backs off this
//!   agent alone (1 s doubling, capped at its interval); the dispatcher closes the gate only
//!   when denials come in a row across agents (see `dispatcher::DENIED_IN_A_ROW`);
//! - an error about this agent's request is retried at its normal interval;
//! - anything else transient backs off exponentially with jitter, capped at the interval;
//! - every counted failure may emit `poll_failed`, at most once per [`POLL_FAILED_EVERY`];
//! - `once`: a status ends the agent's run; a throttled poll is tried again as the rate
//!   allows and a transient (or clock, or refreshed-token) failure up to [`ONCE_TRIES`] tries
//!   with backoff, within the run's deadline (`once_deadline`); any other failure is final.
//!
//! This file holds the decision and its types; `failures.rs` the bookkeeping of a failed poll
//! (the count and `poll_failed`, the backoff, `credentials_failed`).

use tokio::time::Instant;

use super::agents::Progress;
use super::{CREDENTIALS_EVENT_EVERY, ONCE_TRIES};
use crate::api::ErrorClass;
use crate::events::Event;
use crate::scheduler::{Cadence, Intervals, backoff, later};
use crate::status::{PollOutcome, Status};
use crate::tracker::Transition;

mod failures;

use failures::{backoff_next, count_failure, credentials_failed};

/// The engine-wide facts a decision depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Context<'a> {
    /// When the answer arrived.
    pub now: Instant,
    /// Poll intervals per cadence.
    pub intervals: Intervals,
    /// `once` mode: nobody is polled twice.
    pub once: bool,
    /// A credentials refresher is there to wake on a bad token.
    pub can_refresh_credentials: bool,
    /// When the last `credentials_failed` was emitted.
    pub last_credentials_event: Option<Instant>,
    /// Where the credentials came from, for `credentials_failed`.
    pub credential_source: &'a str,
    /// A uniform draw in `[0, 1)` for backoff jitter.
    pub jitter: f64,
}

/// The agent the answer is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Who<'a> {
    /// Its Uuid.
    pub uuid: &'a str,
    /// Its name, empty when none.
    pub name: &'a str,
}

/// A status the answer reported, for the agent's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Observed {
    /// The status.
    pub status: Status,
    /// RequestId of the answer.
    pub request_id: String,
    /// It differs from the known one (the state file is due for a save).
    pub changed: bool,
}

/// What the credentials gate learns from the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Credentials {
    /// An answer got through: the credentials work.
    Accepted,
    /// The API refused them; `reported`: a `credentials_failed` is among the events.
    Refused {
        /// A `credentials_failed` event was emitted now.
        reported: bool,
    },
}

/// What the dispatcher must do beyond this agent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    /// `once`: this agent needs no more polls (it has a status, or a final failure).
    pub done_once: bool,
    /// Permission denied for this agent's request ([`ErrorClass::Denied`]), with its code and
    /// message: the dispatcher counts these in a row across agents.
    pub denied: Option<(String, String)>,
    /// For the credentials gate.
    pub credentials: Option<Credentials>,
    /// Wake the credentials refresher.
    pub refresh_credentials: bool,
    /// Throttled with this code: the lane cuts its rate.
    pub throttled: Option<String>,
    /// The request got through: the lane's rate may climb back.
    pub succeeded: bool,
    /// `once` must stop: every other poll would be refused the same way.
    pub abort_once: Option<String>,
}

/// Everything one answer changes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Decision {
    /// The agent's progress from now on.
    pub progress: Progress,
    /// A status to record (none after a failed poll).
    pub observed: Option<Observed>,
    /// Due again at, with this cadence; `None`: never again in this run (`once`).
    pub next: Option<(Instant, Cadence)>,
    /// Events, in order.
    pub events: Vec<Event>,
    /// For the dispatcher.
    pub signals: Signals,
}

/// Decides what an answer means for an agent whose last known status is `known` (`None`:
/// nothing known yet) and whose progress so far is `progress`.
pub(crate) fn decide(
    who: Who<'_>,
    mut progress: Progress,
    known: Option<&Status>,
    outcome: PollOutcome,
    ctx: &Context<'_>,
) -> Decision {
    let now = ctx.now;
    let mut events = Vec::new();
    let mut signals = Signals::default();
    progress.polled_once = true;
    let (observed, next, cadence) = match outcome {
        PollOutcome::Status {
            status,
            request_id,
            error_code,
        } => {
            signals.credentials = Some(Credentials::Accepted);
            signals.succeeded = true;
            if progress.failures > 0 {
                let failed_polls = std::mem::take(&mut progress.failures);
                progress.last_failed_event = None;
                events.push(Event::PollRecovered {
                    uuid: who.uuid.to_string(),
                    agent_name: who.name.to_string(),
                    failed_polls,
                });
            }
            progress.last_error = None;
            if ctx.once {
                // The daemon finds it in the agent's known status; only `once` reports failures' ids.
                progress.request_id = Some(request_id.clone());
            }
            let transition = Transition::between(known, &status);
            let changed = transition.is_some();
            if let Some(t) = transition {
                progress.transitions = progress.transitions.saturating_add(1);
                events.push(Event::StatusChanged {
                    uuid: who.uuid.to_string(),
                    agent_name: who.name.to_string(),
                    from_status: t.from,
                    to_status: t.to,
                    request_id: request_id.clone(),
                    error_code,
                });
            }
            let cadence = Cadence::of(&status);
            // Nothing is polled twice after a status in `once` mode.
            let next = (!ctx.once).then(|| later(now, ctx.intervals.of(cadence)));
            let observed = Observed {
                status,
                request_id,
                changed,
            };
            (Some(observed), next, cadence)
        }
        PollOutcome::Failed(error) => {
            progress.last_error = Some(format!("{}: {}", error.code(), error.message()));
            if ctx.once {
                progress.request_id = error.request_id().map(str::to_string);
            }
            let cadence = Cadence::of(known.unwrap_or(&Status::Unknown));
            let interval = ctx.intervals.of(cadence);
            let fail = |progress: &mut Progress, events: &mut Vec<Event>| {
                count_failure(who, progress, &error, now, events)
            };
            // `once`: may this failure be tried again? Throttling, yes (the run's deadline
            // bounds it); a retryable failure, up to `ONCE_TRIES` tries; the rest, no.
            let retry_once = |progress: &Progress| progress.failures < ONCE_TRIES;
            let (next, again_in_once) = match error.class() {
                ErrorClass::Throttled => {
                    signals.throttled = Some(error.code().to_string());
                    // Not the agent's fault: it goes again as soon as the rate allows.
                    (now, true)
                }
                ErrorClass::Clock => {
                    fail(&mut progress, &mut events);
                    // The client re-learned the server's time from this very answer, so the
                    // first retry is immediate; repeats back off.
                    let next = backoff_next(&progress, now, interval, ctx.jitter);
                    (next, retry_once(&progress))
                }
                ErrorClass::CredentialsRefresh if ctx.can_refresh_credentials => {
                    // Temporary credentials: fetch fresh ones, then this agent goes again.
                    signals.refresh_credentials = true;
                    fail(&mut progress, &mut events);
                    let next = backoff_next(&progress, now, interval, ctx.jitter);
                    (next, retry_once(&progress))
                }
                ErrorClass::Fatal | ErrorClass::CredentialsRefresh => {
                    if ctx.once {
                        // Every other poll would be refused the same way.
                        signals.abort_once = Some(format!("{}: {}", error.code(), error.message()));
                    }
                    let reported = ctx
                        .last_credentials_event
                        .is_none_or(|t| now.duration_since(t) >= CREDENTIALS_EVENT_EVERY);
                    if reported {
                        events.push(credentials_failed(&error, ctx));
                    }
                    signals.credentials = Some(Credentials::Refused { reported });
                    // Temporary credentials refused (revoked, or their base key was): fresh
                    // ones may be accepted, so the refresher is woken too (it spaces fetches).
                    signals.refresh_credentials = ctx.can_refresh_credentials;
                    fail(&mut progress, &mut events);
                    // The gate spaces probes; the agent itself is due right away so that the
                    // first probe after the fix finds work.
                    (now, false)
                }
                ErrorClass::Denied => {
                    // About this agent's resource, not the credentials: this agent alone
                    // backs off (from 1 s, doubling, capped at its interval); the dispatcher
                    // counts denials in a row across agents to catch a policy that denies
                    // everything.
                    signals.denied = Some((error.code().to_string(), error.message()));
                    fail(&mut progress, &mut events);
                    let delay = backoff(progress.failures, interval, ctx.jitter);
                    (later(now, delay), false)
                }
                ErrorClass::Request | ErrorClass::AgentStatus(_) => {
                    fail(&mut progress, &mut events);
                    (later(now, interval), false)
                }
                ErrorClass::Transient => {
                    fail(&mut progress, &mut events);
                    let next = backoff_next(&progress, now, interval, ctx.jitter);
                    (next, retry_once(&progress))
                }
            };
            let next = (!ctx.once || again_in_once).then_some(next);
            (None, next, cadence)
        }
    };
    // `once`: an agent is done when it is not due again (a status, or a failure that is not
    // retried); nothing is polled again after a status.
    signals.done_once = ctx.once && next.is_none();
    progress.done_once |= signals.done_once;
    Decision {
        progress,
        observed,
        next: next.map(|at| (at, cadence)),
        events,
        signals,
    }
}

#[cfg(test)]
mod tests;
