use std::time::Duration;

use super::super::POLL_FAILED_EVERY;
use super::*;
use crate::api::ApiError;

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
