//! High availability end to end (issue 25, `docs/ha.md`; feature `ha`): a real etcd on
//! loopback ([`TestEtcd`]), the simulator in-process, two real daemon processes `a` and `b`
//! of one election with `lease_ttl = 3s`, each reaching the API through its own small TCP
//! proxy ([`Proxy`]) that timestamps every chunk it forwards toward the API, so what each
//! process sent, and when, is known apart from what the process says of itself. The faults:
//! `kill -9` of the leader, `SIGSTOP` longer than the TTL then `SIGCONT`, etcd stopped for
//! less and for more than the TTL, and a partition between the leader and etcd (its etcd
//! traffic through a proxy that stops forwarding).
//!
//! Every test checks the quota the fencing protects: no action of the account sees more than
//! 20 requests in any 1-second window (the simulator's per-SecretId count) and none is
//! throttled. Measured times are printed; the only timing bound is the spec's: a takeover
//! within `lease_ttl` + 2 s.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::support::app::{App, NotifySocket, Running, agents, daemon_config};
use crate::support::*;
use crate::test_etcd::TestEtcd;

/// Generous: a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);
/// The lease TTL of every test (the least `[ha]` allows).
const TTL: Duration = Duration::from_secs(3);
/// The spec's bound on a takeover after the leader died.
const TAKEOVER: Duration = Duration::from_secs(5);
/// Agents: at the 300 ms poll interval of the test config they use about 13 requests/s, so
/// two processes polling at once would exceed 20 in a second (and be throttled).
const AGENTS: usize = 4;
/// The simulator's (and Tencent's) limit per action and account.
const QUOTA: u32 = 20;

// ---- A TCP proxy that timestamps what it forwards and can stop forwarding. ----

