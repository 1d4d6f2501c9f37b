//! `kind = "alertmanager"`: records become Alertmanager alerts (`POST {url}/api/v2/alerts`,
//! API v2), and the firing ones are kept alive by re-posting them before their `endsAt`
//! (`docs/delivery-alertmanager.md`).
//!
//! What this kind owns:
//! - the alert of a record: its labels (the alert's identity in Alertmanager: `alertname`,
//!   `account`, `agent`, `uuid`, `port`, `process`, `severity`, `rule`, and `status` for an
//!   agent's status; absent values are left out, never sent empty), its annotations
//!   (`summary`, `description`, `message_id`) and its `startsAt`/`endsAt`;
//! - the firing set: the conditions (findings, statuses) that started and have not ended,
//!   with the exact labels they were posted with, so their end resolves the very same alert
//!   (Alertmanager matches by label set) even when a label such as the agent's name changed
//!   meanwhile. A condition joins it when the message that fired it was taken
//!   ([`Kind::delivered`]) and stops being re-posted ([`Kind::periodic`]) as soon as a message
//!   carrying its end is composed, taken or not (an end given up after `max_age` must not
//!   leave it firing for ever). The set is kept across restarts in the outbox file
//!   ([`Kind::save`]).
//!
//! Why an alert carries an `endsAt` at all: Alertmanager resolves an alert at its `endsAt`, so
//! an alert whose sender died resolves by itself after [`Timing::validity`] instead of firing
//! for ever; a live sender re-posts it every [`Timing::repost_every`], well before that.
//! Routing, grouping, silences and inhibition are Alertmanager's: this kind never reads them.
//!
//! Pure: the time comes in as an argument; the worker sends.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink, SinkSettings};
use crate::policy::Severity;

/// How long a posted alert stays firing in Alertmanager without being posted again (its
/// `endsAt` = now + this).
///
/// Five minutes, like Alertmanager's own `resolve_timeout` default and Prometheus's (which
/// sends `endsAt` = 4 × its resend delay of 1 min): a daemon that stopped or lost its way to
/// Alertmanager lets its alerts resolve within 5 min, while four re-posts in a row may fail
/// (a restart of Alertmanager, a short network cut) before an alert resolves by mistake.
/// `resolve_timeout` itself never applies to our alerts: it is only for alerts that come
/// without an `endsAt`, and ours always have one.
pub const VALIDITY: Duration = Duration::from_secs(5 * 60);

/// How often a firing alert is posted again ([`Kind::periodic`]): every minute, a fifth of
/// [`VALIDITY`] (see there why four may fail). Alertmanager does not notify again on a
/// re-post (its `repeat_interval` decides that), so this costs one small request a minute.
pub const REPOST_EVERY: Duration = Duration::from_secs(60);

/// Alerts in one POST at most: a digest after an outage, or the re-post of a large firing set,
/// is split into requests of at most this many (each alert is at most ~8 KiB: ≤ 1.6 MiB).
pub const MAX_ALERTS_PER_POST: usize = 200;

/// Firing alerts kept at most. A condition beyond it is still posted, once, and resolves in
/// Alertmanager after [`VALIDITY`]; the engine's own findings stay far below this.
pub const MAX_FIRING: usize = 50_000;

/// `generatorURL` of every alert: where a person looks next (the CWP console).
pub const GENERATOR_URL: &str = "https://console.cloud.tencent.com/cwp";

/// A label value at most (bytes; longer ones are cut with `…`).
const MAX_LABEL_BYTES: usize = 256;
/// The `summary` annotation at most.
const MAX_SUMMARY_BYTES: usize = 1024;
/// The `description` annotation at most.
const MAX_DESCRIPTION_BYTES: usize = 4096;
/// Alertmanager's error text in a retry reason at most.
const MAX_REASON_BYTES: usize = 200;

/// The labels this kind sets: a restored file may hold no other (it is hostile too).
const LABEL_NAMES: [&str; 9] = [
    "alertname",
    "account",
    "agent",
    "uuid",
    "port",
    "process",
    "severity",
    "rule",
    "status",
];

