//! Config file: TOML text → validated [`Settings`].
//!
//! Two steps, the split ripgrep uses for its arguments. First serde reads the text into the raw
//! structs of `raw.rs`, which mirror the file: every field optional and wrapped in
//! [`toml::Spanned`], unknown keys rejected. Then `check/` checks every value, fills in the
//! defaults and collects *every* problem with its line and column, so `cwp-portwatch check` can
//! list them all at once instead of making the operator fix them one run at a time. The result
//! is the types of `settings.rs`, re-exported here.
//!
//! Syntax, type and unknown-key errors come from the TOML parser, which stops at the first one;
//! they still carry file:line:column, and toml's message for an unknown key lists the allowed ones.
//!
//! Problems are reported through [`crate::problems`], shared with the watchlist and the
//! simulator's scenario. What the `[credentials]` section means belongs to
//! [`crate::credentials`]; this module only reads it (config depends on credentials, never the
//! reverse).

pub mod accounts;
mod check;
mod raw;
mod settings;
#[cfg(test)]
mod tests;

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use self::check::Check;
use self::raw::RawConfig;
use crate::credentials::Environment;
use crate::problems::{ProblemList, TypeHints, read_text};

pub use self::check::accounts::{DEFAULT_ACCOUNT, valid_account_name};
pub use self::settings::{
    AccountSettings, ApiSettings, InventorySettings, LogFormat, LogSettings, MetricsSettings,
    PolicySettings, PollSettings, Settings,
};
// Kept at their former paths: callers name them `config::…`.
pub use crate::credentials::{CredentialSettings, DEFAULT_METADATA_ENDPOINT};
pub use crate::problems::{ConfigErrors, Problem, ProblemKind};

/// Where the config file is read from when neither `--config` nor `CWP_PORTWATCH_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cwp-portwatch/config.toml";
/// The CWP API endpoint used when `api.endpoint` is absent.
pub const DEFAULT_ENDPOINT: &str = "https://yunjing.tencentcloudapi.com";
/// The API's documented limit per action; `api.requests_per_second` may not exceed it.
pub const MAX_REQUESTS_PER_SECOND: u32 = 20;
/// Upper bound of `api.max_in_flight`: more concurrency than this buys nothing at 20 req/s.
pub const MAX_IN_FLIGHT: usize = 256;
/// Allowed values of `api.timeout`. Below 100 ms no API answer arrives in time; above 5 minutes
/// a request outlives its own signature (the API refuses timestamps more than 5 minutes old),
/// so waiting longer only delays the retry.
pub const TIMEOUT_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(5 * 60);
/// Allowed values of `poll.interval`, `poll.collecting_interval` and `poll.offline_interval`.
/// The bounds keep every deadline the engine computes (now + interval, backoff capped at the
/// interval) far inside what an `Instant` can hold: `"18446744073709551615s"` once passed the
/// check and made `run` panic. Below 100 ms polling is pointless at 20 requests per second; an
/// agent polled less than once a day is not being watched.
pub const INTERVAL_RANGE: RangeInclusive<Duration> =
    Duration::from_millis(100)..=Duration::from_secs(24 * 60 * 60);
/// Allowed values of `inventory.rescan_interval` besides `"0s"` (off): CWP's collection
/// takes minutes, so more often is pointless; less than once a month is no rescan.
pub const RESCAN_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(31 * 24 * 60 * 60);
/// The actions `[api.actions.NAME]` may name: those the daemon calls (yunjing's three, then
/// the `cwp` backend's two).
pub const ACTIONS: [&str; 5] = [
    "DescribeOpenPortTaskStatus",
    "CreateOpenPortTask",
    "DescribeOpenPorts",
    "DescribeMachines",
    "DescribeAssetPortInfoList",
];
/// `rescan_interval` of a `cwp` account when the file does not set one: its port list is
/// fetched only at rescans (there is no task to wait for).
pub const CWP_RESCAN_DEFAULT: Duration = Duration::from_secs(10 * 60);
/// State folder used when neither `state_dir`, `$STATE_DIRECTORY`, `$XDG_STATE_HOME` nor `$HOME`
/// gives one.
pub const FALLBACK_STATE_DIR: &str = "/var/lib/cwp-portwatch";

