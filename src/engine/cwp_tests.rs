//! The `cwp` backend through the whole engine under paused time, with a scripted fake API:
//! statuses from paged machine listings (exactly once, spread over the interval, restart
//! without repeats), port listings per Quuid (events with bind address and protocol, a close
//! only once confirmed), hostile answers ending as `inventory_failed`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::api::cwp::{
    AssetPort, BindIp, Machine, MachinesPage, MachinesQuery, PortsPage, PortsQuery, Proto, Quuid,
};
use crate::events::{CollectingSink, Event};
use crate::inventory::Baseline;
use crate::inventory::store::InventoryMap;

/// (when, action, offset) of every request.
type Log = Arc<Mutex<Vec<(Instant, &'static str, u64)>>>;
type Statuses = Arc<dyn Fn(Duration, usize) -> Option<&'static str> + Send + Sync>;
type Ports = Arc<dyn Fn(Duration, &str) -> Result<Vec<AssetPort>, ApiError> + Send + Sync>;

/// `machines` machines (machine i: agent i's Uuid, Quuid `q-i`) whose statuses and ports are
/// functions of the time since the start (`None`: the machine has no agent Uuid).
#[derive(Clone)]
struct Fake {
    start: Instant,
    /// Added to the time since the start (a restart continues the timeline).
    shift: Duration,
    machines: usize,
    status: Statuses,
    ports: Ports,
    /// (when, action, offset) of every request.
    log: Log,
    /// Listings are refused (`AuthFailure.SecretIdNotFound`) until this time.
    refuse_until: Duration,
}

/// Agent i's Uuid: varied in every group, as real Uuids are, so hash phases spread.
fn uuid(i: usize) -> String {
    let mix = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        (mix >> 32) as u32,
        (mix >> 16) as u16,
        i
    )
}

impl Poller for Fake {
    async fn poll(&self, _: &str) -> Result<TaskStatus, ApiError> {
        panic!("a cwp engine never polls task statuses")
    }
    fn backend(&self) -> Backend {
        Backend::Cwp
    }
    fn describe_machines(
        &self,
        query: &MachinesQuery,
    ) -> impl Future<Output = Result<MachinesPage, ApiError>> + Send {
        let now = Instant::now();
        self.log
            .lock()
            .unwrap()
            .push((now, "machines", query.offset()));
        let at = now - self.start + self.shift;
        if at < self.refuse_until {
            return futures_util::future::Either::Left(std::future::ready(Err(ApiError::Api {
                code: "AuthFailure.SecretIdNotFound".into(),
                message: "The SecretId is not found".into(),
                request_id: Some("rx".into()),
            })));
        }
        // Only the CVM listing holds machines.
        let cvm = query.params()["MachineType"] == "CVM";
        let total = if cvm { self.machines as u64 } else { 0 };
        let first = query.offset() as usize;
        let last = (first + query.limit() as usize).min(total as usize);
        // A machine whose status is `None` has no agent Uuid (still a row of the page).
        let machines = (first..last)
            .map(|i| {
                let status = (self.status)(at, i);
                Machine {
                    quuid: Quuid::parse(&format!("q-{i}")).unwrap(),
                    uuid: status.map(|_| crate::agent_uuid::AgentUuid::parse(&uuid(i)).unwrap()),
                    agent_status: status.unwrap_or("OFFLINE").into(),
                    machine_status: None,
                    name: None,
                    machine_ip: None,
                    wan_ip: None,
                    instance_id: None,
                    facts: Default::default(),
                }
            })
            .collect();
        futures_util::future::Either::Right(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(MachinesPage {
                total,
                machines,
                request_id: "rm".into(),
            })
        })
    }
    fn describe_asset_ports(
        &self,
        query: &PortsQuery,
    ) -> impl Future<Output = Result<PortsPage, ApiError>> + Send {
        let now = Instant::now();
        self.log
            .lock()
            .unwrap()
            .push((now, "ports", query.offset()));
        let answer =
            (self.ports)(now - self.start + self.shift, query.quuid().as_str()).map(|rows| {
                let total = rows.len() as u64;
                let first = (query.offset() as usize).min(rows.len());
                let last = (first + query.limit() as usize).min(rows.len());
                PortsPage {
                    total,
                    rows: rows[first..last].to_vec(),
                    machine_ip: "10.0.0.6".into(),
                    machine_name: "db".into(),
                    request_id: "rp".into(),
                }
            });
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            answer
        }
    }
}

