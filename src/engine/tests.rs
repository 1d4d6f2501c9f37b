//! The engine as a whole under paused tokio time, with a fake poller: what the parts do
//! together (the integration tests in `tests/it/dispatch.rs` cover rates and fairness).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::agent_uuid::AgentUuid;
use crate::events::{CollectingSink, Event};

/// What the fake API answers for a Uuid.
type Answer = Arc<dyn Fn(&str) -> Result<String, ApiError> + Send + Sync>;

/// Answers with `answer(uuid)` after `latency`; counts requests.
#[derive(Clone)]
struct Fake {
    latency: Duration,
    answer: Answer,
    sent: Arc<AtomicUsize>,
}

impl Fake {
    fn new(
        latency: Duration,
        answer: impl Fn(&str) -> Result<String, ApiError> + Send + Sync + 'static,
    ) -> Self {
        Fake {
            latency,
            answer: Arc::new(answer),
            sent: Arc::default(),
        }
    }
}

impl Poller for Fake {
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let this = self.clone();
        let uuid = uuid.to_string();
        async move {
            this.sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(this.latency).await;
            (this.answer)(&uuid).map(|status| TaskStatus {
                status,
                request_id: format!("r-{uuid}"),
            })
        }
    }
}

/// Through the watchlist parser, so these tests do not depend on how `Agent` is built.
fn agents(n: usize) -> Vec<Agent> {
    let text: String = (0..n)
        .map(|i| format!("[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\n"))
        .collect();
    crate::watchlist::Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
        .expect("test watchlist parses")
        .agents
}

fn config(once: bool, max_in_flight: usize) -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight,
        intervals: Intervals {
            settled: Duration::from_secs(60),
            collecting: Duration::from_secs(5),
            offline: Duration::from_secs(30),
        },
        once,
    }
}

fn api_error(code: &str) -> ApiError {
    ApiError::Api {
        code: code.into(),
        message: "m".into(),
        request_id: Some("r".into()),
    }
}

#[tokio::test(start_paused = true)]
async fn once_with_more_agents_than_requests_in_flight_finishes_and_abandons_nothing() {
    let fake = Fake::new(Duration::from_millis(200), |_| Ok("COMPLETE".into()));
    let sent = fake.sent.clone();
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(fake, sink, config(true, 4), &agents(50), HashMap::new());
    let t0 = Instant::now();
    let (_, report) = engine.run(CancellationToken::new()).await;
    assert_eq!(sent.load(Ordering::Relaxed), 50, "each agent once");
    assert_eq!(report.sent, 50);
    assert_eq!(report.abandoned, 0);
    assert!(report.agents.iter().all(|a| a.status == Status::Complete));
    assert!(report.agents.iter().all(|a| a.request_id.is_some()));
    // 50 at 20/s, 4 in flight of 200 ms: about 2.5 s, and no wait for the drain bound.
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
}

#[tokio::test(start_paused = true)]
async fn once_stops_when_the_credentials_are_refused() {
    let fake = Fake::new(Duration::from_millis(10), |_| {
        Err(api_error("AuthFailure.SecretIdNotFound"))
    });
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(fake, sink, config(true, 1), &agents(30), HashMap::new())
        .with_credential_source("env");
    let (_, report) = engine.run(CancellationToken::new()).await;
    assert!(report.sent < 30);
    assert_eq!(report.agents.len(), 30);
    assert!(
        report
            .agents
            .iter()
            .all(|a| a.last_error.as_deref() == Some("AuthFailure.SecretIdNotFound: m"))
    );
}

#[tokio::test(start_paused = true)]
async fn a_poll_that_panics_is_a_failed_poll_and_the_agent_is_polled_again() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let fake = Fake::new(Duration::from_millis(10), move |_| {
        if c.fetch_add(1, Ordering::Relaxed) == 0 {
            panic!("a bug in the poller");
        }
        Ok("COMPLETE".into())
    });
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        fake,
        sink.clone(),
        config(false, 4),
        &agents(1),
        HashMap::new(),
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(5)).await;
        s.cancel();
    });
    let (engine, report) = engine.run(stop).await;
    let names: Vec<_> = sink.events().iter().map(Event::name).collect();
    assert_eq!(names, ["poll_failed", "poll_recovered", "status_changed"]);
    assert!(
        report.agents.is_empty(),
        "the daemon's report has no per-agent list"
    );
    assert_eq!(engine.agent_reports()[0].status, Status::Complete);
}

