//! `[discovery]` against the real simulator's `DescribeMachines`, through the binary: agents
//! found are polled and agents gone stop, each change reported once as `watchlist_loaded`
//! with `source = "discovery"`; machines without a Uuid are skipped and counted; a failing
//! `DescribeMachines` keeps the last list; a listed name wins; `check` places bad keys.

use std::time::Duration;

use cwp_portwatch::simulator::{
    CREATE_TASK_ACTION, DEFAULT_SECRET_KEY, DESCRIBE_ACTION, DESCRIBE_MACHINES_ACTION,
    RunningSimulator,
};
use serde_json::Value;

use crate::support::app::{self, App, daemon_config, run_within};
use crate::support::{client_for, start_scenario, uuid};

const WAIT: Duration = Duration::from_secs(20);

/// Agents 0..4: CVM machines in ap-guangzhou named `m-i`; agent 4 a BM machine and agent 5
/// in ap-beijing (neither asked for); two machines whose agents have no Uuid any more.
fn scenario() -> String {
    let mut s = String::new();
    for i in 0..6 {
        let placement = match i {
            4 => "machine_type = \"BM\"\n",
            5 => "region = \"ap-beijing\"\n",
            _ => "",
        };
        s.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\nmachine_name = \"m-{i}\"\n{placement}\
             timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n",
            uuid(i)
        ));
    }
    for i in 0..2 {
        s.push_str(&format!(
            "[[machine]]\nmachine_name = \"legacy-{i}\"\nmachine_ip = \"10.0.0.{i}\"\n"
        ));
    }
    s
}

/// The simulator's config for a daemon with discovery on (refresh every second) and a
/// watchlist listing agent 0 as `listed-0`.
fn app_for(sim: &RunningSimulator) -> App {
    let app = App::for_simulator(&sim.endpoint(), &[(uuid(0), "listed-0".to_owned())]);
    app.write(
        "config.toml",
        format!(
            "{}[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\nrefresh = \"1s\"\n",
            daemon_config(&sim.endpoint())
        ),
    );
    app
}

fn discovery_loads(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|v| v["event"] == "watchlist_loaded" && v["source"] == "discovery")
        .cloned()
        .collect()
}

/// Status polls the simulator received for agent `i`.
fn polls_of(sim: &RunningSimulator, i: usize) -> usize {
    let uuid = uuid(i);
    sim.stats()
        .log
        .iter()
        .filter(|r| r.action == DESCRIBE_ACTION && r.uuid.as_deref() == Some(uuid.as_str()))
        .count()
}

fn machine_requests(sim: &RunningSimulator) -> u64 {
    sim.stats()
        .per_action
        .get(DESCRIBE_MACHINES_ACTION)
        .map_or(0, |a| a.arrived)
}

