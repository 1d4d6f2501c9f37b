//! The `cwp` backend against the real simulator over HTTP: the exact status and port events
//! of a scenario (a port moving from 127.0.0.1 to 0.0.0.0 is an open and, once confirmed, a
//! close, each with its protocol, bind address and user), each `cwp` action within 20
//! requests in any second (the simulator's own meter), a restart that repeats nothing,
//! hostile answers (`cwp_faults`) ending as `inventory_failed` and never as a port event, and
//! a mixed deployment: one yunjing and one cwp account in one daemon process.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cwp_portwatch::api::{ApiService, Client, ClientOptions};
use cwp_portwatch::engine::{Engine, EngineConfig, InventoryOptions, cwp_listings};
use cwp_portwatch::events::{CollectingSink, Event};
use cwp_portwatch::inventory::Baseline;
use cwp_portwatch::inventory::store::{InventoryFile, InventoryMap};
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::state::StateFile;
use cwp_portwatch::tracker::KnownMap;
use cwp_portwatch::watchlist::Agent;
use cwp_simulator::{DEFAULT_REGION, DEFAULT_SECRET_KEY, RunningSimulator};
use tokio_util::sync::CancellationToken;

use crate::support::accounts::{ALPHA_ID, ALPHA_KEY, watchlist};
use crate::support::app::{App, agents, daemon_config};
use crate::support::*;

/// A client signing for `cwp`, to the simulator.
fn cwp_client(sim: &RunningSimulator) -> Client {
    Client::for_api(
        ClientOptions {
            endpoint: sim.endpoint().parse().unwrap(),
            region: None,
            timeout: Duration::from_secs(5),
            max_idle_connections: 8,
        },
        creds(DEFAULT_SECRET_KEY),
        &cwp_portwatch::tls::TlsTrust::system(),
        ApiService::Cwp,
    )
    .expect("cwp client for the simulator")
}

fn fast() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 8,
        intervals: Intervals {
            settled: Duration::from_millis(300),
            collecting: Duration::from_millis(200),
            offline: Duration::from_millis(300),
        },
        once: false,
    }
}