#[tokio::test(start_paused = true)]
async fn a_stop_waits_for_answers_within_the_drain_bound_then_abandons_the_rest() {
    let fake = Fake::new(Duration::from_secs(30), |_| Ok("COMPLETE".into()));
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        fake,
        sink.clone(),
        config(false, 8),
        &agents(3),
        HashMap::new(),
    )
    .with_drain_timeout(Duration::from_secs(2));
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        s.cancel();
    });
    let t0 = Instant::now();
    let (_, report) = engine.run(stop).await;
    assert_eq!(report.sent, 3);
    assert_eq!(report.abandoned, 3);
    assert!(
        t0.elapsed() <= Duration::from_millis(3100),
        "{:?}",
        t0.elapsed()
    );
    assert!(sink.events().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_reload_forgets_removed_agents_and_keeps_known_statuses() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let fake = Fake::new(Duration::from_millis(10), move |u| {
        l.lock().unwrap().push(u.to_string());
        Ok("COLLECTING".into())
    });
    let sink = Arc::new(CollectingSink::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(
        fake,
        sink.clone(),
        config(false, 4),
        &agents(4),
        HashMap::new(),
    )
    .with_control(rx);
    let status = engine.status();
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(Control::Reload {
        agents: agents(2),
        config: config(false, 4),
        removed: super::Removed::Forget,
        reply,
    })
    .unwrap();
    assert_eq!(answer.await.unwrap(), (2, 0, 2));
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(status.agents.load(Ordering::Relaxed), 2);
    assert_eq!(status.collecting.load(Ordering::Relaxed), 2);
    stop.cancel();
    let (engine, _) = run.await.unwrap();
    assert_eq!(engine.agent_count(), 2);
    assert_eq!(engine.agent_reports().len(), 2);
    // One status_changed per agent: kept agents' statuses were not forgotten.
    let changes = sink
        .events()
        .iter()
        .filter(|e| e.name() == "status_changed")
        .count();
    assert_eq!(changes, 4);
    let after: Vec<String> = log.lock().unwrap().iter().skip(12).cloned().collect();
    assert!(
        after.iter().all(|u| u.ends_with('0') || u.ends_with('1')),
        "{after:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn seeded_statuses_count_as_known_when_added_and_unfound_ones_are_forgotten() {
    let fake = Fake::new(Duration::from_millis(10), |_| Ok("COMPLETE".into()));
    let sink = Arc::new(CollectingSink::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let all = agents(4);
    let known = |range: std::ops::Range<usize>| -> crate::tracker::KnownMap {
        all[range]
            .iter()
            .map(|a| {
                let known = crate::tracker::Known {
                    status: "COMPLETE".into(),
                    request_id: "earlier".into(),
                    seen_at: 0,
                };
                (a.uuid, known)
            })
            .collect()
    };
    // Started with agent 0 only (the listed one); 1..4 were persisted by discovery.
    let engine =
        Engine::new(fake, sink.clone(), config(false, 4), &all[..1], known(0..1)).with_control(rx);
    tx.send(Control::Seed { known: known(1..4) }).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    // The first discovery finds 1 and 2, not 3.
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(Control::Reload {
        agents: all[..3].to_vec(),
        config: config(false, 4),
        removed: super::Removed::Forget,
        reply,
    })
    .unwrap();
    assert_eq!(answer.await.unwrap(), (3, 2, 0));
    let uuids = all[..4].iter().map(|a| a.uuid).collect();
    tx.send(Control::Forget { uuids }).unwrap();
    tokio::time::sleep(Duration::from_secs(120)).await;
    stop.cancel();
    let (engine, _) = run.await.unwrap();
    let changes: Vec<Event> = sink
        .events()
        .into_iter()
        .filter(|e| e.name() == "status_changed")
        .collect();
    assert!(
        changes.is_empty(),
        "known statuses reported again: {changes:?}"
    );
    let mut kept: Vec<AgentUuid> = engine.agents.known().map(|(u, _)| u).collect();
    kept.sort_unstable();
    let watched: Vec<AgentUuid> = all[..3].iter().map(|a| a.uuid).collect();
    assert_eq!(kept, watched, "the seeded agent not found is forgotten");
}

/// The heartbeat counts agents per status only when a status changed (issue 13: counting is
/// O(agents) and a steady state changes nothing); the counts must still follow every change.
#[tokio::test(start_paused = true)]
async fn heartbeat_counts_follow_status_changes_without_recounting_every_second() {
    let collecting = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let c = collecting.clone();
    let fake = Fake::new(Duration::from_millis(10), move |_| {
        Ok(if c.load(Ordering::Relaxed) {
            "COLLECTING".into()
        } else {
            "COMPLETE".into()
        })
    });
    let mut config = config(false, 4);
    config.intervals.settled = Duration::from_secs(1);
    config.intervals.collecting = Duration::from_secs(1);
    let engine = Engine::new(
        fake,
        Arc::new(CollectingSink::default()),
        config,
        &agents(3),
        HashMap::new(),
    );
    let status = engine.status();
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status.collecting.load(Ordering::Relaxed), 0);
    collecting.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status.collecting.load(Ordering::Relaxed), 3);
    collecting.store(false, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(status.collecting.load(Ordering::Relaxed), 0);
    stop.cancel();
    run.await.unwrap();
}

/// Statuses streamed in by `Engine::loading` count as known; a load that fails half-way (a damaged state file) leaves nothing of what it fed, so every
/// first answer is a change again, and statuses of agents not watched are given back.
#[tokio::test(start_paused = true)]
async fn streamed_statuses_count_as_known_and_a_failed_load_forgets_them_all() {
    let all = agents(3);
    let known = |status: &str| crate::tracker::Known {
        status: status.into(),
        request_id: "earlier".into(),
        seen_at: 0,
    };
    let stranger = AgentUuid::from_value(0xfff);
    for fail in [false, true] {
        let sink = Arc::new(CollectingSink::default());
        let fake = Fake::new(Duration::from_millis(10), |_| Ok("COMPLETE".into()));
        let mut given_back = Vec::new();
        let (engine, loaded) =
            Engine::loading(fake, sink.clone(), config(false, 4), all.clone(), |seed| {
                assert!(seed(all[0].uuid, known("COMPLETE")).is_none());
                assert!(seed(all[1].uuid, known("COLLECTING")).is_none());
                given_back.extend(seed(stranger, known("FAILED")).map(|_| stranger));
                if fail {
                    Err("damaged half-way")
                } else {
                    Ok(())
                }
            });
        assert_eq!(loaded.is_err(), fail);
        assert_eq!(given_back, [stranger]);
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(120)).await;
            s.cancel();
        });
        let (engine, _) = engine.run(stop).await;
        let changed: Vec<(String, String)> = sink
            .events()
            .into_iter()
            .filter_map(|e| match e {
                Event::StatusChanged {
                    uuid, from_status, ..
                } => Some((uuid, from_status.to_string())),
                _ => None,
            })
            .collect();
        let from = |i: usize| {
            changed
                .iter()
                .filter(|(u, _)| all[i].uuid == *u)
                .map(|(_, f)| f.as_str())
                .collect::<Vec<_>>()
        };
        if fail {
            assert_eq!(
                (from(0), from(1), from(2)),
                (vec!["UNKNOWN"], vec!["UNKNOWN"], vec!["UNKNOWN"])
            );
        } else {
            // Agent 0 was COMPLETE already; 1 moves on from COLLECTING; 2 was unknown.
            assert_eq!(
                (from(0), from(1), from(2)),
                (vec![], vec!["COLLECTING"], vec!["UNKNOWN"])
            );
        }
        assert_eq!(
            engine.agents.known().count(),
            3,
            "every watched agent answered"
        );
        assert!(!engine.watches(&stranger));
    }
}

