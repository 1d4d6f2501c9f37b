//! The real-clock rate tests: the engine and the client against the simulator's strict
//! sliding 1-second window over real HTTP, where a few milliseconds of scheduling jitter decide
//! between 20 and 21 requests in a window. They are their own test binary so that nothing else
//! runs beside them (cargo runs test binaries one after another), and they take
//! [`ONE_AT_A_TIME`] so that they do not compete with each other either. Everything else,
//! including the logic of the same properties under paused time (`it::dispatch`), is in
//! `tests/it` and runs in parallel.

// The support is shared with `tests/it`; this binary uses only part of it.
#[allow(dead_code)]
#[path = "../support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::Duration;

use cwp_portwatch::api::ErrorClass;
use cwp_portwatch::events::Event;
use cwp_simulator::{Faults, LimiterKind, SimulatorOptions};

use support::engine::{
    changes_answered, changes_reported, every_second, forty_agents, max_arrivals_in_window, named,
    run_engine, status_of_answer,
};
use support::*;

/// Every test here holds this for its whole run: one real-clock measurement at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Attempts of a test whose failures all came while the machine starved this process.
const ATTEMPTS: u32 = 3;
/// A 5-ms tick of the test's runtime this late means its tasks (the engine, the client, the
/// simulator, which stamps arrivals on the same runtime) could not run for that long. The
/// pacer leaves 4.5–7.5 ms between the span of any 21 grants and one second
/// (`src/pacing.rs`): a stall longer than that between a grant and its arrival stamp can by
/// itself put 21 arrivals in a window, whatever the pacer did. (It was 25 ms, half a period;
/// CI then failed once with one throttle at a 21-ms lag, a run that passes on a quiet machine.)
const STARVED_LAG: Duration = Duration::from_millis(10);
/// Time the process's threads spent runnable but waiting for a CPU, as a share of the
/// attempt's wall time, from which the machine counts as starving it.
const STARVED_WAIT: f64 = 0.10;

/// How much the machine starved this process during one attempt.
#[derive(Debug)]
struct Starvation {
    /// The latest a 5-ms tick of the test's runtime came.
    max_lag: Duration,
    /// Run-queue wait of the process's threads (`/proc/self/task/*/schedstat`, field 2).
    run_queue_wait: Duration,
    wall: Duration,
}

impl Starvation {
    /// Why this attempt counts as starved, if it does.
    fn starved(&self) -> Option<String> {
        let share = self.run_queue_wait.as_secs_f64() / self.wall.as_secs_f64().max(1e-9);
        if self.max_lag >= STARVED_LAG {
            Some(format!(
                "a 5-ms tick of the runtime came {:?} late (≥ {STARVED_LAG:?})",
                self.max_lag
            ))
        } else if share >= STARVED_WAIT {
            Some(format!(
                "its threads waited {:?} for a CPU in {:?} ({:.0} % ≥ {:.0} %)",
                self.run_queue_wait,
                self.wall,
                share * 100.0,
                STARVED_WAIT * 100.0
            ))
        } else {
            None
        }
    }
}

