//! The expected-ports policy through the whole engine under paused time, with a scripted fake
//! API: the exact finding events of port timelines (at baseline, opened later, closed, a
//! required port missing then open), policy reloads (allow, tighten: no request), a restart
//! (no repeat), and agents removed or forgotten (cleared `removed`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::events::{CollectingSink, Event, FindingKind};
use crate::inventory::store::InventoryMap;
use crate::inventory::{Baseline, Page, Port};
use crate::policy::{Capabilities, Policy};

type Ports = Arc<dyn Fn(Duration) -> Vec<Port> + Send + Sync>;

/// Statuses and port listings as functions of the time since the start; every request
/// logged by action.
#[derive(Clone)]
struct Scripted {
    start: Instant,
    status: Arc<dyn Fn(Duration) -> &'static str + Send + Sync>,
    ports: Ports,
    log: Arc<Mutex<Vec<(Duration, &'static str)>>>,
}

impl Scripted {
    fn new(
        status: impl Fn(Duration) -> &'static str + Send + Sync + 'static,
        ports: impl Fn(Duration) -> Vec<Port> + Send + Sync + 'static,
    ) -> Self {
        Scripted {
            start: Instant::now(),
            status: Arc::new(status),
            ports: Arc::new(ports),
            log: Arc::default(),
        }
    }

    fn record(&self, action: &'static str) -> Duration {
        let at = Instant::now() - self.start;
        self.log.lock().unwrap().push((at, action));
        at
    }

    /// `DescribeOpenPorts` requests sent at or after `since`.
    fn port_requests_since(&self, since: Duration) -> usize {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(at, a)| *at >= since && *a == "ports")
            .count()
    }
}

impl Poller for Scripted {
    fn poll(&self, _uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let at = self.record("status");
        let status = (self.status)(at).to_owned();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(TaskStatus {
                status,
                request_id: "rs".into(),
            })
        }
    }

    fn describe_ports(
        &self,
        _uuid: &str,
        _limit: u32,
        offset: u32,
    ) -> impl Future<Output = Result<Page, ApiError>> + Send {
        let at = self.record("ports");
        let all = (self.ports)(at);
        let from = (offset as usize).min(all.len());
        let page = Page {
            total: all.len() as u64,
            rows: all[from..(from + 100).min(all.len())].to_vec(),
            ids: Vec::new(),
            machine_ip: "10.0.0.9".into(),
            machine_name: "db".into(),
            request_id: format!("rp{offset}"),
        };
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(page)
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
        intervals: crate::scheduler::Intervals {
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

fn policy(text: &str) -> Arc<Policy> {
    Arc::new(
        Policy::from_toml_str(
            text,
            std::path::Path::new("policy.toml"),
            Capabilities::YUNJING,
        )
        .expect("a valid policy"),
    )
}

/// Agents `a*`: ssh and nginx allowed, `443/nginx` required, findings critical.
const WEB: &str = r#"
[[rule]]
name = "web"
hosts = { names = ["a*"] }
allow = ["22/sshd", "443/nginx"]
require = ["443/nginx"]
severity = "critical"
"#;

/// A control message sent at a time of the run.
type Scheduled = (u64, Box<dyn FnOnce() -> Control + Send>);

struct Run {
    events: Vec<Event>,
    stored: InventoryMap,
    known: crate::tracker::KnownMap,
}

/// Runs one agent (or `n`) for `secs` of paused time under `policy`, sending `controls` at
/// their times.
async fn run(
    api: Scripted,
    n: usize,
    policy: Option<Arc<Policy>>,
    known: crate::tracker::KnownMap,
    stored: InventoryMap,
    controls: Vec<Scheduled>,
    secs: u64,
) -> Run {
    let sink = Arc::new(CollectingSink::default());
    let (tx, rx) = mpsc::unbounded_channel();
    let engine = Engine::new(api, sink.clone(), config(), &agents(n), known)
        .with_policy(policy, "prod")
        .with_inventory(options(), stored, None)
        .with_control(rx);
    tokio::spawn(async move {
        let start = Instant::now();
        for (at, control) in controls {
            tokio::time::sleep_until(start + Duration::from_secs(at)).await;
            let _ = tx.send(control());
        }
        // Keep the channel open until the run ends.
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(tx);
    });
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stopper.cancel();
    });
    let (engine, _) = engine.run(stop).await;
    Run {
        events: sink.events(),
        stored: engine.stored_inventory().cloned().unwrap_or_default(),
        known: engine.agents.known().map(|(u, k)| (u, k.clone())).collect(),
    }
}

