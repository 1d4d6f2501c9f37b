//! `cwp-portwatch run`: the daemon, as systemd sees it.
//!
//! Owns the service-manager side: `READY=1` once signal handlers are in place, `STATUS=`
//! every few seconds, `WATCHDOG=1` only while the engine's heartbeat advances, SIGHUP as
//! `RELOADING=1` + `MONOTONIC_USEC` → reload → `READY=1`, and `STOPPING=1` on SIGTERM/SIGINT
//! before the engine drains. Start-up is [`super::startup`], each account's engine, state
//! and discovery `account_run` (and `discovering`), the reload decision [`super::reload`],
//! the stop [`crate::shutdown`].
//!
//! The entry is [`super::daemon`]. One daemon (`single`) is `prepare` (policy, metrics
//! bound, `state_dir` checked) then `lead` (the accounts until a stop). With `[ha]`
//! (`super::ha_run`) the process waits as a standby
//! between the two, and `lead` is one leader's term: it also ends when leadership is lost
//! (`Ended::Deposed`, exit [`EX_TEMPFAIL`]), and says in the log and `STATUS=` when the
//! leadership's fence closes and opens.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use std::pin::Pin;
use std::task::Poll;

use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::account::AccountSink;
use crate::api::Client;
use crate::config::accounts::AccountPlan;
use crate::delivery::{Delivery, DeliveryOptions};
use crate::engine::{Engine, EngineReport};
use crate::events::{Event, EventSink, Tee, TracingSink, WatchlistSource};
use crate::logging;
use crate::metrics::{Health, Metrics, MetricsServer};
use crate::shutdown::{self, Shutdown, StopSignals};
use crate::state;
use crate::tls::TlsTrust;
use crate::watchlist::Watchlist;

use super::CommandError;
use super::account_run::{AccountRun, Shared, ToDaemon, release_freed_memory};
use super::startup;

/// How often `STATUS=` is refreshed.
pub(super) const STATUS_EVERY: Duration = Duration::from_secs(5);
/// `[ha]`: how often a leader looks at its fence to say when it closes and opens.
const FENCE_WATCH_EVERY: Duration = Duration::from_millis(200);

/// The config and every account's plan, with logging set up as the config says.
pub(super) fn load(
    config: &Path,
) -> Result<(crate::config::Settings, Vec<(AccountPlan, Watchlist)>), CommandError> {
    startup::load_accounts(config)
        .map_err(CommandError::from)
        .and_then(|loaded| {
            logging::init(loaded.0.log.format, &loaded.0.log.level)?;
            Ok(loaded)
        })
}

/// Runs one daemon (no `[ha]`) until SIGTERM/SIGINT (or an engine's death).
pub(super) async fn single(
    settings: crate::config::Settings,
    plans: Vec<(AccountPlan, Watchlist)>,
) -> Result<ExitCode, CommandError> {
    let Prepared {
        policy,
        metrics,
        server,
    } = prepare(&settings, &plans).await?;
    let health = Arc::new(Health::default());
    let end = lead(
        settings,
        plans,
        Leading {
            policy,
            metrics,
            server,
            health,
            shutdown: Shutdown::new(),
            hup: None,
            term: None,
        },
    )
    .await?;
    Ok(end.exit_code())
}

/// What start-up checks and binds before anything polls (and, with `[ha]`, before the
/// process waits as a standby).
pub(super) struct Prepared {
    /// One policy for every account.
    pub(super) policy: Option<Arc<crate::policy::Policy>>,
    /// One registry handle per account, when `[metrics]` is on.
    pub(super) metrics: Option<Vec<Arc<Metrics>>>,
    /// The bound listener, not serving yet.
    pub(super) server: Option<MetricsServer>,
}

