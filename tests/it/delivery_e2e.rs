//! Issue 23 end to end: the real daemon (`run --config …`, a real process against the
//! simulator) delivering what it logs through `[[sink]]` blocks to real receivers:
//! - a `webhook` receiver (hyper on 127.0.0.1:0) gets every policy finding and clear the JSON
//!   log shows, once each, with the log line's fields and the message id;
//! - `kill -9` at random moments (and while the receiver stalls, a message in flight), restarts
//!   on the same `state_dir`: every event any run logged arrives at least once, a repeated id
//!   always carries the same document, and each restart repeats at most the message in flight;
//! - a real Alertmanager shows the finding as an alert with the spec's labels, resolved by
//!   its clear, and `/metrics` counts the deliveries;
//! - DingTalk (signature verified by the receiver; a wrong secret refused with 310000 and
//!   retried), WeCom (45009, then taken) and Slack (429 with `Retry-After`, then `ok`), their
//!   keys in `url_file` / `secret_file`, none of them in the daemon's output at debug level.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use cwp_portwatch::delivery::MESSAGE_ID_HEADER;
use cwp_simulator::OpenPortSpec;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::alertmanager::RealAlertmanager;
use crate::support::app::{App, Running, daemon_config};
use crate::support::*;

/// Generous bound of every wait: the machine may be busy with other tests.
const WAIT: Duration = Duration::from_secs(60);

/// Web hosts: ssh and nginx allowed, nginx required, critical.
const WEB: &str = "[[rule]]\nname = \"web tier\"\nhosts = { names = [\"web-*\"] }\n\
                   allow = [\"22/sshd\", \"443/nginx\"]\nrequire = [\"443/nginx\"]\n\
                   severity = \"critical\"\n";

/// [`WEB`] allowing redis and requiring nothing: a reload clears both of web-0's findings.
const WEB_RELAXED: &str = "[[rule]]\nname = \"web tier\"\nhosts = { names = [\"web-*\"] }\n\
                           allow = [\"22/sshd\", \"443/nginx\", \"6379/redis-*\"]\n\
                           severity = \"critical\"\n";

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: String,
}

