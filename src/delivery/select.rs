//! Which events a sink takes: `events = ["port_unexpected", "status_changed:AGENT_OFFLINE"]`
//! and `min_severity`. Pure.
//!
//! An event is taken as the *start* of a condition (or as a plain event), as the *end* of
//! one, or both ([`Taken`]):
//! - a policy finding starts its condition; its clear ends it. A sink that takes
//!   `port_unexpected` also takes `port_unexpected_cleared`, and `port_missing` brings
//!   `port_missing_cleared`, *whatever their severity*: a policy reload may move a finding to
//!   a lower severity without an event, and its clear then carries the lower one, yet the
//!   receiver holds the finding open at the severity it was sent with. Selecting a clear on
//!   its own (`port_missing_cleared`) takes it by its severity, like any event.
//! - `status_changed:S` takes the change into `S` (a start) and the change out of `S` (its
//!   end); plain `status_changed` takes every change, each one the end of the status left
//!   and the start of the status entered. An end passes when its start would have: the
//!   change into `S` at the level `S` has (`AGENT_OFFLINE` and `FAILED` warn, the rest are
//!   info), so `COLLECTING → COMPLETE` every minute does not end a condition never sent.
//! - every other event is a plain event, taken by its name.
//!
//! `min_severity` compares findings by their rule's severity and other events by their level:
//! info → `info`, warn → `warning`, error → `critical`.

use tracing::Level;

use crate::events::Event;
use crate::policy::Severity;
use crate::status::Status;

/// Every event name `events` may hold, in `docs/events.md`'s order.
pub const EVENT_NAMES: [&str; 25] = [
    "status_changed",
    "poll_failed",
    "poll_recovered",
    "rate_limited",
    "clock_skew",
    "credentials_failed",
    "account_failed",
    "watchlist_loaded",
    "discovery_failed",
    "config_rejected",
    "state_damaged",
    "daemon_started",
    "daemon_stopping",
    "port_opened",
    "port_closed",
    "inventory_baseline",
    "inventory_failed",
    "scan_requested",
    "port_unexpected",
    "port_unexpected_cleared",
    "port_missing",
    "port_missing_cleared",
    "delivery_failed",
    "leader_elected",
    "leadership_lost",
];

/// The longest status a selector may name (the API's are at most 16 characters).
pub const MAX_STATUS_CHARS: usize = 64;

/// One entry of `events`: an event name, and for `status_changed` optionally the status
/// it changes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSelector {
    /// The event's name (`docs/events.md`).
    pub event: String,
    /// `status_changed:STATUS`: only changes to (and, as their end, from) `STATUS`.
    pub status: Option<String>,
}

/// What a sink takes when its block has no `events`: the policy's findings (and so their
/// clears).
pub fn default_selectors() -> Vec<EventSelector> {
    ["port_unexpected", "port_missing"]
        .into_iter()
        .map(|event| EventSelector {
            event: event.to_owned(),
            status: None,
        })
        .collect()
}

impl EventSelector {
    /// `name` or `status_changed:STATUS`. `name` is one of [`EVENT_NAMES`]; `STATUS` is one
    /// the API sends (`AGENT_OFFLINE`, …) or at least shaped like one (upper-case letters,
    /// digits and `_`, at most [`MAX_STATUS_CHARS`]): a status this build does not know may
    /// still arrive, as it is passed through. The error says what to write instead; it
    /// quotes nothing of `text` (the caller shows the value, escaped, with its place).
    pub fn parse(text: &str) -> Result<EventSelector, String> {
        let (event, status) = match text.split_once(':') {
            Some((event, status)) => (event, Some(status)),
            None => (text, None),
        };
        if !EVENT_NAMES.contains(&event) {
            return Err(format!(
                "is not an event name; write one of {} (for status_changed optionally \
                 with a status: \"status_changed:AGENT_OFFLINE\")",
                EVENT_NAMES.join(", ")
            ));
        }
        let Some(status) = status else {
            return Ok(EventSelector {
                event: event.to_owned(),
                status: None,
            });
        };
        if event != "status_changed" {
            return Err(format!(
                "names a status, but only status_changed takes one; write \"{event}\" \
                 alone, or e.g. \"status_changed:AGENT_OFFLINE\""
            ));
        }
        if !is_status_shaped(status) {
            let known: Vec<&str> = Status::KNOWN.iter().map(Status::as_str).collect();
            return Err(format!(
                "has no status after `status_changed:` that the API could send (upper-case \
                 letters, digits and `_`, at most {MAX_STATUS_CHARS}); write e.g. \
                 \"status_changed:AGENT_OFFLINE\" (statuses: {})",
                known.join(", ")
            ));
        }
        Ok(EventSelector {
            event: event.to_owned(),
            status: Some(status.to_owned()),
        })
    }