/// The events that start a condition lasting until a record that resolves it; every other
/// event (without `resolves`) is a one-off alert.
const CONDITION_EVENTS: [&str; 3] = ["port_unexpected", "port_missing", "status_changed"];

/// How long alerts live and how often they are re-posted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `endsAt` = now + this ([`VALIDITY`]).
    pub validity: Duration,
    /// A firing alert is posted again this often ([`REPOST_EVERY`]); keep it well below
    /// `validity`.
    pub repost_every: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            validity: VALIDITY,
            repost_every: REPOST_EVERY,
        }
    }
}

/// One alert as Alertmanager's `POST /api/v2/alerts` takes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct Alert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    #[serde(rename = "startsAt")]
    starts_at: String,
    #[serde(rename = "endsAt")]
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'static str,
}

/// A condition that is firing: the alert as last posted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Firing {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    starts_at_ms: u64,
    /// When it was last posted (Unix ms); `None` after a restart: re-post at once.
    #[serde(skip)]
    posted_at_ms: Option<u64>,
    /// When a message carrying its end was composed (Unix ms): it is no longer re-posted,
    /// and kept only for its labels until that message is delivered (or, given up, for
    /// `max_age`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ended_at_ms: Option<u64>,
}

/// What the firing set looks like in the outbox file.
#[derive(Serialize, Deserialize)]
struct Saved {
    version: u32,
    firing: BTreeMap<String, Firing>,
}

/// How a message changes the firing set once delivered.
enum Change {
    Fire(String, Firing),
    End(String),
}

/// The alertmanager receiver.
pub struct Alertmanager {
    /// `{url}/api/v2/alerts`.
    url: url::Url,
    timing: Timing,
    /// Firing conditions by their identity ([`conditions_of`]).
    firing: BTreeMap<String, Firing>,
    /// The last message composed: its first and last record and its id.
    composed: Option<(u64, u64, String)>,
    /// How long an ended condition whose end was never delivered is kept (its end is given
    /// up after the sink's `max_age`).
    forget_ended_after: Duration,
    /// Which status changes start an alert.
    status_starts: StatusStarts,
}

impl Alertmanager {
    /// For this sink, with the default [`Timing`].
    pub fn new(sink: &ResolvedSink) -> Self {
        Self::with_timing(sink, Timing::default())
    }

    /// For this sink, with `timing` (tests use seconds instead of minutes).
    pub fn with_timing(sink: &ResolvedSink, timing: Timing) -> Self {
        use secrecy::ExposeSecret;
        // The config check refused a bad URL already; this fallback only keeps a kind built
        // from a file changed since (`url_file`) from panicking: its posts fail and retry.
        let base = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1:9093/").expect("a valid URL"));
        let mut kind = Self::for_url(&base, timing);
        kind.forget_ended_after = sink.settings.max_age;
        kind.status_starts = StatusStarts::of(&sink.settings);
        kind
    }

    /// For the Alertmanager at `base` (`http://host:9093`, or with a path prefix), as a sink
    /// taking every status change as a condition, with the default `max_age`.
    pub fn for_url(base: &url::Url, timing: Timing) -> Self {
        Alertmanager {
            url: alerts_url(base),
            timing,
            firing: BTreeMap::new(),
            composed: None,
            forget_ended_after: crate::delivery::settings::DEFAULT_MAX_AGE,
            status_starts: StatusStarts::all(),
        }
    }

    /// The URL alerts are posted to.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// How many alerts are firing (kept alive by re-posts).
    pub fn firing(&self) -> usize {
        self.firing
            .values()
            .filter(|f| f.ended_at_ms.is_none())
            .count()
    }