/// The policy checked, the metrics listener bound (a taken port fails the start, clearly),
/// `state_dir` proved usable: before anything else starts.
pub(super) async fn prepare(
    settings: &crate::config::Settings,
    plans: &[(AccountPlan, Watchlist)],
) -> Result<Prepared, CommandError> {
    // One handle per account, all in one registry; with several accounts their series carry
    // `account`.
    let names: Vec<&str> = if settings.several_accounts() {
        plans.iter().map(|(plan, _)| plan.name.as_str()).collect()
    } else {
        Vec::new()
    };
    // One policy for every account, checked before anything starts (as the config is).
    let policy = super::policy::load_policy(settings)?;
    let metrics = startup::metrics(&settings.metrics, &names).await?;
    // Before any poll: a state that could not be persisted is an error now, not a loss later.
    state::prepare_dir(&settings.state_dir)?;
    let (metrics, server) = match metrics {
        Some((handles, server)) => (Some(handles), Some(server)),
        None => (None, None),
    };
    Ok(Prepared {
        policy,
        metrics,
        server,
    })
}

/// What [`lead`] runs with besides the configuration.
pub(super) struct Leading<'t> {
    pub(super) policy: Option<Arc<crate::policy::Policy>>,
    pub(super) metrics: Option<Vec<Arc<Metrics>>>,
    /// The listener to serve once the accounts run; `None` when it serves already (`[ha]`:
    /// since the standby) or `[metrics]` is off.
    pub(super) server: Option<MetricsServer>,
    /// What `/healthz` follows: told the accounts once they run.
    pub(super) health: Arc<Health>,
    pub(super) shutdown: Shutdown,
    /// The SIGHUP handler when installed already (`[ha]`: before the standby's `READY=1`,
    /// and SIGTERM/SIGINT on `shutdown` with it); else both are installed here.
    pub(super) hup: Option<Signal>,
    /// `[ha]`: this process's term as leader.
    pub(super) term: Option<Term<'t>>,
}

/// `[ha]`: what the run watches of its leadership.
#[cfg_attr(not(feature = "ha"), allow(dead_code))]
pub(super) struct Term<'t> {
    /// This process's name in the election.
    pub(super) name: String,
    /// The election's prefix.
    pub(super) election: String,
    /// Open while leadership is proven (the API clients check it before each request).
    pub(super) fence: crate::ha::Fence,
    /// Resolves when this process no longer leads.
    pub(super) deposed: Pin<&'t mut (dyn Future<Output = Deposed> + Send + 't)>,
}

/// Why leadership ended.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "ha"), allow(dead_code))]
pub(super) struct Deposed {
    /// What happened.
    pub(super) reason: String,
    /// Who leads now, when known.
    pub(super) holder: Option<String>,
}

/// How a run ended (errors aside).
#[derive(Debug)]
pub(super) enum Ended {
    /// A stop (SIGTERM/SIGINT), engines drained and state saved.
    Stopped,
    /// `[ha]`: leadership lost (`leadership_lost` emitted); engines stopped without sending,
    /// state saved locally only.
    Deposed,
}

impl Ended {
    /// The process's exit code: 0 after a stop, [`EX_TEMPFAIL`] after a lost leadership.
    pub(super) fn exit_code(&self) -> ExitCode {
        match self {
            Ended::Stopped => ExitCode::SUCCESS,
            Ended::Deposed => ExitCode::from(EX_TEMPFAIL),
        }
    }
}

/// The exit code of a deposed leader (sysexits' `EX_TEMPFAIL`): a failure to systemd, so
/// `Restart=on-failure` starts it again, as a standby (`docs/ha.md`).
pub const EX_TEMPFAIL: u8 = 75;

/// Why the loop ended.
enum Stop {
    Signal,
    EngineEnded(Box<(usize, EngineOutcome)>),
    FailedLate(CommandError),
    Deposed(Deposed),
}

