//! The config file as written: serde structs that mirror the TOML, every field optional and
//! wrapped in [`toml::Spanned`] so the check can place each problem, unknown keys rejected.
//! Nothing here is validated; [`super::check`] turns these into [`super::Settings`].

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config file")]
pub(super) struct RawConfig {
    pub(super) watchlist: Option<Spanned<String>>,
    pub(super) state_dir: Option<Spanned<String>>,
    pub(super) api: Option<RawApi>,
    pub(super) credentials: Option<Spanned<RawCredentials>>,
    pub(super) poll: Option<RawPoll>,
    pub(super) log: Option<RawLog>,
    pub(super) metrics: Option<RawMetrics>,
    pub(super) discovery: Option<Spanned<RawDiscovery>>,
    pub(super) account: Option<Vec<Spanned<RawAccount>>>,
    pub(super) inventory: Option<RawInventory>,
    pub(super) policy: Option<RawPolicy>,
    pub(super) sink: Option<Vec<Spanned<RawSink>>>,
    pub(super) ha: Option<Spanned<RawHa>>,
}

/// One `[[account]]` block: what differs between accounts (shared settings stay top-level).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [[account]] table")]
pub(super) struct RawAccount {
    pub(super) name: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) watchlist: Option<Spanned<String>>,
    pub(super) credentials: Option<Spanned<RawCredentials>>,
    pub(super) discovery: Option<Spanned<RawDiscovery>>,
    /// `yunjing` | `cwp`: this account's backend (default: `[api] service`).
    pub(super) service: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [api] table")]
pub(super) struct RawApi {
    /// `yunjing` (default) | `cwp`: which CWP API, and so which backend.
    pub(super) service: Option<Spanned<String>>,
    pub(super) endpoint: Option<Spanned<String>>,
    pub(super) region: Option<Spanned<String>>,
    pub(super) requests_per_second: Option<Spanned<i64>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    pub(super) timeout: Option<Spanned<RawDuration>>,
    pub(super) sts_endpoint: Option<Spanned<String>>,
    pub(super) actions: Option<std::collections::BTreeMap<Spanned<String>, RawAction>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

/// `[api.actions.NAME]`: what differs for one API action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [api.actions.NAME] table")]
pub(super) struct RawAction {
    pub(super) requests_per_second: Option<Spanned<i64>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [credentials] table")]
pub(super) struct RawCredentials {
    pub(super) source: Option<Spanned<String>>,
    pub(super) secret_id_file: Option<Spanned<String>>,
    pub(super) secret_key_file: Option<Spanned<String>>,
    pub(super) profile_path: Option<Spanned<String>>,
    pub(super) profile: Option<Spanned<String>>,
    pub(super) role: Option<Spanned<String>>,
    pub(super) metadata_endpoint: Option<Spanned<String>>,
    pub(super) base: Option<Spanned<String>>,
    pub(super) role_arn: Option<Spanned<String>>,
    pub(super) role_session_name: Option<Spanned<String>>,
    pub(super) duration: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [poll] table")]
pub(super) struct RawPoll {
    pub(super) interval: Option<Spanned<RawDuration>>,
    pub(super) collecting_interval: Option<Spanned<RawDuration>>,
    pub(super) offline_interval: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [log] table")]
pub(super) struct RawLog {
    pub(super) format: Option<Spanned<String>>,
    pub(super) level: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [metrics] table")]
pub(super) struct RawMetrics {
    pub(super) listen: Option<Spanned<String>>,
    pub(super) per_agent: Option<Spanned<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [discovery] table")]
pub(super) struct RawDiscovery {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) machine_types: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) regions: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) agent_status: Option<Spanned<String>>,
    pub(super) keywords: Option<Spanned<String>>,
    pub(super) refresh: Option<Spanned<RawDuration>>,
    pub(super) remove_after: Option<Spanned<i64>>,
    pub(super) forget_after: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [inventory] table")]
pub(super) struct RawInventory {
    pub(super) enabled: Option<Spanned<bool>>,
    pub(super) rescan_interval: Option<Spanned<RawDuration>>,
    pub(super) create_missing: Option<Spanned<bool>>,
    pub(super) baseline: Option<Spanned<String>>,
}

/// `[policy]`: the expected-ports policy file (issue 22).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [policy] table")]
pub(super) struct RawPolicy {
    pub(super) file: Option<Spanned<String>>,
}

/// One `[[sink]]` block: where chosen events are delivered (`docs/delivery.md`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[sink]] table")]
pub(super) struct RawSink {
    pub(super) name: Option<Spanned<String>>,
    pub(super) kind: Option<Spanned<String>>,
    pub(super) url: Option<Spanned<String>>,
    pub(super) url_file: Option<Spanned<String>>,
    pub(super) secret_file: Option<Spanned<String>>,
    pub(super) events: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) min_severity: Option<Spanned<String>>,
    pub(super) max_age: Option<Spanned<RawDuration>>,
    pub(super) per_minute: Option<Spanned<i64>>,
    pub(super) outbox_limit: Option<Spanned<i64>>,
}

/// `[ha]`: active/standby on etcd (`docs/ha.md`); checked in `check/ha.rs`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [ha] table")]
pub(super) struct RawHa {
    pub(super) etcd: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) election: Option<Spanned<String>>,
    pub(super) lease_ttl: Option<Spanned<RawDuration>>,
    pub(super) name: Option<Spanned<String>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) username: Option<Spanned<String>>,
    pub(super) password_file: Option<Spanned<String>>,
}

/// A duration as written. Numbers are accepted by the parser only to be refused with a hint
/// (`timeout = 10` → write `"10s"`), which is kinder than serde's "expected a string".
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a duration string such as \"5s\", \"250ms\" or \"2m\""
)]
pub(super) enum RawDuration {
    Text(String),
    Integer(i64),
    Float(f64),
}
