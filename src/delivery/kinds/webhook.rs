//! `kind = "webhook"`: any HTTP endpoint. Each message is one JSON document about exactly one
//! event (the spec's "one JSON document per event"), so a message covers one record and a
//! receiver needs no batch format: over the rate, records wait in the outbox instead of being
//! folded. The document is the event as the JSON log line shows it (`docs/events.md`):
//!
//! ```json
//! {"event": "port_unexpected", "timestamp": "2026-12-08T02:47:04.000Z", "severity": "critical",
//!  "account": "prod", <the event's own fields>, "message": "<the sentence>",
//!  "delivery_id": "oncall-7-7"}
//! ```
//!
//! `delivery_id` is the message's stable id (also sent as the `Idempotency-Key` header), the
//! same when a restart re-sends it: a receiver drops the rare repeat by it. It is not called
//! `message_id`, which in the JSON log lines is the journal MESSAGE_ID of the event's kind.
//! An event's own `account` or `severity` field (`account_failed` has one) wins over ours.
//!
//! A document is at most [`BODY_LIMIT`] bytes: a string longer than [`STRING_LIMIT`] is cut
//! with the truncation note, and should the document still be too big, fields are left out
//! from the last and `"truncated": true` says so. Any 2xx answer is delivered.

use std::time::{Duration, SystemTime};

use super::markdown::{self, Measure};
use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink};

/// The most bytes of one document.
pub const BODY_LIMIT: usize = 64 * 1024;
/// The most bytes of one string value in it.
pub const STRING_LIMIT: usize = 8 * 1024;

/// The webhook receiver.
pub struct Webhook {
    url: url::Url,
    /// The URL's parts that may be a key, kept out of reasons.
    secrets: Vec<String>,
}

impl Webhook {
    /// For this sink.
    pub fn new(sink: &ResolvedSink) -> Self {
        use secrecy::ExposeSecret;
        let url = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("a valid URL"));
        let secrets = markdown::url_secrets(&url);
        Webhook { url, secrets }
    }
}

/// `at_ms` in RFC 3339 with milliseconds, as the JSON log lines write it; the raw number for a
/// time no calendar holds.
fn rfc3339(at_ms: u64) -> serde_json::Value {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    i128::from(at_ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&format).ok())
        .map(serde_json::Value::from)
        .unwrap_or_else(|| serde_json::Value::from(at_ms))
}

fn bounded(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::String(s) => {
            serde_json::Value::String(markdown::truncate(s, STRING_LIMIT, Measure::Bytes))
        }
        serde_json::Value::Array(items) => items.iter().map(bounded).collect(),
        serde_json::Value::Object(map) => {
            serde_json::Value::Object(map.iter().map(|(k, v)| (k.clone(), bounded(v))).collect())
        }
        other => other.clone(),
    }
}

/// The document for `record`, at most [`BODY_LIMIT`] bytes.
pub fn document(id: &str, record: &Record) -> Vec<u8> {
    let short = |s: &str| serde_json::Value::String(markdown::truncate(s, 256, Measure::Bytes));
    let mut head = serde_json::Map::new();
    head.insert("event".into(), short(&record.event));
    head.insert("timestamp".into(), rfc3339(record.at_ms));
    if !record.fields.contains_key("severity") {
        head.insert("severity".into(), record.severity.as_str().into());
    }
    if let (Some(account), false) = (&record.account, record.fields.contains_key("account")) {
        head.insert("account".into(), short(account));
    }
    let mut tail = serde_json::Map::new();
    tail.insert(
        "message".into(),
        serde_json::Value::String(markdown::truncate(
            &record.message,
            STRING_LIMIT,
            Measure::Bytes,
        )),
    );
    tail.insert("delivery_id".into(), short(id));
    let reserved: [&str; 4] = ["event", "timestamp", "message", "delivery_id"];
    let fields: Vec<(String, serde_json::Value)> = record
        .fields
        .iter()
        .filter(|(k, _)| !reserved.contains(&k.as_str()))
        .map(|(k, v)| (markdown::truncate(k, 256, Measure::Bytes), bounded(v)))
        .collect();
    let build = |n: usize, truncated: bool| {
        let mut doc = head.clone();
        doc.extend(fields.iter().take(n).cloned());
        doc.extend(tail.clone());
        if truncated {
            doc.insert("truncated".into(), true.into());
        }
        serde_json::Value::Object(doc).to_string().into_bytes()
    };
    let whole = build(fields.len(), false);
    if whole.len() <= BODY_LIMIT {
        return whole;
    }
    // Rare (a record whose many fields are each near the string limit): the most fields that
    // fit, found by halving, since each field only adds bytes.
    let (mut fit, mut over) = (0, fields.len());
    while over - fit > 1 {
        let mid = fit + (over - fit) / 2;
        if build(mid, true).len() <= BODY_LIMIT {
            fit = mid;
        } else {
            over = mid;
        }
    }
    build(fit, true)
}