fn port(proto: &str, bind: &str, port: u16, process: &str) -> AssetPort {
    AssetPort {
        proto: Proto::parse(proto).unwrap(),
        bind_ip: BindIp::parse(bind).unwrap(),
        port,
        process: process.into(),
        pid: Some(1400),
        user: "mysql".into(),
        process_path: "/usr/sbin/mysqld".into(),
        first_seen: None,
    }
}

fn agents(n: usize) -> Vec<Agent> {
    let text: String = (0..n)
        .map(|i| format!("[[agent]]\nuuid = \"{}\"\nname = \"a{i}\"\n", uuid(i)))
        .collect();
    crate::watchlist::Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
        .unwrap()
        .agents
}

fn config(interval: u64) -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 32,
        intervals: crate::scheduler::Intervals {
            settled: Duration::from_secs(interval),
            collecting: Duration::from_secs(5),
            offline: Duration::from_secs(interval),
        },
        once: false,
    }
}

fn options(rescan: u64) -> InventoryOptions {
    InventoryOptions {
        enabled: true,
        rescan_interval: Duration::from_secs(rescan),
        create_missing: false,
        baseline: Baseline::Summary,
        action_rates: [20; 5],
        action_in_flight: [32; 5],
    }
}

struct Ran {
    events: Vec<Event>,
    stored: InventoryMap,
    known: crate::tracker::KnownMap,
}

async fn run(
    api: Fake,
    watched: usize,
    interval: u64,
    known: crate::tracker::KnownMap,
    stored: InventoryMap,
    secs: u64,
) -> Ran {
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(api, sink.clone(), config(interval), &agents(watched), known)
        .with_inventory(options(60), stored, None)
        .with_cwp_listings(cwp_listings("ap-guangzhou"));
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.cancel();
    });
    let (engine, _) = engine.run(stop).await;
    Ran {
        events: sink.events(),
        stored: engine.stored_inventory().cloned().unwrap_or_default(),
        known: engine.agents.known().map(|(u, k)| (u, k.clone())).collect(),
    }
}

/// Status and port events as short strings.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StatusChanged {
                agent_name,
                from_status,
                to_status,
                ..
            } => Some(format!("{agent_name} {from_status}->{to_status}")),
            Event::PortOpened {
                agent_name,
                port,
                cwp,
                ..
            } => {
                let c = cwp.as_deref().expect("a cwp port has its facts");
                Some(format!("{agent_name} +{}/{port} {}", c.bind_ip, c.proto))
            }
            Event::PortClosed {
                agent_name,
                port,
                cwp,
                ..
            } => {
                let c = cwp.as_deref().expect("a cwp port has its facts");
                Some(format!("{agent_name} -{}/{port} {}", c.bind_ip, c.proto))
            }
            Event::InventoryBaseline {
                agent_name, ports, ..
            } => Some(format!("{agent_name} baseline {ports}")),
            Event::InventoryFailed {
                agent_name,
                error_code,
                ..
            } => Some(format!("{agent_name} failed {error_code}")),
            _ => None,
        })
        .collect()
}

fn fake(machines: usize, status: Statuses, ports: Ports) -> Fake {
    Fake {
        start: Instant::now(),
        shift: Duration::ZERO,
        refuse_until: Duration::ZERO,
        machines,
        status,
        ports,
        log: Arc::default(),
    }
}