    /// The alerts for `records` and how they change the firing set, reading the set as it is
    /// now plus the records before each one (a condition started and ended in one message).
    fn plan(&self, id: &str, records: &[Record], now_ms: u64) -> (Vec<Alert>, Vec<Change>) {
        let validity = millis(self.timing.validity);
        let mut overlay: BTreeMap<String, Option<Firing>> = BTreeMap::new();
        let current = |overlay: &BTreeMap<String, Option<Firing>>, key: &str| match overlay.get(key)
        {
            Some(entry) => entry.clone(),
            None => self.firing.get(key).cloned(),
        };
        let mut alerts = Vec::new();
        let mut changes = Vec::new();
        for record in records {
            let annotations = annotations_of(id, record);
            for Condition {
                key,
                labels,
                starts,
                resolve_unseen,
            } in conditions_of(record, &self.status_starts)
            {
                match (starts, current(&overlay, &key)) {
                    (false, Some(was)) => {
                        // The end: the very labels it fired with.
                        let end = record
                            .at_ms
                            .clamp(was.starts_at_ms, now_ms.max(was.starts_at_ms));
                        alerts.push(alert(&was.labels, &annotations, was.starts_at_ms, end));
                        overlay.insert(key.clone(), None);
                        changes.push(Change::End(key));
                    }
                    (false, None) => {
                        // An end we never saw start (given up, or fired in an earlier life
                        // whose set was lost): resolve it anyway, Alertmanager may hold it.
                        // (A status merely left, never taken as a condition, is no end.)
                        if resolve_unseen {
                            let at = record.at_ms.min(now_ms);
                            alerts.push(alert(&labels, &annotations, at, at));
                        }
                    }
                    (true, was) => {
                        // A condition ended (its end composed) and started again is new.
                        let was = was.filter(|w| w.ended_at_ms.is_none());
                        let mut starts_at_ms = record.at_ms;
                        if let Some(was) = was {
                            if was.labels == labels {
                                // The same alert again (a repeat after a restart): it started
                                // when it first did.
                                starts_at_ms = was.starts_at_ms;
                            } else {
                                // Same condition, other labels (the agent renamed): end the
                                // old alert, or it would fire until its endsAt.
                                let end = record
                                    .at_ms
                                    .clamp(was.starts_at_ms, now_ms.max(was.starts_at_ms));
                                alerts.push(alert(
                                    &was.labels,
                                    &annotations,
                                    was.starts_at_ms,
                                    end,
                                ));
                            }
                        }
                        let ends = record.at_ms.max(now_ms).saturating_add(validity);
                        alerts.push(alert(&labels, &annotations, starts_at_ms, ends));
                        let firing = Firing {
                            labels,
                            annotations: annotations.clone(),
                            starts_at_ms,
                            posted_at_ms: None,
                            ended_at_ms: None,
                        };
                        overlay.insert(key.clone(), Some(firing.clone()));
                        changes.push(Change::Fire(key, firing));
                    }
                }
            }
            if is_one_off(record) {
                // A one-off event: posted once, firing for `validity` from when it reaches
                // Alertmanager (a late delivery is still seen), never re-posted.
                let labels = labels_of(record, &alertname_of(&record.event), None);
                let ends = record.at_ms.max(now_ms).saturating_add(validity);
                alerts.push(alert(&labels, &annotations, record.at_ms, ends));
            }
        }
        (alerts, changes)
    }

    /// The request posting `alerts`.
    fn request(&self, alerts: &[Alert]) -> Request {
        Request {
            url: self.url.clone(),
            headers: Vec::new(),
            // A Vec of plain strings: serialising it cannot fail.
            body: serde_json::to_vec(alerts).unwrap_or_else(|_| b"[]".to_vec()),
        }
    }
}

