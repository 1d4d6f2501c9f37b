//! Metrics and health: the `[metrics]` registry, what feeds it, and (in `server`) the
//! `GET /metrics` and `GET /healthz` listener.
//!
//! Owns every series the daemon exports (names in `docs/metrics.md`, prefix
//! `cwp_portwatch_`, plus the standard unprefixed `process_*`). Exposition is
//! `prometheus-client`'s: text 0.0.4 by default, OpenMetrics when asked; nothing here writes
//! the format by hand.
//!
//! Where the numbers come from, so that they cannot disagree with the log:
//! - counters of events (`status_changes_total`, `port_events_total`) are counted by
//!   [`Metrics`] as an [`EventSink`], teed with the log sink: the same stream, not a second
//!   code path;
//! - per request (`api_requests_total`, `api_request_duration_seconds`): one call,
//!   [`Metrics::api_answer`], where the engine receives an answer;
//! - gauges (`agents`, `rate_limit_per_second`, `poll_lag_seconds`, `clock_skew_seconds`):
//!   [`Metrics::refresh`], from the dispatcher's once-per-second heartbeat refresh;
//! - `process_*`: read from `/proc/self` at scrape time (`process`).
//!
//! The engine holds `Option<Arc<Metrics>>`: without `[metrics] listen` none of this exists.
//! A [`Metrics`] is one account's handle on the one registry ([`Metrics::for_accounts`]): with
//! several accounts each handle labels its series `account`, so one engine's refresh never
//! overwrites another's gauges; with one account there is no such label.
//!
//! This file holds the registry and [`Metrics`]; `labels.rs` the label sets and the bound on
//! values from outside; `per_agent.rs` the per-agent collectors; `server.rs` the listener;
//! `process.rs` the `process_*` series.

mod delivery;
mod labels;
mod leader;
mod per_agent;
mod process;
mod server;

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::events::{Event, EventSink, FindingEvent, FindingKind};
use crate::policy::{Finding, Findings, Severity};
use crate::status::Status;

pub use delivery::DeliveryOutcome;
pub use server::{Health, MetricsError, MetricsServer, OPENMETRICS_CONTENT_TYPE, STALE_AFTER};

/// The prefix of every series but the `process_*` ones.
pub const PREFIX: &str = "cwp_portwatch";

/// Distinct unknown values a label fed by the API (an error code, a status) may take; later
/// unknown ones are counted as `other` (or `<family>.other`); known ones never count. The API's answers are hostile input: without a cap, a server
/// inventing codes would grow the registry (and every scrape) without end.
pub const MAX_LABEL_VALUES: usize = 64;
/// Characters kept of a label value from outside (error codes, statuses, agent names).
pub const MAX_LABEL_CHARS: usize = 128;

/// Called once per status by [`Snapshot::known`].
pub type StatusVisitor<'v> = &'v mut dyn FnMut(&Status);

/// What one refresh of the gauges sees (built by the dispatcher once per second).
pub struct Snapshot<'a> {
    /// Agents watched.
    pub agents: usize,
    /// Calls its argument with the last known status of each watched agent that has one.
    pub known: &'a dyn Fn(StatusVisitor<'_>),
    /// Is this Uuid a watched agent with a known status?
    pub is_known: &'a dyn Fn(&str) -> bool,
    /// Per API action, the send rate in force.
    pub rates: &'a [(&'static str, u32)],
    /// How overdue the most overdue job is (zero when nothing is late).
    pub poll_lag: Duration,
    /// Server minus local clock, milliseconds.
    pub clock_skew_ms: i64,
}

use labels::*;
use per_agent::{AgentFindings, PerAgent};

/// The statuses this build knows, always exported (a zero is a value an alert can compare).
const KNOWN_STATUSES: [Status; 8] = Status::KNOWN;

/// The port events counted by `port_events_total` (emitted by the open-port inventory).
pub const PORT_EVENTS: [&str; 2] = ["port_opened", "port_closed"];

