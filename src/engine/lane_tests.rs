//! The lanes' own in-flight budgets through the whole engine under paused time (issue 20,
//! item 3): a slow lane fills its own budget and never the others', so `DescribeOpenPorts`
//! answering in 8 s leaves status polling at its full rate in every span, and the other way
//! round.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lane::Action;
use super::*;
use crate::events::{CollectingSink, Event};
use crate::inventory::store::InventoryMap;
use crate::inventory::{Baseline, Page, Port};

/// Every agent `COMPLETE` with one open port; each action answers after its own latency.
#[derive(Clone)]
struct SlowLane {
    /// Latency per action, at [`Action::index`].
    latency: [Duration; 3],
    /// (when sent, action) of every request, in send order.
    log: Arc<Mutex<Vec<(Instant, Action)>>>,
}

impl SlowLane {
    fn new(latency: [Duration; 3]) -> Self {
        SlowLane {
            latency,
            log: Arc::default(),
        }
    }

    /// Records a send now; the latency of `action`.
    fn sent(&self, action: Action) -> Duration {
        self.log.lock().unwrap().push((Instant::now(), action));
        self.latency[action.index()]
    }
}

impl Poller for SlowLane {
    fn poll(&self, _uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let latency = self.sent(Action::PollStatus);
        async move {
            tokio::time::sleep(latency).await;
            Ok(TaskStatus {
                status: "COMPLETE".into(),
                request_id: "rs".into(),
            })
        }
    }

    fn create_task(&self, _uuid: &str) -> impl Future<Output = Result<String, ApiError>> + Send {
        let latency = self.sent(Action::CreateTask);
        async move {
            tokio::time::sleep(latency).await;
            Ok("rc".to_owned())
        }
    }

    fn describe_ports(
        &self,
        _uuid: &str,
        _limit: u32,
        _offset: u32,
    ) -> impl Future<Output = Result<Page, ApiError>> + Send {
        let latency = self.sent(Action::FetchPorts);
        async move {
            tokio::time::sleep(latency).await;
            Ok(Page {
                total: 1,
                rows: vec![Port {
                    port: 22,
                    process: "sshd".into(),
                    pid: 7,
                    cwp: None,
                }],
                ids: Vec::new(),
                machine_ip: "10.0.0.9".into(),
                machine_name: "db".into(),
                request_id: "rp".into(),
            })
        }
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

/// 20 requests/s and 32 in flight per lane; a 10-s settled interval, so 400 agents want 40
/// status polls a second: the status lane always has work beyond its quota.
fn config() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 32,
        intervals: Intervals {
            settled: Duration::from_secs(10),
            collecting: Duration::from_secs(2),
            offline: Duration::from_secs(10),
        },
        once: false,
    }
}

fn options() -> InventoryOptions {
    InventoryOptions {
        enabled: true,
        rescan_interval: Duration::ZERO,
        create_missing: false,
        baseline: Baseline::Summary,
        action_rates: [20; 5],
        action_in_flight: [32; 5],
    }
}

/// Runs 400 agents, all answering `COMPLETE` with nothing stored (so each gets a first
/// fetch: after its first answer, or at once when `known_complete` says an earlier run saw
/// it `COMPLETE`), for `secs` of paused time; the send log.
async fn run(
    api: SlowLane,
    options: InventoryOptions,
    known_complete: bool,
    secs: u64,
) -> Vec<(Instant, Action)> {
    let log = api.log.clone();
    let agents = agents(400);
    let known = (agents.iter())
        .filter(|_| known_complete)
        .map(|a| {
            let known = crate::tracker::Known {
                status: crate::status::Status::Complete,
                request_id: "rk".into(),
                seen_at: 0,
            };
            (a.uuid, known)
        })
        .collect();
    let engine = Engine::new(
        api,
        Arc::new(CollectingSink::default()),
        config(),
        &agents,
        known,
    )
    .with_inventory(options, InventoryMap::new(), None);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.cancel();
    });
    let _ = engine.run(stop).await;
    log.lock().unwrap().clone()
}

/// Sends of `action` per `span` from the first send of the run, over `spans` spans.
fn per_span(log: &[(Instant, Action)], action: Action, span: Duration, spans: u32) -> Vec<usize> {
    let Some(start) = log.first().map(|(t, _)| *t) else {
        return vec![0; spans as usize];
    };
    (0..spans)
        .map(|k| {
            let from = start + span * k;
            let to = from + span;
            log.iter()
                .filter(|(t, a)| *a == action && *t >= from && *t < to)
                .count()
        })
        .collect()
}