impl Kind for Alertmanager {
    fn compose(&mut self, id: &str, records: &[Record], now: SystemTime) -> Composed {
        // A record makes at most two alerts (a status left and one entered).
        let covers = records.len().clamp(1, MAX_ALERTS_PER_POST / 2);
        let covered = &records[..covers.min(records.len())];
        let now_ms = unix_ms(now);
        let (alerts, changes) = self.plan(id, covered, now_ms);
        // An ended condition is re-posted no more, delivered or not: were its end given up
        // (Alertmanager unreachable for `max_age`), re-posting it would keep an alert firing
        // for a condition that is over. Its labels stay for the end's retries.
        for change in changes {
            if let Change::End(key) = change
                && let Some(f) = self.firing.get_mut(&key)
            {
                f.ended_at_ms.get_or_insert(now_ms);
            }
        }
        let forget = millis(self.forget_ended_after).saturating_add(millis(self.timing.validity));
        self.firing.retain(|_, f| {
            f.ended_at_ms
                .is_none_or(|ended| ended.saturating_add(forget) > now_ms)
        });
        if let (Some(first), Some(last)) = (covered.first(), covered.last()) {
            self.composed = Some((first.seq, last.seq, id.to_owned()));
        }
        Composed {
            covers: covered.len(),
            request: self.request(&alerts),
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer {
        if (200..300).contains(&status) {
            return Answer::Delivered;
        }
        let what = match status {
            // Alertmanager's answer to an alert it finds invalid (the valid ones of the
            // same POST are taken: a retry only repeats them).
            400 => "Alertmanager refused the alerts",
            429 => "too many requests",
            500..=599 => "Alertmanager (or a proxy before it) failed",
            _ => "unexpected answer",
        };
        let text = error_text(body);
        let reason = if text.is_empty() {
            format!("HTTP {status}: {what}")
        } else {
            format!("HTTP {status}: {what}: {text}")
        };
        Answer::Retry {
            after: retry_after,
            reason,
        }
    }

    fn delivered(&mut self, records: &[Record], now: SystemTime) {
        let now_ms = unix_ms(now);
        // The same records on the same set make the same plan as compose did; the id (for
        // the `message_id` the set re-posts) is the one compose was given for them.
        let id = match (&self.composed, records.first(), records.last()) {
            (Some((first, last, id)), Some(a), Some(b)) if *first == a.seq && *last == b.seq => {
                id.clone()
            }
            _ => String::new(),
        };
        let (_, changes) = self.plan(&id, records, now_ms);
        for change in changes {
            match change {
                Change::Fire(key, mut firing) => {
                    if self.firing.len() >= MAX_FIRING && !self.firing.contains_key(&key) {
                        continue;
                    }
                    firing.posted_at_ms = Some(now_ms);
                    self.firing.insert(key, firing);
                }
                Change::End(key) => {
                    self.firing.remove(&key);
                }
            }
        }
    }

    fn periodic(&mut self, now: SystemTime) -> Option<Request> {
        let now_ms = unix_ms(now);
        let every = millis(self.timing.repost_every);
        if self.next_due_ms()? > now_ms {
            return None;
        }
        // Everything posted at least half an interval ago goes along: alerts fired at
        // different moments fall into one request a minute instead of one each.
        let half = every / 2;
        let mut due: Vec<(&String, Option<u64>)> = self
            .firing
            .iter()
            .filter(|(_, f)| f.ended_at_ms.is_none())
            .filter(|(_, f)| {
                f.posted_at_ms
                    .is_none_or(|p| p.saturating_add(half) <= now_ms)
            })
            .map(|(k, f)| (k, f.posted_at_ms))
            .collect();
        // The stalest first (never posted since a restart before all), so a split re-post
        // reaches the ones closest to their endsAt first.
        due.sort_by_key(|(_, posted)| posted.map_or(0, |p| p.saturating_add(1)));
        due.truncate(MAX_ALERTS_PER_POST);
        let keys: Vec<String> = due.into_iter().map(|(k, _)| k.clone()).collect();
        let ends = now_ms.saturating_add(millis(self.timing.validity));
        let mut alerts = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(f) = self.firing.get_mut(&key) {
                alerts.push(alert(&f.labels, &f.annotations, f.starts_at_ms, ends));
                // No answer comes back to a periodic post: a failed one is retried by the
                // next, a minute later, long before the alert's endsAt.
                f.posted_at_ms = Some(now_ms);
            }
        }
        Some(self.request(&alerts))
    }

    fn next_periodic(&self) -> Option<SystemTime> {
        self.next_due_ms()
            .map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
    }

    fn save(&self) -> Value {
        serde_json::to_value(Saved {
            version: 1,
            firing: self.firing.clone(),
        })
        .unwrap_or(Value::Null)
    }

    fn restore(&mut self, saved: &Value) {
        let Ok(saved) = Saved::deserialize(saved) else {
            return;
        };
        if saved.version != 1 {
            return;
        }
        self.firing = saved
            .firing
            .into_iter()
            .filter_map(|(key, f)| {
                // The file is hostile: keep only our labels, re-bounded; a restored alert is
                // posted again at once (Alertmanager may have resolved it while we were down).
                let labels: BTreeMap<String, String> = f
                    .labels
                    .into_iter()
                    .filter(|(name, _)| LABEL_NAMES.contains(&name.as_str()))
                    .filter_map(|(name, v)| label_text(&v).map(|v| (name, v)))
                    .collect();
                labels.contains_key("alertname").then(|| {
                    let annotations = f
                        .annotations
                        .into_iter()
                        .filter(|(name, _)| ANNOTATION_NAMES.contains(&name.as_str()))
                        .map(|(name, v)| {
                            // The description's lines are its structure; nothing else has any.
                            let v = if name == "description" {
                                bound(
                                    &crate::escape::escape_keeping_lines(&v),
                                    MAX_DESCRIPTION_BYTES,
                                )
                            } else {
                                bound(&crate::escape::escape(&v), MAX_SUMMARY_BYTES)
                            };
                            (name, v)
                        })
                        .collect();
                    (
                        bound(&key, 4 * MAX_LABEL_BYTES),
                        Firing {
                            labels,
                            annotations,
                            starts_at_ms: f.starts_at_ms.min(MAX_MS),
                            posted_at_ms: None,
                            ended_at_ms: f.ended_at_ms,
                        },
                    )
                })
            })
            .take(MAX_FIRING)
            .collect();
    }
}

impl Alertmanager {
    /// When the stalest firing alert is due again (Unix ms; 0 when one waits since a restart).
    fn next_due_ms(&self) -> Option<u64> {
        let every = millis(self.timing.repost_every);
        self.firing
            .values()
            .filter(|f| f.ended_at_ms.is_none())
            .map(|f| f.posted_at_ms.map_or(0, |p| p.saturating_add(every)))
            .min()
    }
}

/// The annotations this kind sets.
const ANNOTATION_NAMES: [&str; 3] = ["summary", "description", "message_id"];

/// A condition a record starts or ends.
struct Condition {
    /// Its identity in the firing set.
    key: String,
    /// The labels of its alert, made from this record.
    labels: BTreeMap<String, String>,
    /// Starts (true) or ends.
    starts: bool,
    /// An end whose start this sink never saw is posted anyway (resolved), in case
    /// Alertmanager holds it from an earlier life.
    resolve_unseen: bool,
}

/// Which status changes start a `CwpAgentStatus` alert: the sink's own choice (`events`,
/// `min_severity`). A sink also receives the change out of a status it took, as that
/// status's end, and that change must not fire an alert for the status it enters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StatusStarts {
    /// The statuses taken; `None`: every one (`status_changed` without a status).
    statuses: Option<Vec<String>>,
    /// `min_severity`.
    min_severity: Severity,
}

