//! The health check and the gauges that alerts read, pinned against the real dispatcher
//! (issue 21 items 1 and 2): `/healthz` served from the engine's own heartbeat turns 503 once
//! the loop stops beating; `poll_lag_seconds` grows when the quota cannot cover the
//! watchlist and stays under a second when it can; `clock_skew_seconds` is the skew the API's
//! clock has. The dispatcher runs on paused tokio time with a poller that answers after a
//! set latency, so every number is exact; the skew is also learned end to end from a
//! simulator whose clock is set ahead.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cwp_portwatch::api::{ApiError, TaskStatus};
use cwp_portwatch::engine::{Engine, EngineConfig, EngineStatus, Poller};
use cwp_portwatch::events::{CollectingSink, EventSink};
use cwp_portwatch::metrics::{Metrics, MetricsServer, STALE_AFTER};
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::watchlist::Agent;
use cwp_simulator::SimulatorOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::support::{good_client, scenario, start, steady, uuid};

/// Answers COMPLETE after `latency`; reports `skew_ms` as the API's clock offset.
#[derive(Clone)]
struct Fake {
    latency: Duration,
    skew_ms: i64,
    sent: Arc<AtomicUsize>,
}

impl Fake {
    fn new(latency: Duration, skew_ms: i64) -> Self {
        Fake {
            latency,
            skew_ms,
            sent: Arc::default(),
        }
    }
}

impl Poller for Fake {
    fn poll(&self, _uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let this = self.clone();
        async move {
            this.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(this.latency).await;
            Ok(TaskStatus {
                status: "COMPLETE".into(),
                request_id: "r".into(),
            })
        }
    }
    fn clock_offset_ms(&self) -> i64 {
        self.skew_ms
    }
}

fn agents(n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| Agent {
            uuid: uuid(i).parse().unwrap(),
            name: None,
            facts: None,
        })
        .collect()
}

/// 20/s, 32 in flight, every agent due every second.
fn every_second() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 32,
        intervals: Intervals {
            settled: Duration::from_secs(1),
            collecting: Duration::from_secs(1),
            offline: Duration::from_secs(1),
        },
        once: false,
    }
}

/// The value of the unlabelled `series` in a text scrape.
fn gauge(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

/// An engine on `n` agents exporting to a fresh registry, running until the token.
fn engine_with_metrics(
    poller: Fake,
    n: usize,
) -> (
    Arc<Metrics>,
    Arc<EngineStatus>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let metrics = Arc::new(Metrics::new(false));
    let sink: Arc<dyn EventSink> = Arc::new(CollectingSink::default());
    let engine = Engine::new(poller, sink, every_second(), &agents(n), HashMap::new())
        .with_metrics(metrics.clone());
    let status = engine.status();
    let stop = CancellationToken::new();
    let s = stop.clone();
    let run = tokio::spawn(async move {
        let _ = engine.run(s).await;
    });
    (metrics, status, stop, run)
}

/// `GET /healthz` on a new connection: the status line.
async fn probe(addr: std::net::SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer.lines().next().unwrap_or_default().to_owned()
}

/// Item 1: `/healthz` follows the real dispatcher's heartbeat: 200 for a minute while the
/// loop runs (its beat is what keeps it so: nothing else touches the counter), still 200
/// until [`STALE_AFTER`] after the loop stopped beating, 503 from then on.
#[tokio::test(start_paused = true)]
async fn healthz_turns_503_once_the_dispatchers_heartbeat_is_stale() {
    let (metrics, status, stop, run) =
        engine_with_metrics(Fake::new(Duration::from_millis(20), 0), 10);
    let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.local_addr().unwrap();
    let serving = CancellationToken::new();
    tokio::spawn(server.serve(
        metrics,
        vec![("default".to_owned(), status.clone())],
        serving.clone(),
    ));
    for second in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(
            probe(addr).await,
            "HTTP/1.1 200 OK",
            "at {second} s, running"
        );
    }
    stop.cancel();
    run.await.unwrap();
    let stopped = tokio::time::Instant::now();
    let beats = status.beats.load(Ordering::Relaxed);
    // Once a second: the first refresh one second in, the last at 59 s.
    assert!(beats >= 59, "the dispatcher beat {beats} times in 60 s");
    // The last probe before the stop saw the last beat; the limit counts from there.
    tokio::time::sleep(STALE_AFTER - Duration::from_secs(2)).await;
    assert_eq!(probe(addr).await, "HTTP/1.1 200 OK", "not stale yet");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let answer = probe(addr).await;
    assert_eq!(
        answer,
        "HTTP/1.1 503 Service Unavailable",
        "{:?} after the heartbeat stopped",
        stopped.elapsed()
    );
    assert_eq!(
        status.beats.load(Ordering::Relaxed),
        beats,
        "no beat after the stop"
    );
    serving.cancel();
}

