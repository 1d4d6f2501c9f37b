//! `[ha]` fencing in the dispatcher, under paused time with a fake poller: while the poller
//! may not send, no job is taken; a request that meets a fence closing under it
//! ([`ApiError::Fenced`]) is put back with no status change and no event.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::{CollectingSink, Event};

/// Answers COMPLETE while `open`; `fenced_answers` more calls meet a fence that closed
/// between the dispatcher's look and the send.
#[derive(Clone, Default)]
struct Fenced {
    open: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    fenced_answers: Arc<AtomicUsize>,
}

impl Poller for Fenced {
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let this = self.clone();
        let uuid = uuid.to_string();
        async move {
            let raced = this
                .fenced_answers
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok();
            if raced || !this.open.load(Ordering::Acquire) {
                return Err(ApiError::Fenced);
            }
            this.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok(TaskStatus {
                status: "COMPLETE".into(),
                request_id: format!("r-{uuid}"),
            })
        }
    }
    fn may_send(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }
}

fn agents(n: usize) -> Vec<Agent> {
    let text: String = (0..n)
        .map(|i| format!("[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\n"))
        .collect();
    crate::watchlist::Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
        .expect("test watchlist parses")
        .agents
}

fn config() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 4,
        intervals: crate::scheduler::Intervals {
            settled: Duration::from_secs(60),
            collecting: Duration::from_secs(5),
            offline: Duration::from_secs(30),
        },
        once: false,
    }
}

#[tokio::test(start_paused = true)]
async fn a_closed_fence_holds_every_job_and_an_open_one_releases_them() {
    let poller = Fenced::default();
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        poller.clone(),
        sink.clone(),
        config(),
        &agents(5),
        HashMap::new(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.run(stop.clone()));
    // Closed for a long while: nothing is sent, nothing is said.
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(poller.sent.load(Ordering::Relaxed), 0);
    assert!(sink.events().is_empty(), "{:?}", sink.events());
    // Open: every agent is polled at once, each status reported once.
    poller.open.store(true, Ordering::Release);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(poller.sent.load(Ordering::Relaxed), 5);
    let changes = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::StatusChanged { .. }))
            .count()
    };
    assert_eq!(changes(&sink.events()), 5);
    stop.cancel();
    let (_, report) = running.await.unwrap();
    assert_eq!(report.sent, 5);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_meets_a_closing_fence_is_put_back_without_an_event() {
    let poller = Fenced::default();
    poller.open.store(true, Ordering::Release);
    // The first three requests find the fence closed under them.
    poller.fenced_answers.store(3, Ordering::Release);
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        poller.clone(),
        sink.clone(),
        config(),
        &agents(3),
        HashMap::new(),
    );
    let stop = CancellationToken::new();
    let running = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    running.await.unwrap();
    assert_eq!(poller.fenced_answers.load(Ordering::Relaxed), 0);
    assert_eq!(
        poller.sent.load(Ordering::Relaxed),
        3,
        "each agent once it could"
    );
    let events = sink.events();
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Event::StatusChanged { .. })),
        "no poll_failed for a request that was never sent: {events:?}"
    );
    assert_eq!(events.len(), 3, "{events:?}");
}