    /// The selector as written in `events`.
    pub fn as_written(&self) -> String {
        match &self.status {
            Some(status) => format!("{}:{status}", self.event),
            None => self.event.clone(),
        }
    }
}

/// `AGENT_OFFLINE`, `NO_TASK`, `OFFLINE`: what a status from the API looks like.
fn is_status_shaped(status: &str) -> bool {
    !status.is_empty()
        && status.len() <= MAX_STATUS_CHARS
        && status.starts_with(|c: char| c.is_ascii_uppercase())
        && status
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// How a sink takes an event: as the start of a condition (or a plain event), as the end of
/// one, or both (a status change from one selected status into another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    /// It starts a condition the sink takes (a finding, a change into a selected status),
    /// or it is a plain event the sink takes.
    pub start: bool,
    /// It ends a condition the sink takes (a clear, a change out of a selected status).
    pub end: bool,
}

/// The severity `min_severity` compares `event` by: a finding's rule severity, else the
/// event's level (info → `info`, warn → `warning`, error → `critical`).
pub fn severity(event: &Event) -> Severity {
    match event {
        Event::Finding(finding) => finding.severity,
        other => level_severity(other.level()),
    }
}

/// A level as a severity.
fn level_severity(level: Level) -> Severity {
    match level {
        Level::ERROR => Severity::Critical,
        Level::WARN => Severity::Warning,
        _ => Severity::Info,
    }
}

/// The severity of a change into `status` (its level: see [`Event::level`]).
pub fn status_severity(status: &Status) -> Severity {
    let entering = Event::StatusChanged {
        uuid: String::new(),
        agent_name: String::new(),
        from_status: Status::Unknown,
        to_status: status.clone(),
        request_id: String::new(),
        error_code: None,
    };
    severity(&entering)
}

/// Whether a sink with these selectors and `min_severity` takes `event`.
pub fn takes(selectors: &[EventSelector], min_severity: Severity, event: &Event) -> bool {
    taken(selectors, min_severity, event).is_some()
}

/// How a sink with these selectors and `min_severity` takes `event`, if at all.
pub fn taken(selectors: &[EventSelector], min_severity: Severity, event: &Event) -> Option<Taken> {
    let named = |name: &str| selectors.iter().any(|s| s.event == name);
    let severe = severity(event) >= min_severity;
    let (start, end) = match event {
        Event::Finding(finding) => {
            use crate::events::FindingKind;
            match finding.kind {
                FindingKind::Unexpected => (named("port_unexpected") && severe, false),
                FindingKind::Missing => (named("port_missing") && severe, false),
                FindingKind::UnexpectedCleared(_) => (
                    false,
                    named("port_unexpected") || (named("port_unexpected_cleared") && severe),
                ),
                FindingKind::MissingCleared(_) => (
                    false,
                    named("port_missing") || (named("port_missing_cleared") && severe),
                ),
            }
        }
        Event::StatusChanged {
            from_status,
            to_status,
            ..
        } => {
            let selects = |status: &Status| {
                selectors.iter().any(|s| {
                    s.event == "status_changed"
                        && s.status
                            .as_deref()
                            .is_none_or(|wanted| wanted == status.as_str())
                })
            };
            let start = selects(to_status) && severe;
            // A first answer (`UNKNOWN → …`) ends nothing: nothing was sent before it.
            let end = *from_status != Status::Unknown
                && from_status != to_status
                && selects(from_status)
                && status_severity(from_status) >= min_severity;
            (start, end)
        }
        other => (named(other.name()) && severe, false),
    };
    (start || end).then_some(Taken { start, end })
}