/// The registry and every family, shared by the accounts' handles.
#[derive(Debug)]
struct Families {
    registry: Registry,
    agents: Family<With<StatusLabel>, Gauge>,
    status_changes: Family<With<ChangeLabels>, Counter>,
    api_requests: Family<With<RequestLabels>, Counter>,
    api_duration: Family<With<ActionLabel>, Histogram>,
    rate_limit: Family<With<ActionLabel>, Gauge>,
    poll_lag: Family<AccountLabel, Gauge<f64, AtomicU64>>,
    clock_skew: Family<AccountLabel, Gauge<f64, AtomicU64>>,
    port_events: Family<With<EventLabel>, Counter>,
    open_ports: Family<AccountLabel, Gauge>,
    unexpected_ports: Family<With<SeverityLabel>, Gauge>,
    missing_ports: Family<With<SeverityLabel>, Gauge>,
    /// Alert delivery, per sink (process-wide: no `account` label).
    deliveries: Family<delivery::DeliveryLabels, Counter>,
    outbox_events: Family<delivery::SinkLabel, Gauge>,
    per_agent: Option<Arc<PerAgent>>,
    /// Per agent findings (`per_agent = true`).
    agent_findings: Option<Arc<AgentFindings>>,
    /// `leader`, exported only with `[ha]` ([`Metrics::set_leader`]).
    leader: Arc<leader::Leader>,
    /// Error codes seen as `outcome`.
    outcomes: Bounded,
    /// Statuses this build does not know, seen as labels.
    statuses: Bounded,
    /// Held while an answer updates `api_requests` and `api_duration`, and while a scrape
    /// encodes: the two families are encoded one after the other, so without it a scrape on
    /// another thread could catch an answer counted in one and not yet in the other
    /// (`sum(api_requests_total) = sum(api_request_duration_seconds_count)` at every scrape).
    answers: Mutex<()>,
}

/// One account's handle on the registry: what its engine and its events update. With one
/// account its series carry no `account` label; with several, each handle's carry its name.
#[derive(Debug)]
pub struct Metrics {
    shared: Arc<Families>,
    account: AccountLabel,
    /// Unknown statuses exported in `agents` at the last refresh (removed when gone).
    other_statuses: Mutex<Vec<String>>,
}

/// `api_request_duration_seconds` buckets: 5 ms to about 10 s, doubling. The API answers in
/// tens of milliseconds; the top buckets show timeouts (default 10 s) coming.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 12))
}

impl Metrics {
    /// A registry with every series, for one account (no `account` label); `per_agent` adds
    /// `agent_status`.
    pub fn new(per_agent: bool) -> Metrics {
        let mut handles = Metrics::for_accounts(per_agent, &[]);
        handles.remove(0)
    }

