//! The engine against the simulator over real HTTP, and the status changes seen on each side:
//! what the simulator answered (its request log) and what the engine reported (its events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cwp_portwatch::api::Client;
use cwp_portwatch::engine::{Engine, EngineConfig};
use cwp_portwatch::events::{CollectingSink, Event};
use cwp_portwatch::pacing::max_in_any_window;
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::simulator::{RequestRecord, RunningSimulator, SimStats};
use cwp_portwatch::watchlist::Agent;
use tokio_util::sync::CancellationToken;

use super::uuid;

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
    // The spec's Statuses table, written out here rather than asked of the crate's own
    // `classify`: an oracle that shares the code under test cannot catch its mistakes.
    match answer {
        "FailedOperation.AgentOffline" => Some("AGENT_OFFLINE"),
        "FailedOperation.OpenPortTaskNotFound" => Some("NO_TASK"),
        "ResourceNotFound" => Some("NOT_FOUND"),
        "InvalidParameter.InvalidFormat" => Some("INVALID"),
        _ => None,
    }
    .map(str::to_owned)
}

/// The most requests that *arrived* at the simulator in any 1-second window `[t, t + 1 s)`,
/// counted from its request log (throttled and faulted requests included). The simulator's
/// own `max_in_window` counts only what its limiter admitted, so it can never exceed the
/// limit: this count can. One action per log: every test scenario polls one action.
// Used by `tests/rate` only: arrivals on the real clock are counted where nothing runs beside.
#[allow(dead_code)]
pub fn max_arrivals_in_window(log: &[RequestRecord]) -> usize {
    let base = tokio::time::Instant::now();
    let mut at: Vec<tokio::time::Instant> = log.iter().map(|r| base + r.at).collect();
    at.sort_unstable();
    max_in_any_window(&at)
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

/// The events called `name`.
pub fn named<'a>(events: &'a [Event], name: &str) -> Vec<&'a Event> {
    events.iter().filter(|e| e.name() == name).collect()
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

/// Runs the engine on agents [`uuid`]`(0..agents)` against `sim` for `run_for`; returns the
/// events and the simulator's stats.
pub async fn run_engine(
    sim: &RunningSimulator,
    client: Client,
    agents: usize,
    config: EngineConfig,
    run_for: Duration,
) -> (Vec<Event>, SimStats) {
    let watch: Vec<Agent> = (0..agents)
        .map(|i| Agent {
            uuid: uuid(i).parse().unwrap(),
            name: Some(format!("agent-{i}")),
            facts: None,
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