impl StatusStarts {
    /// Every status, every severity (a kind made without a sink's settings).
    fn all() -> StatusStarts {
        StatusStarts {
            statuses: None,
            min_severity: Severity::Info,
        }
    }

    /// What the sink's `events` and `min_severity` take.
    fn of(sink: &SinkSettings) -> StatusStarts {
        let selectors: Vec<_> = sink
            .events
            .iter()
            .filter(|s| s.event == "status_changed")
            .collect();
        let statuses = if selectors.iter().any(|s| s.status.is_none()) {
            None
        } else {
            Some(selectors.iter().filter_map(|s| s.status.clone()).collect())
        };
        StatusStarts {
            statuses,
            min_severity: sink.min_severity,
        }
    }

    /// Whether `status` is one the sink took.
    fn takes(&self, status: &str) -> bool {
        self.statuses
            .as_ref()
            .is_none_or(|list| list.iter().any(|s| s == status))
    }
}

/// The conditions `record` starts or ends. A status change ends the status it leaves and
/// starts the one it enters when the sink takes that one ([`StatusStarts`]); a finding starts
/// its `key`, its clear ends it.
fn conditions_of(record: &Record, status_starts: &StatusStarts) -> Vec<Condition> {
    let condition = |key: String, labels, starts, resolve_unseen| Condition {
        key,
        labels,
        starts,
        resolve_unseen,
    };
    if record.event == "status_changed" {
        let account = record.account.as_deref().unwrap_or("");
        let uuid = field_text(record, "uuid").unwrap_or_default();
        let mut out = Vec::new();
        let from = field_text(record, "from_status");
        let to = field_text(record, "to_status");
        if let Some(from) = from.as_deref().filter(|f| Some(*f) != to.as_deref()) {
            let labels = labels_of(record, "CwpAgentStatus", Some(from));
            let unseen = record.resolves && status_starts.takes(from);
            out.push(condition(
                status_key(account, &uuid, from),
                labels,
                false,
                unseen,
            ));
        }
        let starts =
            |to: &&str| status_starts.takes(to) && record.severity >= status_starts.min_severity;
        if let Some(to) = to.as_deref().filter(starts) {
            let labels = labels_of(record, "CwpAgentStatus", Some(to));
            out.push(condition(
                status_key(account, &uuid, to),
                labels,
                true,
                false,
            ));
        }
        return out;
    }
    if ends_condition(record) {
        let started = record
            .event
            .strip_suffix("_cleared")
            .unwrap_or(&record.event);
        let labels = labels_of(record, &alertname_of(started), None);
        return vec![condition(record.key.clone(), labels, false, true)];
    }
    if CONDITION_EVENTS.contains(&record.event.as_str()) {
        let labels = labels_of(record, &alertname_of(&record.event), None);
        return vec![condition(record.key.clone(), labels, true, false)];
    }
    Vec::new()
}

