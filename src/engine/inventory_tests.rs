//! The inventory through the whole engine under paused time, with a scripted fake API:
//! the exact port events for a timeline, paging through a listing that changes, lying
//! answers, restarts, and the lanes' separate limits.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::{CollectingSink, Event};
use crate::inventory::store::InventoryMap;
use crate::inventory::{Baseline, Page, Port, confirm};

type Script = Arc<dyn Fn(Duration, &str, u32) -> Result<Page, ApiError> + Send + Sync>;

/// Statuses and port listings as functions of the time since the start.
#[derive(Clone)]
struct Scripted {
    start: Instant,
    /// Given the time since the start and since the last task was created.
    status: Arc<dyn Fn(Duration, Option<Duration>) -> &'static str + Send + Sync>,
    ports: Script,
    /// (when, action) of every request.
    log: Arc<Mutex<Vec<(Instant, &'static str)>>>,
    /// When each agent's last task was created.
    created: Arc<Mutex<HashMap<String, Instant>>>,
    /// How long a status answer and a page take.
    latency: (Duration, Duration),
}

impl Scripted {
    fn new(
        status: impl Fn(Duration, Option<Duration>) -> &'static str + Send + Sync + 'static,
        ports: impl Fn(Duration, &str, u32) -> Result<Page, ApiError> + Send + Sync + 'static,
    ) -> Self {
        Scripted {
            start: Instant::now(),
            status: Arc::new(status),
            ports: Arc::new(ports),
            log: Arc::default(),
            created: Arc::default(),
            latency: (Duration::from_millis(50), Duration::from_millis(50)),
        }
    }

    fn record(&self, action: &'static str) -> Duration {
        let now = Instant::now();
        self.log.lock().unwrap().push((now, action));
        now - self.start
    }
}

impl Poller for Scripted {
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let at = self.record("status");
        let created = self
            .created
            .lock()
            .unwrap()
            .get(uuid)
            .map(|t| Instant::now() - *t);
        let status = (self.status)(at, created).to_owned();
        let latency = self.latency.0;
        async move {
            tokio::time::sleep(latency).await;
            Ok(TaskStatus {
                status,
                request_id: "rs".into(),
            })
        }
    }

    fn create_task(&self, uuid: &str) -> impl Future<Output = Result<String, ApiError>> + Send {
        self.record("create");
        self.created
            .lock()
            .unwrap()
            .insert(uuid.to_owned(), Instant::now());
        async { Ok("rc".to_owned()) }
    }

    fn describe_ports(
        &self,
        uuid: &str,
        limit: u32,
        offset: u32,
    ) -> impl Future<Output = Result<Page, ApiError>> + Send {
        let at = self.record("ports");
        assert_eq!(limit, 100);
        let answer = (self.ports)(at, uuid, offset);
        let latency = self.latency.1;
        async move {
            tokio::time::sleep(latency).await;
            answer
        }
    }
}

fn port(port: u16, process: &str) -> Port {
    Port {
        port,
        process: process.into(),
        pid: 7,
        cwp: None,
    }
}

/// The page at `offset` of `all`, claiming `total`.
fn page(all: &[Port], offset: u32, total: u64) -> Page {
    let at = (offset as usize).min(all.len());
    Page {
        total,
        rows: all[at..(at + 100).min(all.len())].to_vec(),
        ids: Vec::new(),
        machine_ip: "10.0.0.9".into(),
        machine_name: "db".into(),
        request_id: format!("rp{offset}"),
    }
}

fn agents(n: usize) -> Vec<Agent> {
    let text: String = (0..n)
        .map(|i| {
            format!("[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\nname = \"a{i}\"\n")
        })
        .collect();
    crate::watchlist::Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
        .unwrap()
        .agents
}

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

fn options(baseline: Baseline) -> InventoryOptions {
    InventoryOptions {
        enabled: true,
        rescan_interval: Duration::ZERO,
        create_missing: false,
        baseline,
        action_rates: [20; 5],
        action_in_flight: [32; 5],
    }
}

/// Runs for `secs` of paused time; the events (status and inventory ones), the stored
/// inventory and the statuses known at the end.
async fn run(
    api: Scripted,
    n: usize,
    options: InventoryOptions,
    known: crate::tracker::KnownMap,
    stored: InventoryMap,
    secs: u64,
) -> (Vec<Event>, InventoryMap, crate::tracker::KnownMap) {
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(api, sink.clone(), config(), &agents(n), known)
        .with_inventory(options, stored, None);
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.cancel();
    });
    let (engine, _) = engine.run(stop).await;
    let stored = engine.stored_inventory().cloned().unwrap_or_default();
    let known = engine.agents.known().map(|(u, k)| (u, k.clone())).collect();
    (sink.events(), stored, known)
}

/// Events as short strings, status and inventory ones only.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StatusChanged { to_status, .. } => Some(format!("status {to_status}")),
            Event::PortOpened {
                port,
                process_name,
                baseline,
                ..
            } => Some(format!(
                "opened {port} {process_name}{}",
                if *baseline { " baseline" } else { "" }
            )),
            Event::PortClosed {
                port, process_name, ..
            } => Some(format!("closed {port} {process_name}")),
            Event::InventoryBaseline { ports, .. } => Some(format!("baseline {ports}")),
            Event::InventoryFailed { error_code, .. } => Some(format!("failed {error_code}")),
            Event::ScanRequested { reason, .. } => Some(format!("scan {reason}")),
            _ => None,
        })
        .collect()
}

