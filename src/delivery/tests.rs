//! [`Delivery`] as the engine sees it: what `emit` appends, what the barrier persists, a
//! damaged outbox set aside, a URL that is no URL refused without being shown.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::events::CollectingSink;

fn sink(name: &str, url: &str) -> ResolvedSink {
    ResolvedSink {
        settings: SinkSettings {
            name: name.into(),
            kind: SinkKind::Webhook,
            url: UrlSource::File("/nonexistent".into()),
            secret_file: None,
            events: vec![EventSelector::parse("clock_skew").unwrap()],
            min_severity: Severity::Info,
            max_age: settings::DEFAULT_MAX_AGE,
            per_minute: 600,
            outbox_limit: 100,
        },
        url: SecretString::from(url.to_owned()),
        secret: None,
    }
}

fn skew(n: i64) -> Event {
    Event::ClockSkew { skew_seconds: n }
}

#[tokio::test]
async fn emits_are_appended_and_the_barrier_persists_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(CollectingSink::default());
    // Nothing listens on port 1: every try fails, the events stay.
    let delivery = Delivery::start(
        vec![sink("a", "http://127.0.0.1:1/")],
        dir.path(),
        None,
        log.clone(),
        CancellationToken::new(),
    )
    .unwrap();
    for n in 1..=3 {
        delivery.emit(&skew(n));
    }
    delivery.emit(&Event::DaemonStarted {
        version: "1".into(),
        agents: 1,
    });
    assert_eq!(delivery.pending("a"), Some(3), "only what the sink takes");
    (delivery.barrier())();
    let file = OutboxFile::for_sink(dir.path(), "a");
    let on_disk = file.load("a", 100).unwrap();
    assert_eq!(on_disk.len(), 3);
    let seqs: Vec<u64> = on_disk.offer(10).iter().map(|r| r.seq).collect();
    assert!(seqs.starts_with(&[1]), "{seqs:?}");
    assert_eq!(on_disk.next_seq(), 4);
    delivery.finish().await;
}

/// A `kill -9` right after emits, before any save: the journal brings them back (the
/// restarted daemon may never emit them again: their condition can end while it is down).
#[tokio::test]
async fn events_taken_and_never_saved_survive_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(CollectingSink::default());
    let start = || {
        Delivery::start(
            vec![sink("a", "http://127.0.0.1:1/")],
            dir.path(),
            None,
            log.clone(),
            CancellationToken::new(),
        )
        .unwrap()
    };
    let delivery = start();
    delivery.emit(&skew(1));
    // The worker's first try saves the outbox (the message in flight) and then backs off.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 2..=4 {
        delivery.emit(&skew(n));
    }
    let saved = OutboxFile::for_sink(dir.path(), "a")
        .load("a", 100)
        .unwrap();
    assert!(
        saved.len() < 4,
        "the later emits are not in the snapshot yet"
    );
    // Killed: no barrier, no finish (dropping aborts the workers).
    drop(delivery);
    let restarted = start();
    assert_eq!(restarted.pending("a"), Some(4), "every event taken is back");
    // Saved and journaled once more: a second start has exactly the same, no repeats.
    (restarted.barrier())();
    drop(restarted);
    let again = start();
    assert_eq!(again.pending("a"), Some(4));
    let file: serde_json::Value =
        serde_json::from_slice(&again.sinks[0].shared.outbox().encode()).unwrap();
    let skews: Vec<i64> = file["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["fields"]["skew_seconds"].as_i64().unwrap())
        .collect();
    assert_eq!(skews, [1, 2, 3, 4]);
    again.finish().await;
}

#[tokio::test]
async fn a_damaged_outbox_is_set_aside_reported_and_the_sink_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox-a.json");
    std::fs::write(&path, "{\"torn").unwrap();
    let log = Arc::new(CollectingSink::default());
    let delivery = Delivery::start(
        vec![sink("a", "http://127.0.0.1:1/")],
        dir.path(),
        None,
        log.clone(),
        CancellationToken::new(),
    )
    .unwrap();
    let damaged: Vec<String> = log
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::StateDamaged { moved_to, .. } => Some(moved_to),
            _ => None,
        })
        .collect();
    assert_eq!(damaged.len(), 1);
    assert_eq!(
        std::fs::read_to_string(&damaged[0]).unwrap(),
        "{\"torn",
        "kept as it was"
    );
    delivery.emit(&skew(1));
    delivery.finish().await;
    assert_eq!(
        OutboxFile::for_sink(dir.path(), "a")
            .load("a", 100)
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_url_that_is_no_http_url_is_refused_without_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(CollectingSink::default());
    let started = Delivery::start(
        vec![sink("robot", "ftp://example.com/?key=SECRET")],
        dir.path(),
        None,
        log,
        CancellationToken::new(),
    );
    let Err(e) = started else {
        panic!("an ftp URL was taken");
    };
    assert_eq!(e.code(), "DeliveryError.Url");
    assert!(!e.to_string().contains("SECRET"), "{e}");
    assert!(e.to_string().contains("robot"), "{e}");
}

#[tokio::test]
async fn the_shutdown_ends_the_workers_within_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let shutdown = CancellationToken::new();
    let delivery = Delivery::start_with(
        vec![sink("a", "http://127.0.0.1:1/")],
        dir.path(),
        None,
        Arc::new(CollectingSink::default()),
        shutdown.clone(),
        DeliveryOptions {
            finish_within: Duration::from_millis(200),
            ..DeliveryOptions::default()
        },
    )
    .unwrap();
    delivery.emit(&skew(1));
    shutdown.cancel();
    let started = std::time::Instant::now();
    delivery.finish().await;
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn a_record_keeps_the_account_its_event_was_emitted_for() {
    let dir = tempfile::tempdir().unwrap();
    let delivery = Delivery::start(
        vec![sink("a", "http://127.0.0.1:1/")],
        dir.path(),
        None,
        Arc::new(CollectingSink::default()),
        CancellationToken::new(),
    )
    .unwrap();
    let shared: Arc<dyn EventSink> = delivery.clone();
    crate::account::AccountSink::new(shared, "prod").emit(&skew(1));
    delivery.emit(&skew(2));
    delivery.finish().await;
    let on_disk = OutboxFile::for_sink(dir.path(), "a")
        .load("a", 100)
        .unwrap();
    let text = String::from_utf8(on_disk.encode()).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let accounts: Vec<&serde_json::Value> = json["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["account"])
        .collect();
    assert_eq!(
        accounts,
        [&serde_json::json!("prod"), &serde_json::Value::Null]
    );
}
