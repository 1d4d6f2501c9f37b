//! The real binary as a daemon: sd_notify, SIGHUP reload, SIGTERM, state across restarts,
//! `kill -9` during state writes. Real signals to a real process; the simulator in-process.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cwp_portwatch::simulator::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, SimulatorOptions};
use cwp_portwatch::state::StateFile;
use serde_json::Value;

use crate::support::*;

/// A running daemon whose JSON event lines are collected as they come.
pub struct Daemon {
    pub child: Child,
    pub events: Arc<Mutex<Vec<Value>>>,
}

impl Daemon {
    pub fn start(config: &Path, envs: &[(&str, String)]) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("JOURNAL_STREAM")
            .env("TENCENTCLOUD_SECRET_ID", DEFAULT_SECRET_ID)
            .env("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("daemon starts");
        let stderr = child.stderr.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => sink.lock().unwrap().push(v),
                    Err(_) => sink.lock().unwrap().push(Value::String(line)),
                }
            }
        });
        Daemon { child, events }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    pub fn named(&self, event: &str) -> Vec<Value> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }

    /// Waits until `pred` holds over the events so far.
    pub async fn wait_for(&self, what: &str, secs: u64, pred: impl Fn(&[Value]) -> bool) {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if pred(&self.events.lock().unwrap()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "timed out waiting for {what}; events: {:#?}",
            self.events.lock().unwrap()
        );
    }

    /// SIGTERM and the exit code.
    pub async fn stop(mut self) -> (i32, Vec<Value>) {
        self.signal(libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                tokio::time::sleep(Duration::from_millis(100)).await;
                let events = self.events.lock().unwrap().clone();
                return (status.code().unwrap_or(-1), events);
            }
            assert!(Instant::now() < end, "daemon did not stop within 15 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn write_config(dir: &Path, endpoint: &str, agents: &[(String, &str)]) -> PathBuf {
    write_watchlist(dir, agents);
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        format!(
            "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"{endpoint}\"\n\
             timeout = \"2s\"\n[poll]\ninterval = \"300ms\"\ncollecting_interval = \"200ms\"\n\
             offline_interval = \"300ms\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
        ),
    )
    .unwrap();
    cfg
}

pub fn write_watchlist(dir: &Path, agents: &[(String, &str)]) {
    let mut w = String::new();
    for (u, name) in agents {
        w.push_str(&format!("[[agent]]\nuuid = \"{u}\"\nname = \"{name}\"\n"));
    }
    std::fs::write(dir.join("watchlist.toml"), w).unwrap();
}

fn scenario_text(n: usize, change_at: &str) -> String {
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"COLLECTING\" }}, {{ at = \"{change_at}\", status = \"{}\" }}]\n",
            uuid(i),
            if i % 2 == 0 { "COMPLETE" } else { "COLLECTING" }
        ));
    }
    s
}

