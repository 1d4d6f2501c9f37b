//! The whole engine against the simulator over real HTTP, strict sliding-window limiter on.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cwp_portwatch::api::{ErrorClass, classify};
use cwp_portwatch::engine::{Engine, EngineConfig};
use cwp_portwatch::events::{CollectingSink, Event};
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::simulator::{RequestRecord, RunningSimulator, SimStats, SimulatorOptions};
use cwp_portwatch::watchlist::Agent;
use tokio_util::sync::CancellationToken;

use crate::support::*;

const STATUSES: [&str; 6] = [
    "COLLECTING",
    "COMPLETE",
    "error:FailedOperation.AgentOffline",
    "FAILED",
    "error:FailedOperation.OpenPortTaskNotFound",
    "COLLECTING",
];

/// 40 agents, each changing every 6–9 s over ~27 s, starting at different statuses.
pub fn forty_agents() -> String {
    let mut s = String::new();
    for i in 0..40 {
        s.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\ntimeline = [\n",
            uuid(i)
        ));
        let mut at = 0;
        let mut k = i % STATUSES.len();
        while at <= 27 {
            let entry = STATUSES[k % STATUSES.len()];
            let (kind, value) = match entry.strip_prefix("error:") {
                Some(code) => ("error", code),
                None => ("status", entry),
            };
            s.push_str(&format!("  {{ at = \"{at}s\", {kind} = \"{value}\" }},\n"));
            at += 6 + (i + k) % 4;
            k += 1;
        }
        s.push_str("]\n");
    }
    s
}

/// The status an answer in the simulator's log means, if it is one.
pub fn status_of_answer(answer: &str) -> Option<String> {
    if answer.starts_with("fault:") {
        return None;
    }
    if answer.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
        return Some(answer.to_string());
    }
    match classify(answer) {
        ErrorClass::AgentStatus(s) => Some(s.to_string()),
        _ => None,
    }
}

/// Per agent, the status changes the simulator's answers imply, in order.
pub fn changes_answered(log: &[RequestRecord]) -> HashMap<String, Vec<String>> {
    let mut last: HashMap<String, String> = HashMap::new();
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for r in log {
        let (Some(uuid), Some(status)) = (&r.uuid, status_of_answer(&r.answer)) else {
            continue;
        };
        if last.get(uuid) != Some(&status) {
            last.insert(uuid.clone(), status.clone());
            out.entry(uuid.clone()).or_default().push(status);
        }
    }
    out
}

/// Per agent, the status changes reported as events, in order.
pub fn changes_reported(events: &[Event]) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for e in events {
        if let Event::StatusChanged {
            uuid, to_status, ..
        } = e
        {
            out.entry(uuid.clone())
                .or_default()
                .push(to_status.to_string());
        }
    }
    out
}

/// 20/s, 32 in flight, every agent due every second: always more work than quota.
pub fn every_second() -> EngineConfig {
    EngineConfig {
        requests_per_second: 20,
        max_in_flight: 32,
        intervals: Intervals {
            settled: Duration::from_secs(1),
            collecting: Duration::from_secs(1),
            offline: Duration::from_secs(1),
        },
        once: false,
    }
}

/// Runs the engine against `sim` for `run_for`; returns the events and the simulator's stats.
pub async fn run_engine(
    sim: &RunningSimulator,
    client: cwp_portwatch::api::Client,
    agents: usize,
    config: EngineConfig,
    run_for: Duration,
) -> (Vec<Event>, SimStats) {
    let watch: Vec<Agent> = (0..agents)
        .map(|i| Agent {
            uuid: uuid(i).parse().unwrap(),
            name: Some(format!("agent-{i}")),
        })
        .collect();
    let sink = Arc::new(CollectingSink::default());
    let engine = Engine::new(client, sink.clone(), config, &watch, HashMap::new());
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        tokio::time::sleep(run_for).await;
        s.cancel();
    });
    let _ = engine.run(stop).await;
    (sink.events(), sim.stats())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_agents_every_change_exactly_once_in_order_never_throttled() {
    let _serial = REAL_TIME.lock().await;
    let sim = start(SimulatorOptions::new(scenario(&forty_agents()))).await;
    let scripted = sim_scripted();
    let config = every_second();
    let (events, stats) =
        run_engine(&sim, good_client(&sim), 40, config, Duration::from_secs(30)).await;
    sim.shutdown().await;

    assert_eq!(
        stats.throttled, 0,
        "the simulator throttled us: {:?}",
        stats.by_code
    );
    assert!(
        stats.max_in_window <= 20,
        "max in a window {}",
        stats.max_in_window
    );
    assert_eq!(
        stats.max_in_flight_per_uuid, 1,
        "two requests in flight for one agent"
    );
    // The quota is used: 40 agents at 1 s want 40/s, so we should run at the limit.
    let rate = stats.requests as f64 / 30.0;
    assert!(rate >= 18.5, "only {rate:.2} req/s");

    let answered = changes_answered(&stats.log);
    let reported = changes_reported(&events);
    assert_eq!(
        reported, answered,
        "reported changes differ from what was answered"
    );
    // Every scripted change up to 3 s before the end was seen, in order.
    for (uuid, script) in scripted {
        let got = reported.get(&uuid).cloned().unwrap_or_default();
        let due: Vec<String> = script
            .iter()
            .filter(|(at, _)| *at <= 27 - 3)
            .map(|(_, s)| s.clone())
            .collect();
        assert!(
            got.len() >= due.len() && got[..due.len()] == due[..],
            "{uuid}: scripted {due:?}, reported {got:?}"
        );
    }
    // Each change's `from_status` chains from the previous one, starting at UNKNOWN.
    let mut last: HashMap<String, String> = HashMap::new();
    for e in &events {
        if let Event::StatusChanged {
            uuid,
            from_status,
            to_status,
            ..
        } = e
        {
            let prev = last.insert(uuid.clone(), to_status.to_string());
            assert_eq!(from_status, prev.as_deref().unwrap_or("UNKNOWN"));
            assert_ne!(from_status, to_status);
        }
    }
}

/// The scripted changes of [`forty_agents`] as (seconds, status), merged where consecutive
/// entries give the same status.
fn sim_scripted() -> HashMap<String, Vec<(u64, String)>> {
    let sc = scenario(&forty_agents());
    sc.agents
        .iter()
        .map(|a| {
            let mut v: Vec<(u64, String)> = Vec::new();
            for e in &a.timeline {
                let status = match &e.answer {
                    cwp_portwatch::simulator::ScriptedAnswer::Status(s) => s.clone(),
                    cwp_portwatch::simulator::ScriptedAnswer::Error(c) => {
                        status_of_answer(c).expect("scripted errors are statuses")
                    }
                };
                if v.last().map(|(_, s)| s) != Some(&status) {
                    v.push((e.at.as_secs(), status));
                }
            }
            (a.uuid.clone(), v)
        })
        .collect()
}