fn options() -> InventoryOptions {
    InventoryOptions {
        enabled: true,
        // Far below what the config allows (1 min): the scenario changes within seconds.
        rescan_interval: Duration::from_millis(500),
        create_missing: false,
        baseline: Baseline::Summary,
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

/// Status and inventory events as short strings, with the agent's index.
fn short(events: &[Event]) -> Vec<String> {
    let index = |u: &str| (0..64).find(|i| uuid(*i) == u).unwrap_or(99);
    let facts = |c: &Option<Box<cwp_portwatch::inventory::PortFacts>>| match c.as_deref() {
        Some(c) => format!("{}:{}/{} {}", c.bind_ip, "", c.proto, c.user),
        None => "no facts".to_owned(),
    };
    events
        .iter()
        .filter_map(|e| match e {
            Event::StatusChanged {
                uuid,
                from_status,
                to_status,
                ..
            } => Some(format!("{} {from_status}->{to_status}", index(uuid))),
            Event::PortOpened {
                uuid,
                port,
                process_name,
                cwp,
                ..
            } => Some(format!(
                "{} opened {port} {process_name} {}",
                index(uuid),
                facts(cwp)
            )),
            Event::PortClosed {
                uuid,
                port,
                process_name,
                cwp,
                ..
            } => Some(format!(
                "{} closed {port} {process_name} {}",
                index(uuid),
                facts(cwp)
            )),
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

struct Run {
    events: Vec<Event>,
}

/// Runs a cwp engine on `agents` until `done(events)` (or 20 s), with its state and
/// inventory files in `dir`; then `linger` more, so what would come after is seen too.
async fn run(
    sim: &RunningSimulator,
    agents: &[Agent],
    dir: &Path,
    linger: Duration,
    done: impl Fn(&[Event]) -> bool + Send + 'static,
) -> Run {
    let sink = Arc::new(CollectingSink::default());
    let state = StateFile::in_dir(dir);
    let inventory = InventoryFile::in_dir(dir);
    let known: KnownMap = state.load().unwrap();
    let stored: InventoryMap = inventory.load().unwrap();
    let engine = Engine::new(cwp_client(sim), sink.clone(), fast(), agents, known)
        .with_state(state)
        .with_inventory(options(), stored, Some(inventory))
        .with_cwp_listings(cwp_listings(DEFAULT_REGION));
    let stop = CancellationToken::new();
    let watcher = {
        let (stop, sink) = (stop.clone(), sink.clone());
        tokio::spawn(async move {
            let limit = tokio::time::Instant::now() + Duration::from_secs(20);
            while tokio::time::Instant::now() < limit && !done(&sink.events()) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(linger).await;
            stop.cancel();
        })
    };
    let _ = engine.run(stop).await;
    watcher.await.unwrap();
    Run {
        events: sink.events(),
    }
}

fn scenario_text() -> String {
    format!(
        r#"[[agent]]
uuid = "{a0}"
timeline = []
agent_status = [{{ at = "0s", status = "ONLINE" }}, {{ at = "2s", status = "OFFLINE" }}]
ports = [
  {{ at = "0s", open = [
    {{ port = 22, process = "sshd", pid = 812 }},
    {{ port = 3306, process = "mysqld", pid = 1400, bind_ip = "127.0.0.1", user = "mysql" }},
  ] }},
  {{ at = "3s", open = [
    {{ port = 22, process = "sshd", pid = 900 }},
    {{ port = 3306, process = "mysqld", pid = 1400, bind_ip = "0.0.0.0", user = "mysql" }},
  ] }},
]
[[agent]]
uuid = "{a1}"
timeline = []
ports = [{{ at = "0s", open = [{{ port = 53, process = "named", pid = 600, proto = "udp", user = "named" }}] }}]
"#,
        a0 = uuid(0),
        a1 = uuid(1),
    )
}

fn settled(events: &[Event]) -> bool {
    short(events).iter().any(|e| e.starts_with("0 closed 3306"))
}

#[tokio::test]
async fn a_cwp_scenario_gives_exactly_its_events_within_the_rate_and_a_restart_repeats_none() {
    let sim = start_scenario(&scenario_text()).await;
    let dir = tempfile::tempdir().unwrap();
    let first = run(
        &sim,
        &watch(2),
        dir.path(),
        Duration::from_millis(800),
        settled,
    )
    .await;
    let mut got = short(&first.events);
    // The two baselines' order is their phases'; everything else is the timeline's.
    let baselines: Vec<String> = got
        .iter()
        .filter(|e| e.contains("baseline"))
        .cloned()
        .collect();
    got.retain(|e| !e.contains("baseline"));
    assert_eq!(baselines.len(), 2, "{:#?}", first.events);
    assert!(
        baselines.contains(&"0 baseline 2".to_owned()),
        "{baselines:?}"
    );
    assert!(
        baselines.contains(&"1 baseline 1".to_owned()),
        "{baselines:?}"
    );
    let statuses: Vec<&String> = got.iter().filter(|e| e.contains("->")).collect();
    assert_eq!(
        statuses,
        [
            "0 UNKNOWN->ONLINE",
            "1 UNKNOWN->ONLINE",
            "0 ONLINE->OFFLINE"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .iter()
        .collect::<Vec<_>>(),
        "{:#?}",
        first.events
    );
    let ports: Vec<&String> = got.iter().filter(|e| !e.contains("->")).collect();
    assert_eq!(
        ports,
        [
            "0 opened 3306 mysqld 0.0.0.0:/tcp mysql",
            "0 closed 3306 mysqld 127.0.0.1:/tcp mysql",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .iter()
        .collect::<Vec<_>>(),
        "{:#?}",
        first.events
    );
    // Each cwp action kept to 20 requests in any second, as the simulator measured them.
    let stats = sim.stats();
    for action in ["cwp:DescribeMachines", "cwp:DescribeAssetPortInfoList"] {
        let s = stats.per_action.get(action).cloned().unwrap_or_default();
        assert!(s.arrived > 0, "{action} was asked: {:#?}", stats.per_action);
        assert!(s.max_arrivals_in_window <= 20, "{action}: {s:?}");
        assert_eq!(s.throttled, 0, "{action}: {s:?}");
    }
    // No yunjing action was called by the cwp account.
    assert!(
        !stats.per_action.contains_key("DescribeOpenPortTaskStatus"),
        "{:#?}",
        stats.per_action
    );

    // A restart on the same files: the statuses and ports it knows are not reported again.
    let again = run(&sim, &watch(2), dir.path(), Duration::from_secs(2), |_| {
        true
    })
    .await;
    assert_eq!(
        short(&again.events),
        Vec::<String>::new(),
        "{:#?}",
        again.events
    );
}

#[tokio::test]
async fn hostile_cwp_answers_end_as_inventory_failed_never_as_port_events() {
    for fault in [
        r#"port = "ssh""#,
        r#"bind_ip = "localhost""#,
        r#"missing = "Quuid""#,
        "duplicate_rows = true",
        "total_offset = 5",
        "ignore_offset = true",
    ] {
        // Two pages' worth, so that a server ignoring `Offset` shows.
        let open: Vec<String> = (1..=150)
            .map(|p| format!("{{ port = {}, process = \"srv\", pid = {p} }}", 1000 + p))
            .collect();
        let sim = start_scenario(&format!(
            r#"[[agent]]
uuid = "{}"
timeline = []
ports = [{{ at = "0s", open = [{}] }}]
cwp_faults = {{ {fault} }}
"#,
            uuid(0),
            open.join(", ")
        ))
        .await;
        let dir = tempfile::tempdir().unwrap();
        let ran = run(&sim, &watch(1), dir.path(), Duration::ZERO, |events| {
            short(events).iter().any(|e| e.contains("failed"))
        })
        .await;
        let got = short(&ran.events);
        assert_eq!(
            got.first().map(String::as_str),
            Some("0 UNKNOWN->ONLINE"),
            "{fault}: {got:?}"
        );
        assert!(
            got[1..].iter().all(|e| e.starts_with("0 failed ")),
            "{fault}: {got:?}"
        );
        assert!(got.len() >= 2, "{fault}: {got:?}");
    }
}

#[tokio::test]
async fn one_daemon_runs_a_yunjing_and_a_cwp_account_side_by_side() {
    let credentials =
        format!("[[credential]]\nsecret_id = \"{ALPHA_ID}\"\nsecret_key = \"{ALPHA_KEY}\"\n");
    let sim = start_scenario(&format!("{credentials}{}", steady(4, "COMPLETE"))).await;
    let app = App::new();
    app.write_watchlist(&agents(0..2, "yunjing-agent"));
    app.write("cwp.toml", watchlist(&agents(2..4, "cwp-agent")));
    for (name, value) in [("alpha.id", ALPHA_ID), ("alpha.key", ALPHA_KEY)] {
        let path = app.write(name, value);
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let dir = app.path().display();
    let mut config = daemon_config(&sim.endpoint());
    config.push_str(&format!(
        "[[account]]\nname = \"live\"\nservice = \"cwp\"\nregion = \"{DEFAULT_REGION}\"\n\
         watchlist = \"cwp.toml\"\n[account.credentials]\nsource = \"file\"\n\
         secret_id_file = \"{dir}/alpha.id\"\nsecret_key_file = \"{dir}/alpha.key\"\n"
    ));
    app.write("config.toml", config);
    let mut daemon = app.daemon(&[
        ("TENCENTCLOUD_SECRET_ID", cwp_simulator::DEFAULT_SECRET_ID),
        ("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY),
    ]);
    daemon
        .wait_for(
            "both accounts' statuses",
            Duration::from_secs(30),
            |events| {
                events
                    .iter()
                    .filter(|e| e["event"] == "status_changed")
                    .count()
                    >= 4
            },
        )
        .await;
    // A little longer: a status reported twice would show now.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let finished = daemon.stop().await;
    let changes: Vec<(String, String, String)> = finished
        .named("status_changed")
        .iter()
        .map(|e| {
            (
                e["account"].as_str().unwrap_or("").to_owned(),
                e["uuid"].as_str().unwrap_or("").to_owned(),
                e["to_status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    for i in 0..2 {
        assert!(
            changes.contains(&("default".into(), uuid(i), "COMPLETE".into())),
            "{changes:?}"
        );
    }
    for i in 2..4 {
        assert!(
            changes.contains(&("live".into(), uuid(i), "ONLINE".into())),
            "{changes:?}"
        );
    }
    assert_eq!(changes.len(), 4, "each agent once: {changes:?}");
    // Each account called its own API's actions only.
    let stats = sim.stats();
    let default = &stats.per_account[cwp_simulator::DEFAULT_SECRET_ID];
    let live = &stats.per_account[ALPHA_ID];
    assert!(
        default.contains_key("DescribeOpenPortTaskStatus"),
        "{default:?}"
    );
    assert!(
        !default.keys().any(|a| a.starts_with("cwp:")),
        "{default:?}"
    );
    assert!(live.contains_key("cwp:DescribeMachines"), "{live:?}");
    assert!(!live.contains_key("DescribeOpenPortTaskStatus"), "{live:?}");
}

/// `[discovery]` on a `cwp` account: its machines become agents (one without an agent Uuid
/// skipped), each with its `AgentStatus` once; discovery and the status listings together
/// keep `cwp:DescribeMachines` within 20 requests in any second.
#[tokio::test]
async fn discovery_on_a_cwp_account_watches_its_machines() {
    let mut scenario = String::new();
    for i in 0..3 {
        scenario.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\nmachine_name = \"m-{i}\"\ntimeline = []\n\
             agent_status = [{{ at = \"0s\", status = \"{}\" }}]\n",
            uuid(i),
            if i == 2 { "OFFLINE" } else { "ONLINE" }
        ));
    }
    scenario.push_str("[[machine]]\nmachine_name = \"legacy\"\nmachine_ip = \"10.0.0.9\"\n");
    let sim = start_scenario(&scenario).await;
    let app = App::new();
    app.write(
        "config.toml",
        format!(
            "state_dir = \"state\"\n[api]\nservice = \"cwp\"\nregion = \"{DEFAULT_REGION}\"\n\
             endpoint = \"{}\"\ntimeout = \"2s\"\n[poll]\ninterval = \"300ms\"\n\
             [discovery]\nenabled = true\nregions = [\"{DEFAULT_REGION}\"]\nrefresh = \"1s\"\n\
             [log]\nformat = \"json\"\nlevel = \"info\"\n",
            sim.endpoint()
        ),
    );
    let mut daemon = app.daemon(&[
        ("TENCENTCLOUD_SECRET_ID", cwp_simulator::DEFAULT_SECRET_ID),
        ("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY),
    ]);
    daemon
        .wait_for(
            "the discovered agents' statuses",
            Duration::from_secs(30),
            |events| {
                events
                    .iter()
                    .filter(|e| e["event"] == "status_changed")
                    .count()
                    >= 3
            },
        )
        .await;
    // Two more discovery passes and many listings: nothing more may be reported.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let finished = daemon.stop().await;
    let loaded: Vec<&serde_json::Value> = finished
        .events
        .iter()
        .filter(|e| e["event"] == "watchlist_loaded" && e["source"] == "discovery")
        .collect();
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(loaded[0]["agents"], 3, "{loaded:?}");
    assert_eq!(loaded[0]["skipped"], 1, "{loaded:?}");
    let mut changes: Vec<(String, String)> = finished
        .named("status_changed")
        .iter()
        .map(|e| {
            (
                e["uuid"].as_str().unwrap_or("").to_owned(),
                e["to_status"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    changes.sort();
    let mut expected: Vec<(String, String)> = (0..3)
        .map(|i| {
            (
                uuid(i),
                if i == 2 { "OFFLINE" } else { "ONLINE" }.to_owned(),
            )
        })
        .collect();
    expected.sort();
    assert_eq!(changes, expected);
    let stats = sim.stats();
    let machines = &stats.per_action["cwp:DescribeMachines"];
    assert!(machines.max_arrivals_in_window <= 20, "{machines:?}");
    assert_eq!(machines.throttled, 0, "{machines:?}");
    assert!(
        !stats.per_action.contains_key("DescribeMachines"),
        "yunjing's was not asked: {:#?}",
        stats.per_action
    );
}