    /// One registry, and a handle per account in `names` (in that order) whose series carry
    /// `account`; with `names` empty, one handle without the label (as [`Metrics::new`]).
    pub fn for_accounts(per_agent: bool, names: &[&str]) -> Vec<Metrics> {
        let mut root = Registry::default();
        let per_agent = per_agent.then(|| Arc::new(PerAgent::default()));
        let agents = Family::<With<StatusLabel>, Gauge>::default();
        let status_changes = Family::<With<ChangeLabels>, Counter>::default();
        let api_requests = Family::<With<RequestLabels>, Counter>::default();
        let api_duration = Family::<With<ActionLabel>, Histogram>::new_with_constructor(
            duration_histogram as fn() -> _,
        );
        let rate_limit = Family::<With<ActionLabel>, Gauge>::default();
        let poll_lag = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
        let clock_skew = Family::<AccountLabel, Gauge<f64, AtomicU64>>::default();
        let port_events = Family::<With<EventLabel>, Counter>::default();
        let open_ports = Family::<AccountLabel, Gauge>::default();
        let unexpected_ports = Family::<With<SeverityLabel>, Gauge>::default();
        let missing_ports = Family::<With<SeverityLabel>, Gauge>::default();
        let agent_findings = per_agent
            .is_some()
            .then(|| Arc::new(AgentFindings::default()));
        let deliveries = Family::<delivery::DeliveryLabels, Counter>::default();
        let outbox_events = Family::<delivery::SinkLabel, Gauge>::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        let leader = Arc::new(leader::Leader::default());
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let accounts: Vec<AccountLabel> = if names.is_empty() {
            vec![AccountLabel(None)]
        } else {
            names
                .iter()
                .map(|n| AccountLabel(Some(Arc::from(*n))))
                .collect()
        };
        for account in &accounts {
            for event in PORT_EVENTS {
                // Exported from the start: `increase()` over a series that appears late
                // misses its first count.
                let _ = port_events.get_or_create(&(account.clone(), EventLabel { event }));
            }
            for status in &KNOWN_STATUSES {
                let status = StatusLabel {
                    status: status.as_str().to_owned(),
                };
                let _ = agents.get_or_create(&(account.clone(), status));
            }
            let _ = poll_lag.get_or_create(account);
            let _ = clock_skew.get_or_create(account);
            let _ = open_ports.get_or_create(account);
            for severity in SEVERITIES {
                let label = (
                    account.clone(),
                    SeverityLabel {
                        severity: severity.as_str(),
                    },
                );
                let _ = unexpected_ports.get_or_create(&label);
                let _ = missing_ports.get_or_create(&label);
            }
        }
        {
            let r = root.sub_registry_with_prefix(PREFIX);
            r.register(
                "agents",
                "Agents watched, by last known status",
                agents.clone(),
            );
            if let Some(p) = &per_agent {
                r.register_collector(Box::new(p.clone()));
            }
            r.register(
                "status_changes",
                "Agent status changes, as logged (status_changed events)",
                status_changes.clone(),
            );
            r.register(
                "api_requests",
                "API requests answered, by action and outcome (ok or the error code)",
                api_requests.clone(),
            );
            r.register_with_unit(
                "api_request_duration",
                "Time from sending an API request to its answer",
                Unit::Seconds,
                api_duration.clone(),
            );
            r.register(
                "rate_limit_per_second",
                "Requests per second in force, by action (lowered after throttling)",
                rate_limit.clone(),
            );
            r.register_with_unit(
                "poll_lag",
                "How overdue the most overdue agent is",
                Unit::Seconds,
                poll_lag.clone(),
            );
            r.register_with_unit(
                "clock_skew",
                "The API's clock minus ours, as learned from answers",
                Unit::Seconds,
                clock_skew.clone(),
            );
            r.register(
                "port_events",
                "Open-port events, as logged (port_opened, port_closed)",
                port_events.clone(),
            );
            r.register(
                "open_ports",
                "Open ports known, in total",
                open_ports.clone(),
            );
            r.register(
                "unexpected_ports",
                "Open ports the expected-ports policy finds unexpected, by severity (as the \
                 port_unexpected and port_unexpected_cleared events say)",
                unexpected_ports.clone(),
            );
            r.register(
                "missing_ports",
                "Required ports the expected-ports policy finds missing, by severity (as the \
                 port_missing and port_missing_cleared events say)",
                missing_ports.clone(),
            );
            if let Some(f) = &agent_findings {
                r.register_collector(Box::new(f.clone()));
            }
            r.register(
                "deliveries",
                "Events of alert delivery by sink and outcome: ok (delivered), retry (in a \
                 message that failed and is tried again), failed (given up after max_age), \
                 dropped (given up by a full outbox)",
                deliveries.clone(),
            );
            r.register(
                "outbox_events",
                "Events waiting in a sink's outbox",
                outbox_events.clone(),
            );
            r.register("build_info", "The running version (always 1)", build_info);
            r.register_collector(Box::new(leader.clone()));
        }
        root.register_collector(Box::new(process::ProcessCollector::new()));
        let shared = Arc::new(Families {
            registry: root,
            agents,
            status_changes,
            api_requests,
            api_duration,
            rate_limit,
            poll_lag,
            clock_skew,
            port_events,
            open_ports,
            unexpected_ports,
            missing_ports,
            deliveries,
            outbox_events,
            per_agent,
            agent_findings,
            leader,
            outcomes: Bounded::new(Vocabulary::Codes),
            statuses: Bounded::new(Vocabulary::Statuses),
            answers: Mutex::new(()),
        });
        accounts
            .into_iter()
            .map(|account| Metrics {
                shared: shared.clone(),
                account,
                other_statuses: Mutex::new(Vec::new()),
            })
            .collect()
    }