/// The most severe an event named `name` (with `status` for `status_changed:STATUS`) can
/// be, when that is fixed by the name; `None` for findings (their rule decides) and plain
/// `status_changed`. The config check refuses a selector whose events could never reach
/// `min_severity`.
pub fn highest_severity(selector: &EventSelector) -> Option<Severity> {
    match selector.event.as_str() {
        "port_unexpected" | "port_unexpected_cleared" | "port_missing" | "port_missing_cleared" => {
            None
        }
        "status_changed" => selector
            .status
            .as_deref()
            .map(|status| status_severity(&Status::new(status))),
        "poll_failed" | "rate_limited" | "clock_skew" | "state_damaged" | "inventory_failed"
        | "discovery_failed" | "leadership_lost" => Some(Severity::Warning),
        "credentials_failed" | "delivery_failed" | "config_rejected" | "account_failed" => {
            Some(Severity::Critical)
        }
        _ => Some(Severity::Info),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::events::FindingKind;
    use crate::events::fields::samples;
    use crate::policy::ClearReason;

    fn sel(list: &[&str]) -> Vec<EventSelector> {
        list.iter()
            .map(|s| EventSelector::parse(s).unwrap())
            .collect()
    }

    const SEVERITIES: [Severity; 4] = [
        Severity::Info,
        Severity::Notice,
        Severity::Warning,
        Severity::Critical,
    ];

    #[test]
    fn parse_accepts_names_and_statuses_and_explains_the_rest() {
        assert_eq!(
            EventSelector::parse("status_changed:AGENT_OFFLINE").unwrap(),
            EventSelector {
                event: "status_changed".into(),
                status: Some("AGENT_OFFLINE".into())
            }
        );
        // A status this build does not know, shaped like the API's: the cwp backend's.
        assert_eq!(
            EventSelector::parse("status_changed:UNINSTALLED")
                .unwrap()
                .as_written(),
            "status_changed:UNINSTALLED"
        );
        for name in EVENT_NAMES {
            assert_eq!(EventSelector::parse(name).unwrap().as_written(), name);
        }
        let unknown = EventSelector::parse("port_open").unwrap_err();
        assert!(unknown.contains("not an event name"), "{unknown}");
        assert!(unknown.contains("port_opened, port_closed"), "{unknown}");
        let status_elsewhere = EventSelector::parse("poll_failed:AGENT_OFFLINE").unwrap_err();
        assert!(
            status_elsewhere.contains("only status_changed takes one"),
            "{status_elsewhere}"
        );
        for bad in [
            "status_changed:",
            "status_changed:offline",
            "status_changed:AGENT OFFLINE",
            "status_changed:_X",
            "status_changed:A:B",
        ] {
            let e = EventSelector::parse(bad).unwrap_err();
            assert!(
                e.contains("AGENT_OFFLINE") && e.contains("NO_TASK"),
                "{bad}: {e}"
            );
        }
        let long = format!("status_changed:{}", "A".repeat(MAX_STATUS_CHARS + 1));
        assert!(EventSelector::parse(&long).is_err());
        assert!(EventSelector::parse(&long[..long.len() - 1]).is_ok());
        // Case matters, as in the log's `event` field.
        assert!(EventSelector::parse("Port_Unexpected").is_err());
        assert!(EventSelector::parse(" port_unexpected").is_err());
    }

    #[test]
    fn event_names_are_the_catalogues() {
        let mut from_samples: Vec<&str> = samples::all().iter().map(Event::name).collect();
        from_samples.sort_unstable();
        from_samples.dedup();
        let mut names = EVENT_NAMES.to_vec();
        names.sort_unstable();
        assert_eq!(names, from_samples);
    }

    #[test]
    fn default_takes_findings_and_their_clears_at_warning_and_above() {
        let defaults = default_selectors();
        for kind in [FindingKind::Unexpected, FindingKind::Missing] {
            assert!(takes(
                &defaults,
                Severity::Warning,
                &samples::finding(kind, Severity::Warning)
            ));
            assert!(takes(
                &defaults,
                Severity::Warning,
                &samples::finding(kind, Severity::Critical)
            ));
            assert!(!takes(
                &defaults,
                Severity::Warning,
                &samples::finding(kind, Severity::Notice)
            ));
        }
        // Clears pass whatever their severity: a reload may have lowered it meanwhile.
        for kind in [
            FindingKind::UnexpectedCleared(ClearReason::Closed),
            FindingKind::MissingCleared(ClearReason::Removed),
        ] {
            let taken = taken(
                &defaults,
                Severity::Critical,
                &samples::finding(kind, Severity::Info),
            );
            assert_eq!(
                taken,
                Some(Taken {
                    start: false,
                    end: true
                })
            );
        }
        // Nothing else.
        for event in samples::all() {
            if !matches!(event, Event::Finding(_)) {
                assert!(
                    !takes(&defaults, Severity::Info, &event),
                    "{}",
                    event.name()
                );
            }
        }
    }

    #[test]
    fn a_clear_selected_alone_is_an_event_with_its_severity() {
        let only_clears = sel(&["port_missing_cleared"]);
        let clear = |s| samples::finding(FindingKind::MissingCleared(ClearReason::Opened), s);
        assert!(takes(
            &only_clears,
            Severity::Warning,
            &clear(Severity::Warning)
        ));
        assert!(!takes(
            &only_clears,
            Severity::Warning,
            &clear(Severity::Info)
        ));
        assert!(!takes(
            &only_clears,
            Severity::Info,
            &samples::finding(FindingKind::Missing, Severity::Critical)
        ));
        // The other family is not brought along.
        assert!(!takes(
            &only_clears,
            Severity::Info,
            &samples::finding(
                FindingKind::UnexpectedCleared(ClearReason::Closed),
                Severity::Critical
            )
        ));
    }

    #[test]
    fn a_status_selector_takes_the_change_into_it_and_out_of_it() {
        let offline = sel(&["status_changed:AGENT_OFFLINE"]);
        let at = Severity::Warning;
        let start = Taken {
            start: true,
            end: false,
        };
        let end = Taken {
            start: false,
            end: true,
        };
        assert_eq!(
            taken(&offline, at, &samples::status("COMPLETE", "AGENT_OFFLINE")),
            Some(start)
        );
        // Back: the end, although the change itself is info.
        assert_eq!(
            taken(
                &offline,
                at,
                &samples::status("AGENT_OFFLINE", "COLLECTING")
            ),
            Some(end)
        );
        assert_eq!(
            taken(&offline, at, &samples::status("COMPLETE", "COLLECTING")),
            None
        );
        assert_eq!(
            taken(&offline, at, &samples::status("COLLECTING", "FAILED")),
            None
        );
        // First seen offline: a start; first seen otherwise: nothing (UNKNOWN was no condition).
        assert_eq!(
            taken(&offline, at, &samples::status("UNKNOWN", "AGENT_OFFLINE")),
            Some(start)
        );
        // Critical only: offline (a warning) is never started, so never ended either.
        assert_eq!(
            taken(
                &offline,
                Severity::Critical,
                &samples::status("COMPLETE", "AGENT_OFFLINE")
            ),
            None
        );
        assert_eq!(
            taken(
                &offline,
                Severity::Critical,
                &samples::status("AGENT_OFFLINE", "COMPLETE")
            ),
            None
        );
        // From one selected status into another: both.
        let two = sel(&["status_changed:AGENT_OFFLINE", "status_changed:FAILED"]);
        assert_eq!(
            taken(&two, at, &samples::status("AGENT_OFFLINE", "FAILED")),
            Some(Taken {
                start: true,
                end: true
            })
        );
    }

    #[test]
    fn plain_status_changed_takes_every_change_by_level() {
        let all = sel(&["status_changed"]);
        assert_eq!(
            taken(
                &all,
                Severity::Info,
                &samples::status("COLLECTING", "COMPLETE")
            ),
            Some(Taken {
                start: true,
                end: true
            })
        );
        // At warning, the info churn neither starts nor ends anything...
        assert_eq!(
            taken(
                &all,
                Severity::Warning,
                &samples::status("COLLECTING", "COMPLETE")
            ),
            None
        );
        // ...but leaving a warning status ends it.
        assert_eq!(
            taken(
                &all,
                Severity::Warning,
                &samples::status("FAILED", "COMPLETE")
            ),
            Some(Taken {
                start: false,
                end: true
            })
        );
    }

    #[test]
    fn other_events_are_taken_by_name_and_level() {
        let chosen = sel(&["poll_failed", "daemon_started", "delivery_failed"]);
        let all = samples::all();
        let by_name = |name: &str| all.iter().find(|e| e.name() == name).unwrap();
        assert!(takes(&chosen, Severity::Warning, by_name("poll_failed")));
        assert!(!takes(&chosen, Severity::Critical, by_name("poll_failed")));
        assert!(takes(
            &chosen,
            Severity::Critical,
            by_name("delivery_failed")
        ));
        assert!(!takes(&chosen, Severity::Notice, by_name("daemon_started")));
        assert!(takes(&chosen, Severity::Info, by_name("daemon_started")));
        assert!(!takes(&chosen, Severity::Info, by_name("daemon_stopping")));
        assert_eq!(
            taken(&chosen, Severity::Info, by_name("daemon_started")),
            Some(Taken {
                start: true,
                end: false
            })
        );
    }

    #[test]
    fn highest_severity_is_what_the_catalogue_says() {
        for event in samples::all() {
            let selector = match &event {
                Event::StatusChanged { to_status, .. } => EventSelector {
                    event: "status_changed".into(),
                    status: Some(to_status.as_str().to_owned()),
                },
                other => EventSelector {
                    event: other.name().into(),
                    status: None,
                },
            };
            match highest_severity(&selector) {
                Some(highest) => assert_eq!(highest, severity(&event), "{}", event.name()),
                None => assert!(matches!(event, Event::Finding(_))),
            }
        }
        let offline = EventSelector::parse("status_changed:AGENT_OFFLINE").unwrap();
        assert_eq!(highest_severity(&offline), Some(Severity::Warning));
        let complete = EventSelector::parse("status_changed:COMPLETE").unwrap();
        assert_eq!(highest_severity(&complete), Some(Severity::Info));
    }

    fn any_event() -> impl Strategy<Value = Event> {
        let statuses = prop::sample::select(vec![
            "UNKNOWN",
            "COLLECTING",
            "COMPLETE",
            "AGENT_OFFLINE",
            "FAILED",
            "NO_TASK",
            "OFFLINE",
        ]);
        let kinds = prop::sample::select(vec![
            FindingKind::Unexpected,
            FindingKind::UnexpectedCleared(ClearReason::Closed),
            FindingKind::Missing,
            FindingKind::MissingCleared(ClearReason::Allowed),
        ]);
        prop_oneof![
            (statuses.clone(), statuses)
                .prop_filter("a change", |(a, b)| a != b)
                .prop_map(|(a, b)| samples::status(a, b)),
            (kinds, prop::sample::select(SEVERITIES.to_vec()))
                .prop_map(|(k, s)| samples::finding(k, s)),
            prop::sample::select(samples::all()),
        ]
    }

    fn any_selectors() -> impl Strategy<Value = Vec<EventSelector>> {
        let one = prop::sample::select(vec![
            "status_changed",
            "status_changed:AGENT_OFFLINE",
            "status_changed:FAILED",
            "status_changed:COMPLETE",
            "status_changed:OFFLINE",
            "port_unexpected",
            "port_unexpected_cleared",
            "port_missing",
            "port_missing_cleared",
            "poll_failed",
            "daemon_started",
            "delivery_failed",
        ]);
        prop::collection::vec(one, 0..5).prop_map(|list| {
            list.iter()
                .map(|s| EventSelector::parse(s).unwrap())
                .collect()
        })
    }

    proptest! {
        /// Lowering `min_severity` never takes less; adding selectors never takes less.
        #[test]
        fn taking_is_monotonic(
            event in any_event(),
            selectors in any_selectors(),
            more in any_selectors(),
            a in prop::sample::select(SEVERITIES.to_vec()),
            b in prop::sample::select(SEVERITIES.to_vec()),
        ) {
            let (low, high) = if a <= b { (a, b) } else { (b, a) };
            if takes(&selectors, high, &event) {
                prop_assert!(takes(&selectors, low, &event));
            }
            let mut both = selectors.clone();
            both.extend(more);
            if takes(&selectors, low, &event) {
                prop_assert!(takes(&both, low, &event));
            }
        }

        /// Whenever a sink takes the start of a condition, it takes its end: a finding's
        /// clear (at any severity), the change out of a status it took the change into.
        #[test]
        fn every_start_taken_has_its_end_taken(
            selectors in any_selectors(),
            min in prop::sample::select(SEVERITIES.to_vec()),
            raised in prop::sample::select(SEVERITIES.to_vec()),
            cleared in prop::sample::select(SEVERITIES.to_vec()),
            unexpected in any::<bool>(),
            into in prop::sample::select(vec!["AGENT_OFFLINE", "FAILED", "COMPLETE", "OFFLINE"]),
            then in prop::sample::select(vec!["COLLECTING", "COMPLETE", "NO_TASK", "FAILED"]),
        ) {
            let (start, end) = if unexpected {
                (FindingKind::Unexpected, FindingKind::UnexpectedCleared(ClearReason::Closed))
            } else {
                (FindingKind::Missing, FindingKind::MissingCleared(ClearReason::Opened))
            };
            if takes(&selectors, min, &samples::finding(start, raised)) {
                let t = taken(&selectors, min, &samples::finding(end, cleared));
                prop_assert!(t.is_some_and(|t| t.end));
            }
            let entered = taken(&selectors, min, &samples::status("COLLECTING", into));
            if entered.is_some_and(|t| t.start) && into != then {
                let left = taken(&selectors, min, &samples::status(into, then));
                prop_assert!(left.is_some_and(|t| t.end), "{into} -> {then}");
            }
        }
    }
}
