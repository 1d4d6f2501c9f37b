//! The check: raw config structs → validated settings, every problem recorded with its place.
//!
//! [`Check`] holds the helpers every section uses (non-empty strings, free text that will be
//! printed, paths, bounded durations, ranged integers, endpoint URLs) and the `[api]`,
//! `[poll]` and `[log]` sections; the `[credentials]` section, whose keys depend on its
//! `source`, is in [`credentials`]; what accounts may not share (one SecretId, one
//! watchlist) is in [`shared`].
//!
//! Every check returns `Result<T, Reported>`: an `Err` carries the proof that a problem was
//! recorded, so a missing value can never go unexplained.

pub(super) mod accounts;
mod backend;
mod credentials;
mod discovery;
mod ha;
mod metrics;
pub(super) mod shared;
mod sinks;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Url;
use toml::Spanned;

use super::raw::{RawApi, RawDuration, RawInventory, RawLog, RawPoll};
use super::{
    ACTIONS, ApiSettings, DEFAULT_ENDPOINT, INTERVAL_RANGE, InventorySettings, LogFormat,
    LogSettings, MAX_IN_FLIGHT, MAX_REQUESTS_PER_SECOND, PollSettings, RESCAN_RANGE, Settings,
    TIMEOUT_RANGE,
};
use crate::credentials::assume_role::DEFAULT_STS_ENDPOINT;
use crate::endpoint::is_loopback;
use crate::problems::{ConfigErrors, ProblemList, Reported, shown, text_problem};
use crate::tls::CaBundle;

/// The longest path accepted, in characters: Linux's `PATH_MAX` is 4096 bytes, so a longer
/// value cannot name a file, and a huge one would only flood the messages that print it.
const MAX_PATH_CHARS: usize = 4096;
/// The longest endpoint URL accepted, in characters: a base URL is a scheme, a host, a port and
/// a short path; 2048 is what HTTP clients and servers reliably carry.
const MAX_URL_CHARS: usize = 2048;
/// The longest region accepted (`ap-guangzhou`, `na-siliconvalley`; sent as `X-TC-Region`).
const MAX_REGION_CHARS: usize = 64;

/// `[api.actions.NAME]`'s overrides: the rates, then the in-flight budgets, by action name.
type ActionOverrides = (Vec<(String, u32)>, Vec<(String, usize)>);

/// The problems found so far and what relative paths are resolved against.
pub(super) struct Check<'a> {
    pub(super) problems: ProblemList<'a>,
    base_dir: PathBuf,
}

impl<'a> Check<'a> {
    pub(super) fn new(problems: ProblemList<'a>, base_dir: PathBuf) -> Self {
        Check { problems, base_dir }
    }

    /// The settings when every check passed, else every problem recorded, in file order.
    pub(super) fn finish(
        self,
        settings: Result<Settings, Reported>,
    ) -> Result<Settings, ConfigErrors> {
        match settings {
            Ok(settings) => self.problems.finish().map(|()| settings),
            Err(reported) => Err(self.problems.into_errors(reported)),
        }
    }
}