/// COLLECTING → COMPLETE (22, 80) → COLLECTING → COMPLETE (22, 3306).
fn timeline() -> Scripted {
    Scripted::new(
        |at, _| match at.as_secs() {
            0..5 => "COLLECTING",
            5..30 => "COMPLETE",
            30..45 => "COLLECTING",
            _ => "COMPLETE",
        },
        |at, _, offset| {
            let ports = if at < Duration::from_secs(30) {
                vec![port(22, "sshd"), port(80, "nginx")]
            } else {
                vec![port(22, "sshd"), port(3306, "mysqld")]
            };
            Ok(page(&ports, offset, ports.len() as u64))
        },
    )
}

#[tokio::test(start_paused = true)]
async fn a_timeline_gives_exactly_its_port_events_and_a_restart_repeats_none() {
    let (events, stored, known) = run(
        timeline(),
        1,
        options(Baseline::Summary),
        HashMap::new(),
        InventoryMap::new(),
        60,
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "status COLLECTING",
            "status COMPLETE",
            "baseline 2",
            "status COLLECTING",
            "status COMPLETE",
            // Opens at once; the close after the confirming fetch.
            "opened 3306 mysqld",
            "closed 80 nginx",
        ]
    );
    let Some(Event::PortOpened {
        machine_ip,
        request_id,
        agent_name,
        ..
    }) = events
        .iter()
        .find(|e| matches!(e, Event::PortOpened { .. }))
    else {
        panic!()
    };
    assert_eq!(
        (
            machine_ip.as_str(),
            request_id.as_str(),
            agent_name.as_str()
        ),
        ("10.0.0.9", "rp0", "a0")
    );
    assert_eq!(stored.len(), 1);
    // A restart with what was persisted: an unchanged COMPLETE agent with a snapshot is
    // neither fetched again nor reported again.
    let api = Scripted::new(
        |_, _| "COMPLETE",
        |_, _, offset| {
            let ports = vec![port(22, "sshd"), port(3306, "mysqld")];
            Ok(page(&ports, offset, 2))
        },
    );
    let log = api.log.clone();
    let (events, _, _) = run(
        api,
        1,
        options(Baseline::Summary),
        known.clone(),
        stored.clone(),
        30,
    )
    .await;
    assert_eq!(names(&events), Vec::<String>::new());
    assert!(log.lock().unwrap().iter().all(|(_, a)| *a == "status"));
    // Without the snapshot (say the inventory file was lost), a COMPLETE agent is fetched at
    // start: a baseline again, never a flood of port_opened.
    let api = Scripted::new(
        |_, _| "COMPLETE",
        |_, _, offset| Ok(page(&[port(22, "sshd"), port(3306, "mysqld")], offset, 2)),
    );
    let (events, _, _) = run(
        api,
        1,
        options(Baseline::Summary),
        known,
        InventoryMap::new(),
        3,
    )
    .await;
    assert_eq!(names(&events), ["baseline 2"]);
}

