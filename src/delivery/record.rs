//! [`Record`]: one event as a sink's outbox keeps it, self-contained (the event's own fields,
//! its account, severity and the condition it starts or ends), so the outbox file alone is
//! enough to deliver it after a restart.
//!
//! The key names a condition, stably across restarts and reloads, so a finding and its clear
//! (or the change into a status and the change out of it) carry the same key:
//! - `port_unexpected/ACCOUNT/UUID/PORT/PROCESS` (the policy's identity of an unexpected
//!   port: a reload that moves it to another rule or severity is the same finding);
//! - `port_missing/ACCOUNT/UUID/RULE/SPEC`;
//! - `status_changed/ACCOUNT/UUID/STATUS`;
//! - any other event: `NAME/SEQ`, a condition of its own.
//!
//! `ACCOUNT` is `default` for the one account of a config without `[[account]]` blocks, as
//! it is with several, so adding a second account later keeps the keys. Each part is
//! percent-encoded for `%` and `/`, so no two conditions share a key whatever their rule,
//! spec or process names hold.

use serde::{Deserialize, Serialize};

use super::select::{self, EventSelector, Taken};
use crate::account_name::DEFAULT_ACCOUNT;
use crate::events::{Event, FindingKind};
use crate::policy::Severity;
use crate::status::Status;

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
    /// warn → `warning`, error → `critical`). A record that only ends a status carries the
    /// severity of that status (the one its start was sent with).
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
    /// A second condition this record ends while it starts `key`: a status change from one
    /// status the sink takes into another (`AGENT_OFFLINE → FAILED` with both selected) ends
    /// the first. `None` for every other record. (Added by issue 23's d-config; absent in
    /// outbox files written without it.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends: Option<String>,
}

impl Record {
    /// The record of `event` emitted for `account` at `at_ms`, numbered `seq`, as a sink
    /// that takes every event would keep it: a finding starts its condition, a clear ends
    /// it, a status change starts the status entered and ends the status left (`ends`).
    /// A sink with selectors uses [`Record::for_sink`], which knows which of those it takes.
    pub fn from_event(event: &Event, account: Option<&str>, seq: u64, at_ms: u64) -> Record {
        let taken = match event {
            Event::StatusChanged { from_status, .. } => Taken {
                start: true,
                end: *from_status != Status::Unknown,
            },
            Event::Finding(f) => {
                let clear = matches!(
                    f.kind,
                    FindingKind::UnexpectedCleared(_) | FindingKind::MissingCleared(_)
                );
                Taken {
                    start: !clear,
                    end: clear,
                }
            }
            _ => Taken {
                start: true,
                end: false,
            },
        };
        Record::taken_as(event, account, seq, at_ms, taken)
    }

    /// The record a sink with `selectors` and `min_severity` keeps of `event`, or `None` when
    /// it does not take it ([`select::taken`]). This is [`select::takes`] and the record in
    /// one step, and the only way to get a status change right: a change out of the one
    /// status a sink takes ends that status (`resolves`, the key of the status left) rather
    /// than starting the status entered, which the sink does not take.
    pub fn for_sink(
        event: &Event,
        account: Option<&str>,
        seq: u64,
        at_ms: u64,
        selectors: &[EventSelector],
        min_severity: Severity,
    ) -> Option<Record> {
        let taken = select::taken(selectors, min_severity, event)?;
        Some(Record::taken_as(event, account, seq, at_ms, taken))
    }