impl Check<'_> {
    /// A non-empty string, or a problem. `example` is the value to suggest; keys that are not
    /// `required` may also be removed.
    pub(super) fn non_empty<'v>(
        &mut self,
        value: &'v Spanned<String>,
        key: &str,
        example: &str,
        required: bool,
    ) -> Result<&'v str, Reported> {
        if value.get_ref().trim().is_empty() {
            let or_remove = if required {
                ""
            } else {
                ", or remove the line for the default"
            };
            Err(self.problems.at(
                value.span(),
                format!("`{key}` is empty: write {key} = {example}{or_remove}"),
            ))
        } else {
            Ok(value.get_ref())
        }
    }

    /// A non-empty string that will be shown (in messages, logs, headers or URLs): at most
    /// `max_chars` characters, and none that [`crate::problems::forbidden_char`] refuses.
    pub(super) fn text<'v>(
        &mut self,
        value: &'v Spanned<String>,
        key: &str,
        example: &str,
        required: bool,
        max_chars: usize,
    ) -> Result<&'v str, Reported> {
        let text = self.non_empty(value, key, example, required)?;
        match text_problem(key, text, max_chars) {
            Some(message) => Err(self.problems.at(value.span(), message)),
            None => Ok(text),
        }
    }

    /// A path: non-empty, no `~`, free text of at most [`MAX_PATH_CHARS`] (paths are printed
    /// in messages and events), resolved against the config file's folder.
    pub(super) fn path(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        example: &str,
        required: bool,
    ) -> Result<PathBuf, Reported> {
        let text = self.text(value, key, example, required, MAX_PATH_CHARS)?;
        if text.starts_with('~') {
            return Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {}: `~` is not expanded in this file; write the full path, \
                     e.g. \"/home/user/...\"",
                    shown(text)
                ),
            ));
        }
        Ok(self.base_dir.join(text))
    }

    /// A duration with a unit, inside `range` (see [`super::TIMEOUT_RANGE`] and
    /// [`super::INTERVAL_RANGE`]): a value outside would reach the engine's deadline arithmetic,
    /// so it is refused here, at its place, with the range to choose from.
    fn duration(
        &mut self,
        value: Option<&Spanned<RawDuration>>,
        key: &str,
        default: Duration,
        range: &RangeInclusive<Duration>,
    ) -> Result<Duration, Reported> {
        let Some(value) = value else {
            return Ok(default);
        };
        let example = humantime::format_duration(default);
        let allowed = format!(
            "a duration from {} to {}",
            short_duration(*range.start()),
            short_duration(*range.end())
        );
        let text = match value.get_ref() {
            RawDuration::Text(text) => text,
            RawDuration::Integer(n) => {
                return Err(self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {n} has no unit: durations are strings with a unit; \
                         write {key} = \"{n}s\" (or \"{n}ms\", \"{n}m\")"
                    ),
                ));
            }
            RawDuration::Float(n) => {
                return Err(self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {n} has no unit: durations are strings with a unit; \
                         write e.g. {key} = \"{example}\""
                    ),
                ));
            }
        };
        let out_of_range = |check: &mut Self| {
            Err(check.problems.at(
                value.span(),
                format!(
                    "`{key}` = {} is out of range: write {allowed}, e.g. {key} = \"{example}\"",
                    shown(text)
                ),
            ))
        };
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if duration.is_zero() => Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` must be greater than zero: write {allowed}, e.g. {key} = \"{example}\""
                ),
            )),
            Ok(duration) if range.contains(&duration) => Ok(duration),
            Ok(_) | Err(humantime::DurationError::NumberOverflow) => out_of_range(self),
            Err(error) => Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {} is not a duration ({error}); write a number with a unit, \
                         e.g. {key} = \"{example}\" (units: ms, s, m, h)",
                    shown(text)
                ),
            )),
        }
    }

    /// A whole number in `range`, converted to the setting's type. The conversion is part of
    /// the check (a value in range always converts), so no caller has to unwrap it.
    fn integer_in<T: TryFrom<i64>>(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: T,
        why: &str,
    ) -> Result<T, Reported> {
        let Some(value) = value else {
            return Ok(default);
        };
        let n = *value.get_ref();
        let converted = range.contains(&n).then(|| T::try_from(n).ok()).flatten();
        if let Some(n) = converted {
            Ok(n)
        } else {
            Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {n} is out of range: write a whole number from {} to {}{why}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// An endpoint URL: parses, has a host, no user, query or fragment. With `https_only` (the
    /// API endpoint) http is accepted for loopback hosts only and the path must be `/`.
    pub(super) fn endpoint(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        https_only: bool,
        example: &str,
    ) -> Result<Url, Reported> {
        // Checked as text first: the URL parser silently drops tabs and newlines.
        let text = self
            .text(value, key, &format!("{example:?}"), false, MAX_URL_CHARS)?
            .trim();
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(error) => {
                return Err(self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {} is not a URL ({error}); write e.g. {key} = {example:?}",
                        shown(text)
                    ),
                ));
            }
        };
        let fail =
            |check: &mut Self, message: String| Err(check.problems.at(value.span(), message));
        if url.host().is_none() {
            return fail(
                self,
                format!(
                    "`{key}` = {} has no host; write e.g. {key} = {example:?}",
                    shown(text)
                ),
            );
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return fail(
                self,
                format!(
                    "`{key}` = {} must be scheme://host[:port]/path only, without user, query or \
                     fragment; write e.g. {key} = {example:?}",
                    shown(text)
                ),
            );
        }
        // The CWP API is always served at `/` (the signature covers the path), so a path on the
        // API endpoint is a mistake; the metadata endpoint is a base that relative paths join.
        if https_only && url.path() != "/" {
            return fail(
                self,
                format!(
                    "`{key}` has the path {:?}, but the API is always served at `/`; write only \
                     scheme and host, e.g. {key} = {example:?}",
                    url.path()
                ),
            );
        }
        match url.scheme() {
            "https" => Ok(url),
            "http" if !https_only || is_loopback(&url) => Ok(url),
            "http" => fail(
                self,
                format!(
                    "`{key}` = {} uses http:// for a host that is not loopback, which would send \
                     signed requests unencrypted; use https:// (http:// is accepted only for \
                     127.0.0.0/8, ::1 and localhost)",
                    shown(text)
                ),
            ),
            other => fail(
                self,
                format!(
                    "`{key}` scheme `{other}` is not supported; write an https:// URL, e.g. \
                     {key} = {example:?}"
                ),
            ),
        }
    }

    /// `region`: `None` when absent or `""`, else a region name.
    pub(super) fn region(
        &mut self,
        value: Option<&Spanned<String>>,
    ) -> Result<Option<String>, Reported> {
        match value {
            None => Ok(None),
            Some(value) if value.get_ref().is_empty() => Ok(None),
            Some(value) => {
                let text = value.get_ref();
                if text.len() <= MAX_REGION_CHARS
                    && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    Ok(Some(text.clone()))
                } else {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "`region` = {} is not a region name (at most {MAX_REGION_CHARS} \
                             letters, digits and `-`); write e.g. region = \"ap-guangzhou\", or \
                             region = \"\" to send no region",
                            shown(text)
                        ),
                    ))
                }
            }
        }
    }

    pub(super) fn api(&mut self, raw: Option<&RawApi>) -> Result<ApiSettings, Reported> {
        let service = self
            .service(raw.and_then(|api| api.service.as_ref()))
            .map(Option::unwrap_or_default);
        let default_endpoint = match &service {
            Ok(service) => service.default_endpoint(),
            Err(_) => DEFAULT_ENDPOINT,
        };
        let endpoint = match raw.and_then(|api| api.endpoint.as_ref()) {
            Some(value) => self.endpoint(value, "endpoint", true, default_endpoint),
            None => Ok(Url::parse(default_endpoint).expect("default endpoint is a URL")),
        };
        let region = self.region(raw.and_then(|api| api.region.as_ref()));
        let requests_per_second = self.integer_in(
            raw.and_then(|api| api.requests_per_second.as_ref()),
            "requests_per_second",
            1..=i64::from(MAX_REQUESTS_PER_SECOND),
            MAX_REQUESTS_PER_SECOND,
            ": the API's documented limit is 20 requests per second per action, and more only \
             earns RequestLimitExceeded answers",
        );
        let max_in_flight = self.integer_in(
            raw.and_then(|api| api.max_in_flight.as_ref()),
            "max_in_flight",
            1..=MAX_IN_FLIGHT as i64,
            32,
            " (concurrent requests; 32 is plenty at 20 requests per second)",
        );
        let timeout = self.duration(
            raw.and_then(|api| api.timeout.as_ref()),
            "timeout",
            Duration::from_secs(10),
            &TIMEOUT_RANGE,
        );
        let actions = self.actions(raw);
        let sts_endpoint = match raw.and_then(|api| api.sts_endpoint.as_ref()) {
            Some(value) => self.endpoint(value, "sts_endpoint", true, DEFAULT_STS_ENDPOINT),
            None => Ok(Url::parse(DEFAULT_STS_ENDPOINT).expect("default STS endpoint is a URL")),
        };
        let ca_file = self.ca_file(raw.and_then(|api| api.ca_file.as_ref()));
        // Every problem is already in the list: the order of the `?`s changes nothing.
        let (action_rates, action_in_flight) = actions?;
        Ok(ApiSettings {
            service: service?,
            endpoint_set: raw.is_some_and(|api| api.endpoint.is_some()),
            sts_endpoint: sts_endpoint?,
            endpoint: endpoint?,
            region: region?,
            requests_per_second: requests_per_second?,
            max_in_flight: max_in_flight?,
            timeout: timeout?,
            action_rates,
            action_in_flight,
            ca_file: ca_file?,
        })
    }

    /// `ca_file`: a path, read now (at start and at every reload) and checked as PEM
    /// certificates ([`CaBundle::read`]); a problem is placed at the value.
    fn ca_file(&mut self, value: Option<&Spanned<String>>) -> Result<Option<CaBundle>, Reported> {
        let Some(value) = value else {
            return Ok(None);
        };
        let path = self.path(
            value,
            "ca_file",
            "\"/etc/cwp-portwatch/proxy-ca.pem\"",
            false,
        )?;
        match CaBundle::read(&path) {
            Ok(bundle) => Ok(Some(bundle)),
            Err(error) => Err(self
                .problems
                .at(value.span(), format!("`ca_file`: {error}"))),
        }
    }

    /// `[api.actions.NAME]`: NAME one of [`ACTIONS`], its `requests_per_second` 1..=20 and its
    /// `max_in_flight` 1..=256 (its lane's own budget), each at its line:col when wrong.
    fn actions(&mut self, raw: Option<&RawApi>) -> Result<ActionOverrides, Reported> {
        let mut rates = Vec::new();
        let mut in_flight = Vec::new();
        let mut failed = None;
        for (name, action) in raw
            .and_then(|api| api.actions.as_ref())
            .into_iter()
            .flatten()
        {
            if !ACTIONS.contains(&name.get_ref().as_str()) {
                failed = Some(self.problems.at(
                    name.span(),
                    format!(
                        "[api.actions.{}] is not an action the daemon calls; write one of {}",
                        shown(name.get_ref()),
                        ACTIONS.join(", ")
                    ),
                ));
                continue;
            }
            if let Some(value) = action.requests_per_second.as_ref() {
                match self.integer_in(
                    Some(value),
                    "requests_per_second",
                    1..=i64::from(MAX_REQUESTS_PER_SECOND),
                    MAX_REQUESTS_PER_SECOND,
                    ": Tencent allows 20 requests per second per action",
                ) {
                    Ok(rate) => rates.push((name.get_ref().clone(), rate)),
                    Err(reported) => failed = Some(reported),
                }
            }
            if let Some(value) = action.max_in_flight.as_ref() {
                match self.integer_in(
                    Some(value),
                    "max_in_flight",
                    1..=MAX_IN_FLIGHT as i64,
                    MAX_IN_FLIGHT,
                    " (this action's own concurrent requests; at its rate, about \
                     requests_per_second x its answers' seconds keeps the rate)",
                ) {
                    Ok(n) => in_flight.push((name.get_ref().clone(), n)),
                    Err(reported) => failed = Some(reported),
                }
            }
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok((rates, in_flight)),
        }
    }

    pub(super) fn inventory(
        &mut self,
        raw: Option<&RawInventory>,
    ) -> Result<InventorySettings, Reported> {
        let rescan_interval = match raw.and_then(|i| i.rescan_interval.as_ref()) {
            None => Ok(Duration::ZERO),
            // "0s" (any zero) turns rescans off; `duration` refuses zero elsewhere.
            Some(value)
                if matches!(value.get_ref(), RawDuration::Text(t)
                    if humantime::parse_duration(t.trim()).is_ok_and(|d| d.is_zero())) =>
            {
                Ok(Duration::ZERO)
            }
            Some(value) => self.duration(
                Some(value),
                "rescan_interval",
                Duration::from_secs(12 * 60 * 60),
                &RESCAN_RANGE,
            ),
        };
        let baseline = match raw.and_then(|i| i.baseline.as_ref()) {
            None => Ok(crate::inventory::Baseline::Summary),
            Some(value) => match value.get_ref().trim() {
                "summary" => Ok(crate::inventory::Baseline::Summary),
                "ports" => Ok(crate::inventory::Baseline::Ports),
                _ => Err(self.problems.at(
                    value.span(),
                    format!(
                        "`baseline` = {} is not a baseline mode; write \"summary\" (one \
                         inventory_baseline event) or \"ports\" (one port_opened per port)",
                        shown(value.get_ref())
                    ),
                )),
            },
        };
        Ok(InventorySettings {
            enabled: raw
                .and_then(|i| i.enabled.as_ref())
                .is_some_and(|v| *v.get_ref()),
            rescan_interval: rescan_interval?,
            create_missing: raw
                .and_then(|i| i.create_missing.as_ref())
                .is_some_and(|v| *v.get_ref()),
            baseline: baseline?,
            rescan_interval_set: raw.is_some_and(|i| i.rescan_interval.is_some()),
        })
    }

    pub(super) fn poll(&mut self, raw: Option<&RawPoll>) -> Result<PollSettings, Reported> {
        let interval = self.duration(
            raw.and_then(|poll| poll.interval.as_ref()),
            "interval",
            Duration::from_secs(60),
            &INTERVAL_RANGE,
        );
        let collecting_interval = self.duration(
            raw.and_then(|poll| poll.collecting_interval.as_ref()),
            "collecting_interval",
            Duration::from_secs(5),
            &INTERVAL_RANGE,
        );
        let offline_interval = self.duration(
            raw.and_then(|poll| poll.offline_interval.as_ref()),
            "offline_interval",
            Duration::from_secs(30),
            &INTERVAL_RANGE,
        );
        Ok(PollSettings {
            interval: interval?,
            collecting_interval: collecting_interval?,
            offline_interval: offline_interval?,
        })
    }

    pub(super) fn log(&mut self, raw: Option<&RawLog>) -> Result<LogSettings, Reported> {
        let format = match raw.and_then(|log| log.format.as_ref()) {
            None => Ok(LogFormat::Auto),
            Some(value) => match value.get_ref().trim().to_ascii_lowercase().as_str() {
                "auto" => Ok(LogFormat::Auto),
                "journald" => Ok(LogFormat::Journald),
                "json" => Ok(LogFormat::Json),
                "text" => Ok(LogFormat::Text),
                _ => Err(self.problems.at(
                    value.span(),
                    format!(
                        "`format` = {} is not a log format; write one of \"auto\", \
                             \"journald\", \"json\", \"text\"",
                        shown(value.get_ref())
                    ),
                )),
            },
        };
        let level = match raw.and_then(|log| log.level.as_ref()) {
            None => Ok("info".to_owned()),
            Some(value) => {
                let level = value.get_ref().trim().to_ascii_lowercase();
                if ["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
                    Ok(level)
                } else {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "`level` = {} is not a log level; write one of \"trace\", \"debug\", \
                             \"info\", \"warn\", \"error\"",
                            shown(value.get_ref())
                        ),
                    ))
                }
            }
        };
        Ok(LogSettings {
            format: format?,
            level: level?,
        })
    }
}

/// A range bound as an operator writes it: `100ms`, `5m`, `24h` (humantime would say `1day`,
/// which its own parser accepts but no example in this project uses).
fn short_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    match (secs, duration.subsec_millis()) {
        (0, millis) => format!("{millis}ms"),
        (secs, 0) if secs % 3600 == 0 => format!("{}h", secs / 3600),
        (secs, 0) if secs % 60 == 0 => format!("{}m", secs / 60),
        (secs, 0) => format!("{secs}s"),
        _ => format!("{}ms", duration.as_millis()),
    }
}