#[tokio::test(start_paused = true)]
async fn baseline_ports_reports_each_first_port_marked() {
    let (events, _, _) = run(
        timeline(),
        1,
        options(Baseline::Ports),
        HashMap::new(),
        InventoryMap::new(),
        20,
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "status COLLECTING",
            "status COMPLETE",
            "opened 22 sshd baseline",
            "opened 80 nginx baseline"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_listing_that_changes_while_paged_is_fetched_again_and_compared_once() {
    // 250 ports; on the first fetch the listing grows by one between page 1 and 2.
    let calls = Arc::new(Mutex::new(0u32));
    let seen = calls.clone();
    let api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, _, offset| {
            let mut n = seen.lock().unwrap();
            *n += 1;
            let mut all: Vec<Port> = (0..250).map(|p| port(1000 + p, "svc")).collect();
            if *n >= 2 {
                all.push(port(9, "late"));
            }
            let total = all.len() as u64;
            Ok(page(&all, offset, total))
        },
    );
    let (events, stored, _) = run(
        api,
        1,
        options(Baseline::Summary),
        HashMap::new(),
        InventoryMap::new(),
        20,
    )
    .await;
    assert_eq!(names(&events), ["status COMPLETE", "baseline 251"]);
    // First try: pages 0, 100 (total changed) → second try: 0, 100, 200.
    assert_eq!(*calls.lock().unwrap(), 5);
    let snapshot = stored.values().next().unwrap().snapshot.as_ref().unwrap();
    assert_eq!(snapshot.ports.len(), 251);
}

#[tokio::test(start_paused = true)]
async fn lying_or_hostile_answers_end_as_inventory_failed_never_as_port_events() {
    // TotalCount says 150 but the listing ends after 100 rows, every time.
    let lying = Scripted::new(
        |_, _| "COMPLETE",
        |_, _, offset| {
            let all: Vec<Port> = (0..100).map(|p| port(p, "x")).collect();
            Ok(page(&all, offset, 150))
        },
    );
    let (events, stored, _) = run(
        lying,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        InventoryMap::new(),
        30,
    )
    .await;
    assert_eq!(
        names(&events),
        ["status COMPLETE", "failed InventoryError.Incomplete"]
    );
    assert!(stored.values().all(|a| a.snapshot.is_none()));
    // A page that cannot be believed (the client's decode error), every time.
    let hostile = Scripted::new(
        |_, _| "COMPLETE",
        |_, _, _| {
            Err(ApiError::Decode {
                reason: "Response.OpenPorts[0].Port is not a port number (0 to 65535)".into(),
                request_id: Some("rh".into()),
            })
        },
    );
    let (events, _, _) = run(
        hostile,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        InventoryMap::new(),
        30,
    )
    .await;
    assert_eq!(
        names(&events),
        ["status COMPLETE", "failed ClientError.Decode"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_10000_port_inventory_pages_in_its_own_lane_without_slowing_status_polls() {
    // 1 agent with 10,000 ports (100 pages) and 199 more agents, all COMPLETE from the start:
    // status polls keep their 20/s while the pages go at their own 20/s.
    let all: Vec<Port> = (0..10_000).map(|p| port(p, "svc")).collect();
    let api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, uuid, offset| {
            if uuid.ends_with("000000000000") {
                Ok(page(&all, offset, 10_000))
            } else {
                Ok(page(&[], 0, 0))
            }
        },
    );
    let log = api.log.clone();
    let mut o = options(Baseline::Summary);
    o.action_rates = [20, 20, 20, 20, 20];
    let (events, _, _) = run(api, 200, o, HashMap::new(), InventoryMap::new(), 30).await;
    assert!(names(&events).contains(&"baseline 10000".to_owned()));
    let log = log.lock().unwrap();
    for action in ["status", "ports"] {
        let times: Vec<Instant> = log
            .iter()
            .filter(|(_, a)| *a == action)
            .map(|(t, _)| *t)
            .collect();
        let most = times
            .iter()
            .map(|t| {
                times
                    .iter()
                    .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                    .count()
            })
            .max()
            .unwrap_or(0);
        assert!(most <= 20, "{action}: {most} in one second");
    }
    let count = |action: &str| log.iter().filter(|(_, a)| *a == action).count();
    // 200 agents every 10 s is the whole status quota of 20/s: 600 in 30 s but for the
    // phased start, although 299 pages (199 one-page listings, one of 100) went meanwhile.
    assert!(count("status") >= 540, "{}", count("status"));
    assert_eq!(count("ports"), 299);
}

/// NO_TASK until a task is created; then COLLECTING for 5 s, then COMPLETE.
fn task_driven(before: &'static str) -> Scripted {
    Scripted::new(
        move |_, created| match created {
            None => before,
            Some(since) if since < Duration::from_secs(5) => "COLLECTING",
            Some(_) => "COMPLETE",
        },
        |_, _, offset| Ok(page(&[port(22, "sshd"), port(443, "nginx")], offset, 2)),
    )
}

#[tokio::test(start_paused = true)]
async fn create_missing_asks_for_a_task_once_and_the_inventory_follows() {
    let api = task_driven("NO_TASK");
    let log = api.log.clone();
    let mut o = options(Baseline::Summary);
    o.create_missing = true;
    let (events, stored, _) = run(api, 1, o, HashMap::new(), InventoryMap::new(), 100).await;
    assert_eq!(
        names(&events),
        [
            "status NO_TASK",
            "scan missing",
            "status COLLECTING",
            "status COMPLETE",
            "baseline 2"
        ]
    );
    let creates = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, a)| *a == "create")
        .count();
    assert_eq!(creates, 1);
    assert!(stored.values().next().unwrap().requested_at.is_some());
    // Without create_missing, NO_TASK stays NO_TASK and nothing is created.
    let api = task_driven("NO_TASK");
    let log = api.log.clone();
    let (events, _, _) = run(
        api,
        1,
        options(Baseline::Summary),
        HashMap::new(),
        InventoryMap::new(),
        100,
    )
    .await;
    assert_eq!(names(&events), ["status NO_TASK"]);
    assert!(log.lock().unwrap().iter().all(|(_, a)| *a == "status"));
}

#[tokio::test(start_paused = true)]
async fn rescans_come_once_per_interval_per_agent_spread_not_in_a_burst() {
    // 20 COMPLETE agents, rescan every 120 s, for 400 s: each fetched at start, then a task
    // at its slot in each interval once its last one is old enough, the slots spread over
    // the interval rather than all at once.
    let api = task_driven("COMPLETE");
    let log = api.log.clone();
    let mut o = options(Baseline::Summary);
    o.rescan_interval = Duration::from_secs(120);
    let (events, _, _) = run(api, 20, o, HashMap::new(), InventoryMap::new(), 400).await;
    let names = names(&events);
    let scans = names.iter().filter(|n| *n == "scan rescan").count();
    // Slots at p, p+120, p+240, p+360 (p = the agent's phase in 0..120): the first is too
    // soon after the start's fetch unless p ≥ 108 (90 % of the interval); then one per slot
    // within 400 s (each task completes 5 s after it is created, so the next slot finds
    // its listing 115 s old). Paused time makes the count exact, per agent.
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for e in &events {
        if let Event::ScanRequested { uuid, .. } = e {
            *per_agent.entry(uuid.clone()).or_default() += 1;
        }
    }
    let mut expected_total = 0;
    for agent in agents(20) {
        let uuid = agent.uuid.text().to_string();
        let p = crate::scheduler::phase(&uuid, Duration::from_secs(120)).as_secs_f64();
        // No phase within a second of a boundary, where the whole-second ages could go
        // either way: the oracle is unambiguous.
        assert!(
            [108.0, 40.0, 160.0, 280.0]
                .iter()
                .all(|b| (p - b).abs() > 1.0),
            "{uuid}: phase {p}"
        );
        let expected = usize::from(p >= 108.0)
            + (1..=3)
                .filter(|k| p + 120.0 * f64::from(*k) < 400.0)
                .count();
        assert_eq!(
            per_agent.get(&uuid).copied().unwrap_or(0),
            expected,
            "{uuid}: phase {p}"
        );
        expected_total += expected;
    }
    assert_eq!(scans, expected_total);
    assert_eq!(scans, 50, "{names:?}");
    let collecting = names.iter().filter(|n| *n == "status COLLECTING").count();
    assert_eq!(collecting, scans, "each task seen collecting once");
    let baselines = names.iter().filter(|n| n.starts_with("baseline")).count();
    assert_eq!(baselines, 20);
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("opened") || n.starts_with("closed"))
    );
    let log = log.lock().unwrap();
    let t0 = log[0].0;
    let creates: Vec<Duration> = log
        .iter()
        .filter(|(_, a)| *a == "create")
        .map(|(t, _)| *t - t0)
        .collect();
    // Spread: no 10-second window holds more than a quarter of them.
    let most = creates
        .iter()
        .map(|t| {
            creates
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= creates.len() / 4,
        "{most} of {} in 10 s: {creates:?}",
        creates.len()
    );
}

