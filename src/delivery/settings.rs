//! The validated `[[sink]]` blocks ([`SinkSettings`], made by the config check) and what their
//! files hold once read ([`ResolvedSink`]: the URL with its key, the DingTalk secret).
//!
//! Why the URL may come from a file: a WeCom, DingTalk or Slack webhook URL *is* the robot's
//! key, so those kinds take `url_file` only (systemd credentials: `%d/NAME`), never `url` in the
//! config text; `alertmanager` and `webhook` may use an inline `url` without user info or query.
//!
//! [`resolve`] reads those files (at start, on reload, by `check --probe`): small regular
//! files, not readable by every user, read with the credentials' reader
//! (`credentials::read_secret_file`). `%d/NAME` is `$CREDENTIALS_DIRECTORY/NAME`,
//! where systemd puts `LoadCredential=NAME:/path` (or `LoadCredentialEncrypted=`), the
//! convenience `[credentials] source = "systemd"` offers for the API key. A URL read from a
//! file passes the same rules as an inline one ([`check_url`]) except that it may have a query
//! (Slack's and WeCom's keys are in it). No error carries the URL or the secret: they name
//! the sink, the key and the file.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use secrecy::SecretString;

use super::select::EventSelector;
use crate::credentials::Environment;
use crate::policy::Severity;
use crate::problems::shown_path;

/// `max_age` when the block names none: retried for a day, then `delivery_failed`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Records a sink's outbox holds at most (`outbox_limit`); a full one gives up the oldest
/// record that is not a resolution, and says so (`delivery_failed`).
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;
/// `max_age` allowed: under a minute a receiver's short outage already gives events up;
/// over 30 days the outbox holds what nobody will act on.
pub const MAX_AGE_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(60)..=Duration::from_secs(30 * 24 * 60 * 60);
/// `outbox_limit` allowed: below 10 one burst of findings overflows it; a million records
/// are some hundreds of MB of outbox file, rewritten at every save.
pub const OUTBOX_LIMIT_RANGE: RangeInclusive<usize> = 10..=1_000_000;
/// The longest URL accepted, in characters, inline or read from a file: what HTTP clients
/// and servers reliably carry.
pub const MAX_URL_CHARS: usize = 2048;
/// The most `[[sink]]` blocks: each is a task, an outbox file and metrics series.
pub const MAX_SINKS: usize = 32;
/// `url_file = "%d/NAME"`: `NAME` in systemd's `$CREDENTIALS_DIRECTORY`.
pub const CREDENTIALS_PREFIX: &str = "%d/";
/// The longest secret accepted from `secret_file` (DingTalk's are `SEC` and 64 hex digits).
pub const MAX_SECRET_CHARS: usize = 256;

/// `kind`: which receiver a sink talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SinkKind {
    /// Alertmanager API v2 (`POST /api/v2/alerts`).
    Alertmanager,
    /// WeCom (企业微信) group robot, markdown.
    Wecom,
    /// DingTalk (钉钉) robot, markdown, signed.
    Dingtalk,
    /// Slack incoming webhook.
    Slack,
    /// Any HTTP endpoint: one JSON document per event.
    Webhook,
}

impl SinkKind {
    /// Every kind, in the order the docs list them.
    pub const ALL: [SinkKind; 5] = [
        SinkKind::Alertmanager,
        SinkKind::Wecom,
        SinkKind::Dingtalk,
        SinkKind::Slack,
        SinkKind::Webhook,
    ];

    /// The name as written in `kind = "…"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::Alertmanager => "alertmanager",
            SinkKind::Wecom => "wecom",
            SinkKind::Dingtalk => "dingtalk",
            SinkKind::Slack => "slack",
            SinkKind::Webhook => "webhook",
        }
    }

    /// The kind named `text`, if any.
    pub fn parse(text: &str) -> Option<SinkKind> {
        SinkKind::ALL.into_iter().find(|k| k.as_str() == text)
    }

    /// Messages per minute the receiver accepts (`per_minute` when the block names none):
    /// WeCom and DingTalk robots 20 (DingTalk blocks a robot for 10 min over it), Slack about
    /// one a second; Alertmanager and a plain webhook are ours to pace.
    pub fn default_per_minute(self) -> u32 {
        match self {
            SinkKind::Wecom | SinkKind::Dingtalk => 20,
            SinkKind::Slack => 60,
            SinkKind::Alertmanager => 120,
            SinkKind::Webhook => 600,
        }
    }

    /// The most messages per minute `per_minute` may ask for (the receiver's own limit).
    pub fn max_per_minute(self) -> u32 {
        match self {
            SinkKind::Wecom | SinkKind::Dingtalk => 20,
            SinkKind::Slack => 60,
            SinkKind::Alertmanager | SinkKind::Webhook => 6000,
        }
    }

    /// Whether the URL carries the receiver's key (then only `url_file` is accepted).
    pub fn url_is_secret(self) -> bool {
        matches!(self, SinkKind::Wecom | SinkKind::Dingtalk | SinkKind::Slack)
    }
}