/// Discovery's removal (issue 20): an agent removed with `Removed::Keep` stops being polled
/// but its status stays (saved, not watched); added back it repeats no `status_changed`, in
/// flight at its removal or not. `Retain` then forgets every agent not watched outside its
/// set, and one forgotten comes back as new (`UNKNOWN → …` again).
#[tokio::test(start_paused = true)]
async fn removed_with_keep_comes_back_without_events_until_retain_forgets_it() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    // 2 s latency: agent 1's poll is in flight when it is removed (an orphan).
    let fake = Fake::new(Duration::from_secs(2), move |u| {
        l.lock().unwrap().push(u.to_string());
        Ok("COMPLETE".into())
    });
    let sink = Arc::new(CollectingSink::default());
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let all = agents(3);
    let mut cfg = config(false, 4);
    cfg.intervals.settled = Duration::from_secs(5);
    let engine = Engine::new(fake, sink.clone(), cfg, &all, HashMap::new()).with_control(rx);
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    let reload = |agents: Vec<Agent>, removed: Removed| {
        let (reply, answer) = tokio::sync::oneshot::channel();
        tx.send(Control::Reload {
            agents,
            config: cfg,
            removed,
            reply,
        })
        .unwrap();
        answer
    };
    let changes = |sink: &CollectingSink, uuid: &AgentUuid| {
        sink.events()
            .iter()
            .filter(|e| matches!(e, Event::StatusChanged { uuid: u, .. } if *uuid == *u))
            .count()
    };
    // Every agent answered once (at ~2.1 s); their next polls go out 5 s later and are in
    // flight at 8 s, when agents 1 and 2 leave, kept: orphans whose answer is dropped.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(sink.events().len(), 3, "one status_changed each");
    // Answers are logged when they come back.
    let polls_of = |a: &Agent| log.lock().unwrap().iter().filter(|u| a.uuid == **u).count();
    let kept = vec![all[0].clone()];
    assert_eq!(reload(kept, Removed::Keep).await.unwrap(), (1, 0, 2));
    let at_removal = polls_of(&all[1]);
    tokio::time::sleep(Duration::from_secs(30)).await;
    // Not polled while not watched (the request in flight at the removal aside).
    let gone_at = polls_of(&all[1]);
    assert!(gone_at <= at_removal + 1, "{at_removal} then {gone_at}");
    // Back: known statuses, so no event; and polled again.
    assert_eq!(reload(all.clone(), Removed::Keep).await.unwrap(), (3, 2, 0));
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(polls_of(&all[1]) >= gone_at + 2);
    for a in &all {
        assert_eq!(changes(&sink, &a.uuid), 1, "{} repeated an event", a.uuid);
    }
    // Gone again; Retain keeps agent 1 only: agent 2 comes back as new.
    assert_eq!(
        reload(all[..1].to_vec(), Removed::Keep).await.unwrap(),
        (1, 0, 2)
    );
    tx.send(Control::Retain {
        keep: [all[1].uuid].into_iter().collect(),
    })
    .unwrap();
    assert_eq!(reload(all.clone(), Removed::Keep).await.unwrap(), (3, 2, 0));
    tokio::time::sleep(Duration::from_secs(12)).await;
    stop.cancel();
    let (engine, _) = run.await.unwrap();
    assert_eq!(changes(&sink, &all[1].uuid), 1, "kept by Retain");
    assert_eq!(
        changes(&sink, &all[2].uuid),
        2,
        "forgotten: UNKNOWN → COMPLETE again"
    );
    assert_eq!(engine.agents.known().count(), 3);
}

