//! `cwp_portwatch_leader`: 1 while this process leads its `[ha]` election, 0 while it waits
//! as a standby (`docs/ha.md`). Without `[ha]` the series does not exist: a single daemon is
//! no candidate, and a constant 1 would make "exactly one leader" alerts count it.

use std::sync::atomic::{AtomicI64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

/// No `[ha]`: nothing is exported.
const NOT_A_CANDIDATE: i64 = -1;

/// The role, read at scrape time.
#[derive(Debug)]
pub(super) struct Leader {
    role: AtomicI64,
}

impl Default for Leader {
    fn default() -> Self {
        Leader {
            role: AtomicI64::new(NOT_A_CANDIDATE),
        }
    }
}

impl Leader {
    /// Leads (`true`, 1) or waits as a standby (`false`, 0); from now on exported.
    pub(super) fn set(&self, leading: bool) {
        self.role.store(i64::from(leading), Ordering::Relaxed);
    }

    /// The value exported, `None` without `[ha]`.
    pub(super) fn get(&self) -> Option<i64> {
        let role = self.role.load(Ordering::Relaxed);
        (role != NOT_A_CANDIDATE).then_some(role)
    }
}

impl Collector for Leader {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(role) = self.get() else {
            return Ok(());
        };
        let metric = encoder.encode_descriptor(
            "leader",
            "1 while this process leads its [ha] election and polls, 0 while it waits as a \
             standby (only with [ha])",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(role).encode(metric)
    }
}