/// Runs the accounts until a stop (or, with `[ha]`, until leadership is lost): the daemon of
/// a single host, and a leader's whole term.
pub(super) async fn lead(
    settings: crate::config::Settings,
    plans: Vec<(AccountPlan, Watchlist)>,
    leading: Leading<'_>,
) -> Result<Ended, CommandError> {
    let Leading {
        mut policy,
        metrics,
        server,
        health,
        shutdown,
        hup,
        term,
    } = leading;
    // What the loop reads of the term, apart from what it polls.
    let (term, mut deposed_future) = match term {
        Some(Term {
            name,
            election,
            fence,
            deposed,
        }) => (Some((name, election, fence)), Some(deposed)),
        None => (None, None),
    };
    let fence = term.as_ref().map(|(_, _, fence)| fence.clone());
    let log: Arc<dyn EventSink> = Arc::new(TracingSink);
    let several = settings.several_accounts();
    // Alert delivery, when `[[sink]]` blocks are configured: teed with the log for every
    // account (the account's mark reaches it through `AccountSink`), and every engine makes
    // the outboxes durable before its state files.
    let delivery = start_delivery(&settings, metrics.as_deref(), &log, &shutdown)?;
    let sink: Arc<dyn EventSink> = match &delivery {
        Some(delivery) => Arc::new(Tee(log.clone(), delivery.clone())),
        None => log.clone(),
    };
    if let Some((name, election, _)) = &term {
        // Through the sinks too: a failover is worth an alert.
        sink.emit(&Event::LeaderElected {
            name: name.clone(),
            election: election.clone(),
        });
    }
    let barrier = delivery.as_ref().map(|d| d.barrier());
    // Every account's discovery results, tagged with the account's index.
    let (found, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
    // Accounts whose start was retried, once they connect (see `account_run`).
    let (started, mut started_rx) = tokio::sync::mpsc::unbounded_channel();
    let to_daemon = ToDaemon { found, started };
    let mut accounts = Vec::with_capacity(plans.len());
    for (index, (plan, watchlist)) in plans.into_iter().enumerate() {
        // With one account, events and metrics stay exactly as they were.
        let log_sink: Arc<dyn EventSink> = if several {
            Arc::new(AccountSink::new(sink.clone(), &plan.name))
        } else {
            sink.clone()
        };
        // The account's registry handle sees the events its log sees, from the same sink:
        // counters agree with the log by construction.
        let handle = metrics.as_ref().map(|handles| handles[index].clone());
        let account_sink: Arc<dyn EventSink> = match &handle {
            Some(handle) => Arc::new(Tee(log_sink, handle.clone())),
            None => log_sink,
        };
        let started = AccountRun::start(
            index,
            plan,
            watchlist,
            account_sink,
            Shared {
                metrics: handle.as_ref(),
                policy: policy.clone(),
                barrier: barrier.clone(),
            },
            &shutdown,
            &to_daemon,
        )
        .await;
        match started {
            Ok(account) => accounts.push(account),
            Err(e) => {
                // Refreshers and discoveries already started must not outlive the failure.
                finish_delivery(delivery.as_deref()).await;
                shutdown.finish(shutdown::GRACE).await;
                return Err(e);
            }
        }
    }
    release_freed_memory();
    // `/healthz` follows every account's heartbeat, as the watchdog below does: one stuck
    // loop among several is a 503, not hidden behind the first account's.
    health.follow(
        accounts
            .iter()
            .map(|a| (a.name.clone(), a.status.clone()))
            .collect(),
    );
    if let (Some(handles), Some(server)) = (&metrics, server) {
        // Any handle encodes the whole registry (every account's series).
        shutdown.spawn(server.serve_health(handles[0].clone(), health.clone(), shutdown.token()));
    }
    let version = env!("CARGO_PKG_VERSION").to_string();
    let agents: usize = accounts.iter().map(AccountRun::agent_count).sum();
    sink.emit(&Event::DaemonStarted {
        version: version.clone(),
        agents,
    });
    for account in &accounts {
        let agents = account.agent_count();
        account.sink.emit(&Event::WatchlistLoaded {
            agents,
            added: agents,
            removed: 0,
            source: WatchlistSource::Watchlist,
            skipped: 0,
        });
    }
    // Signal handlers before READY=1: a SIGHUP or SIGTERM right after start must not kill us.
    let mut hup = match hup {
        Some(hup) => hup,
        None => {
            let handlers =
                StopSignals::install().and_then(|stop| Ok((stop, signal(SignalKind::hangup())?)));
            match handlers {
                Ok((stop, hup)) => {
                    shutdown.cancel_on(stop);
                    hup
                }
                Err(e) => {
                    finish_delivery(delivery.as_deref()).await;
                    shutdown.finish(shutdown::GRACE).await;
                    return Err(CommandError::Signals(e));
                }
            }
        }
    };
    for account in &mut accounts {
        account.spawn(&shutdown);
    }
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("watching {agents} agents, starting")),
    ]);

    // STATUS every few seconds; WATCHDOG=1 every half of WatchdogSec, and only while every
    // dispatcher's heartbeat advances, so a wedged loop gets restarted by systemd.
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `[ha]`: the fence looked at often, so that losing and regaining the proof of leadership
    // is said when it happens, not at the next STATUS.
    let mut fence_watch = tokio::time::interval(FENCE_WATCH_EVERY);
    fence_watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut proven = true;
    let mut last_beats: Vec<u64> = vec![0; accounts.len()];
    let stop = loop {
        let deposed = async {
            match deposed_future.as_mut() {
                Some(deposed) => deposed.as_mut().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break Stop::Signal,
            lost = deposed => break Stop::Deposed(lost),
            finished = first_finished(&mut accounts) => break Stop::EngineEnded(Box::new(finished)),
            Some((index, connected)) = started_rx.recv() => {
                match accounts[index].finish_start(connected, &shutdown) {
                    Ok(()) => accounts[index].spawn(&shutdown),
                    Err(e) => break Stop::FailedLate(e),
                }
            }
            Some((index, found)) = found_rx.recv() => {
                let account: &mut AccountRun = &mut accounts[index];
                account
                    .discovery
                    .apply(found, &account.listed, &account.settings, &account.control, account.sink.as_ref())
                    .await;
            }
            _ = hup.recv() => {
                reload(&settings.config_path, &mut accounts, sink.as_ref(), &mut policy).await;
                notify(&[NotifyState::Ready, NotifyState::Status(&status_line(&accounts, fence.as_ref()))]);
            }
            _ = fence_watch.tick(), if fence.is_some() => {
                let now = fence.as_ref().is_some_and(crate::ha::Fence::may_send);
                if now != proven {
                    proven = now;
                    if proven {
                        tracing::info!("fence open again (a lease renewal was answered): polling resumes");
                    } else {
                        tracing::warn!(
                            "fence closed: cannot prove leadership, not polling until a lease \
                             renewal is answered; a standby takes over if this lasts beyond \
                             the lease"
                        );
                    }
                    notify(&[NotifyState::Status(&status_line(&accounts, fence.as_ref()))]);
                }
            }
            _ = ticker.tick() => {
                let beats: Vec<u64> = accounts
                    .iter()
                    .map(|a| a.status.beats.load(Ordering::Relaxed))
                    .collect();
                let line = status_line(&accounts, fence.as_ref());
                if watchdog.is_some() && every_account_beat(&beats, &last_beats) {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                } else {
                    notify(&[NotifyState::Status(&line)]);
                }
                last_beats = beats;
            }
        }
    };
    let (engine_result, failed_late, deposed) = match stop {
        Stop::Signal => (None, None, None),
        Stop::EngineEnded(finished) => (Some(*finished), None, None),
        Stop::FailedLate(e) => (None, Some(e), None),
        Stop::Deposed(lost) => (None, None, Some(lost)),
    };
    if let (Some(lost), Some((name, _, _))) = (&deposed, &term) {
        // Said at once; the fence closed before this, so nothing is sent while the engines stop.
        sink.emit(&Event::LeadershipLost {
            name: name.clone(),
            holder: lost.holder.clone(),
            reason: lost.reason.clone(),
        });
    }
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status(if deposed.is_some() {
            "stopping: leadership lost; no request is sent"
        } else {
            "stopping: waiting for answers in flight"
        }),
    ]);
    shutdown.cancel();
    // Each engine drains its answers in flight within its own bound; then the rest stops.
    let mut results = Vec::with_capacity(accounts.len());
    results.extend(engine_result.map(|(_, result)| result));
    for account in &mut accounts {
        if let Some(task) = account.task.take() {
            results.push(task.await);
        }
    }
    shutdown.finish(shutdown::GRACE).await;
    let mut agents = 0;
    let mut failed = failed_late.map(Err);
    for result in results {
        match result {
            Ok((engine, _)) => agents += engine.agent_count(),
            Err(e) if failed.is_none() => {
                tracing::error!("the polling engine failed: {e}");
                failed = Some(Err(CommandError::Engine(e.to_string())));
            }
            Err(_) => {}
        }
    }
    if failed.is_none() {
        sink.emit(&Event::DaemonStopping { version, agents });
    }
    // After the engines' last events: every outbox on disk before the process ends.
    finish_delivery(delivery.as_deref()).await;
    match (failed, deposed) {
        (Some(failed), _) => failed,
        (None, Some(_)) => Ok(Ended::Deposed),
        (None, None) => Ok(Ended::Stopped),
    }
}

