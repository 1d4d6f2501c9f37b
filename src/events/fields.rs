//! [`Event::fields`]: an event's own fields as JSON, named and typed exactly as the JSON log
//! lines carry them (`docs/events.md`), for whoever needs them outside the log: the delivery
//! outbox keeps them with each record and the `webhook` sink sends them.
//!
//! Why a second listing beside [`super::TracingSink`]: `tracing` fields are compile-time names
//! that only a subscriber can read back, and rendering through a subscriber to get a map would
//! make delivery depend on the log format. The test below renders every variant through the
//! real JSON log layer and compares, so the two listings cannot drift apart.
//!
//! What is left out: what the log line adds around the event (`timestamp`, `level`, `event`,
//! `message`, `message_id`) and the `account` mark of an account's sink (the record carries
//! its account apart). `account_failed` names its account itself, so there it is a field.
//! A field the log leaves out when it has no value (`request_id` of a failed poll without an
//! answer, `baseline` when false, a clear's `reason` on a raise) is left out here too.

use serde_json::{Map, Value};

use super::Event;

/// Builds the map in the log's field order.
struct Fields(Map<String, Value>);

impl Fields {
    fn new() -> Fields {
        Fields(Map::new())
    }

    fn put(mut self, name: &str, value: impl Into<Value>) -> Fields {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    /// A `cwp` port's `proto` and `bind_ip` (always, they are its identity), and `user`,
    /// `process_path`, `first_seen` when known; nothing for yunjing's ports.
    fn port_facts(self, cwp: Option<&crate::inventory::PortFacts>) -> Fields {
        let Some(c) = cwp else { return self };
        let known = |text: &str| (!text.is_empty()).then(|| text.to_owned());
        self.put("proto", c.proto.as_str())
            .put("bind_ip", c.bind_ip.to_string())
            .opt("user", known(&c.user))
            .opt("process_path", known(&c.process_path))
            .opt("first_seen", c.first_seen.as_ref().map(ToString::to_string))
    }

    /// A field the log writes only when it has a value.
    fn opt(self, name: &str, value: Option<impl Into<Value>>) -> Fields {
        match value {
            Some(value) => self.put(name, value),
            None => self,
        }
    }
}

impl Event {
    /// The event's own fields, as the JSON log line names and types them (numbers as numbers,
    /// statuses and severities as their strings), in the order `docs/events.md` lists them.
    pub fn fields(&self) -> Map<String, Value> {
        let f = Fields::new();
        let f = match self {
            Event::StatusChanged {
                uuid,
                agent_name,
                from_status,
                to_status,
                request_id,
                error_code,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("from_status", from_status.as_str())
                .put("to_status", to_status.as_str())
                .put("request_id", request_id.as_str())
                .opt("error_code", error_code.as_deref()),
            Event::PollFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
                request_id,
                consecutive_failures,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("error_code", error_code.as_str())
                .put("error_message", error_message.as_str())
                .opt("request_id", request_id.as_deref())
                .put("consecutive_failures", *consecutive_failures),
            Event::PollRecovered {
                uuid,
                agent_name,
                failed_polls,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("failed_polls", *failed_polls),
            Event::RateLimited {
                error_code,
                requests_per_second,
            } => f
                .put("error_code", error_code.as_str())
                .put("requests_per_second", *requests_per_second),
            Event::DeliveryFailed {
                sink,
                error_message,
                events,
            } => f
                .put("sink", sink.as_str())
                .put("error_message", error_message.as_str())
                .put("events", *events),
            Event::ClockSkew { skew_seconds } => f.put("skew_seconds", *skew_seconds),
            Event::CredentialsFailed {
                error_code,
                error_message,
                source,
            } => f
                .put("error_code", error_code.as_str())
                .put("error_message", error_message.as_str())
                .put("source", source.as_str()),
            Event::AccountFailed {
                account,
                error_code,
                error_message,
                attempt,
                retry_in_seconds,
            } => f
                .put("account", account.as_str())
                .put("error_code", error_code.as_str())
                .put("error_message", error_message.as_str())
                .put("attempt", *attempt)
                .put("retry_in_seconds", *retry_in_seconds),
            Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source,
                skipped,
            } => f
                .put("agents", *agents as u64)
                .put("added", *added as u64)
                .put("removed", *removed as u64)
                .put("source", source.as_str())
                .put("skipped", *skipped as u64),
            Event::DiscoveryFailed {
                error_code,
                error_message,
                retry_in_seconds,
            } => f
                .put("error_code", error_code.as_str())
                .put("error_message", error_message.as_str())
                .put("retry_in_seconds", *retry_in_seconds),
            Event::ConfigRejected { error_message } => {
                f.put("error_message", error_message.as_str())
            }
            Event::StateDamaged {
                path,
                error_message,
                moved_to,
            } => f
                .put("path", path.as_str())
                .put("error_message", error_message.as_str())
                .put("moved_to", moved_to.as_str()),
            Event::DaemonStarted { version, agents }
            | Event::DaemonStopping { version, agents } => f
                .put("version", version.as_str())
                .put("agents", *agents as u64),
            Event::PortOpened {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
                baseline,
                cwp,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("port", *port)
                .put("process_name", process_name.as_str())
                .put("pid", *pid)
                .put("machine_ip", machine_ip.as_str())
                .put("machine_name", machine_name.as_str())
                .put("request_id", request_id.as_str())
                .opt("baseline", baseline.then_some(true))
                .port_facts(cwp.as_deref()),
            Event::PortClosed {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
                cwp,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("port", *port)
                .put("process_name", process_name.as_str())
                .put("pid", *pid)
                .put("machine_ip", machine_ip.as_str())
                .put("machine_name", machine_name.as_str())
                .put("request_id", request_id.as_str())
                .port_facts(cwp.as_deref()),
            Event::InventoryBaseline {
                uuid,
                agent_name,
                ports,
                request_id,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("ports", *ports as u64)
                .put("request_id", request_id.as_str()),
            Event::InventoryFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("error_code", error_code.as_str())
                .put("error_message", error_message.as_str()),
            Event::ScanRequested {
                uuid,
                agent_name,
                reason,
                request_id,
            } => f
                .put("uuid", uuid.as_str())
                .put("agent_name", agent_name.as_str())
                .put("reason", reason.as_str())
                .put("request_id", request_id.as_str()),
            Event::LeaderElected { name, election } => f
                .put("name", name.as_str())
                .put("election", election.as_str()),
            Event::LeadershipLost {
                name,
                holder,
                reason,
            } => f
                .put("name", name.as_str())
                .opt("holder", holder.as_deref())
                .put("reason", reason.as_str()),
            Event::Finding(finding) => f
                .put("uuid", finding.uuid.as_str())
                .put("agent_name", finding.agent_name.as_str())
                .put("port", finding.port)
                .put("process_name", finding.process_name.as_str())
                .opt("pid", finding.pid)
                .put("machine_ip", finding.machine_ip.as_str())
                .put("machine_name", finding.machine_name.as_str())
                .opt("request_id", finding.request_id.as_deref())
                .put("rule", finding.rule.as_str())
                .put("severity", finding.severity.as_str())
                .opt("reason", finding.reason())
                .opt("spec", finding.spec.as_deref()),
        };
        f.0
    }
}

/// One event of every kind (and of each variant's optional fields both ways), for the tests
/// here and in [`crate::delivery`].
#[cfg(test)]
pub(crate) mod samples {
    use super::super::{Event, FindingEvent, FindingKind, WatchlistSource};
    use crate::policy::{ClearReason, Severity};

    pub(crate) const UUID: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

    /// A `status_changed` of the sample agent.
    pub(crate) fn status(from: &str, to: &str) -> Event {
        Event::StatusChanged {
            uuid: UUID.into(),
            agent_name: "web-01".into(),
            from_status: from.into(),
            to_status: to.into(),
            request_id: "req-1".into(),
            error_code: None,
        }
    }

    /// A policy event of the sample agent.
    pub(crate) fn finding(kind: FindingKind, severity: Severity) -> Event {
        let missing = matches!(kind, FindingKind::Missing | FindingKind::MissingCleared(_));
        Event::Finding(Box::new(FindingEvent {
            kind,
            uuid: UUID.into(),
            agent_name: "web-01".into(),
            port: if missing { 443 } else { 6379 },
            process_name: if missing { "nginx" } else { "redis-server" }.into(),
            pid: (!missing).then_some(4242),
            machine_ip: "10.0.0.5".into(),
            machine_name: "web".into(),
            request_id: (!missing).then(|| "req-9".to_owned()),
            rule: "web tier".into(),
            severity,
            spec: missing.then(|| "443/nginx".to_owned()),
        }))
    }

    /// Every event kind at least once.
    pub(crate) fn all() -> Vec<Event> {
        let hostile = "x\n\u{1b}[2J\"quoted\"";
        vec![
            status("COLLECTING", "COMPLETE"),
            Event::StatusChanged {
                uuid: UUID.into(),
                agent_name: String::new(),
                from_status: "COMPLETE".into(),
                to_status: "AGENT_OFFLINE".into(),
                request_id: "req-2".into(),
                error_code: Some("FailedOperation.AgentOffline".into()),
            },
            Event::PollFailed {
                uuid: UUID.into(),
                agent_name: "web-01".into(),
                error_code: "InternalError".into(),
                error_message: hostile.into(),
                request_id: None,
                consecutive_failures: 3,
            },
            Event::PollFailed {
                uuid: UUID.into(),
                agent_name: "web-01".into(),
                error_code: "InternalError".into(),
                error_message: "m".into(),
                request_id: Some("req-3".into()),
                consecutive_failures: 1,
            },
            Event::PollRecovered {
                uuid: UUID.into(),
                agent_name: "web-01".into(),
                failed_polls: 4,
            },
            Event::RateLimited {
                error_code: "RequestLimitExceeded".into(),
                requests_per_second: 10,
            },
            Event::DeliveryFailed {
                sink: "oncall".into(),
                error_message: "HTTP 500 for 24h".into(),
                events: 7,
            },
            Event::ClockSkew { skew_seconds: -42 },
            Event::CredentialsFailed {
                error_code: "AuthFailure.SecretIdNotFound".into(),
                error_message: hostile.into(),
                source: "environment".into(),
            },
            Event::AccountFailed {
                account: "prod".into(),
                error_code: "AssumeRoleError.Unavailable".into(),
                error_message: "STS unavailable".into(),
                attempt: 2,
                retry_in_seconds: 4,
            },
            Event::WatchlistLoaded {
                agents: 3,
                added: 1,
                removed: 0,
                source: WatchlistSource::Discovery,
                skipped: 2,
            },
            Event::DiscoveryFailed {
                error_code: "Discovery.Incomplete".into(),
                error_message: "m".into(),
                retry_in_seconds: 60,
            },
            Event::ConfigRejected {
                error_message: "config.toml:3:1: bad\nconfig.toml:4:1: worse".into(),
            },
            Event::StateDamaged {
                path: "/var/lib/cwp-portwatch/state.json".into(),
                error_message: "EOF".into(),
                moved_to: "/var/lib/cwp-portwatch/state.json.damaged-1".into(),
            },
            Event::DaemonStarted {
                version: "0.1.0".into(),
                agents: 3,
            },
            Event::DaemonStopping {
                version: "0.1.0".into(),
                agents: 3,
            },
            Event::PortOpened {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                port: 3306,
                process_name: "mysqld".into(),
                pid: 1400,
                machine_ip: "10.0.0.6".into(),
                machine_name: "db".into(),
                request_id: "req-4".into(),
                baseline: false,
                cwp: None,
            },
            Event::PortOpened {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                port: 22,
                process_name: "sshd".into(),
                pid: 1,
                machine_ip: "10.0.0.6".into(),
                machine_name: "db".into(),
                request_id: "req-4".into(),
                baseline: true,
                cwp: None,
            },
            Event::PortClosed {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                port: 3306,
                process_name: "mysqld".into(),
                pid: 1400,
                machine_ip: "10.0.0.6".into(),
                machine_name: "db".into(),
                request_id: "req-5".into(),
                cwp: None,
            },
            Event::InventoryBaseline {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                ports: 12,
                request_id: "req-6".into(),
            },
            Event::InventoryFailed {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                error_code: "InventoryError.Incomplete".into(),
                error_message: "m".into(),
            },
            Event::ScanRequested {
                uuid: UUID.into(),
                agent_name: "db-01".into(),
                reason: "rescan".into(),
                request_id: "req-7".into(),
            },
            Event::LeaderElected {
                name: "host-a".into(),
                election: "/cwp-portwatch/prod".into(),
            },
            Event::LeadershipLost {
                name: "host-a".into(),
                holder: Some("host-b".into()),
                reason: hostile.into(),
            },
            Event::LeadershipLost {
                name: "host-a".into(),
                holder: None,
                reason: "lease expired".into(),
            },
            finding(FindingKind::Unexpected, Severity::Warning),
            finding(
                FindingKind::UnexpectedCleared(ClearReason::Closed),
                Severity::Notice,
            ),
            finding(FindingKind::Missing, Severity::Critical),
            finding(
                FindingKind::MissingCleared(ClearReason::Opened),
                Severity::Info,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tracing_subscriber::layer::SubscriberExt;

    use super::super::{EventSink, TracingSink};
    use super::*;
    use crate::logging::{LineLayer, Output};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// `event` as the daemon's JSON log mode writes it, parsed back.
    fn json_line(event: &Event) -> Map<String, Value> {
        let buffer = Buffer::default();
        let layer = LineLayer::new(Output::Json, Box::new(buffer.clone()));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || TracingSink.emit(event));
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        match serde_json::from_str(&text).unwrap() {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn fields_are_what_the_json_log_writes_for_every_event() {
        let samples = samples::all();
        // Every variant is covered: a new one must be added to the samples (and to fields()).
        let names: std::collections::BTreeSet<&str> = samples.iter().map(Event::name).collect();
        assert_eq!(names.len(), 25, "{names:?}");
        for event in &samples {
            let mut logged = json_line(event);
            for wrapper in ["timestamp", "level", "event", "message", "message_id"] {
                assert!(
                    logged.remove(wrapper).is_some(),
                    "{}: no {wrapper}",
                    event.name()
                );
            }
            let fields = event.fields();
            // As maps: the log line's key order is the subscriber's affair.
            assert_eq!(fields, logged, "{}", event.name());
        }
    }

    #[test]
    fn optional_fields_are_absent_not_null() {
        for event in samples::all() {
            assert!(
                event.fields().values().all(|v| !v.is_null()),
                "{}",
                event.name()
            );
        }
        let all = samples::all();
        assert!(!all[2].fields().contains_key("request_id"));
        assert_eq!(all[3].fields()["request_id"], "req-3");
        assert!(!all[16].fields().contains_key("baseline"));
        assert_eq!(all[17].fields()["baseline"], true);
        assert_eq!(all[7].fields()["skew_seconds"], -42);
    }

    #[test]
    fn values_are_kept_as_they_were_not_escaped() {
        let all = samples::all();
        // The message escapes; the fields keep the API's text exactly (JSON escapes it).
        assert_eq!(all[2].fields()["error_message"], "x\n\u{1b}[2J\"quoted\"");
    }
}
