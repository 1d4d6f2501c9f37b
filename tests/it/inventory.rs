//! The open-port inventory against the real simulator over HTTP: the exact port events of
//! scripted port timelines (a list that changes while paged included), hostile answers ending
//! as `inventory_failed` and never as a port event, restarts that repeat nothing, and a
//! removed agent's inventory forgotten. Each test waits for the events it expects (with a
//! generous limit), never for a fixed time. The real-clock rate test of the lanes is in
//! `tests/rate`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cwp_portwatch::api::Client;
use cwp_portwatch::engine::{Control, Engine, EngineConfig, InventoryOptions};
use cwp_portwatch::events::{CollectingSink, Event};
use cwp_portwatch::inventory::Baseline;
use cwp_portwatch::inventory::store::{InventoryFile, InventoryMap};
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::state::StateFile;
use cwp_portwatch::tracker::KnownMap;
use cwp_portwatch::watchlist::Agent;
use cwp_simulator::{OpenPortSpec, PortFaults, RunningSimulator};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Polls fast, so scripted changes a second apart are all seen.
fn fast() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 8,
        intervals: Intervals {
            settled: Duration::from_millis(250),
            collecting: Duration::from_millis(100),
            offline: Duration::from_millis(250),
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
        action_in_flight: [8; 5],
    }
}

fn watch(n: usize) -> Vec<Agent> {
    (0..n)
        .map(|i| Agent {
            uuid: uuid(i).parse().unwrap(),
            name: Some(format!("host-{i}")),
            facts: None,
        })
        .collect()
}

/// The inventory events, as short strings, with the agent's index.
fn port_events(events: &[Event]) -> Vec<String> {
    let index = |u: &str| (0..64).find(|i| uuid(*i) == u).unwrap_or(99);
    events
        .iter()
        .filter_map(|e| match e {
            Event::PortOpened {
                uuid,
                port,
                process_name,
                baseline,
                ..
            } => Some(format!(
                "{} opened {port} {process_name}{}",
                index(uuid),
                if *baseline { " baseline" } else { "" }
            )),
            Event::PortClosed {
                uuid,
                port,
                process_name,
                ..
            } => Some(format!("{} closed {port} {process_name}", index(uuid))),
            Event::InventoryBaseline { uuid, ports, .. } => {
                Some(format!("{} baseline {ports}", index(uuid)))
            }
            Event::InventoryFailed {
                uuid, error_code, ..
            } => Some(format!("{} failed {error_code}", index(uuid))),
            _ => None,
        })
        .collect()
}

/// What one run of the engine leaves behind.
struct Run {
    events: Vec<Event>,
    stored: InventoryMap,
}

/// Runs the engine on `agents` against `sim` until `done(events)` (or 20 s, then the test's
/// assertions say what is missing); `dir` holds the state and inventory files when given.
/// `during` may act on the running engine (its control channel) once `at(events)` holds.
async fn run(
    sim: &RunningSimulator,
    agents: &[Agent],
    options: InventoryOptions,
    dir: Option<&Path>,
    done: impl Fn(&[Event]) -> bool + Send + 'static,
) -> Run {
    run_with(sim, agents, options, dir, done, |_, _| None).await
}