/// Host facts (issue 22) follow the watchlist: set at start, replaced, cleared and set for
/// new agents by a reload, as names are.
#[tokio::test(start_paused = true)]
async fn reloads_update_the_host_facts_the_policy_sees() {
    let tagged = |tags: &[&str]| {
        let text: String = tags
            .iter()
            .enumerate()
            .map(|(i, t)| format!("[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\n{t}\n"))
            .collect();
        crate::watchlist::Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
            .expect("test watchlist parses")
            .agents
    };
    let tags_of = |engine: &Engine<Fake>, i: u128| {
        let id = engine
            .agents
            .id_of(&AgentUuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap())
            .expect("watched");
        engine
            .agents
            .with_host(id, "default", |h| {
                h.tags.iter().map(|t| t.to_string()).collect::<Vec<_>>()
            })
            .unwrap()
    };
    let fake = Fake::new(Duration::from_millis(10), |_| Ok("COMPLETE".into()));
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let start = tagged(&["tags = [\"web\", \"prod\"]", ""]);
    let engine = Engine::new(
        fake,
        Arc::new(CollectingSink::default()),
        config(false, 4),
        &start,
        HashMap::new(),
    )
    .with_control(rx);
    assert_eq!(tags_of(&engine, 0), ["prod", "web"]);
    assert!(tags_of(&engine, 1).is_empty());
    let stop = CancellationToken::new();
    let run = tokio::spawn(engine.run(stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send(Control::Reload {
        agents: tagged(&["", "tags = [\"db\"]", "tags = [\"new\"]"]),
        config: config(false, 4),
        removed: super::Removed::Forget,
        reply,
    })
    .unwrap();
    assert_eq!(answer.await.unwrap(), (3, 1, 0));
    stop.cancel();
    let (engine, _) = run.await.unwrap();
    assert!(tags_of(&engine, 0).is_empty(), "its tags were removed");
    assert_eq!(tags_of(&engine, 1), ["db"]);
    assert_eq!(tags_of(&engine, 2), ["new"]);
}
