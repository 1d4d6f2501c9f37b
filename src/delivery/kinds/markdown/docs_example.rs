//! `docs/delivery-robots.md` shows each robot's message as composed here: this test composes
//! the same records and compares, so the page cannot drift from the code. On a mismatch it
//! prints what the page should show.

use std::time::{Duration, SystemTime};

use super::testing::{finding, sink};
use crate::delivery::kinds::{Kind, dingtalk, slack, webhook, wecom};
use crate::delivery::{Record, SinkKind};

const PAGE: &str = include_str!("../../../../docs/delivery-robots.md");

/// The records of the page's examples: a critical unexpected port, its clear, and an agent
/// going offline.
fn records() -> Vec<Record> {
    let opened = finding(41, "port_unexpected", "web-01", "sshd");
    let mut cleared = finding(42, "port_unexpected_cleared", "web-01", "sshd");
    cleared.at_ms += 300_000;
    let mut offline = finding(43, "status_changed", "db-02", "");
    offline.fields = serde_json::Map::new();
    for (k, v) in [
        ("uuid", "0f3e9a1c-77b2-4d1e-b8a4-52c6e9d0a7f3"),
        ("agent_name", "db-02"),
        ("from_status", "COLLECTING"),
        ("to_status", "AGENT_OFFLINE"),
        ("request_id", "2c7f0d4e-1a3b-4c5d-8e9f-a0b1c2d3e4f5"),
    ] {
        offline.fields.insert(k.to_owned(), v.into());
    }
    offline.severity = crate::policy::Severity::Warning;
    offline.message = "db-02 (0f3e9a1c…): status COLLECTING → AGENT_OFFLINE".to_owned();
    offline.at_ms += 360_000;
    vec![opened, cleared, offline]
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
