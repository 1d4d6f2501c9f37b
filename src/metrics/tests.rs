//! The registry alone: what events, answers and refreshes turn into, read back from the
//! exposition text as Prometheus would.

use std::sync::Arc;
use std::time::Duration;

use super::*;

fn changed(uuid: &str, from: &str, to: &str) -> Event {
    Event::StatusChanged {
        uuid: uuid.into(),
        agent_name: "web-01".into(),
        from_status: Status::new(from),
        to_status: Status::new(to),
        request_id: "r".into(),
        error_code: None,
    }
}

/// The value of the series `line_start` (name and labels exactly as encoded).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().expect("a number"))
}

/// Watched agents' known statuses, as the engine's table would give them.
type KnownList = Vec<(String, Status)>;

fn known(entries: &[(&str, &str)]) -> KnownList {
    entries
        .iter()
        .map(|(u, s)| (u.to_string(), Status::new(s)))
        .collect()
}

#[test]
fn status_changes_count_exactly_the_events() {
    let m = Metrics::new(false);
    for _ in 0..3 {
        m.emit(&changed("a", "COLLECTING", "COMPLETE"));
    }
    m.emit(&changed("b", "UNKNOWN", "COLLECTING"));
    // Other events are no status changes.
    m.emit(&Event::ClockSkew { skew_seconds: 40 });
    let text = m.encode(false);
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_status_changes_total{from_status=\"COLLECTING\",to_status=\"COMPLETE\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_status_changes_total{from_status=\"UNKNOWN\",to_status=\"COLLECTING\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_port_events_total{event=\"port_opened\"}"
        ),
        Some(0.0),
        "exported before the first event"
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "cwp_portwatch_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
}

/// Issue 20 item 9: a flood of invented codes filled the bound and the shipped alerts'
/// codes (`RequestLimitExceeded`, `AuthFailure.*`) were counted as `other`, so the alerts
/// could never fire. Every known code keeps its label after any number of unknown ones, and
/// an unknown code of a known family past the bound still matches its family's regex.
#[test]
fn known_codes_keep_their_label_after_the_bound_of_unknown_ones() {
    let m = Metrics::new(false);
    let action = "DescribeOpenPortTaskStatus";
    for i in 0..(MAX_LABEL_VALUES + 10) {
        m.api_answer(action, Err(&format!("Invented{i}")), Duration::ZERO);
    }
    for code in crate::api::error::KNOWN_CODES {
        m.api_answer(action, Err(code), Duration::ZERO);
    }
    m.api_answer(action, Err("RequestLimitExceeded.New"), Duration::ZERO);
    m.api_answer(action, Err("AuthFailure.New"), Duration::ZERO);
    m.api_answer(action, Err("Invented.New"), Duration::ZERO);
    let text = m.encode(false);
    let series = |outcome: &str| {
        format!("cwp_portwatch_api_requests_total{{action=\"{action}\",outcome=\"{outcome}\"}}")
    };
    for code in crate::api::error::KNOWN_CODES {
        assert_eq!(value(&text, &series(code)), Some(1.0), "{code}: {text}");
    }
    assert_eq!(
        value(&text, &series("RequestLimitExceeded.other")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, &series("AuthFailure.other")), Some(1.0));
    // 10 invented codes past the bound, and one of an unknown family.
    assert_eq!(value(&text, &series("other")), Some(11.0));
    let unknown = text
        .lines()
        .filter(|l| l.starts_with("cwp_portwatch_api_requests_total{"))
        .filter(|l| l.contains("outcome=\"Invented"))
        .count();
    assert_eq!(unknown, MAX_LABEL_VALUES, "unknown codes stay bounded");
}

#[test]
fn known_statuses_keep_their_label_after_the_bound_of_unknown_ones() {
    let statuses = Bounded::new(Vocabulary::Statuses);
    for i in 0..(MAX_LABEL_VALUES + 10) {
        assert_ne!(statuses.label(&format!("NEW_{i}")), "");
    }
    assert_eq!(statuses.label("NEW_X"), "other");
    for status in &KNOWN_STATUSES {
        assert_eq!(statuses.label(status.as_str()), status.as_str());
    }
    // Statuses have no families: `COMPLETE.x` is just unknown.
    assert_eq!(statuses.label("COMPLETE.x"), "other");
}

