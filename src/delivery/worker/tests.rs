//! The worker on paused time, with a test kind and a scripted transport: the rate window,
//! the backoff, `Retry-After`, digests, `max_age`, the shutdown, and the message in flight
//! re-sent after a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::delivery::kinds::{Answer, Composed, Kind, Request};
use crate::delivery::outbox::{Outbox, OutboxFile};
use crate::events::{CollectingSink, Event};
use crate::policy::Severity;

/// Takes at most `per_message` records; its body lists the id and the records' seqs.
struct TestKind {
    per_message: usize,
    /// A defect on purpose: composing a message with this record panics.
    panics_on: Option<u64>,
}

impl Kind for TestKind {
    fn compose(&mut self, id: &str, records: &[Record], _now: SystemTime) -> Composed {
        let covers = records.len().min(self.per_message);
        if let Some(bad) = self.panics_on {
            assert!(records.iter().all(|r| r.seq != bad), "a defect on purpose");
        }
        let seqs: Vec<u64> = records[..covers].iter().map(|r| r.seq).collect();
        Composed {
            covers,
            request: Request {
                url: url::Url::parse("http://127.0.0.1:9/").unwrap(),
                headers: Vec::new(),
                body: serde_json::to_vec(&serde_json::json!({"id": id, "seqs": seqs})).unwrap(),
            },
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, _body: &[u8]) -> Answer {
        if status == 200 {
            Answer::Delivered
        } else {
            Answer::Retry {
                after: retry_after,
                reason: format!("HTTP {status}"),
            }
        }
    }
}

/// One request as the transport saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    id: Option<String>,
    seqs: Vec<u64>,
}

/// Answers from a script (then `then` for ever); `None` in the script: no answer at all.
struct Script {
    replies: Mutex<VecDeque<Option<Reply>>>,
    then: Option<Reply>,
    seen: Mutex<Vec<Seen>>,
}

fn status(code: u16) -> Option<Reply> {
    Some(Reply {
        status: code,
        retry_after: None,
        body: Vec::new(),
    })
}

impl Script {
    fn new(replies: Vec<Option<Reply>>, then: Option<Reply>) -> Arc<Script> {
        Arc::new(Script {
            replies: Mutex::new(replies.into()),
            then,
            seen: Mutex::default(),
        })
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Transport for Script {
    fn send<'a>(&'a self, request: Request, message_id: Option<&'a str>) -> Sending<'a> {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        let seqs = body["seqs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        self.seen.lock().unwrap().push(Seen {
            at: Instant::now(),
            id: message_id.map(str::to_owned),
            seqs,
        });
        let reply = self
            .replies
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| self.then.clone());
        Box::pin(async move {
            match reply {
                Some(reply) => Ok(reply),
                None => std::future::pending().await,
            }
        })
    }
}

fn record(at_ms: u64) -> Record {
    Record {
        seq: 0,
        at_ms,
        event: "port_unexpected".into(),
        account: None,
        severity: Severity::Warning,
        key: "k".into(),
        resolves: false,
        ends: None,
        message: "m".into(),
        fields: serde_json::Map::new(),
    }
}

struct Rig {
    shared: Arc<SinkShared>,
    log: Arc<CollectingSink>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    clock: Clock,
    metrics: Arc<Metrics>,
}

struct Setup {
    per_minute: u32,
    per_message: usize,
    max_age: Duration,
    outbox: Outbox,
    file: Option<OutboxFile>,
    panics_on: Option<u64>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            per_minute: 600,
            per_message: 1,
            max_age: Duration::from_secs(24 * 3600),
            outbox: Outbox::new("s", 100),
            file: None,
            panics_on: None,
        }
    }
}

fn start(setup: Setup, transport: Arc<Script>) -> Rig {
    let metrics = Arc::new(Metrics::new(false));
    let shared = Arc::new(SinkShared::new(
        "s",
        100,
        setup.outbox,
        setup.file,
        Some(metrics.clone()),
    ));
    let log = Arc::new(CollectingSink::default());
    let stop = CancellationToken::new();
    let clock = Clock::start();
    let worker = Worker::new(
        shared.clone(),
        Box::new(TestKind {
            per_message: setup.per_message,
            panics_on: setup.panics_on,
        }),
        transport,
        WorkerConfig {
            per_minute: setup.per_minute,
            max_age: setup.max_age,
            finish_within: Duration::from_secs(3),
        },
        clock,
        log.clone(),
        stop.clone(),
    );
    Rig {
        shared,
        log,
        stop,
        task: tokio::spawn(worker.run()),
        clock,
        metrics,
    }
}

impl Rig {
    fn push(&self, n: usize) {
        for _ in 0..n {
            self.shared.push(record(self.clock.now_ms()));
        }
    }

    async fn stop(self) -> Self {
        self.stop.cancel();
        let task = self.task;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the worker ends")
            .unwrap();
        Rig {
            task: tokio::spawn(async {}),
            ..self
        }
    }

