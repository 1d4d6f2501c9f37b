//! Test support for the robot kinds: records as `Event::fields()` makes them, hostile text,
//! and sinks to compose with.

use proptest::prelude::*;
use secrecy::SecretString;

use crate::delivery::{Record, ResolvedSink, SinkKind, SinkSettings, UrlSource};
use crate::policy::Severity;

/// 2026-12-08T02:47:04Z, Unix milliseconds: the time of the sample records.
pub const AT_MS: u64 = 1_796_698_024_000;

/// A `port_unexpected`-like record (`event` may be any finding) with the fields a finding
/// event has, on account `prod`, agent `agent_name` (Uuid `6b6cd843-…`), port 22.
pub fn finding(seq: u64, event: &str, agent_name: &str, process_name: &str) -> Record {
    let mut fields = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        fields.insert(k.to_owned(), v);
    };
    put("uuid", "6b6cd843-0c1f-4a2e-9d3b-8f1e2a7c5d90".into());
    put("agent_name", agent_name.into());
    put("port", 22.into());
    put("process_name", process_name.into());
    put("pid", 812.into());
    put("machine_ip", "10.0.3.17".into());
    put("machine_name", "web-01.prod".into());
    put("request_id", "9f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b".into());
    put("rule", "no-ssh".into());
    put("severity", "critical".into());
    if event.ends_with("_cleared") {
        put("reason", "closed".into());
    }
    Record {
        seq,
        at_ms: AT_MS,
        event: event.to_owned(),
        account: Some("prod".to_owned()),
        severity: Severity::Critical,
        key: format!("{event}/6b6cd843/22/{process_name}"),
        resolves: event.ends_with("_cleared"),
        ends: None,
        message: format!(
            "{agent_name} (6b6cd843…): port 22 open by {process_name} is unexpected \
             (rule no-ssh, critical)"
        ),
        fields,
    }
}

/// A sink of `kind` sending to `url`, signed with `secret` when given.
pub fn sink(kind: SinkKind, url: &str, secret: Option<&str>) -> ResolvedSink {
    ResolvedSink {
        settings: SinkSettings {
            name: "oncall".to_owned(),
            kind,
            url: UrlSource::File("/run/credentials/cwp-portwatch.service/robot".into()),
            secret_file: secret.map(|_| "/run/credentials/cwp-portwatch.service/secret".into()),
            events: crate::delivery::select::default_selectors(),
            min_severity: Severity::Warning,
            max_age: crate::delivery::settings::DEFAULT_MAX_AGE,
            per_minute: kind.default_per_minute(),
            outbox_limit: crate::delivery::settings::DEFAULT_OUTBOX_LIMIT,
        },
        url: SecretString::from(url.to_owned()),
        secret: secret.map(|s| SecretString::from(s.to_owned())),
    }
}

/// Text an attacker would pick: markup of every receiver, control and bidi characters, wide
/// characters, entities; now and then huge.
pub fn hostile() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("<@U123>".to_owned()),
        Just("<!channel>".to_owned()),
        Just("@all".to_owned()),
        Just("[x](http://evil)".to_owned()),
        Just("**".to_owned()),
        Just("`".to_owned()),
        Just("&lt;".to_owned()),
        Just("&".to_owned()),
        Just("\n# ".to_owned()),
        Just("\r\u{1b}[2J\u{202e}\u{2028}\u{7f}\u{9b}".to_owned()),
        Just("中文🙂".to_owned()),
        Just("\"\\".to_owned()),
        "\\PC{0,12}",
        any::<String>(),
    ];
    prop_oneof![
        30 => prop::collection::vec(piece.clone(), 0..8).prop_map(|v| v.concat()),
        1 => (piece, 500usize..3000).prop_map(|(p, n)| p.repeat(n)),
    ]
}

/// Any record: hostile names, processes, messages and field values, any event, resolving or
/// not, with or without an account.
pub fn any_record() -> impl Strategy<Value = Record> {
    (
        (
            any::<u64>(),
            0u64..4_102_444_800_000,
            hostile(),
            any::<bool>(),
        ),
        (hostile(), hostile(), hostile(), hostile()),
        (
            prop::option::of(hostile()),
            prop_oneof![
                Just("port_unexpected".to_owned()),
                Just("port_missing_cleared".to_owned()),
                Just("status_changed".to_owned()),
                hostile()
            ],
            prop::sample::select(vec![
                Severity::Info,
                Severity::Notice,
                Severity::Warning,
                Severity::Critical,
            ]),
            prop::collection::vec((hostile(), hostile()), 0..3),
        ),
    )
        .prop_map(
            |(
                (seq, at_ms, message, resolves),
                (name, process, rule, spec),
                (account, event, severity, extra),
            )| {
                let mut record = finding(seq, &event, &name, &process);
                record.at_ms = at_ms;
                record.message = message;
                record.resolves = resolves;
                record.account = account;
                record.severity = severity;
                record.fields.insert("rule".into(), rule.into());
                record.fields.insert("spec".into(), spec.clone().into());
                record.fields.insert("from_status".into(), spec.into());
                for (k, v) in extra {
                    record.fields.insert(k, v.into());
                }
                record
            },
        )
}