/// The run-queue wait of every thread of this process so far (threads gone are not counted:
/// it can only understate the starvation).
fn run_queue_wait() -> Duration {
    let mut ns = 0u64;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for task in tasks.flatten() {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
            ns += stat
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_nanos(ns)
}

/// Runs `attempt` (a whole test: its own simulator, engine and assertions) while measuring
/// how starved the process was: the lateness of a 5-ms tick on the same runtime, and the
/// threads' run-queue wait. A failed attempt is retried only when the machine measurably
/// starved this process meanwhile, at most [`ATTEMPTS`] times, and says so on stderr; a
/// failure without starvation fails at once, and so does the last attempt. What a passing
/// attempt proves is the test's full assertion: retrying never loosens it.
async fn retried_when_starved<F, Fut>(name: &str, attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    for n in 1..=ATTEMPTS {
        let stop = tokio_util::sync::CancellationToken::new();
        let max_lag = Arc::new(AtomicU64::new(0));
        let monitor = {
            let (stop, max_lag) = (stop.clone(), max_lag.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    // The tick first: a tick made late by the attempt's last moments is
                    // still counted when the stop comes at the same time.
                    tokio::select! {
                        biased;
                        due = tick.tick() => {
                            let late = due.elapsed().as_micros() as u64;
                            max_lag.fetch_max(late, Ordering::Relaxed);
                        }
                        _ = stop.cancelled() => break,
                    }
                }
            })
        };
        let (wait_before, started) = (run_queue_wait(), std::time::Instant::now());
        let result = tokio::spawn(attempt()).await;
        // Two ticks more, so that a tick the attempt's last moments made late is seen.
        tokio::time::sleep(Duration::from_millis(10)).await;
        stop.cancel();
        let _ = monitor.await;
        let starvation = Starvation {
            max_lag: Duration::from_micros(max_lag.load(Ordering::Relaxed)),
            run_queue_wait: run_queue_wait().saturating_sub(wait_before),
            wall: started.elapsed(),
        };
        eprintln!("{name}: attempt {n}: {starvation:?}");
        match result {
            Ok(()) => return,
            Err(e) if e.is_panic() => match starvation.starved() {
                Some(why) if n < ATTEMPTS => {
                    eprintln!(
                        "{name}: attempt {n} failed while the machine starved this process \
                         ({why}); retrying"
                    );
                }
                Some(why) => {
                    eprintln!("{name}: the last attempt failed, starved too ({why})");
                    std::panic::resume_unwind(e.into_panic());
                }
                None => std::panic::resume_unwind(e.into_panic()),
            },
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

#[tokio::test]
async fn twenty_five_requests_in_one_second_get_throttled() {
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "twenty_five_requests_in_one_second_get_throttled",
        || async {
            let sim = start_scenario(&steady(2, "COMPLETE")).await;
            let c = good_client(&sim);
            let calls = (0..25).map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.describe_open_port_task_status(&uuid(1)).await })
            });
            let mut ok = 0;
            let mut throttled = 0;
            for call in calls {
                match call.await.unwrap() {
                    Ok(_) => ok += 1,
                    Err(e) if e.class() == ErrorClass::Throttled => throttled += 1,
                    Err(e) => panic!("unexpected {e}"),
                }
            }
            assert_eq!((ok, throttled), (20, 5));
            // The arrival count the other tests rely on sees all 25, throttled ones included.
            assert_eq!(max_arrivals_in_window(&sim.stats().log), 25);
            sim.shutdown().await;
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_the_quota_taken_by_another_tool() {
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved("half_the_quota_taken_by_another_tool", || async {
        let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
        opts.limiter = LimiterKind::SlidingWindow { per_second: 10 };
        let sim = start(opts).await;
        let client = client_for(
            &sim,
            cwp_simulator::DEFAULT_SECRET_KEY,
            Duration::from_secs(2),
        );
        let (events, stats) =
            run_engine(&sim, client, 40, every_second(), Duration::from_secs(30)).await;
        sim.shutdown().await;
        let throttled = stats.throttled as f64 / stats.requests as f64;
        let through = (stats.requests - stats.throttled) as f64 / 30.0;
        assert!(throttled < 0.05, "{:.1} % throttled", throttled * 100.0);
        assert!(through >= 9.0, "{through:.2} req/s got through");
        assert!(!named(&events, "rate_limited").is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forty_agents_every_change_exactly_once_in_order_never_throttled() {
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "forty_agents_every_change_exactly_once_in_order_never_throttled",
        || async {
            let sim = start_scenario(&forty_agents()).await;
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
            // Counted from arrivals, not from the simulator's `max_in_window`, which counts only
            // what its limiter admitted and so can never exceed 20.
            let arrived = max_arrivals_in_window(&stats.log);
            assert!(
                arrived <= 20,
                "{arrived} requests arrived in one 1-second window"
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
        },
    )
    .await;
}

/// Issue 15: the window holds under faults too (errors, 503s, resets, truncated answers and
/// stalls that time out, each retried with backoff), counted from what arrived.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_faults_never_more_than_twenty_arrive_in_any_second() {
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "under_faults_never_more_than_twenty_arrive_in_any_second",
        || async {
            let mut opts = SimulatorOptions::new(scenario(&forty_agents()));
            opts.faults = Faults {
                internal_error: 0.05,
                http_503: 0.05,
                reset: 0.03,
                truncated_json: 0.03,
                stall: 0.02,
                stall_for: Duration::from_secs(3),
            };
            opts.seed = Some(15);
            let sim = start(opts).await;
            let client = client_for(
                &sim,
                cwp_simulator::DEFAULT_SECRET_KEY,
                Duration::from_secs(1),
            );
            let (events, stats) =
                run_engine(&sim, client, 40, every_second(), Duration::from_secs(20)).await;
            sim.shutdown().await;
            assert!(
                !named(&events, "poll_failed").is_empty(),
                "no fault reached the engine"
            );
            assert!(
                stats.requests >= 20 * 15,
                "only {} requests",
                stats.requests
            );
            // The promise, counted where Tencent counts it: at arrival. Not `throttled == 0`: the
            // simulator's limiter admits a request after reading its body, and with stalls, resets
            // and truncated answers in flight on a loaded machine, admission times can bunch 21 into
            // one window that held at most 20 arrivals (seen once in CI: arrivals ≤ 20, throttled 1).
            // The fault-free tests above keep `throttled == 0`.
            let arrived = max_arrivals_in_window(&stats.log);
            assert!(
                arrived <= 20,
                "{arrived} requests arrived in one 1-second window ({:?})",
                stats.by_code
            );
        },
    )
    .await;
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
                    cwp_simulator::ScriptedAnswer::Status(s) => s.clone(),
                    cwp_simulator::ScriptedAnswer::Error(c) => {
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

/// Issue 10: one strict limiter per action. 40 agents all due every second keep the status
/// lane at its 20/s while a 3,000-port inventory (30 pages) and 39 one-page inventories go
/// through the ports lane at its own 20/s: neither action ever exceeds 20 in any 1-second
/// window, nothing is throttled, and status polling keeps its rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_action_keeps_its_own_strict_window_while_a_big_inventory_pages() {
    use cwp_portwatch::engine::{Engine, InventoryOptions};
    use cwp_portwatch::events::CollectingSink;
    use cwp_simulator::OpenPortSpec;
    use std::sync::Arc;

    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "each_action_keeps_its_own_strict_window_while_a_big_inventory_pages",
        || async {
            let sim = start_scenario(&steady(40, "COMPLETE")).await;
            let big: Vec<OpenPortSpec> = (0..3000)
                .map(|i| OpenPortSpec {
                    port: 10_000 + i,
                    process: "svc".into(),
                    pid: 1,
                })
                .collect();
            assert!(sim.set_ports(&uuid(0), big));
            let agents: Vec<cwp_portwatch::watchlist::Agent> = (0..40)
                .map(|i| cwp_portwatch::watchlist::Agent {
                    uuid: uuid(i).parse().unwrap(),
                    name: None,
                    facts: None,
                })
                .collect();
            let sink = Arc::new(CollectingSink::default());
            let options = InventoryOptions {
                enabled: true,
                rescan_interval: Duration::ZERO,
                create_missing: false,
                baseline: cwp_portwatch::inventory::Baseline::Summary,
                action_rates: [20; 5],
                action_in_flight: [32; 5],
            };
            let engine = Engine::new(
                good_client(&sim),
                sink.clone(),
                every_second(),
                &agents,
                HashMap::new(),
            )
            .with_inventory(options, Default::default(), None);
            let stop = tokio_util::sync::CancellationToken::new();
            let s = stop.clone();
            let run_for = Duration::from_secs(8);
            tokio::spawn(async move {
                tokio::time::sleep(run_for).await;
                s.cancel();
            });
            let _ = engine.run(stop).await;
            let stats = sim.stats();
            sim.shutdown().await;

            let events = sink.events();
            let baselines = named(&events, "inventory_baseline");
            assert_eq!(
                baselines.len(),
                40,
                "every inventory fetched within the run"
            );
            assert!(
                events
                    .iter()
                    .any(|e| matches!(e, Event::InventoryBaseline { ports: 3000, .. }))
            );
            assert_eq!(stats.throttled, 0, "throttled: {:?}", stats.by_code);
            let status = &stats.per_action["DescribeOpenPortTaskStatus"];
            let pages = &stats.per_action["DescribeOpenPorts"];
            assert!(status.max_arrivals_in_window <= 20, "{status:?}");
            assert!(pages.max_arrivals_in_window <= 20, "{pages:?}");
            assert_eq!(pages.accepted, 30 + 39, "{pages:?}");
            // The pages took no status quota: 40 agents due every second keep it at the limit.
            let rate = status.accepted as f64 / run_for.as_secs_f64();
            assert!(rate >= 18.5, "status polls at only {rate:.2} req/s");
        },
    )
    .await;
}

/// Three accounts in one daemon (`[[account]]`), each saturating its own quota: per account
/// never more than 20 arrivals in any 1-second window and nothing throttled, while together
/// they go well past one account's 20 (separate windows, separate limiters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_accounts_each_keep_to_their_own_strict_window() {
    use cwp_simulator::DEFAULT_SECRET_ID;
    use support::accounts::*;
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "three_accounts_each_keep_to_their_own_strict_window",
        || async {
            let sim = simulator().await;
            let app = support::app::App::new();
            three_accounts(&app, &sim, BETA_KEY);
            let d = app.daemon(&[]);
            let ids = [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID];
            until(&sim, "each account past 3 s of polling", |sim| {
                ids.iter().all(|id| polls_of(sim, id).accepted > 60)
            })
            .await;
            let out = d.stop().await;
            assert_eq!(out.code(), Some(0), "{}", out.stderr);
            let mut together = 0;
            for id in ids {
                let polls = polls_of(&sim, id);
                assert!(polls.max_arrivals_in_window <= 20, "{id}: {polls:?}");
                assert_eq!(polls.throttled, 0, "{id}: {polls:?}");
                together += polls.max_accepted_in_window;
            }
            assert!(together > 40, "{together}");
            sim.shutdown().await;
        },
    )
    .await;
}