    /// The record of `event` taken as `taken` says.
    fn taken_as(
        event: &Event,
        account: Option<&str>,
        seq: u64,
        at_ms: u64,
        taken: Taken,
    ) -> Record {
        let owner = account.unwrap_or(DEFAULT_ACCOUNT);
        let mut severity = select::severity(event);
        let mut ends = None;
        let (key, resolves) = match event {
            Event::Finding(f) => {
                let key = match f.kind {
                    FindingKind::Unexpected | FindingKind::UnexpectedCleared(_) => key_of(&[
                        "port_unexpected",
                        owner,
                        &f.uuid,
                        &f.port.to_string(),
                        &f.process_name,
                    ]),
                    FindingKind::Missing | FindingKind::MissingCleared(_) => key_of(&[
                        "port_missing",
                        owner,
                        &f.uuid,
                        &f.rule,
                        f.spec.as_deref().unwrap_or(""),
                    ]),
                };
                (key, taken.end && !taken.start)
            }
            Event::StatusChanged {
                uuid,
                from_status,
                to_status,
                ..
            } => {
                let status_key =
                    |status: &Status| key_of(&["status_changed", owner, uuid, status.as_str()]);
                if taken.start {
                    if taken.end {
                        ends = Some(status_key(from_status));
                    }
                    (status_key(to_status), false)
                } else {
                    // Only the end of the status left: it is that condition's record.
                    severity = select::status_severity(from_status);
                    (status_key(from_status), true)
                }
            }
            other => (key_of(&[other.name(), &seq.to_string()]), false),
        };
        Record {
            seq,
            at_ms,
            event: event.name().to_owned(),
            account: account.map(str::to_owned),
            severity,
            key,
            resolves,
            message: event.message(),
            fields: event.fields(),
            ends,
        }
    }
}