/// Type-error advice for the config file: its numbers have ranges and its durations need units.
const TYPE_HINTS: TypeHints = TypeHints {
    example_file: "config/config.example.toml",
    for_key: |key| match key {
        "requests_per_second" => Some(
            "write a whole number from 1 to 20 without quotes, e.g. `requests_per_second = 20`"
                .to_owned(),
        ),
        "max_in_flight" => Some(
            "write a whole number from 1 to 256 without quotes, e.g. `max_in_flight = 32`"
                .to_owned(),
        ),
        "per_minute" => {
            Some("write a whole number without quotes, e.g. `per_minute = 20`".to_owned())
        }
        "outbox_limit" => Some(
            "write a whole number from 10 to 1000000 without quotes, e.g. `outbox_limit = 10000`"
                .to_owned(),
        ),
        "etcd" => Some(
            "write a list of URLs in quotes, e.g. `etcd = [\"https://10.0.0.5:2379\"]`".to_owned(),
        ),
        "events" => Some(
            "write a list of event names in quotes, e.g. `events = [\"port_unexpected\", \
             \"status_changed:AGENT_OFFLINE\"]`"
                .to_owned(),
        ),
        "enabled" | "create_missing" => Some(format!(
            "write true or false without quotes, e.g. `{key} = true`"
        )),
        "timeout"
        | "interval"
        | "collecting_interval"
        | "offline_interval"
        | "rescan_interval"
        | "max_age"
        | "lease_ttl"
        | "duration" => Some(format!("write a duration in quotes, e.g. `{key} = \"5s\"`")),
        _ => None,
    },
};

