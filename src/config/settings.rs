//! The validated configuration that [`super::Settings::load`] yields: every value checked,
//! every default filled in. The rest of the daemon reads only these types, never the raw file.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;

use crate::credentials::CredentialSettings;
use crate::discovery::DiscoverySettings;

/// The validated configuration: every value checked, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The config file these settings were read from (as given, for messages and SIGHUP reloads).
    pub config_path: PathBuf,
    /// The watchlist file; a relative `watchlist` is resolved against the config file's folder.
    /// `None` only when `[discovery]` is enabled and the file names no watchlist.
    pub watchlist_path: Option<PathBuf>,
    /// Where the state file lives. Default: `$STATE_DIRECTORY` (its first entry when
    /// colon-separated), else `$XDG_STATE_HOME/cwp-portwatch` or `~/.local/state/cwp-portwatch`,
    /// else [`super::FALLBACK_STATE_DIR`].
    pub state_dir: PathBuf,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[credentials]`, or [`CredentialSettings::Chain`] when the section is absent.
    pub credentials: CredentialSettings,
    /// `[poll]`.
    pub poll: PollSettings,
    /// `[log]`.
    pub log: LogSettings,
    /// `[metrics]`.
    pub metrics: MetricsSettings,
    /// `[discovery]` (the `default` account's).
    pub discovery: DiscoverySettings,
    /// `[[account]]` blocks, in file order (see [`super::accounts`]).
    pub accounts: Vec<AccountSettings>,
    /// `[inventory]`.
    pub inventory: InventorySettings,
    /// `[policy]`.
    pub policy: PolicySettings,
    /// `[[sink]]` blocks, in file order (`docs/delivery.md`); empty: findings stay in the log.
    pub sinks: Vec<crate::delivery::SinkSettings>,
    /// `[ha]` with `etcd` set (`docs/ha.md`); `None`: no HA, this process polls alone.
    pub ha: Option<crate::ha::HaSettings>,
}

/// `[policy]`: the expected-ports policy (`docs/policy.md`). One file for every account; its
/// entries are checked against what the yunjing backend reports (`Capabilities::YUNJING`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySettings {
    /// The policy file, resolved against the config file's folder; `None` (no `[policy]` or
    /// no `file`): no policy, no findings.
    pub file: Option<std::path::PathBuf>,
}

/// One `[[account]]`: its own region, credentials, watchlist and discovery. Everything else
/// (endpoint, rate, intervals, state_dir, log, metrics) is shared and stays top-level.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountSettings {
    /// `[a-z0-9_-]{1,32}`, unique; used in events, metrics and the state file name.
    pub name: String,
    /// `X-TC-Region`; `None` when the block has no `region` (the `[api]` one applies).
    pub region: Option<String>,
    /// The account's watchlist; `None` only when its `[account.discovery]` is enabled.
    pub watchlist_path: Option<PathBuf>,
    /// `[account.credentials]`, or [`CredentialSettings::Chain`] when absent.
    pub credentials: CredentialSettings,
    /// `[account.discovery]`.
    pub discovery: DiscoverySettings,
    /// `service`: its backend; `None` when the block has none (the `[api]` one applies).
    pub service: Option<crate::api::ApiService>,
}

/// `[inventory]`: the open-port inventory (off by default: status-only mode unchanged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InventorySettings {
    /// Fetch and compare open ports after every `COMPLETE`. Default false.
    pub enabled: bool,
    /// Zero: never create tasks; else `CreateOpenPortTask` for each agent whose last
    /// completed task is older, spread evenly over the interval. Default zero.
    pub rescan_interval: Duration,
    /// On `NO_TASK` create a task (at most once per `rescan_interval`, else per hour).
    pub create_missing: bool,
    /// How an agent's first snapshot is reported. Default summary.
    pub baseline: crate::inventory::Baseline,
    /// `rescan_interval` was written: otherwise a `cwp` account rescans every
    /// [`super::CWP_RESCAN_DEFAULT`] (its only way to see ports), a yunjing one never.
    pub rescan_interval_set: bool,
}

impl InventorySettings {
    /// The rescan interval for an account of `service` (see `rescan_interval_set`).
    pub fn rescan_for(&self, service: crate::api::ApiService) -> Duration {
        match service {
            crate::api::ApiService::Cwp if !self.rescan_interval_set => super::CWP_RESCAN_DEFAULT,
            _ => self.rescan_interval,
        }
    }
}

/// `[api]`: where requests go and how many at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// `service`: which CWP API this account talks to, and so its backend. Default yunjing.
    pub service: crate::api::ApiService,
    /// `endpoint` was written (else each account's service picks its own default).
    pub endpoint_set: bool,
    /// https, or http for a loopback host only (the simulator). Default [`super::DEFAULT_ENDPOINT`].
    pub endpoint: Url,
    /// Sent as `X-TC-Region` when set; `region = ""` means unset.
    pub region: Option<String>,
    /// 1..=20, default 20: the API's documented limit is 20 requests per second per action.
    pub requests_per_second: u32,
    /// 1..=256, default 32: concurrent requests per action (each action's lane has its own
    /// budget), so slow answers do not cut throughput.
    pub max_in_flight: usize,
    /// Per-request timeout, > 0, default 10 s.
    pub timeout: Duration,
    /// STS, for `source = "assume-role"`: same rules as `endpoint`. Default
    /// [`crate::credentials::assume_role::DEFAULT_STS_ENDPOINT`].
    pub sts_endpoint: Url,
    /// `[api.actions.NAME] requests_per_second`: per-action overrides (1..=20) of
    /// `requests_per_second`, by action name; empty when none.
    pub action_rates: Vec<(String, u32)>,
    /// `[api.actions.NAME] max_in_flight`: per-action overrides (1..=256) of
    /// `max_in_flight`, by action name; empty when none.
    pub action_in_flight: Vec<(String, usize)>,
    /// `ca_file`: extra CAs every HTTPS client trusts besides the system's store (a
    /// TLS-inspecting proxy's), read and checked with the rest of the file; `None` when absent.
    pub ca_file: Option<crate::tls::CaBundle>,
}

impl ApiSettings {
    /// The rate of `action`: its override, else `requests_per_second`.
    pub fn rate_of(&self, action: &str) -> u32 {
        self.action_rates
            .iter()
            .find(|(name, _)| name == action)
            .map_or(self.requests_per_second, |(_, rate)| *rate)
    }

    /// The in-flight budget of `action`'s lane: its override, else `max_in_flight`.
    pub fn in_flight_of(&self, action: &str) -> usize {
        self.action_in_flight
            .iter()
            .find(|(name, _)| name == action)
            .map_or(self.max_in_flight, |(_, n)| *n)
    }

    /// Requests in flight at most over every action's lane: what the client's connection
    /// pool keeps idle, so no lane's answer closes a connection another lane opens again.
    pub fn in_flight_total(&self) -> usize {
        // The account's own actions: yunjing's three, or the `cwp` backend's two.
        let actions = match self.service {
            crate::api::ApiService::Yunjing => &super::ACTIONS[..3],
            crate::api::ApiService::Cwp => &super::ACTIONS[3..],
        };
        actions
            .iter()
            .map(|action| self.in_flight_of(action))
            .fold(0, usize::saturating_add)
    }
}

/// `[poll]`: how often an agent is polled, by what we last saw of it. All > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Agents whose task is settled (`COMPLETE`, `FAILED`, `NO_TASK`, ...). Default 60 s.
    pub interval: Duration,
    /// Agents in `COLLECTING`: the transition users wait for. Default 5 s.
    pub collecting_interval: Duration,
    /// Agents in `AGENT_OFFLINE`. Default 30 s.
    pub offline_interval: Duration,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when stderr is the journal (`$JOURNAL_STREAM`), text on a terminal, else JSON.
    Auto,
    /// journald native protocol.
    Journald,
    /// JSON lines.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Default [`LogFormat::Auto`].
    pub format: LogFormat,
    /// One of `trace`, `debug`, `info`, `warn`, `error` (lower case; the file may use any case).
    /// Default `info`.
    pub level: String,
}

/// `[metrics]`: the Prometheus endpoint (`docs/metrics.md`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetricsSettings {
    /// Where `GET /metrics` and `GET /healthz` are served; `None` (`listen = ""`, the
    /// default): no listener, and no metrics kept.
    pub listen: Option<std::net::SocketAddr>,
    /// Also export `agent_status`, one series per agent. Default false.
    pub per_agent: bool,
}