#[tokio::test(start_paused = true)]
async fn an_answer_for_a_removed_agent_never_reaches_the_agent_that_reuses_its_id() {
    // Agent 0's status poll (1 s) and first page (3 s) are both in flight when a reload
    // removes it; its status answer comes first; then a reload adds agent 1, whose own fetch
    // begins before agent 0's page arrives. Agent 0's ports must never become agent 1's.
    let mut api = Scripted::new(
        |_, _| "COMPLETE",
        |_, uuid, offset| {
            let ports = if uuid.ends_with("000000000000") {
                vec![port(1111, "zero")]
            } else {
                vec![port(2222, "one")]
            };
            Ok(page(&ports, offset, 1))
        },
    );
    api.latency = (Duration::from_secs(1), Duration::from_secs(3));
    let all = agents(2);
    let sink = Arc::new(CollectingSink::default());
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    // Agent 0 persisted as COMPLETE without a snapshot: its fetch starts at once.
    let known: crate::tracker::KnownMap = [(
        all[0].uuid,
        crate::tracker::Known {
            status: Status::Complete,
            request_id: "r0".into(),
            seen_at: 0,
        },
    )]
    .into_iter()
    .collect();
    let engine = Engine::new(api, sink.clone(), config(), &all[..1], known)
        .with_control(rx)
        .with_inventory(options(Baseline::Ports), InventoryMap::new(), None);
    let stop = CancellationToken::new();
    let driver = {
        let stop = stop.clone();
        let all = all.clone();
        tokio::spawn(async move {
            let reload = |agents: Vec<Agent>| {
                let (reply, answer) = tokio::sync::oneshot::channel();
                control
                    .send(Control::Reload {
                        agents,
                        config: config(),
                        removed: crate::engine::Removed::Forget,
                        reply,
                    })
                    .unwrap();
                answer
            };
            tokio::time::sleep(Duration::from_millis(500)).await;
            assert_eq!(reload(vec![]).await.unwrap(), (0, 0, 1));
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert_eq!(reload(all[1..].to_vec()).await.unwrap(), (1, 1, 0));
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        })
    };
    let (engine, _) = engine.run(stop).await;
    driver.await.unwrap();
    assert_eq!(
        names(&sink.events()),
        ["status COMPLETE", "opened 2222 one baseline"]
    );
    let stored = engine.stored_inventory().unwrap();
    assert_eq!(stored.len(), 1);
    let ports = &stored[&*all[1].uuid.text()]
        .snapshot
        .as_ref()
        .unwrap()
        .ports;
    assert_eq!(ports.iter().map(|p| p.port).collect::<Vec<_>>(), [2222]);
}

#[tokio::test(start_paused = true)]
async fn throttled_pages_slow_the_ports_lane_alone_and_are_retried() {
    // The first 5 pages are throttled: rate_limited comes from the ports lane, whose rate
    // drops; the status lane keeps its 20/s; the listing is complete in the end.
    let throttled = Arc::new(Mutex::new(5u32));
    let left = throttled.clone();
    let api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, _, offset| {
            let mut left = left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(ApiError::Api {
                    code: "RequestLimitExceeded".into(),
                    message: "slow down".into(),
                    request_id: Some("rt".into()),
                });
            }
            Ok(page(&[port(22, "sshd")], offset, 1))
        },
    );
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(api, sink.clone(), config(), &agents(3), HashMap::new())
        .with_inventory(options(Baseline::Summary), InventoryMap::new(), None);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.cancel();
    });
    let (engine, _) = engine.run(stop).await;
    let events = sink.events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::RateLimited { requests_per_second, .. } if *requests_per_second < 20)),
        "{events:?}"
    );
    assert_eq!(
        names(&events)
            .iter()
            .filter(|n| n.starts_with("baseline"))
            .count(),
        3,
        "throttling is no failure: {:?}",
        names(&events)
    );
    assert!(!names(&events).iter().any(|n| n.starts_with("failed")));
    let lanes = &engine.account.lanes;
    assert_eq!(lanes[lane::Action::PollStatus.index()].pacer.rate(), 20);
    assert!(lanes[lane::Action::FetchPorts.index()].pacer.rate() < 20);
}

