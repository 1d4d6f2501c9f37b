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

use tokio::time::Instant;

use super::agents::Progress;
use super::{CREDENTIALS_EVENT_EVERY, ONCE_TRIES, POLL_FAILED_EVERY};
use crate::api::{ApiError, ErrorClass};
use crate::events::Event;
use crate::scheduler::{Cadence, Intervals, backoff, later};
use crate::status::{PollOutcome, Status};
use crate::tracker::Transition;

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

/// One more failure in a row; a `poll_failed` unless one went out less than
/// [`POLL_FAILED_EVERY`] ago.
fn count_failure(
    who: Who<'_>,
    progress: &mut Progress,
    error: &ApiError,
    now: Instant,
    events: &mut Vec<Event>,
) {
    // Saturating: a daemon may run for years against an agent that always fails.
    progress.failures = progress.failures.saturating_add(1);
    let due = progress
        .last_failed_event
        .is_none_or(|t| now.duration_since(t) >= POLL_FAILED_EVERY);
    if due {
        progress.last_failed_event = Some(now);
        events.push(Event::PollFailed {
            uuid: who.uuid.to_string(),
            agent_name: who.name.to_string(),
            error_code: error.code().to_string(),
            error_message: error.message(),
            request_id: error.request_id().map(str::to_string),
            consecutive_failures: progress.failures,
        });
    }
}

/// The first failure is retried at once; repeats back off (exponential, jittered, capped).
fn backoff_next(
    progress: &Progress,
    now: Instant,
    cap: std::time::Duration,
    jitter: f64,
) -> Instant {
    if progress.failures <= 1 {
        return now;
    }
    later(now, backoff(progress.failures - 1, cap, jitter))
}