/// Whether `record` (not a status change) ends its condition: a clear, or any record that
/// says it `resolves`.
fn ends_condition(record: &Record) -> bool {
    record.resolves || record.event.ends_with("_cleared")
}

/// Whether `record` is a one-off event: no condition starts or ends with it.
fn is_one_off(record: &Record) -> bool {
    !CONDITION_EVENTS.contains(&record.event.as_str()) && !ends_condition(record)
}

/// An agent's status as a condition: one per account, agent and status.
fn status_key(account: &str, uuid: &str, status: &str) -> String {
    format!("CwpAgentStatus\u{1f}{account}\u{1f}{uuid}\u{1f}{status}")
}

/// `CwpPortUnexpected` for `port_unexpected`: `Cwp` and the event's words capitalised; only
/// ASCII letters and digits survive (an event name from a damaged file stays a clean name).
fn alertname_of(event: &str) -> String {
    let mut name = String::from("Cwp");
    for word in event.split('_') {
        let mut chars = word.chars().filter(char::is_ascii_alphanumeric);
        if let Some(first) = chars.next() {
            name.push(first.to_ascii_uppercase());
            name.extend(chars);
        }
    }
    bound(&name, 64)
}

/// The labels of `record`'s alert named `alertname` (with `status` for an agent's status).
fn labels_of(record: &Record, alertname: &str, status: Option<&str>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(value) = value.as_deref().and_then(label_text) {
            labels.insert(name.to_owned(), value);
        }
    };
    put("alertname", Some(alertname.to_owned()));
    // Always, `default` for the one account of a config without `[[account]]` blocks (as in
    // the record's key): adding a second account later keeps every alert's identity, and a
    // route can group or inhibit by `account` whatever the config.
    put(
        "account",
        Some(
            record
                .account
                .clone()
                .unwrap_or_else(|| crate::account_name::DEFAULT_ACCOUNT.to_owned()),
        ),
    );
    put("agent", field_text(record, "agent_name"));
    put("uuid", field_text(record, "uuid"));
    put("port", field_text(record, "port"));
    put("process", field_text(record, "process_name"));
    put("severity", Some(record.severity.as_str().to_owned()));
    put("rule", field_text(record, "rule"));
    put("status", status.map(str::to_owned));
    labels
}