impl Settings {
    /// Reads and validates the config file at `path`. The watchlist is not read here
    /// (see [`crate::watchlist::Watchlist::load`]). Credentials are resolved here only with
    /// several accounts, and only to refuse two accounts on one SecretId (`check/shared.rs`):
    /// files and environment, never the network, and a source that cannot be read is left
    /// to whatever uses it.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = read_text(
            path,
            "pass --config PATH (or set CWP_PORTWATCH_CONFIG); config/config.example.toml shows every key",
        )?;
        Settings::from_toml_str(&text, path)
    }

    /// Validates config text; `path` is used in messages and to resolve relative paths.
    /// Defaults that depend on the environment (`state_dir`) come from the process environment.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Settings, ConfigErrors> {
        Settings::from_toml_str_with(text, path, &Environment::from_process())
    }

    /// As [`Settings::from_toml_str`], with the environment given (for tests).
    pub fn from_toml_str_with(
        text: &str,
        path: &Path,
        env: &Environment,
    ) -> Result<Settings, ConfigErrors> {
        let mut problems = ProblemList::new(path, text);
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                let reported = problems.syntax(&error, &TYPE_HINTS);
                return Err(problems.into_errors(reported));
            }
        };
        let mut check = Check::new(problems, base_dir(path));

        let discovery = check.discovery(raw.discovery.as_ref());
        // As written, so an enabled section with a bad key is not also told to add a watchlist.
        let discovering = raw
            .discovery
            .as_ref()
            .and_then(|d| d.get_ref().enabled.as_ref())
            .is_some_and(|enabled| *enabled.get_ref());
        let raw_accounts = raw.account.as_deref().unwrap_or_default();
        let watchlist_path = match &raw.watchlist {
            Some(value) => check
                .path(value, "watchlist", "\"watchlist.toml\"", true)
                .map(Some),
            // With discovery on, the watchlist only adds names and agents to what is found.
            None if discovering => Ok(None),
            // Only [[account]] blocks: there is no `default` account.
            None if !raw_accounts.is_empty() => Ok(None),
            None => Err(check.problems.general(
                "`watchlist` is missing: add watchlist = \"watchlist.toml\" (the watchlist \
                 file, relative to this file's folder) near the top, before any [section], \
                 or turn on [discovery]",
            )),
        };
        let state_dir = match &raw.state_dir {
            Some(value) => check.path(value, "state_dir", "\"/var/lib/cwp-portwatch\"", false),
            None => Ok(default_state_dir(env)),
        };
        let api = check.api(raw.api.as_ref());
        let credentials = match &raw.credentials {
            Some(section) => check.credentials(section),
            None => Ok(CredentialSettings::Chain),
        };
        let poll = check.poll(raw.poll.as_ref());
        let log = check.log(raw.log.as_ref());
        let metrics = check.metrics(raw.metrics.as_ref());
        let accounts = check.accounts(raw_accounts, raw.watchlist.is_some() || discovering);
        let inventory = check.inventory(raw.inventory.as_ref());
        let policy = match raw.policy.as_ref().and_then(|p| p.file.as_ref()) {
            Some(file) => check
                .path(file, "file", "\"policy.toml\"", true)
                .map(|file| PolicySettings { file: Some(file) }),
            None => Ok(PolicySettings::default()),
        };

        let sinks = check.sinks(raw.sink.as_deref().unwrap_or_default());
        let ha = check.ha(raw.ha.as_ref());
        // What only the `cwp` backend can do, or cannot do yet, per account that uses it.
        let backends = match (&api, &accounts, &inventory) {
            (Ok(api), Ok(accounts), Ok(inventory)) => check.backends(
                &raw,
                api,
                accounts,
                inventory,
                raw.watchlist.is_some() || discovering,
            ),
            _ => Ok(()),
        };

        // Across accounts: no SecretId or watchlist shared (once each account is valid).
        let shared = match (&watchlist_path, &credentials, &accounts) {
            (Ok(watchlist_path), Ok(credentials), Ok(accounts)) => {
                let top_service = api.as_ref().map(|a| a.service).unwrap_or_default();
                let mut uses = Vec::with_capacity(accounts.len() + 1);
                if raw.watchlist.is_some() || discovering {
                    uses.push(check::shared::AccountUse {
                        name: DEFAULT_ACCOUNT,
                        credentials,
                        credentials_at: raw.credentials.as_ref().map(toml::Spanned::span),
                        watchlist: watchlist_path
                            .as_deref()
                            .zip(raw.watchlist.as_ref().map(toml::Spanned::span)),
                        service: top_service,
                    });
                }
                for (account, block) in accounts.iter().zip(raw_accounts) {
                    let block_raw = block.get_ref();
                    uses.push(check::shared::AccountUse {
                        name: &account.name,
                        credentials: &account.credentials,
                        credentials_at: Some(
                            block_raw
                                .credentials
                                .as_ref()
                                .map(toml::Spanned::span)
                                .or_else(|| block_raw.name.as_ref().map(toml::Spanned::span))
                                .unwrap_or_else(|| block.span()),
                        ),
                        watchlist: account
                            .watchlist_path
                            .as_deref()
                            .zip(block_raw.watchlist.as_ref().map(toml::Spanned::span)),
                        service: account.service.unwrap_or(top_service),
                    });
                }
                check.shared(&uses, env)
            }
            _ => Ok(()),
        };

        // Every check ran above, so all problems are recorded before the first `?` below.
        let settings = (|| {
            shared?;
            backends?;
            Ok(Settings {
                config_path: path.to_path_buf(),
                watchlist_path: watchlist_path?,
                state_dir: state_dir?,
                api: api?,
                credentials: credentials?,
                poll: poll?,
                log: log?,
                metrics: metrics?,
                discovery: discovery?,
                accounts: accounts?,
                inventory: inventory?,
                policy: policy?,
                sinks: sinks?,
                ha: ha?,
            })
        })();
        check.finish(settings)
    }
}

/// The folder relative paths are resolved against: the config file's folder, made absolute so a
/// later change of working directory cannot change what a path means.
fn base_dir(config_path: &Path) -> PathBuf {
    let parent = match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; first entry when colon-separated), else
/// `$XDG_STATE_HOME/cwp-portwatch`, else `~/.local/state/cwp-portwatch`, else
/// [`FALLBACK_STATE_DIR`]. Relative values are ignored, as the XDG spec says.
pub fn default_state_dir(env: &Environment) -> PathBuf {
    let absolute = |value: &str| {
        let path = PathBuf::from(value);
        (!value.is_empty() && path.is_absolute()).then_some(path)
    };
    if let Some(dir) = env
        .get("STATE_DIRECTORY")
        .and_then(|value| value.split(':').next())
        .and_then(absolute)
    {
        return dir;
    }
    if let Some(dir) = env.get("XDG_STATE_HOME").and_then(absolute) {
        return dir.join("cwp-portwatch");
    }
    if let Some(home) = env.get("HOME").and_then(absolute) {
        return home.join(".local/state/cwp-portwatch");
    }
    PathBuf::from(FALLBACK_STATE_DIR)
}
