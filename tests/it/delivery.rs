//! Alert delivery's runtime against real local receivers (hyper on 127.0.0.1:0) that answer
//! 200, 429 with `Retry-After`, 500, reset the connection, or never answer: through
//! [`Delivery`] with the `webhook` kind, asserting on what the runtime controls (arrivals and
//! their timing, the message id header, counts, metrics, the outbox file). A restart over
//! the same `state_dir` re-sends exactly the message that was in flight, with its id.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cwp_portwatch::delivery::outbox::OutboxFile;
use cwp_portwatch::delivery::settings::DEFAULT_MAX_AGE;
use cwp_portwatch::delivery::{
    Delivery, DeliveryOptions, EventSelector, MESSAGE_ID_HEADER, ResolvedSink, SinkKind,
    SinkSettings, UrlSource,
};
use cwp_portwatch::events::{CollectingSink, Event, EventSink};
use cwp_portwatch::metrics::Metrics;
use cwp_portwatch::policy::Severity;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use secrecy::SecretString;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the receiver does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Answers with this status.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    RetryAfter(u64),
    /// Resets the connection (RST) without answering.
    Reset,
    /// Never answers.
    Stall,
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Arrival {
    at: Instant,
    id: Option<String>,
    body: Vec<u8>,
}

/// A receiver on 127.0.0.1:0 whose n-th request (from 0) gets `script(n)`.
struct Receiver {
    addr: SocketAddr,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(script: impl Fn(usize) -> Behaviour + Send + Sync + 'static) -> Receiver {
        let script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let arrivals: Arc<Mutex<Vec<Arrival>>> = Arc::default();
        let seen = arrivals.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let fd = stream.as_raw_fd();
                let (script, seen) = (script.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (script, seen) = (script.clone(), seen.clone());
                        async move {
                            let at = Instant::now();
                            let id = req
                                .headers()
                                .get(MESSAGE_ID_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = match req.into_body().collect().await {
                                Ok(body) => body.to_bytes().to_vec(),
                                Err(e) => return Err(std::io::Error::other(e)),
                            };
                            let n = {
                                let mut seen = seen.lock().unwrap();
                                seen.push(Arrival { at, id, body });
                                seen.len() - 1
                            };
                            let mut answer = Response::new(Full::new(Bytes::from_static(b"{}")));
                            match script(n) {
                                Behaviour::Status(code) => {
                                    *answer.status_mut() = code.try_into().unwrap();
                                }
                                Behaviour::RetryAfter(secs) => {
                                    *answer.status_mut() = 429.try_into().unwrap();
                                    answer
                                        .headers_mut()
                                        .insert("retry-after", secs.to_string().parse().unwrap());
                                }
                                Behaviour::Reset => {
                                    reset_on_close(fd);
                                    // An error ends the connection without an answer.
                                    return Err(std::io::Error::other("reset"));
                                }
                                Behaviour::Stall => std::future::pending::<()>().await,
                            }
                            Ok::<_, std::io::Error>(answer)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            arrivals,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn arrivals(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    fn ids(&self) -> Vec<String> {
        self.arrivals()
            .into_iter()
            .map(|a| a.id.unwrap_or_default())
            .collect()
    }

    /// Waits (up to `within`) until `n` requests arrived.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Arrival> {
        let until = Instant::now() + within;
        loop {
            let arrivals = self.arrivals();
            if arrivals.len() >= n {
                return arrivals;
            }
            assert!(
                Instant::now() < until,
                "{} of {n} requests arrived within {within:?}",
                arrivals.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Makes the socket's close a reset (SO_LINGER 0): a receiver dying mid-request.
fn reset_on_close(fd: std::os::fd::RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: `fd` is the connection's socket, open while its service runs; the option is a
    // plain struct of the size given.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn webhook(name: &str, url: &str) -> ResolvedSink {
    ResolvedSink {
        settings: SinkSettings {
            name: name.into(),
            kind: SinkKind::Webhook,
            url: UrlSource::Inline(url.parse().unwrap()),
            secret_file: None,
            events: vec![EventSelector::parse("clock_skew").unwrap()],
            min_severity: Severity::Info,
            max_age: DEFAULT_MAX_AGE,
            per_minute: 600,
            outbox_limit: 1000,
        },
        url: SecretString::from(url.to_owned()),
        secret: None,
    }
}

/// A delivery whose receivers' answers are awaited `answer_timeout`.
fn start(
    sinks: Vec<ResolvedSink>,
    dir: &Path,
    metrics: Option<Arc<Metrics>>,
    answer_timeout: Duration,
) -> (Arc<Delivery>, CancellationToken) {
    let shutdown = CancellationToken::new();
    let delivery = Delivery::start_with(
        sinks,
        dir,
        metrics,
        Arc::new(CollectingSink::default()),
        shutdown.clone(),
        DeliveryOptions {
            answer_timeout,
            finish_within: Duration::from_millis(500),
            ..DeliveryOptions::default()
        },
    )
    .unwrap();
    (delivery, shutdown)
}

fn skew(n: i64) -> Event {
    Event::ClockSkew { skew_seconds: n }
}

fn series(metrics: &Metrics, sink: &str, outcome: &str) -> f64 {
    let text = metrics.encode(false);
    let name = format!("cwp_portwatch_deliveries_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .parse()
        .unwrap()
}

fn gaps(arrivals: &[Arrival]) -> Vec<Duration> {
    arrivals.windows(2).map(|w| w[1].at - w[0].at).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_after_its_retry_after() {
    let receiver = Receiver::start(|n| match n {
        0 => Behaviour::RetryAfter(3),
        _ => Behaviour::Status(200),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new(false));
    let (delivery, _) = start(
        vec![webhook("hook", &receiver.url())],
        dir.path(),
        Some(metrics.clone()),
        Duration::from_secs(10),
    );
    delivery.emit(&skew(1));
    let arrivals = receiver.wait_for(2, Duration::from_secs(10)).await;
    let gap = gaps(&arrivals)[0];
    // The backoff alone would wait 1 s.
    assert!(gap >= Duration::from_secs(3), "{gap:?}");
    assert!(gap < Duration::from_millis(4500), "{gap:?}");
    assert_eq!(receiver.ids(), ["hook-1-1", "hook-1-1"], "the same message");
    delivery.finish().await;
    assert_eq!(receiver.arrivals().len(), 2);
    assert_eq!(series(&metrics, "hook", "retry"), 1.0);
    assert_eq!(series(&metrics, "hook", "ok"), 1.0);
    assert_eq!(delivery.pending("hook"), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_500s_and_stalls_are_retried_with_backoff_and_the_same_id() {
    let receiver = Receiver::start(|n| match n {
        0 => Behaviour::Reset,
        1 => Behaviour::Status(500),
        2 => Behaviour::Stall,
        _ => Behaviour::Status(200),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new(false));
    let (delivery, _) = start(
        vec![webhook("hook", &receiver.url())],
        dir.path(),
        Some(metrics.clone()),
        Duration::from_secs(1),
    );
    delivery.emit(&skew(1));
    let arrivals = receiver.wait_for(4, Duration::from_secs(20)).await;
    let gaps = gaps(&arrivals);
    // Reset → 1 s; 500 → 2 s; no answer within the 1-s timeout, then 4 s.
    let at_least = [1000, 2000, 5000].map(Duration::from_millis);
    for (gap, least) in gaps.iter().zip(at_least) {
        assert!(*gap >= least, "{gaps:?}");
        assert!(*gap < least + Duration::from_millis(1500), "{gaps:?}");
    }
    assert!(
        receiver.ids().iter().all(|id| id == "hook-1-1"),
        "{:?}",
        receiver.ids()
    );
    delivery.finish().await;
    assert_eq!(receiver.arrivals().len(), 4, "nothing after the 200");
    assert_eq!(series(&metrics, "hook", "retry"), 3.0);
    assert_eq!(series(&metrics, "hook", "ok"), 1.0);
    assert_eq!(series(&metrics, "hook", "failed"), 0.0);
    let on_disk = OutboxFile::for_sink(dir.path(), "hook")
        .load("hook", 1000)
        .unwrap();
    assert!(on_disk.is_empty() && on_disk.in_flight().is_none());
    assert_eq!(on_disk.next_seq(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_sink_delays_neither_another_sink_nor_the_emitter() {
    let dead = Receiver::start(|_| Behaviour::Stall).await;
    let live = Receiver::start(|_| Behaviour::Status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new(false));
    let (delivery, _) = start(
        vec![webhook("dead", &dead.url()), webhook("live", &live.url())],
        dir.path(),
        Some(metrics.clone()),
        Duration::from_secs(30),
    );
    let started = Instant::now();
    for n in 1..=20 {
        delivery.emit(&skew(n));
    }
    let emitting = started.elapsed();
    assert!(
        emitting < Duration::from_millis(100),
        "emit took {emitting:?}"
    );
    let arrivals = live.wait_for(20, Duration::from_secs(5)).await;
    let last = arrivals.last().unwrap().at - started;
    assert!(
        last < Duration::from_secs(2),
        "the live sink's last event after {last:?}"
    );
    let ids = live.ids();
    let expected: Vec<String> = (1..=20).map(|n| format!("live-{n}-{n}")).collect();
    assert_eq!(ids, expected, "every event once, in order");
    assert_eq!(
        dead.arrivals().len(),
        1,
        "the dead sink's first message hangs"
    );
    assert_eq!(delivery.pending("dead"), Some(20));
    let text = metrics.encode(false);
    assert!(
        text.contains("cwp_portwatch_outbox_events{sink=\"dead\"} 20"),
        "{text}"
    );
    assert!(
        text.contains("cwp_portwatch_outbox_events{sink=\"live\"} 0"),
        "{text}"
    );
    let finishing = Instant::now();
    delivery.finish().await;
    assert!(
        finishing.elapsed() < Duration::from_secs(2),
        "bounded by finish_within"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_re_sends_exactly_the_message_in_flight_with_its_id() {
    let dir = tempfile::tempdir().unwrap();
    let hung = Receiver::start(|_| Behaviour::Stall).await;
    let (delivery, _) = start(
        vec![webhook("hook", &hung.url())],
        dir.path(),
        None,
        Duration::from_secs(30),
    );
    for n in 1..=3 {
        delivery.emit(&skew(n));
    }
    // The engine's save barrier: the events are on disk before its state file.
    (delivery.barrier())();
    let first = hung.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(first[0].id.as_deref(), Some("hook-1-1"));
    // A crash: the workers stop where they are, nothing more is written.
    drop(delivery);
    let file = dir.path().join("outbox-hook.json");
    let text = std::fs::read_to_string(&file).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["in_flight"]["id"], "hook-1-1", "{text}");
    assert_eq!(json["records"].as_array().unwrap().len(), 3, "{text}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let ok = Receiver::start(|_| Behaviour::Status(200)).await;
    let (again, _) = start(
        vec![webhook("hook", &ok.url())],
        dir.path(),
        None,
        Duration::from_secs(30),
    );
    let arrivals = ok.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(
        ok.ids(),
        ["hook-1-1", "hook-2-2", "hook-3-3"],
        "the message in flight first, same id"
    );
    assert_eq!(arrivals[0].body, first[0].body, "same message");
    again.emit(&skew(4));
    ok.wait_for(4, Duration::from_secs(5)).await;
    assert_eq!(ok.ids()[3], "hook-4-4", "numbers are never reused");
    again.finish().await;
    assert_eq!(hung.arrivals().len(), 1);
    assert_eq!(
        ok.arrivals().len(),
        4,
        "each event exactly once after the restart"
    );
    let on_disk = OutboxFile::for_sink(dir.path(), "hook")
        .load("hook", 1000)
        .unwrap();
    assert!(on_disk.is_empty());
}