/// a0 goes OFFLINE at 25 s; a1 stays ONLINE; a2's machine has no agent Uuid. a0's mysqld
/// moves from 127.0.0.1 to 0.0.0.0 at 100 s.
fn timeline() -> Fake {
    fake(
        3,
        Arc::new(|at, i| match i {
            0 if at >= Duration::from_secs(25) => Some("OFFLINE"),
            0 | 1 => Some("ONLINE"),
            _ => None,
        }),
        Arc::new(|at, quuid| {
            let mysqld = if at >= Duration::from_secs(100) {
                "0.0.0.0"
            } else {
                "127.0.0.1"
            };
            Ok(match quuid {
                "q-0" => vec![
                    port("tcp", "0.0.0.0", 22, "sshd"),
                    port("tcp", mysqld, 3306, "mysqld"),
                ],
                _ => vec![port("udp", "0.0.0.0", 53, "named")],
            })
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn statuses_and_ports_come_exactly_once_and_a_restart_repeats_none() {
    let api = timeline();
    let first = run(
        api.clone(),
        3,
        10,
        Default::default(),
        Default::default(),
        200,
    )
    .await;
    assert_eq!(
        names(&first.events),
        [
            "a0 UNKNOWN->ONLINE",
            "a1 UNKNOWN->ONLINE",
            // Listed within one pass at the lane's rate, in the order of their phases.
            "a1 baseline 1",
            "a0 baseline 2",
            "a0 ONLINE->OFFLINE",
            // The rescan after the move: the new bind at once, the old one once confirmed.
            "a0 +0.0.0.0/3306 tcp",
            "a0 -127.0.0.1/3306 tcp",
        ],
        "{:#?}",
        first.events
    );
    // OFFLINE warns, like yunjing's AGENT_OFFLINE.
    let offline = first
        .events
        .iter()
        .find(|e| matches!(e, Event::StatusChanged { to_status, .. } if to_status.as_str() == "OFFLINE"))
        .unwrap();
    assert_eq!(offline.level(), tracing::Level::WARN);
    // The event's JSON fields carry the port's facts.
    let opened = first
        .events
        .iter()
        .find(|e| matches!(e, Event::PortOpened { .. }))
        .unwrap();
    let fields = opened.fields();
    assert_eq!(fields["proto"], "tcp");
    assert_eq!(fields["bind_ip"], "0.0.0.0");
    assert_eq!(fields["user"], "mysql");
    assert_eq!(fields["process_path"], "/usr/sbin/mysqld");
    assert!(!fields.contains_key("first_seen"), "unknown: absent");
    // The stored inventory keeps them.
    let stored = &first.stored[&uuid(0)];
    let ports = &stored.snapshot.as_ref().unwrap().ports;
    assert_eq!(ports.len(), 2);
    assert!(ports.iter().all(|p| p.cwp.is_some()));
    // a2 (no agent Uuid on its machine) has no status.
    assert!(
        !first
            .known
            .contains_key(&uuid(2).parse::<crate::agent_uuid::AgentUuid>().unwrap()),
        "{:?}",
        first.known
    );

    // A restart with what was persisted, the timeline going on: nothing is repeated.
    let mut api = timeline();
    api.shift = Duration::from_secs(200);
    let again = run(api, 3, 10, first.known, first.stored, 150).await;
    assert_eq!(
        names(&again.events),
        Vec::<String>::new(),
        "{:#?}",
        again.events
    );
}

#[tokio::test(start_paused = true)]
async fn a_listing_is_paged_spread_over_the_interval_within_the_rate() {
    // 250 machines: 3 pages of the CVM listing per 60 s pass, at 0, 20 and 40 s.
    let api = fake(
        250,
        Arc::new(|_, _| Some("ONLINE")),
        Arc::new(|_, _| Ok(vec![])),
    );
    let log = api.log.clone();
    let start = Instant::now();
    let ran = run(api, 250, 60, Default::default(), Default::default(), 130).await;
    let statuses = ran
        .events
        .iter()
        .filter(|e| matches!(e, Event::StatusChanged { .. }))
        .count();
    assert_eq!(statuses, 250, "each agent once");
    let log = log.lock().unwrap();
    let cvm_pages: Vec<(u64, u64)> = log
        .iter()
        .filter(|(_, action, offset)| *action == "machines" && *offset > 0)
        .map(|(t, _, offset)| ((*t - start).as_secs(), *offset))
        .collect();
    assert_eq!(cvm_pages, [(20, 100), (40, 200), (80, 100), (100, 200)]);
    // Every action's requests: never more than 20 in any 1-second window.
    for action in ["machines", "ports"] {
        let times: Vec<Instant> = log
            .iter()
            .filter(|(_, a, _)| *a == action)
            .map(|(t, _, _)| *t)
            .collect();
        for (i, t) in times.iter().enumerate() {
            let in_window = times[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(in_window <= 20, "{action}: {in_window} in one second");
        }
    }
    // 250 port listings (one per machine) spread over one pass at 20/s, not at once.
    let fetches = log.iter().filter(|(_, a, _)| *a == "ports").count();
    assert!(fetches >= 250, "{fetches}");
}

#[tokio::test(start_paused = true)]
async fn hostile_port_answers_end_as_inventory_failed_never_as_port_events() {
    let bad = || {
        Err(ApiError::Api {
            code: "ClientError.Decode".into(),
            message: "Response.Ports[0].BindIp is not an IPv4 or IPv6 address".into(),
            request_id: Some("rp".into()),
        })
    };
    let api = fake(
        1,
        Arc::new(|_, _| Some("ONLINE")),
        Arc::new(move |_, _| bad()),
    );
    let ran = run(api, 1, 10, Default::default(), Default::default(), 30).await;
    assert_eq!(
        names(&ran.events),
        ["a0 UNKNOWN->ONLINE", "a0 failed ClientError.Decode"],
        "{:#?}",
        ran.events
    );
    assert!(
        ran.stored
            .get(&uuid(0))
            .is_none_or(|s| s.snapshot.is_none())
    );
}

/// The policy's table form on `cwp` ports: mysqld allowed on loopback only, so its move to
/// 0.0.0.0 is `port_unexpected` once, and the loopback one's confirmed close raises nothing.
#[tokio::test(start_paused = true)]
async fn a_bind_rule_flags_the_port_that_moved_to_every_address() {
    let policy = crate::policy::Policy::from_toml_str(
        r#"
[[rule]]
name = "db"
hosts = { names = ["a*"] }
allow = ["22/sshd", "53/named", { port = 3306, process = "mysqld", proto = "tcp", bind = "loopback", user = "mysql" }]
severity = "critical"
"#,
        std::path::Path::new("policy.toml"),
        crate::policy::Capabilities::CWP,
    )
    .unwrap();
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(
        timeline(),
        sink.clone(),
        config(10),
        &agents(3),
        Default::default(),
    )
    .with_policy(Some(Arc::new(policy)), "default")
    .with_inventory(options(60), Default::default(), None)
    .with_cwp_listings(cwp_listings("ap-guangzhou"));
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(200)).await;
        stopper.cancel();
    });
    let _ = engine.run(stop).await;
    let findings: Vec<String> = sink
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::Finding(_) => {
                let f = e.fields();
                Some(format!("{} {} {}", e.name(), f["port"], f["process_name"]))
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        findings,
        ["port_unexpected 3306 \"mysqld\""],
        "{:#?}",
        sink.events()
    );
}

#[test]
fn the_table_keys_need_every_account_to_be_cwp() {
    let parse = |text: &str| {
        crate::config::Settings::from_toml_str_with(
            text,
            std::path::Path::new("/etc/cwp-portwatch/config.toml"),
            &crate::credentials::Environment::from_pairs([("HOME", "/home/op")]),
        )
        .unwrap()
    };
    let cwp =
        parse("watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n");
    assert_eq!(cwp.policy_capabilities(), crate::policy::Capabilities::CWP);
    let mixed = parse(
        "watchlist = \"w.toml\"\n[[account]]\nname = \"live\"\nservice = \"cwp\"\n\
         region = \"ap-shanghai\"\nwatchlist = \"live.toml\"\n\
         [account.credentials]\nsource = \"profile\"\nprofile = \"live\"\n",
    );
    assert_eq!(
        mixed.policy_capabilities(),
        crate::policy::Capabilities::YUNJING
    );
    // `check`'s refusal names the yunjing accounts.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    std::fs::write(
        &path,
        "[[rule]]\nname = \"db\"\nhosts = { names = [\"*\"] }\n\
         allow = [{ port = 3306, process = \"mysqld\", bind = \"loopback\" }]\n",
    )
    .unwrap();
    let errors = crate::commands::policy::check_policy(&path, &mixed).unwrap_err();
    assert!(
        errors.problems[0]
            .message
            .contains("these use yunjing: default"),
        "{errors:?}"
    );
    crate::commands::policy::check_policy(&path, &cwp).unwrap();
}

#[tokio::test(start_paused = true)]
async fn rescans_keep_each_agents_slot_in_the_interval() {
    let epoch = Instant::now();
    let minute = Duration::from_secs(60);
    let at = |s: u64| epoch + Duration::from_secs(s);
    // Its slot is 40 s into each minute: from 11 s, 40 s is less than half an interval away,
    // so the next is at 100 s; from 10 s it is just far enough.
    assert_eq!(
        super::cwp::rescan_slot(at(11), epoch, Duration::from_secs(40), minute),
        at(100)
    );
    assert_eq!(
        super::cwp::rescan_slot(at(10), epoch, Duration::from_secs(40), minute),
        at(40)
    );
    // From 5 s with the slot at 50 s: 45 s away, fine.
    assert_eq!(
        super::cwp::rescan_slot(at(5), epoch, Duration::from_secs(50), minute),
        at(50)
    );
    // Far later: the next slot of the same phase.
    assert_eq!(
        super::cwp::rescan_slot(at(3601), epoch, Duration::from_secs(40), minute),
        at(3640)
    );
    // Each rescan one interval after the last once in step.
    assert_eq!(
        super::cwp::rescan_slot(at(3640), epoch, Duration::from_secs(40), minute),
        at(3700)
    );
    assert_eq!(
        super::cwp::rescan_slot(at(7), epoch, Duration::ZERO, Duration::ZERO),
        at(7)
    );
}

/// 100 agents (one listing page) rescanned every 60 s: after the first pass, their fetches
/// are spread over the minute by their slots (about 2 a second), not in the burst of the
/// first pass.
#[tokio::test(start_paused = true)]
async fn rescans_are_spread_evenly_over_the_interval() {
    let api = fake(
        120,
        Arc::new(|_, _| Some("ONLINE")),
        Arc::new(|_, _| Ok(vec![])),
    );
    let log = api.log.clone();
    let start = Instant::now();
    let _ = run(api, 120, 600, Default::default(), Default::default(), 245).await;
    let log = log.lock().unwrap();
    let mut per_ten_s = [0u32; 24];
    let mut per_agent_second = std::collections::HashMap::<u64, u32>::new();
    for (t, action, _) in log.iter() {
        let s = (*t - start).as_secs();
        if *action == "ports" && (60..240).contains(&s) {
            per_ten_s[(s / 10) as usize] += 1;
            *per_agent_second.entry(s).or_default() += 1;
        }
    }
    // Each agent once a minute: 3 rescans of 100 agents in 180 s, 300 fetches, about 17 in
    // every 10 s (the first pass took 5 s at 20/s; after it, no burst).
    let total: u32 = per_ten_s.iter().sum();
    assert_eq!(total, 300, "{per_ten_s:?}");
    for (i, n) in per_ten_s.iter().enumerate().skip(6) {
        assert!(
            (5..=35).contains(n),
            "{}-{} s: {n} fetches: {per_ten_s:?}",
            i * 10,
            i * 10 + 10
        );
    }
    assert!(
        per_agent_second.values().all(|n| *n <= 8),
        "{per_agent_second:?}"
    );
}

/// Removing an agent stops nothing but that agent: the listings' lane holds cursors, not
/// agents, so removing agent 0 (id 0) leaves listing 0 (the CVM one) going, and an agent
/// added by the same reload gets its status from it.
#[tokio::test(start_paused = true)]
async fn a_reload_removes_agents_never_listings() {
    let api = fake(
        4,
        Arc::new(|_, _| Some("ONLINE")),
        Arc::new(|_, _| Ok(vec![])),
    );
    let log = api.log.clone();
    let sink = Arc::new(CollectingSink::default());
    let (control, rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(
        api,
        sink.clone(),
        config(10),
        &agents(2),
        Default::default(),
    )
    .with_control(rx)
    .with_inventory(options(60), Default::default(), None)
    .with_cwp_listings(cwp_listings("ap-guangzhou"));
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(15)).await;
        // Agent 0 out, agents 2 and 3 in.
        let all = agents(4);
        let (reply, answer) = tokio::sync::oneshot::channel();
        control
            .send(Control::Reload {
                agents: all[1..].to_vec(),
                config: config(10),
                removed: Removed::Forget,
                reply,
            })
            .unwrap();
        assert_eq!(answer.await.unwrap(), (3, 2, 1));
        tokio::time::sleep(Duration::from_secs(30)).await;
        stopper.cancel();
    });
    let (_engine, _) = engine.run(stop).await;
    let changed: Vec<String> = names(&sink.events());
    assert_eq!(
        changed,
        [
            "a0 UNKNOWN->ONLINE",
            "a1 UNKNOWN->ONLINE",
            "a1 baseline 0",
            "a0 baseline 0",
            "a2 UNKNOWN->ONLINE",
            "a3 UNKNOWN->ONLINE",
            "a2 baseline 0",
            "a3 baseline 0",
        ],
        "{:#?}",
        sink.events()
    );
    // The CVM listing went on after the reload: a pass every 10 s.
    let log = log.lock().unwrap();
    let cvm_passes = log
        .iter()
        .filter(|(_, action, offset)| *action == "machines" && *offset == 0)
        .count();
    assert!(cvm_passes >= 5 * 4, "{cvm_passes} listing requests in 45 s");
}

