//! [`Record`]: one event as a sink's outbox keeps it, self-contained (the event's own fields,
//! its account, severity and the condition it starts or ends), so the outbox file alone is
//! enough to deliver it after a restart.

use serde::{Deserialize, Serialize};

use crate::policy::Severity;

/// One event waiting for (or in) delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Per-sink sequence number, never reused (part of the message id).
    pub seq: u64,
    /// When the event was emitted, Unix milliseconds.
    pub at_ms: u64,
    /// The event's name (`port_unexpected`, `status_changed`, …).
    pub event: String,
    /// The account (several accounts), as in the event's `account` field.
    pub account: Option<String>,
    /// Findings: the rule's severity; other events: from their level (info → `info`,
    /// warn → `warning`, error → `critical`).
    pub severity: Severity,
    /// The condition this record starts or ends, stable across restarts: the same key for a
    /// finding and its clear, for `status_changed` into and out of a status (Alertmanager's
    /// alert identity; the digest's grouping). Events that are no condition have their own.
    pub key: String,
    /// Whether this record ends its condition (a clear, a status left).
    pub resolves: bool,
    /// The readable sentence, as in the journal's `MESSAGE` (escaped).
    pub message: String,
    /// The event's own fields, named as in `docs/events.md` (what `webhook` sends).
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// The record of `event` emitted for `account` at `at_ms`, numbered `seq`. (Skeleton:
    /// the fields, severity and key are issue 23's.)
    pub fn from_event(
        event: &crate::events::Event,
        account: Option<&str>,
        seq: u64,
        at_ms: u64,
    ) -> Record {
        Record {
            seq,
            at_ms,
            event: event.name().to_owned(),
            account: account.map(str::to_owned),
            severity: Severity::Warning,
            key: event.name().to_owned(),
            resolves: false,
            message: event.message(),
            fields: serde_json::Map::new(),
        }
    }
}