/// Port and finding events as short strings.
fn names(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PortOpened {
                port, process_name, ..
            } => Some(format!("opened {port} {process_name}")),
            Event::PortClosed {
                port, process_name, ..
            } => Some(format!("closed {port} {process_name}")),
            Event::InventoryBaseline { ports, .. } => Some(format!("baseline {ports}")),
            Event::Finding(f) => {
                let what = match f.spec.as_deref() {
                    Some(spec) => spec.to_owned(),
                    None => format!("{} {}", f.port, f.process_name),
                };
                let head = match f.kind {
                    FindingKind::Unexpected => "unexpected".to_owned(),
                    FindingKind::Missing => "missing".to_owned(),
                    FindingKind::UnexpectedCleared(r) => {
                        format!("unexpected cleared {}", r.as_str())
                    }
                    FindingKind::MissingCleared(r) => format!("missing cleared {}", r.as_str()),
                };
                Some(format!(
                    "{head} {what} [{} {}]",
                    f.rule,
                    f.severity.as_str()
                ))
            }
            _ => None,
        })
        .collect()
}

fn findings_of(events: &[Event]) -> Vec<String> {
    names(events)
        .into_iter()
        .filter(|n| n.starts_with("unexpected") || n.starts_with("missing"))
        .collect()
}

/// COLLECTING → COMPLETE (22, 443, 6379) → COLLECTING → COMPLETE (22, 443, 8080).
fn timeline() -> Scripted {
    Scripted::new(
        |at| match at.as_secs() {
            0..5 => "COLLECTING",
            5..30 => "COMPLETE",
            30..45 => "COLLECTING",
            _ => "COMPLETE",
        },
        |at| {
            if at < Duration::from_secs(30) {
                vec![
                    port(22, "sshd"),
                    port(443, "nginx"),
                    port(6379, "redis-server"),
                ]
            } else {
                vec![port(22, "sshd"), port(443, "nginx"), port(8080, "java")]
            }
        },
    )
}

#[tokio::test(start_paused = true)]
async fn unexpected_at_baseline_opened_later_and_cleared_when_its_close_is_confirmed() {
    let r = run(
        timeline(),
        1,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        Vec::new(),
        70,
    )
    .await;
    assert_eq!(
        names(&r.events),
        [
            "baseline 3",
            "unexpected 6379 redis-server [web critical]",
            "opened 8080 java",
            "unexpected 8080 java [web critical]",
            // Only once the confirming fetch misses it too.
            "closed 6379 redis-server",
            "unexpected cleared closed 6379 redis-server [web critical]",
        ]
    );
    // The fields of the port event, plus rule and severity.
    let Some(Event::Finding(f)) = r.events.iter().find(|e| matches!(e, Event::Finding(_))) else {
        panic!("no finding");
    };
    assert_eq!(
        (
            f.uuid.as_str(),
            f.agent_name.as_str(),
            f.pid,
            f.machine_ip.as_str(),
            f.request_id.as_deref(),
        ),
        (
            "00000000-0000-4000-8000-000000000000",
            "a0",
            Some(7),
            "10.0.0.9",
            Some("rp0")
        )
    );
    assert_eq!(
        r.events
            .iter()
            .find(|e| matches!(e, Event::Finding(_)))
            .unwrap()
            .level(),
        tracing::Level::ERROR
    );
    // Stored beside the inventory: 8080 only.
    let stored = &r.stored["00000000-0000-4000-8000-000000000000"];
    assert_eq!(stored.findings.0.len(), 1, "{:?}", stored.findings);
}