#[tokio::test(start_paused = true)]
async fn the_metrics_count_inventory_answers_port_events_and_open_ports() {
    use crate::events::{EventSink, Tee};
    use crate::metrics::Metrics;
    let metrics = Arc::new(Metrics::new(false));
    let log = Arc::new(CollectingSink::default());
    let sink: Arc<dyn EventSink> = Arc::new(Tee(log.clone(), metrics.clone()));
    let engine = Engine::new(timeline(), sink, config(), &agents(1), HashMap::new())
        .with_inventory(options(Baseline::Summary), InventoryMap::new(), None)
        .with_metrics(metrics.clone());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(60)).await;
        s.cancel();
    });
    let _ = engine.run(stop).await;
    assert_eq!(
        names(&log.events())[2..],
        [
            "baseline 2",
            "status COLLECTING",
            "status COMPLETE",
            "opened 3306 mysqld",
            "closed 80 nginx"
        ]
    );
    let text = metrics.encode(false);
    let line = |series: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
            .to_owned()
    };
    assert_eq!(line("cwp_portwatch_open_ports"), "2");
    assert_eq!(
        line("cwp_portwatch_port_events_total{event=\"port_opened\"}"),
        "1"
    );
    assert_eq!(
        line("cwp_portwatch_port_events_total{event=\"port_closed\"}"),
        "1"
    );
    // Three listings of one page each: the baseline, the second task's, and the one that
    // confirmed the close of 80.
    assert_eq!(
        line("cwp_portwatch_api_requests_total{action=\"DescribeOpenPorts\",outcome=\"ok\"}"),
        "3"
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_changes_rescans_and_rates_without_a_burst() {
    // 20 COMPLETE agents without rescans; at 10 s a reload sets rescan_interval 120 s and
    // the ports lane to 5/s; at 400 s another turns rescans off again.
    let api = task_driven("COMPLETE");
    let log = api.log.clone();
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(
        api,
        Arc::new(CollectingSink::default()),
        config(),
        &agents(20),
        HashMap::new(),
    )
    .with_control(rx)
    .with_inventory(options(Baseline::Summary), InventoryMap::new(), None);
    let stop = CancellationToken::new();
    let driver = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let mut o = options(Baseline::Summary);
            o.rescan_interval = Duration::from_secs(120);
            o.action_rates = [20, 20, 5, 20, 20];
            control.send(Control::Inventory(o)).unwrap();
            tokio::time::sleep(Duration::from_secs(390)).await;
            control
                .send(Control::Inventory(options(Baseline::Summary)))
                .unwrap();
            tokio::time::sleep(Duration::from_secs(300)).await;
            stop.cancel();
        })
    };
    let (engine, _) = engine.run(stop).await;
    driver.await.unwrap();
    let log = log.lock().unwrap();
    let t0 = log[0].0;
    let creates: Vec<Duration> = log
        .iter()
        .filter(|(_, a)| *a == "create")
        .map(|(t, _)| *t - t0)
        .collect();
    assert!(
        creates
            .iter()
            .all(|t| *t >= Duration::from_secs(10) && *t < Duration::from_secs(400)),
        "{creates:?}"
    );
    // Exactly: each agent's slots at 10 s + p + 120 k (p its phase in 0..120) until the
    // reload at 400 s, the first only when its listing (fetched at the start) is 108 s old
    // by then (p ≥ 98). No phase is within a second of a boundary.
    let expected: usize = agents(20)
        .iter()
        .map(|agent| {
            let p =
                crate::scheduler::phase(&agent.uuid.text(), Duration::from_secs(120)).as_secs_f64();
            assert!(
                [98.0, 30.0, 150.0, 270.0]
                    .iter()
                    .all(|b| (p - b).abs() > 1.0),
                "phase {p}"
            );
            usize::from(p >= 98.0)
                + (1..=3)
                    .filter(|k| 10.0 + p + 120.0 * f64::from(*k) < 400.0)
                    .count()
        })
        .sum();
    assert_eq!(
        creates.len(),
        expected,
        "rescans between the reloads: {creates:?}"
    );
    assert_eq!(creates.len(), 47);
    let most = creates
        .iter()
        .map(|t| {
            creates
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(10))
                .count()
        })
        .max()
        .unwrap();
    assert!(
        most <= creates.len() / 4,
        "spread after the reload: {most} in 10 s"
    );
    let pages: Vec<Duration> = log
        .iter()
        .filter(|(_, a)| *a == "ports")
        .map(|(t, _)| *t - t0)
        .filter(|t| *t >= Duration::from_secs(11) && *t < Duration::from_secs(400))
        .collect();
    let most_pages = pages
        .iter()
        .map(|t| {
            pages
                .iter()
                .filter(|u| **u >= *t && **u < *t + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    assert!(
        !pages.is_empty() && most_pages <= 5,
        "{most_pages} pages in 1 s at 5/s"
    );
    assert_eq!(
        engine.account.lanes[lane::Action::FetchPorts.index()]
            .pacer
            .rate(),
        20,
        "the second reload's rate"
    );
}

#[tokio::test(start_paused = true)]
async fn an_agent_added_after_the_start_keeps_its_stored_inventory_until_forgotten() {
    // What discovery does after a restart: agent 1 is stored but not watched at start; a
    // reload adds it; its snapshot from before counts, so an unchanged listing is no event
    // (with baseline = "ports" a lost snapshot would repeat every port_opened). Agent 2, held
    // too, is forgotten by Control::Forget and comes back with a baseline.
    let ports = |uuid: &str| {
        if uuid.ends_with('1') {
            vec![port(22, "sshd")]
        } else {
            vec![port(80, "nginx")]
        }
    };
    let api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, uuid, offset| {
            let p = ports(uuid);
            Ok(page(&p, offset, p.len() as u64))
        },
    );
    let all = agents(3);
    let snapshot = |p: Vec<Port>| crate::inventory::store::StoredAgent {
        snapshot: Some(std::sync::Arc::new(crate::inventory::Snapshot::from_rows(
            p,
            String::new(),
            String::new(),
        ))),
        fetched_at: Some(1),
        ..Default::default()
    };
    let mut stored = InventoryMap::new();
    stored.insert(all[1].uuid.to_string(), snapshot(vec![port(22, "sshd")]));
    stored.insert(all[2].uuid.to_string(), snapshot(vec![port(80, "nginx")]));
    let sink = Arc::new(CollectingSink::default());
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(api, sink.clone(), config(), &all[..1], HashMap::new())
        .with_control(rx)
        .with_inventory(options(Baseline::Ports), stored, None);
    assert_eq!(
        engine.stored_inventory().unwrap().len(),
        0,
        "not watched yet"
    );
    let stop = CancellationToken::new();
    let driver = {
        let (stop, all) = (stop.clone(), all.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            control
                .send(Control::Forget {
                    uuids: vec![all[2].uuid],
                })
                .unwrap();
            let (reply, answer) = tokio::sync::oneshot::channel();
            control
                .send(Control::Reload {
                    agents: all.clone(),
                    config: config(),
                    removed: crate::engine::Removed::Forget,
                    reply,
                })
                .unwrap();
            assert_eq!(answer.await.unwrap(), (3, 2, 0));
            tokio::time::sleep(Duration::from_secs(10)).await;
            stop.cancel();
        })
    };
    let _ = engine.run(stop).await;
    driver.await.unwrap();
    let mut events = names(&sink.events());
    events.retain(|e| !e.starts_with("status"));
    events.sort();
    // Agent 0: nothing stored, a baseline; agent 1: unchanged, nothing; agent 2: forgotten,
    // a baseline again.
    assert_eq!(
        events,
        ["opened 80 nginx baseline", "opened 80 nginx baseline"]
    );
}

