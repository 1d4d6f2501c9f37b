//! The events consumers act on: their names, fields, levels, journal MESSAGE_IDs and readable
//! messages. `docs/events.md` is the contract; this module is its only implementation.
//!
//! The engine produces [`Event`] values and hands them to an [`EventSink`]. The daemon's sink
//! ([`TracingSink`]) turns each into one `tracing` event with the event's fields, which
//! [`crate::logging`] renders as text, JSON lines or journal entries. Tests use
//! [`CollectingSink`] and see exactly what would have been logged.

use std::sync::Mutex;

use tracing::Level;

use crate::policy::{ClearReason, Severity};
use crate::status::Status;

/// Target of every event, so filters can keep events and drop chatter.
pub const TARGET: &str = "cwp_portwatch::events";

/// Journal MESSAGE_IDs, one per event kind. Published ids never change.
pub mod message_id {
    /// `status_changed`
    pub const STATUS_CHANGED: &str = "96e7064e0a524ac7b1e20a88b3782012";
    /// `poll_failed`
    pub const POLL_FAILED: &str = "3d90fc203a8b4463af8d985fb552fa47";
    /// `poll_recovered`
    pub const POLL_RECOVERED: &str = "b8fa4f74ca8c4a029afb8aa038dafb78";
    /// `rate_limited`
    pub const RATE_LIMITED: &str = "c23c7cc9c554484ba44f909f582ec033";
    /// `clock_skew`
    pub const CLOCK_SKEW: &str = "7250cf90ebe840e6a345d08cf9c41e24";
    /// `credentials_failed`
    pub const CREDENTIALS_FAILED: &str = "aa25db82d8024311b67cd8df7eaf17fd";
    /// `watchlist_loaded`
    pub const WATCHLIST_LOADED: &str = "9b56ec15cffe4d65b213eeeff4932ec1";
    /// `config_rejected`
    pub const CONFIG_REJECTED: &str = "544f05c9e40446b9ae0e8f408089ddbd";
    /// `daemon_started`
    pub const DAEMON_STARTED: &str = "f07a7c86a1314a8a8b2d7d14c61f0fef";
    /// `daemon_stopping`
    pub const DAEMON_STOPPING: &str = "0168270a5f6d4faabcfa0fbf890012f9";
    /// `state_damaged`
    pub const STATE_DAMAGED: &str = "77ea5f58a2204885b827350524d19e4b";
    /// `port_opened`
    pub const PORT_OPENED: &str = "52d5b12fdafb46bca6c34d819ee7029d";
    /// `port_closed`
    pub const PORT_CLOSED: &str = "32817450a9724ac2820056b64974769c";
    /// `inventory_baseline`
    pub const INVENTORY_BASELINE: &str = "433725c5cec84f6b99cfeaba5a650de6";
    /// `inventory_failed`
    pub const INVENTORY_FAILED: &str = "a8e150bc9175427caeee3e1182cfb15e";
    /// `scan_requested`
    pub const SCAN_REQUESTED: &str = "96cd3215c62c42c7b0d7562f3d57830f";
    /// `discovery_failed`
    pub const DISCOVERY_FAILED: &str = "72f52829f5be44069c00fcb8feec068a";
    /// `account_failed`
    pub const ACCOUNT_FAILED: &str = "9423784fbabd412cbf01eaa061936103";
    /// `port_unexpected`
    pub const PORT_UNEXPECTED: &str = "817d335cd35440f1b6e46af96b0e1ef0";
    /// `port_unexpected_cleared`
    pub const PORT_UNEXPECTED_CLEARED: &str = "e85c3c5a2bcd4229af51514039bfa483";
    /// `port_missing`
    pub const PORT_MISSING: &str = "49335b41811548f0b832d91b7bd9a44e";
    /// `port_missing_cleared`
    pub const PORT_MISSING_CLEARED: &str = "a104dc5489654042801a736866adbf43";
    /// Every id, for the catalog test.
    pub const ALL: [&str; 22] = [
        STATUS_CHANGED,
        POLL_FAILED,
        POLL_RECOVERED,
        RATE_LIMITED,
        CLOCK_SKEW,
        CREDENTIALS_FAILED,
        WATCHLIST_LOADED,
        CONFIG_REJECTED,
        DAEMON_STARTED,
        DAEMON_STOPPING,
        STATE_DAMAGED,
        PORT_OPENED,
        PORT_CLOSED,
        INVENTORY_BASELINE,
        INVENTORY_FAILED,
        SCAN_REQUESTED,
        DISCOVERY_FAILED,
        ACCOUNT_FAILED,
        PORT_UNEXPECTED,
        PORT_UNEXPECTED_CLEARED,
        PORT_MISSING,
        PORT_MISSING_CLEARED,
    ];
}