async fn run_with(
    sim: &RunningSimulator,
    agents: &[Agent],
    options: InventoryOptions,
    dir: Option<&Path>,
    done: impl Fn(&[Event]) -> bool + Send + 'static,
    during: impl Fn(&[Event], &tokio::sync::mpsc::UnboundedSender<Control>) -> Option<()>
    + Send
    + 'static,
) -> Run {
    let client: Client = good_client(sim);
    let sink = Arc::new(CollectingSink::default());
    let (known, stored, files): (KnownMap, InventoryMap, _) = match dir {
        Some(dir) => {
            let state = StateFile::in_dir(dir);
            let inventory = InventoryFile::in_dir(dir);
            (
                state.load().unwrap(),
                inventory.load().unwrap(),
                Some((state, inventory)),
            )
        }
        None => (HashMap::new(), InventoryMap::new(), None),
    };
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut engine = Engine::new(client, sink.clone(), fast(), agents, known).with_control(rx);
    let file = files.as_ref().map(|(_, f)| f.clone());
    if let Some((state, _)) = files {
        engine = engine.with_state(state);
    }
    let engine = engine.with_inventory(options, stored, file);
    let stop = CancellationToken::new();
    let watcher = {
        let (stop, sink) = (stop.clone(), sink.clone());
        tokio::spawn(async move {
            let limit = tokio::time::Instant::now() + Duration::from_secs(20);
            let mut acted = false;
            while tokio::time::Instant::now() < limit {
                let events = sink.events();
                if !acted {
                    acted = during(&events, &control).is_some();
                }
                if done(&events) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            stop.cancel();
        })
    };
    let (engine, _) = engine.run(stop).await;
    watcher.await.unwrap();
    Run {
        events: sink.events(),
        stored: engine.stored_inventory().cloned().unwrap_or_default(),
    }
}

fn has(events: &[Event], wanted: &str) -> bool {
    port_events(events).iter().any(|e| e == wanted)
}

fn spec(port: u16, process: &str, pid: u32) -> OpenPortSpec {
    OpenPortSpec {
        port,
        process: process.into(),
        pid,
    }
}

#[tokio::test]
async fn a_port_timeline_gives_exactly_its_port_events() {
    // Ports: {22} → {22, 3306} → {3306}; completions at 0.5 s, 2.5 s and 4.5 s, each seeing
    // the set in force then; a new pid of sshd alone at 1 s is no event.
    let sim = start_scenario(&format!(
        r#"[[agent]]
uuid = "{}"
timeline = [
  {{ at = "0s", status = "COLLECTING" }}, {{ at = "500ms", status = "COMPLETE" }},
  {{ at = "2s", status = "COLLECTING" }}, {{ at = "2500ms", status = "COMPLETE" }},
  {{ at = "4s", status = "COLLECTING" }}, {{ at = "4500ms", status = "COMPLETE" }},
]
ports = [
  {{ at = "0s", open = [ {{ port = 22, process = "sshd", pid = 812 }} ] }},
  {{ at = "1s", open = [ {{ port = 22, process = "sshd", pid = 900 }} ] }},
  {{ at = "2s", open = [ {{ port = 22, process = "sshd", pid = 900 }}, {{ port = 3306, process = "mysqld", pid = 1400 }} ] }},
  {{ at = "4s", open = [ {{ port = 3306, process = "mysqld", pid = 1400 }} ] }},
]
"#,
        uuid(0)
    ))
    .await;
    let r = run(&sim, &watch(1), options(Baseline::Ports), None, |e| {
        has(e, "0 closed 22 sshd")
    })
    .await;
    assert_eq!(
        port_events(&r.events),
        [
            "0 opened 22 sshd baseline",
            "0 opened 3306 mysqld",
            "0 closed 22 sshd"
        ]
    );
    let Some(Event::PortOpened {
        pid,
        machine_ip,
        request_id,
        agent_name,
        ..
    }) = r
        .events
        .iter()
        .find(|e| matches!(e, Event::PortOpened { port: 3306, .. }))
    else {
        panic!("no port_opened 3306")
    };
    assert_eq!((*pid, agent_name.as_str()), (1400, "host-0"));
    assert!(!machine_ip.is_empty() && !request_id.is_empty());
    let stored = &r.stored[&uuid(0)];
    let ports: Vec<u16> = stored
        .snapshot
        .as_ref()
        .unwrap()
        .ports
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, [3306]);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_port_list_that_changes_while_paged_is_fetched_again_and_reported_once() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let many = |n: u16| (0..n).map(|i| spec(2000 + i, "svc", 7)).collect::<Vec<_>>();
    assert!(sim.set_ports(&uuid(0), many(250)));
    // The first page is answered from 250 ports, the next from 251.
    assert!(sim.set_ports_after_next_page(&uuid(0), many(251)));
    let r = run(&sim, &watch(1), options(Baseline::Summary), None, |e| {
        !port_events(e).is_empty()
    })
    .await;
    assert_eq!(port_events(&r.events), ["0 baseline 251"]);
    // Try 1: offsets 0 and 100 (TotalCount changed) → try 2: 0, 100, 200.
    let pages = &sim.stats().per_action["DescribeOpenPorts"];
    assert_eq!(pages.accepted, 5, "{pages:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn hostile_answers_end_as_inventory_failed_never_as_port_events() {
    let cases: Vec<(&str, PortFaults)> = vec![
        (
            "lying TotalCount",
            PortFaults {
                total_count_offset: 5,
                ..Default::default()
            },
        ),
        (
            "TotalCount short",
            PortFaults {
                total_count_offset: -1,
                ..Default::default()
            },
        ),
        (
            "negative Port",
            PortFaults {
                first_port: Some(-1),
                ..Default::default()
            },
        ),
        (
            "oversized Port",
            PortFaults {
                first_port: Some(70_000),
                ..Default::default()
            },
        ),
        (
            "no ProcessName",
            PortFaults {
                missing_field: Some("ProcessName".into()),
                ..Default::default()
            },
        ),
        (
            "no Port",
            PortFaults {
                missing_field: Some("Port".into()),
                ..Default::default()
            },
        ),
        (
            "no Pid",
            PortFaults {
                missing_field: Some("Pid".into()),
                ..Default::default()
            },
        ),
    ];
    let runs = cases.into_iter().map(|(what, faults)| {
        tokio::spawn(async move {
            let sim = start_scenario(&steady(1, "COMPLETE")).await;
            sim.set_ports(&uuid(0), vec![spec(22, "sshd", 1), spec(443, "nginx", 2)]);
            sim.set_port_faults(faults);
            // The engine keeps running after the failure until it has polled the agent's
            // status 12 more times (3 s at 250 ms): nothing more may come of the listing
            // while it runs (no second fetch, no port event).
            let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let seen = done.clone();
            let one = watch(1);
            let (r, ()) = tokio::join!(
                run(&sim, &one, options(Baseline::Ports), None, move |_| {
                    seen.load(std::sync::atomic::Ordering::SeqCst)
                }),
                async {
                    pages_answered(&sim, 1).await;
                    let polls = status_polls(&sim);
                    // The listing's pages (a lying TotalCount asks for more) are done by
                    // then; none may follow.
                    polled_after(&sim, polls + 4).await;
                    let listed = pages(&sim);
                    polled_after(&sim, polls + 12).await;
                    assert_eq!(pages(&sim), listed, "{what}: the listing was fetched again");
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            );
            sim.shutdown().await;
            (what, port_events(&r.events), r.stored)
        })
    });
    // Spawned all at once: they run side by side.
    let runs: Vec<_> = runs.collect();
    for run in runs {
        let (what, events, stored) = run.await.unwrap();
        assert_eq!(events.len(), 1, "{what}: {events:?}");
        assert!(events[0].starts_with("0 failed "), "{what}: {events:?}");
        let code = if what.contains("TotalCount") {
            "InventoryError.Incomplete"
        } else {
            "ClientError.Decode"
        };
        assert_eq!(events[0], format!("0 failed {code}"), "{what}");
        assert!(stored.values().all(|a| a.snapshot.is_none()), "{what}");
    }
}

#[tokio::test]
async fn a_restart_repeats_no_port_event_and_fetches_nothing_it_has() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_scenario(&steady(3, "COMPLETE")).await;
    for i in 0..3 {
        sim.set_ports(
            &uuid(i),
            vec![spec(22, "sshd", 1), spec(80 + i as u16, "web", 2)],
        );
    }
    let first = run(
        &sim,
        &watch(3),
        options(Baseline::Ports),
        Some(dir.path()),
        |e| port_events(e).len() == 6,
    )
    .await;
    assert_eq!(
        port_events(&first.events).len(),
        6,
        "{:?}",
        port_events(&first.events)
    );
    let file = InventoryFile::in_dir(dir.path());
    assert_eq!(file.load().unwrap().len(), 3, "saved at the stop");
    let pages_before = sim.stats().per_action["DescribeOpenPorts"].accepted;
    // Again, with what was saved: statuses and inventories unchanged → nothing. Run until
    // every agent was polled twice.
    let polls = sim.stats().per_action["DescribeOpenPortTaskStatus"].accepted;
    let second = run(
        &sim,
        &watch(3),
        options(Baseline::Ports),
        Some(dir.path()),
        {
            let start = std::time::Instant::now();
            move |_| start.elapsed() > Duration::from_millis(1500)
        },
    )
    .await;
    assert!(
        sim.stats().per_action["DescribeOpenPortTaskStatus"].accepted >= polls + 6,
        "the second run polled"
    );
    assert_eq!(port_events(&second.events), Vec::<String>::new());
    assert!(
        !second
            .events
            .iter()
            .any(|e| matches!(e, Event::StatusChanged { .. }))
    );
    assert_eq!(
        sim.stats().per_action["DescribeOpenPorts"].accepted,
        pages_before,
        "nothing fetched again"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_removed_agent_forgets_its_inventory() {
    let dir = tempfile::tempdir().unwrap();
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    for i in 0..2 {
        sim.set_ports(&uuid(i), vec![spec(22, "sshd", 1)]);
    }
    // Both baselines in: agent 1 is dropped by a reload; the run ends half a second later.
    let reloaded: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let sent = reloaded.clone();
    let r = run_with(
        &sim,
        &watch(2),
        options(Baseline::Summary),
        Some(dir.path()),
        move |_| {
            reloaded
                .lock()
                .unwrap()
                .is_some_and(|t| t.elapsed() > Duration::from_millis(500))
        },
        move |events, control| {
            if port_events(events).len() < 2 {
                return None;
            }
            // The engine's answer (agents, added, removed) is not needed here.
            let (reply, _answer) = tokio::sync::oneshot::channel();
            control
                .send(Control::Reload {
                    agents: watch(1),
                    config: fast(),
                    removed: cwp_portwatch::engine::Removed::Forget,
                    reply,
                })
                .ok()?;
            *sent.lock().unwrap() = Some(std::time::Instant::now());
            Some(())
        },
    )
    .await;
    let mut baselines = port_events(&r.events);
    baselines.sort();
    assert_eq!(baselines, ["0 baseline 1", "1 baseline 1"]);
    assert_eq!(r.stored.len(), 1);
    assert!(r.stored.contains_key(&uuid(0)));
    let on_disk = InventoryFile::in_dir(dir.path()).load().unwrap();
    assert_eq!(on_disk.keys().collect::<Vec<_>>(), [&uuid(0)]);
    sim.shutdown().await;
}

#[tokio::test]
async fn the_daemon_reports_ports_and_the_ports_command_prints_what_it_stored() {
    use crate::support::app::{App, agents, daemon_config, run_within};
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    sim.set_ports(
        &uuid(0),
        vec![spec(22, "sshd", 812), spec(3306, "mysqld", 1400)],
    );
    sim.set_ports(&uuid(1), vec![spec(22, "sshd\u{1b}[31m", 9)]);
    let app = App::for_simulator(&sim.endpoint(), &agents(0..2, "db"));
    app.write(
        "config.toml",
        format!(
            "{}[inventory]\nenabled = true\nbaseline = \"ports\"\n",
            daemon_config(&sim.endpoint())
        ),
    );
    let mut daemon = app.daemon(&[]);
    daemon
        .wait_for("three port_opened", Duration::from_secs(20), |events| {
            events
                .iter()
                .filter(|e| e["event"] == "port_opened")
                .count()
                == 3
        })
        .await;
    let finished = daemon.stop().await;
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    let opened = finished.named("port_opened");
    let mysql = opened.iter().find(|e| e["port"] == 3306).expect("3306");
    assert_eq!(mysql["process_name"], "mysqld");
    assert_eq!(mysql["pid"], 1400);
    assert_eq!(mysql["baseline"], true);
    assert_eq!(mysql["uuid"], uuid(0));
    sim.shutdown().await;

    // `ports` reads the file the daemon left, with no API (the simulator is gone).
    let out = run_within(
        app.with_config(&["ports", "--format", "json", "--port", "22"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines.iter().all(|l| l["port"] == 22));
    let text = run_within(
        app.with_config(&["ports", "--agent", &uuid(1)]),
        Duration::from_secs(20),
    );
    assert_eq!(text.code(), Some(0), "{}", text.stderr);
    assert_eq!(text.stdout.lines().count(), 1, "{}", text.stdout);
    assert!(text.stdout.contains("sshd\\u{1b}[31m"), "{}", text.stdout);
    assert!(!text.stdout.contains('\u{1b}'));
    let none = run_within(
        app.with_config(&["ports", "--agent", "no-such-host"]),
        Duration::from_secs(20),
    );
    assert_eq!(none.code(), Some(1));
    assert!(none.stderr.contains("no watched agent"), "{}", none.stderr);
}

#[tokio::test]
async fn a_damaged_inventory_file_is_kept_reported_and_the_daemon_starts_with_baselines() {
    use crate::support::app::{App, agents, daemon_config};
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    sim.set_ports(&uuid(0), vec![spec(22, "sshd", 1)]);
    let app = App::for_simulator(&sim.endpoint(), &agents(0..1, "db"));
    app.write(
        "config.toml",
        format!(
            "{}[inventory]\nenabled = true\n",
            daemon_config(&sim.endpoint())
        ),
    );
    std::fs::create_dir_all(app.path().join("state")).unwrap();
    std::fs::set_permissions(
        app.path().join("state"),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let garbage = "{\"version\":1,\"agents\":{\"x\":";
    app.write("state/inventory.json", garbage);
    let mut daemon = app.daemon(&[]);
    daemon
        .wait_for("inventory_baseline", Duration::from_secs(20), |events| {
            events.iter().any(|e| e["event"] == "inventory_baseline")
        })
        .await;
    let finished = daemon.stop().await;
    let damaged = finished.named("state_damaged");
    assert_eq!(damaged.len(), 1, "{}", finished.stderr);
    let moved = damaged[0]["moved_to"].as_str().unwrap();
    assert!(
        damaged[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("inventory.json")
    );
    assert_eq!(
        std::fs::read_to_string(moved).unwrap(),
        garbage,
        "kept as it was"
    );
    assert!(finished.named("port_opened").is_empty());
    // The new file holds the fresh snapshot.
    let stored = InventoryFile::in_dir(&app.path().join("state"))
        .load()
        .unwrap();
    assert_eq!(stored.len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn create_missing_asks_the_simulator_for_a_task_and_the_inventory_follows() {
    let sim = start_scenario(&format!(
        r#"[[agent]]
uuid = "{}"
collect_time = "500ms"
timeline = [ {{ at = "0s", error = "FailedOperation.OpenPortTaskNotFound" }} ]
ports = [ {{ at = "0s", open = [ {{ port = 8080, process = "python3", pid = 4242 }} ] }} ]
"#,
        uuid(0)
    ))
    .await;
    let mut o = options(Baseline::Summary);
    o.create_missing = true;
    let r = run(&sim, &watch(1), o, None, |e| !port_events(e).is_empty()).await;
    let seen: Vec<String> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::StatusChanged { to_status, .. } => Some(format!("status {to_status}")),
            Event::ScanRequested { reason, .. } => Some(format!("scan {reason}")),
            Event::InventoryBaseline { ports, .. } => Some(format!("baseline {ports}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        seen,
        [
            "status NO_TASK",
            "scan missing",
            "status COLLECTING",
            "status COMPLETE",
            "baseline 1"
        ]
    );
    assert_eq!(sim.stats().per_action["CreateOpenPortTask"].accepted, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_sighup_applies_create_missing_to_the_running_daemon() {
    use crate::support::app::{App, agents, daemon_config};
    let sim = start_scenario(&format!(
        r#"[[agent]]
uuid = "{}"
collect_time = "500ms"
timeline = [ {{ at = "0s", error = "FailedOperation.OpenPortTaskNotFound" }} ]
ports = [ {{ at = "0s", open = [ {{ port = 8080, process = "python3", pid = 4242 }} ] }} ]
"#,
        uuid(0)
    ))
    .await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..1, "web"));
    let config = |extra: &str| {
        format!(
            "{}[inventory]\nenabled = true\n{extra}",
            daemon_config(&sim.endpoint())
        )
    };
    app.write("config.toml", config(""));
    let mut daemon = app.daemon(&[]);
    daemon
        .wait_for("NO_TASK", Duration::from_secs(20), |events| {
            events.iter().any(|e| e["to_status"] == "NO_TASK")
        })
        .await;
    assert!(daemon.named("scan_requested").is_empty());
    app.write("config.toml", config("create_missing = true\n"));
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for(
            "a baseline after the task",
            Duration::from_secs(20),
            |events| events.iter().any(|e| e["event"] == "inventory_baseline"),
        )
        .await;
    let finished = daemon.stop().await;
    let scans = finished.named("scan_requested");
    assert_eq!(scans.len(), 1, "{}", finished.stderr);
    assert_eq!(scans[0]["reason"], "missing");
    assert!(
        !finished.stderr.contains("inventory.enabled"),
        "nothing deferred: {}",
        finished.stderr
    );
    sim.shutdown().await;
}

/// One agent whose task completes twice: at 500 ms (the baseline) and at 3.5 s (the listing
/// a test spoils meanwhile).
fn completes_twice() -> String {
    format!(
        r#"[[agent]]
uuid = "{}"
timeline = [
  {{ at = "0s", status = "COLLECTING" }}, {{ at = "500ms", status = "COMPLETE" }},
  {{ at = "3s", status = "COLLECTING" }}, {{ at = "3500ms", status = "COMPLETE" }},
]
"#,
        uuid(0)
    )
}

/// `DescribeOpenPorts` pages answered so far.
fn pages(sim: &RunningSimulator) -> u64 {
    sim.stats()
        .per_action
        .get("DescribeOpenPorts")
        .map_or(0, |m| m.accepted)
}

/// `DescribeOpenPortTaskStatus` answers so far.
fn status_polls(sim: &RunningSimulator) -> u64 {
    sim.stats()
        .per_action
        .get("DescribeOpenPortTaskStatus")
        .map_or(0, |m| m.accepted)
}

/// Waits until `n` status polls were answered.
async fn polled_after(sim: &RunningSimulator, n: u64) {
    while status_polls(sim) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (up to 20 s) until `pages` pages were answered.
async fn pages_answered(sim: &RunningSimulator, n: u64) {
    let limit = std::time::Instant::now() + Duration::from_secs(20);
    while pages(sim) < n && std::time::Instant::now() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn closes(events: &[Event]) -> Vec<String> {
    port_events(events)
        .into_iter()
        .filter(|e| e.contains(" closed "))
        .collect()
}

#[tokio::test]
async fn a_server_that_ignores_offset_gives_inventory_failed_and_no_phantom_close() {
    // 200 ports, baseline honest (2 pages); then the server ignores Offset: TotalCount 200,
    // the same 100 rows twice. Before: accepted as complete, 100 phantom closes.
    let sim = start_scenario(&completes_twice()).await;
    let all: Vec<OpenPortSpec> = (0..200).map(|i| spec(2000 + i, "svc", 7)).collect();
    assert!(sim.set_ports(&uuid(0), all));
    let one = watch(1);
    let (r, ()) = tokio::join!(
        run(&sim, &one, options(Baseline::Summary), None, |e| {
            port_events(e).iter().any(|e| e.contains("failed"))
        }),
        async {
            pages_answered(&sim, 2).await;
            sim.set_port_faults(PortFaults {
                ignore_offset: true,
                ..Default::default()
            });
        }
    );
    assert_eq!(
        port_events(&r.events),
        ["0 baseline 200", "0 failed InventoryError.Incomplete"]
    );
    let stored = r.stored[&uuid(0)].snapshot.as_ref().unwrap();
    assert_eq!(stored.ports.len(), 200, "the baseline stays whole");
    // Three tries, each caught at its second page.
    assert_eq!(pages(&sim), 2 + 3 * 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_list_shifting_while_paged_closes_no_open_port_and_a_real_close_follows_confirmation() {
    // 150 ports (2000..2150). After the baseline, 2010 closes and 5000 opens, and the change
    // lands between the two pages of the next listing: page 1 from before, page 2 from
    // after. That listing skips 2100 (open in both) with nothing repeated and the count
    // right. Before: `port_closed` 2100, a phantom. Now: 5000 opened at once, 2010 closed
    // after confirmation, 2100 never.
    let sim = start_scenario(&completes_twice()).await;
    let before: Vec<OpenPortSpec> = (0..150).map(|i| spec(2000 + i, "svc", 7)).collect();
    let mut after = before.clone();
    after.remove(10);
    after.push(spec(5000, "new", 8));
    assert!(sim.set_ports(&uuid(0), before));
    let one = watch(1);
    let (r, ()) = tokio::join!(
        run(&sim, &one, options(Baseline::Summary), None, |e| {
            !closes(e).is_empty()
        }),
        async {
            pages_answered(&sim, 2).await;
            assert!(sim.set_ports_after_next_page(&uuid(0), after));
        }
    );
    assert_eq!(
        port_events(&r.events),
        ["0 baseline 150", "0 opened 5000 new", "0 closed 2010 svc"]
    );
    // The baseline, the shifted listing, the confirming one (2100 back, 2010 missing for the
    // first time), and the one that confirmed 2010: 2 pages each.
    assert_eq!(pages(&sim), 8);
    let stored = r.stored[&uuid(0)].snapshot.as_ref().unwrap();
    assert_eq!(stored.ports.len(), 150);
    assert!(stored.ports.iter().any(|p| p.port == 2100));
    assert!(r.stored[&uuid(0)].unconfirmed.is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn a_transient_empty_answer_closes_nothing() {
    // 30 ports; the listing after the second completion answers TotalCount 0 once. Before:
    // 30 phantom closes. Now: held, and the confirming listing has them all.
    let sim = start_scenario(&completes_twice()).await;
    let all: Vec<OpenPortSpec> = (0..30).map(|i| spec(3000 + i, "svc", 7)).collect();
    assert!(sim.set_ports(&uuid(0), all));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = done.clone();
    let one = watch(1);
    let (r, ()) = tokio::join!(
        run(&sim, &one, options(Baseline::Ports), None, move |_| {
            seen.load(std::sync::atomic::Ordering::SeqCst)
        }),
        async {
            pages_answered(&sim, 1).await;
            sim.set_port_faults(PortFaults {
                empty_answers: 1,
                ..Default::default()
            });
            // The empty listing, then its confirmation.
            pages_answered(&sim, 3).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    );
    assert_eq!(pages(&sim), 3);
    let events = port_events(&r.events);
    assert_eq!(events.len(), 30, "the baseline only: {events:?}");
    assert!(events.iter().all(|e| e.ends_with("baseline")), "{events:?}");
    assert_eq!(
        r.stored[&uuid(0)].snapshot.as_ref().unwrap().ports.len(),
        30
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_close_awaiting_confirmation_at_a_stop_is_confirmed_after_the_restart() {
    // The run stops while a close is held (its confirming fetch not sent yet): the file keeps
    // it, and the restart fetches at start and reports it once: neither lost nor a phantom.
    let dir = tempfile::tempdir().unwrap();
    let sim = start_scenario(&completes_twice()).await;
    let all: Vec<OpenPortSpec> = (0..3).map(|i| spec(4000 + i, "svc", 7)).collect();
    assert!(sim.set_ports(&uuid(0), all.clone()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let one = watch(1);
    let (first, ()) = tokio::join!(
        run(
            &sim,
            &one,
            options(Baseline::Summary),
            Some(dir.path()),
            move |_| stopped.load(std::sync::atomic::Ordering::SeqCst),
        ),
        async {
            pages_answered(&sim, 1).await;
            assert!(sim.set_ports(&uuid(0), all[..2].to_vec()));
            // The second listing misses 4002: stop before its confirmation (2 s later).
            pages_answered(&sim, 2).await;
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    );
    assert_eq!(port_events(&first.events), ["0 baseline 3"]);
    assert_eq!(pages(&sim), 2, "stopped before the confirming fetch");
    let on_disk = InventoryFile::in_dir(dir.path()).load().unwrap();
    let held = &on_disk[&uuid(0)];
    assert_eq!(held.snapshot.as_ref().unwrap().ports.len(), 3, "still open");
    assert_eq!(
        held.unconfirmed.iter().map(|k| k.port).collect::<Vec<_>>(),
        [4002]
    );
    // The restart: the agent is COMPLETE and unchanged, yet its held close is fetched for.
    let second = run(
        &sim,
        &watch(1),
        options(Baseline::Summary),
        Some(dir.path()),
        |e| !closes(e).is_empty(),
    )
    .await;
    assert_eq!(port_events(&second.events), ["0 closed 4002 svc"]);
    assert_eq!(pages(&sim), 3);
    let on_disk = InventoryFile::in_dir(dir.path()).load().unwrap();
    assert!(on_disk[&uuid(0)].unconfirmed.is_empty());
    assert_eq!(on_disk[&uuid(0)].snapshot.as_ref().unwrap().ports.len(), 2);
    sim.shutdown().await;
}
