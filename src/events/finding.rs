//! The four events of the expected-ports policy (`port_unexpected`, `port_missing` and their
//! clears): [`FindingEvent`], their fields, names, MESSAGE_IDs, levels and sentences.

use tracing::Level;

use super::{message_id, who};
use crate::policy::{ClearReason, Severity};

/// Which of the four policy events a [`FindingEvent`] is; a clear carries its `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FindingKind {
    /// `port_unexpected`.
    Unexpected,
    /// `port_unexpected_cleared` (`closed` | `allowed` | `removed`).
    UnexpectedCleared(ClearReason),
    /// `port_missing`.
    Missing,
    /// `port_missing_cleared` (`opened` | `allowed` | `removed`).
    MissingCleared(ClearReason),
}

/// The fields of a policy event: the port event's, plus `rule` and `severity` (and `reason`
/// for a clear, `spec` for a missing port).
#[derive(Debug, Clone, PartialEq)]
pub struct FindingEvent {
    /// Which event.
    pub kind: FindingKind,
    /// Agent Uuid.
    pub uuid: String,
    /// Name from the watchlist (or discovery).
    pub agent_name: String,
    /// The port (`port_missing*`: the lowest port of the required range).
    pub port: u16,
    /// `ProcessName` (`port_missing*`: the required process glob, "" when none).
    pub process_name: String,
    /// `Pid`, when the port is open in the snapshot the finding was evaluated on.
    pub pid: Option<u32>,
    /// `MachineIp` of that snapshot.
    pub machine_ip: String,
    /// `MachineName` of that snapshot.
    pub machine_name: String,
    /// RequestId of the page that completed that snapshot; absent when no answer led to the
    /// event (a policy reload re-evaluating the stored inventory, an agent removed).
    pub request_id: Option<String>,
    /// The rule the finding is under (`default` for the policy file's default).
    pub rule: String,
    /// That rule's severity.
    pub severity: Severity,
    /// `port_missing*`: the `require` entry as written (e.g. `443/nginx`).
    pub spec: Option<String>,
}

impl FindingEvent {
    /// The `reason` field of a clear.
    pub fn reason(&self) -> Option<&'static str> {
        match self.kind {
            FindingKind::UnexpectedCleared(r) | FindingKind::MissingCleared(r) => Some(r.as_str()),
            FindingKind::Unexpected | FindingKind::Missing => None,
        }
    }

    pub(super) fn name(&self) -> &'static str {
        match self.kind {
            FindingKind::Unexpected => "port_unexpected",
            FindingKind::UnexpectedCleared(_) => "port_unexpected_cleared",
            FindingKind::Missing => "port_missing",
            FindingKind::MissingCleared(_) => "port_missing_cleared",
        }
    }

    pub(super) fn message_id(&self) -> &'static str {
        use message_id::*;
        match self.kind {
            FindingKind::Unexpected => PORT_UNEXPECTED,
            FindingKind::UnexpectedCleared(_) => PORT_UNEXPECTED_CLEARED,
            FindingKind::Missing => PORT_MISSING,
            FindingKind::MissingCleared(_) => PORT_MISSING_CLEARED,
        }
    }

    /// Warn, critical findings error; a clear at its finding's level, so a reader filtering
    /// by priority (`journalctl -p warning`) sees both ends of every finding.
    pub(super) fn level(&self) -> Level {
        if self.severity == Severity::Critical {
            Level::ERROR
        } else {
            Level::WARN
        }
    }

    pub(super) fn sentence(&self) -> String {
        let who = who(&self.agent_name, &self.uuid);
        let (rule, severity) = (&self.rule, self.severity.as_str());
        let spec = self.spec.as_deref().unwrap_or("");
        match self.kind {
            FindingKind::Unexpected => format!(
                "{who}: port {} open by {} is unexpected (rule {rule}, {severity})",
                self.port, self.process_name
            ),
            FindingKind::UnexpectedCleared(r) => format!(
                "{who}: port {} by {} no longer unexpected: {} (rule {rule}, {severity})",
                self.port,
                self.process_name,
                r.as_str()
            ),
            FindingKind::Missing => {
                format!("{who}: required port {spec} is not open (rule {rule}, {severity})")
            }
            FindingKind::MissingCleared(r) => format!(
                "{who}: required port {spec} no longer missing: {} (rule {rule}, {severity})",
                r.as_str()
            ),
        }
    }
}