    fn failed(&self) -> Vec<(String, u64)> {
        self.log
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::DeliveryFailed {
                    error_message,
                    events,
                    ..
                } => Some((error_message, events)),
                _ => None,
            })
            .collect()
    }
}

fn offsets(seen: &[Seen], from: Instant) -> Vec<u64> {
    seen.iter().map(|s| (s.at - from).as_secs()).collect()
}

#[test]
fn backoff_doubles_from_1_s_to_5_min() {
    let secs: Vec<u64> = (1..=12).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    assert_eq!(backoff(0), FIRST_BACKOFF);
    assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
}

#[test]
fn retry_after_is_seconds_or_a_date() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    assert_eq!(
        parse_retry_after(" 30 ", now),
        Some(Duration::from_secs(30))
    );
    let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
    assert_eq!(
        parse_retry_after(&later, now),
        Some(Duration::from_secs(90))
    );
    let past = httpdate::fmt_http_date(now - Duration::from_secs(90));
    assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("soon", now), None);
    assert_eq!(parse_retry_after("-1", now), None);
}

#[tokio::test(start_paused = true)]
async fn the_rate_window_is_never_exceeded_and_nothing_is_dropped() {
    let script = Script::new(Vec::new(), status(200));
    let rig = start(
        Setup {
            per_minute: 3,
            ..Setup::default()
        },
        script.clone(),
    );
    let t0 = Instant::now();
    rig.push(10);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let seen = script.seen();
    assert_eq!(seen.len(), 10, "every event, one per message");
    // Exactly when the window allows: three at once, then three as each window (a minute
    // and the margin) ends.
    assert_eq!(
        offsets(&seen, t0),
        [0, 0, 0, 61, 61, 61, 122, 122, 122, 183]
    );
    for (i, s) in seen.iter().enumerate() {
        let in_window = seen[i..]
            .iter()
            .filter(|o| o.at - s.at < RATE_WINDOW)
            .count();
        assert!(
            in_window <= 3,
            "{} requests in the 61 s from #{i}",
            in_window
        );
    }
    let seqs: Vec<u64> = seen.iter().flat_map(|s| s.seqs.clone()).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
    assert!(rig.shared.outbox().is_empty());
    let rig = rig.stop().await;
    let text = rig.metrics.encode(false);
    assert!(
        text.contains("cwp_portwatch_deliveries_total{sink=\"s\",outcome=\"ok\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("cwp_portwatch_outbox_events{sink=\"s\"} 0"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn over_the_rate_pending_events_are_folded_into_digests() {
    let script = Script::new(Vec::new(), status(200));
    let rig = start(
        Setup {
            per_minute: 1,
            per_message: 4,
            ..Setup::default()
        },
        script.clone(),
    );
    let t0 = Instant::now();
    rig.push(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    rig.push(9);
    tokio::time::sleep(Duration::from_secs(600)).await;
    let seen = script.seen();
    let sizes: Vec<usize> = seen.iter().map(|s| s.seqs.len()).collect();
    assert_eq!(sizes, [1, 4, 4, 1], "the rest waits for the next message");
    assert_eq!(offsets(&seen, t0), [0, 61, 122, 183]);
    let ids: Vec<&str> = seen.iter().filter_map(|s| s.id.as_deref()).collect();
    assert_eq!(ids, ["s-1-1", "s-2-5", "s-6-9", "s-10-10"]);
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_doubling_and_retry_after_is_honoured() {
    let retry_after = Some(Reply {
        status: 429,
        retry_after: Some(Duration::from_secs(30)),
        body: Vec::new(),
    });
    let script = Script::new(
        vec![status(500), status(500), status(500), retry_after, None],
        status(200),
    );
    let rig = start(Setup::default(), script.clone());
    let t0 = Instant::now();
    rig.push(1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    let seen = script.seen();
    // 500 → 1 s, 500 → 2 s, 500 → 4 s, 429 Retry-After 30 → 30 s (more than the 8 s of
    // the backoff), then a try that gets no answer at all.
    assert_eq!(offsets(&seen, t0)[..4], [0, 1, 3, 7]);
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert_eq!((seen[4].at - seen[3].at).as_secs(), 30);
    assert!(
        seen.iter().all(|s| s.id.as_deref() == Some("s-1-1")),
        "every try is the same message"
    );
    assert_eq!(
        rig.shared.outbox().len(),
        1,
        "the unanswered try is still in flight"
    );
    rig.stop().await;
}

#[tokio::test(start_paused = true)]
async fn records_older_than_max_age_are_given_up_and_said_so() {
    let script = Script::new(Vec::new(), status(503));
    let rig = start(
        Setup {
            max_age: Duration::from_secs(60),
            ..Setup::default()
        },
        script.clone(),
    );
    let t0 = Instant::now();
    rig.push(3);
    tokio::time::sleep(Duration::from_secs(20)).await;
    rig.push(1);
    // Tries at 0, 1, 3, 7, 15, 31, 63: the first past 60 s gives up the three old ones; the
    // fourth (20 s old) is tried on until it is 60 s old too.
    tokio::time::sleep(Duration::from_secs(70)).await;
    let seen = script.seen();
    assert_eq!(offsets(&seen, t0), [0, 1, 3, 7, 15, 31, 63]);
    assert_eq!(rig.failed().len(), 1, "{:?}", rig.failed());
    let (message, events) = rig.failed()[0].clone();
    assert_eq!(events, 3);
    assert!(
        message.contains("HTTP 503") && message.contains("1m"),
        "{message}"
    );
    assert_eq!(rig.shared.outbox().len(), 1);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(rig.failed().len(), 2);
    assert!(rig.shared.outbox().is_empty());
    let rig = rig.stop().await;
    let text = rig.metrics.encode(false);
    assert!(
        text.contains("cwp_portwatch_deliveries_total{sink=\"s\",outcome=\"failed\"} 4"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_kind_that_panics_on_one_record_costs_that_record_alone_and_says_so() {
    let script = Script::new(Vec::new(), status(200));
    let rig = start(
        Setup {
            per_message: 10,
            panics_on: Some(3),
            ..Setup::default()
        },
        script.clone(),
    );
    rig.push(5);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let delivered: Vec<u64> = script.seen().iter().flat_map(|s| s.seqs.clone()).collect();
    assert_eq!(
        delivered,
        [1, 2, 4, 5],
        "every other record still goes out, in order"
    );
    let failed = rig.failed();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].1, 1);
    assert!(failed[0].0.contains("could not be composed"), "{failed:?}");
    assert!(rig.shared.outbox().is_empty());
    // The sink keeps working after the defect.
    rig.push(2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    let delivered: Vec<u64> = script.seen().iter().flat_map(|s| s.seqs.clone()).collect();
    assert_eq!(delivered, [1, 2, 4, 5, 6, 7]);
    let rig = rig.stop().await;
    let text = rig.metrics.encode(false);
    assert!(
        text.contains("cwp_portwatch_deliveries_total{sink=\"s\",outcome=\"failed\"} 1"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_outbox_reports_its_losses_at_most_once_a_minute() {
    let script = Script::new(Vec::new(), status(500));
    let rig = start(
        Setup {
            outbox: Outbox::new("s", 2),
            ..Setup::default()
        },
        script.clone(),
    );
    rig.push(5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rig.failed().len(), 1);
    assert_eq!(rig.failed()[0].1, 3, "three given up to keep two");
    rig.push(2);
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(rig.failed().len(), 1, "not twice within a minute");
    tokio::time::sleep(Duration::from_secs(31)).await;
    assert_eq!(rig.failed().len(), 2);
    assert_eq!(rig.failed()[1].1, 2);
    let rig = rig.stop().await;
    let text = rig.metrics.encode(false);
    assert!(
        text.contains("cwp_portwatch_deliveries_total{sink=\"s\",outcome=\"dropped\"} 5"),
        "{text}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_receiver_does_not_hold_the_shutdown() {
    let script = Script::new(Vec::new(), None);
    let rig = start(Setup::default(), script.clone());
    rig.push(1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let t0 = Instant::now();
    rig.stop().await;
    assert_eq!(Instant::now() - t0, Duration::from_secs(3), "finish_within");
}

#[tokio::test(start_paused = true)]
async fn a_restart_re_sends_exactly_the_message_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let file = OutboxFile::for_sink(dir.path(), "s");
    let stalled = Script::new(Vec::new(), None);
    let rig = start(
        Setup {
            per_message: 3,
            file: Some(file.clone()),
            ..Setup::default()
        },
        stalled.clone(),
    );
    rig.push(5);
    tokio::time::sleep(Duration::from_secs(1)).await;
    // A crash now: the task is gone, whatever it held in memory with it.
    rig.task.abort();
    assert_eq!(stalled.seen().len(), 1);
    assert_eq!(stalled.seen()[0].id.as_deref(), Some("s-1-3"));
    rig.push(1);
    // The pushes after the message started reached the disk only through a save (the
    // barrier's): without one, the restart knows the five pushed before.
    let outbox = file.load("s", 100).unwrap();
    assert_eq!(outbox.in_flight().map(|f| f.id.as_str()), Some("s-1-3"));
    assert_eq!(outbox.len(), 5);
    let script = Script::new(Vec::new(), status(200));
    let again = start(
        Setup {
            // A kind taking more now: the re-send is still the same three.
            per_message: 10,
            outbox,
            file: Some(file.clone()),
            ..Setup::default()
        },
        script.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    let seen = script.seen();
    assert_eq!(seen[0].id.as_deref(), Some("s-1-3"));
    assert_eq!(seen[0].seqs, [1, 2, 3]);
    assert_eq!(seen[1].id.as_deref(), Some("s-4-5"));
    assert_eq!(seen.len(), 2);
    let again = again.stop().await;
    let on_disk = file.load("s", 100).unwrap();
    assert!(on_disk.is_empty() && on_disk.in_flight().is_none());
    assert_eq!(on_disk.next_seq(), 6, "numbers are never reused");
    drop(again);
}
