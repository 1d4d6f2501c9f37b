//! What each receiver wants: a [`Kind`] turns records into one HTTP request (body, size
//! limit, signature) and says what an answer means. Pure: no I/O, no clock reads (the time
//! comes in as an argument), so every message and every answer is unit-tested. One file per
//! kind; the worker (`super::worker`) does the sending, pacing and retrying.

pub mod alertmanager;
pub mod dingtalk;
mod markdown;
pub mod slack;
pub mod webhook;
pub mod wecom;

use std::time::{Duration, SystemTime};

use super::{Record, ResolvedSink, SinkKind};

/// One request to send. `url` holds the receiver's key for robot kinds: never print it, and
/// strip it from transport errors (`reqwest::Error::without_url`).
pub struct Request {
    /// The whole URL, query (key, DingTalk's timestamp and sign) included.
    pub url: url::Url,
    /// Extra headers (`Content-Type` is always `application/json`).
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// A message made from the first `covers` of the records offered.
pub struct Composed {
    /// How many of the records offered (from the first) this message carries, at least one
    /// when any was offered. The rest wait for the next message.
    pub covers: usize,
    /// The request.
    pub request: Request,
}

/// What a receiver's answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Taken: the records are delivered.
    Delivered,
    /// Not taken; try again after backoff, or not before `after` (`Retry-After`; DingTalk's
    /// 10-minute block). `reason` is printable and holds no secret.
    Retry {
        /// The receiver's own wait, when it said one.
        after: Option<Duration>,
        /// Why (status, error code), for `delivery_failed` and the log.
        reason: String,
    },
}

/// One receiver's message format and answer rules.
pub trait Kind: Send {
    /// One message for the first records of `records` (non-empty, oldest first, all for this
    /// sink). `id` is the message's stable id (the same when a restart re-sends it): put it
    /// where the receiver can see it. A single record too big for the receiver is truncated
    /// with a note, never sent invalid.
    fn compose(&mut self, id: &str, records: &[Record], now: SystemTime) -> Composed;

    /// What the answer (HTTP status, `Retry-After` when sent, the body's first bytes) means.
    fn classify(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer;

    /// The records of a message were delivered (Alertmanager: its set of firing alerts moves).
    fn delivered(&mut self, _records: &[Record], _now: SystemTime) {}

    /// A message to send without new records (Alertmanager: re-posting firing alerts before
    /// their `endsAt`), when one is due at `now`.
    fn periodic(&mut self, _now: SystemTime) -> Option<Request> {
        None
    }

    /// When [`Kind::periodic`] is next due, if ever.
    fn next_periodic(&self) -> Option<SystemTime> {
        None
    }

    /// What the kind keeps across restarts (Alertmanager: the firing alerts), saved in the
    /// outbox file.
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Takes back what [`Kind::save`] wrote (a value it cannot read is ignored).
    fn restore(&mut self, _saved: &serde_json::Value) {}
}

/// The kind for a sink.
pub fn for_sink(sink: &ResolvedSink) -> Box<dyn Kind> {
    match sink.settings.kind {
        SinkKind::Alertmanager => Box::new(alertmanager::Alertmanager::new(sink)),
        SinkKind::Wecom => Box::new(wecom::Wecom::new(sink)),
        SinkKind::Dingtalk => Box::new(dingtalk::Dingtalk::new(sink)),
        SinkKind::Slack => Box::new(slack::Slack::new(sink)),
        SinkKind::Webhook => Box::new(webhook::Webhook::new(sink)),
    }
}