/// Where a sink's URL comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `url = "…"` (alertmanager, webhook; no user info, no query).
    Inline(url::Url),
    /// `url_file = "…"`: a file holding the URL (read at start, on reload and by
    /// `check --probe`; never printed).
    File(PathBuf),
}

/// One validated `[[sink]]` block.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkSettings {
    /// `name`: `[a-z0-9_-]{1,32}`, unique; the outbox file's name and the `sink` label.
    pub name: String,
    /// `kind`.
    pub kind: SinkKind,
    /// `url` or `url_file`.
    pub url: UrlSource,
    /// `secret_file` (DingTalk's signing secret; required for `dingtalk`, refused otherwise).
    pub secret_file: Option<PathBuf>,
    /// `events`; default [`super::select::default_selectors`] (the policy's findings).
    pub events: Vec<EventSelector>,
    /// `min_severity`; default `warning`.
    pub min_severity: Severity,
    /// `max_age`: how long an undelivered record is retried; default [`DEFAULT_MAX_AGE`].
    pub max_age: Duration,
    /// `per_minute`: messages per minute at most; default [`SinkKind::default_per_minute`].
    pub per_minute: u32,
    /// `outbox_limit`: records kept at most; default [`DEFAULT_OUTBOX_LIMIT`].
    pub outbox_limit: usize,
}

/// A sink with its files read: what the worker sends with. `Debug` never shows the secrets.
pub struct ResolvedSink {
    /// The validated block.
    pub settings: SinkSettings,
    /// The URL, key included (a secret for robot kinds).
    pub url: SecretString,
    /// DingTalk's signing secret.
    pub secret: Option<SecretString>,
}

impl std::fmt::Debug for ResolvedSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedSink")
            .field("name", &self.settings.name)
            .field("kind", &self.settings.kind.as_str())
            .finish_non_exhaustive()
    }
}

/// The credential name of `%d/NAME`, when `path` is written that way (the config check keeps
/// such a path as written; it is resolved against `$CREDENTIALS_DIRECTORY` when read).
pub fn credential_name(path: &Path) -> Option<&str> {
    path.to_str()?.strip_prefix(CREDENTIALS_PREFIX)
}

/// Whether `name` can be a systemd credential's name: what `LoadCredential=NAME:` accepts and
/// a file name in one folder can be (no `/`, not `.` or `..`, at most 255 bytes); kept to
/// letters, digits, `_`, `-`, `.` and `@` so it reads the same in the unit and in messages.
pub fn valid_credential_name(name: &str) -> bool {
    (1..=255).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
}

/// `text` as a sink URL: at most [`MAX_URL_CHARS`], `http`/`https` with a host, no user
/// or password (they would reach logs and errors), no fragment, and no query unless
/// `query_allowed` (a URL read from a file). The error never quotes the URL: for a robot it
/// is the key.
pub fn check_url(text: &str, query_allowed: bool) -> Result<url::Url, String> {
    if text.chars().nth(MAX_URL_CHARS).is_some() {
        return Err(format!(
            "is longer than {MAX_URL_CHARS} characters, so it is not a webhook URL"
        ));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || crate::problems::forbidden_char(c).is_some())
    {
        return Err("contains whitespace or control characters; write the URL alone".to_owned());
    }
    let url = url::Url::parse(text)
        .map_err(|error| format!("is not a URL ({error}); write e.g. https://host/path"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "has the scheme `{}`; write an https:// (or http://) URL",
            crate::escape::escape(url.scheme())
        ));
    }
    if url.host().is_none() {
        return Err("has no host; write e.g. https://host/path".to_owned());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "holds a user or password (`user:pass@`), which would be shown wherever the URL \
             is; use a receiver that needs none, or a proxy on loopback that adds it"
                .to_owned(),
        );
    }
    if url.fragment().is_some() {
        return Err("has a fragment (`#…`), which is never sent; remove it".to_owned());
    }
    if url.query().is_some() && !query_allowed {
        return Err(
            "has a query (`?…`), where webhooks keep their keys; put the whole URL in a file \
             (mode 0600) and name it with url_file instead"
                .to_owned(),
        );
    }
    Ok(url)
}

