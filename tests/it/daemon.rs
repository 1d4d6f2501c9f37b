//! The real binary as a daemon: sd_notify, SIGHUP reload, SIGTERM, state across restarts,
//! `kill -9` during state writes. Real signals to a real process; the simulator in-process.
//! Every wait is for something the daemon or the simulator says, with a deadline.

use std::time::Duration;

use cwp_simulator::{DEFAULT_SECRET_KEY, RunningSimulator};
use serde_json::Value;

use crate::support::app::{self, App, NotifySocket, agents, has_line, run_within};
use crate::support::*;

/// Generous: the machine may be busy with other tests; waits end as soon as they can.
const WAIT: Duration = Duration::from_secs(20);

/// `n` agents COLLECTING from 0 s; at `change_at` the even ones turn COMPLETE.
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

fn status_changes(events: &[Value]) -> usize {
    events
        .iter()
        .filter(|v| v["event"] == "status_changed")
        .count()
}

/// Waits until the simulator has answered each of `agents` at least `times` times.
async fn wait_answered(sim: &RunningSimulator, agents: usize, times: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = sim.stats().log;
        let least = (0..agents)
            .map(|i| {
                let u = uuid(i);
                log.iter()
                    .filter(|r| r.uuid.as_deref() == Some(u.as_str()))
                    .count()
            })
            .min()
            .unwrap_or(0);
        if least >= times {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "some agent answered only {least} times, want {times}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sd_notify_ready_status_watchdog_reloading_stopping() {
    let sim = start_scenario(&scenario_text(3, "1h")).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..3, "a"));
    let mut notify = NotifySocket::bind(app.path());
    let started = std::time::Instant::now();
    let d = app.daemon(&[
        ("NOTIFY_SOCKET", notify.path()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    // READY=1 with the status line, then pings at half of WatchdogSec=2s: at least two within
    // 5 s of the start, as a service manager would want them.
    let ready = notify
        .wait_for(Duration::from_secs(5), |r| {
            r.iter().any(|m| has_line(m, "READY=1"))
                && r.iter().any(|m| m.contains("STATUS=watching 3 agents"))
                && r.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
        })
        .await;
    let first = notify.received().to_vec();
    assert!(
        ready,
        "READY=1, STATUS=watching 3 agents and two WATCHDOG=1 pings within 5 s \
         (got them after {:?}): {first:?}",
        started.elapsed()
    );

    let mark = notify.received().len();
    d.signal(libc::SIGHUP);
    let reloaded = notify
        .wait_for(WAIT, |r| {
            r[mark..]
                .iter()
                .position(|m| m.contains("RELOADING=1"))
                .is_some_and(|at| r[mark + at..].iter().any(|m| has_line(m, "READY=1")))
        })
        .await;
    let reload = notify.received()[mark..].to_vec();
    assert!(reloaded, "RELOADING=1, then READY=1: {reload:?}");
    let reloading = reload
        .iter()
        .position(|m| m.contains("RELOADING=1"))
        .unwrap();
    assert!(
        reload[reloading].contains("MONOTONIC_USEC="),
        "RELOADING=1 and MONOTONIC_USEC in one datagram: {reload:?}"
    );

    let mark = notify.received().len();
    d.signal(libc::SIGTERM);
    let stopping = notify
        .wait_for(WAIT, |r| r[mark..].iter().any(|m| m.contains("STOPPING=1")))
        .await;
    assert!(stopping, "{:?}", &notify.received()[mark..]);
    let out = d.finish(app::STOP_LIMIT).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_adds_and_removes_agents_and_refuses_a_broken_config() {
    let sim = start_scenario(&scenario_text(6, "1h")).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..4, "a"));
    let mut d = app.daemon(&[]);
    d.wait_for("first answers", WAIT, |e| status_changes(e) == 4)
        .await;

    // Keep 2 and 3, drop 0 and 1, add 4 and 5.
    app.write_watchlist(&agents(2..6, "b"));
    d.signal(libc::SIGHUP);
    d.wait_for("watchlist_loaded after reload", WAIT, |e| {
        e.iter()
            .any(|v| v["event"] == "watchlist_loaded" && v["added"] == 2 && v["removed"] == 2)
    })
    .await;
    d.wait_for("new agents polled", WAIT, |e| {
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
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[api]\nrequests_per_second = 99\n",
    );
    d.signal(libc::SIGHUP);
    d.wait_for("config_rejected", WAIT, |e| {
        e.iter().any(|v| v["event"] == "config_rejected")
    })
    .await;
    let rejected = d.named("config_rejected");
    let msg = rejected[0]["error_message"].as_str().unwrap();
    assert!(msg.contains("config.toml:3"), "{msg}");
    assert_eq!(rejected[0]["level"], "error");
    // Polling goes on: every kept agent is answered twice more after the refusal.
    let before = sim.stats().log.len();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = sim.stats().log;
        let least = (2..6)
            .map(|i| {
                let u = uuid(i);
                log[before..]
                    .iter()
                    .filter(|r| r.uuid.as_deref() == Some(u.as_str()))
                    .count()
            })
            .min()
            .unwrap();
        if least >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "polling stopped after a refused reload"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_state_and_a_restart_emits_only_real_changes() {
    // The API before and after the restart: two simulators, so the change happens while the
    // daemon is down without waiting for a timeline. Before: all four COLLECTING. After: the
    // even agents COMPLETE, the odd ones still COLLECTING.
    let before = start_scenario(&steady(4, "COLLECTING")).await;
    let after = start_scenario(
        &(0..4)
            .map(|i| {
                let status = if i % 2 == 0 { "COMPLETE" } else { "COLLECTING" };
                format!(
                    "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"{status}\" }}]\n",
                    uuid(i)
                )
            })
            .collect::<String>(),
    )
    .await;
    let app = App::for_simulator(&before.endpoint(), &agents(0..4, "a"));
    let mut d = app.daemon(&[]);
    d.wait_for("first answers", WAIT, |e| status_changes(e) == 4)
        .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!out.named("daemon_stopping").is_empty(), "{}", out.stderr);
    let state = app.state().load().unwrap();
    assert_eq!(state.len(), 4);
    assert!(state.values().all(|k| k.status == "COLLECTING"));
    before.shutdown().await;

    app.write("config.toml", app::daemon_config(&after.endpoint()));
    let mut d = app.daemon(&[]);
    d.wait_for("the two real changes", WAIT, |e| status_changes(e) >= 2)
        .await;
    // Every agent answered three times: each answer but the last was handled before the next
    // request went out, so any wrong change would have been reported by now.
    wait_answered(&after, 4, 3).await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let changes = out.named("status_changed");
    assert_eq!(changes.len(), 2, "{changes:#?}");
    for c in &changes {
        assert_eq!(c["from_status"], "COLLECTING");
        assert_eq!(c["to_status"], "COMPLETE");
    }
    after.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_state_writes_always_leaves_a_loadable_file() {
    // 200 agents flipping status every second keep the state file being rewritten (at most
    // once a second). Six daemons, each with its own simulator and folder, side by side.
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
    let rounds = (0..6u64).map(|round| {
        let text = text.clone();
        async move {
            let sim = start_scenario(&text).await;
            let app = App::for_simulator(&sim.endpoint(), &agents(0..200, "k"));
            let state = app.state();
            let mut d = app.daemon(&[]);
            // After the first write, at different moments of the once-a-second rewrites.
            let deadline = std::time::Instant::now() + WAIT;
            while !state.path().exists() {
                assert!(
                    d.exited().is_none() && std::time::Instant::now() < deadline,
                    "round {round}: no state file written; stderr:\n{}",
                    d.lines().join("\n")
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_millis(1000 + round * 170)).await;
            d.signal(libc::SIGKILL);
            drop(d);
            let known = state
                .load()
                .unwrap_or_else(|e| panic!("round {round}: state not loadable after kill -9: {e}"));
            sim.shutdown().await;
            known.len()
        }
    });
    let known = futures_join(rounds).await;
    assert!(
        known.iter().all(|&n| n > 0),
        "a written state came back empty after kill -9: {known:?}"
    );
}

/// Runs the futures side by side (no `futures` crate): each on its own task.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

/// `args --config` with `key` as the secret key, to its end (or killed after 30 s).
async fn run_cmd(app: &App, args: &[&str], key: &str) -> app::Finished {
    let mut cmd = app.with_config(args);
    cmd.env("TENCENTCLOUD_SECRET_KEY", key);
    tokio::task::spawn_blocking(move || run_within(cmd, Duration::from_secs(30)))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_prints_one_line_per_agent_and_status_reads_the_state() {
    let sim = start_scenario(&scenario_text(3, "1h")).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..3, "o"));

    let out = run_cmd(&app, &["once", "--format", "json"], DEFAULT_SECRET_KEY).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let lines: Vec<Value> = out
        .stdout
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
    assert!(!out.stderr.contains("status_changed"));

    // No state yet: `status` says so and shows UNKNOWN.
    let out = run_cmd(&app, &["status"], DEFAULT_SECRET_KEY).await;
    assert_eq!(out.code(), Some(0));
    assert!(out.stderr.contains("no state file"));
    assert_eq!(out.stdout.matches("UNKNOWN").count(), 3);

    // After a daemon run, `status` prints what it persisted.
    let mut d = app.daemon(&[]);
    d.wait_for("first answers", WAIT, |e| status_changes(e) == 3)
        .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0));
    let out = run_cmd(&app, &["status", "--format", "json"], DEFAULT_SECRET_KEY).await;
    let lines: Vec<Value> = out
        .stdout
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
    let sim = start_scenario(&scenario_text(8, "1h")).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..8, "o"));
    let out = run_cmd(&app, &["once"], "wrong-key").await;
    // Fast, without a wall-clock bound: no retries (the polls already sent when the first
    // refusal came back are all there is), and it ended by itself with 1 (`run_cmd` kills it
    // at 30 s, and then there is no exit code: a `once` that keeps probing until its
    // deadline fails here).
    let stats = sim.stats();
    assert!(
        stats.requests <= 8,
        "{} requests for 8 agents with refused credentials: {:?}",
        stats.requests,
        stats.by_code
    );
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 8, "{}", out.stdout);
    assert!(
        out.stdout
            .lines()
            .all(|l| l.contains("AuthFailure.SignatureFailure")),
        "{}",
        out.stdout
    );
    assert!(out.stderr.contains("credentials_failed"));
    sim.shutdown().await;
}

