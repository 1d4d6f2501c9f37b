//! The engine's side of [`crate::metrics`]: what the dispatcher tells the registry, kept out
//! of the loop's code so the loop reads as before. Without `[metrics]` the engine holds no
//! registry and each hook is one `None` check. (The per-answer hook, called in each request's
//! future, is `lane::answered`: it needs nothing of the engine.)

use std::sync::Arc;

use tokio::time::Instant;

use super::Poller;
use super::dispatcher::Engine;
use super::lane::Action;
use crate::metrics::{Metrics, Snapshot};

impl<P: Poller> Engine<P> {
    /// Exports to `metrics`: counts answers, refreshes its gauges with the heartbeat, and (for
    /// `agent_status`) tells it the statuses known from the state file. Before
    /// [`Engine::with_inventory`], which tells it the findings stored (the gauges of the
    /// policy's findings then start from them, and the events move them).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        for (record, name) in self.agents.named_records() {
            if let Some(known) = &record.known {
                metrics.agent_known(
                    &Arc::from(&*record.uuid.text()),
                    &Arc::from(name),
                    &known.status,
                );
            }
        }
        self.metrics = Some(metrics);
        self
    }

    /// The gauges, on the heartbeat's once-per-second beat.
    pub(super) fn refresh_metrics(&mut self, now: Instant) {
        let Some(metrics) = self.metrics.clone() else {
            return;
        };
        let mut rates = [("", 0u32); Action::ALL.len()];
        let mut poll_lag = std::time::Duration::ZERO;
        for (slot, lane) in rates.iter_mut().zip(self.account.lanes.iter_mut()) {
            *slot = (lane.action.api_name(), lane.pacer.rate());
            if let Some(due) = lane.queue.next_due() {
                poll_lag = poll_lag.max(now.saturating_duration_since(due));
            }
        }
        if let Some(open) = self.open_ports_total() {
            metrics.set_open_ports(open);
        }
        metrics.refresh(&Snapshot {
            agents: self.agents.len(),
            known: &|f| self.agents.for_each_status(f),
            is_known: &|uuid| {
                crate::agent_uuid::AgentUuid::parse(uuid)
                    .is_ok_and(|u| self.agents.known_of(&u).is_some())
            },
            // The account's own lanes only (a `cwp` account has two of the five actions).
            rates: &rates[..self.account.lanes.len().min(rates.len())],
            poll_lag,
            clock_skew_ms: self.account.poller.clock_offset_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use crate::api::ApiError;
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::api::TaskStatus;
    use crate::events::{CollectingSink, Event, EventSink, Tee};
    use crate::scheduler::Intervals;

    /// Answers after 50 ms: agents whose Uuid ends in 0, 1 or 2 are unknown to the API, the
    /// others COLLECTING for their first answer and COMPLETE after.
    #[derive(Clone, Default)]
    struct Fake {
        sent: Arc<AtomicUsize>,
        answered: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    }

    impl Poller for Fake {
        fn poll(
            &self,
            uuid: &str,
        ) -> impl std::future::Future<Output = Result<TaskStatus, ApiError>> + Send {
            let this = self.clone();
            let uuid = uuid.to_owned();
            async move {
                this.sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
                if uuid.ends_with(['0', '1', '2']) {
                    return Err(ApiError::Api {
                        code: "ResourceNotFound".into(),
                        message: "m".into(),
                        request_id: Some("r".into()),
                    });
                }
                let mut answered = this.answered.lock().unwrap();
                let n = answered.entry(uuid.clone()).or_default();
                *n += 1;
                let status = if *n == 1 { "COLLECTING" } else { "COMPLETE" };
                Ok(TaskStatus {
                    status: status.into(),
                    request_id: format!("r-{uuid}"),
                })
            }
        }
    }

    /// 20/s, short intervals, 4 in flight.
    fn config() -> crate::engine::EngineConfig {
        crate::engine::EngineConfig {
            requests_per_second: 20,
            max_in_flight: 4,
            intervals: Intervals {
                settled: Duration::from_secs(2),
                collecting: Duration::from_secs(1),
                offline: Duration::from_secs(2),
            },
            once: false,
        }
    }

    fn value(text: &str, series: &str) -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .parse()
            .unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn the_engine_counts_every_answer_and_the_registry_every_logged_change() {
        let text: String = (0..10)
            .map(|i| format!("[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\n"))
            .collect();
        let agents = crate::watchlist::Watchlist::from_toml_str(&text, "w.toml".as_ref())
            .unwrap()
            .agents;
        let metrics = Arc::new(Metrics::new(false));
        let log = Arc::new(CollectingSink::default());
        let sink: Arc<dyn EventSink> = Arc::new(Tee(log.clone(), metrics.clone()));
        let fake = Fake::default();
        let sent = fake.sent.clone();
        let config = config();
        let engine =
            Engine::new(fake, sink, config, &agents, HashMap::new()).with_metrics(metrics.clone());
        let stop = CancellationToken::new();
        let run = tokio::spawn(engine.run(stop.clone()));
        tokio::time::sleep(Duration::from_secs(6)).await;
        stop.cancel();
        let (_, report) = run.await.unwrap();
        assert_eq!(report.abandoned, 0);
        let text = metrics.encode(false);

        // Every request answered is counted once, by outcome, with its 50 ms.
        let action = "action=\"DescribeOpenPortTaskStatus\"";
        let ok = value(
            &text,
            &format!("cwp_portwatch_api_requests_total{{{action},outcome=\"ok\"}}"),
        );
        let not_found = value(
            &text,
            &format!("cwp_portwatch_api_requests_total{{{action},outcome=\"ResourceNotFound\"}}"),
        );
        assert_eq!(ok + not_found, sent.load(Ordering::Relaxed) as f64);
        assert!(not_found >= 3.0 && ok >= 14.0, "{ok} {not_found}");
        let count = value(
            &text,
            &format!("cwp_portwatch_api_request_duration_seconds_count{{{action}}}"),
        );
        let sum = value(
            &text,
            &format!("cwp_portwatch_api_request_duration_seconds_sum{{{action}}}"),
        );
        assert_eq!(count, ok + not_found);
        assert!((sum - count * 0.05).abs() < 1e-6, "{sum} for {count}");

        // status_changes_total: exactly the status_changed events the log got.
        let changes = log
            .events()
            .iter()
            .filter(|e| matches!(e, Event::StatusChanged { .. }))
            .count();
        assert_eq!(
            changes,
            3 + 7 + 7,
            "first answers, then COLLECTING → COMPLETE"
        );
        let counted: f64 = text
            .lines()
            .filter(|l| l.starts_with("cwp_portwatch_status_changes_total{"))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum();
        assert_eq!(counted, changes as f64);

        // The gauges as of the last heartbeat.
        let agents = |s: &str| value(&text, &format!("cwp_portwatch_agents{{status=\"{s}\"}}"));
        assert_eq!(agents("COMPLETE"), 7.0);
        assert_eq!(agents("NOT_FOUND"), 3.0);
        assert_eq!(agents("UNKNOWN"), 0.0);
        assert_eq!(
            value(
                &text,
                &format!("cwp_portwatch_rate_limit_per_second{{{action}}}")
            ),
            20.0
        );
    }

    #[test]
    fn statuses_from_the_state_file_are_per_agent_series_before_any_poll() {
        let text = "[[agent]]\nuuid = \"00000000-0000-4000-8000-000000000001\"\nname = \"db\"\n\
                    [[agent]]\nuuid = \"00000000-0000-4000-8000-000000000002\"\n";
        let agents = crate::watchlist::Watchlist::from_toml_str(text, "w.toml".as_ref())
            .unwrap()
            .agents;
        let known: crate::tracker::KnownMap = [(
            "00000000-0000-4000-8000-000000000001".parse().unwrap(),
            crate::tracker::Known {
                status: crate::status::Status::Complete,
                request_id: "r".into(),
                seen_at: 0,
            },
        )]
        .into_iter()
        .collect();
        let metrics = Arc::new(Metrics::new(true));
        let config = config();
        let _engine = Engine::new(
            Fake::default(),
            Arc::new(CollectingSink::default()),
            config,
            &agents,
            known,
        )
        .with_metrics(metrics.clone());
        let text = metrics.encode(false);
        let rows: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("cwp_portwatch_agent_status{"))
            .collect();
        assert_eq!(
            rows,
            [
                "cwp_portwatch_agent_status{uuid=\"00000000-0000-4000-8000-000000000001\",\
              agent_name=\"db\",status=\"COMPLETE\"} 1"
            ],
            "only the agent with a known status: {text}"
        );
    }
}