/// Listings by fetch: the `n`-th listing (0-based, counted at offset 0) is `listing(n)`.
fn by_fetch(
    listing: impl Fn(u32) -> Vec<Port> + Send + Sync + 'static,
) -> (Scripted, Arc<Mutex<u32>>) {
    by_page(move |n, _| listing(n))
}

/// Like [`by_fetch`], the list served for a page also depending on its offset.
fn by_page(
    listing: impl Fn(u32, u32) -> Vec<Port> + Send + Sync + 'static,
) -> (Scripted, Arc<Mutex<u32>>) {
    let fetches = Arc::new(Mutex::new(0u32));
    let seen = fetches.clone();
    let api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, _, offset| {
            let mut n = seen.lock().unwrap();
            if offset == 0 {
                *n += 1;
            }
            let all = listing(*n - 1, offset);
            let total = all.len() as u64;
            Ok(page(&all, offset, total))
        },
    );
    (api, fetches)
}

fn ports_of(n: u16) -> Vec<Port> {
    (0..n).map(|p| port(1000 + p, "svc")).collect()
}

/// A stored snapshot of `ports`, with `unconfirmed` of them awaiting confirmation.
fn stored_with(uuid: &str, ports: Vec<Port>, unconfirmed: &[u16]) -> InventoryMap {
    let unconfirmed = ports
        .iter()
        .filter(|p| unconfirmed.contains(&p.port))
        .map(Port::owned_key)
        .collect();
    let mut m = InventoryMap::new();
    m.insert(
        uuid.to_owned(),
        crate::inventory::store::StoredAgent {
            snapshot: Some(Arc::new(crate::inventory::Snapshot::from_rows(
                ports,
                String::new(),
                String::new(),
            ))),
            unconfirmed,
            fetched_at: Some(1),
            ..Default::default()
        },
    );
    m
}

fn known_complete(n: usize) -> crate::tracker::KnownMap {
    agents(n)
        .iter()
        .map(|a| {
            (
                a.uuid,
                crate::tracker::Known {
                    status: Status::Complete,
                    request_id: "r0".into(),
                    seen_at: 0,
                },
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_port_missing_from_one_complete_listing_is_no_close_a_port_gone_is_one_after_confirming()
{
    // The stored inventory has 150 ports (1000..1150). Then 1010 closes and 2000 opens, and
    // the list shifts while the first listing is paged: page 1 comes from before, page 2 from
    // after. That listing skips 1100 (open all along) and still has 1010 (150 distinct rows,
    // TotalCount right, nothing repeated). No close of 1100 may come of it; the real close of
    // 1010 is reported once confirmed.
    let uuid = agents(1)[0].uuid.to_string();
    let after_change = || {
        let mut all = ports_of(150);
        all.remove(10);
        all.push(port(2000, "new"));
        all
    };
    let (api, fetches) = by_page(move |n, offset| {
        if n == 0 && offset == 0 {
            ports_of(150)
        } else {
            after_change()
        }
    });
    let stored = stored_with(&uuid, ports_of(150), &[]);
    // The agent is COMPLETE with this stored snapshot but a fetch is wanted: a transition.
    let api = Scripted {
        status: Arc::new(|at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        }),
        ..api
    };
    let (events, after, _) =
        run(api, 1, options(Baseline::Ports), HashMap::new(), stored, 30).await;
    let ports: Vec<String> = names(&events)
        .into_iter()
        .filter(|e| !e.starts_with("status"))
        .collect();
    // 2000 at once; 1010 once missing twice (the skewed listing still had it: the first
    // confirming listing misses it for the first time, the second confirms).
    assert_eq!(ports, ["opened 2000 new", "closed 1010 svc"]);
    assert_eq!(*fetches.lock().unwrap(), 3);
    let entry = &after[&uuid];
    assert!(entry.unconfirmed.is_empty());
    assert!(
        entry
            .snapshot
            .as_ref()
            .unwrap()
            .ports
            .iter()
            .any(|p| p.port == 1100)
    );

    // The same, but 1100 is really gone: closed once the confirming listing lacks it too.
    let (api, fetches) = by_fetch(|_| {
        let mut all = ports_of(150);
        all.remove(100);
        all
    });
    let api = Scripted {
        status: Arc::new(|at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        }),
        ..api
    };
    let log = api.log.clone();
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        stored_with(&uuid, ports_of(150), &[]),
        30,
    )
    .await;
    let ports: Vec<String> = names(&events)
        .into_iter()
        .filter(|e| !e.starts_with("status"))
        .collect();
    assert_eq!(ports, ["closed 1100 svc"]);
    assert_eq!(*fetches.lock().unwrap(), 2);
    assert!(after[&uuid].unconfirmed.is_empty());
    // The confirming listing began at least CONFIRM_AFTER after the first one.
    let firsts: Vec<Instant> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, a)| *a == "ports")
        .map(|(t, _)| *t)
        .collect();
    assert!(
        firsts[2] - firsts[1] >= confirm::CONFIRM_AFTER,
        "{firsts:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_transient_empty_listing_closes_nothing() {
    // TotalCount = 0 for one listing after a transition, then the ports are back.
    let uuid = agents(1)[0].uuid.to_string();
    let (api, fetches) = by_fetch(|n| if n == 0 { vec![] } else { ports_of(30) });
    let api = Scripted {
        status: Arc::new(|at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        }),
        ..api
    };
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        stored_with(&uuid, ports_of(30), &[]),
        30,
    )
    .await;
    assert_eq!(
        names(&events),
        ["status COLLECTING", "status COMPLETE"],
        "no port event"
    );
    assert_eq!(*fetches.lock().unwrap(), 2);
    assert_eq!(after[&uuid].snapshot.as_ref().unwrap().ports.len(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_flapping_listing_is_confirmed_a_bounded_number_of_times_and_closes_nothing() {
    // Every listing misses a different port: each confirming fetch finds the last one back
    // and another one missing. Bounded: the fetch and CONFIRMING_FETCHES more, no close; the
    // next round comes a settled interval (10 s here) later, after this run.
    let uuid = agents(1)[0].uuid.to_string();
    let (api, fetches) = by_fetch(|n| {
        let mut all = ports_of(10);
        all.remove(n as usize % 10);
        all
    });
    let api = Scripted {
        status: Arc::new(|at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        }),
        ..api
    };
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        stored_with(&uuid, ports_of(10), &[]),
        15,
    )
    .await;
    assert_eq!(names(&events), ["status COLLECTING", "status COMPLETE"]);
    assert_eq!(*fetches.lock().unwrap(), 1 + confirm::CONFIRMING_FETCHES);
    // The last port missed is still held, for the next fetch to decide.
    assert_eq!(after[&uuid].unconfirmed.len(), 1);
    assert_eq!(after[&uuid].snapshot.as_ref().unwrap().ports.len(), 10);
}

