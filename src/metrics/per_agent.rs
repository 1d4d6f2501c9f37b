//! The per-agent series (`per_agent = true`), collected at scrape time from a copy:
//! `agent_status` ([`PerAgent`]) and `agent_unexpected_ports` / `agent_missing_ports`
//! ([`AgentFindings`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::policy::Severity;
use crate::status::Status;

use super::MAX_LABEL_CHARS;
use super::labels::{AccountLabel, SEVERITIES};

/// `agent_status{uuid,agent_name,status} 1`, one series per agent (`per_agent = true`).
/// Kept from the events (and the statuses known at start), encoded at scrape time from a
/// copy, so a scrape of 100,000 agents never holds the lock the log's events wait for.
#[derive(Debug, Default)]
pub(super) struct PerAgent {
    agents: Mutex<HashMap<(AccountLabel, Arc<str>), AgentRow>>,
}

/// An agent's name and last known status.
pub(super) type AgentRow = (Arc<str>, Status);

impl PerAgent {
    pub(super) fn set(
        &self,
        account: &AccountLabel,
        uuid: Arc<str>,
        name: Arc<str>,
        status: Status,
    ) {
        self.agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((account.clone(), uuid), (name, status));
    }

    /// Drops agents no longer watched (the engine forgets them on a reload). Every agent
    /// here has a status, so is one of the `known` watched agents with one: more here means
    /// some were removed.
    pub(super) fn forget_unwatched(
        &self,
        account: &AccountLabel,
        known: usize,
        is_known: &dyn Fn(&str) -> bool,
    ) {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = agents.keys().filter(|(a, _)| a == account).count();
        if mine > known {
            agents.retain(|(a, uuid), _| a != account || is_known(uuid));
        }
    }
}

impl Collector for PerAgent {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<(AccountLabel, Arc<str>, Arc<str>, Status)> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((a, u), (n, s))| (a.clone(), u.clone(), n.clone(), s.clone()))
            .collect();
        let mut metric = encoder.encode_descriptor(
            "agent_status",
            "1 per agent, labelled with its last known status (per_agent = true)",
            None,
            MetricType::Gauge,
        )?;
        for (account, uuid, name, status) in &rows {
            let name: String = name.chars().take(MAX_LABEL_CHARS).collect();
            let status: String = status.as_str().chars().take(MAX_LABEL_CHARS).collect();
            let labels = (
                account.clone(),
                [
                    ("uuid", uuid.as_ref()),
                    ("agent_name", name.as_str()),
                    ("status", status.as_str()),
                ],
            );
            ConstGauge::new(1i64).encode(metric.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// Index of a severity in [`SEVERITIES`].
pub(super) fn severity_index(severity: Severity) -> usize {
    match severity {
        Severity::Info => 0,
        Severity::Notice => 1,
        Severity::Warning => 2,
        Severity::Critical => 3,
    }
}

/// `agent_unexpected_ports{uuid,agent_name,severity}` and `agent_missing_ports{…}`, per agent
/// with findings (`per_agent = true`), kept from the finding events like `agent_status`; an
/// agent whose findings all cleared has no series.
#[derive(Debug, Default)]
pub(super) struct AgentFindings {
    agents: Mutex<HashMap<(AccountLabel, Arc<str>), FindingsRow>>,
}

/// An agent's name and its findings by severity: unexpected, then missing.
#[derive(Debug, Clone)]
pub(super) struct FindingsRow {
    name: Arc<str>,
    counts: [[i64; 4]; 2],
}

impl AgentFindings {
    pub(super) fn add(
        &self,
        account: &AccountLabel,
        uuid: &str,
        name: &str,
        unexpected: bool,
        severity: Severity,
        n: i64,
    ) {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (account.clone(), Arc::from(uuid));
        let row = agents.entry(key.clone()).or_insert_with(|| FindingsRow {
            name: Arc::from(name),
            counts: [[0; 4]; 2],
        });
        if !name.is_empty() && *row.name != *name {
            row.name = Arc::from(name);
        }
        let cell = &mut row.counts[usize::from(!unexpected)][severity_index(severity)];
        *cell = cell.saturating_add(n);
        if row.counts.iter().flatten().all(|c| *c == 0) {
            agents.remove(&key);
        }
    }
}

impl Collector for AgentFindings {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let rows: Vec<(AccountLabel, Arc<str>, FindingsRow)> = self
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((a, u), row)| (a.clone(), u.clone(), row.clone()))
            .collect();
        for (which, name, help) in [
            (
                0,
                "agent_unexpected_ports",
                "Unexpected ports per agent and severity (per_agent = true)",
            ),
            (
                1,
                "agent_missing_ports",
                "Missing required ports per agent and severity (per_agent = true)",
            ),
        ] {
            let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (account, uuid, row) in &rows {
                let agent_name: String = row.name.chars().take(MAX_LABEL_CHARS).collect();
                for severity in SEVERITIES {
                    let n = row.counts[which][severity_index(severity)];
                    if n == 0 {
                        continue;
                    }
                    let labels = (
                        account.clone(),
                        [
                            ("uuid", uuid.as_ref()),
                            ("agent_name", agent_name.as_str()),
                            ("severity", severity.as_str()),
                        ],
                    );
                    ConstGauge::new(n).encode(metric.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
