//! Faults, clock skew and secrets, against the real simulator over HTTP. (The shared quota is
//! a real-clock rate test: `tests/rate`.)

use std::collections::HashMap;
use std::time::Duration;

use cwp_portwatch::events::Event;
use cwp_simulator::{Faults, RequestRecord, SimulatorOptions};

use crate::support::app::{App, agents, daemon_config};
use crate::support::engine::{
    changes_answered, changes_reported, every_second, forty_agents, named, run_engine,
    status_of_answer,
};
use crate::support::*;

async fn run(sim: &cwp_simulator::RunningSimulator, timeout: Duration, secs: u64) -> Vec<Event> {
    let client = client_for(sim, cwp_simulator::DEFAULT_SECRET_KEY, timeout);
    let (events, _) = run_engine(sim, client, 40, every_second(), Duration::from_secs(secs)).await;
    events
}

/// Per agent, the changes implied by answers the client received.
fn changes_received(log: &[RequestRecord]) -> HashMap<String, Vec<String>> {
    let received: Vec<RequestRecord> = log.iter().filter(|r| !r.stalled).cloned().collect();
    changes_answered(&received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_answered_change_is_reported_once_and_nothing_else() {
    let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
    opts.faults = Faults {
        internal_error: 0.05,
        http_503: 0.05,
        reset: 0.03,
        truncated_json: 0.03,
        stall: 0.01,
        stall_for: Duration::from_secs(3),
    };
    opts.seed = Some(7);
    let sim = start(opts).await;
    // 20 s of the 27 s timeline: about 400 requests, every fault many times, two or three
    // changes per agent.
    let events = run(&sim, Duration::from_secs(1), 20).await;
    let stats = sim.stats();
    sim.shutdown().await;
    for fault in [
        "fault:503",
        "fault:reset",
        "fault:truncated",
        "InternalError",
    ] {
        assert!(
            stats.by_code.get(fault).copied().unwrap_or(0) > 0,
            "{fault} never injected: {:?}",
            stats.by_code
        );
    }
    assert!(!named(&events, "poll_failed").is_empty());
    let reported = changes_reported(&events);
    assert_eq!(reported, changes_received(&stats.log));
    // Every reported change is backed by an answer with that RequestId and status.
    let by_id: HashMap<&str, &RequestRecord> = stats
        .log
        .iter()
        .map(|r| (r.request_id.as_str(), r))
        .collect();
    for e in &events {
        if let Event::StatusChanged {
            request_id,
            to_status,
            uuid,
            ..
        } = e
        {
            let r = by_id
                .get(request_id.as_str())
                .expect("reported change was answered");
            assert_eq!(r.uuid.as_deref(), Some(uuid.as_str()));
            assert_eq!(
                status_of_answer(&r.answer).as_deref(),
                Some(to_status.as_str())
            );
        }
    }
}

/// The engine for 5 s against a simulator whose clock is `offset` seconds off.
async fn with_clock_offset(offset: i64) {
    let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
    opts.clock_offset_secs = offset;
    let sim = start(opts).await;
    let events = run(&sim, Duration::from_secs(2), 5).await;
    let log = sim.stats().log;
    sim.shutdown().await;
    let first_ok = log
        .iter()
        .position(|r| r.answer != "AuthFailure.SignatureExpire")
        .expect("some answer got through");
    let after = &log[first_ok..];
    let ok = after
        .iter()
        .filter(|r| r.answer != "AuthFailure.SignatureExpire")
        .count();
    assert!(
        ok as f64 >= 0.95 * after.len() as f64,
        "offset {offset}: {ok} of {} succeeded",
        after.len()
    );
    let skew = named(&events, "clock_skew");
    assert_eq!(skew.len(), 1, "offset {offset}: {skew:?}");
    let Event::ClockSkew { skew_seconds } = skew[0] else {
        unreachable!()
    };
    assert!(
        (skew_seconds - offset).abs() <= 2,
        "{skew_seconds} vs {offset}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_15_minutes_off_either_way_is_learned() {
    // Two simulators, one ahead and one behind, side by side.
    tokio::join!(with_clock_offset(900), with_clock_offset(-900));
}

/// The daemon at `trace` in `format` until every agent's first status; all it printed.
async fn trace_output(endpoint: &str, format: &str, key: &str, token: &str) -> String {
    let app = App::for_simulator(endpoint, &agents(0..5, "t"));
    app.write(
        "config.toml",
        daemon_config(endpoint)
            .replace("level = \"info\"", "level = \"trace\"")
            .replace("format = \"json\"", &format!("format = \"{format}\"")),
    );
    let mut d = app.daemon(&[
        ("TENCENTCLOUD_SECRET_ID", "AKIDtracetest"),
        ("TENCENTCLOUD_SECRET_KEY", key),
        ("TENCENTCLOUD_SESSION_TOKEN", token),
    ]);
    d.wait_for_lines(
        &format!("{format}: five status_changed"),
        Duration::from_secs(20),
        |lines| {
            lines
                .iter()
                .filter(|l| l.contains("status_changed"))
                .count()
                >= 5
        },
    )
    .await;
    let out = d.stop().await;
    format!("{}{}", out.stdout, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_never_reaches_the_output_even_at_trace() {
    const KEY: &str = "TopSecretKeyValue-0123456789abcdef";
    const TOKEN: &str = "TokenValueThatIsSecret987";
    let text = format!(
        "secret_id = \"AKIDtracetest\"\nsecret_key = \"{KEY}\"\n{}",
        forty_agents()
    );
    let sim = start_scenario(&text).await;
    let endpoint = sim.endpoint();
    // Both formats side by side, each with a fresh state, so both report first statuses.
    let (json, text) = tokio::join!(
        trace_output(&endpoint, "json", KEY, TOKEN),
        trace_output(&endpoint, "text", KEY, TOKEN)
    );
    for (format, all) in [("json", json), ("text", text)] {
        assert!(
            all.contains("status_changed"),
            "{format}: the daemon worked: {all}"
        );
        // Debug lines were there to scan: the known one of the start-up.
        assert!(
            all.contains("credentials found"),
            "{format}: no debug line, so none was scanned: {all}"
        );
        assert!(!all.contains(KEY), "{format}: secret key in the output");
        assert!(
            !all.contains(TOKEN),
            "{format}: session token in the output"
        );
    }
    sim.shutdown().await;
}

/// Issue 8 #9: `once` against an API that allows 5 requests per second, with 20 agents and
/// the engine at 20/s: the throttled polls are requeued as the rate allows, every agent gets
/// a status, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_requeues_throttled_agents_until_each_has_a_status() {
    use cwp_simulator::{DEFAULT_SECRET_KEY, LimiterKind};
    let mut opts = SimulatorOptions::new(scenario(&steady(20, "COMPLETE")));
    opts.limiter = LimiterKind::SlidingWindow { per_second: 5 };
    let sim = start(opts).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..20, "t"));
    let mut cmd = app.with_config(&["once", "--format", "json"]);
    cmd.env("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY);
    let out = tokio::task::spawn_blocking(move || {
        crate::support::app::run_within(cmd, Duration::from_secs(60))
    })
    .await
    .unwrap();
    let stats = sim.stats();
    assert!(stats.throttled > 0, "the test needs throttling: {stats:?}");
    assert_eq!(out.code(), Some(0), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<serde_json::Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 20);
    assert!(
        lines.iter().all(|l| l["status"] == "COMPLETE"),
        "{lines:#?}"
    );
    // Never twice after a success.
    assert_eq!(stats.ok, 20, "{:?}", stats.by_code);
}

/// Issue 15: the secret key and the session token never reach what `check`, `once` and
/// `status` print (stdout and stderr, text and JSON, at `trace`), whether they pass or fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_output_of_check_once_or_status() {
    const KEY: &str = "CommandSecretKey-5f4dcc3b5aa765d61d83";
    const TOKEN: &str = "CommandSessionToken-e99a18c428cb38d5";
    let text = format!(
        "secret_id = \"AKIDcommands\"\nsecret_key = \"{KEY}\"\n{}",
        steady(3, "COMPLETE")
    );
    let sim = start_scenario(&text).await;
    let endpoint = sim.endpoint();
    let app = App::for_simulator(&endpoint, &agents(0..3, "s"));
    app.write(
        "config.toml",
        daemon_config(&endpoint).replace("level = \"info\"", "level = \"trace\""),
    );
    // The same folder with a config that `check` refuses, and one with a wrong key.
    app.write(
        "bad.toml",
        daemon_config(&endpoint)
            .replace("level = \"info\"", "level = \"trace\"")
            .replace("[poll]", "[poll]\nmax_in_flight = 0\nbogus = 1"),
    );
    // A state for `status` to show.
    std::fs::create_dir(app.path().join("state")).unwrap();
    let known = (0..3)
        .map(|i| {
            let known = cwp_portwatch::tracker::Known {
                status: cwp_portwatch::status::Status::Complete,
                request_id: format!("request-{i}").into(),
                seen_at: 1_700_000_000,
            };
            (uuid(i).parse().unwrap(), known)
        })
        .collect();
    app.state().save(&known).unwrap();
    let runs: Vec<(&str, Vec<&str>, &str, bool)> = vec![
        // (what, arguments, secret key, should it succeed)
        ("check", vec!["check"], KEY, true),
        (
            "check, refused",
            vec!["check", "--config", "bad.toml"],
            KEY,
            false,
        ),
        ("once, text", vec!["once"], KEY, true),
        ("once, json", vec!["once", "--format", "json"], KEY, true),
        ("status, text", vec!["status"], KEY, true),
        (
            "status, json",
            vec!["status", "--format", "json"],
            KEY,
            true,
        ),
        (
            "once, wrong key",
            vec!["once"],
            "Wrong-CommandSecretKey-5f4dc",
            false,
        ),
    ];
    for (what, args, key, ok) in runs {
        let mut cmd = if args.contains(&"--config") {
            app.command(&args)
        } else {
            app.with_config(&args)
        };
        cmd.current_dir(app.path())
            .env("TENCENTCLOUD_SECRET_ID", "AKIDcommands")
            .env("TENCENTCLOUD_SECRET_KEY", key)
            .env("TENCENTCLOUD_SESSION_TOKEN", TOKEN);
        let out = tokio::task::spawn_blocking(move || {
            crate::support::app::run_within(cmd, Duration::from_secs(30))
        })
        .await
        .unwrap();
        let all = format!("{}{}", out.stdout, out.stderr);
        // The scan covers debug lines: `once` (the commands that log) printed its known
        // debug line, so a secret in any debug line would have been seen. (`check` and
        // `status` log nothing at any level: all they print is their answer, scanned too.)
        if what.starts_with("once") {
            assert!(
                all.contains("credentials found"),
                "{what}: no debug line in the output, so none was scanned:\n{all}"
            );
        }
        assert_eq!(out.code() == Some(0), ok, "{what}: {:?}\n{all}", out.status);
        assert!(!all.is_empty(), "{what}: printed nothing");
        for secret in [KEY, TOKEN, "Wrong-CommandSecretKey"] {
            assert!(
                !all.contains(secret),
                "{what}: {secret} in the output:\n{all}"
            );
        }
    }
    sim.shutdown().await;
}