#[test]
fn api_answers_count_outcomes_and_bound_hostile_codes() {
    let m = Metrics::new(false);
    let action = "DescribeOpenPortTaskStatus";
    m.api_answer(action, Ok(()), Duration::from_millis(20));
    m.api_answer(action, Ok(()), Duration::from_millis(40));
    m.api_answer(
        action,
        Err("RequestLimitExceeded"),
        Duration::from_millis(3),
    );
    m.api_answer(
        action,
        Err("Evil\"}\n# TYPE x counter\nx 1"),
        Duration::ZERO,
    );
    for i in 0..(MAX_LABEL_VALUES * 2) {
        m.api_answer(action, Err(&format!("Invented.{i}")), Duration::ZERO);
    }
    let text = m.encode(false);
    let series = |outcome: &str| {
        format!("cwp_portwatch_api_requests_total{{action=\"{action}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(value(&text, &series("ok")), Some(2.0), "{text}");
    assert_eq!(value(&text, &series("RequestLimitExceeded")), Some(1.0));
    assert_eq!(
        value(&text, &series("Evil_____TYPE_x_counter_x_1")),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("\nx 1"), "a code cannot forge a series");
    let outcomes = text
        .lines()
        .filter(|l| l.starts_with("cwp_portwatch_api_requests_total{"))
        .count();
    // `ok`, the known `RequestLimitExceeded` (which does not count against the bound), the
    // bound's worth of unknown codes, and `other`.
    assert_eq!(
        outcomes,
        MAX_LABEL_VALUES + 3,
        "bounded: the rest is `other`"
    );
    assert!(value(&text, &series("other")).unwrap() > 0.0);
    assert_eq!(
        value(
            &text,
            &format!("cwp_portwatch_api_request_duration_seconds_count{{action=\"{action}\"}}")
        ),
        Some((4 + MAX_LABEL_VALUES * 2) as f64)
    );
    assert_eq!(
        value(
            &text,
            &format!(
                "cwp_portwatch_api_request_duration_seconds_bucket{{action=\"{action}\",le=\"0.02\"}}"
            )
        ),
        Some((3 + MAX_LABEL_VALUES * 2) as f64),
        "{text}"
    );
}

#[test]
fn agents_per_status_sum_to_the_watchlist() {
    let m = Metrics::new(false);
    let k = known(&[
        ("a", "COLLECTING"),
        ("b", "COLLECTING"),
        ("c", "SOMETHING_NEW"),
    ]);
    m.refresh(&Snapshot {
        agents: 5,
        known: &|f| k.iter().for_each(|(_, s)| f(s)),
        is_known: &|u| k.iter().any(|(x, _)| x == u),
        rates: &[("DescribeOpenPortTaskStatus", 17)],
        poll_lag: Duration::from_millis(1500),
        clock_skew_ms: -2500,
    });
    let text = m.encode(false);
    let agents = |s: &str| value(&text, &format!("cwp_portwatch_agents{{status=\"{s}\"}}"));
    assert_eq!(agents("COLLECTING"), Some(2.0), "{text}");
    assert_eq!(agents("SOMETHING_NEW"), Some(1.0));
    assert_eq!(agents("UNKNOWN"), Some(2.0), "never answered");
    assert_eq!(agents("COMPLETE"), Some(0.0));
    let sum: f64 = text
        .lines()
        .filter(|l| l.starts_with("cwp_portwatch_agents{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(sum, 5.0);
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_rate_limit_per_second{action=\"DescribeOpenPortTaskStatus\"}"
        ),
        Some(17.0)
    );
    assert_eq!(value(&text, "cwp_portwatch_poll_lag_seconds"), Some(1.5));
    assert_eq!(value(&text, "cwp_portwatch_clock_skew_seconds"), Some(-2.5));
    // A status that is gone is no longer exported.
    let k = known(&[("a", "COMPLETE")]);
    m.refresh(&Snapshot {
        agents: 1,
        known: &|f| k.iter().for_each(|(_, s)| f(s)),
        is_known: &|u| k.iter().any(|(x, _)| x == u),
        rates: &[],
        poll_lag: Duration::ZERO,
        clock_skew_ms: 0,
    });
    let text = m.encode(false);
    assert_eq!(
        value(&text, "cwp_portwatch_agents{status=\"SOMETHING_NEW\"}"),
        None
    );
    assert_eq!(
        value(&text, "cwp_portwatch_agents{status=\"COLLECTING\"}"),
        Some(0.0)
    );
}

#[test]
fn per_agent_series_follow_events_and_forget_removed_agents() {
    let none = Metrics::new(false);
    none.emit(&changed("a", "UNKNOWN", "COMPLETE"));
    assert!(!none.encode(false).contains("agent_status"));

    let m = Metrics::new(true);
    m.agent_known(&Arc::from("c"), &Arc::from("db\"1\n"), &Status::Failed);
    m.emit(&changed("a", "UNKNOWN", "COLLECTING"));
    m.emit(&changed("a", "COLLECTING", "COMPLETE"));
    m.emit(&changed("b", "UNKNOWN", "AGENT_OFFLINE"));
    let text = m.encode(false);
    let series = |u: &str, n: &str, s: &str| {
        format!("cwp_portwatch_agent_status{{uuid=\"{u}\",agent_name=\"{n}\",status=\"{s}\"}}")
    };
    assert_eq!(
        value(&text, &series("a", "web-01", "COMPLETE")),
        Some(1.0),
        "{text}"
    );
    assert_eq!(value(&text, &series("a", "web-01", "COLLECTING")), None);
    assert_eq!(
        value(&text, &series("b", "web-01", "AGENT_OFFLINE")),
        Some(1.0)
    );
    // The crate escapes the name's quote and line break.
    assert_eq!(
        value(&text, &series("c", "db\\\"1\\n", "FAILED")),
        Some(1.0),
        "{text}"
    );
    // `b` removed by a reload: the engine forgot it.
    let k = known(&[("a", "COMPLETE"), ("c", "FAILED")]);
    m.refresh(&Snapshot {
        agents: 2,
        known: &|f| k.iter().for_each(|(_, s)| f(s)),
        is_known: &|u| k.iter().any(|(x, _)| x == u),
        rates: &[],
        poll_lag: Duration::ZERO,
        clock_skew_ms: 0,
    });
    let text = m.encode(false);
    assert_eq!(value(&text, &series("b", "web-01", "AGENT_OFFLINE")), None);
    assert_eq!(value(&text, &series("a", "web-01", "COMPLETE")), Some(1.0));
}

#[test]
fn openmetrics_when_asked_and_process_series_in_both() {
    let m = Metrics::new(false);
    let om = m.encode(true);
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(
        om.contains("# TYPE cwp_portwatch_port_events counter"),
        "{om}"
    );
    let text = m.encode(false);
    assert!(!text.contains("# EOF"));
    for out in [&om, &text] {
        assert!(value(out, "process_cpu_seconds_total").is_some(), "{out}");
        assert!(
            value(out, "process_resident_memory_bytes").unwrap() > 1e6,
            "{out}"
        );
        let start = value(out, "process_start_time_seconds").unwrap();
        let now = crate::clock::unix_now() as f64;
        assert!(
            start > now - 86_400.0 * 365.0 && start <= now + 1.0,
            "{start} vs {now}"
        );
    }
}

/// Several accounts: one registry, each handle's series labelled with its account and kept
/// apart (a gauge refreshed by one account never overwrites another's); every family is
/// described once, as the exposition format requires.
#[test]
fn several_accounts_share_one_registry_with_their_own_series() {
    let handles = Metrics::for_accounts(false, &["alpha", "beta"]);
    let (alpha, beta) = (&handles[0], &handles[1]);
    alpha.emit(&changed("a", "UNKNOWN", "COMPLETE"));
    alpha.emit(&changed("a", "COMPLETE", "COLLECTING"));
    beta.emit(&changed("b", "UNKNOWN", "COMPLETE"));
    alpha.api_answer(
        "DescribeOpenPortTaskStatus",
        Ok(()),
        Duration::from_millis(20),
    );
    beta.api_answer(
        "DescribeOpenPortTaskStatus",
        Err("RequestLimitExceeded"),
        Duration::from_millis(20),
    );
    let refresh = |m: &Metrics, k: &KnownList, lag: u64| {
        m.refresh(&Snapshot {
            agents: k.len(),
            known: &|f| k.iter().for_each(|(_, s)| f(s)),
            is_known: &|u| k.iter().any(|(x, _)| x == u),
            rates: &[("DescribeOpenPortTaskStatus", 20)],
            poll_lag: Duration::from_secs(lag),
            clock_skew_ms: 0,
        })
    };
    refresh(alpha, &known(&[("a", "COLLECTING")]), 3);
    refresh(beta, &known(&[("b", "COMPLETE"), ("c", "COMPLETE")]), 7);
    // Any handle encodes the whole registry (the process_* lines move between two scrapes).
    let text = alpha.encode(false);
    let ours = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("cwp_portwatch_"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(ours(&text), ours(&beta.encode(false)));
    for (series, want) in [
        (
            "cwp_portwatch_status_changes_total{account=\"alpha\",from_status=\"COMPLETE\",to_status=\"COLLECTING\"}",
            1.0,
        ),
        (
            "cwp_portwatch_status_changes_total{account=\"beta\",from_status=\"UNKNOWN\",to_status=\"COMPLETE\"}",
            1.0,
        ),
        (
            "cwp_portwatch_agents{account=\"alpha\",status=\"COLLECTING\"}",
            1.0,
        ),
        (
            "cwp_portwatch_agents{account=\"alpha\",status=\"COMPLETE\"}",
            0.0,
        ),
        (
            "cwp_portwatch_agents{account=\"beta\",status=\"COMPLETE\"}",
            2.0,
        ),
        ("cwp_portwatch_poll_lag_seconds{account=\"alpha\"}", 3.0),
        ("cwp_portwatch_poll_lag_seconds{account=\"beta\"}", 7.0),
        (
            "cwp_portwatch_api_requests_total{account=\"alpha\",action=\"DescribeOpenPortTaskStatus\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "cwp_portwatch_api_requests_total{account=\"beta\",action=\"DescribeOpenPortTaskStatus\",outcome=\"RequestLimitExceeded\"}",
            1.0,
        ),
    ] {
        assert_eq!(value(&text, series), Some(want), "{series}\n{text}");
    }
    assert_eq!(
        text.matches("# TYPE cwp_portwatch_agents ").count(),
        1,
        "{text}"
    );
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("cwp_portwatch_poll_lag_seconds ")),
        "no unlabelled series beside the accounts' own:\n{text}"
    );
    // One account: no `account` label anywhere.
    let one = Metrics::new(false);
    one.emit(&changed("a", "UNKNOWN", "COMPLETE"));
    assert!(!one.encode(false).contains("account="));
}

/// Issue 21 item 4: `sum(api_requests_total) = sum(api_request_duration_seconds_count)` at
/// every scrape, not only eventually. Two threads answer as fast as they can (two accounts,
/// several outcomes) while scrapes are encoded on a third, in both formats: every scrape
/// counts each answer in both families or in neither. (Without the `answers` lock the two
/// families, encoded one after the other, disagree within the first few dozen scrapes.)
#[test]
fn every_scrape_counts_each_answer_in_the_counter_and_the_histogram_alike() {
    fn sum(text: &str, prefix: &str) -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    }
    let handles = Metrics::for_accounts(false, &["alpha", "beta"]);
    let handles: Vec<Arc<Metrics>> = handles.into_iter().map(Arc::new).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answering: Vec<_> = handles
        .iter()
        .map(|m| {
            let (m, stop) = (m.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let outcome = if n.is_multiple_of(3) {
                        Err("RequestLimitExceeded")
                    } else {
                        Ok(())
                    };
                    m.api_answer(
                        "DescribeOpenPortTaskStatus",
                        outcome,
                        Duration::from_millis(7),
                    );
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut moving = 0;
    let mut last = 0.0;
    // Scrapes until answers moved between 100 of them (however the threads get scheduled on
    // a busy machine), each one checked; bounded, so answers that never run fail the test.
    let mut scrapes = 0;
    for i in 0..1_000_000 {
        if moving >= 100 {
            break;
        }
        scrapes += 1;
        let text = handles[0].encode(i % 2 == 1);
        let requests = sum(&text, "cwp_portwatch_api_requests_total{");
        let counted = sum(&text, "cwp_portwatch_api_request_duration_seconds_count{");
        assert_eq!(requests, counted, "scrape {i}:\n{text}");
        if requests > last {
            moving += 1;
        }
        last = requests;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered: u64 = answering.into_iter().map(|t| t.join().unwrap()).sum();
    let text = handles[0].encode(false);
    assert_eq!(
        sum(&text, "cwp_portwatch_api_requests_total{"),
        answered as f64
    );
    // The answers really ran beside the scrapes.
    assert!(
        moving >= 100,
        "answers moved between only {moving} of {scrapes} scrapes"
    );
}

fn finding(kind: FindingKind, uuid: &str, port: u16, severity: Severity) -> Event {
    Event::Finding(Box::new(FindingEvent {
        kind,
        uuid: uuid.into(),
        agent_name: format!("host-{uuid}"),
        port,
        process_name: "redis-server".into(),
        pid: Some(9),
        machine_ip: String::new(),
        machine_name: String::new(),
        request_id: None,
        rule: "web".into(),
        severity,
        spec: None,
    }))
}

#[test]
fn finding_gauges_follow_the_events_and_start_from_what_was_stored() {
    use crate::policy::ClearReason;
    let m = Metrics::new(true);
    let text = m.encode(false);
    for s in ["info", "notice", "warning", "critical"] {
        assert_eq!(
            value(
                &text,
                &format!("cwp_portwatch_unexpected_ports{{severity=\"{s}\"}}")
            ),
            Some(0.0),
            "exported before the first event: {text}"
        );
        assert_eq!(
            value(
                &text,
                &format!("cwp_portwatch_missing_ports{{severity=\"{s}\"}}")
            ),
            Some(0.0)
        );
    }
    // Stored by an earlier run: counted, though no event repeats it.
    let stored = Findings(
        [Finding::Missing {
            rule: "web".into(),
            spec: "443/nginx".into(),
            port: 443,
            process: "nginx".into(),
            severity: Severity::Warning,
        }]
        .into_iter()
        .collect(),
    );
    m.findings_known("b", "host-b", &Findings::default(), &stored);
    m.emit(&finding(
        FindingKind::Unexpected,
        "a",
        6379,
        Severity::Critical,
    ));
    m.emit(&finding(
        FindingKind::Unexpected,
        "a",
        6380,
        Severity::Critical,
    ));
    m.emit(&finding(
        FindingKind::UnexpectedCleared(ClearReason::Closed),
        "a",
        6380,
        Severity::Critical,
    ));
    let text = m.encode(false);
    let unexpected = "cwp_portwatch_unexpected_ports{severity=\"critical\"}";
    assert_eq!(value(&text, unexpected), Some(1.0), "{text}");
    assert_eq!(
        value(&text, "cwp_portwatch_missing_ports{severity=\"warning\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_agent_unexpected_ports{uuid=\"a\",agent_name=\"host-a\",severity=\"critical\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_agent_missing_ports{uuid=\"b\",agent_name=\"host-b\",severity=\"warning\"}"
        ),
        Some(1.0)
    );
    // A reload that moved a finding to another severity (no event): it moves with it.
    let critical = Findings(
        [Finding::Missing {
            rule: "web".into(),
            spec: "443/nginx".into(),
            port: 443,
            process: "nginx".into(),
            severity: Severity::Critical,
        }]
        .into_iter()
        .collect(),
    );
    m.findings_known("b", "host-b", &stored, &critical);
    // Cleared: an agent with no findings left has no per-agent series.
    m.emit(&finding(
        FindingKind::UnexpectedCleared(ClearReason::Removed),
        "a",
        6379,
        Severity::Critical,
    ));
    let text = m.encode(false);
    assert_eq!(value(&text, unexpected), Some(0.0));
    assert_eq!(
        value(&text, "cwp_portwatch_missing_ports{severity=\"warning\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "cwp_portwatch_missing_ports{severity=\"critical\"}"),
        Some(1.0)
    );
    assert!(!text.contains("uuid=\"a\""), "{text}");
}

#[test]
fn finding_gauges_carry_the_account_with_several() {
    let handles = Metrics::for_accounts(false, &["prod", "test"]);
    handles[1].emit(&finding(FindingKind::Unexpected, "a", 22, Severity::Notice));
    let text = handles[0].encode(false);
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_unexpected_ports{account=\"test\",severity=\"notice\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "cwp_portwatch_unexpected_ports{account=\"prod\",severity=\"notice\"}"
        ),
        Some(0.0)
    );
    assert!(
        !text.contains("agent_unexpected_ports{"),
        "per_agent off: {text}"
    );
}

/// `[ha]`: `cwp_portwatch_leader` exists only once the daemon says it is a candidate, is 0 in
/// standby and 1 while leading, with one value for the process (no `account` label).
#[test]
fn the_leader_gauge_is_exported_only_with_ha_and_says_the_role() {
    let handles = Metrics::for_accounts(false, &["a", "b"]);
    let text = handles[0].encode(false);
    assert!(!text.contains("cwp_portwatch_leader"), "{text}");
    assert_eq!(handles[0].leader(), None);
    handles[0].set_leader(false);
    let text = handles[1].encode(false);
    assert!(text.contains("# TYPE cwp_portwatch_leader gauge"), "{text}");
    assert_eq!(value(&text, "cwp_portwatch_leader"), Some(0.0));
    handles[1].set_leader(true);
    assert_eq!(
        value(&handles[0].encode(false), "cwp_portwatch_leader"),
        Some(1.0)
    );
    assert_eq!(handles[0].leader(), Some(1));
    let open = handles[0].encode(true);
    assert_eq!(value(&open, "cwp_portwatch_leader"), Some(1.0), "{open}");
}