/// The most requests of `action` in flight at once, each taking `latency` (exact under paused
/// time: a request sent at t is in flight over [t, t + latency)).
fn most_in_flight(log: &[(Instant, Action)], action: Action, latency: Duration) -> usize {
    let times: Vec<Instant> = (log.iter())
        .filter(|(_, a)| *a == action)
        .map(|(t, _)| *t)
        .collect();
    times
        .iter()
        .map(|t| {
            times
                .iter()
                .filter(|u| **u <= *t && *t < **u + latency)
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn status_keeps_its_rate_in_every_10_s_span_while_ports_answer_in_8_s() {
    let slow = Duration::from_secs(8);
    let fast = Duration::from_millis(50);
    let log = run(SlowLane::new([fast, fast, slow]), options(), false, 61).await;
    let status = per_span(&log, Action::PollStatus, Duration::from_secs(10), 6);
    let seconds = per_span(&log, Action::PollStatus, Duration::from_secs(1), 60);
    // >= 19.5 requests/s in every 10-s span.
    assert!(
        status.iter().all(|n| *n >= 195),
        "status polls per 10 s {status:?}, per second {seconds:?}"
    );
    // The ports lane was busy all along, at its own budget of 32.
    let ports = per_span(&log, Action::FetchPorts, Duration::from_secs(10), 6);
    assert!(ports.iter().all(|n| *n >= 32), "pages per 10 s {ports:?}");
    assert_eq!(most_in_flight(&log, Action::FetchPorts, slow), 32);
}

#[tokio::test(start_paused = true)]
async fn a_slow_status_lane_never_holds_back_the_inventory_lanes() {
    // The other way round: status answers take 8 s and fill the status lane's 32; the first
    // fetches (all 400 agents known `COMPLETE`, nothing stored) still go at the ports lane's
    // 20/s, which a shared budget held by status polls would stop.
    let slow = Duration::from_secs(8);
    let fast = Duration::from_millis(50);
    let log = run(SlowLane::new([slow, fast, fast]), options(), true, 21).await;
    let ports = per_span(&log, Action::FetchPorts, Duration::from_secs(10), 2);
    let seconds = per_span(&log, Action::FetchPorts, Duration::from_secs(1), 20);
    assert!(
        ports.iter().all(|n| *n >= 195),
        "pages per 10 s {ports:?}, per second {seconds:?}"
    );
    assert_eq!(most_in_flight(&log, Action::PollStatus, slow), 32);
}

#[tokio::test(start_paused = true)]
async fn an_actions_own_max_in_flight_bounds_its_lane_alone() {
    // `[api.actions.DescribeOpenPorts] max_in_flight = 4`: never more than 4 pages in flight
    // (4 per 8 s), and status polling keeps its full rate and its own 32.
    let slow = Duration::from_secs(8);
    let fast = Duration::from_millis(50);
    let mut o = options();
    o.action_in_flight = [32, 32, 4, 32, 32];
    let log = run(SlowLane::new([fast, fast, slow]), o, false, 41).await;
    assert_eq!(most_in_flight(&log, Action::FetchPorts, slow), 4);
    let ports = per_span(&log, Action::FetchPorts, Duration::from_secs(8), 5);
    assert!(ports.iter().all(|n| *n == 4), "pages per 8 s {ports:?}");
    let status = per_span(&log, Action::PollStatus, Duration::from_secs(10), 4);
    assert!(
        status.iter().all(|n| *n >= 195),
        "status per 10 s {status:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_sets_every_lanes_budget_and_keeps_the_per_action_ones() {
    let fast = Duration::from_millis(50);
    let budgets = |e: &Engine<SlowLane>| {
        [Action::PollStatus, Action::CreateTask, Action::FetchPorts]
            .map(|a| e.account.lanes[a.index()].max_in_flight())
    };
    let sink = Arc::new(CollectingSink::default());
    let mut o = options();
    o.action_in_flight = [32, 32, 4, 32, 32];
    let mut engine = Engine::new(
        SlowLane::new([fast; 3]),
        sink.clone(),
        config(),
        &agents(2),
        Default::default(),
    )
    .with_inventory(o, InventoryMap::new(), None);
    assert_eq!(budgets(&engine), [32, 32, 4]);
    // As the daemon reloads: the new `[api]` first, then the per-action settings.
    let (reply, _answer) = tokio::sync::oneshot::channel();
    let config = EngineConfig {
        max_in_flight: 8,
        ..config()
    };
    engine.apply(Control::Reload {
        agents: agents(2),
        config,
        reply,
        removed: Removed::Forget,
    });
    o.action_in_flight = [8, 8, 2, 32, 32];
    engine.apply(Control::Inventory(o));
    assert_eq!(budgets(&engine), [8, 8, 2]);
    // Without the inventory's options (status-only engines of tests): `max_in_flight` each.
    let mut engine = Engine::new(
        SlowLane::new([fast; 3]),
        sink,
        EngineConfig {
            max_in_flight: 16,
            ..config
        },
        &agents(2),
        Default::default(),
    );
    assert_eq!(budgets(&engine), [16; 3]);
    let (reply, _answer) = tokio::sync::oneshot::channel();
    engine.apply(Control::Reload {
        agents: agents(2),
        config,
        reply,
        removed: Removed::Forget,
    });
    assert_eq!(budgets(&engine), [8; 3]);
}

/// Issue 27: 2,400 agents known `COMPLETE` with a snapshot, rescans every 60 s (40 slots a
/// second, twice the create lane's quota); one agent in three completed a task just now, so
/// at its slot it needs no task. Sends over `secs` of paused time, and the events.
async fn rescans_with_recent_tasks(secs: u64) -> (Vec<(Instant, Action)>, Vec<Event>) {
    let fast = Duration::from_millis(50);
    let api = SlowLane::new([fast; 3]);
    let log = api.log.clone();
    let agents = agents(2_400);
    let known = agents
        .iter()
        .map(|a| {
            let known = crate::tracker::Known {
                status: crate::status::Status::Complete,
                request_id: "rk".into(),
                seen_at: 0,
            };
            (a.uuid, known)
        })
        .collect();
    let now = super::inventory_state::unix_secs();
    let stored: InventoryMap = (agents.iter().enumerate())
        .map(|(i, a)| {
            let entry = crate::inventory::store::StoredAgent {
                // A third completed a task just now, the rest long ago.
                fetched_at: Some(if i % 3 == 0 { now } else { 0 }),
                snapshot: Some(Arc::new(crate::inventory::Snapshot::default())),
                ..Default::default()
            };
            (a.uuid.to_string(), entry)
        })
        .collect();
    let mut o = options();
    o.rescan_interval = Duration::from_secs(60);
    let sink = Arc::new(CollectingSink::default());
    let engine =
        Engine::new(api, sink.clone(), config(), &agents, known).with_inventory(o, stored, None);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.cancel();
    });
    let _ = engine.run(stop).await;
    let log = log.lock().unwrap().clone();
    (log, sink.events())
}

#[tokio::test(start_paused = true)]
async fn a_create_lane_spends_no_slot_on_a_rescan_that_is_not_due() {
    // With 26.7 tasks/s wanted and 13.3/s of slots that need none, the create lane still
    // sends at its full 19.85/s: the slot is taken only for a job that needs a request. (Taken
    // before deciding, a third of the grants went to nothing: 13.2/s.)
    let (log, events) = rescans_with_recent_tasks(20).await;
    let creates: Vec<Instant> = (log.iter())
        .filter(|(_, a)| *a == Action::CreateTask)
        .map(|(t, _)| *t)
        .collect();
    assert!(creates.len() > 100, "{} tasks", creates.len());
    // From 1 s on: the first rescan slots come due one by one, no backlog yet.
    let steady: Vec<Instant> = (creates.iter())
        .filter(|t| **t >= creates[0] + Duration::from_secs(1))
        .copied()
        .collect();
    let span = steady.last().unwrap().duration_since(steady[0]);
    let rate = (steady.len() - 1) as f64 / span.as_secs_f64();
    assert!(rate >= 19.8, "create lane at {rate:.3}/s");
    // And the strict limit holds: never more than 20 in any second.
    assert!(crate::pacing::max_in_any_window(&creates) <= 20);
    // Every task went to an agent that needed one, none to the third that just had one.
    let tasks: Vec<usize> = (events.iter())
        .filter_map(|e| match e {
            Event::ScanRequested { uuid, .. } => usize::from_str_radix(&uuid[24..], 16).ok(),
            _ => None,
        })
        .collect();
    assert!(tasks.len() + 40 >= creates.len(), "{} events", tasks.len());
    assert!(
        tasks.iter().all(|i| i % 3 != 0),
        "a task for a recent agent"
    );
}

#[tokio::test(start_paused = true)]
async fn queued_first_fetches_hold_no_assembly() {
    // Issue 27: 50 accounts × 1,800 first fetches each held an `Assembly` from the moment
    // they were queued: 28 MB before a single page. Queued, a fetch is 16 bytes; its
    // assembly comes with its first page.
    assert!(std::mem::size_of::<super::inventory_state::Fetch>() <= 16);
    let fast = Duration::from_millis(50);
    let agents = agents(2_000);
    let known = (agents.iter())
        .map(|a| {
            let known = crate::tracker::Known {
                status: crate::status::Status::Complete,
                request_id: "rk".into(),
                seen_at: 0,
            };
            (a.uuid, known)
        })
        .collect();
    let engine = Engine::new(
        SlowLane::new([fast; 3]),
        Arc::new(CollectingSink::default()),
        config(),
        &agents,
        known,
    )
    .with_inventory(options(), InventoryMap::new(), None);
    let fetches = |e: &Engine<SlowLane>| {
        let inv = e.inventory.as_ref().expect("kept");
        let started = inv.fetches.values().filter(|f| f.started()).count();
        (inv.fetches.len(), started)
    };
    assert_eq!(
        fetches(&engine),
        (2_000, 0),
        "every first fetch queued, none started"
    );
    // Three seconds of first fetches (one page each: stored at the first answer).
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(3)).await;
        stopper.cancel();
    });
    let (engine, _) = engine.run(stop).await;
    let stored = engine.stored_inventory().expect("kept").len();
    assert!(stored >= 40, "{stored} snapshots stored");
    let (queued, started) = fetches(&engine);
    assert_eq!(queued, 2_000 - stored, "a stored snapshot ends its fetch");
    assert_eq!(started, 0, "the ones still queued hold no assembly");
}