/// Resolves the sinks' files and starts delivery, when `[[sink]]` blocks are configured.
/// Its series are process-wide: any account's handle on the registry updates them.
fn start_delivery(
    settings: &crate::config::Settings,
    metrics: Option<&[Arc<Metrics>]>,
    log: &Arc<dyn EventSink>,
    shutdown: &Shutdown,
) -> Result<Option<Arc<Delivery>>, CommandError> {
    if settings.sinks.is_empty() {
        return Ok(None);
    }
    let sinks = settings
        .sinks
        .iter()
        .map(crate::delivery::settings::resolve)
        .collect::<Result<Vec<_>, _>>()
        .map_err(crate::delivery::DeliveryError::from)?;
    let options = DeliveryOptions {
        trust: TlsTrust::with_ca_file(settings.api.ca_file.clone()),
        ..DeliveryOptions::default()
    };
    let delivery = Delivery::start_with(
        sinks,
        &settings.state_dir,
        metrics.map(|handles| handles[0].clone()),
        log.clone(),
        shutdown.token(),
        options,
    )?;
    Ok(Some(delivery))
}

/// Ends delivery's workers and persists every outbox (bounded: see [`Delivery::finish`]).
async fn finish_delivery(delivery: Option<&Delivery>) {
    if let Some(delivery) = delivery {
        delivery.finish().await;
    }
}