#[tokio::test(start_paused = true)]
async fn closes_awaiting_confirmation_at_a_restart_are_confirmed_by_a_fetch_at_start() {
    // The last run stopped with 1003 held. The agent is COMPLETE and unchanged: without the
    // held close nothing would be fetched; with it, one fetch decides.
    let uuid = agents(1)[0].uuid.to_string();
    let (api, fetches) = by_fetch(|_| {
        let mut all = ports_of(10);
        all.remove(3);
        all
    });
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        known_complete(1),
        stored_with(&uuid, ports_of(10), &[1003]),
        30,
    )
    .await;
    assert_eq!(names(&events), ["closed 1003 svc"]);
    assert_eq!(*fetches.lock().unwrap(), 1);
    assert!(after[&uuid].unconfirmed.is_empty());
    // Back in the listing after the restart: nothing reported, nothing held.
    let (api, fetches) = by_fetch(|_| ports_of(10));
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        known_complete(1),
        stored_with(&uuid, ports_of(10), &[1003]),
        30,
    )
    .await;
    assert_eq!(names(&events), Vec::<String>::new());
    assert_eq!(*fetches.lock().unwrap(), 1);
    assert!(after[&uuid].unconfirmed.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_confirming_fetch_waits_for_complete_and_the_next_listing_decides() {
    // 1003 goes missing at the fetch after the transition at 1 s; at 2 s (before the
    // confirming fetch) a new task runs: the confirming fetch is dropped; the listing after
    // the next COMPLETE (8 s) still lacks 1003 and closes it.
    let uuid = agents(1)[0].uuid.to_string();
    let (api, fetches) = by_fetch(|_| {
        let mut all = ports_of(10);
        all.remove(3);
        all
    });
    let api = Scripted {
        status: Arc::new(|at, _| match at.as_millis() {
            0..1000 => "COLLECTING",
            1000..1900 => "COMPLETE",
            1900..8000 => "COLLECTING",
            _ => "COMPLETE",
        }),
        ..api
    };
    let mut cfg_fast = options(Baseline::Ports);
    cfg_fast.action_rates = [20; 5];
    let sink = Arc::new(CollectingSink::default());
    let mut c = config();
    c.intervals.collecting = Duration::from_millis(200);
    c.intervals.settled = Duration::from_millis(200);
    let engine = Engine::new(api, sink.clone(), c, &agents(1), HashMap::new()).with_inventory(
        cfg_fast,
        stored_with(&uuid, ports_of(10), &[]),
        None,
    );
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(20)).await;
        s.cancel();
    });
    let _ = engine.run(stop).await;
    assert_eq!(
        names(&sink.events()),
        [
            "status COLLECTING",
            "status COMPLETE",
            "status COLLECTING",
            "status COMPLETE",
            "closed 1003 svc"
        ]
    );
    assert_eq!(
        *fetches.lock().unwrap(),
        2,
        "the confirming fetch was dropped"
    );
}

