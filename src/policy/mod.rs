//! The expected-ports policy (spec "Expected-ports policy", `docs/policy.md`), pure: the policy
//! file → validated rules, and (host facts, open ports, rules) → findings; the findings of two
//! evaluations → the changes to report. No I/O but [`Policy::load`] reading the file; no clock.
//! The engine stores each agent's [`Findings`] beside its inventory and emits the [`Change`]s
//! as events, exactly once, like status changes.
//!
//! The public names here are the contract with the wiring (engine, events, state, metrics,
//! commands). What each part owns:
//! - `file`: the TOML text → checked rules, every problem at file:line:col, sizes bounded (a
//!   folder: the top-level walk, a `[[rule]]`, `hosts`, `allow`/`require` entries, value readers);
//! - `spec`: port specs `PORT[-PORT][/PROCESS-GLOB]`, the table form, globs, bind scopes;
//! - `select`: host selectors (`hosts = { names, uuids, accounts, tags, regions, wan }`);
//! - `evaluate`: rules compiled in rank order with port indexes, and the evaluation;
//! - `changes`: two evaluations → the findings cleared (with their reason) and raised.

mod changes;
mod evaluate;
mod file;
mod select;
mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::Path;

use crate::problems::{ConfigErrors, read_text};

pub use self::evaluate::DEFAULT_RULE;
pub use self::file::{
    MAX_HOST_ENTRIES, MAX_LABEL_CHARS, MAX_LIST_ENTRIES, MAX_POLICY_BYTES, MAX_PORT_ENTRIES,
    MAX_RULE_NAME_CHARS, MAX_RULES,
};
pub use self::spec::{BindScope, MAX_GLOB_CHARS, Proto};

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

    /// The severity named `text` as written in a policy file (lower case), if any.
    pub fn parse(text: &str) -> Option<Severity> {
        match text {
            "info" => Some(Severity::Info),
            "notice" => Some(Severity::Notice),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

/// `default = "allow" | "alert"`: what happens to the ports of a host no rule selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// No finding (the default when the file has no `default`).
    #[default]
    Allow,
    /// Every open port is `Unexpected` under rule [`DEFAULT_RULE`], severity warning.
    Alert,
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
    /// The `cwp` backend's `DescribeAssetPortInfoList`: protocol, bind address and user too.
    pub const CWP: Capabilities = Capabilities {
        proto: true,
        bind: true,
        user: true,
    };

    /// What a deployment reports: a policy is one file for all accounts, so a key only `cwp`
    /// reports is usable when every account is a `cwp` one
    /// (`crate::config::Settings::policy_capabilities` says whether they are).
    pub fn of_deployment(every_account_cwp: bool) -> Capabilities {
        if every_account_cwp {
            Capabilities::CWP
        } else {
            Capabilities::YUNJING
        }
    }

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
    pub bind_ip: Option<crate::api::cwp::BindIp>,
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

impl Findings {
    /// No finding.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many findings.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// The findings in order.
    pub fn iter(&self) -> impl Iterator<Item = &Finding> {
        self.0.iter()
    }
}

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

/// A validated policy file, compiled for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    compiled: evaluate::Compiled,
}

impl Policy {
    /// Reads and validates the policy file at `path` for a backend with `caps`; every mistake
    /// at file:line:col.
    pub fn load(path: &Path, caps: Capabilities) -> Result<Policy, ConfigErrors> {
        let text = read_text(
            path,
            "change `file` in the config's [policy] section; config/policy.example.toml shows \
             the format",
        )?;
        Policy::from_toml_str(&text, path, caps)
    }

    /// As [`Policy::load`], from text already read; `path` is used in messages.
    pub fn from_toml_str(
        text: &str,
        path: &Path,
        caps: Capabilities,
    ) -> Result<Policy, ConfigErrors> {
        file::parse(text, path, caps).map(|compiled| Policy { compiled })
    }

    /// The findings of one host with these open ports (independent of rule order): see
    /// `docs/policy.md` for which rule a finding names.
    pub fn evaluate<'p>(
        &self,
        host: &Host<'_>,
        ports: impl IntoIterator<Item = PortFacts<'p>>,
    ) -> Findings {
        self.compiled.evaluate(host, ports)
    }

    /// Whether rule `rule` selects `host` and has `spec` (a [`Finding::Missing`]'s `spec`) in
    /// its `require`: the `still_required` of [`changes`].
    pub fn requires(&self, host: &Host<'_>, rule: &str, spec: &str) -> bool {
        self.compiled.requires(host, rule, spec)
    }

    /// The first rule, in rank order, that selects `host` and allows `port`, if any: what
    /// `policy test` can show as the reason a port is expected. Slower than [`Policy::evaluate`]
    /// (no index), for explanations and as the tests' reference.
    pub fn allowing_rule(&self, host: &Host<'_>, port: &PortFacts<'_>) -> Option<&str> {
        self.compiled.allowing_rule(host, port)
    }

    /// The file's `default`.
    pub fn default_action(&self) -> DefaultAction {
        self.compiled.default
    }

    /// How many rules the file has.
    pub fn rule_count(&self) -> usize {
        self.compiled.rules.len()
    }
}

/// The changes from `old` to `new` findings of one agent, cleared ones first, then raised ones,
/// each in finding order. Findings are compared by identity: (port, process) for `Unexpected`,
/// (rule, spec) for `Missing`; a finding whose identity is in both (its rule or severity
/// changed by a reload) is no change (see `docs/policy.md`).
///
/// `still_open(port, process)` says whether a port is open in the snapshot `new` was evaluated
/// on: an unexpected finding that cleared while its port is still open cleared because the
/// policy now allows it (`Allowed`), else because it closed (`Closed`).
/// `still_required(rule, spec)` says whether the policy `new` was evaluated under still
/// requires `spec` of `rule` on this host ([`Policy::requires`]): a missing finding that
/// cleared while still required cleared because a matching port opened (`Opened`), else
/// because the policy no longer requires it (`Allowed`).
pub fn changes<'a>(
    old: &'a Findings,
    new: &'a Findings,
    still_open: impl Fn(u16, &str) -> bool,
    still_required: impl Fn(&str, &str) -> bool,
) -> Vec<Change<'a>> {
    changes::changes(old, new, still_open, still_required)
}