/// `once`: every listing paged once (its pages at once, not spread), each listed agent
/// reported with its status, one without a machine with why.
#[tokio::test(start_paused = true)]
async fn once_lists_every_machine_once_and_says_which_agents_it_did_not_find() {
    // 150 machines: the CVM listing has two pages, the second not 30 s later but at once.
    let api = fake(
        150,
        Arc::new(|_, i| (i != 1).then_some("ONLINE")),
        Arc::new(|_, _| Ok(vec![])),
    );
    let sink = Arc::new(CollectingSink::default());
    let mut cfg = config(60);
    cfg.once = true;
    let engine = Engine::new(api, sink, cfg, &agents(150), Default::default())
        .with_cwp_listings(cwp_listings("ap-guangzhou"));
    let started = Instant::now();
    let (_, report) = engine.run(CancellationToken::new()).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(report.agents.len(), 150);
    let a1 = &report.agents[1];
    assert_eq!(a1.status.as_str(), "UNKNOWN");
    assert!(
        a1.last_error.as_deref().is_some_and(
            |e| e.contains("no machine with this Uuid") && e.contains("CVM in ap-guangzhou")
        ),
        "{a1:?}"
    );
    for (i, a) in report.agents.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(a.status.as_str(), "ONLINE", "{i}: {a:?}");
        assert_eq!(a.last_error, None, "{i}: {a:?}");
        assert_eq!(a.request_id.as_deref(), Some("rm"), "{i}: {a:?}");
    }
}

