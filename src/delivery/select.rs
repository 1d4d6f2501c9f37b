//! Which events a sink takes: `events = ["port_unexpected", "status_changed:AGENT_OFFLINE"]`
//! and `min_severity`. Pure.
//!
//! A sink that takes a condition also takes its end, whatever its severity filter says, so a
//! receiver never keeps a finding open for ever: `port_unexpected` brings
//! `port_unexpected_cleared`, `port_missing` brings `port_missing_cleared`, and
//! `status_changed:S` brings the `status_changed` that leaves `S`.

use crate::events::Event;
use crate::policy::Severity;

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
    /// `name` or `status_changed:STATUS`. (Skeleton: the config check's rules, issue 23.)
    pub fn parse(text: &str) -> Result<EventSelector, String> {
        let (event, status) = match text.split_once(':') {
            Some((event, status)) => (event, Some(status.to_owned())),
            None => (text, None),
        };
        Ok(EventSelector {
            event: event.to_owned(),
            status,
        })
    }
}

/// Whether a sink with these selectors and `min_severity` takes `event`. (Skeleton: names
/// only; the clears, statuses and severities are issue 23's.)
pub fn takes(selectors: &[EventSelector], min_severity: Severity, event: &Event) -> bool {
    let _ = min_severity;
    selectors.iter().any(|s| s.event == event.name())
}