/// The `credentials_failed` event for `error`.
pub(crate) fn credentials_failed(error: &ApiError, ctx: &Context<'_>) -> Event {
    Event::CredentialsFailed {
        error_code: error.code().to_string(),
        error_message: error.message(),
        source: ctx.credential_source.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const U: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

    fn who() -> Who<'static> {
        Who {
            uuid: U,
            name: "web-01",
        }
    }

    fn intervals() -> Intervals {
        Intervals {
            settled: Duration::from_secs(60),
            collecting: Duration::from_secs(5),
            offline: Duration::from_secs(30),
        }
    }

    fn ctx(now: Instant) -> Context<'static> {
        Context {
            now,
            intervals: intervals(),
            once: false,
            can_refresh_credentials: false,
            last_credentials_event: None,
            credential_source: "env",
            jitter: 1.0,
        }
    }

    fn status(s: &str) -> PollOutcome {
        PollOutcome::Status {
            status: Status::new(s),
            request_id: "r".into(),
            error_code: None,
        }
    }

    fn failed(code: &str) -> PollOutcome {
        PollOutcome::Failed(ApiError::Api {
            code: code.into(),
            message: "m".into(),
            request_id: Some("r-err".into()),
        })
    }

    fn names(d: &Decision) -> Vec<&'static str> {
        d.events.iter().map(Event::name).collect()
    }

    #[test]
    fn a_first_answer_is_a_change_from_unknown_and_sets_the_cadence() {
        let t0 = Instant::now();
        let d = decide(
            who(),
            Progress::default(),
            None,
            status("COLLECTING"),
            &ctx(t0),
        );
        assert_eq!(names(&d), ["status_changed"]);
        let Event::StatusChanged {
            from_status,
            to_status,
            ..
        } = &d.events[0]
        else {
            unreachable!()
        };
        assert_eq!(
            (from_status, to_status),
            (&Status::Unknown, &Status::Collecting)
        );
        assert_eq!(
            d.next,
            Some((t0 + Duration::from_secs(5), Cadence::Collecting))
        );
        assert!(d.signals.succeeded && !d.signals.done_once);
        assert_eq!(d.signals.credentials, Some(Credentials::Accepted));
        assert_eq!(d.progress.transitions, 1);
        assert!(d.observed.unwrap().changed);
    }

    #[test]
    fn the_same_status_again_is_no_event_but_is_recorded() {
        let t0 = Instant::now();
        let p = Progress {
            polled_once: true,
            ..Progress::default()
        };
        let d = decide(
            who(),
            p,
            Some(&Status::Complete),
            status("COMPLETE"),
            &ctx(t0),
        );
        assert!(d.events.is_empty());
        assert!(!d.signals.done_once);
        let o = d.observed.unwrap();
        assert!(!o.changed);
        assert_eq!(o.request_id, "r");
        assert_eq!(
            d.next,
            Some((t0 + Duration::from_secs(60), Cadence::Settled))
        );
    }

    #[test]
    fn an_error_that_is_a_status_keeps_its_code() {
        let t0 = Instant::now();
        let outcome = PollOutcome::from_result(Err(ApiError::Api {
            code: "FailedOperation.AgentOffline".into(),
            message: "m".into(),
            request_id: Some("r1".into()),
        }));
        let d = decide(
            who(),
            Progress::default(),
            Some(&Status::Complete),
            outcome,
            &ctx(t0),
        );
        let Event::StatusChanged {
            to_status,
            error_code,
            request_id,
            ..
        } = &d.events[0]
        else {
            unreachable!()
        };
        assert_eq!(to_status, &Status::AgentOffline);
        assert_eq!(error_code.as_deref(), Some("FailedOperation.AgentOffline"));
        assert_eq!(request_id, "r1");
        assert_eq!(
            d.next,
            Some((t0 + Duration::from_secs(30), Cadence::Offline))
        );
    }

    #[test]
    fn transient_failures_back_off_report_once_a_minute_then_recover() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        let mut at = t0;
        let mut reported = 0;
        let mut delays = Vec::new();
        for _ in 0..6 {
            let d = decide(
                who(),
                p,
                Some(&Status::Complete),
                failed("InternalError"),
                &ctx(at),
            );
            assert!(
                d.observed.is_none(),
                "a failed poll never changes the status"
            );
            reported += d.events.len();
            let (next, cadence) = d.next.unwrap();
            assert_eq!(cadence, Cadence::Settled);
            delays.push(next - at);
            p = d.progress;
            at = next + Duration::from_secs(1);
        }
        // At once, then 1 s, 2 s, 4 s, 8 s, 16 s (jitter 1.0: the ceiling).
        assert_eq!(
            delays,
            [0, 1, 2, 4, 8, 16].map(Duration::from_secs).to_vec()
        );
        assert_eq!(reported, 1, "one poll_failed in the first minute");
        assert_eq!(p.failures, 6);
        assert_eq!(p.last_error.as_deref(), Some("InternalError: m"));
        // A minute after the first report, the next failure reports again.
        let later = t0 + POLL_FAILED_EVERY;
        let d = decide(
            who(),
            p,
            Some(&Status::Complete),
            failed("InternalError"),
            &ctx(later),
        );
        let Event::PollFailed {
            consecutive_failures,
            request_id,
            ..
        } = &d.events[0]
        else {
            unreachable!()
        };
        assert_eq!(*consecutive_failures, 7);
        assert_eq!(request_id.as_deref(), Some("r-err"));
        // The cap is the agent's interval.
        assert!(d.next.unwrap().0 - later <= Duration::from_secs(60));
        let d = decide(
            who(),
            d.progress,
            Some(&Status::Complete),
            status("COMPLETE"),
            &ctx(later),
        );
        assert_eq!(names(&d), ["poll_recovered"]);
        assert_eq!(d.progress.failures, 0);
        assert_eq!(d.progress.last_failed_event, None);
        assert_eq!(d.progress.last_error, None);
    }

    #[test]
    fn throttling_is_not_the_agents_fault() {
        let t0 = Instant::now();
        let d = decide(
            who(),
            Progress::default(),
            Some(&Status::Collecting),
            failed("RequestLimitExceeded.UinLimitExceeded"),
            &ctx(t0),
        );
        assert!(d.events.is_empty());
        assert_eq!(d.progress.failures, 0);
        assert_eq!(
            d.signals.throttled.as_deref(),
            Some("RequestLimitExceeded.UinLimitExceeded")
        );
        assert!(!d.signals.succeeded);
        assert_eq!(d.next, Some((t0, Cadence::Collecting)));
    }

    #[test]
    fn refused_credentials_alert_at_most_every_30_s_and_stop_once() {
        let t0 = Instant::now();
        let mut c = ctx(t0);
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.SignatureFailure"),
            &c,
        );
        assert_eq!(names(&d), ["credentials_failed", "poll_failed"]);
        assert_eq!(
            d.signals.credentials,
            Some(Credentials::Refused { reported: true })
        );
        assert_eq!(d.signals.abort_once, None);
        assert_eq!(
            d.next,
            Some((t0, Cadence::Settled)),
            "due at once; the gate spaces probes"
        );
        c.last_credentials_event = Some(t0);
        c.now = t0 + Duration::from_secs(10);
        let d = decide(
            who(),
            d.progress,
            None,
            failed("AuthFailure.SignatureFailure"),
            &c,
        );
        assert!(names(&d).is_empty());
        assert_eq!(
            d.signals.credentials,
            Some(Credentials::Refused { reported: false })
        );
        // Without a refresher a bad token is refused credentials too; `once` stops.
        c.once = true;
        c.now = t0 + CREDENTIALS_EVENT_EVERY;
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.TokenFailure"),
            &c,
        );
        assert_eq!(names(&d), ["credentials_failed", "poll_failed"]);
        assert_eq!(
            d.signals.abort_once.as_deref(),
            Some("AuthFailure.TokenFailure: m")
        );
        assert_eq!(d.next, None);
    }

    #[test]
    fn a_bad_token_wakes_the_refresher_and_retries_at_once() {
        let t0 = Instant::now();
        let mut c = ctx(t0);
        c.can_refresh_credentials = true;
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.TokenFailure"),
            &c,
        );
        assert!(d.signals.refresh_credentials);
        assert_eq!(d.signals.credentials, None);
        assert_eq!(names(&d), ["poll_failed"]);
        assert_eq!(d.next, Some((t0, Cadence::Settled)));
    }

    #[test]
    fn clock_errors_retry_at_once_then_back_off() {
        let t0 = Instant::now();
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.SignatureExpire"),
            &ctx(t0),
        );
        assert_eq!(d.next, Some((t0, Cadence::Settled)));
        let d = decide(
            who(),
            d.progress,
            None,
            failed("AuthFailure.SignatureExpire"),
            &ctx(t0),
        );
        assert_eq!(
            d.next,
            Some((t0 + Duration::from_secs(1), Cadence::Settled))
        );
    }

    #[test]
    fn request_errors_wait_for_the_agents_interval() {
        let t0 = Instant::now();
        let d = decide(
            who(),
            Progress::default(),
            Some(&Status::AgentOffline),
            failed("FailedOperation.Other"),
            &ctx(t0),
        );
        assert_eq!(
            d.next,
            Some((t0 + Duration::from_secs(30), Cadence::Offline))
        );
        assert_eq!(names(&d), ["poll_failed"]);
    }

    #[test]
    fn once_mode_keeps_request_ids_and_polls_nobody_twice() {
        let t0 = Instant::now();
        let mut c = ctx(t0);
        c.once = true;
        let d = decide(who(), Progress::default(), None, status("COMPLETE"), &c);
        assert_eq!(d.progress.request_id.as_deref(), Some("r"));
        assert!(d.signals.done_once);
        assert_eq!(d.next, None);
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("InternalError"),
            &c,
        );
        assert_eq!(d.progress.request_id.as_deref(), Some("r-err"));
        // A transient failure is tried again (issue 8 #9), see the next test.
        assert!(d.next.is_some() && !d.signals.done_once);
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("FailedOperation.Other"),
            &c,
        );
        assert_eq!(d.progress.request_id.as_deref(), Some("r-err"));
        assert_eq!(d.next, None);
        assert!(d.signals.done_once && d.progress.done_once);
    }

    /// Issue 8 #9: `once` retries transient failures (up to `ONCE_TRIES`, backing off) and
    /// throttled ones (not counted); other failures are final.
    #[test]
    fn once_mode_retries_transient_and_throttled_failures_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut c = ctx(t0);
        c.once = true;
        let mut p = Progress::default();
        let mut nexts = Vec::new();
        for _ in 0..ONCE_TRIES {
            let d = decide(who(), p, None, failed("InternalError"), &c);
            nexts.push(d.next.map(|(at, _)| at - t0));
            assert_eq!(d.signals.done_once, d.next.is_none());
            p = d.progress;
        }
        assert_eq!(
            nexts,
            [Some(Duration::ZERO), Some(Duration::from_secs(1)), None]
        );
        assert!(p.done_once);
        for _ in 0..10 {
            let d = decide(
                who(),
                Progress::default(),
                None,
                failed("RequestLimitExceeded"),
                &c,
            );
            assert_eq!(d.next, Some((t0, Cadence::Settled)));
            assert_eq!(d.progress.failures, 0);
        }
        for code in ["UnauthorizedOperation", "ResourceNotFound.Other"] {
            let d = decide(who(), Progress::default(), None, failed(code), &c);
            assert_eq!(d.next, None, "{code}");
            assert_eq!(d.signals.abort_once, None, "{code}: one agent, not the run");
        }
    }

    /// Issue 8 #1: permission denied for one agent backs off that agent (1 s, 2 s, 4 s, …,
    /// capped at its interval) and says nothing about the credentials.
    #[test]
    fn a_denied_agent_backs_off_alone_and_leaves_the_credentials_gate_open() {
        let t0 = Instant::now();
        let mut p = Progress::default();
        let mut delays = Vec::new();
        for _ in 0..8 {
            let d = decide(
                who(),
                p,
                Some(&Status::Collecting),
                failed("UnauthorizedOperation"),
                &ctx(t0),
            );
            assert_eq!(d.signals.credentials, None);
            assert!(!names(&d).contains(&"credentials_failed"));
            assert_eq!(
                d.signals.denied,
                Some(("UnauthorizedOperation".to_string(), "m".to_string()))
            );
            delays.push(d.next.unwrap().0 - t0);
            p = d.progress;
        }
        assert_eq!(delays, [1, 2, 4, 5, 5, 5, 5, 5].map(Duration::from_secs));
    }

    #[test]
    fn refused_temporary_credentials_wake_the_refresher_too() {
        let t0 = Instant::now();
        let mut c = ctx(t0);
        c.can_refresh_credentials = true;
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.SecretIdNotFound"),
            &c,
        );
        assert!(d.signals.refresh_credentials);
        assert!(matches!(
            d.signals.credentials,
            Some(Credentials::Refused { .. })
        ));
        // Without a refresher there is nothing to wake.
        let d = decide(
            who(),
            Progress::default(),
            None,
            failed("AuthFailure.SecretIdNotFound"),
            &ctx(t0),
        );
        assert!(!d.signals.refresh_credentials);
    }
}