/// Issue 20 item 3 on the real clock: with `DescribeOpenPorts` answering in 8 s (the
/// simulator's per-action latency) and 200 agents waiting for their first snapshot, the ports
/// lane is full for the whole run; the status lane, with its own in-flight budget, keeps
/// polling at the limit in every 10-s span (one shared budget let the pages take every slot:
/// status fell to `[14,18,0,0,0,0,0,0,13,20,…]` per second). The exact 19.5/s is proved on
/// paused time (`engine::lane_tests`); here the bound leaves room for a loaded machine's
/// scheduling and the counts are printed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_keeps_its_rate_in_every_10_s_span_while_pages_answer_in_8_s() {
    use cwp_portwatch::api::{Client, ClientOptions};
    use cwp_portwatch::engine::{Engine, InventoryOptions};
    use cwp_portwatch::events::CollectingSink;
    use std::sync::Arc;

    const AGENTS: usize = 200;
    const SPAN: Duration = Duration::from_secs(10);
    let _alone = ONE_AT_A_TIME.lock().await;
    retried_when_starved(
        "status_keeps_its_rate_in_every_10_s_span_while_pages_answer_in_8_s",
        || async {
            let mut opts = SimulatorOptions::new(scenario(&steady(AGENTS, "COMPLETE")));
            opts.action_latency =
                HashMap::from([("DescribeOpenPorts".to_owned(), Duration::from_secs(8))]);
            let sim = start(opts).await;
            let agents: Vec<cwp_portwatch::watchlist::Agent> = (0..AGENTS)
                .map(|i| cwp_portwatch::watchlist::Agent {
                    uuid: uuid(i).parse().unwrap(),
                    name: None,
                    facts: None,
                })
                .collect();
            let client = Client::new(
                ClientOptions {
                    endpoint: sim.endpoint().parse().unwrap(),
                    region: None,
                    timeout: Duration::from_secs(20),
                    max_idle_connections: 96,
                },
                creds(cwp_simulator::DEFAULT_SECRET_KEY),
            )
            .unwrap();
            let options = InventoryOptions {
                enabled: true,
                rescan_interval: Duration::ZERO,
                create_missing: false,
                baseline: cwp_portwatch::inventory::Baseline::Summary,
                action_rates: [20; 5],
                action_in_flight: [32; 5],
            };
            let engine = Engine::new(
                client,
                Arc::new(CollectingSink::default()),
                every_second(),
                &agents,
                HashMap::new(),
            )
            .with_inventory(options, Default::default(), None);
            let stop = tokio_util::sync::CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                // The spans are counted from the first status poll, which can come a second
                // or more after the start on a busy machine: a generous stop keeps the third
                // span whole (a short one read as 162 polls once), without changing any span.
                tokio::time::sleep(3 * SPAN + Duration::from_secs(5)).await;
                s.cancel();
            });
            let _ = engine.run(stop).await;
            let log = sim.stats().log;
            drop(sim);

            let status: Vec<Duration> = log
                .iter()
                .filter(|r| r.action == "DescribeOpenPortTaskStatus")
                .map(|r| r.at)
                .collect();
            let pages = log
                .iter()
                .filter(|r| r.action == "DescribeOpenPorts")
                .count();
            let first = status[0];
            let spans: Vec<usize> = (0..3u32)
                .map(|k| {
                    let (from, to) = (first + SPAN * k, first + SPAN * (k + 1));
                    status.iter().filter(|&&t| t >= from && t < to).count()
                })
                .collect();
            let per_second: Vec<usize> = (0..30u32)
                .map(|k| {
                    let from = first + Duration::from_secs(k.into());
                    let to = from + Duration::from_secs(1);
                    status.iter().filter(|&&t| t >= from && t < to).count()
                })
                .collect();
            eprintln!(
                "status polls per 10-s span: {spans:?}; per second: {per_second:?}; pages asked: {pages}"
            );
            // The ports lane was full: 32 in flight, 8 s each (the log holds answered requests: the
            // rounds sent at 0, 8 and 16 s are in it).
            assert!(pages >= 3 * 32, "the ports lane was not kept busy: {pages}");
            // The defect this guards against (one in-flight budget for every lane) left the
            // status lane a third of its quota or less (`[64, 32, 32]` of 198). A clean-clone
            // CI run on another machine read [139, 187, 188] once without measured starvation
            // (here: 198-199 in every span, also with two CPU hogs running), so the bounds
            // leave that machine's room and still fail that defect by a wide margin: 60 % of
            // the quota in every span, 85 % over the 30 s.
            for (k, n) in spans.iter().enumerate() {
                assert!(*n >= 120, "span {k}: {n} status polls in 10 s ({spans:?})");
            }
            let total: usize = spans.iter().sum();
            assert!(total >= 505, "{total} status polls in 30 s ({spans:?})");
        },
    )
    .await;
}