/// Waits until `passes` more `DescribeMachines` requests reached the simulator.
async fn wait_for_passes(sim: &RunningSimulator, passes: u64) {
    let from = machine_requests(sim);
    let deadline = std::time::Instant::now() + WAIT;
    while machine_requests(sim) < from + passes {
        assert!(std::time::Instant::now() < deadline, "no discovery passes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_adds_and_removes_agents_exactly_once() {
    let sim = start_scenario(&scenario()).await;
    let app = app_for(&sim);
    let mut d = app.daemon(&[]);
    d.wait_for("the first discovery", WAIT, |e| {
        !discovery_loads(e).is_empty()
    })
    .await;
    let first = d.named("watchlist_loaded");
    // At start the file (agent 0), then discovery: agents 1..4 added, 0 kept, the two
    // machines without a Uuid skipped and counted, BM and ap-beijing not asked for.
    assert_eq!(first[0]["source"], "watchlist", "{first:?}");
    assert_eq!(first[0]["agents"], 1);
    let loaded = discovery_loads(&d.named("watchlist_loaded"));
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    assert_eq!(
        (
            &loaded[0]["agents"],
            &loaded[0]["added"],
            &loaded[0]["removed"]
        ),
        (&Value::from(4), &Value::from(3), &Value::from(0))
    );
    assert_eq!(loaded[0]["skipped"], 2);
    d.wait_for("discovered agents polled", WAIT, |e| {
        (1..4).all(|i| {
            e.iter()
                .any(|v| v["event"] == "status_changed" && v["uuid"] == uuid(i).as_str())
        })
    })
    .await;

    // Names as applied by discovery show in the next events: a task started through the
    // API turns agents 0 (listed) and 2 (discovered) COLLECTING.
    let client = client_for(&sim, DEFAULT_SECRET_KEY, Duration::from_secs(5));
    for i in [0, 2] {
        client
            .call(CREATE_TASK_ACTION, &serde_json::json!({ "Uuid": uuid(i) }))
            .await
            .unwrap();
    }
    d.wait_for("COLLECTING after the tasks", WAIT, |e| {
        [0, 2].iter().all(|&i| {
            e.iter().any(|v| {
                v["event"] == "status_changed"
                    && v["uuid"] == uuid(i).as_str()
                    && v["to_status"] == "COLLECTING"
            })
        })
    })
    .await;
    let collecting: Vec<Value> = d
        .named("status_changed")
        .into_iter()
        .filter(|v| v["to_status"] == "COLLECTING")
        .collect();
    for v in &collecting {
        let want = if v["uuid"] == uuid(0).as_str() {
            "listed-0"
        } else {
            "m-2"
        };
        assert_eq!(v["agent_name"], want, "a listed name wins: {v}");
    }

    // Agent 1's machine goes; agent 0's too, but it is listed, so it stays.
    sim.machine_hooks().hide(&uuid(1));
    sim.machine_hooks().hide(&uuid(0));
    d.wait_for("agent 1 removed", WAIT, |e| discovery_loads(e).len() == 2)
        .await;
    let removed = discovery_loads(&d.named("watchlist_loaded"))[1].clone();
    assert_eq!(
        (&removed["agents"], &removed["added"], &removed["removed"]),
        (&Value::from(3), &Value::from(0), &Value::from(1)),
        "{removed}"
    );
    // It comes back.
    sim.machine_hooks().show(&uuid(1));
    d.wait_for("agent 1 back", WAIT, |e| discovery_loads(e).len() == 3)
        .await;
    let back = discovery_loads(&d.named("watchlist_loaded"))[2].clone();
    assert_eq!(
        (&back["agents"], &back["added"], &back["removed"]),
        (&Value::from(4), &Value::from(1), &Value::from(0)),
        "{back}"
    );
    // Unchanged passes report nothing: still three after several more.
    wait_for_passes(&sim, 3).await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(discovery_loads(&out.events).len(), 3);
    // The listed name in every event of agent 0, before discovery and after.
    for v in out.events.iter().filter(|v| v["event"] == "status_changed") {
        if v["uuid"] == uuid(0).as_str() {
            assert_eq!(v["agent_name"], "listed-0", "{v}");
        }
    }
    assert_eq!(polls_of(&sim, 4), 0, "a BM machine was not asked for");
    assert_eq!(polls_of(&sim, 5), 0, "ap-beijing was not asked for");
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_describe_machines_keeps_the_last_list() {
    let sim = start_scenario(&scenario()).await;
    let app = app_for(&sim);
    let mut d = app.daemon(&[]);
    d.wait_for("the first discovery", WAIT, |e| {
        !discovery_loads(e).is_empty()
    })
    .await;
    sim.machine_hooks().set_failing(true);
    // A machine goes while discovery fails: nothing may change.
    sim.machine_hooks().hide(&uuid(2));
    d.wait_for("discovery_failed", WAIT, |e| {
        e.iter().any(|v| v["event"] == "discovery_failed")
    })
    .await;
    let failed = d.named("discovery_failed");
    assert_eq!(failed[0]["error_code"], "InternalError", "{failed:?}");
    assert_eq!(failed[0]["level"], "warn");
    // Agent 2 is still polled after the failure.
    let polls = polls_of(&sim, 2);
    let deadline = std::time::Instant::now() + WAIT;
    while polls_of(&sim, 2) <= polls + 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "agent 2 no longer polled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(discovery_loads(&d.named("watchlist_loaded")).len(), 1);
    // Discovery works again: the change is applied, once.
    sim.machine_hooks().set_failing(false);
    d.wait_for("agent 2 removed", WAIT, |e| discovery_loads(e).len() == 2)
        .await;
    let out = d.stop().await;
    let loads = discovery_loads(&out.events);
    assert_eq!(loads.len(), 2);
    assert_eq!(loads[1]["removed"], 1, "{:?}", loads[1]);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_alone_needs_no_watchlist() {
    let sim = start_scenario(&scenario()).await;
    let app = App::new();
    let config = daemon_config(&sim.endpoint()).replace("watchlist = \"watchlist.toml\"\n", "")
        + "[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\nmachine_types = [\"BM\"]\n";
    app.write("config.toml", config);
    let check = run_within(app.with_config(&["check"]), app::STOP_LIMIT);
    assert_eq!(check.code(), Some(0), "{}{}", check.stdout, check.stderr);
    assert!(
        check.stdout.contains("none (discovery only)"),
        "{}",
        check.stdout
    );
    // `once` discovers first, then polls what it found.
    let once = run_within(app.with_config(&["once", "--format", "json"]), WAIT);
    assert_eq!(once.code(), Some(0), "{}{}", once.stdout, once.stderr);
    let lines: Vec<Value> = once
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", once.stdout);
    assert_eq!(lines[0]["uuid"], uuid(4).as_str());
    assert_eq!(lines[0]["agent_name"], "m-4");
    sim.machine_hooks().set_failing(true);
    let once = run_within(app.with_config(&["once"]), WAIT);
    assert_eq!(once.code(), Some(1), "{}{}", once.stdout, once.stderr);
    assert!(once.stderr.contains("InternalError"), "{}", once.stderr);
    sim.machine_hooks().set_failing(false);

    let mut d = app.daemon(&[]);
    d.wait_for("the BM agent polled", WAIT, |e| {
        e.iter()
            .any(|v| v["event"] == "status_changed" && v["uuid"] == uuid(4).as_str())
    })
    .await;
    let out = d.stop().await;
    let loads = discovery_loads(&out.events);
    assert_eq!(loads[0]["agents"], 1, "{loads:?}");
    assert_eq!(loads[0]["skipped"], 0, "the Uuid-less machines are CVM");
    sim.shutdown().await;
}

#[test]
fn check_names_bad_discovery_keys_at_line_and_column() {
    let app = App::new();
    app.write("watchlist.toml", "");
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[discovery]\nenabled = true\n\
         machine_types = [\"CVM\", \"VM\"]\nregions = [\"ap-guangzhou\"]\n\
         agent_status = \"SLEEPING\"\nrefresh = \"90d\"\n",
    );
    let out = run_within(app.with_config(&["check"]), app::STOP_LIMIT);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    for place in ["config.toml:4:25", "config.toml:6:16", "config.toml:7:11"] {
        assert!(out.stderr.contains(place), "{place}: {}", out.stderr);
    }
    // An unknown key is placed too, and the allowed keys are named.
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[discovery]\nregion = \"ap-guangzhou\"\n",
    );
    let out = run_within(app.with_config(&["check"]), app::STOP_LIMIT);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("config.toml:3:1"), "{}", out.stderr);
    assert!(out.stderr.contains("regions"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_agents_keep_their_persisted_status_across_a_restart() {
    let sim = start_scenario(&scenario()).await;
    let app = app_for(&sim);
    let mut d = app.daemon(&[]);
    d.wait_for("discovered agents polled", WAIT, |e| {
        (1..4).all(|i| {
            e.iter()
                .any(|v| v["event"] == "status_changed" && v["uuid"] == uuid(i).as_str())
        })
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);

    // A run stopped before any discovery worked must not lose what the state holds.
    sim.machine_hooks().set_failing(true);
    let mut d = app.daemon(&[]);
    d.wait_for("discovery_failed", WAIT, |e| {
        e.iter().any(|v| v["event"] == "discovery_failed")
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.machine_hooks().set_failing(false);

    // Next run: the same statuses, so nothing to report once they are polled again.
    let before: Vec<usize> = (0..4).map(|i| polls_of(&sim, i)).collect();
    let mut d = app.daemon(&[]);
    d.wait_for("the first discovery", WAIT, |e| {
        !discovery_loads(e).is_empty()
    })
    .await;
    let deadline = std::time::Instant::now() + WAIT;
    while (0..4).any(|i| polls_of(&sim, i) < before[i] + 2) {
        assert!(
            std::time::Instant::now() < deadline,
            "agents not polled again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = d.stop().await;
    let repeated = out.named("status_changed");
    assert!(
        repeated.is_empty(),
        "reported again after a restart: {repeated:?}"
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_turns_discovery_on_without_a_watchlist_keeps_the_agents() {
    let sim = start_scenario(&scenario()).await;
    let app = App::for_simulator(&sim.endpoint(), &crate::support::app::agents(0..2, "a"));
    let mut d = app.daemon(&[]);
    d.wait_for("first answers", WAIT, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 2
    })
    .await;
    app.write(
        "config.toml",
        daemon_config(&sim.endpoint()).replace("watchlist = \"watchlist.toml\"\n", "")
            + "[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\n",
    );
    d.signal(libc::SIGHUP);
    d.wait_for("config_rejected", WAIT, |e| {
        e.iter().any(|v| v["event"] == "config_rejected")
    })
    .await;
    let rejected = d.named("config_rejected");
    assert!(
        rejected[0]["error_message"]
            .as_str()
            .unwrap()
            .contains("restart"),
        "{rejected:?}"
    );
    let out = d.stop().await;
    let loads = out.named("watchlist_loaded");
    assert_eq!(loads.len(), 1, "only the start's: {loads:?}");
    assert_eq!(polls_of(&sim, 2), 0, "discovery did not start on a reload");
    sim.shutdown().await;
}

/// Agents 0..4 as [`scenario`]'s, each with one open port, for the inventory.
fn scenario_with_ports() -> String {
    let mut s = String::new();
    for i in 0..4 {
        s.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\nmachine_name = \"m-{i}\"\n\
             timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n\
             ports = [ {{ at = \"0s\", open = [ {{ port = {}, process = \"sshd\", pid = 7 }} ] }} ]\n",
            uuid(i),
            2200 + i
        ));
    }
    s
}

/// `app_for` with the inventory kept and `extra` keys in `[discovery]`.
fn app_with_inventory(sim: &RunningSimulator, discovery: &str, inventory: &str) -> App {
    let app = App::for_simulator(&sim.endpoint(), &[(uuid(0), "listed-0".to_owned())]);
    app.write(
        "config.toml",
        format!(
            "{}[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\nrefresh = \"1s\"\n\
             {discovery}[inventory]\nenabled = true\n{inventory}",
            daemon_config(&sim.endpoint())
        ),
    );
    app
}

/// The events called `name` about agent `i`.
fn about(events: &[Value], name: &str, i: usize) -> usize {
    events
        .iter()
        .filter(|v| v["event"] == name && v["uuid"] == uuid(i).as_str())
        .count()
}

/// Requests of `action` the simulator received for agent `i`.
fn requests_of(sim: &RunningSimulator, action: &str, i: usize) -> usize {
    let uuid = uuid(i);
    sim.stats()
        .log
        .iter()
        .filter(|r| r.action == action && r.uuid.as_deref() == Some(uuid.as_str()))
        .count()
}

/// Waits (up to a minute: the machine is shared) until `passes` more listings arrived.
async fn wait_for_listings(sim: &RunningSimulator, passes: u64) {
    let from = machine_requests(sim);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while machine_requests(sim) < from + passes {
        assert!(std::time::Instant::now() < deadline, "no discovery passes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Issue 20: `DescribeMachines` answering [A, …] and […] in turn every second. Agent A is
/// watched once: one `status_changed`, one `inventory_baseline`, whatever the flapping; it
/// leaves only after `remove_after` (3) complete passes in a row without it, its polling then
/// stops; back within `forget_after` it repeats nothing (no status change, no baseline, no
/// fetch: its snapshot was kept).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flapping_machine_is_watched_once_and_leaves_only_after_remove_after_passes() {
    let sim = start_scenario(&scenario_with_ports()).await;
    sim.machine_hooks().flap(&uuid(1));
    let app = app_with_inventory(&sim, "", "");
    let mut d = app.daemon(&[]);
    d.wait_for("agent 1's baseline", WAIT, |e| {
        about(e, "inventory_baseline", 1) == 1
    })
    .await;
    // 12 more passes: 6 without agent 1.
    wait_for_listings(&sim, 12).await;
    let events = d.named("status_changed");
    assert_eq!(about(&events, "status_changed", 1), 1, "{events:?}");
    assert_eq!(
        about(&d.named("inventory_baseline"), "inventory_baseline", 1),
        1
    );
    let loads = discovery_loads(&d.named("watchlist_loaded"));
    assert_eq!(loads.len(), 1, "the list never changed: {loads:?}");

    // Listed again for good, then gone for good: it leaves after 3 passes without it.
    sim.machine_hooks().show(&uuid(1));
    wait_for_listings(&sim, 2).await;
    let from = machine_requests(&sim);
    sim.machine_hooks().hide(&uuid(1));
    d.wait_for("agent 1 removed", Duration::from_secs(60), |e| {
        discovery_loads(e).len() == 2
    })
    .await;
    assert!(
        machine_requests(&sim) >= from + 3,
        "removed after {} listings",
        machine_requests(&sim) - from
    );
    let removed = discovery_loads(&d.named("watchlist_loaded"))[1].clone();
    assert_eq!(removed["removed"], 1, "{removed}");
    // Its polling stops (one request in flight at the removal may still land).
    let polls = polls_of(&sim, 1);
    wait_for_listings(&sim, 3).await;
    assert!(polls_of(&sim, 1) <= polls + 1, "still polled");

    // Back: watched again, nothing repeated.
    let fetches = requests_of(&sim, "DescribeOpenPorts", 1);
    sim.machine_hooks().show(&uuid(1));
    d.wait_for("agent 1 back", Duration::from_secs(60), |e| {
        discovery_loads(e).len() == 3
    })
    .await;
    let back = polls_of(&sim, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while polls_of(&sim, 1) < back + 3 {
        assert!(std::time::Instant::now() < deadline, "agent 1 not polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(about(&out.events, "status_changed", 1), 1);
    assert_eq!(about(&out.events, "inventory_baseline", 1), 1);
    assert_eq!(about(&out.events, "port_opened", 1), 0);
    assert_eq!(about(&out.events, "port_closed", 1), 0);
    assert_eq!(
        requests_of(&sim, "DescribeOpenPorts", 1),
        fetches,
        "its snapshot was kept: no fetch"
    );
    sim.shutdown().await;
}

/// What is kept of an agent that left survives a restart (state, inventory and discovery
/// files): back after the restart it repeats nothing, even with `baseline = "ports"`. After
/// `forget_after` it is forgotten, from the files too, and comes back as new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_that_left_is_remembered_across_a_restart_until_forget_after() {
    let sim = start_scenario(&scenario_with_ports()).await;
    let app = app_with_inventory(
        &sim,
        "remove_after = 1\nforget_after = \"1h\"\n",
        "baseline = \"ports\"\n",
    );
    let mut d = app.daemon(&[]);
    d.wait_for("agent 1's port", WAIT, |e| about(e, "port_opened", 1) == 1)
        .await;
    sim.machine_hooks().hide(&uuid(1));
    d.wait_for("agent 1 removed", Duration::from_secs(60), |e| {
        discovery_loads(e).len() == 2
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // Kept in every file.
    let state = app.state().load().unwrap();
    assert!(state.contains_key(&uuid(1).parse().unwrap()), "{state:?}");
    let inventory =
        cwp_portwatch::inventory::store::InventoryFile::in_dir(&app.path().join("state"))
            .load()
            .unwrap();
    assert!(inventory[&uuid(1)].snapshot.is_some());
    let remembered = std::fs::read_to_string(app.path().join("state/discovery.json")).unwrap();
    assert!(remembered.contains(&uuid(1)), "{remembered}");

    // Back while the daemon was down: nothing repeated.
    sim.machine_hooks().show(&uuid(1));
    let mut d = app.daemon(&[]);
    d.wait_for("agent 1 back", Duration::from_secs(60), |e| {
        discovery_loads(e).iter().any(|v| v["agents"] == 4)
    })
    .await;
    let back = polls_of(&sim, 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while polls_of(&sim, 1) < back + 3 {
        assert!(std::time::Instant::now() < deadline, "agent 1 not polled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = d.stop().await;
    assert_eq!(about(&out.events, "status_changed", 1), 0, "{}", out.stderr);
    assert_eq!(about(&out.events, "port_opened", 1), 0, "{}", out.stderr);

    // forget_after passes (1 s here): gone, forgotten from the files, then back as new.
    app.write(
        "config.toml",
        std::fs::read_to_string(app.config())
            .unwrap()
            .replace("forget_after = \"1h\"", "forget_after = \"1s\""),
    );
    sim.machine_hooks().hide(&uuid(1));
    let mut d = app.daemon(&[]);
    d.wait_for("agent 1 removed", Duration::from_secs(60), |e| {
        discovery_loads(e).iter().any(|v| v["agents"] == 3)
    })
    .await;
    // Wait until a pass at least 1 s later has forgotten it from the discovery file.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let remembered =
            std::fs::read_to_string(app.path().join("state/discovery.json")).unwrap_or_default();
        if !remembered.contains(&uuid(1)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never forgotten");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(
        !app.state()
            .load()
            .unwrap()
            .contains_key(&uuid(1).parse().unwrap())
    );
    let inventory =
        cwp_portwatch::inventory::store::InventoryFile::in_dir(&app.path().join("state"))
            .load()
            .unwrap();
    assert!(!inventory.contains_key(&uuid(1)));
    sim.machine_hooks().show(&uuid(1));
    let mut d = app.daemon(&[]);
    d.wait_for("agent 1 new again", Duration::from_secs(60), |e| {
        about(e, "status_changed", 1) == 1 && about(e, "port_opened", 1) == 1
    })
    .await;
    d.stop().await;
    sim.shutdown().await;
}

/// Host facts end to end (issue 22): the simulator's `tags` and `machine_wan_ip` keys are served
/// by `DescribeMachines` as the API shapes them (`Tag: [{Rid, Name, TagId}]`, `MachineWanIp`,
/// `RegionInfo.Region`), read by discovery, merged with a listed agent's tags, and reach what
/// the engine lends the policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovered_tags_region_and_wan_ip_reach_the_engine_hosts() {
    use cwp_portwatch::discovery::{
        AgentStatusFilter, Discovery, DiscoverySettings, MachineType, merge,
    };
    use cwp_portwatch::engine::{Engine, EngineConfig, Poller};
    use cwp_portwatch::watchlist::Watchlist;

    let mut text = String::new();
    for (i, extra) in [
        "tags = [\"web\", \"prod\"]\nmachine_wan_ip = \"203.0.113.10\"\n",
        "tags = [\"db\"]\n",
        "",
    ]
    .iter()
    .enumerate()
    {
        text.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\nmachine_name = \"m-{i}\"\nregion = \"ap-shanghai\"\n{extra}\
             timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n",
            uuid(i)
        ));
    }
    let sim = start_scenario(&text).await;
    let client = client_for(&sim, DEFAULT_SECRET_KEY, Duration::from_secs(5));

    // The raw answer has the API's shape.
    let answer = client
        .call(
            DESCRIBE_MACHINES_ACTION,
            &serde_json::json!({"MachineType": "CVM", "MachineRegion": "ap-shanghai", "Limit": 100}),
        )
        .await
        .unwrap();
    let machines = answer.fields["Machines"].as_array().unwrap();
    assert_eq!(
        machines[0]["Tag"],
        serde_json::json!([{"Rid": 1, "Name": "web", "TagId": 1},
                           {"Rid": 2, "Name": "prod", "TagId": 2}])
    );
    assert_eq!(machines[0]["MachineWanIp"], "203.0.113.10");
    assert_eq!(machines[1]["MachineWanIp"], "");
    assert_eq!(machines[2]["Tag"], serde_json::json!([]));
    assert_eq!(machines[0]["RegionInfo"]["Region"], "ap-shanghai");

    // Discovery reads them; the watchlist lists agent 1 with a tag of its own.
    let settings = DiscoverySettings {
        enabled: true,
        machine_types: vec![MachineType::Cvm],
        regions: vec!["ap-shanghai".into()],
        agent_status: AgentStatusFilter::All,
        ..DiscoverySettings::default()
    };
    let found = Discovery::new(client, settings, 20)
        .discover()
        .await
        .unwrap();
    assert_eq!(found.agents.len(), 3);
    let listed = Watchlist::from_toml_str(
        &format!(
            "[[agent]]\nuuid = \"{}\"\nname = \"listed-1\"\ntags = [\"backup\"]\n",
            uuid(1)
        ),
        std::path::Path::new("w.toml"),
    )
    .unwrap()
    .agents;
    let agents = merge(&listed, &found.agents);

    #[derive(Clone)]
    struct Idle;
    impl Poller for Idle {
        async fn poll(
            &self,
            _uuid: &str,
        ) -> Result<cwp_portwatch::api::TaskStatus, cwp_portwatch::api::ApiError> {
            Err(cwp_portwatch::api::ApiError::Transport("not polled".into()))
        }
    }
    let config = EngineConfig {
        requests_per_second: 20,
        max_in_flight: 1,
        intervals: cwp_portwatch::scheduler::Intervals {
            settled: Duration::from_secs(60),
            collecting: Duration::from_secs(5),
            offline: Duration::from_secs(30),
        },
        once: true,
    };
    let engine = Engine::new(
        Idle,
        std::sync::Arc::new(cwp_portwatch::events::CollectingSink::default()),
        config,
        &agents,
        std::collections::HashMap::new(),
    );
    let host = |i: usize| {
        engine
            .with_host(&uuid(i).parse().unwrap(), "default", |h| {
                let tags: Vec<String> = h.tags.iter().map(|t| t.to_string()).collect();
                (
                    h.name.to_owned(),
                    tags,
                    h.region.to_owned(),
                    h.wan,
                    h.account.to_owned(),
                )
            })
            .expect("watched")
    };
    let s = |v: &[&str]| v.iter().map(|t| t.to_string()).collect::<Vec<_>>();
    assert_eq!(
        host(0),
        (
            "m-0".into(),
            s(&["prod", "web"]),
            "ap-shanghai".into(),
            true,
            "default".into()
        )
    );
    assert_eq!(
        host(1),
        (
            "listed-1".into(),
            s(&["backup", "db"]),
            "ap-shanghai".into(),
            false,
            "default".into()
        ),
        "the listed name wins, tags are the union"
    );
    assert_eq!(
        host(2),
        (
            "m-2".into(),
            vec![],
            "ap-shanghai".into(),
            false,
            "default".into()
        )
    );
    sim.shutdown().await;
}