/// Forwards to `target`; while "cut", neither reads nor writes (data waits, as in a
/// partition that later heals) and new connections are held unconnected.
struct Proxy {
    addr: SocketAddr,
    cut: watch::Sender<bool>,
    /// When each chunk toward `target` was forwarded.
    upstream: Arc<Mutex<Vec<Instant>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cut_rx) = watch::channel(false);
        let upstream = Arc::new(Mutex::new(Vec::new()));
        let chunks = upstream.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let mut rx = cut_rx.clone();
                let chunks = chunks.clone();
                tokio::spawn(async move {
                    flowing(&mut rx).await;
                    let Ok(server) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, rx.clone(), Some(chunks)));
                    tokio::spawn(pump(sr, cw, rx, None));
                });
            }
        });
        Proxy {
            addr,
            cut,
            upstream,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.cut.send_replace(true);
    }

    fn heal(&self) {
        self.cut.send_replace(false);
    }

    /// Chunks forwarded toward the target after `since`.
    fn sent_after(&self, since: Instant) -> usize {
        let chunks = self.upstream.lock().unwrap();
        chunks.iter().filter(|t| **t > since).count()
    }

    fn sent(&self) -> usize {
        self.upstream.lock().unwrap().len()
    }

    /// Waits until `more` chunks went toward the target after now.
    async fn wait_for_sends(&self, more: usize, what: &str) {
        let from = Instant::now();
        let deadline = from + WAIT;
        while self.sent_after(from) < more {
            assert!(Instant::now() < deadline, "no {more} requests: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Waits while the proxy is cut.
async fn flowing(rx: &mut watch::Receiver<bool>) {
    while *rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut rx: watch::Receiver<bool>,
    record: Option<Arc<Mutex<Vec<Instant>>>>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        flowing(&mut rx).await;
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        flowing(&mut rx).await;
        if let Some(record) = &record {
            record.lock().unwrap().push(Instant::now());
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

// ---- The two processes. ----

/// One candidate: its folder, its API proxy, its metrics address, its process.
struct Node {
    name: &'static str,
    app: App,
    api: Proxy,
    metrics: String,
    process: Option<Running>,
}

impl Node {
    /// A daemon of `election` reaching etcd at `etcd` and the simulator through its own proxy.
    async fn new(
        name: &'static str,
        sim: &cwp_simulator::RunningSimulator,
        etcd: &str,
        election: &str,
    ) -> Node {
        let target: SocketAddr = sim
            .endpoint()
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap();
        let api = Proxy::start(target).await;
        let app = App::for_simulator(&api.url(), &agents(0..AGENTS, "web"));
        let metrics = format!("127.0.0.1:{}", free_port());
        app.write(
            "config.toml",
            format!(
                "{}[metrics]\nlisten = \"{metrics}\"\n[ha]\netcd = [\"{etcd}\"]\n\
                 election = \"{election}\"\nlease_ttl = \"3s\"\nname = \"{name}\"\n",
                daemon_config(&api.url())
            ),
        );
        Node {
            name,
            app,
            api,
            metrics,
            process: None,
        }
    }

    fn start(&mut self, envs: &[(&str, &str)]) {
        self.process = Some(self.app.daemon(envs));
    }

    fn process(&mut self) -> &mut Running {
        self.process.as_mut().expect("started")
    }

    /// Waits for `leader_elected` (this node's), returns when it was seen.
    async fn elected(&mut self) -> Instant {
        let name = self.name;
        self.process()
            .wait_for(&format!("leader_elected of {name}"), WAIT, |e| {
                e.iter()
                    .any(|v| v["event"] == "leader_elected" && v["name"] == name)
            })
            .await;
        Instant::now()
    }

    /// Waits for a log line whose message contains `text`, beyond those already there;
    /// returns when it was seen.
    async fn said(&mut self, text: &str) -> Instant {
        let says = |e: &[Value]| {
            e.iter()
                .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
                .count()
        };
        let before = {
            let lines = self.process().lines();
            lines.iter().filter(|l| l.contains(text)).count()
        };
        self.process()
            .wait_for(&format!("`{text}`"), WAIT, |e| says(e) > before)
            .await;
        Instant::now()
    }

    /// Waits for a log line whose message contains `text`, including those already there.
    async fn has_said(&mut self, text: &str) {
        self.process()
            .wait_for(&format!("`{text}`"), WAIT, |e| {
                e.iter()
                    .any(|v| v["message"].as_str().is_some_and(|m| m.contains(text)))
            })
            .await;
    }

    fn events(&self, event: &str) -> Vec<Value> {
        self.process.as_ref().expect("started").named(event)
    }

    /// `cwp_portwatch_leader` as scraped now.
    async fn leader_gauge(&self) -> Option<f64> {
        let text = http_get(&self.metrics, "/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix("cwp_portwatch_leader "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Waits until the gauge says `value`.
    async fn gauge_is(&self, value: f64) {
        let deadline = Instant::now() + WAIT;
        loop {
            if self.leader_gauge().await == Some(value) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{}: cwp_portwatch_leader never {value}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The body of `GET path` from `addr`, `None` when nothing answers.
async fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut answer))
        .await
        .ok()?
        .ok()?;
    Some(answer)
}

/// `n` agents COLLECTING from the start, COMPLETE from `complete_at` on.
fn scenario_text(complete_at: &str) -> String {
    (0..AGENTS)
        .map(|i| {
            format!(
                "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"COLLECTING\" }}, \
                 {{ at = \"{complete_at}\", status = \"COMPLETE\" }}]\n",
                uuid(i)
            )
        })
        .collect()
}

/// A fresh election prefix per test (they share nothing, but say so).
fn election(test: &str) -> String {
    format!("/cwp-portwatch-test/{test}")
}

/// Every action of every account: at most [`QUOTA`] arrivals in any 1-second window, none
/// throttled. Prints the densest window.
fn assert_quota_kept(sim: &cwp_simulator::RunningSimulator, test: &str) {
    let stats = sim.stats();
    let mut densest = 0;
    for (account, actions) in &stats.per_account {
        for (action, s) in actions {
            densest = densest.max(s.max_arrivals_in_window);
            assert!(
                s.max_arrivals_in_window <= QUOTA,
                "{test}: {account} {action}: {} requests in one 1-s window (limit {QUOTA}): \
                 two processes polled at once",
                s.max_arrivals_in_window
            );
        }
    }
    assert_eq!(stats.throttled, 0, "{test}: throttled answers");
    println!("{test}: densest 1-s window {densest} requests (limit {QUOTA}), 0 throttled");
}

/// Starts `a` and waits for it to lead, then `b` and waits for it to be a standby that
/// sees `a` leading (`/healthz`, metrics).
async fn leader_and_standby(a: &mut Node, b: &mut Node) {
    a.start(&[]);
    a.elected().await;
    a.gauge_is(1.0).await;
    b.start(&[]);
    b.has_said("standby: waiting for leadership").await;
    b.gauge_is(0.0).await;
    let deadline = Instant::now() + WAIT;
    loop {
        let health = http_get(&b.metrics, "/healthz").await.unwrap_or_default();
        if health.starts_with("HTTP/1.1 200") && health.contains("(leader: a)") {
            assert!(health.contains("ok: standby"), "{health}");
            break;
        }
        assert!(Instant::now() < deadline, "b's /healthz: {health}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b.events("leader_elected").is_empty());
    assert_eq!(b.api.sent(), 0, "a standby sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_the_standby_takes_over_within_the_ttl_and_repeats_nothing() {
    let etcd = TestEtcd::new().await;
    let sim = start_scenario(&scenario_text("4s")).await;
    let election = election("kill");
    let mut a = Node::new("a", &sim, &etcd.endpoint(), &election).await;
    let mut b = Node::new("b", &sim, &etcd.endpoint(), &election).await;
    leader_and_standby(&mut a, &mut b).await;

    // a reports every agent's COLLECTING → COMPLETE, and replicates it (at most every second).
    a.process()
        .wait_for("every agent COMPLETE", WAIT, |e| {
            e.iter()
                .filter(|v| v["event"] == "status_changed" && v["to_status"] == "COMPLETE")
                .count()
                == AGENTS
        })
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    let killed = Instant::now();
    a.process().signal(libc::SIGKILL);
    let elected = b.elected().await;
    let takeover = elected - killed;
    println!("kill -9: b's leader_elected {takeover:?} after the kill (ttl {TTL:?})");
    assert!(
        takeover <= TAKEOVER,
        "takeover took {takeover:?}, the spec allows lease_ttl + 2 s"
    );
    b.gauge_is(1.0).await;
    // b polls every agent (several times) and reports nothing: a's transitions were
    // replicated, and the statuses it restored are the ones the API still answers.
    b.api
        .wait_for_sends(3 * AGENTS, "b polling after the takeover")
        .await;
    let repeated = b.events("status_changed");
    assert!(
        repeated.is_empty(),
        "b repeated what a reported and replicated: {repeated:?}"
    );
    assert_quota_kept(&sim, "kill -9");
    let b_out = b.process.take().unwrap().stop().await;
    assert_eq!(b_out.code(), Some(0), "{}", b_out.stderr);
    assert_eq!(b_out.named("daemon_stopping").len(), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_beyond_the_ttl_finds_itself_deposed_sends_nothing_and_exits_75() {
    let etcd = TestEtcd::new().await;
    let sim = start_scenario(&steady(AGENTS, "COMPLETE")).await;
    let election = election("sigstop");
    let mut a = Node::new("a", &sim, &etcd.endpoint(), &election).await;
    let mut b = Node::new("b", &sim, &etcd.endpoint(), &election).await;
    leader_and_standby(&mut a, &mut b).await;
    a.api.wait_for_sends(2 * AGENTS, "a polling").await;

    let stopped = Instant::now();
    a.process().signal(libc::SIGSTOP);
    let elected = b.elected().await;
    println!(
        "SIGSTOP: b's leader_elected {:?} after a was stopped (ttl {TTL:?})",
        elected - stopped
    );
    assert!(elected - stopped <= TAKEOVER, "{:?}", elected - stopped);
    b.api.wait_for_sends(AGENTS, "b polling").await;

    let resumed = Instant::now();
    a.process().signal(libc::SIGCONT);
    let out = a.process.take().unwrap().finish(WAIT).await;
    let exited = Instant::now();
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    let lost = out.named("leadership_lost");
    assert_eq!(lost.len(), 1, "{}", out.stderr);
    assert_eq!(lost[0]["name"], "a");
    if let Some(holder) = lost[0].get("holder") {
        assert_eq!(holder, "b", "{lost:?}");
    }
    let after = a.api.sent_after(resumed);
    println!(
        "SIGCONT: a exited 75 {:?} after it resumed, {after} chunks sent toward the API since",
        exited - resumed
    );
    assert_eq!(after, 0, "a deposed leader sent after SIGCONT");
    assert_quota_kept(&sim, "SIGSTOP");
    let b_out = b.process.take().unwrap().stop().await;
    assert_eq!(b_out.code(), Some(0), "{}", b_out.stderr);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_away_the_leader_says_it_cannot_prove_leadership_sends_nothing_and_resumes() {
    let mut etcd = TestEtcd::new().await;
    let sim = start_scenario(&steady(AGENTS, "COMPLETE")).await;
    let election = election("etcd-down");
    let mut a = Node::new("a", &sim, &etcd.endpoint(), &election).await;
    let mut b = Node::new("b", &sim, &etcd.endpoint(), &election).await;
    let mut notify = NotifySocket::bind(a.app.path());
    a.start(&[("NOTIFY_SOCKET", notify.path())]);
    a.elected().await;
    b.start(&[]);
    b.has_said("standby: waiting for leadership").await;
    a.api.wait_for_sends(2 * AGENTS, "a polling").await;

    // Shorter than the TTL: a keeps leading, b stays a standby.
    etcd.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    etcd.start().await;
    a.api
        .wait_for_sends(2 * AGENTS, "a polling after a short etcd outage")
        .await;
    assert!(a.process().exited().is_none(), "a must keep leading");
    assert!(a.events("leadership_lost").is_empty());
    assert!(b.events("leader_elected").is_empty());

    // Longer than the TTL: a cannot prove it leads, says so, and sends nothing until etcd
    // answers again.
    let down = Instant::now();
    etcd.stop();
    let fenced = a.said("fence closed: cannot prove leadership").await;
    println!(
        "etcd down: a stopped polling {:?} after etcd went away",
        fenced - down
    );
    let until = down + TTL * 2;
    tokio::time::sleep(until.saturating_duration_since(Instant::now())).await;
    let quiet = Instant::now();
    let during = a.api.sent_after(fenced);
    etcd.start().await;
    println!(
        "etcd down: {during} chunks toward the API in the {:?} a could not prove leadership",
        quiet - fenced
    );
    assert_eq!(during, 0, "a polled while it could not prove leadership");
    let seen = notify
        .wait_for(Duration::from_secs(5), |r| {
            r.iter().any(|m| {
                m.contains("STATUS=leader, not polling: cannot prove leadership (etcd unreachable)")
            })
        })
        .await;
    assert!(seen, "{:?}", notify.received());
    let resumed = a.said("fence open again").await;
    println!(
        "etcd back: a resumed {:?} after etcd restarted",
        resumed - quiet
    );
    a.api
        .wait_for_sends(2 * AGENTS, "a polling after etcd came back")
        .await;
    assert!(a.process().exited().is_none(), "a must still lead");
    assert!(a.events("leadership_lost").is_empty());
    assert!(b.events("leader_elected").is_empty(), "b must not lead");
    assert_eq!(b.api.sent(), 0, "the standby sent nothing");
    assert_quota_kept(&sim, "etcd down");
    for node in [&mut a, &mut b] {
        let out = node.process.take().unwrap().stop().await;
        assert_eq!(out.code(), Some(0), "{}: {}", node.name, out.stderr);
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_sending_the_standby_takes_over_and_it_exits_75() {
    let etcd = TestEtcd::new().await;
    let sim = start_scenario(&steady(AGENTS, "COMPLETE")).await;
    let election = election("partition");
    let etcd_addr: SocketAddr = etcd
        .endpoint()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let link = Proxy::start(etcd_addr).await;
    let mut a = Node::new("a", &sim, &link.url(), &election).await;
    let mut b = Node::new("b", &sim, &etcd.endpoint(), &election).await;
    leader_and_standby(&mut a, &mut b).await;
    a.api.wait_for_sends(2 * AGENTS, "a polling").await;

    let cut = Instant::now();
    link.cut();
    let fenced = a.said("fence closed: cannot prove leadership").await;
    let elected = b.elected().await;
    println!(
        "partition: a stopped polling {:?} after the cut, b leads {:?} after it (ttl {TTL:?})",
        fenced - cut,
        elected - cut
    );
    assert!(
        fenced <= elected,
        "a must stop before b starts: fenced {:?}, b elected {:?} after the cut",
        fenced - cut,
        elected - cut
    );
    assert!(elected - cut <= TAKEOVER, "{:?}", elected - cut);
    b.api.wait_for_sends(AGENTS, "b polling").await;

    let healed = Instant::now();
    link.heal();
    let out = a.process.take().unwrap().finish(WAIT).await;
    println!("partition healed: a exited {:?} later", healed.elapsed());
    assert_eq!(out.code(), Some(75), "{}", out.stderr);
    assert_eq!(out.named("leadership_lost").len(), 1, "{}", out.stderr);
    let after = a.api.sent_after(fenced);
    assert_eq!(after, 0, "a sent toward the API after its fence closed");
    assert_quota_kept(&sim, "partition");
    let b_out = b.process.take().unwrap().stop().await;
    assert_eq!(b_out.code(), Some(0), "{}", b_out.stderr);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_standby_is_a_clean_stop_and_to_the_leader_a_handover_at_once() {
    let etcd = TestEtcd::new().await;
    let sim = start_scenario(&steady(AGENTS, "COMPLETE")).await;
    let election = election("handover");
    let mut a = Node::new("a", &sim, &etcd.endpoint(), &election).await;
    let mut b = Node::new("b", &sim, &etcd.endpoint(), &election).await;
    leader_and_standby(&mut a, &mut b).await;
    a.api.wait_for_sends(2 * AGENTS, "a polling").await;

    // The leader stops: it resigns, so b leads long before the lease would expire.
    let stopping = Instant::now();
    let out = a.process.take().unwrap().stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.named("leadership_lost").is_empty());
    let elected = b.elected().await;
    println!(
        "SIGTERM to the leader: b leads {:?} after the signal",
        elected - stopping
    );
    b.api.wait_for_sends(2 * AGENTS, "b polling").await;
    assert!(
        b.events("status_changed").is_empty(),
        "b repeated a's statuses"
    );

    // A standby stops at once, cleanly.
    let mut c = Node::new("c", &sim, &etcd.endpoint(), &election).await;
    c.start(&[]);
    c.has_said("standby: waiting for leadership").await;
    let out = c.process.take().unwrap().stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(c.api.sent(), 0);
    assert_quota_kept(&sim, "handover");
    let out = b.process.take().unwrap().stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_without_etcd_is_ready_says_why_feeds_the_watchdog_and_leads_once_etcd_answers() {
    let mut etcd = TestEtcd::new().await;
    etcd.stop();
    let sim = start_scenario(&steady(AGENTS, "COMPLETE")).await;
    let mut a = Node::new("a", &sim, &etcd.endpoint(), &election("no-etcd")).await;
    let mut notify = NotifySocket::bind(a.app.path());
    a.start(&[
        ("NOTIFY_SOCKET", notify.path()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    // Ready at once as a standby, and fed the watchdog while it waits for etcd.
    let ready = notify
        .wait_for(WAIT, |r| {
            r.iter().any(|m| {
                m.lines().any(|l| l == "READY=1")
                    && m.contains(
                        "STATUS=standby: waiting for leadership of \
                                   /cwp-portwatch-test/no-etcd/leader as a",
                    )
            }) && r.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
        })
        .await;
    assert!(ready, "{:?}", notify.received());
    a.has_said("etcd unreachable").await;
    a.gauge_is(0.0).await;
    let health = http_get(&a.metrics, "/healthz").await.unwrap_or_default();
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("ok: standby"),
        "{health}"
    );
    assert_eq!(a.api.sent(), 0);

    let up = Instant::now();
    etcd.start().await;
    let elected = a.elected().await;
    println!("etcd up: a leads {:?} after etcd started", elected - up);
    a.gauge_is(1.0).await;
    a.api.wait_for_sends(AGENTS, "a polling").await;
    let out = a.process.take().unwrap().stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.shutdown().await;
}