impl Kind for Webhook {
    fn compose(&mut self, id: &str, records: &[Record], _now: SystemTime) -> Composed {
        let body = records
            .first()
            .map(|record| document(id, record))
            .unwrap_or_else(|| b"{}".to_vec());
        Composed {
            covers: records.len().min(1),
            request: Request {
                url: self.url.clone(),
                headers: vec![("Idempotency-Key", id.to_owned())],
                body,
            },
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer {
        if (200..300).contains(&status) {
            return Answer::Delivered;
        }
        let text = markdown::excerpt(body, &self.secrets);
        Answer::Retry {
            after: retry_after,
            reason: format!("the webhook answered HTTP {status}: {text}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::markdown::TRUNCATED;
    use super::super::markdown::testing::{any_record, finding, sink};
    use super::*;
    use crate::delivery::SinkKind;
    use proptest::prelude::*;

    const URL: &str = "https://hooks.example.net/cwp?token=s3cr3t-token";

    fn webhook() -> Webhook {
        Webhook::new(&sink(SinkKind::Webhook, URL, None))
    }

    #[test]
    fn one_event_one_document_with_its_fields_and_the_delivery_id() {
        let records = [
            finding(7, "port_unexpected", "web-01", "sshd"),
            finding(8, "port_unexpected", "web-02", "sshd"),
        ];
        let composed = webhook().compose("oncall-7-7", &records, SystemTime::UNIX_EPOCH);
        assert_eq!(composed.covers, 1);
        assert_eq!(
            composed.request.headers,
            [("Idempotency-Key", "oncall-7-7".to_owned())]
        );
        let doc: serde_json::Value = serde_json::from_slice(&composed.request.body).unwrap();
        let keys: Vec<&str> = doc
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            [
                "event",
                "timestamp",
                "account",
                "uuid",
                "agent_name",
                "port",
                "process_name",
                "pid",
                "machine_ip",
                "machine_name",
                "request_id",
                "rule",
                "severity",
                "message",
                "delivery_id"
            ]
        );
        assert_eq!(doc["event"], "port_unexpected");
        assert_eq!(doc["timestamp"], "2026-12-08T02:47:04.000Z");
        assert_eq!(doc["account"], "prod");
        assert_eq!(doc["agent_name"], "web-01");
        assert_eq!(doc["port"], 22);
        assert_eq!(doc["severity"], "critical");
        assert_eq!(doc["delivery_id"], "oncall-7-7");
    }

    #[test]
    fn an_event_without_a_severity_field_gets_the_records() {
        let mut record = finding(1, "poll_failed", "a", "b");
        record.fields.remove("severity");
        record.account = None;
        record.severity = crate::policy::Severity::Warning;
        let doc: serde_json::Value = serde_json::from_slice(&document("x", &record)).unwrap();
        assert_eq!(doc["severity"], "warning");
        assert!(doc.get("account").is_none());
    }

    #[test]
    fn a_huge_record_is_cut_never_invalid() {
        let mut record = finding(1, "port_unexpected", &"x".repeat(100_000), "sshd");
        for i in 0..40 {
            record
                .fields
                .insert(format!("extra{i}"), "y".repeat(9000).into());
        }
        let body = document("x", &record);
        assert!(body.len() <= BODY_LIMIT, "{}", body.len());
        let doc: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(doc["agent_name"].as_str().unwrap().ends_with(TRUNCATED));
        assert_eq!(doc["truncated"], true);
        assert_eq!(doc["delivery_id"], "x");
        assert!(doc.get("extra0").is_some() && doc.get("extra39").is_none());
    }

    #[test]
    fn answers() {
        let k = webhook();
        assert_eq!(k.classify(200, None, b""), Answer::Delivered);
        assert_eq!(k.classify(204, None, b"garbage"), Answer::Delivered);
        assert_eq!(
            k.classify(429, Some(Duration::from_secs(12)), b"busy"),
            Answer::Retry {
                after: Some(Duration::from_secs(12)),
                reason: "the webhook answered HTTP 429: busy".into()
            }
        );
        assert_eq!(
            k.classify(500, None, b"bad token s3cr3t-token\n\x1b[1m"),
            Answer::Retry {
                after: None,
                reason: "the webhook answered HTTP 500: bad token [redacted]\\n\\u{1b}[1m".into()
            }
        );
        assert!(matches!(
            k.classify(301, None, b""),
            Answer::Retry { reason, .. } if reason == "the webhook answered HTTP 301: "
        ));
    }

    proptest! {
        #[test]
        fn every_document_is_valid_json_within_the_limit(
            records in prop::collection::vec(any_record(), 1..4),
        ) {
            let composed = webhook().compose("oncall-1-4", &records, SystemTime::UNIX_EPOCH);
            prop_assert_eq!(composed.covers, 1);
            prop_assert!(composed.request.body.len() <= BODY_LIMIT);
            let doc: serde_json::Value = serde_json::from_slice(&composed.request.body).unwrap();
            prop_assert_eq!(&doc["delivery_id"], "oncall-1-4");
            prop_assert!(doc["event"].is_string());
        }
    }
}