/// What changed the watched list (`watchlist_loaded`'s `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchlistSource {
    /// The watchlist file, at start or on SIGHUP.
    Watchlist,
    /// Agent discovery (`DescribeMachines`).
    Discovery,
}

impl WatchlistSource {
    /// The field value: `watchlist` or `discovery`.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchlistSource::Watchlist => "watchlist",
            WatchlistSource::Discovery => "discovery",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// An agent's status changed (or was first seen).
    StatusChanged {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist (empty when none).
        agent_name: String,
        /// Previous status, `UNKNOWN` for a first answer.
        from_status: Status,
        /// New status.
        to_status: Status,
        /// RequestId of the answer.
        request_id: String,
        /// The API error code when the status came from an error answer.
        error_code: Option<String>,
    },
    /// Polls of an agent fail (at most one event per agent per minute).
    PollFailed {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// Stable error code.
        error_code: String,
        /// What happened.
        error_message: String,
        /// RequestId when the answer had one.
        request_id: Option<String>,
        /// Failures in a row so far.
        consecutive_failures: u32,
    },
    /// Polls of an agent work again.
    PollRecovered {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// How many polls had failed.
        failed_polls: u32,
    },
    /// The API throttled us; the send rate was lowered.
    RateLimited {
        /// The throttling code.
        error_code: String,
        /// The rate now in force.
        requests_per_second: u32,
    },
    /// The local clock differs from the API's.
    ClockSkew {
        /// Server minus local, seconds.
        skew_seconds: i64,
    },
    /// The API refused the credentials.
    CredentialsFailed {
        /// The API's code.
        error_code: String,
        /// The API's message.
        error_message: String,
        /// Where the credentials came from.
        source: String,
    },
    /// An account could not start (its credentials: STS, the metadata service, a key file);
    /// it is tried again in `retry_in_seconds`, and the other accounts run meanwhile.
    AccountFailed {
        /// `default` or the `[[account]]` name (present with one account too).
        account: String,
        /// The stable code of the failure (`AssumeRoleError.Unavailable`, ...).
        error_code: String,
        /// What failed, never a secret nor a credentials endpoint's answer.
        error_message: String,
        /// Attempts so far, this one included.
        attempt: u32,
        /// When the next attempt is.
        retry_in_seconds: u64,
    },
    /// The watchlist was (re)loaded.
    WatchlistLoaded {
        /// Agents watched now.
        agents: usize,
        /// Agents new in this load.
        added: usize,
        /// Agents dropped by this load.
        removed: usize,
        /// What changed the list: the watchlist file, or discovery.
        source: WatchlistSource,
        /// Machines discovery skipped because the API gave them no `Uuid` (0 for the file).
        skipped: usize,
    },
    /// Discovering agents (`DescribeMachines`) failed; the last good list stays.
    DiscoveryFailed {
        /// Stable error code (the API's, `ClientError.*` or `Discovery.*`).
        error_code: String,
        /// What happened.
        error_message: String,
        /// Seconds until the next try.
        retry_in_seconds: u64,
    },
    /// A reload was refused; the running config stays.
    ConfigRejected {
        /// Every problem found.
        error_message: String,
    },
    /// The state file could not be read; it was kept under another name (never overwritten)
    /// and the daemon starts fresh.
    StateDamaged {
        /// The state file.
        path: String,
        /// What was wrong.
        error_message: String,
        /// Where the unreadable file is now (`state.json.damaged-<unix time>`), so the operator
        /// can inspect or restore it.
        moved_to: String,
    },
    /// The daemon started polling.
    DaemonStarted {
        /// Version.
        version: String,
        /// Agents watched.
        agents: usize,
    },
    /// The daemon is stopping.
    DaemonStopping {
        /// Version.
        version: String,
        /// Agents watched.
        agents: usize,
    },
    /// A port is open that the agent's last snapshot did not have (or, with
    /// `baseline = "ports"`, one of its first snapshot's ports).
    PortOpened {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// The port.
        port: u16,
        /// `ProcessName` as the API sent it.
        process_name: String,
        /// `Pid`.
        pid: u32,
        /// `MachineIp`.
        machine_ip: String,
        /// `MachineName`.
        machine_name: String,
        /// RequestId of the page that completed the snapshot.
        request_id: String,
        /// Part of the agent's first snapshot (`baseline = "ports"`), not a change.
        baseline: bool,
    },
    /// A port of the agent's last snapshot is no longer open.
    PortClosed {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// The port.
        port: u16,
        /// `ProcessName` as the API sent it.
        process_name: String,
        /// `Pid` as last seen.
        pid: u32,
        /// `MachineIp`.
        machine_ip: String,
        /// `MachineName`.
        machine_name: String,
        /// RequestId of the page that completed the snapshot.
        request_id: String,
    },
    /// An agent's first complete snapshot (`baseline = "summary"`).
    InventoryBaseline {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// How many ports are open.
        ports: usize,
        /// RequestId of the page that completed the snapshot.
        request_id: String,
    },
    /// No complete snapshot could be fetched; nothing was compared.
    InventoryFailed {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// Stable error code.
        error_code: String,
        /// What happened.
        error_message: String,
    },
    /// `CreateOpenPortTask` was sent and accepted for an agent.
    ScanRequested {
        /// Agent Uuid.
        uuid: String,
        /// Name from the watchlist.
        agent_name: String,
        /// `rescan` (the last completed task was older than `rescan_interval`) or `missing`
        /// (the agent had no task: `create_missing`).
        reason: String,
        /// RequestId of the answer.
        request_id: String,
    },
    /// A finding of the expected-ports policy was raised or cleared: `port_unexpected`,
    /// `port_unexpected_cleared`, `port_missing`, `port_missing_cleared` (boxed: the other
    /// events stay small).
    Finding(Box<FindingEvent>),
}

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

    fn name(&self) -> &'static str {
        match self.kind {
            FindingKind::Unexpected => "port_unexpected",
            FindingKind::UnexpectedCleared(_) => "port_unexpected_cleared",
            FindingKind::Missing => "port_missing",
            FindingKind::MissingCleared(_) => "port_missing_cleared",
        }
    }

    fn message_id(&self) -> &'static str {
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
    fn level(&self) -> Level {
        if self.severity == Severity::Critical {
            Level::ERROR
        } else {
            Level::WARN
        }
    }

    fn sentence(&self) -> String {
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

/// `text` with every unsafe character escaped ([`crate::escape::escape`]): what any text from
/// outside (an API answer, a file, a path) becomes before it reaches an event message.
pub fn printable(text: &str) -> String {
    crate::escape::escape(text).into_owned()
}

/// `web-01 (6b6cd843…)`, or just the short Uuid without a name.
fn who(name: &str, uuid: &str) -> String {
    let short: String = uuid.chars().take(8).collect();
    if name.is_empty() {
        format!("{short}…")
    } else {
        format!("{name} ({short}…)")
    }
}

impl Event {
    /// The `event` field value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::StatusChanged { .. } => "status_changed",
            Event::PollFailed { .. } => "poll_failed",
            Event::PollRecovered { .. } => "poll_recovered",
            Event::RateLimited { .. } => "rate_limited",
            Event::ClockSkew { .. } => "clock_skew",
            Event::CredentialsFailed { .. } => "credentials_failed",
            Event::AccountFailed { .. } => "account_failed",
            Event::WatchlistLoaded { .. } => "watchlist_loaded",
            Event::DiscoveryFailed { .. } => "discovery_failed",
            Event::ConfigRejected { .. } => "config_rejected",
            Event::StateDamaged { .. } => "state_damaged",
            Event::DaemonStarted { .. } => "daemon_started",
            Event::DaemonStopping { .. } => "daemon_stopping",
            Event::PortOpened { .. } => "port_opened",
            Event::PortClosed { .. } => "port_closed",
            Event::InventoryBaseline { .. } => "inventory_baseline",
            Event::InventoryFailed { .. } => "inventory_failed",
            Event::ScanRequested { .. } => "scan_requested",
            Event::Finding(f) => f.name(),
        }
    }

    /// The journal MESSAGE_ID of this kind.
    pub fn message_id(&self) -> &'static str {
        use message_id::*;
        match self {
            Event::StatusChanged { .. } => STATUS_CHANGED,
            Event::PollFailed { .. } => POLL_FAILED,
            Event::PollRecovered { .. } => POLL_RECOVERED,
            Event::RateLimited { .. } => RATE_LIMITED,
            Event::ClockSkew { .. } => CLOCK_SKEW,
            Event::CredentialsFailed { .. } => CREDENTIALS_FAILED,
            Event::AccountFailed { .. } => ACCOUNT_FAILED,
            Event::WatchlistLoaded { .. } => WATCHLIST_LOADED,
            Event::DiscoveryFailed { .. } => DISCOVERY_FAILED,
            Event::ConfigRejected { .. } => CONFIG_REJECTED,
            Event::StateDamaged { .. } => STATE_DAMAGED,
            Event::DaemonStarted { .. } => DAEMON_STARTED,
            Event::DaemonStopping { .. } => DAEMON_STOPPING,
            Event::PortOpened { .. } => PORT_OPENED,
            Event::PortClosed { .. } => PORT_CLOSED,
            Event::InventoryBaseline { .. } => INVENTORY_BASELINE,
            Event::InventoryFailed { .. } => INVENTORY_FAILED,
            Event::ScanRequested { .. } => SCAN_REQUESTED,
            Event::Finding(f) => f.message_id(),
        }
    }

    /// The level: `FAILED` and `AGENT_OFFLINE` transitions warn, failures warn or error.
    pub fn level(&self) -> Level {
        match self {
            Event::StatusChanged {
                to_status: Status::Failed | Status::AgentOffline,
                ..
            } => Level::WARN,
            Event::PollFailed { .. }
            | Event::RateLimited { .. }
            | Event::ClockSkew { .. }
            | Event::StateDamaged { .. }
            | Event::InventoryFailed { .. }
            | Event::DiscoveryFailed { .. } => Level::WARN,
            Event::CredentialsFailed { .. }
            | Event::ConfigRejected { .. }
            | Event::AccountFailed { .. } => Level::ERROR,
            Event::Finding(f) => f.level(),
            _ => Level::INFO,
        }
    }

    /// A sentence for people (`MESSAGE` in the journal), on one line and with every control
    /// character escaped: its parts come from API answers, files and the environment, and an
    /// escape sequence or a line break in them must neither drive a terminal nor forge a log
    /// line. The fields themselves keep the values as they were.
    pub fn message(&self) -> String {
        printable(&self.sentence())
    }

    /// [`Event::message`] before escaping.
    fn sentence(&self) -> String {
        match self {
            Event::StatusChanged {
                uuid,
                agent_name,
                from_status,
                to_status,
                ..
            } => format!("{} {from_status} → {to_status}", who(agent_name, uuid)),
            Event::PollFailed {
                uuid,
                agent_name,
                error_code,
                consecutive_failures,
                ..
            } => format!(
                "{}: poll failed with {error_code} ({consecutive_failures} in a row)",
                who(agent_name, uuid)
            ),
            Event::PollRecovered {
                uuid,
                agent_name,
                failed_polls,
            } => format!(
                "{}: polls work again after {failed_polls} failed",
                who(agent_name, uuid)
            ),
            Event::RateLimited {
                error_code,
                requests_per_second,
            } => format!(
                "throttled by the API ({error_code}); sending {requests_per_second} requests/s now"
            ),
            Event::ClockSkew { skew_seconds } => {
                format!(
                    "the API's clock differs from ours by {skew_seconds} s; signing with the API's time"
                )
            }
            Event::CredentialsFailed {
                error_code, source, ..
            } => format!("the API refused the credentials from {source} ({error_code})"),
            Event::AccountFailed {
                account,
                error_code,
                error_message,
                attempt,
                retry_in_seconds,
            } => format!(
                "account {account} could not start ({error_code}: {error_message}); attempt \
                 {attempt}, next try in {retry_in_seconds} s; the other accounts run"
            ),
            Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Discovery,
                skipped,
            } => format!(
                "discovery: watching {agents} agents ({added} added, {removed} removed, \
                 {skipped} machines without a Uuid skipped)"
            ),
            Event::DiscoveryFailed {
                error_code,
                error_message,
                retry_in_seconds,
            } => format!(
                "discovering agents failed ({error_code}: {error_message}); the last list \
                 stays, next try in {retry_in_seconds} s"
            ),
            Event::WatchlistLoaded { agents: 0, .. } => {
                "the watchlist is empty: the daemon idles until a reload (SIGHUP) or \
                 [discovery] adds agents"
                    .to_string()
            }
            Event::WatchlistLoaded {
                agents,
                added,
                removed,
                ..
            } => format!("watching {agents} agents ({added} added, {removed} removed)"),
            Event::ConfigRejected { error_message } => {
                let problems: Vec<&str> = error_message.lines().collect();
                format!(
                    "reload refused, the running configuration stays: {}",
                    problems.join("; ")
                )
            }
            Event::StateDamaged {
                path,
                error_message,
                moved_to,
            } => format!(
                "state file {path} unreadable ({error_message}); kept as {moved_to}, starting fresh"
            ),
            Event::DaemonStarted { version, agents } => {
                format!("cwp-portwatch {version} started, watching {agents} agents")
            }
            Event::DaemonStopping { version, agents } => {
                format!("cwp-portwatch {version} stopping ({agents} agents)")
            }
            Event::PortOpened {
                uuid,
                agent_name,
                port,
                process_name,
                baseline,
                ..
            } => format!(
                "{}: port {port} {} by {process_name}",
                who(agent_name, uuid),
                if *baseline {
                    "open (baseline)"
                } else {
                    "opened"
                }
            ),
            Event::PortClosed {
                uuid,
                agent_name,
                port,
                process_name,
                ..
            } => format!(
                "{}: port {port} closed (was {process_name})",
                who(agent_name, uuid)
            ),
            Event::InventoryBaseline {
                uuid,
                agent_name,
                ports,
                ..
            } => format!(
                "{}: first port inventory, {ports} ports open",
                who(agent_name, uuid)
            ),
            Event::InventoryFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
            } => format!(
                "{}: no complete port inventory ({error_code}: {error_message}); nothing compared",
                who(agent_name, uuid)
            ),
            Event::ScanRequested {
                uuid,
                agent_name,
                reason,
                ..
            } => format!("{}: port scan requested ({reason})", who(agent_name, uuid)),
            Event::Finding(f) => f.sentence(),
        }
    }
}