fn recv_all(sock: &UnixDatagram, wait: Duration) -> Vec<String> {
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < end {
        if let Ok(n) = sock.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).to_string());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_status_watchdog_reloading_stopping() {
    let _serial = REAL_TIME.lock().await;
    let sim = start(SimulatorOptions::new(scenario(&scenario_text(3, "1h")))).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<_> = (0..3).map(|i| (uuid(i), "a")).collect();
    let cfg = write_config(dir.path(), &sim.endpoint(), &agents);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    let d = Daemon::start(
        &cfg,
        &[
            ("NOTIFY_SOCKET", sock_path.display().to_string()),
            ("WATCHDOG_USEC", "2000000".to_string()),
        ],
    );
    let first = recv_all(&sock, Duration::from_millis(5000));
    assert!(
        first.iter().any(|m| m.lines().any(|l| l == "READY=1")),
        "{first:?}"
    );
    assert!(
        first.iter().any(|m| m.contains("STATUS=watching 3 agents")),
        "{first:?}"
    );
    let pings = first.iter().filter(|m| m.contains("WATCHDOG=1")).count();
    assert!(
        pings >= 2,
        "watchdog pinged {pings} times in 3.5 s at WatchdogSec=2s: {first:?}"
    );

    d.signal(libc::SIGHUP);
    let reload = recv_all(&sock, Duration::from_millis(1500));
    let reloading = reload
        .iter()
        .position(|m| m.contains("RELOADING=1"))
        .unwrap_or_else(|| panic!("no RELOADING=1: {reload:?}"));
    assert!(
        reload[reloading].contains("MONOTONIC_USEC="),
        "RELOADING=1 and MONOTONIC_USEC in one datagram: {reload:?}"
    );
    assert!(
        reload[reloading..]
            .iter()
            .any(|m| m.lines().any(|l| l == "READY=1")),
        "READY=1 after the reload: {reload:?}"
    );

    d.signal(libc::SIGTERM);
    let stop = recv_all(&sock, Duration::from_millis(1000));
    assert!(stop.iter().any(|m| m.contains("STOPPING=1")), "{stop:?}");
    let (code, _) = d.stop().await;
    assert_eq!(code, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_agents_and_refuses_a_broken_config() {
    let _serial = REAL_TIME.lock().await;
    let sim = start(SimulatorOptions::new(scenario(&scenario_text(6, "1h")))).await;
    let dir = tempfile::tempdir().unwrap();
    let first: Vec<_> = (0..4).map(|i| (uuid(i), "a")).collect();
    let cfg = write_config(dir.path(), &sim.endpoint(), &first);
    let d = Daemon::start(&cfg, &[]);
    d.wait_for("first answers", 10, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 4
    })
    .await;

    // Keep 2 and 3, drop 0 and 1, add 4 and 5.
    let second: Vec<_> = (2..6).map(|i| (uuid(i), "b")).collect();
    write_watchlist(dir.path(), &second);
    d.signal(libc::SIGHUP);
    d.wait_for("watchlist_loaded after reload", 10, |e| {
        e.iter()
            .any(|v| v["event"] == "watchlist_loaded" && v["added"] == 2 && v["removed"] == 2)
    })
    .await;
    d.wait_for("new agents polled", 10, |e| {
        e.iter()
            .filter(|v| v["event"] == "status_changed")
            .any(|v| v["uuid"] == uuid(5).as_str())
    })
    .await;
    let loaded = d.named("watchlist_loaded");
    assert_eq!(loaded.last().unwrap()["agents"], 4);
    // Kept agents kept their status: no second UNKNOWN → COLLECTING for them.
    let firsts_for_kept = d
        .named("status_changed")
        .iter()
        .filter(|v| v["uuid"] == uuid(2).as_str())
        .count();
    assert_eq!(firsts_for_kept, 1);

    // A broken config is refused and polling goes on.
    std::fs::write(
        &cfg,
        "watchlist = \"watchlist.toml\"\n[api]\nrequests_per_second = 99\n",
    )
    .unwrap();
    let before = sim.stats().requests;
    d.signal(libc::SIGHUP);
    d.wait_for("config_rejected", 10, |e| {
        e.iter().any(|v| v["event"] == "config_rejected")
    })
    .await;
    let rejected = d.named("config_rejected");
    let msg = rejected[0]["error_message"].as_str().unwrap();
    assert!(msg.contains("config.toml:3"), "{msg}");
    assert_eq!(rejected[0]["level"], "error");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        sim.stats().requests > before + 5,
        "polling stopped after a refused reload"
    );
    // Removed agents are not polled any more (a request in flight at the reload may land).
    let log = sim.stats().log;
    let reload_at = log
        .iter()
        .position(|r| r.uuid.as_deref() == Some(uuid(5).as_str()))
        .expect("agent 5 was polled after the reload");
    let removed = [uuid(0), uuid(1)];
    let late = log[reload_at..]
        .iter()
        .filter(|r| {
            removed
                .iter()
                .any(|u| r.uuid.as_deref() == Some(u.as_str()))
        })
        .count();
    assert!(
        late <= 2,
        "removed agents still polled {late} times after the reload"
    );
    let (code, _) = d.stop().await;
    assert_eq!(code, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_state_and_a_restart_emits_only_real_changes() {
    let _serial = REAL_TIME.lock().await;
    // Even agents go COLLECTING → COMPLETE at 8 s; odd ones stay COLLECTING.
    let sim_started = Instant::now();
    let sim = start(SimulatorOptions::new(scenario(&scenario_text(4, "8s")))).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<_> = (0..4).map(|i| (uuid(i), "a")).collect();
    let cfg = write_config(dir.path(), &sim.endpoint(), &agents);
    let d = Daemon::start(&cfg, &[]);
    d.wait_for("first answers", 10, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 4
    })
    .await;
    let (code, events) = d.stop().await;
    assert_eq!(code, 0);
    assert!(events.iter().any(|v| v["event"] == "daemon_stopping"));
    let state = StateFile::in_dir(&dir.path().join("state")).load().unwrap();
    assert_eq!(state.len(), 4);
    assert!(state.values().all(|k| k.status == "COLLECTING"));

    // Down until the even agents changed.
    assert!(
        sim_started.elapsed() < Duration::from_secs(8),
        "the first run took too long to see the first statuses"
    );
    let down_until = sim_started + Duration::from_secs(9);
    tokio::time::sleep(down_until.saturating_duration_since(Instant::now())).await;
    let d = Daemon::start(&cfg, &[]);
    d.wait_for("the two real changes", 10, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let changes = d.named("status_changed");
    assert_eq!(changes.len(), 2, "{changes:#?}");
    for c in &changes {
        assert_eq!(c["from_status"], "COLLECTING");
        assert_eq!(c["to_status"], "COMPLETE");
    }
    let (code, _) = d.stop().await;
    assert_eq!(code, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_state_writes_always_leaves_a_loadable_file() {
    // 200 agents flipping status every second keep the state file being rewritten.
    let mut text = String::new();
    for i in 0..200 {
        text.push_str(&format!("[[agent]]\nuuid = \"{}\"\ntimeline = [", uuid(i)));
        for s in 0..60 {
            let st = if (s + i) % 2 == 0 {
                "COLLECTING"
            } else {
                "COMPLETE"
            };
            text.push_str(&format!("{{ at = \"{s}s\", status = \"{st}\" }},"));
        }
        text.push_str("]\n");
    }
    let sim = start(SimulatorOptions::new(scenario(&text))).await;
    let agents: Vec<_> = (0..200).map(|i| (uuid(i), "k")).collect();
    let mut loaded_nonempty = 0;
    for round in 0..6u64 {
        // A fresh folder each round: what is there was written by this round's daemon alone.
        let dir = tempfile::tempdir().unwrap();
        let cfg = write_config(dir.path(), &sim.endpoint(), &agents);
        let state = StateFile::in_dir(&dir.path().join("state"));
        let d = Daemon::start(&cfg, &[]);
        // Different moments relative to the once-a-second writes.
        tokio::time::sleep(Duration::from_millis(1300 + round * 170)).await;
        d.signal(libc::SIGKILL);
        drop(d);
        let known = state
            .load()
            .unwrap_or_else(|e| panic!("round {round}: state not loadable after kill -9: {e}"));
        if !known.is_empty() {
            loaded_nonempty += 1;
        }
    }
    assert!(
        loaded_nonempty >= 5,
        "state was rarely written: {loaded_nonempty}"
    );
    sim.shutdown().await;
}

fn run_cmd(args: &[&str], cfg: &Path, key: &str) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("JOURNAL_STREAM")
        .env("TENCENTCLOUD_SECRET_ID", DEFAULT_SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", key)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_one_line_per_agent_and_status_reads_the_state() {
    let sim = start(SimulatorOptions::new(scenario(&scenario_text(3, "1h")))).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<_> = (0..3).map(|i| (uuid(i), "o")).collect();
    let cfg = write_config(dir.path(), &sim.endpoint(), &agents);

    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_cmd(&["once", "--format", "json"], &cfg2, DEFAULT_SECRET_KEY)
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "COLLECTING" && l["request_id"].is_string())
    );
    // No status_changed noise from `once`.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("status_changed"));

    // No state yet: `status` says so and shows UNKNOWN.
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || run_cmd(&["status"], &cfg2, DEFAULT_SECRET_KEY))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state file"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("UNKNOWN")
            .count(),
        3
    );

    // After a daemon run, `status` prints what it persisted.
    let d = Daemon::start(&cfg, &[]);
    d.wait_for("first answers", 10, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 3
    })
    .await;
    let (code, _) = d.stop().await;
    assert_eq!(code, 0);
    let cfg2 = cfg.clone();
    let out = tokio::task::spawn_blocking(move || {
        run_cmd(&["status", "--format", "json"], &cfg2, DEFAULT_SECRET_KEY)
    })
    .await
    .unwrap();
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["status"] == "COLLECTING" && l["seen_at"].is_i64())
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_refused_credentials_fails_fast() {
    let sim = start(SimulatorOptions::new(scenario(&scenario_text(8, "1h")))).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<_> = (0..8).map(|i| (uuid(i), "o")).collect();
    let cfg = write_config(dir.path(), &sim.endpoint(), &agents);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || run_cmd(&["once"], &cfg, "wrong-key"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "once took {:?} with refused credentials",
        started.elapsed()
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 8, "{stdout}");
    assert!(
        stdout
            .lines()
            .all(|l| l.contains("AuthFailure.SignatureFailure")),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("credentials_failed"));
    sim.shutdown().await;
}