/// Refused credentials on the listings: one `credentials_failed`, one probe per 30 s while
/// refused (never a retry storm), and the statuses once the key works.
#[tokio::test(start_paused = true)]
async fn refused_credentials_close_the_gate_until_a_listing_gets_through() {
    let mut api = fake(
        2,
        Arc::new(|_, _| Some("ONLINE")),
        Arc::new(|_, _| Ok(vec![])),
    );
    api.refuse_until = Duration::from_secs(70);
    let log = api.log.clone();
    let start = Instant::now();
    let ran = run(api, 2, 10, Default::default(), Default::default(), 100).await;
    let failed = ran
        .events
        .iter()
        .filter(|e| matches!(e, Event::CredentialsFailed { .. }))
        .count();
    assert!((1..=3).contains(&failed), "{failed}: {:#?}", ran.events);
    let refused: Vec<u64> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(t, action, _)| *action == "machines" && *t - start < Duration::from_secs(70))
        .map(|(t, _, _)| (*t - start).as_secs())
        .collect();
    // The first five listings went out together; then one probe per 30 s.
    assert!(refused.len() <= 5 + 3, "{refused:?}");
    assert_eq!(
        names(&ran.events),
        [
            "a0 UNKNOWN->ONLINE",
            "a1 UNKNOWN->ONLINE",
            "a1 baseline 0",
            "a0 baseline 0"
        ]
        .map(String::from),
        "{:#?}",
        ran.events
    );
}