/// Why a sink's files could not be used. Messages name the sink, the key and the file, never
/// what the file holds.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// `%d/NAME` without `$CREDENTIALS_DIRECTORY` (not started by systemd with credentials).
    #[error(
        "sink {sink}: `{key}` = \"%d/{name}\" needs $CREDENTIALS_DIRECTORY, which is not set: \
         add LoadCredential={name}:/etc/cwp-portwatch/{name} (or LoadCredentialEncrypted=) to \
         the unit; outside systemd, write the file's path instead"
    )]
    NoCredentialsDirectory {
        /// The sink's name.
        sink: String,
        /// `url_file` or `secret_file`.
        key: &'static str,
        /// The credential's name.
        name: String,
    },
    /// The file cannot be read (missing, a directory, permissions, too big, not UTF-8), or it
    /// is readable by every user.
    #[error("sink {sink}: `{key}` {}: {reason}", shown_path(path))]
    Unreadable {
        /// The sink's name.
        sink: String,
        /// `url_file` or `secret_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// Why, never the content.
        reason: String,
    },
    /// The file holds no URL a sink can use, or no secret.
    #[error("sink {sink}: `{key}` {}: what it holds {problem}", shown_path(path))]
    Invalid {
        /// The sink's name.
        sink: String,
        /// `url_file` or `secret_file`.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong, without the value.
        problem: String,
    },
}

impl ResolveError {
    /// Stable machine-readable code, for `error_code` fields.
    pub fn code(&self) -> &'static str {
        match self {
            ResolveError::NoCredentialsDirectory { .. } => "SinkError.NoCredentialsDirectory",
            ResolveError::Unreadable { .. } => "SinkError.Unreadable",
            ResolveError::Invalid { .. } => "SinkError.Invalid",
        }
    }
}

/// Reads the sink's `url_file` and `secret_file` (with the process's environment, for
/// `%d/NAME`).
pub fn resolve(settings: &SinkSettings) -> Result<ResolvedSink, ResolveError> {
    resolve_with(settings, &Environment::from_process())
}

/// [`resolve`] with the environment given (for tests).
pub fn resolve_with(
    settings: &SinkSettings,
    env: &Environment,
) -> Result<ResolvedSink, ResolveError> {
    let url = match &settings.url {
        UrlSource::Inline(url) => SecretString::from(url.as_str().to_owned()),
        UrlSource::File(path) => {
            let (path, text) = read_file(settings, "url_file", path, env)?;
            let invalid = |problem: String| ResolveError::Invalid {
                sink: settings.name.clone(),
                key: "url_file",
                path: path.clone(),
                problem,
            };
            let url = check_url(&text, true).map_err(invalid)?;
            // The key travels in the URL: never in clear text over the network.
            if settings.kind.url_is_secret()
                && url.scheme() == "http"
                && !crate::endpoint::is_loopback(&url)
            {
                return Err(invalid(format!(
                    "is an http:// URL of a host that is not loopback, which would send the \
                     {} robot's key unencrypted; write its https:// URL",
                    settings.kind.as_str()
                )));
            }
            SecretString::from(url.as_str().to_owned())
        }
    };
    let secret = match &settings.secret_file {
        Some(path) => {
            let (path, text) = read_file(settings, "secret_file", path, env)?;
            if let Some(problem) =
                crate::credentials::value_problem("the secret", &text, MAX_SECRET_CHARS)
            {
                return Err(ResolveError::Invalid {
                    sink: settings.name.clone(),
                    key: "secret_file",
                    path,
                    problem: problem.replacen("the secret ", "", 1),
                });
            }
            Some(SecretString::from(text))
        }
        None => None,
    };
    Ok(ResolvedSink {
        settings: settings.clone(),
        url,
        secret,
    })
}

/// The trimmed content of the file `key` names (`%d/NAME` resolved), with the path read.
fn read_file(
    settings: &SinkSettings,
    key: &'static str,
    path: &Path,
    env: &Environment,
) -> Result<(PathBuf, String), ResolveError> {
    let path = match credential_name(path) {
        Some(name) => match env
            .get("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.trim().is_empty())
        {
            Some(dir) => Path::new(dir).join(name),
            None => {
                return Err(ResolveError::NoCredentialsDirectory {
                    sink: settings.name.clone(),
                    key,
                    name: name.to_owned(),
                });
            }
        },
        None => path.to_path_buf(),
    };
    let unreadable = |reason: String| ResolveError::Unreadable {
        sink: settings.name.clone(),
        key,
        path: path.clone(),
        reason,
    };
    let text = match crate::credentials::read_secret_file(&path) {
        Ok(Some(text)) => text,
        Ok(None) => {
            return Err(unreadable(
                "does not exist or is empty; write the value into it (mode 0600, owned by the \
                 service's user)"
                    .to_owned(),
            ));
        }
        Err(crate::credentials::CredentialError::Unreadable { reason, .. }) => {
            return Err(unreadable(reason));
        }
        Err(other) => return Err(unreadable(other.to_string())),
    };
    // A key every local user can read is no key: refuse it before it is used.
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.permissions().mode() & 0o004 != 0 => Err(unreadable(
            "is readable by every user of this host; make it private: chmod 600 (or 640 \
             with the service's group)"
                .to_owned(),
        )),
        Ok(_) => Ok((path, text)),
        Err(error) => Err(unreadable(error.to_string())),
    }
}

#[cfg(test)]
mod tests;