/// `parts` joined with `/`, each with `%` and `/` percent-encoded.
fn key_of(parts: &[&str]) -> String {
    let mut key = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            key.push('/');
        }
        for c in part.chars() {
            match c {
                '%' => key.push_str("%25"),
                '/' => key.push_str("%2F"),
                c => key.push(c),
            }
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::events::FindingEvent;
    use crate::events::fields::samples::{self, UUID};
    use crate::policy::ClearReason;

    fn selectors(list: &[&str]) -> Vec<EventSelector> {
        list.iter()
            .map(|s| EventSelector::parse(s).unwrap())
            .collect()
    }

    #[test]
    fn a_finding_and_its_clear_share_their_key() {
        let raised = samples::finding(FindingKind::Unexpected, Severity::Warning);
        let cleared = samples::finding(
            FindingKind::UnexpectedCleared(ClearReason::Closed),
            Severity::Info,
        );
        let a = Record::from_event(&raised, None, 1, 1000);
        let b = Record::from_event(&cleared, Some("default"), 2, 2000);
        assert_eq!(
            a.key,
            format!("port_unexpected/default/{UUID}/6379/redis-server")
        );
        assert_eq!(a.key, b.key);
        assert_eq!((a.resolves, b.resolves), (false, true));
        assert_eq!(
            (a.severity, b.severity),
            (Severity::Warning, Severity::Info)
        );
        assert_eq!(a.event, "port_unexpected");
        assert_eq!(b.event, "port_unexpected_cleared");
        assert_eq!(b.fields["reason"], "closed");
        assert_eq!(a.account, None);
        assert_eq!(b.account.as_deref(), Some("default"));
        assert_eq!((a.seq, a.at_ms), (1, 1000));
        assert_eq!(a.message, raised.message());
        assert_eq!(a.fields, raised.fields());
        assert_eq!(a.ends, None);

        let missing = Record::from_event(
            &samples::finding(FindingKind::Missing, Severity::Critical),
            Some("prod"),
            3,
            0,
        );
        // The spec's `/` is encoded: no other (rule, spec) pair can make the same key.
        assert_eq!(
            missing.key,
            format!("port_missing/prod/{UUID}/web tier/443%2Fnginx")
        );
        let back = Record::from_event(
            &samples::finding(
                FindingKind::MissingCleared(ClearReason::Opened),
                Severity::Critical,
            ),
            Some("prod"),
            4,
            0,
        );
        assert_eq!(
            (back.key.as_str(), back.resolves),
            (missing.key.as_str(), true)
        );
        // Another account: another condition.
        let elsewhere = Record::from_event(
            &samples::finding(FindingKind::Missing, Severity::Critical),
            Some("staging"),
            5,
            0,
        );
        assert_ne!(elsewhere.key, missing.key);
    }

    #[test]
    fn status_records_start_the_status_entered_and_end_the_status_left() {
        let offline = selectors(&["status_changed:AGENT_OFFLINE"]);
        let into = samples::status("COMPLETE", "AGENT_OFFLINE");
        let out = samples::status("AGENT_OFFLINE", "COLLECTING");
        let start = Record::for_sink(&into, None, 1, 0, &offline, Severity::Warning).unwrap();
        let end = Record::for_sink(&out, None, 2, 0, &offline, Severity::Warning).unwrap();
        assert_eq!(
            start.key,
            format!("status_changed/default/{UUID}/AGENT_OFFLINE")
        );
        assert_eq!(end.key, start.key);
        assert_eq!((start.resolves, end.resolves), (false, true));
        // The end carries the severity the start was sent with, not the info of its change.
        assert_eq!(
            (start.severity, end.severity),
            (Severity::Warning, Severity::Warning)
        );
        assert_eq!((start.ends.as_ref(), end.ends.as_ref()), (None, None));
        assert_eq!(end.fields["to_status"], "COLLECTING");
        // Not taken: no record.
        let churn = samples::status("COLLECTING", "COMPLETE");
        assert_eq!(
            Record::for_sink(&churn, None, 3, 0, &offline, Severity::Warning),
            None
        );
        // From one selected status into another: starts one, ends the other.
        let both = selectors(&["status_changed:AGENT_OFFLINE", "status_changed:FAILED"]);
        let moved = samples::status("AGENT_OFFLINE", "FAILED");
        let record = Record::for_sink(&moved, Some("prod"), 4, 0, &both, Severity::Info).unwrap();
        assert_eq!(record.key, format!("status_changed/prod/{UUID}/FAILED"));
        assert!(!record.resolves);
        assert_eq!(
            record.ends.as_deref(),
            Some(format!("status_changed/prod/{UUID}/AGENT_OFFLINE").as_str())
        );
        // from_event: as if every status were taken.
        let all = Record::from_event(&moved, Some("prod"), 4, 0);
        assert_eq!(all, record);
        let first = Record::from_event(&samples::status("UNKNOWN", "COMPLETE"), None, 5, 0);
        assert_eq!(first.ends, None);
    }

    #[test]
    fn other_events_are_conditions_of_their_own() {
        let event = samples::all()
            .into_iter()
            .find(|e| e.name() == "delivery_failed")
            .unwrap();
        let a = Record::from_event(&event, None, 7, 0);
        let b = Record::from_event(&event, None, 8, 0);
        assert_eq!(a.key, "delivery_failed/7");
        assert_ne!(a.key, b.key);
        assert_eq!(a.severity, Severity::Critical);
        assert!(!a.resolves);
        assert_eq!(a.fields["sink"], "oncall");
    }

    #[test]
    fn records_survive_the_outbox_file_and_old_files_without_ends() {
        for (seq, event) in samples::all().iter().enumerate() {
            let record = Record::from_event(event, Some("prod"), seq as u64, 1_700_000_000_000);
            let text = serde_json::to_string(&record).unwrap();
            let back: Record = serde_json::from_str(&text).unwrap();
            assert_eq!(back, record, "{text}");
        }
        let record = Record::from_event(&samples::status("UNKNOWN", "COMPLETE"), None, 1, 0);
        let text = serde_json::to_string(&record).unwrap();
        assert!(!text.contains("\"ends\""), "{text}");
    }

    fn finding_with(rule: String, spec: String, process: String) -> Event {
        Event::Finding(Box::new(FindingEvent {
            kind: FindingKind::Missing,
            uuid: UUID.into(),
            agent_name: String::new(),
            port: 1,
            process_name: process,
            pid: None,
            machine_ip: String::new(),
            machine_name: String::new(),
            request_id: None,
            rule,
            severity: Severity::Warning,
            spec: Some(spec),
        }))
    }

    proptest! {
        /// Two different (rule, spec) conditions never share a key, whatever `/` and `%`
        /// their names hold.
        #[test]
        fn keys_tell_conditions_apart(
            a in ("[a/%2F]{0,4}", "[a/%2F]{0,4}"),
            b in ("[a/%2F]{0,4}", "[a/%2F]{0,4}"),
        ) {
            let ka = Record::from_event(&finding_with(a.0.clone(), a.1.clone(), String::new()), None, 1, 0).key;
            let kb = Record::from_event(&finding_with(b.0.clone(), b.1.clone(), String::new()), None, 2, 0).key;
            prop_assert_eq!(ka == kb, a == b);
        }
    }
}
