//! Alert delivery's series: `deliveries_total{sink,outcome}` and `outbox_events{sink}`.
//!
//! Process-wide: the sinks are shared by every account, so these carry the sink's name (a
//! config name, `[a-z0-9_-]{1,32}`: bounded by the config) and never `account`; any
//! account's handle updates the same series.

use prometheus_client::encoding::EncodeLabelSet;

use super::Metrics;

/// What became of a sink's events (`outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryOutcome {
    /// Delivered (the receiver took the message).
    Ok,
    /// In a message that failed; tried again.
    Retry,
    /// Given up after `max_age` (`delivery_failed`).
    Failed,
    /// Given up by a full outbox (`delivery_failed`).
    Dropped,
}

impl DeliveryOutcome {
    /// Every outcome, exported from the start for each sink.
    pub const ALL: [DeliveryOutcome; 4] = [
        DeliveryOutcome::Ok,
        DeliveryOutcome::Retry,
        DeliveryOutcome::Failed,
        DeliveryOutcome::Dropped,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Ok => "ok",
            DeliveryOutcome::Retry => "retry",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Dropped => "dropped",
        }
    }
}

/// Labels `{sink,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DeliveryLabels {
    pub(super) sink: String,
    pub(super) outcome: &'static str,
}

/// Labels `{sink}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SinkLabel {
    pub(super) sink: String,
}

impl Metrics {
    /// Exports `sink`'s series at zero (an `increase()` over a series that appears late
    /// misses its first count).
    pub fn sink_known(&self, sink: &str) {
        for outcome in DeliveryOutcome::ALL {
            self.sink_events(sink, outcome, 0);
        }
        let _ = self.shared.outbox_events.get_or_create(&SinkLabel {
            sink: sink.to_owned(),
        });
    }

    /// `n` of `sink`'s events had `outcome`.
    pub fn sink_events(&self, sink: &str, outcome: DeliveryOutcome, n: u64) {
        self.shared
            .deliveries
            .get_or_create(&DeliveryLabels {
                sink: sink.to_owned(),
                outcome: outcome.as_str(),
            })
            .inc_by(n);
    }

    /// Events now waiting in `sink`'s outbox.
    pub fn set_outbox_events(&self, sink: &str, n: usize) {
        self.shared
            .outbox_events
            .get_or_create(&SinkLabel {
                sink: sink.to_owned(),
            })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .map(|v| v.parse().expect("a number"))
    }

    #[test]
    fn sink_series_carry_the_sink_and_never_the_account() {
        let handles = Metrics::for_accounts(false, &["prod", "test"]);
        handles[0].sink_known("oncall");
        handles[1].sink_events("oncall", DeliveryOutcome::Ok, 3);
        handles[0].sink_events("oncall", DeliveryOutcome::Failed, 2);
        handles[1].set_outbox_events("oncall", 7);
        let text = handles[0].encode(false);
        let series = |outcome: &str| {
            value(
                &text,
                &format!("cwp_portwatch_deliveries_total{{sink=\"oncall\",outcome=\"{outcome}\"}}"),
            )
        };
        assert_eq!(series("ok"), Some(3.0), "{text}");
        assert_eq!(series("failed"), Some(2.0));
        assert_eq!(series("retry"), Some(0.0), "exported from the start");
        assert_eq!(series("dropped"), Some(0.0));
        assert_eq!(
            value(&text, "cwp_portwatch_outbox_events{sink=\"oncall\"}"),
            Some(7.0)
        );
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("cwp_portwatch_deliveries") && l.contains("account")),
            "{text}"
        );
    }
}
