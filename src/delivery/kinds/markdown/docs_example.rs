//! `docs/delivery-robots.md` shows each robot's message as composed here: this test composes
//! the same records and compares, so the page cannot drift from the code. On a mismatch it
//! prints what the page should show.

use std::time::{Duration, SystemTime};

use super::testing::sink;
use crate::delivery::kinds::{Kind, dingtalk, slack, webhook, wecom};
use crate::delivery::{Record, SinkKind};

const PAGE: &str = include_str!("../../../../docs/delivery-robots.md");

/// The records of the page's examples, as the daemon keeps them (`Record::for_sink` of real
/// events, for a sink taking unexpected ports and agents going offline): a critical
/// unexpected port, its clear, and an agent going offline.
fn records() -> Vec<Record> {
    use crate::events::{Event, FindingEvent, FindingKind};
    use crate::policy::{ClearReason, Severity};
    use crate::status::Status;

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
    let finding = |kind, request_id: Option<&str>| {
        Event::Finding(Box::new(FindingEvent {
            kind,
            uuid: "6b6cd843-0c1f-4a2e-9d3b-8f1e2a7c5d90".to_owned(),
            agent_name: "web-01".to_owned(),
            port: 22,
            process_name: "sshd".to_owned(),
            pid: Some(812),
            machine_ip: "10.0.3.17".to_owned(),
            machine_name: "web-01.prod".to_owned(),
            request_id: request_id.map(str::to_owned),
            rule: "no-ssh".to_owned(),
            severity: Severity::Critical,
            spec: None,
        }))
    };
    let at = super::testing::AT_MS;
    let opened = finding(
        FindingKind::Unexpected,
        Some("9f1c2b3a-5d6e-4f70-8a9b-0c1d2e3f4a5b"),
    );
    let cleared = finding(
        FindingKind::UnexpectedCleared(ClearReason::Closed),
        Some("4e2d1c0b-9a8f-4e7d-b6c5-a4b3c2d1e0f9"),
    );
    let offline = Event::StatusChanged {
        uuid: "0f3e9a1c-77b2-4d1e-b8a4-52c6e9d0a7f3".to_owned(),
        agent_name: "db-02".to_owned(),
        from_status: Status::new("COLLECTING"),
        to_status: Status::new("AGENT_OFFLINE"),
        request_id: "2c7f0d4e-1a3b-4c5d-8e9f-a0b1c2d3e4f5".to_owned(),
        error_code: None,
    };
    vec![
        record_of(&opened, 41, at),
        record_of(&cleared, 42, at + 300_000),
        record_of(&offline, 43, at + 360_000),
    ]
}

/// The fenced block that follows `<!-- example: NAME -->` in the page.
fn example(name: &str) -> String {
    let marker = format!("<!-- example: {name} -->");
    let start = PAGE
        .find(&marker)
        .unwrap_or_else(|| panic!("docs/delivery-robots.md has no {marker}"));
    let rest = &PAGE[start + marker.len()..];
    let open = rest.find("```").expect("a fenced block after the marker");
    let rest = &rest[open..];
    let body = &rest[rest.find('\n').expect("a fence line") + 1..];
    let close = body.find("\n```").expect("the block's closing fence");
    body[..close].to_owned()
}

fn check(name: &str, composed: &str) {
    assert!(
        example(name) == composed,
        "docs/delivery-robots.md `{name}` differs from the message composed; it should be:\n{composed}"
    );
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(super::testing::AT_MS + 400_000)
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).expect("a JSON body")
}

#[test]
fn the_page_shows_the_messages_as_composed() {
    let records = records();
    let mut kind = wecom::Wecom::new(&sink(
        SinkKind::Wecom,
        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY",
        None,
    ));
    let body = json(&kind.compose("oncall-41-43", &records, now()).request.body);
    check("wecom", body["markdown"]["content"].as_str().unwrap());

    let mut kind = dingtalk::Dingtalk::new(&sink(
        SinkKind::Dingtalk,
        "https://oapi.dingtalk.com/robot/send?access_token=TOKEN",
        Some("SECRET"),
    ));
    let composed = kind.compose("oncall-41-43", &records, now());
    let body = json(&composed.request.body);
    check(
        "dingtalk-title",
        body["markdown"]["title"].as_str().unwrap(),
    );
    check("dingtalk", body["markdown"]["text"].as_str().unwrap());
    check("dingtalk-url", composed.request.url.as_str());

    let mut kind = slack::Slack::new(&sink(
        SinkKind::Slack,
        "https://hooks.slack.com/services/T000/B000/XXXX",
        None,
    ));
    let body = json(&kind.compose("oncall-41-43", &records, now()).request.body);
    check("slack", &serde_json::to_string_pretty(&body).unwrap());

    let mut kind = webhook::Webhook::new(&sink(
        SinkKind::Webhook,
        "https://hooks.example.net/cwp",
        None,
    ));
    let body = json(&kind.compose("oncall-41-41", &records, now()).request.body);
    check("webhook", &serde_json::to_string_pretty(&body).unwrap());
}