/// Item 2, over quota: 2,000 agents due every second, 20/s. Every agent's first due time
/// falls in the first second (the phase window is the interval), and no agent is polled twice
/// before all were polled once (100 s), so at time `T` the oldest due poll has waited
/// `T` minus under a second: the gauge (refreshed once a second) reads between `T - 2` and `T`.
#[tokio::test(start_paused = true)]
async fn poll_lag_grows_by_a_second_per_second_when_the_quota_cannot_cover_the_watchlist() {
    let fake = Fake::new(Duration::from_millis(20), 0);
    let sent = fake.sent.clone();
    let (metrics, _status, stop, run) = engine_with_metrics(fake, 2_000);
    let mut last = 0.0;
    for t in (10..=90).step_by(10) {
        tokio::time::sleep_until(tokio::time::Instant::now() + Duration::from_secs(10)).await;
        let lag = gauge(&metrics.encode(false), "cwp_portwatch_poll_lag_seconds");
        let t = t as f64;
        assert!(
            (t - 2.0..=t).contains(&lag),
            "at {t} s: poll_lag_seconds {lag}, expected in [{}, {t}]",
            t - 2.0
        );
        assert!(
            lag > last,
            "at {t} s the lag {lag} did not grow from {last}"
        );
        last = lag;
    }
    stop.cancel();
    run.await.unwrap();
    // The quota was used: 20 a second, never more.
    let sent = sent.load(Ordering::Relaxed);
    assert!((1_780..=1_820).contains(&sent), "{sent} polls in 90 s");
}

/// Item 2, within quota: 19 agents due every second at 20/s: every heartbeat for two minutes
/// reads a lag under a second. With the clock skew the poller reports: the gauge is exactly
/// that value (milliseconds → seconds), negative too.
#[tokio::test(start_paused = true)]
async fn poll_lag_stays_under_a_second_within_quota_and_skew_is_the_apis_offset() {
    for skew_ms in [42_250, -1_500] {
        let (metrics, _status, stop, run) =
            engine_with_metrics(Fake::new(Duration::from_millis(20), skew_ms), 19);
        let mut most = 0.0f64;
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let text = metrics.encode(false);
            most = most.max(gauge(&text, "cwp_portwatch_poll_lag_seconds"));
            assert_eq!(
                gauge(&text, "cwp_portwatch_clock_skew_seconds"),
                skew_ms as f64 / 1000.0
            );
        }
        assert!(most < 1.0, "poll_lag_seconds reached {most} within quota");
        stop.cancel();
        run.await.unwrap();
    }
}

/// Item 2, end to end: a simulator whose clock runs 600 s ahead; the real client learns the
/// skew from its `Date` headers (1-second resolution, read as the middle of that second) and
/// the engine exports it: 600 within the header's half second and the round trip.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_seconds_is_the_simulators_offset_learned_over_http() {
    let mut opts = SimulatorOptions::new(scenario(&steady(2, "COMPLETE")));
    opts.clock_offset_secs = 600;
    let sim = start(opts).await;
    let metrics = Arc::new(Metrics::new(false));
    let sink: Arc<dyn EventSink> = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        good_client(&sim),
        sink,
        every_second(),
        &agents(2),
        HashMap::new(),
    )
    .with_metrics(metrics.clone());
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let skew = loop {
        let skew = gauge(&metrics.encode(false), "cwp_portwatch_clock_skew_seconds");
        if skew != 0.0 {
            break skew;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no skew learned in 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!((599.0..=601.0).contains(&skew), "clock_skew_seconds {skew}");
    stop.cancel();
    let _ = run.await.unwrap();
    sim.shutdown().await;
}