/// Where the engine's events go.
pub trait EventSink: Send + Sync {
    /// Takes one event.
    fn emit(&self, event: &Event);
}

/// Keeps every event, for tests and the demo's summary.
#[derive(Debug, Default)]
pub struct CollectingSink {
    events: Mutex<Vec<Event>>,
}

impl CollectingSink {
    /// Everything emitted so far.
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl EventSink for CollectingSink {
    fn emit(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(event.clone());
    }
}

/// Sends to several sinks (the demo logs and collects).
pub struct Tee<A, B>(pub A, pub B);

impl<A: EventSink, B: EventSink> EventSink for Tee<A, B> {
    fn emit(&self, event: &Event) {
        self.0.emit(event);
        self.1.emit(event);
    }
}

impl<T: EventSink + ?Sized> EventSink for std::sync::Arc<T> {
    fn emit(&self, event: &Event) {
        (**self).emit(event);
    }
}

/// Emits at a level chosen at run time (tracing's macros want a constant level).
/// Every event gets `account` while an [`crate::account::AccountSink`] emits it
/// (several accounts); a `None` field is not written at all.
macro_rules! at_level {
    ($level:expr, $($rest:tt)+) => {
        match $level {
            Level::ERROR => tracing::event!(target: TARGET, Level::ERROR, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::WARN => tracing::event!(target: TARGET, Level::WARN, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::INFO => tracing::event!(target: TARGET, Level::INFO, account = crate::events::current_account().as_deref(), $($rest)+),
            Level::DEBUG => tracing::event!(target: TARGET, Level::DEBUG, account = crate::events::current_account().as_deref(), $($rest)+),
            _ => tracing::event!(target: TARGET, Level::TRACE, account = crate::events::current_account().as_deref(), $($rest)+),
        }
    };
}

/// The daemon's sink: one `tracing` event per [`Event`], fields named as in `docs/events.md`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TracingSink;

impl EventSink for TracingSink {
    fn emit(&self, event: &Event) {
        let level = event.level();
        let name = event.name();
        let mid = event.message_id();
        let msg = event.message();
        match event {
            Event::StatusChanged {
                uuid,
                agent_name,
                from_status,
                to_status,
                request_id,
                error_code,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                from_status = from_status.as_str(),
                to_status = to_status.as_str(),
                request_id = request_id.as_str(),
                error_code = error_code.as_deref(),
                message_id = mid,
                "{msg}"
            ),
            Event::PollFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
                request_id,
                consecutive_failures,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                request_id = request_id.as_deref(),
                consecutive_failures = *consecutive_failures,
                message_id = mid,
                "{msg}"
            ),
            Event::PollRecovered {
                uuid,
                agent_name,
                failed_polls,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                failed_polls = *failed_polls,
                message_id = mid,
                "{msg}"
            ),
            Event::RateLimited {
                error_code,
                requests_per_second,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                requests_per_second = *requests_per_second,
                message_id = mid,
                "{msg}"
            ),
            Event::ClockSkew { skew_seconds } => at_level!(
                level,
                event = name,
                skew_seconds = *skew_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::CredentialsFailed {
                error_code,
                error_message,
                source,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                source = source.as_str(),
                message_id = mid,
                "{msg}"
            ),
            // Not through `at_level!`: the event names its account itself (also with one
            // account), so the mark of an `AccountSink` would be a second `account` field.
            Event::AccountFailed {
                account,
                error_code,
                error_message,
                attempt,
                retry_in_seconds,
            } => tracing::event!(
                target: TARGET,
                Level::ERROR,
                account = account.as_str(),
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                attempt = *attempt,
                retry_in_seconds = *retry_in_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source,
                skipped,
            } => at_level!(
                level,
                event = name,
                agents = *agents as u64,
                added = *added as u64,
                removed = *removed as u64,
                source = source.as_str(),
                skipped = *skipped as u64,
                message_id = mid,
                "{msg}"
            ),
            Event::DiscoveryFailed {
                error_code,
                error_message,
                retry_in_seconds,
            } => at_level!(
                level,
                event = name,
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                retry_in_seconds = *retry_in_seconds,
                message_id = mid,
                "{msg}"
            ),
            Event::ConfigRejected { error_message } => at_level!(
                level,
                event = name,
                error_message = error_message.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::StateDamaged {
                path,
                error_message,
                moved_to,
            } => at_level!(
                level,
                event = name,
                path = path.as_str(),
                error_message = error_message.as_str(),
                moved_to = moved_to.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::DaemonStarted { version, agents }
            | Event::DaemonStopping { version, agents } => {
                at_level!(
                    level,
                    event = name,
                    version = version.as_str(),
                    agents = *agents as u64,
                    message_id = mid,
                    "{msg}"
                )
            }
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
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                port = u64::from(*port),
                process_name = process_name.as_str(),
                pid = u64::from(*pid),
                machine_ip = machine_ip.as_str(),
                machine_name = machine_name.as_str(),
                request_id = request_id.as_str(),
                baseline = baseline.then_some(true),
                message_id = mid,
                "{msg}"
            ),
            Event::PortClosed {
                uuid,
                agent_name,
                port,
                process_name,
                pid,
                machine_ip,
                machine_name,
                request_id,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                port = u64::from(*port),
                process_name = process_name.as_str(),
                pid = u64::from(*pid),
                machine_ip = machine_ip.as_str(),
                machine_name = machine_name.as_str(),
                request_id = request_id.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::InventoryBaseline {
                uuid,
                agent_name,
                ports,
                request_id,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                ports = *ports as u64,
                request_id = request_id.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::InventoryFailed {
                uuid,
                agent_name,
                error_code,
                error_message,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                error_code = error_code.as_str(),
                error_message = error_message.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::ScanRequested {
                uuid,
                agent_name,
                reason,
                request_id,
            } => at_level!(
                level,
                event = name,
                uuid = uuid.as_str(),
                agent_name = agent_name.as_str(),
                reason = reason.as_str(),
                request_id = request_id.as_str(),
                message_id = mid,
                "{msg}"
            ),
            Event::Finding(f) => at_level!(
                level,
                event = name,
                uuid = f.uuid.as_str(),
                agent_name = f.agent_name.as_str(),
                port = u64::from(f.port),
                process_name = f.process_name.as_str(),
                pid = f.pid.map(u64::from),
                machine_ip = f.machine_ip.as_str(),
                machine_name = f.machine_name.as_str(),
                request_id = f.request_id.as_deref(),
                rule = f.rule.as_str(),
                severity = f.severity.as_str(),
                reason = f.reason(),
                spec = f.spec.as_deref(),
                message_id = mid,
                "{msg}"
            ),
        }
    }
}

thread_local! {
    /// The account of the event being emitted on this thread, if any.
    static CURRENT_ACCOUNT: std::cell::RefCell<Option<std::sync::Arc<str>>> =
        const { std::cell::RefCell::new(None) };
}

/// The account of the event now being emitted on this thread (`None` with one account).
pub fn current_account() -> Option<std::sync::Arc<str>> {
    CURRENT_ACCOUNT.with(|c| c.borrow().clone())
}

/// Runs `emit` with `account` marked as the account of the events it emits (a thread-local:
/// `emit` is synchronous), restoring the previous mark afterwards, even if `emit` panics.
pub fn emitted_as(account: &std::sync::Arc<str>, emit: impl FnOnce()) {
    /// Puts the previous mark back on drop.
    struct Restore(Option<std::sync::Arc<str>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CURRENT_ACCOUNT.with(|c| *c.borrow_mut() = previous);
        }
    }
    let previous = CURRENT_ACCOUNT.with(|c| c.borrow_mut().replace(account.clone()));
    let _restore = Restore(previous);
    emit();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(to: &str) -> Event {
        Event::StatusChanged {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: "web-01".into(),
            from_status: "COLLECTING".into(),
            to_status: to.into(),
            request_id: "r".into(),
            error_code: None,
        }
    }

    #[test]
    fn levels_follow_the_spec() {
        assert_eq!(changed("COMPLETE").level(), Level::INFO);
        assert_eq!(changed("FAILED").level(), Level::WARN);
        assert_eq!(changed("AGENT_OFFLINE").level(), Level::WARN);
        assert_eq!(
            Event::ConfigRejected {
                error_message: String::new()
            }
            .level(),
            Level::ERROR
        );
    }

    #[test]
    fn message_is_readable() {
        assert_eq!(
            changed("COMPLETE").message(),
            "web-01 (6b6cd843…) COLLECTING → COMPLETE"
        );
    }

    #[test]
    fn messages_hold_no_control_characters_whatever_the_api_or_a_file_said() {
        let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nforged line";
        let events = [
            changed(hostile),
            Event::PollFailed {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: "web\u{1b}[31m".into(),
                error_code: hostile.into(),
                error_message: hostile.into(),
                request_id: None,
                consecutive_failures: 1,
            },
            Event::RateLimited {
                error_code: hostile.into(),
                requests_per_second: 10,
            },
            Event::CredentialsFailed {
                error_code: hostile.into(),
                error_message: hostile.into(),
                source: hostile.into(),
            },
            Event::ConfigRejected {
                error_message: format!("config.toml:3:1: bad\nconfig.toml:4:1: {hostile}"),
            },
            Event::StateDamaged {
                path: hostile.into(),
                error_message: hostile.into(),
                moved_to: hostile.into(),
            },
            Event::PortOpened {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: hostile.into(),
                port: 22,
                process_name: hostile.into(),
                pid: 1,
                machine_ip: hostile.into(),
                machine_name: hostile.into(),
                request_id: "r".into(),
                baseline: false,
            },
            Event::PortClosed {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: hostile.into(),
                port: 22,
                process_name: hostile.into(),
                pid: 1,
                machine_ip: hostile.into(),
                machine_name: hostile.into(),
                request_id: "r".into(),
            },
            Event::InventoryFailed {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: hostile.into(),
                error_code: hostile.into(),
                error_message: hostile.into(),
            },
            Event::ScanRequested {
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: hostile.into(),
                reason: hostile.into(),
                request_id: "r".into(),
            },
        ];
        for event in &events {
            let message = event.message();
            assert!(!message.chars().any(char::is_control), "{message:?}");
            assert!(message.contains("\\u{1b}[2J"), "{message:?}");
        }
        let rejected = events[4].message();
        assert!(rejected.contains("bad; config.toml:4:1"), "{rejected:?}");
    }

    #[test]
    fn state_damaged_says_where_the_file_went() {
        let e = Event::StateDamaged {
            path: "/var/lib/cwp-portwatch/state.json".into(),
            error_message: "EOF while parsing".into(),
            moved_to: "/var/lib/cwp-portwatch/state.json.damaged-1700000000".into(),
        };
        assert_eq!(e.level(), Level::WARN);
        assert!(
            e.message()
                .contains("kept as /var/lib/cwp-portwatch/state.json.damaged-1700000000"),
            "{}",
            e.message()
        );
    }

    #[test]
    fn account_failed_says_which_account_why_and_when_it_is_tried_again() {
        let e = Event::AccountFailed {
            account: "second".into(),
            error_code: "AssumeRoleError.Unavailable".into(),
            error_message: "STS unavailable\u{1b}[2J".into(),
            attempt: 2,
            retry_in_seconds: 4,
        };
        assert_eq!(
            (e.name(), e.level(), e.message_id()),
            ("account_failed", Level::ERROR, message_id::ACCOUNT_FAILED)
        );
        assert_eq!(
            e.message(),
            "account second could not start (AssumeRoleError.Unavailable: STS \
             unavailable\\u{1b}[2J); attempt 2, next try in 4 s; the other accounts run"
        );
    }

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut ids = message_id::ALL.to_vec();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), message_id::ALL.len());
        assert!(
            ids.iter()
                .all(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        );
    }

    #[test]
    fn port_events_read_as_users_asked() {
        let e = Event::PortOpened {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: "db-01".into(),
            port: 3306,
            process_name: "mysqld".into(),
            pid: 1400,
            machine_ip: "10.0.0.5".into(),
            machine_name: "db".into(),
            request_id: "r".into(),
            baseline: false,
        };
        assert_eq!(e.message(), "db-01 (6b6cd843…): port 3306 opened by mysqld");
        assert_eq!((e.name(), e.level()), ("port_opened", Level::INFO));
        let failed = Event::InventoryFailed {
            uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            agent_name: String::new(),
            error_code: "InventoryError.Incomplete".into(),
            error_message: "m".into(),
        };
        assert_eq!(failed.level(), Level::WARN);
    }

    #[test]
    fn finding_events_read_as_users_asked_with_their_levels_and_ids() {
        let f = |kind, severity| {
            Event::Finding(Box::new(FindingEvent {
                kind,
                uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                agent_name: "web-01".into(),
                port: 6379,
                process_name: "redis\u{1b}[2J".into(),
                pid: Some(4242),
                machine_ip: "10.0.0.5".into(),
                machine_name: "web".into(),
                request_id: None,
                rule: "web tier".into(),
                severity,
                spec: None,
            }))
        };
        let raised = f(FindingKind::Unexpected, Severity::Warning);
        assert_eq!(
            raised.message(),
            "web-01 (6b6cd843…): port 6379 open by redis\\u{1b}[2J is unexpected (rule web tier, warning)"
        );
        assert_eq!(
            (raised.name(), raised.level(), raised.message_id()),
            ("port_unexpected", Level::WARN, message_id::PORT_UNEXPECTED)
        );
        let cleared = f(
            FindingKind::UnexpectedCleared(ClearReason::Allowed),
            Severity::Critical,
        );
        assert_eq!(
            (cleared.name(), cleared.level(), cleared.message_id()),
            (
                "port_unexpected_cleared",
                Level::ERROR,
                message_id::PORT_UNEXPECTED_CLEARED
            )
        );
        assert!(cleared.message().contains("no longer unexpected: allowed"));
        let Event::Finding(mut missing) = f(FindingKind::Missing, Severity::Critical) else {
            unreachable!()
        };
        missing.spec = Some("443/nginx".into());
        let missing = Event::Finding(missing);
        assert_eq!(
            missing.message(),
            "web-01 (6b6cd843…): required port 443/nginx is not open (rule web tier, critical)"
        );
        assert_eq!(
            (missing.name(), missing.level(), missing.message_id()),
            ("port_missing", Level::ERROR, message_id::PORT_MISSING)
        );
        let back = f(
            FindingKind::MissingCleared(ClearReason::Opened),
            Severity::Info,
        );
        assert_eq!(
            (back.name(), back.level(), back.message_id()),
            (
                "port_missing_cleared",
                Level::WARN,
                message_id::PORT_MISSING_CLEARED
            )
        );
        let Event::Finding(back) = back else {
            unreachable!()
        };
        assert_eq!(back.reason(), Some("opened"));
    }
}