/// What one engine's task yields.
type EngineOutcome = Result<(Engine<Client>, EngineReport), tokio::task::JoinError>;

/// The first engine task to end, with its account's index (pending while none has).
async fn first_finished(accounts: &mut [AccountRun]) -> (usize, EngineOutcome) {
    std::future::poll_fn(|cx| {
        for (index, account) in accounts.iter_mut().enumerate() {
            let Some(task) = &mut account.task else {
                continue;
            };
            if let Poll::Ready(result) = Pin::new(task).poll(cx) {
                account.task = None;
                return Poll::Ready((index, result));
            }
        }
        Poll::Pending
    })
    .await
}

/// The watchdog's gate: `WATCHDOG=1` only when every account's dispatcher heartbeat moved
/// since the last tick (`beats` now, `last` then, one per account). One stalled account
/// stops the pings, so systemd restarts a daemon with any wedged loop.
fn every_account_beat(beats: &[u64], last: &[u64]) -> bool {
    beats.len() == last.len() && beats.iter().zip(last).all(|(now, then)| now != then)
}

/// `STATUS=`: the one engine's line, or one part per account; `[ha]`: prefixed `leader: `,
/// or why a leader does not poll.
fn status_line(accounts: &[AccountRun], fence: Option<&crate::ha::Fence>) -> String {
    if fence.is_some_and(|fence| !fence.may_send()) {
        return NOT_PROVEN.to_owned();
    }
    let line = accounts_line(accounts);
    match fence {
        Some(_) => format!("leader: {line}"),
        None => line,
    }
}

