//! The validated `[[sink]]` blocks ([`SinkSettings`], made by the config check) and what their
//! files hold once read ([`ResolvedSink`]: the URL with its key, the DingTalk secret).
//!
//! Why the URL may come from a file: a WeCom, DingTalk or Slack webhook URL *is* the robot's
//! key, so those kinds take `url_file` only (systemd credentials: `%d/NAME`), never `url` in the
//! config text; `alertmanager` and `webhook` may use an inline `url` without user info or query.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::select::EventSelector;
use crate::policy::Severity;

/// `max_age` when the block names none: retried for a day, then `delivery_failed`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// Records a sink's outbox holds at most (`outbox_limit`); a full one gives up the oldest
/// record that is not a resolution, and says so (`delivery_failed`).
pub const DEFAULT_OUTBOX_LIMIT: usize = 10_000;

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