#[tokio::test(start_paused = true)]
async fn a_required_port_missing_then_open_is_reported_and_cleared_once() {
    let api = Scripted::new(
        |at| match at.as_secs() {
            0..5 => "COLLECTING",
            5..30 => "COMPLETE",
            30..45 => "COLLECTING",
            _ => "COMPLETE",
        },
        |at| {
            if at < Duration::from_secs(30) {
                vec![port(22, "sshd")]
            } else {
                vec![port(22, "sshd"), port(443, "nginx")]
            }
        },
    );
    let r = run(
        api,
        1,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        Vec::new(),
        70,
    )
    .await;
    assert_eq!(
        names(&r.events),
        [
            "baseline 1",
            "missing 443/nginx [web critical]",
            "opened 443 nginx",
            "missing cleared opened 443/nginx [web critical]",
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_reload_that_allows_clears_and_one_that_tightens_raises_without_a_request() {
    let api = Scripted::new(
        |at| {
            if at < Duration::from_secs(5) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        },
        |_| {
            vec![
                port(22, "sshd"),
                port(443, "nginx"),
                port(6379, "redis-server"),
            ]
        },
    );
    let allows_redis = WEB.replacen(r#""443/nginx"]"#, r#""443/nginx", "6379/redis-*"]"#, 1);
    let tightened = r#"
[[rule]]
name = "web"
hosts = { names = ["a*"] }
allow = ["443/nginx", "6379/redis-*"]
severity = "warning"
"#;
    let (a, b) = (policy(&allows_redis), policy(tightened));
    let r = run(
        api.clone(),
        1,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        vec![
            (20, Box::new(move || Control::Policy(Some(a)))),
            (40, Box::new(move || Control::Policy(Some(b)))),
        ],
        60,
    )
    .await;
    assert_eq!(
        names(&r.events),
        [
            "baseline 3",
            "unexpected 6379 redis-server [web critical]",
            "unexpected cleared allowed 6379 redis-server [web critical]",
            "unexpected 22 sshd [web warning]",
        ]
    );
    // The reloads evaluated what was stored: the one fetch was the baseline's.
    assert_eq!(api.port_requests_since(Duration::ZERO), 1);
    let reloaded: Vec<_> = r
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Finding(f) => Some(f.request_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reloaded, [Some("rp0".to_owned()), None, None]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_repeats_no_finding_and_reports_what_a_policy_changed_meanwhile() {
    let r = run(
        timeline(),
        1,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        Vec::new(),
        20,
    )
    .await;
    assert_eq!(
        findings_of(&r.events),
        ["unexpected 6379 redis-server [web critical]"]
    );
    // Same policy, same ports: nothing.
    let steady = || {
        Scripted::new(
            |_| "COMPLETE",
            |_| {
                vec![
                    port(22, "sshd"),
                    port(443, "nginx"),
                    port(6379, "redis-server"),
                ]
            },
        )
    };
    let again = run(
        steady(),
        1,
        Some(policy(WEB)),
        r.known.clone(),
        r.stored.clone(),
        Vec::new(),
        30,
    )
    .await;
    assert_eq!(names(&again.events), Vec::<String>::new());
    assert_eq!(again.stored, r.stored);
    // The policy edited while the daemon was stopped: the differences at start, once.
    let allows_redis = WEB.replacen(r#""443/nginx"]"#, r#""443/nginx", "6379/redis-*"]"#, 1);
    let edited = run(
        steady(),
        1,
        Some(policy(&allows_redis)),
        r.known.clone(),
        r.stored.clone(),
        Vec::new(),
        30,
    )
    .await;
    assert_eq!(
        names(&edited.events),
        ["unexpected cleared allowed 6379 redis-server [web critical]"]
    );
    // No policy any more: what was raised is cleared (allowed), not left standing.
    let none = run(
        steady(),
        1,
        None,
        r.known.clone(),
        r.stored.clone(),
        Vec::new(),
        5,
    )
    .await;
    assert_eq!(
        names(&none.events),
        ["unexpected cleared allowed 6379 redis-server [web critical]"]
    );
}

#[tokio::test(start_paused = true)]
async fn agents_removed_or_forgotten_clear_their_findings() {
    let api = || {
        Scripted::new(
            |at| {
                if at < Duration::from_secs(5) {
                    "COLLECTING"
                } else {
                    "COMPLETE"
                }
            },
            |_| vec![port(22, "sshd"), port(6379, "redis-server")],
        )
    };
    // Taken out of the watchlist: cleared at once.
    let (reply, _) = tokio::sync::oneshot::channel();
    let r = run(
        api(),
        2,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        vec![(
            20,
            Box::new(move || Control::Reload {
                agents: agents(1),
                config: config(),
                removed: Removed::Forget,
                reply,
            }),
        )],
        30,
    )
    .await;
    let a1: Vec<String> = r
        .events
        .iter()
        .filter(|e| matches!(e, Event::Finding(f) if f.agent_name == "a1"))
        .flat_map(|e| names(std::slice::from_ref(e)))
        .collect();
    assert_eq!(
        a1,
        [
            "unexpected 6379 redis-server [web critical]",
            "missing 443/nginx [web critical]",
            "unexpected cleared removed 6379 redis-server [web critical]",
            "missing cleared removed 443/nginx [web critical]",
        ]
    );
    // Kept by discovery while its machine is away: its findings stay (it repeats none when
    // back); forgotten after `forget_after` (Control::Retain without it): cleared.
    for forget in [false, true] {
        let (reply, _) = tokio::sync::oneshot::channel();
        let mut controls: Vec<Scheduled> = vec![(
            20,
            Box::new(move || Control::Reload {
                agents: agents(1),
                config: config(),
                removed: Removed::Keep,
                reply,
            }),
        )];
        if forget {
            controls.push((
                25,
                Box::new(|| Control::Retain {
                    keep: Default::default(),
                }),
            ));
        }
        let r = run(
            api(),
            2,
            Some(policy(WEB)),
            HashMap::new(),
            InventoryMap::new(),
            controls,
            30,
        )
        .await;
        let cleared: Vec<String> = r
            .events
            .iter()
            .filter(|e| matches!(e, Event::Finding(f) if f.reason().is_some()))
            .flat_map(|e| names(std::slice::from_ref(e)))
            .collect();
        let expected: &[&str] = if forget {
            &[
                "unexpected cleared removed 6379 redis-server [web critical]",
                "missing cleared removed 443/nginx [web critical]",
            ]
        } else {
            &[]
        };
        assert_eq!(cleared, expected, "forget: {forget}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_kept_agent_renamed_by_a_reload_is_evaluated_under_its_new_name() {
    let api = Scripted::new(
        |at| {
            if at < Duration::from_secs(5) {
                "COLLECTING"
            } else {
                "COMPLETE"
            }
        },
        |_| {
            vec![
                port(22, "sshd"),
                port(443, "nginx"),
                port(6379, "redis-server"),
            ]
        },
    );
    let (reply, _) = tokio::sync::oneshot::channel();
    let renamed = {
        let mut a = agents(1);
        a[0].name = Some("db0".into());
        a
    };
    let r = run(
        api.clone(),
        1,
        Some(policy(WEB)),
        HashMap::new(),
        InventoryMap::new(),
        vec![(
            20,
            Box::new(move || Control::Reload {
                agents: renamed,
                config: config(),
                removed: Removed::Forget,
                reply,
            }),
        )],
        30,
    )
    .await;
    // `web` selects `a*` only: renamed db0, the host no rule selects follows `default`
    // (allow), so its findings clear (allowed: redis still open; nginx no longer required).
    assert_eq!(
        names(&r.events),
        [
            "baseline 3",
            "unexpected 6379 redis-server [web critical]",
            "unexpected cleared allowed 6379 redis-server [web critical]",
        ]
    );
    assert_eq!(api.port_requests_since(Duration::from_secs(10)), 0);
}