/// Issue 8 item 5: a damaged state file, or one from a newer version, is never overwritten:
/// it is renamed, `state_damaged` says where it went (`moved_to`), the daemon starts fresh,
/// and its next save writes a new `state.json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_newer_state_file_is_kept_under_a_new_name_and_a_fresh_one_saved() {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    let cases: [(&str, &[u8]); 3] = [
        ("torn", b"{\"version\":1,\"agents\":{\"x\":"),
        ("not JSON", b"\xff\xfe\x00garbage"),
        ("newer", br#"{"version":99,"agents":{}}"#),
    ];
    for (name, contents) in cases {
        let app = App::for_simulator(&sim.endpoint(), &agents(0..2, "s"));
        std::fs::create_dir(app.path().join("state")).unwrap();
        std::fs::write(app.state().path(), contents).unwrap();
        let mut d = app.daemon(&[]);
        d.wait_for("first answers", WAIT, |e| status_changes(e) == 2)
            .await;
        let out = d.stop().await;
        assert_eq!(out.code(), Some(0), "{name}: {}", out.stderr);
        let damaged = out.named("state_damaged");
        assert_eq!(damaged.len(), 1, "{name}: {}", out.stderr);
        assert_eq!(
            damaged[0]["path"],
            app.state().path().to_str().unwrap(),
            "{name}"
        );
        let moved_to = damaged[0]["moved_to"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no moved_to: {}", out.stderr));
        let file_name = std::path::Path::new(moved_to)
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert!(
            file_name.starts_with("state.json.damaged-"),
            "{name}: {moved_to}"
        );
        assert_eq!(
            std::fs::read(moved_to).unwrap(),
            contents,
            "{name}: the damaged file is kept as it was"
        );
        assert!(
            damaged[0]["message"].as_str().unwrap().contains(moved_to),
            "{name}: {}",
            damaged[0]
        );
        // A fresh start: every agent's first change is from UNKNOWN.
        for c in out.named("status_changed") {
            assert_eq!(c["from_status"], "UNKNOWN", "{name}: {c}");
        }
        let fresh = app.state().load().unwrap();
        assert_eq!(fresh.len(), 2, "{name}: a new state.json after the stop");
    }
    sim.shutdown().await;
}

