//! The expected-ports policy (spec "Expected-ports policy"), pure: the policy file → validated
//! rules, and (host facts, open ports, rules) → findings; the findings of two evaluations →
//! the changes to report. No I/O but [`Policy::load`] reading the file; no clock. The engine
//! stores each agent's [`Findings`] beside its inventory and emits the [`Change`]s as events,
//! exactly once, like status changes.
//!
//! INTERFACE SKELETON (issue 22): the signatures below are the contract between the policy
//! core (this module) and its wiring (engine, events, state, metrics, commands). The bodies
//! are filled in by the core's branch; the wiring codes against these names.

use std::collections::BTreeSet;
use std::path::Path;

use crate::problems::ConfigErrors;

/// A finding's severity (`severity` of a rule), ordered `info` < `notice` < `warning` <
/// `critical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `info`.
    Info,
    /// `notice`.
    Notice,
    /// `warning` (the default of a rule that names none).
    Warning,
    /// `critical` (its events are logged at error level).
    Critical,
}

impl Severity {
    /// The name as written in the policy file and carried by events and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// What the port data of an account's backend can say about a port: a table entry that needs
/// a field the backend lacks is refused by the policy check, never silently ignored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    /// The backend reports `proto`.
    pub proto: bool,
    /// The backend reports the bind address (`bind = loopback | private | any`).
    pub bind: bool,
    /// The backend reports the listening user.
    pub user: bool,
}

impl Capabilities {
    /// yunjing's `DescribeOpenPorts`: port, process and pid only.
    pub const YUNJING: Capabilities = Capabilities {
        proto: false,
        bind: false,
        user: false,
    };
}

/// What the policy knows of a host, borrowed from the engine's agent table.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// The agent Uuid (lower case).
    pub uuid: &'a str,
    /// The watchlist name, else the discovered `MachineName`, else the inventory's
    /// `MachineName`; "" when none.
    pub name: &'a str,
    /// The account's name (`default` for the top-level one).
    pub account: &'a str,
    /// Watchlist `tags`, and discovered `Tag` names.
    pub tags: &'a [Box<str>],
    /// The machine's region (discovery's `RegionInfo.Region`); "" when unknown.
    pub region: &'a str,
    /// The machine has a WAN IP (discovery's `MachineWanIp` non-empty).
    pub wan: bool,
}

/// What the policy knows of one open port. yunjing fills `port` and `process`; the `cwp`
/// backend fills the rest.
#[derive(Debug, Clone, Copy)]
pub struct PortFacts<'a> {
    /// The port number.
    pub port: u16,
    /// `ProcessName`.
    pub process: &'a str,
    /// `tcp` / `udp` / …, when the backend says.
    pub proto: Option<&'a str>,
    /// The bind address, when the backend says.
    pub bind_ip: Option<&'a str>,
    /// The listening user, when the backend says.
    pub user: Option<&'a str>,
}

/// One finding: a state that holds while the policy and the ports make it so.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Finding {
    /// An open port no rule selecting the host allows (or, on a host no rule selects, any
    /// port when `default = "alert"`).
    Unexpected {
        /// The port number.
        port: u16,
        /// Its `ProcessName`.
        process: Box<str>,
        /// The rule it is reported under (`default` for the file's default).
        rule: Box<str>,
        /// That rule's severity.
        severity: Severity,
    },
    /// A `require` entry no open port of the host matches.
    Missing {
        /// The requiring rule.
        rule: Box<str>,
        /// The `require` entry as written (e.g. `443/nginx`).
        spec: Box<str>,
        /// The lowest port of the entry's range (events carry it as `port`).
        port: u16,
        /// The entry's process glob ("" when none).
        process: Box<str>,
        /// That rule's severity.
        severity: Severity,
    },
}

/// An agent's findings, in order: what is stored per agent and compared.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Findings(pub BTreeSet<Finding>);

/// Why a finding cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearReason {
    /// `port_unexpected_cleared`: the port closed.
    Closed,
    /// `port_unexpected_cleared`: the port is still open but the policy now allows it;
    /// `port_missing_cleared`: the policy no longer requires it.
    Allowed,
    /// `port_missing_cleared`: a matching port opened.
    Opened,
    /// The agent left the watchlist or was forgotten.
    Removed,
}

impl ClearReason {
    /// The `reason` field's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ClearReason::Closed => "closed",
            ClearReason::Allowed => "allowed",
            ClearReason::Opened => "opened",
            ClearReason::Removed => "removed",
        }
    }
}

/// One change between two evaluations of an agent, to be emitted as one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// `port_unexpected` / `port_missing`.
    Raised(&'a Finding),
    /// `port_unexpected_cleared` / `port_missing_cleared`.
    Cleared(&'a Finding, ClearReason),
}

/// A validated policy file.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    _todo: (),
}

impl Policy {
    /// Reads and validates the policy file at `path` for a backend with `caps`; every mistake
    /// at file:line:col.
    pub fn load(path: &Path, caps: Capabilities) -> Result<Policy, ConfigErrors> {
        let _ = (path, caps);
        unimplemented!("issue 22: policy core")
    }

    /// As [`Policy::load`], from text already read.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        caps: Capabilities,
    ) -> Result<Policy, ConfigErrors> {
        let _ = (text, path, caps);
        unimplemented!("issue 22: policy core")
    }

    /// The findings of one host with these open ports (independent of rule order).
    pub fn evaluate<'p>(
        &self,
        host: &Host<'_>,
        ports: impl IntoIterator<Item = PortFacts<'p>>,
    ) -> Findings {
        let _ = (host, ports.into_iter());
        unimplemented!("issue 22: policy core")
    }
}

/// The changes from `old` to `new` findings of one agent, cleared ones first, each in finding
/// order. `still_open(port, process)` says whether a port is open in the snapshot `new` was
/// evaluated on (an unexpected finding that cleared while its port is still open cleared
/// because the policy now allows it).
pub fn changes<'a>(
    old: &'a Findings,
    new: &'a Findings,
    still_open: impl Fn(u16, &str) -> bool,
) -> Vec<Change<'a>> {
    let _ = (old, new, still_open);
    unimplemented!("issue 22: policy core")
}
