//! The event catalogue: the [`Event`] kinds with their fields, and for each its `event` name,
//! journal MESSAGE_ID, level and readable message, as `docs/events.md` lists them.

use tracing::Level;

use super::{FindingEvent, message_id, printable, who};
use crate::status::Status;

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
    /// A sink could not deliver events (`[[sink]]`, `docs/delivery.md`): retried until
    /// `max_age`, or the sink's outbox was full.
    DeliveryFailed {
        /// The sink's `name`.
        sink: String,
        /// Why (escaped; never a URL, key or secret).
        error_message: String,
        /// How many events were given up.
        events: u64,
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
        /// What the `cwp` backend reports besides (`proto`, `bind_ip`, `user`,
        /// `process_path`, `first_seen`); `None` for yunjing.
        cwp: Option<Box<crate::inventory::PortFacts>>,
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
        /// As for `PortOpened`, as last seen.
        cwp: Option<Box<crate::inventory::PortFacts>>,
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
    /// This process leads the deployment's etcd election (`[ha]`, `docs/ha.md`): it restores
    /// the replicated state and polls.
    LeaderElected {
        /// This process's name in the election (`[ha] name`).
        name: String,
        /// The deployment's election prefix (`[ha] election`).
        election: String,
    },
    /// This process no longer leads (its lease expired or its key is gone): it sent nothing
    /// since its fence closed, and exits (75) to come back as a standby.
    LeadershipLost {
        /// This process's name in the election.
        name: String,
        /// Who leads now, when known.
        holder: Option<String>,
        /// What happened.
        reason: String,
    },
    /// A finding of the expected-ports policy was raised or cleared: `port_unexpected`,
    /// `port_unexpected_cleared`, `port_missing`, `port_missing_cleared` (boxed: the other
    /// events stay small).
    Finding(Box<FindingEvent>),
}

impl Event {
    /// The `event` field value.
    pub fn name(&self) -> &'static str {
        match self {
            Event::StatusChanged { .. } => "status_changed",
            Event::PollFailed { .. } => "poll_failed",
            Event::PollRecovered { .. } => "poll_recovered",
            Event::RateLimited { .. } => "rate_limited",
            Event::DeliveryFailed { .. } => "delivery_failed",
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
            Event::LeaderElected { .. } => "leader_elected",
            Event::LeadershipLost { .. } => "leadership_lost",
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
            Event::DeliveryFailed { .. } => DELIVERY_FAILED,
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
            Event::LeaderElected { .. } => LEADER_ELECTED,
            Event::LeadershipLost { .. } => LEADERSHIP_LOST,
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
            // The `cwp` backend's offline agent is reported like yunjing's `AGENT_OFFLINE`.
            Event::StatusChanged { to_status, .. } if to_status.as_str() == "OFFLINE" => {
                Level::WARN
            }
            Event::PollFailed { .. }
            | Event::RateLimited { .. }
            | Event::ClockSkew { .. }
            | Event::StateDamaged { .. }
            | Event::InventoryFailed { .. }
            | Event::DiscoveryFailed { .. }
            | Event::LeadershipLost { .. } => Level::WARN,
            Event::CredentialsFailed { .. }
            | Event::DeliveryFailed { .. }
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
            Event::DeliveryFailed {
                sink,
                error_message,
                events,
            } => format!(
                "sink {}: {events} event(s) not delivered: {}",
                super::printable(sink),
                super::printable(error_message)
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
                cwp,
                ..
            } => format!(
                "{}: port {port}{} {} by {process_name}",
                who(agent_name, uuid),
                where_bound(cwp.as_deref()),
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
                cwp,
                ..
            } => format!(
                "{}: port {port}{} closed (was {process_name})",
                who(agent_name, uuid),
                where_bound(cwp.as_deref())
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
            Event::LeaderElected { name, election } => {
                format!(
                    "{name} leads {election}: polling from the state its predecessor replicated"
                )
            }
            Event::LeadershipLost {
                name,
                holder,
                reason,
            } => format!(
                "{name} no longer leads ({reason}; leader now: {}): it sent nothing since its \
                 fence closed and exits to come back as a standby",
                holder.as_deref().unwrap_or("unknown")
            ),
            Event::Finding(f) => f.sentence(),
        }
    }
}

/// `/tcp on 127.0.0.1` for a `cwp` port's message (its protocol and bind address are its
/// identity); nothing for yunjing's.
fn where_bound(cwp: Option<&crate::inventory::PortFacts>) -> String {
    match cwp {
        Some(f) if f.proto.as_str().is_empty() => format!(" on {}", f.bind_ip),
        Some(f) => format!("/{} on {}", printable(f.proto.as_str()), f.bind_ip),
        None => String::new(),
    }
}