    /// The registry, for encoding.
    pub fn registry(&self) -> &Registry {
        &self.shared.registry
    }

    /// The scrape in the Prometheus text format (0.0.4), or OpenMetrics with `openmetrics`.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::new();
        let _answers = self
            .shared
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.shared.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.shared.registry)
        };
        // Writing to a String cannot fail; a collector's error would leave a partial scrape,
        // which Prometheus rejects as a whole rather than misreading.
        if let Err(e) = encoded {
            tracing::warn!("metrics encoding failed: {e}");
        }
        out
    }

    /// An answer to one request of `action` (its API name): `outcome` is `Ok` or the error
    /// code, `elapsed` the time since it was sent.
    pub fn api_answer(&self, action: &'static str, outcome: Result<(), &str>, elapsed: Duration) {
        let outcome = match outcome {
            Ok(()) => "ok".to_owned(),
            Err(code) => self.shared.outcomes.label(code),
        };
        let _answers = self
            .shared
            .answers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        self.shared
            .api_requests
            .get_or_create(&(self.account.clone(), RequestLabels { action, outcome }))
            .inc();
        self.shared
            .api_duration
            .get_or_create(&(self.account.clone(), ActionLabel { action }))
            .observe(elapsed.as_secs_f64());
    }

    /// Sets the gauges from the dispatcher's view (once per second: counting agents per
    /// status is one pass over them).
    pub fn refresh(&self, s: &Snapshot<'_>) {
        let mut counts = [0i64; KNOWN_STATUSES.len()];
        let mut others: HashMap<String, i64> = HashMap::new();
        let mut known_count = 0usize;
        (s.known)(&mut |status| {
            known_count += 1;
            match KNOWN_STATUSES.iter().position(|k| k == status) {
                Some(i) => counts[i] += 1,
                None => {
                    *others
                        .entry(self.shared.statuses.label(status.as_str()))
                        .or_default() += 1
                }
            }
        });
        // Agents without an answer yet (and nothing persisted) are UNKNOWN: the series sum to
        // the watchlist's size.
        let unanswered = s.agents.saturating_sub(known_count);
        let unknown = KNOWN_STATUSES
            .iter()
            .position(|s| *s == Status::Unknown)
            .unwrap_or(0);
        counts[unknown] =
            counts[unknown].saturating_add(i64::try_from(unanswered).unwrap_or(i64::MAX));
        for (status, n) in KNOWN_STATUSES.iter().zip(counts) {
            let status = StatusLabel {
                status: status.as_str().to_owned(),
            };
            self.shared
                .agents
                .get_or_create(&(self.account.clone(), status))
                .set(n);
        }
        let mut previous = self
            .other_statuses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for gone in previous.iter().filter(|p| !others.contains_key(*p)) {
            let status = StatusLabel {
                status: gone.clone(),
            };
            self.shared.agents.remove(&(self.account.clone(), status));
        }
        previous.clear();
        for (status, n) in others {
            let label = StatusLabel {
                status: status.clone(),
            };
            self.shared
                .agents
                .get_or_create(&(self.account.clone(), label))
                .set(n);
            previous.push(status);
        }
        drop(previous);
        for (action, rate) in s.rates {
            self.shared
                .rate_limit
                .get_or_create(&(self.account.clone(), ActionLabel { action }))
                .set(i64::from(*rate));
        }
        self.shared
            .poll_lag
            .get_or_create(&self.account)
            .set(s.poll_lag.as_secs_f64());
        // i64 milliseconds → f64 seconds: exact for any skew a clock can have.
        self.shared
            .clock_skew
            .get_or_create(&self.account)
            .set(s.clock_skew_ms as f64 / 1000.0);
        if let Some(p) = &self.shared.per_agent {
            p.forget_unwatched(&self.account, known_count, s.is_known);
        }
    }

    /// `[ha]`: this process leads (`true`) or waits as a standby; `cwp_portwatch_leader`
    /// exists from the first call on (process-wide: no `account` label).
    pub fn set_leader(&self, leading: bool) {
        self.shared.leader.set(leading);
    }

    /// What `cwp_portwatch_leader` says (`None`: not exported, no `[ha]`).
    pub fn leader(&self) -> Option<i64> {
        self.shared.leader.get()
    }

    /// Open ports known in total (the open-port inventory sets it).
    pub fn set_open_ports(&self, n: u64) {
        self.shared
            .open_ports
            .get_or_create(&self.account)
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An agent's status known at start (from the state file), for `agent_status`: it will
    /// see a `status_changed` only when the status changes again.
    pub fn agent_known(&self, uuid: &Arc<str>, name: &Arc<str>, status: &Status) {
        if let Some(p) = &self.shared.per_agent {
            p.set(&self.account, uuid.clone(), name.clone(), status.clone());
        }
    }
}