/// Issue 15: the watchdog goes silent when the dispatcher wedges, and only then. The wedge
/// is a real one: stderr is a pipe nobody reads, so once its buffer is full the dispatcher
/// blocks writing its next log line, and WATCHDOG=1 stops (systemd would restart us); once
/// stderr is drained, the pings come back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_goes_silent_while_the_dispatcher_is_wedged() {
    use std::io::Read;
    // Statuses flipping every second keep the log busy, at trace on top.
    let mut text = String::new();
    for i in 0..20 {
        text.push_str(&format!("[[agent]]\nuuid = \"{}\"\ntimeline = [", uuid(i)));
        for s in 0..600 {
            let st = if (s + i) % 2 == 0 {
                "COLLECTING"
            } else {
                "COMPLETE"
            };
            text.push_str(&format!("{{ at = \"{s}s\", status = \"{st}\" }},"));
        }
        text.push_str("]\n");
    }
    let sim = start_scenario(&text).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..20, "w"));
    app.write(
        "config.toml",
        app::daemon_config(&sim.endpoint()).replace("level = \"info\"", "level = \"trace\""),
    );
    let mut notify = NotifySocket::bind(app.path());
    let mut cmd = app.with_config(&["run"]);
    cmd.env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "2000000")
        .stdout(std::process::Stdio::null());
    let mut child = KillOnDrop(Some(cmd.spawn().unwrap()));
    // Not read (yet): the pipe fills up.
    let mut stderr = child.0.as_mut().unwrap().stderr.take().unwrap();

    let is_ping = |m: &String| has_line(m, "WATCHDOG=1");
    // Healthy: READY=1 and pings.
    let pinged = notify
        .wait_for(WAIT, |r| {
            r.iter().any(|m| has_line(m, "READY=1")) && r.iter().any(is_ping)
        })
        .await;
    assert!(pinged, "no READY=1 and WATCHDOG=1: {:?}", notify.received());
    // Wedged: no ping for 4 s (twice WatchdogSec=2s). A healthy loop beats every second, so
    // at most one tick in a row can miss a beat. The notifier shares the dispatcher's
    // current-thread runtime, so a wedge may silence STATUS= too: what matters to systemd is
    // that WATCHDOG=1 stops.
    let went_silent = notify
        .quiet_for(Duration::from_secs(60), Duration::from_secs(4), is_ping)
        .await;
    assert!(
        went_silent,
        "the watchdog kept pinging with stderr blocked: {:?}",
        notify.received()
    );
    // Drained: the dispatcher runs again and the pings resume.
    let mark = notify.received().len();
    let drain = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = stderr.read_to_end(&mut sink);
        sink.len()
    });
    let resumed = notify
        .wait_for(WAIT, |r| r[mark..].iter().any(is_ping))
        .await;
    assert!(
        resumed,
        "no WATCHDOG=1 after stderr was drained: {:?}",
        &notify.received()[mark..]
    );
    let mut child = child.0.take().unwrap();
    // SAFETY: kill(2) on our own child, not reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    let drained = drain.join().unwrap();
    // A full pipe buffer (64 KiB; the last line may have gone in part) and the rest.
    assert!(
        drained > 60 * 1024,
        "stderr never filled a pipe: {drained} bytes; {:?}",
        notify.received()
    );
    assert_eq!(status.code(), Some(0), "{status}");
    sim.shutdown().await;
}

/// A daemon that a failed assertion must not leave running (blocked on its full stderr).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