/// `STATUS=` of a leader whose fence is closed.
pub(super) const NOT_PROVEN: &str =
    "leader, not polling: cannot prove leadership (etcd unreachable)";

fn accounts_line(accounts: &[AccountRun]) -> String {
    match accounts {
        [one] => one.line(),
        several => several
            .iter()
            .map(|a| format!("{}: {}", a.name, a.line()))
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// Tells the service manager (no-op without `$NOTIFY_SOCKET`). Failures are logged, never
/// fatal: a daemon run by hand has no one to tell.
pub(super) fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// SIGHUP: re-read the config, every account's watchlist and the policy file; apply them per
/// account, or keep the running ones and say why. Adding or removing an account waits for a
/// restart (its engine, credentials and state file are set up at start). A policy file with
/// a mistake refuses the reload as a bad config does (`config_rejected` naming
/// file:line:col): the running config and policy stay. A changed policy goes to every
/// engine, which evaluates the stored inventories again (no API call).
async fn reload(
    config: &Path,
    accounts: &mut [AccountRun],
    sink: &dyn EventSink,
    policy: &mut Option<Arc<crate::policy::Policy>>,
) {
    // RELOADING=1 and MONOTONIC_USEC in one datagram, as systemd expects.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let path = config.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || {
        let (settings, plans) = startup::load_accounts(&path)?;
        let policy = super::policy::load_policy(&settings)?;
        Ok::<_, crate::config::ConfigErrors>((plans, policy))
    })
    .await;
    let mut plans = match loaded {
        Ok(Ok((plans, new_policy))) => {
            if new_policy != *policy {
                *policy = new_policy;
                for account in accounts.iter_mut() {
                    account.set_policy(policy.clone());
                }
            }
            plans
        }
        Ok(Err(problems)) => {
            sink.emit(&Event::ConfigRejected {
                error_message: problems.to_string(),
            });
            return;
        }
        Err(e) => {
            sink.emit(&Event::ConfigRejected {
                error_message: format!("reload failed: {e}"),
            });
            return;
        }
    };
    for (plan, _) in &plans {
        if !accounts.iter().any(|a| a.name == plan.name) {
            tracing::warn!(
                account = %plan.name,
                "reload: a new account starts at the next restart"
            );
        }
    }
    for account in accounts.iter_mut() {
        match plans.iter().position(|(plan, _)| plan.name == account.name) {
            Some(at) => {
                let (plan, watchlist) = plans.swap_remove(at);
                account.reload(plan.settings, watchlist.agents).await;
            }
            None => tracing::warn!(
                account = %account.name,
                "reload: the account is no longer configured; it keeps running as it is until \
                 the next restart"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::every_account_beat;

    /// Issue 21 item 12: the `beats != last_beats` gate of the watchdog, per account.
    #[test]
    fn the_watchdog_pings_only_when_every_accounts_heartbeat_moved() {
        // Every account moved: ping.
        assert!(every_account_beat(&[5, 9, 2], &[4, 8, 1]));
        // One of three did not (a wedged loop among healthy ones): no ping.
        assert!(!every_account_beat(&[5, 8, 2], &[4, 8, 1]));
        assert!(!every_account_beat(&[4, 9, 2], &[4, 8, 1]));
        // None moved: no ping; the first tick before any beat: no ping.
        assert!(!every_account_beat(&[4, 8, 1], &[4, 8, 1]));
        assert!(!every_account_beat(&[0], &[0]));
        // One account, moving tick after tick: a ping every tick.
        let mut last = vec![0];
        for beat in 1..10 {
            assert!(every_account_beat(&[beat], &last), "tick {beat}");
            last = vec![beat];
        }
        // A wrapped counter still moved.
        assert!(every_account_beat(&[0], &[u64::MAX]));
    }
}