/// The retry rule itself (not a rate test; no lock): an attempt that fails after the machine
/// starved the process (here the test blocks its own single-threaded runtime for 200 ms, so
/// the 5-ms tick comes that late) is retried, at most [`ATTEMPTS`] times, and the last
/// failure still fails the test; a starved attempt that then passes passes.
#[tokio::test(flavor = "current_thread")]
async fn a_failure_is_retried_only_after_measured_starvation_and_at_most_three_times() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    fn starve() {
        // Blocks the runtime's only thread: its tick task cannot run meanwhile.
        std::thread::sleep(Duration::from_millis(200));
    }
    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    let always = tokio::spawn(async move {
        retried_when_starved("always failing", move || {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                starve();
                panic!("the assertion of a starved attempt");
            }
        })
        .await;
    })
    .await;
    assert!(
        always.unwrap_err().is_panic(),
        "the last failure fails the test"
    );
    assert_eq!(tries.load(Ordering::SeqCst), ATTEMPTS);

    let tries = Arc::new(AtomicU32::new(0));
    let counted = tries.clone();
    retried_when_starved("passing on the second attempt", move || {
        let counted = counted.clone();
        async move {
            if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::task::yield_now().await;
                starve();
                panic!("the assertion of a starved attempt");
            }
        }
    })
    .await;
    assert_eq!(tries.load(Ordering::SeqCst), 2);
}