impl Reply {
    fn new(status: u16, body: &str) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.to_owned(),
        }
    }
}

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
struct Seen {
    at: Instant,
    /// Path and query, as sent.
    target: String,
    /// The message id header.
    id: Option<String>,
    body: Vec<u8>,
    /// The status answered; `None` while stalled (never answered).
    answered: Option<u16>,
    /// The body answered.
    reply: Option<String>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

type Respond = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A receiver on 127.0.0.1:0 recording every request; the n-th (from 0) gets
/// `respond(seen, n)`, unless [`Receiver::stall`] is on: then it is never answered.
struct Receiver {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    stalling: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    async fn start(respond: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Receiver {
        let respond: Arc<Respond> = Arc::new(respond);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stalling = Arc::new(AtomicBool::new(false));
        let (log, stall) = (seen.clone(), stalling.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (respond, log, stall) = (respond.clone(), log.clone(), stall.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (respond, log, stall) = (respond.clone(), log.clone(), stall.clone());
                        async move {
                            let at = Instant::now();
                            let target = req
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_owned())
                                .unwrap_or_default();
                            let id = req
                                .headers()
                                .get(MESSAGE_ID_HEADER)
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_owned);
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map_err(std::io::Error::other)?
                                .to_bytes()
                                .to_vec();
                            let mut seen = Seen {
                                at,
                                target,
                                id,
                                body,
                                answered: None,
                                reply: None,
                            };
                            let stalled = stall.load(Ordering::SeqCst);
                            let n = log.lock().unwrap().len();
                            let reply = (!stalled).then(|| respond(&seen, n));
                            seen.answered = reply.as_ref().map(|r| r.status);
                            seen.reply = reply.as_ref().map(|r| r.body.clone());
                            log.lock().unwrap().push(seen);
                            let Some(reply) = reply else {
                                std::future::pending::<()>().await;
                                unreachable!()
                            };
                            let mut answer = Response::new(Full::new(Bytes::from(reply.body)));
                            *answer.status_mut() = reply.status.try_into().unwrap();
                            for (name, value) in reply.headers {
                                answer.headers_mut().insert(name, value.parse().unwrap());
                            }
                            Ok::<_, std::io::Error>(answer)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver {
            addr,
            seen,
            stalling,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// From now on, requests are never answered (`true`) or answered again (`false`).
    fn stall(&self, on: bool) {
        self.stalling.store(on, Ordering::SeqCst);
    }

    /// Waits (up to [`WAIT`]) until `holds` over what arrived.
    async fn wait_until(&self, what: &str, holds: impl Fn(&[Seen]) -> bool) -> Vec<Seen> {
        self.wait_within(what, WAIT, holds).await
    }

    /// Waits (up to `within`) until `holds` over what arrived.
    async fn wait_within(
        &self,
        what: &str,
        within: Duration,
        holds: impl Fn(&[Seen]) -> bool,
    ) -> Vec<Seen> {
        let until = Instant::now() + within;
        loop {
            let seen = self.seen();
            if holds(&seen) {
                return seen;
            }
            assert!(
                Instant::now() < until,
                "no {what} within {within:?}; arrived: {:#?}",
                seen.iter()
                    .map(|s| (s.id.clone(), String::from_utf8_lossy(&s.body).into_owned()))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn spec(port: u16, process: &str, pid: u32) -> OpenPortSpec {
    OpenPortSpec {
        port,
        process: process.into(),
        pid,
    }
}

/// The finding events (`port_unexpected*`, `port_missing*`) of a log.
fn findings(events: &[Value]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("port_unexpected") || n.starts_with("port_missing"))
        })
        .cloned()
        .collect()
}

/// Two web agents: web-0 with redis open and nginx missing (two findings under [`WEB`]),
/// web-1 as the policy wants. The app's config has `[inventory]`, `[policy]` and `extra`
/// (the sinks) after [`daemon_config`] with the log at `level`.
async fn web_app(extra: &str, level: &str) -> (cwp_simulator::RunningSimulator, App) {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    sim.set_ports(
        &uuid(0),
        vec![spec(22, "sshd", 812), spec(6379, "redis-server", 4242)],
    );
    sim.set_ports(
        &uuid(1),
        vec![spec(22, "sshd", 813), spec(443, "nginx", 90)],
    );
    let app = App::for_simulator(
        &sim.endpoint(),
        &[(uuid(0), "web-0".into()), (uuid(1), "web-1".into())],
    );
    let config = daemon_config(&sim.endpoint())
        .replace("level = \"info\"\n", &format!("level = \"{level}\"\n"));
    app.write(
        "config.toml",
        format!("{config}[inventory]\nenabled = true\n[policy]\nfile = \"policy.toml\"\n{extra}"),
    );
    app.write("policy.toml", WEB);
    (sim, app)
}

/// Waits until the log shows `n` findings.
async fn wait_findings(daemon: &mut Running, what: &str, n: usize) {
    daemon
        .wait_for(what, WAIT, |events| findings(events).len() >= n)
        .await;
}

/// SIGHUP with `policy` in place, then waits for `n` findings in all.
async fn reload_policy(app: &App, daemon: &mut Running, policy: &str, n: usize) {
    app.write("policy.toml", policy);
    daemon.signal(libc::SIGHUP);
    wait_findings(daemon, "the reload's clears", n).await;
}

/// Keys of a JSON log line that are the log's, not the event's.
const LOG_ONLY: [&str; 4] = ["timestamp", "level", "message_id", "target"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_sends_a_webhook_every_finding_and_clear_it_logs_once_with_its_fields() {
    let hook = Receiver::start(|_, _| Reply::new(200, "{}")).await;
    let sink = format!(
        "[[sink]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url("/hook")
    );
    let (sim, app) = web_app(&sink, "info").await;
    let mut daemon = app.daemon(&[]);
    wait_findings(&mut daemon, "the baseline's findings", 2).await;
    reload_policy(&app, &mut daemon, WEB_RELAXED, 4).await;
    hook.wait_until("four documents", |s| s.len() >= 4).await;
    let finished = daemon.stop().await;
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    sim.shutdown().await;

    let logged = findings(&finished.events);
    let mut names: Vec<&str> = logged
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "port_missing",
            "port_missing_cleared",
            "port_unexpected",
            "port_unexpected_cleared"
        ],
        "{}",
        finished.stderr
    );
    let seen = hook.seen();
    assert_eq!(
        seen.len(),
        4,
        "each once, nothing after a clean stop: {seen:#?}"
    );
    let docs: Vec<Value> = seen.iter().map(Seen::json).collect();
    let mut ids = BTreeSet::new();
    for (arrival, doc) in seen.iter().zip(&docs) {
        let id = arrival.id.as_deref().expect("the message id header");
        assert_eq!(doc["delivery_id"], id, "the body's id is the header's");
        assert!(ids.insert(id.to_owned()), "id {id} twice");
        let n = id.strip_prefix("hook-").unwrap();
        let (first, last) = n.split_once('-').unwrap();
        assert_eq!(first, last, "one event per document: {id}");
        // A timestamp the log's format writes, this very run.
        let at = time::OffsetDateTime::parse(
            doc["timestamp"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let age = time::OffsetDateTime::now_utc() - at;
        assert!(age.whole_seconds().abs() < 600, "{doc}");
    }
    for line in &logged {
        let same: Vec<&Value> = docs
            .iter()
            .filter(|d| {
                ["event", "uuid", "port", "process_name", "rule"]
                    .iter()
                    .all(|k| d[k] == line[k])
            })
            .collect();
        assert_eq!(same.len(), 1, "{line} → {docs:#?}");
        let doc = same[0].as_object().unwrap();
        // Every field of the log line is in the document, with its value …
        for (k, v) in line.as_object().unwrap() {
            if LOG_ONLY.contains(&k.as_str()) {
                continue;
            }
            assert_eq!(doc.get(k), Some(v), "{k} of {line} in {doc:?}");
        }
        // … and the document adds only its id and time.
        for (k, v) in doc {
            if k == "delivery_id" || k == "timestamp" {
                continue;
            }
            assert_eq!(line.get(k), Some(v), "{k} of {doc:?} in {line}");
        }
    }
    // Delivered and acknowledged: the outbox on disk is empty.
    let outbox: Value = serde_json::from_str(
        &std::fs::read_to_string(app.path().join("state/outbox-hook.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        outbox["records"].as_array().map(Vec::len),
        Some(0),
        "{outbox}"
    );
}

/// A `status_changed` as (uuid, from, to): what identifies one in the crash test, where each
/// agent makes each change at most once.
fn change(v: &Value) -> Option<(String, String, String)> {
    (v["event"] == "status_changed").then(|| {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
        (s("uuid"), s("from_status"), s("to_status"))
    })
}

/// A small deterministic generator (xorshift64*): random delays a failing seed can replay.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_loses_no_logged_event_and_repeats_only_the_message_in_flight() {
    // 20 agents, each COMPLETE from the start and AGENT_OFFLINE from its own second (3 s,
    // 4 s, …): each makes each change once, so a change is identified by (uuid, from, to)
    // and one lost is not hidden by a later one. A status never reverts: a change logged
    // but not yet on disk when the process dies is found again by the next run.
    const N: usize = 20;
    let mut text = String::new();
    for i in 0..N {
        text.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"COMPLETE\" }}, \
             {{ at = \"{}ms\", status = \"AGENT_OFFLINE\" }}]\n",
            uuid(i),
            3000 + i * 1000
        ));
    }
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut rng = seed;
    let sim = start_scenario(&text).await;
    let app = App::for_simulator(&sim.endpoint(), &crate::support::app::agents(0..N, "web"));
    let hook = Receiver::start(|_, _| Reply::new(200, "{}")).await;
    app.write(
        "config.toml",
        format!(
            "{}[[sink]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{}\"\n\
             events = [\"status_changed\"]\nmin_severity = \"info\"\n",
            daemon_config(&sim.endpoint()),
            hook.url("/hook")
        ),
    );
    let mut logs: Vec<Value> = Vec::new();
    let mut kills = 0;
    let mut daemon = app.daemon(&[]);
    // The first statuses saved: from here every agent is known across a kill.
    let state = app.state();
    let until = Instant::now() + WAIT;
    while state.load().map_or(0, |s| s.len()) < N {
        assert!(
            Instant::now() < until,
            "seed {seed}: no state of {N} agents"
        );
        assert!(
            daemon.exited().is_none(),
            "seed {seed}: {:?}",
            daemon.lines()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for round in 0..5 {
        let stalled = if round % 2 == 1 {
            // A message in flight when the process dies: the receiver holds it unanswered.
            let before = hook.seen().len();
            hook.stall(true);
            let seen = hook
                .wait_until("a message held in flight", |s| {
                    s[before..].iter().any(|s| s.answered.is_none())
                })
                .await;
            seen[before..]
                .iter()
                .find(|s| s.answered.is_none())
                .and_then(|s| s.id.clone())
        } else {
            tokio::time::sleep(Duration::from_millis(200 + next(&mut rng) % 2300)).await;
            None
        };
        daemon.signal(libc::SIGKILL);
        kills += 1;
        let killed = daemon.finish(WAIT).await;
        assert!(
            killed.status.is_some_and(|s| s.code().is_none()),
            "seed {seed}: round {round}: not killed: {}",
            killed.stderr
        );
        logs.extend(killed.events);
        let before = hook.seen().len();
        hook.stall(false);
        daemon = app.daemon(&[]);
        if let Some(id) = stalled {
            let seen = hook
                .wait_until("the message in flight again", |s| s.len() > before)
                .await;
            assert_eq!(
                seen[before].id.as_deref(),
                Some(id.as_str()),
                "seed {seed}: round {round}: the restart's first message is the one in flight"
            );
        }
    }
    // The last run sees every agent go offline and delivers everything any run logged.
    let changes_in = |lines: &[Value]| -> BTreeSet<(String, String, String)> {
        lines.iter().filter_map(change).collect()
    };
    let delivered = |seen: &[Seen]| -> BTreeSet<(String, String, String)> {
        seen.iter().filter_map(|s| change(&s.json())).collect()
    };
    let until = Instant::now() + WAIT;
    loop {
        let mut logged = changes_in(&logs);
        logged.extend(changes_in(&daemon.named("status_changed")));
        let offline = logged.iter().filter(|c| c.2 == "AGENT_OFFLINE").count();
        let outbox = std::fs::read_to_string(app.path().join("state/outbox-hook.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());
        let drained = outbox.is_some_and(|o| {
            o["records"].as_array().is_some_and(Vec::is_empty) && o["in_flight"].is_null()
        });
        if offline == N && drained && delivered(&hook.seen()).is_superset(&logged) {
            break;
        }
        assert!(
            Instant::now() < until && daemon.exited().is_none(),
            "seed {seed}: {offline} of {N} agents offline, drained {drained}, not delivered: \
             {:?}\n{}",
            logged
                .difference(&delivered(&hook.seen()))
                .collect::<Vec<_>>(),
            daemon.lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let finished = daemon.stop().await;
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    logs.extend(finished.events);
    sim.shutdown().await;

    let seen = hook.seen();
    // Same id, same document: a repeat is the same message.
    let mut by_id: BTreeMap<String, Vec<&Seen>> = BTreeMap::new();
    for s in &seen {
        let id = s.id.clone().expect("every message has its id");
        assert_eq!(s.json()["delivery_id"], id.as_str());
        by_id.entry(id).or_default().push(s);
    }
    for (id, arrivals) in &by_id {
        assert!(
            arrivals.iter().all(|a| a.body == arrivals[0].body),
            "seed {seed}: {id} with different documents"
        );
    }
    // A message taken (answered 200) and sent again: only the one in flight at a kill.
    let repeated: Vec<&String> = by_id
        .iter()
        .filter(|(_, a)| a.len() > 1 && a[..a.len() - 1].iter().any(|a| a.answered == Some(200)))
        .map(|(id, _)| id)
        .collect();
    assert!(
        repeated.len() <= kills,
        "seed {seed}: {} ids repeated after being taken in {kills} kills: {repeated:?}",
        repeated.len()
    );
    // Every change any run logged arrived; a change under two ids only if it was logged twice
    // (the run that logged it first died before saving the state that says so).
    let mut ids_of: BTreeMap<(String, String, String), BTreeSet<&String>> = BTreeMap::new();
    for (id, arrivals) in &by_id {
        let c = change(&arrivals[0].json()).expect("only status changes are sent");
        ids_of.entry(c).or_default().insert(id);
    }
    let mut times_logged: BTreeMap<(String, String, String), usize> = BTreeMap::new();
    for c in logs.iter().filter_map(change) {
        *times_logged.entry(c).or_default() += 1;
    }
    for (c, n) in &times_logged {
        let ids = ids_of.get(c).map_or(0, BTreeSet::len);
        assert!(
            ids >= 1,
            "seed {seed}: {c:?} logged {n} times, never delivered"
        );
        assert!(
            ids <= *n,
            "seed {seed}: {c:?} logged {n} times, sent under {ids} ids: {:?}",
            ids_of[c]
        );
    }
    assert_eq!(
        times_logged
            .keys()
            .filter(|c| c.2 == "AGENT_OFFLINE")
            .count(),
        N,
        "seed {seed}"
    );
    eprintln!(
        "seed {seed}: {} arrivals, {} ids, {} changes logged ({} lines), {} taken twice",
        seen.len(),
        by_id.len(),
        times_logged.len(),
        times_logged.values().sum::<usize>(),
        repeated.len()
    );
}

/// A loopback port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The value of `series` (the whole name with labels) in a scrape of `addr`, if present.
async fn scraped(addr: &str, series: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Waits until the series scraped from `addr` holds `holds`; its value.
async fn wait_series(addr: &str, series: &str, holds: impl Fn(f64) -> bool) -> f64 {
    let until = Instant::now() + WAIT;
    loop {
        let value = scraped(addr, series).await;
        if let Some(v) = value.filter(|v| holds(*v)) {
            return v;
        }
        assert!(
            Instant::now() < until,
            "{series} is {value:?} after {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn labels(alert: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(alert["labels"].clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_fires_an_alert_in_a_real_alertmanager_its_clear_resolves_it_metrics_count() {
    let am = RealAlertmanager::start().await;
    let addr = format!("127.0.0.1:{}", free_port());
    let extra = format!(
        "[metrics]\nlisten = \"{addr}\"\n[[sink]]\nname = \"oncall\"\nkind = \"alertmanager\"\n\
         url = \"{}\"\n",
        am.url()
    );
    let (sim, app) = web_app(&extra, "info").await;
    let mut daemon = app.daemon(&[]);
    wait_findings(&mut daemon, "the baseline's findings", 2).await;
    let want: BTreeMap<String, String> = [
        ("alertname", "CwpPortUnexpected"),
        ("account", "default"),
        ("agent", "web-0"),
        ("uuid", uuid(0).as_str()),
        ("port", "6379"),
        ("process", "redis-server"),
        ("severity", "critical"),
        ("rule", "web tier"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let alerts = am
        .wait_for("both findings firing", |a| {
            a.iter()
                .any(|a| labels(a) == want && a["status"]["state"] == "active")
                && a.iter().any(|a| labels(a)["alertname"] == "CwpPortMissing")
        })
        .await;
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    let missing = alerts
        .iter()
        .map(labels)
        .find(|l| l["alertname"] == "CwpPortMissing")
        .unwrap();
    assert_eq!(missing["process"], "nginx", "{missing:?}");
    assert_eq!(missing["port"], "443", "{missing:?}");
    let unexpected = alerts.iter().find(|a| labels(a) == want).unwrap();
    assert!(
        unexpected["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("6379")),
        "{unexpected:#}"
    );
    let ok = "cwp_portwatch_deliveries_total{sink=\"oncall\",outcome=\"ok\"}";
    let pending = "cwp_portwatch_outbox_events{sink=\"oncall\"}";
    let first = wait_series(&addr, ok, |v| v >= 1.0).await;
    wait_series(&addr, pending, |v| v == 0.0).await;

    reload_policy(&app, &mut daemon, WEB_RELAXED, 4).await;
    am.wait_for(
        "both resolved (gone from the alerts that have not ended)",
        |a| a.is_empty(),
    )
    .await;
    wait_series(&addr, ok, |v| v > first).await;
    wait_series(&addr, pending, |v| v == 0.0).await;
    let failed = "cwp_portwatch_deliveries_total{sink=\"oncall\",outcome=\"failed\"}";
    assert_eq!(scraped(&addr, failed).await, Some(0.0));
    let finished = daemon.stop().await;
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    assert!(
        finished.named("delivery_failed").is_empty(),
        "{}",
        finished.stderr
    );
    sim.shutdown().await;
}

/// DingTalk's check of a signed request: the token, a timestamp within an hour of now and
/// `sign = urlencode(base64(HMAC-SHA256(secret, timestamp + "\n" + secret)))`. `Err`: why
/// not. The query is decoded as a form (`+` is a space), so an unencoded sign fails too.
fn dingtalk_check(seen: &Seen, token: &str, secret: &str) -> Result<(), String> {
    let url = url::Url::parse(&format!("http://receiver{}", seen.target)).unwrap();
    let query: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
    if query.get("access_token").map(String::as_str) != Some(token) {
        return Err("token".into());
    }
    let ts: i64 = query
        .get("timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or("no timestamp")?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    if (now - ts).abs() > 3_600_000 {
        return Err(format!("timestamp {ts} is more than an hour from {now}"));
    }
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}\n{secret}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    if query.get("sign") != Some(&expected) {
        return Err("sign not match".into());
    }
    let body = seen.json();
    if body["msgtype"] != "markdown" || !body["markdown"]["text"].is_string() {
        return Err(format!("not a markdown message: {body}"));
    }
    Ok(())
}

/// Writes `value` to `name` in the app's folder, private (as `url_file` requires).
fn secret_file(app: &App, name: &str, value: &str) {
    use std::os::unix::fs::PermissionsExt;
    let path = app.write(name, value);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn robots_through_the_daemon_sign_retry_and_never_show_their_keys_at_debug_level() {
    const TOKEN: &str = "dtk0a1b2c3d4e5f60718293a4b5c6d7e8f9";
    const OTHER_TOKEN: &str = "dtkffeeddccbbaa99887766554433221100";
    const SECRET: &str = "SECgood7f3e9a1c5b2d8e4f6a0b3c7d9e1f5a2b4c6d8e0f";
    const WRONG: &str = "SECwrong1234567890abcdef1234567890abcdef1234567";
    const WECOM_KEY: &str = "wk-5c1e9a2f-3b7d-4e8a-9f60-1d2c3b4a5e6f";
    const SLACK_PATH: &str = "T00000000/B00000000/XxSlackHookSecretXx";
    // DingTalk: the robot knows one secret; requests signed otherwise get 310000.
    let ding = Receiver::start(|seen, _| match dingtalk_check(seen, TOKEN, SECRET) {
        Ok(()) => Reply::new(200, r#"{"errcode":0,"errmsg":"ok"}"#),
        Err(_) if dingtalk_check(seen, OTHER_TOKEN, SECRET).is_ok() => {
            Reply::new(200, r#"{"errcode":0,"errmsg":"ok"}"#)
        }
        Err(why) => Reply::new(200, &format!(r#"{{"errcode":310000,"errmsg":"{why}"}}"#)),
    })
    .await;
    let wecom = Receiver::start(|_, n| match n {
        0 => Reply::new(200, r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#),
        _ => Reply::new(200, r#"{"errcode":0,"errmsg":"ok"}"#),
    })
    .await;
    let slack = Receiver::start(|_, n| match n {
        0 => Reply {
            status: 429,
            headers: vec![("retry-after", "2".into())],
            body: "rate_limited".into(),
        },
        _ => Reply::new(200, "ok"),
    })
    .await;
    let mut extra = String::new();
    for (name, kind, secret) in [
        ("ding", "dingtalk", Some("ding_secret")),
        ("dingbad", "dingtalk", Some("dingbad_secret")),
        ("wecom", "wecom", None),
        ("slack", "slack", None),
    ] {
        extra.push_str(&format!(
            "[[sink]]\nname = \"{name}\"\nkind = \"{kind}\"\nurl_file = \"{name}_url\"\n"
        ));
        if let Some(file) = secret {
            extra.push_str(&format!("secret_file = \"{file}\"\n"));
        }
    }
    let (sim, app) = web_app(&extra, "debug").await;
    secret_file(
        &app,
        "ding_url",
        &ding.url(&format!("/robot/send?access_token={TOKEN}")),
    );
    secret_file(
        &app,
        "dingbad_url",
        &ding.url(&format!("/robot/send?access_token={OTHER_TOKEN}")),
    );
    secret_file(&app, "ding_secret", SECRET);
    secret_file(&app, "dingbad_secret", WRONG);
    secret_file(
        &app,
        "wecom_url",
        &wecom.url(&format!("/cgi-bin/webhook/send?key={WECOM_KEY}")),
    );
    secret_file(
        &app,
        "slack_url",
        &slack.url(&format!("/services/{SLACK_PATH}")),
    );
    let mut daemon = app.daemon(&[]);
    wait_findings(&mut daemon, "the baseline's findings", 2).await;

    // DingTalk: the good robot takes the findings, signed; the wrong secret is refused and
    // retried (the same message), and the log says why.
    let taken = |s: &Seen| s.reply.as_deref() == Some(r#"{"errcode":0,"errmsg":"ok"}"#);
    let from = |token: &str, s: &Seen| s.target.contains(token);
    ding.wait_until("the findings at DingTalk and two refusals", |seen| {
        let good: String = seen
            .iter()
            .filter(|s| from(TOKEN, s) && taken(s))
            .map(|s| {
                s.json()["markdown"]["text"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .collect();
        let refused = seen.iter().filter(|s| from(OTHER_TOKEN, s)).count();
        good.contains("redis-server") && good.contains("443/nginx") && refused >= 2
    })
    .await;
    daemon
        .wait_for_lines("the refusal in the log", WAIT, |lines| {
            lines
                .iter()
                .any(|l| l.contains("sink dingbad") && l.contains("310000"))
        })
        .await;
    // WeCom: 45009 waits a minute (its window), then the same message is taken.
    let seen = wecom
        .wait_within("WeCom's second try", Duration::from_secs(150), |s| {
            s.len() >= 2
        })
        .await;
    assert_eq!(seen[0].id, seen[1].id, "the same message again");
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_secs(60),
        "45009 waits its minute: {gap:?}"
    );
    // Slack: the 429's Retry-After is honoured, then `ok`.
    let seen = slack
        .wait_until("Slack's second try", |s| s.len() >= 2)
        .await;
    assert_eq!(seen[0].id, seen[1].id, "the same message again");
    let gap = seen[1].at - seen[0].at;
    assert!(
        gap >= Duration::from_secs(2),
        "Retry-After: 2 honoured: {gap:?}"
    );
    slack
        .wait_until("the findings at Slack", |s| {
            let text: String = s
                .iter()
                .filter(|s| s.answered == Some(200))
                .map(|s| String::from_utf8_lossy(&s.body).into_owned())
                .collect();
            text.contains("redis-server") && text.contains("443/nginx")
        })
        .await;
    let finished = daemon.stop().await;
    assert_eq!(finished.code(), Some(0), "{}", finished.stderr);
    sim.shutdown().await;

    let ding_seen = ding.seen();
    for s in ding_seen.iter().filter(|s| from(TOKEN, s)) {
        assert_eq!(dingtalk_check(s, TOKEN, SECRET), Ok(()), "{}", s.target);
    }
    let refused: Vec<&Seen> = ding_seen.iter().filter(|s| from(OTHER_TOKEN, s)).collect();
    assert!(
        refused.iter().all(|s| !taken(s)),
        "a wrong secret is never taken"
    );
    assert!(
        refused.iter().all(|s| s.id == refused[0].id),
        "the refused message is retried as it was"
    );
    for l in finished.stderr.lines() {
        if l.contains("sink wecom") && l.contains("not delivered") {
            assert!(l.contains("45009"), "{l}");
        }
    }
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.contains("sink slack") && l.contains("429")),
        "{}",
        finished.stderr
    );
    assert!(
        finished
            .stderr
            .lines()
            .any(|l| l.contains("\"level\":\"debug\"") || l.contains("\"level\":\"DEBUG\"")),
        "debug lines are written"
    );
    // No key, token or secret anywhere in what the daemon printed.
    for secret in [
        TOKEN,
        OTHER_TOKEN,
        SECRET,
        WRONG,
        WECOM_KEY,
        SLACK_PATH,
        "XxSlackHookSecretXx",
    ] {
        for (stream, text) in [("stdout", &finished.stdout), ("stderr", &finished.stderr)] {
            assert!(!text.contains(secret), "{secret} in {stream}:\n{text}");
        }
    }
}