/// A close still held after a round of confirming fetches is not held for ever: a settled
/// interval later another round asks, and a port missing then too is reported closed, once.
#[tokio::test(start_paused = true)]
async fn a_close_held_after_a_flapping_round_is_decided_a_settled_interval_later() {
    let uuid = agents(1)[0].uuid.to_string();
    // Four listings flap (each misses another port), then port 3 stays gone.
    let (api, fetches) = by_fetch(|n| {
        let mut all = ports_of(10);
        all.remove(if n < 4 { n as usize } else { 3 });
        all
    });
    let api = Scripted {
        status: Arc::new(|at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        }),
        ..api
    };
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        stored_with(&uuid, ports_of(10), &[]),
        40,
    )
    .await;
    let closed = ports_of(10)[3].port;
    assert_eq!(
        names(&events),
        [
            "status COLLECTING".to_owned(),
            "status COMPLETE".to_owned(),
            format!("closed {closed} svc")
        ]
    );
    // The first round (1 + CONFIRMING_FETCHES) and one fetch of the next.
    assert_eq!(
        *fetches.lock().unwrap(),
        1 + confirm::CONFIRMING_FETCHES + 1
    );
    assert!(after[&uuid].unconfirmed.is_empty());
    assert_eq!(after[&uuid].snapshot.as_ref().unwrap().ports.len(), 9);
}

/// A confirming fetch that fails (`inventory_failed`) does not strand the close it was to
/// confirm: a settled interval later the agent is fetched again, and a port still missing is
/// reported closed.
#[tokio::test(start_paused = true)]
async fn a_failed_confirming_fetch_leaves_no_close_held_for_ever() {
    let uuid = agents(1)[0].uuid.to_string();
    // Page requests: the first misses port 1003; the next FETCH_TRIES fail; then it is still gone.
    let asked = Arc::new(Mutex::new(0u32));
    let seen = asked.clone();
    let api = Scripted::new(
        |at, _| {
            if at < Duration::from_secs(1) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        },
        move |_, _, offset| {
            let mut n = seen.lock().unwrap();
            *n += 1;
            if (2..2 + crate::inventory::FETCH_TRIES).contains(&*n) {
                return Err(ApiError::Api {
                    code: "InternalError".into(),
                    message: "try later".into(),
                    request_id: Some("rf".into()),
                });
            }
            let mut all = ports_of(10);
            all.remove(3);
            Ok(page(&all, offset, 9))
        },
    );
    let (events, after, _) = run(
        api,
        1,
        options(Baseline::Ports),
        HashMap::new(),
        stored_with(&uuid, ports_of(10), &[]),
        40,
    )
    .await;
    assert_eq!(
        names(&events),
        [
            "status COLLECTING",
            "status COMPLETE",
            "failed InternalError",
            "closed 1003 svc"
        ]
    );
    assert!(after[&uuid].unconfirmed.is_empty());
}

/// An agent that discovery drops (`Removed::Keep`) and brings back while its status poll is
/// still in flight takes its kept inventory back: no second baseline, and it is saved once
/// (watched), not twice (watched and held: a duplicate key in the file whose stale copy wins
/// at the next start). Found at the seam of discovery's keeping and the inventory.
#[tokio::test(start_paused = true)]
async fn an_agent_back_before_its_orphaned_answer_keeps_its_inventory() {
    let mut api = Scripted::new(
        |_, _| "COMPLETE",
        move |_, _, offset| {
            let p = vec![port(22, "sshd")];
            Ok(page(&p, offset, 1))
        },
    );
    api.latency = (Duration::from_secs(3), Duration::from_millis(50));
    let all = agents(1);
    let stored = stored_with(&all[0].uuid.to_string(), vec![port(22, "sshd")], &[]);
    let sink = Arc::new(CollectingSink::default());
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(api, sink.clone(), config(), &all, known_complete(1))
        .with_control(rx)
        .with_inventory(options(Baseline::Ports), stored, None);
    let stop = CancellationToken::new();
    let driver = {
        let (stop, all) = (stop.clone(), all.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for agents in [vec![], all.clone()] {
                let (reply, answer) = tokio::sync::oneshot::channel();
                control
                    .send(Control::Reload {
                        agents,
                        config: config(),
                        removed: crate::engine::Removed::Keep,
                        reply,
                    })
                    .unwrap();
                answer.await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(20)).await;
            stop.cancel();
        })
    };
    let (engine, _) = engine.run(stop).await;
    driver.await.unwrap();
    let inv = engine.inventory.as_ref().unwrap();
    assert!(inv.held.is_empty(), "still held: {:?}", inv.held.keys());
    assert!(inv.map.contains_key(&all[0].uuid.to_string()));
    let events = names(&sink.events());
    assert!(!events.iter().any(|e| e.contains("baseline")), "{events:?}");
}

/// Issue 21 item 6: `CreateOpenPortTask`'s own limiter. 100 agents without a task,
/// `create_missing`, creates at 5/s (status polls and listings at 20/s beside): every agent
/// gets its one task, never more than 5 creates in any 1-second window `[t, t + 1 s)`, and the
/// lane runs at its rate (5 in some window: a limiter at 4 or 1 would fail too).
#[tokio::test(start_paused = true)]
async fn create_missing_for_100_agents_keeps_the_create_lanes_own_rate() {
    let api = task_driven("NO_TASK");
    let log = api.log.clone();
    let mut o = options(Baseline::Summary);
    o.create_missing = true;
    o.action_rates = [20, 5, 20, 20, 20];
    let (events, _, _) = run(api, 100, o, HashMap::new(), InventoryMap::new(), 60).await;
    let log = log.lock().unwrap();
    let creates: Vec<Instant> = log
        .iter()
        .filter(|(_, a)| *a == "create")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(creates.len(), 100, "one task per agent");
    let scans = names(&events)
        .iter()
        .filter(|n| *n == "scan missing")
        .count();
    assert_eq!(scans, 100);
    assert_eq!(crate::pacing::max_in_any_window(&creates), 5);
    // The other lanes kept their own rate meanwhile: 20 status polls in some second.
    let polls: Vec<Instant> = log
        .iter()
        .filter(|(_, a)| *a == "status")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(crate::pacing::max_in_any_window(&polls), 20);
}
