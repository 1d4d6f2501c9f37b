//! Faults, shared quota, clock skew and secrets, against the real simulator over HTTP.

use std::collections::HashMap;
use std::time::Duration;

use cwp_portwatch::events::Event;
use cwp_portwatch::simulator::{Faults, LimiterKind, RequestRecord, SimulatorOptions};

use crate::engine_sim::{
    changes_reported, every_second, forty_agents, run_engine, status_of_answer,
};
use crate::support::*;

async fn run(
    sim: &cwp_portwatch::simulator::RunningSimulator,
    timeout: Duration,
    secs: u64,
) -> Vec<Event> {
    let client = client_for(sim, cwp_portwatch::simulator::DEFAULT_SECRET_KEY, timeout);
    let (events, _) = run_engine(sim, client, 40, every_second(), Duration::from_secs(secs)).await;
    events
}

/// Per agent, the changes implied by answers the client received.
fn changes_received(log: &[RequestRecord]) -> HashMap<String, Vec<String>> {
    let received: Vec<RequestRecord> = log.iter().filter(|r| !r.stalled).cloned().collect();
    crate::engine_sim::changes_answered(&received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_every_answered_change_is_reported_once_and_nothing_else() {
    let _serial = REAL_TIME.lock().await;
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
    let events = run(&sim, Duration::from_secs(1), 30).await;
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

fn named<'a>(events: &'a [Event], name: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.name() == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_quota_taken_by_another_tool() {
    let _serial = REAL_TIME.lock().await;
    let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
    opts.limiter = LimiterKind::SlidingWindow { per_second: 10 };
    let sim = start(opts).await;
    let events = run(&sim, Duration::from_secs(2), 30).await;
    let stats = sim.stats();
    sim.shutdown().await;
    let throttled = stats.throttled as f64 / stats.requests as f64;
    let through = (stats.requests - stats.throttled) as f64 / 30.0;
    assert!(throttled < 0.05, "{:.1} % throttled", throttled * 100.0);
    assert!(through >= 9.0, "{through:.2} req/s got through");
    assert!(!named(&events, "rate_limited").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_15_minutes_off_either_way_is_learned() {
    let _serial = REAL_TIME.lock().await;
    for offset in [900i64, -900] {
        let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
        opts.clock_offset_secs = offset;
        let sim = start(opts).await;
        let events = run(&sim, Duration::from_secs(2), 10).await;
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_secret_key_never_reaches_the_output_even_at_trace() {
    const KEY: &str = "TopSecretKeyValue-0123456789abcdef";
    let text = format!(
        "secret_id = \"AKIDtracetest\"\nsecret_key = \"{KEY}\"\n{}",
        forty_agents()
    );
    let sim = start(SimulatorOptions::new(scenario(&text))).await;
    let dir = tempfile::tempdir().unwrap();
    let agents: Vec<_> = (0..5).map(|i| (uuid(i), "t")).collect();
    let cfg = crate::daemon::write_config(dir.path(), &sim.endpoint(), &agents);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("level = \"info\"", "level = \"trace\"");
    std::fs::write(&cfg, text).unwrap();
    for format in ["json", "text"] {
        // A fresh state each time, so both runs report first statuses.
        let _ = std::fs::remove_dir_all(dir.path().join("state"));
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text.replace("format = \"json\"", &format!("format = \"{format}\""));
        let text = text.replace("format = \"text\"", &format!("format = \"{format}\""));
        std::fs::write(&cfg, text).unwrap();
        let out = tokio::task::spawn_blocking({
            let cfg = cfg.clone();
            move || {
                let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"))
                    .arg("run")
                    .arg("--config")
                    .arg(&cfg)
                    .env("TENCENTCLOUD_SECRET_ID", "AKIDtracetest")
                    .env("TENCENTCLOUD_SECRET_KEY", KEY)
                    .env("TENCENTCLOUD_SESSION_TOKEN", "TokenValueThatIsSecret987")
                    .env_remove("CREDENTIALS_DIRECTORY")
                    .env_remove("JOURNAL_STREAM")
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap();
                std::thread::sleep(Duration::from_secs(3));
                // SAFETY: our child.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = &mut child;
                child.wait_with_output().unwrap()
            }
        })
        .await
        .unwrap();
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            all.contains("status_changed"),
            "{format}: the daemon worked: {all}"
        );
        assert!(!all.contains(KEY), "{format}: secret key in the output");
        assert!(
            !all.contains("TokenValueThatIsSecret987"),
            "{format}: session token in the output"
        );
    }
    sim.shutdown().await;
}