/// A field as text: strings as they are, numbers and booleans written out; absent, null or
/// structured values are none.
fn field_text(record: &Record, name: &str) -> Option<String> {
    match record.fields.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A label value: escaped (no control character from a host reaches a notification),
/// bounded, never empty (Alertmanager drops empty labels: we leave them out ourselves).
fn label_text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| bound(&crate::escape::escape(value), MAX_LABEL_BYTES))
}

/// `summary` (the event's sentence), `description` (its fields, one per line) and
/// `message_id` (the stable id of the message that posted it).
fn annotations_of(id: &str, record: &Record) -> BTreeMap<String, String> {
    let mut annotations = BTreeMap::new();
    annotations.insert(
        "summary".to_owned(),
        bound(&crate::escape::escape(&record.message), MAX_SUMMARY_BYTES),
    );
    let mut description = format!("event: {}", crate::escape::escape(&record.event));
    for (name, value) in &record.fields {
        let text = match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        description.push('\n');
        description.push_str(&crate::escape::escape(name));
        description.push_str(": ");
        description.push_str(&crate::escape::escape(&text));
        if description.len() > MAX_DESCRIPTION_BYTES {
            break;
        }
    }
    annotations.insert(
        "description".to_owned(),
        bound(&description, MAX_DESCRIPTION_BYTES),
    );
    if !id.is_empty() {
        annotations.insert("message_id".to_owned(), bound(id, MAX_LABEL_BYTES));
    }
    annotations
}

/// One alert.
fn alert(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    starts_ms: u64,
    ends_ms: u64,
) -> Alert {
    Alert {
        labels: labels.clone(),
        annotations: annotations.clone(),
        starts_at: rfc3339(starts_ms),
        ends_at: rfc3339(ends_ms.max(starts_ms)),
        generator_url: GENERATOR_URL,
    }
}

/// The last instant RFC 3339 can write (9999-12-31T23:59:59.999Z), Unix ms.
const MAX_MS: u64 = 253_402_300_799_999;

/// `2026-12-08T02:49:04.533Z` (UTC, milliseconds).
fn rfc3339(ms: u64) -> String {
    let ms = ms.min(MAX_MS);
    let nanos = i128::from(ms) * 1_000_000;
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    at.format(&format)
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000Z".to_owned())
}

/// `now` as Unix milliseconds (0 before 1970, saturating far ahead).
fn unix_ms(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `d` in milliseconds, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `text` cut to at most `max` bytes on a character boundary, `…` marking a cut.
fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// Alertmanager's error (a JSON string such as `"invalid label set: …"`, or whatever a proxy
/// said) as one printable, bounded line.
fn error_text(body: &[u8]) -> String {
    let head = &body[..body.len().min(4 * MAX_REASON_BYTES)];
    let lossy = String::from_utf8_lossy(head);
    let text = match serde_json::from_str::<Value>(&lossy) {
        Ok(Value::String(s)) => s,
        _ => lossy.into_owned(),
    };
    bound(&crate::escape::escape(text.trim()), MAX_REASON_BYTES)
}

/// `{base}/api/v2/alerts` (a base that already names it is kept; query and fragment dropped).
fn alerts_url(base: &url::Url) -> url::Url {
    let mut url = base.clone();
    url.set_query(None);
    url.set_fragment(None);
    let path = url.path().trim_end_matches('/').to_owned();
    if !path.ends_with("/api/v2/alerts") {
        url.set_path(&format!("{path}/api/v2/alerts"));
    }
    url
}

#[cfg(test)]
mod tests;
