use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use crate::policy::Severity;

/// 2026-12-08T03:00:00.000Z.
const T0: u64 = 1_796_698_800_000;

fn at(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn kind() -> Alertmanager {
    Alertmanager::for_url(
        &url::Url::parse("http://127.0.0.1:9093").unwrap(),
        Timing::default(),
    )
}

/// A kind made as the daemon makes it, for a sink with these `events` and `min_severity`.
fn kind_for_sink(events: &[&str], min_severity: Severity) -> Alertmanager {
    use crate::delivery::{EventSelector, ResolvedSink, SinkKind, SinkSettings, UrlSource};
    let url = url::Url::parse("http://127.0.0.1:9093").unwrap();
    let sink = ResolvedSink {
        settings: SinkSettings {
            name: "oncall".to_owned(),
            kind: SinkKind::Alertmanager,
            url: UrlSource::Inline(url.clone()),
            secret_file: None,
            events: events
                .iter()
                .map(|e| EventSelector::parse(e).unwrap())
                .collect(),
            min_severity,
            max_age: Duration::from_secs(3600),
            per_minute: 120,
            outbox_limit: 100,
        },
        url: secrecy::SecretString::from(url.to_string()),
        secret: None,
    };
    Alertmanager::with_timing(&sink, Timing::default())
}

fn record(seq: u64, at_ms: u64, event: &str, key: &str, resolves: bool, fields: Value) -> Record {
    Record {
        seq,
        at_ms,
        event: event.to_owned(),
        account: Some("prod".to_owned()),
        severity: Severity::Critical,
        key: key.to_owned(),
        resolves,
        ends: None,
        message: format!("{event} message"),
        fields: fields.as_object().unwrap().clone(),
    }
}

fn finding_fields() -> Value {
    json!({
        "uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
        "agent_name": "web-01",
        "port": 22,
        "process_name": "sshd",
        "pid": 812,
        "machine_ip": "10.0.0.7",
        "rule": "web tier",
        "severity": "critical",
    })
}

fn unexpected(seq: u64, at_ms: u64) -> Record {
    record(seq, at_ms, "port_unexpected", "f1", false, finding_fields())
}

fn cleared(seq: u64, at_ms: u64) -> Record {
    let mut fields = finding_fields();
    fields["reason"] = json!("closed");
    record(seq, at_ms, "port_unexpected_cleared", "f1", true, fields)
}

fn status(seq: u64, at_ms: u64, from: &str, to: &str, resolves: bool) -> Record {
    record(
        seq,
        at_ms,
        "status_changed",
        &format!("status/{to}"),
        resolves,
        json!({
            "uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
            "agent_name": "web-01",
            "from_status": from,
            "to_status": to,
        }),
    )
}

/// The alerts of a request's body.
fn alerts(request: &Request) -> Vec<Value> {
    serde_json::from_slice::<Value>(&request.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn labels(alert: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(alert["labels"].clone()).unwrap()
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Composes `records` at `now` and, as if Alertmanager took them, marks them delivered.
fn send(kind: &mut Alertmanager, records: &[Record], now: u64) -> Vec<Value> {
    let composed = kind.compose("oncall-1-1", records, at(now));
    assert_eq!(composed.covers, records.len());
    kind.delivered(records, at(now));
    alerts(&composed.request)
}

#[test]
fn a_finding_is_an_alert_with_exactly_the_spec_labels() {
    let mut k = kind();
    let posted = send(&mut k, &[unexpected(1, T0)], T0 + 5);
    assert_eq!(posted.len(), 1);
    let a = &posted[0];
    assert_eq!(
        labels(a),
        map(&[
            ("alertname", "CwpPortUnexpected"),
            ("account", "prod"),
            ("agent", "web-01"),
            ("uuid", "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"),
            ("port", "22"),
            ("process", "sshd"),
            ("severity", "critical"),
            ("rule", "web tier"),
        ])
    );
    assert_eq!(a["startsAt"], "2026-12-08T03:00:00.000Z");
    // Firing: five minutes from when it was posted.
    assert_eq!(a["endsAt"], "2026-12-08T03:05:00.005Z");
    assert_eq!(a["generatorURL"], GENERATOR_URL);
    assert_eq!(a["annotations"]["summary"], "port_unexpected message");
    assert_eq!(a["annotations"]["message_id"], "oncall-1-1");
    let description = a["annotations"]["description"].as_str().unwrap();
    assert!(
        description.starts_with("event: port_unexpected\n"),
        "{description}"
    );
    assert!(description.contains("\npid: 812\n"), "{description}");
    assert_eq!(k.firing(), 1);
    assert_eq!(k.url().as_str(), "http://127.0.0.1:9093/api/v2/alerts");
}

#[test]
fn absent_and_empty_values_are_left_out_never_sent_empty() {
    let mut k = kind();
    let mut r = record(
        1,
        T0,
        "port_missing",
        "m1",
        false,
        json!({"uuid": "u-1", "agent_name": "  ", "port": 443, "process_name": null}),
    );
    r.account = None;
    let posted = send(&mut k, &[r], T0);
    assert_eq!(
        labels(&posted[0]),
        map(&[
            ("alertname", "CwpPortMissing"),
            ("account", "default"),
            ("uuid", "u-1"),
            ("port", "443"),
            ("severity", "critical"),
        ])
    );
}

#[test]
fn the_clear_resolves_the_very_alert_it_fired_with_ends_at_when_it_cleared() {
    let mut k = kind();
    let fired = send(&mut k, &[unexpected(1, T0)], T0);
    let mut clear = cleared(2, T0 + 60_000);
    // Renamed meanwhile: the alert's identity (its labels) must still be the fired one.
    clear.fields["agent_name"] = json!("web-01-renamed");
    clear.severity = Severity::Warning;
    // Delivered late (Alertmanager was down): the alert ended when the port closed.
    let resolved = send(&mut k, &[clear], T0 + 600_000);
    assert_eq!(resolved.len(), 1);
    assert_eq!(labels(&resolved[0]), labels(&fired[0]));
    assert_eq!(resolved[0]["startsAt"], "2026-12-08T03:00:00.000Z");
    assert_eq!(resolved[0]["endsAt"], "2026-12-08T03:01:00.000Z");
    assert_eq!(
        resolved[0]["annotations"]["summary"],
        "port_unexpected_cleared message"
    );
    assert_eq!(k.firing(), 0);
    assert_eq!(k.next_periodic(), None);
}

#[test]
fn a_clear_never_seen_firing_is_still_resolved_from_its_own_fields() {
    let mut k = kind();
    let resolved = send(&mut k, &[cleared(7, T0)], T0 + 1000);
    assert_eq!(resolved.len(), 1);
    assert_eq!(labels(&resolved[0])["alertname"], "CwpPortUnexpected");
    assert_eq!(resolved[0]["startsAt"], resolved[0]["endsAt"]);
    assert_eq!(k.firing(), 0);
}

#[test]
fn a_finding_and_its_clear_in_one_message_fire_then_resolve() {
    let mut k = kind();
    let posted = send(
        &mut k,
        &[unexpected(1, T0), cleared(2, T0 + 30_000)],
        T0 + 90_000,
    );
    assert_eq!(posted.len(), 2);
    assert_eq!(labels(&posted[0]), labels(&posted[1]));
    assert_eq!(posted[1]["endsAt"], "2026-12-08T03:00:30.000Z");
    assert_eq!(k.firing(), 0);
}

#[test]
fn the_set_moves_only_when_delivered() {
    let mut k = kind();
    let composed = k.compose("oncall-1-1", &[unexpected(1, T0)], at(T0));
    assert_eq!(alerts(&composed.request).len(), 1);
    assert_eq!(k.firing(), 0, "not delivered: nothing fires on our side");
    assert_eq!(k.next_periodic(), None);
    k.delivered(&[unexpected(1, T0)], at(T0));
    assert_eq!(k.firing(), 1);
}

#[test]
fn a_status_fires_with_its_status_label_and_the_change_out_of_it_resolves_it() {
    // A sink with `events = ["status_changed:AGENT_OFFLINE"]`.
    let mut k = kind_for_sink(&["status_changed:AGENT_OFFLINE"], Severity::Warning);
    let posted = send(
        &mut k,
        &[status(1, T0, "ONLINE", "AGENT_OFFLINE", false)],
        T0,
    );
    // ONLINE was never firing: nothing to resolve, one alert.
    assert_eq!(posted.len(), 1);
    let offline = labels(&posted[0]);
    assert_eq!(offline["alertname"], "CwpAgentStatus");
    assert_eq!(offline["status"], "AGENT_OFFLINE");
    assert!(!offline.contains_key("port"));
    // Taken only as the end of AGENT_OFFLINE: resolves it, fires nothing.
    let back = send(
        &mut k,
        &[status(2, T0 + 1000, "AGENT_OFFLINE", "ONLINE", true)],
        T0 + 1000,
    );
    assert_eq!(back.len(), 1);
    assert_eq!(labels(&back[0]), offline);
    assert_eq!(back[0]["endsAt"], "2026-12-08T03:00:01.000Z");
    assert_eq!(k.firing(), 0);
}

#[test]
fn a_status_change_that_starts_another_status_ends_the_old_and_fires_the_new() {
    let mut k = kind();
    send(
        &mut k,
        &[status(1, T0, "ONLINE", "AGENT_OFFLINE", false)],
        T0,
    );
    let posted = send(
        &mut k,
        &[status(2, T0 + 5000, "AGENT_OFFLINE", "FAILED", false)],
        T0 + 5000,
    );
    assert_eq!(posted.len(), 2);
    assert_eq!(labels(&posted[0])["status"], "AGENT_OFFLINE");
    assert_eq!(posted[0]["endsAt"], "2026-12-08T03:00:05.000Z");
    assert_eq!(labels(&posted[1])["status"], "FAILED");
    assert_eq!(posted[1]["endsAt"], "2026-12-08T03:05:05.000Z");
    assert_eq!(k.firing(), 1);
}

#[test]
fn a_one_off_event_is_posted_once_and_never_again() {
    let mut k = kind();
    let r = record(
        1,
        T0,
        "poll_failed",
        "poll_failed/1",
        false,
        json!({"uuid": "u-1", "agent_name": "web-01", "error_code": "InternalError"}),
    );
    // Delivered two minutes late: it still fires for five minutes from then.
    let posted = send(&mut k, &[r], T0 + 120_000);
    assert_eq!(labels(&posted[0])["alertname"], "CwpPollFailed");
    assert_eq!(posted[0]["startsAt"], "2026-12-08T03:00:00.000Z");
    assert_eq!(posted[0]["endsAt"], "2026-12-08T03:07:00.000Z");
    assert_eq!(k.firing(), 0);
    assert_eq!(k.next_periodic(), None);
    assert!(k.periodic(at(T0 + 3_600_000)).is_none());
}

#[test]
fn firing_alerts_are_re_posted_every_minute_before_their_ends_at() {
    let mut k = kind();
    send(&mut k, &[unexpected(1, T0)], T0);
    assert_eq!(k.next_periodic(), Some(at(T0 + 60_000)));
    assert!(k.periodic(at(T0 + 59_999)).is_none(), "not due yet");
    let again = k.periodic(at(T0 + 60_000)).expect("due at one minute");
    let again = alerts(&again);
    assert_eq!(again.len(), 1);
    assert_eq!(labels(&again[0])["alertname"], "CwpPortUnexpected");
    assert_eq!(again[0]["startsAt"], "2026-12-08T03:00:00.000Z");
    assert_eq!(again[0]["endsAt"], "2026-12-08T03:06:00.000Z");
    assert_eq!(again[0]["annotations"]["message_id"], "oncall-1-1");
    assert_eq!(k.next_periodic(), Some(at(T0 + 120_000)));
    // Each re-post lands before the previous endsAt, with four minutes to spare.
    assert!(REPOST_EVERY * 4 < VALIDITY + Duration::from_secs(1));
}

#[test]
fn alerts_fired_at_different_moments_are_re_posted_together() {
    let mut k = kind();
    send(&mut k, &[unexpected(1, T0)], T0);
    let mut other = unexpected(2, T0 + 25_000);
    other.key = "f2".to_owned();
    other.fields["port"] = json!(23);
    send(&mut k, &[other.clone()], T0 + 25_000);
    let mut third = other;
    third.key = "f3".to_owned();
    third.fields["port"] = json!(24);
    send(&mut k, &[third], T0 + 40_000);
    let both = alerts(&k.periodic(at(T0 + 60_000)).unwrap());
    // The one posted 35 s ago goes along; the one posted 20 s ago waits for its turn.
    assert_eq!(both.len(), 2);
    assert_eq!(k.next_periodic(), Some(at(T0 + 100_000)));
    // Then the two posted 40 s ago go along with it: from here on, one request a minute.
    let all = alerts(&k.periodic(at(T0 + 100_000)).unwrap());
    assert_eq!(all.len(), 3);
    assert!(k.periodic(at(T0 + 101_000)).is_none());
    assert_eq!(k.next_periodic(), Some(at(T0 + 160_000)));
}

#[test]
fn a_large_firing_set_is_re_posted_in_bounded_requests() {
    let mut k = kind();
    let records: Vec<Record> = (0..250)
        .map(|i| {
            let mut r = unexpected(i, T0);
            r.key = format!("f{i}");
            r.fields["port"] = json!(1000 + i);
            r
        })
        .collect();
    // 250 records: a message covers 100 of them (at most 200 alerts per POST).
    let composed = k.compose("oncall-0-99", &records, at(T0));
    assert_eq!(composed.covers, 100);
    for chunk in records.chunks(100) {
        send_chunk(&mut k, chunk);
    }
    assert_eq!(k.firing(), 250);
    let first = alerts(&k.periodic(at(T0 + 60_000)).unwrap());
    assert_eq!(first.len(), MAX_ALERTS_PER_POST);
    assert_eq!(
        k.next_periodic(),
        Some(at(T0 + 60_000)),
        "the rest is due at once"
    );
    let rest = alerts(&k.periodic(at(T0 + 60_000)).unwrap());
    assert_eq!(rest.len(), 50);
    let mut seen: Vec<String> = first
        .iter()
        .chain(&rest)
        .map(|a| labels(a)["port"].clone())
        .collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 250);
}

fn send_chunk(k: &mut Alertmanager, chunk: &[Record]) {
    let composed = k.compose("x", chunk, at(T0));
    assert_eq!(composed.covers, chunk.len());
    k.delivered(chunk, at(T0));
}

#[test]
fn the_firing_set_survives_a_restart_and_is_re_posted_at_once() {
    let mut k = kind();
    send(
        &mut k,
        &[
            unexpected(1, T0),
            status(2, T0, "ONLINE", "AGENT_OFFLINE", false),
        ],
        T0,
    );
    let saved = k.save();
    // Through the outbox file's JSON text.
    let saved: Value = serde_json::from_str(&saved.to_string()).unwrap();

    let mut restarted = kind();
    restarted.restore(&saved);
    assert_eq!(restarted.firing(), 2);
    assert!(
        restarted.next_periodic().unwrap() <= at(T0 + 1),
        "due at once"
    );
    let now = T0 + 3_600_000;
    let again = alerts(&restarted.periodic(at(now)).unwrap());
    assert_eq!(again.len(), 2);
    for a in &again {
        assert_eq!(a["startsAt"], "2026-12-08T03:00:00.000Z");
        assert_eq!(a["endsAt"], "2026-12-08T04:05:00.000Z");
    }
    assert_eq!(restarted.next_periodic(), Some(at(now + 60_000)));
    // And its end still resolves the restored alert.
    let resolved = send(&mut restarted, &[cleared(3, now)], now);
    assert_eq!(labels(&resolved[0])["alertname"], "CwpPortUnexpected");
    assert_eq!(restarted.firing(), 1);
}

#[test]
fn a_restored_file_is_hostile_unknown_labels_dropped_values_escaped_and_bounded() {
    let mut k = kind();
    let long = "x".repeat(10_000);
    k.restore(&json!({
        "version": 1,
        "firing": {
            "a": {
                "labels": {"alertname": "CwpPortUnexpected", "agent": "web\n\u{1b}[31m", "evil": "1", "rule": long},
                "annotations": {"summary": "s", "other": "x"},
                "starts_at_ms": u64::MAX
            },
            "no-name": {"labels": {"agent": "x"}, "annotations": {}, "starts_at_ms": 1},
        }
    }));
    assert_eq!(k.firing(), 1);
    let posted = alerts(&k.periodic(at(T0)).unwrap());
    let l = labels(&posted[0]);
    assert_eq!(l.keys().collect::<Vec<_>>(), ["agent", "alertname", "rule"]);
    assert_eq!(l["agent"], "web\\n\\u{1b}[31m");
    assert!(l["rule"].len() <= 256 && l["rule"].ends_with('…'));
    assert_eq!(posted[0]["startsAt"], "9999-12-31T23:59:59.999Z");
    assert_eq!(posted[0]["annotations"], json!({"summary": "s"}));

    // Unreadable or another version: ignored, the set stays as it is.
    for bad in [
        json!(null),
        json!({"version": 2, "firing": {}}),
        json!([1, 2]),
        json!({"version": 1, "firing": 3}),
    ] {
        k.restore(&bad);
        assert_eq!(k.firing(), 1, "{bad}");
    }
}

#[test]
fn hostile_values_from_hosts_become_escaped_bounded_labels() {
    let mut k = kind();
    let mut r = unexpected(1, T0);
    r.fields["agent_name"] = json!(format!("a\u{0}b\r\n\u{202e}{}", "é".repeat(500)));
    r.fields["process_name"] = json!({"nested": true});
    r.message = "x".repeat(5000);
    r.fields
        .insert("error_message".into(), json!("y".repeat(10_000)));
    let posted = send(&mut k, &[r], T0);
    let l = labels(&posted[0]);
    let agent = l.get("agent").unwrap_or_else(|| panic!("{l:?}"));
    assert!(agent.starts_with("a\\u{0}b\\r\\n\\u{202e}é"), "{agent}");
    assert!(
        agent.len() <= 256 && agent.ends_with('…'),
        "{}",
        agent.len()
    );
    assert!(!l.contains_key("process"), "a structured value is no label");
    assert!(posted[0]["annotations"]["summary"].as_str().unwrap().len() <= 1024);
    assert!(
        posted[0]["annotations"]["description"]
            .as_str()
            .unwrap()
            .len()
            <= 4096
    );
}

#[test]
fn alertnames_are_cwp_and_the_event_in_camel_case() {
    assert_eq!(alertname_of("port_unexpected"), "CwpPortUnexpected");
    assert_eq!(alertname_of("delivery_failed"), "CwpDeliveryFailed");
    assert_eq!(alertname_of("daemon_started"), "CwpDaemonStarted");
    assert_eq!(alertname_of("weird\u{1b}_ev-ent"), "CwpWeirdEvent");
}

#[test]
fn answers_2xx_are_delivered_the_rest_retried_with_a_printable_reason() {
    let k = kind();
    assert_eq!(k.classify(200, None, b""), Answer::Delivered);
    assert_eq!(k.classify(204, None, b""), Answer::Delivered);
    assert_eq!(
        k.classify(400, None, br#""invalid label set: invalid name \"\"""#),
        Answer::Retry {
            after: None,
            reason:
                r#"HTTP 400: Alertmanager refused the alerts: invalid label set: invalid name """#
                    .to_owned()
        }
    );
    assert_eq!(
        k.classify(429, Some(Duration::from_secs(7)), b""),
        Answer::Retry {
            after: Some(Duration::from_secs(7)),
            reason: "HTTP 429: too many requests".to_owned()
        }
    );
    let Answer::Retry { after, reason } = k.classify(
        503,
        Some(Duration::from_secs(30)),
        "<h1>\u{1b}[2J busy</h1>\n".repeat(500).as_bytes(),
    ) else {
        panic!("503 is retried")
    };
    assert_eq!(after, Some(Duration::from_secs(30)));
    assert!(
        reason.starts_with("HTTP 503: Alertmanager (or a proxy before it) failed: <h1>\\u{1b}[2J"),
        "{reason}"
    );
    assert!(reason.len() < 300, "{}", reason.len());
    assert!(!reason.chars().any(crate::escape::is_unsafe));
    let Answer::Retry { reason, .. } = k.classify(404, None, &[0xff, 0xfe, b'x']) else {
        panic!("404 is retried")
    };
    assert_eq!(reason, "HTTP 404: unexpected answer: \u{fffd}\u{fffd}x");
}

#[test]
fn the_url_is_the_alerts_endpoint_under_the_base() {
    let url = |base: &str| alerts_url(&url::Url::parse(base).unwrap()).to_string();
    assert_eq!(url("http://am:9093"), "http://am:9093/api/v2/alerts");
    assert_eq!(url("http://am:9093/"), "http://am:9093/api/v2/alerts");
    assert_eq!(
        url("http://am/alertmanager/"),
        "http://am/alertmanager/api/v2/alerts"
    );
    assert_eq!(
        url("http://am:9093/api/v2/alerts"),
        "http://am:9093/api/v2/alerts"
    );
    assert_eq!(url("http://am:9093/?x=1#f"), "http://am:9093/api/v2/alerts");
}

#[test]
fn times_are_rfc3339_utc_milliseconds_and_ends_never_before_starts() {
    assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(rfc3339(T0 + 7), "2026-12-08T03:00:00.007Z");
    assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
    let a = alert(&BTreeMap::new(), &BTreeMap::new(), T0 + 10, T0);
    assert_eq!(a.ends_at, a.starts_at);
    assert_eq!(unix_ms(UNIX_EPOCH - Duration::from_secs(1)), 0);
}

/// The three messages `docs/delivery-alertmanager.md` shows, made here: a finding and an agent
/// going offline (one message), their re-post a minute later, the finding's clear.
fn documented_messages() -> Vec<Value> {
    use crate::events::{Event, FindingEvent, FindingKind};
    use crate::policy::ClearReason;
    use crate::status::Status;

    let uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    let finding = |kind| FindingEvent {
        kind,
        uuid: uuid.to_owned(),
        agent_name: "web-01".to_owned(),
        port: 22,
        process_name: "sshd".to_owned(),
        pid: Some(812),
        machine_ip: "10.0.0.7".to_owned(),
        machine_name: "web-01.prod".to_owned(),
        request_id: Some("354f4ac3-8ac5-4e0b-9a3f-4a1c0b7e0a11".to_owned()),
        rule: "web tier".to_owned(),
        severity: Severity::Critical,
        spec: None,
    };
    // The records the daemon keeps of these events: `Record::for_sink` for a sink taking
    // unexpected ports and agents going offline, as `Delivery::emit` makes them.
    let selectors: Vec<crate::delivery::EventSelector> =
        ["port_unexpected", "status_changed:AGENT_OFFLINE"]
            .iter()
            .map(|s| crate::delivery::EventSelector::parse(s).unwrap())
            .collect();
    let record_of = |event: &Event, seq, at_ms| {
        Record::for_sink(
            event,
            Some("prod"),
            seq,
            at_ms,
            &selectors,
            Severity::Warning,
        )
        .expect("the sink takes it")
    };
    let finding_record = |seq, at_ms, event: FindingEvent, resolves: bool| {
        let record = record_of(&Event::Finding(Box::new(event)), seq, at_ms);
        assert_eq!(record.resolves, resolves);
        record
    };
    let offline = Event::StatusChanged {
        uuid: "0d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6".to_owned(),
        agent_name: "db-01".to_owned(),
        from_status: Status::new("COMPLETE"),
        to_status: Status::new("AGENT_OFFLINE"),
        request_id: "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".to_owned(),
        error_code: None,
    };
    let offline = record_of(&offline, 42, T0 + 450);

    let mut k = Alertmanager::for_url(
        &url::Url::parse("http://127.0.0.1:9093").unwrap(),
        Timing::default(),
    );
    let firing = [
        finding_record(41, T0 + 120, finding(FindingKind::Unexpected), false),
        offline,
    ];
    let first = k.compose("oncall-41-42", &firing, at(T0 + 600));
    k.delivered(&firing, at(T0 + 650));
    let again = k.periodic(at(T0 + 60_650)).expect("due a minute later");
    let clear = [finding_record(
        43,
        T0 + 250_000,
        finding(FindingKind::UnexpectedCleared(ClearReason::Closed)),
        true,
    )];
    let last = k.compose("oncall-43-43", &clear, at(T0 + 250_200));
    k.delivered(&clear, at(T0 + 250_250));
    assert_eq!(k.firing(), 1, "the agent is still offline");
    [first.request, again, last.request]
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[test]
fn the_documented_alerts_are_exactly_what_is_posted() {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/delivery-alertmanager.md"),
    )
    .unwrap();
    let documented: Vec<Value> = page
        .split("```json\n")
        .skip(1)
        .map(|block| {
            let json = &block[..block.find("```").expect("the block ends")];
            serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
        })
        .collect();
    let made = documented_messages();
    for (i, made) in made.iter().enumerate() {
        assert_eq!(
            documented.get(i),
            Some(made),
            "json block {} of docs/delivery-alertmanager.md should be:\n{}",
            i + 1,
            serde_json::to_string_pretty(made).unwrap()
        );
    }
    assert_eq!(documented.len(), made.len());
}

#[test]
fn an_end_composed_stops_the_re_posts_even_if_never_delivered_and_is_forgotten_after_max_age() {
    let mut k = kind();
    let fired = send(&mut k, &[unexpected(1, T0)], T0);
    let mut clear = cleared(2, T0 + 10_000);
    clear.fields["agent_name"] = json!("renamed");
    // Alertmanager is down: the end is composed (and retried), never taken.
    let first = k.compose("oncall-2-2", std::slice::from_ref(&clear), at(T0 + 10_000));
    assert_eq!(k.firing(), 0);
    assert_eq!(
        k.next_periodic(),
        None,
        "an ended condition is re-posted no more"
    );
    assert!(k.periodic(at(T0 + 120_000)).is_none());
    // A retry an hour later, and one after a restart: still the labels it fired with.
    let retry = k.compose(
        "oncall-2-2",
        std::slice::from_ref(&clear),
        at(T0 + 3_600_000),
    );
    assert_eq!(alerts(&retry.request), alerts(&first.request));
    assert_eq!(labels(&alerts(&retry.request)[0]), labels(&fired[0]));
    let mut restarted = kind();
    restarted.restore(&serde_json::from_str(&k.save().to_string()).unwrap());
    assert_eq!(restarted.next_periodic(), None);
    let again = restarted.compose(
        "oncall-2-2",
        std::slice::from_ref(&clear),
        at(T0 + 3_600_000),
    );
    assert_eq!(labels(&alerts(&again.request)[0]), labels(&fired[0]));
    // Given up after max_age (a day): the entry goes with it.
    let _ = k.compose("x", &[unexpected(3, T0 + 86_400_000)], at(T0 + 86_400_000));
    assert_eq!(k.firing.len(), 1, "kept until max_age + validity");
    let _ = k.compose("x", &[unexpected(3, T0 + 86_700_000)], at(T0 + 86_710_001));
    assert!(k.firing.is_empty(), "{:?}", k.firing.keys());
}

#[test]
fn a_status_fires_only_when_the_sink_took_it_not_when_it_came_as_the_end_of_another() {
    // `status_changed` (every status) with `min_severity = "warning"`: the change back to
    // COMPLETE (info) comes only as AGENT_OFFLINE's end.
    let mut k = kind_for_sink(&["port_unexpected", "status_changed"], Severity::Warning);
    let mut offline = status(1, T0, "COMPLETE", "AGENT_OFFLINE", false);
    offline.severity = Severity::Warning;
    send(&mut k, &[offline], T0);
    let mut back = status(2, T0 + 1000, "AGENT_OFFLINE", "COMPLETE", false);
    back.severity = Severity::Info;
    let posted = send(&mut k, &[back], T0 + 1000);
    assert_eq!(posted.len(), 1, "{posted:#?}");
    assert_eq!(labels(&posted[0])["status"], "AGENT_OFFLINE");
    assert_eq!(posted[0]["endsAt"], "2026-12-08T03:00:01.000Z");
    assert_eq!(k.firing(), 0);

    // Only FAILED taken: a change into AGENT_OFFLINE fires nothing, out of an unseen FAILED
    // that says it resolves posts FAILED resolved, out of an unseen COMPLETE nothing.
    let mut k = kind_for_sink(&["status_changed:FAILED"], Severity::Info);
    assert!(
        send(
            &mut k,
            &[status(1, T0, "COMPLETE", "AGENT_OFFLINE", false)],
            T0
        )
        .is_empty()
    );
    let posted = send(&mut k, &[status(2, T0, "FAILED", "COMPLETE", true)], T0);
    assert_eq!(posted.len(), 1);
    assert_eq!(labels(&posted[0])["status"], "FAILED");
    assert_eq!(posted[0]["startsAt"], posted[0]["endsAt"]);
    assert!(send(&mut k, &[status(3, T0, "COMPLETE", "NO_TASK", true)], T0).is_empty());
    assert_eq!(k.firing(), 0);
}

#[test]
fn a_kind_made_for_a_sink_posts_to_its_url_and_forgets_ends_after_its_max_age() {
    let mut k = kind_for_sink(&["port_unexpected"], Severity::Warning);
    assert_eq!(k.url().as_str(), "http://127.0.0.1:9093/api/v2/alerts");
    send(&mut k, &[unexpected(1, T0)], T0);
    let _ = k.compose("x", &[cleared(2, T0)], at(T0));
    // max_age one hour, validity five minutes.
    let _ = k.compose("x", &[cleared(2, T0)], at(T0 + 3_899_999));
    assert_eq!(k.firing.len(), 1);
    let _ = k.compose("x", &[cleared(2, T0)], at(T0 + 3_900_000));
    assert!(k.firing.is_empty());
}