impl EventSink for Metrics {
    fn emit(&self, event: &Event) {
        match event {
            Event::StatusChanged {
                uuid,
                agent_name,
                from_status,
                to_status,
                ..
            } => {
                let change = ChangeLabels {
                    from_status: self.status_label(from_status),
                    to_status: self.status_label(to_status),
                };
                self.shared
                    .status_changes
                    .get_or_create(&(self.account.clone(), change))
                    .inc();
                if let Some(p) = &self.shared.per_agent {
                    p.set(
                        &self.account,
                        Arc::from(uuid.as_str()),
                        Arc::from(agent_name.as_str()),
                        to_status.clone(),
                    );
                }
            }
            Event::Finding(f) => self.finding(f),
            other => {
                // By name, so the inventory's events are counted as soon as they exist.
                let name = other.name();
                if let Some(event) = PORT_EVENTS.iter().copied().find(|e| *e == name) {
                    self.shared
                        .port_events
                        .get_or_create(&(self.account.clone(), EventLabel { event }))
                        .inc();
                }
            }
        }
    }
}

impl Metrics {
    /// A finding raised (+1) or cleared (−1), in its family and severity, and per agent.
    fn finding(&self, f: &FindingEvent) {
        let (unexpected, delta) = match f.kind {
            FindingKind::Unexpected => (true, 1),
            FindingKind::UnexpectedCleared(_) => (true, -1),
            FindingKind::Missing => (false, 1),
            FindingKind::MissingCleared(_) => (false, -1),
        };
        self.add_finding(&f.uuid, &f.agent_name, unexpected, f.severity, delta);
    }

    fn add_finding(&self, uuid: &str, name: &str, unexpected: bool, severity: Severity, n: i64) {
        let family = if unexpected {
            &self.shared.unexpected_ports
        } else {
            &self.shared.missing_ports
        };
        let label = (
            self.account.clone(),
            SeverityLabel {
                severity: severity.as_str(),
            },
        );
        family.get_or_create(&label).inc_by(n);
        if let Some(per_agent) = &self.shared.agent_findings {
            per_agent.add(&self.account, uuid, name, unexpected, severity, n);
        }
    }

    /// Findings an agent had stored when the daemon started (no event repeats them), or whose
    /// severity a reload changed without a change of state (no event either): counted as
    /// the events would have. `removed` are taken away, `added` counted.
    pub fn findings_known(&self, uuid: &str, name: &str, removed: &Findings, added: &Findings) {
        for (findings, sign) in [(removed, -1), (added, 1)] {
            for f in &findings.0 {
                let (unexpected, severity) = match f {
                    Finding::Unexpected { severity, .. } => (true, *severity),
                    Finding::Missing { severity, .. } => (false, *severity),
                };
                self.add_finding(uuid, name, unexpected, severity, sign);
            }
        }
    }

    fn status_label(&self, status: &Status) -> String {
        match status {
            Status::Other(_) => self.shared.statuses.label(status.as_str()),
            known => known.as_str().to_owned(),
        }
    }
}

#[cfg(test)]
mod tests;
