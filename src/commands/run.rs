//! `cwp-portwatch run`: the daemon, as systemd sees it.
//!
//! Owns the service-manager side: `READY=1` once signal handlers are in place, `STATUS=`
//! every few seconds, `WATCHDOG=1` only while the engine's heartbeat advances, SIGHUP as
//! `RELOADING=1` + `MONOTONIC_USEC` → reload → `READY=1`, and `STOPPING=1` on SIGTERM/SIGINT
//! before the engine drains. Start-up is [`super::startup`], the reload decision
//! [`super::reload`], the stop [`crate::shutdown`].

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{SignalKind, signal};

use tokio::sync::watch;

use std::pin::Pin;
use std::task::Poll;

use crate::account::AccountSink;
use crate::agent_uuid::AgentUuid;
use crate::api::Client;
use crate::config::Settings;
use crate::config::accounts::AccountPlan;
use crate::discovery::{self, Discovered, Discovery};
use crate::engine::{Control, Engine, EngineReport, EngineStatus, InventoryOptions};
use crate::events::{Event, EventSink, Tee, TracingSink, WatchlistSource};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::logging;
use crate::metrics::Metrics;
use crate::shutdown::{self, Shutdown, StopSignals};
use crate::state::{self, SetAside, StateError, StateFile};
use crate::tracker::KnownMap;
use crate::watchlist::Agent;
use crate::watchlist::Watchlist;

use super::CommandError;
use super::reload::apply_reload;
use super::startup::{self, engine_config};

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM/SIGINT (or an engine's death).
pub async fn run(config: &Path) -> Result<ExitCode, CommandError> {
    let (settings, plans) = startup::load_accounts(config)
        .map_err(CommandError::from)
        .and_then(|loaded| {
            logging::init(loaded.0.log.format, &loaded.0.log.level)?;
            Ok(loaded)
        })?;
    // Bound before anything else starts: a taken port fails the start, clearly. One handle
    // per account, all in one registry; with several accounts their series carry `account`.
    let names: Vec<&str> = if settings.several_accounts() {
        plans.iter().map(|(plan, _)| plan.name.as_str()).collect()
    } else {
        Vec::new()
    };
    let metrics = startup::metrics(&settings.metrics, &names).await?;
    let sink: Arc<dyn EventSink> = Arc::new(TracingSink);
    // Before any poll: a state that could not be persisted is an error now, not a loss later.
    state::prepare_dir(&settings.state_dir)?;
    let several = settings.several_accounts();
    let shutdown = Shutdown::new();
    // Every account's discovery results, tagged with the account's index.
    let (found_tx, mut found_rx) = tokio::sync::mpsc::unbounded_channel();
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
        let handle = metrics.as_ref().map(|(handles, _)| handles[index].clone());
        let account_sink: Arc<dyn EventSink> = match &handle {
            Some(handle) => Arc::new(Tee(log_sink, handle.clone())),
            None => log_sink,
        };
        let started = AccountRun::start(
            index,
            plan,
            watchlist,
            account_sink,
            handle.as_ref(),
            &shutdown,
            &found_tx,
        )
        .await;
        match started {
            Ok(account) => accounts.push(account),
            Err(e) => {
                // Refreshers and discoveries already started must not outlive the failure.
                shutdown.finish(shutdown::GRACE).await;
                return Err(e);
            }
        }
    }
    release_freed_memory();
    if let Some((handles, server)) = metrics {
        // Any handle encodes the whole registry (every account's series).
        let registry = handles[0].clone();
        // `/healthz` follows the first account's heartbeat; each engine beats on its own
        // timer, so one stuck loop among several is caught by the watchdog below instead.
        let status = accounts[0].status.clone();
        shutdown.spawn(server.serve(registry, status, shutdown.token()));
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
    let handlers =
        StopSignals::install().and_then(|stop| Ok((stop, signal(SignalKind::hangup())?)));
    let (stop, mut hup) = match handlers {
        Ok(pair) => pair,
        Err(e) => {
            shutdown.finish(shutdown::GRACE).await;
            return Err(CommandError::Signals(e));
        }
    };
    shutdown.cancel_on(stop);
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
    let mut last_beats: Vec<u64> = vec![0; accounts.len()];
    let engine_result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            finished = first_finished(&mut accounts) => break Some(finished),
            Some((index, found)) = found_rx.recv() => {
                let account: &mut AccountRun = &mut accounts[index];
                account
                    .discovery
                    .apply(found, &account.listed, &account.settings, &account.control, account.sink.as_ref())
                    .await;
            }
            _ = hup.recv() => {
                reload(&settings.config_path, &mut accounts, sink.as_ref()).await;
                notify(&[NotifyState::Ready, NotifyState::Status(&status_line(&accounts))]);
            }
            _ = ticker.tick() => {
                let beats: Vec<u64> = accounts
                    .iter()
                    .map(|a| a.status.beats.load(Ordering::Relaxed))
                    .collect();
                let line = status_line(&accounts);
                let all_advanced = beats.iter().zip(&last_beats).all(|(now, last)| now != last);
                if watchdog.is_some() && all_advanced {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                } else {
                    notify(&[NotifyState::Status(&line)]);
                }
                last_beats = beats;
            }
        }
    };
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: waiting for answers in flight"),
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
    for result in results {
        match result {
            Ok((engine, _)) => agents += engine.agent_count(),
            Err(e) => {
                tracing::error!("the polling engine failed: {e}");
                return Err(CommandError::Engine(e.to_string()));
            }
        }
    }
    sink.emit(&Event::DaemonStopping { version, agents });
    Ok(ExitCode::SUCCESS)
}

/// What one engine's task yields.
type EngineOutcome = Result<(Engine<Client>, EngineReport), tokio::task::JoinError>;

/// One account's share of the daemon: its own engine (limiters, rate control, credentials
/// gate, client), state file, discovery and listed agents. Accounts share only the event
/// sink, the metrics registry and the shutdown.
struct AccountRun {
    /// `default` or the `[[account]]` name.
    name: String,
    /// The settings this account runs with (shared ones + its own).
    settings: Settings,
    /// The shared sink, marking this account's events when there are several.
    sink: Arc<dyn EventSink>,
    /// Reloads, seeds and forgets for its engine.
    control: tokio::sync::mpsc::UnboundedSender<Control>,
    discovery: Discovering,
    /// The listed agents, kept only while discovery needs them to merge with.
    listed: Vec<Agent>,
    status: Arc<EngineStatus>,
    /// Built, not yet running (until the signal handlers are in place).
    engine: Option<Engine<Client>>,
    /// Running.
    task: Option<tokio::task::JoinHandle<(Engine<Client>, EngineReport)>>,
}

impl AccountRun {
    /// Loads its state, connects its client (starting its credentials refresher), builds
    /// its engine and starts its discovery, whose results go to `found` tagged `index`.
    async fn start(
        index: usize,
        plan: AccountPlan,
        watchlist: Watchlist,
        sink: Arc<dyn EventSink>,
        metrics: Option<&Arc<Metrics>>,
        shutdown: &Shutdown,
        found: &tokio::sync::mpsc::UnboundedSender<(usize, Arc<Discovered>)>,
    ) -> Result<AccountRun, CommandError> {
        let settings = plan.settings;
        let state_file = StateFile::for_account(&settings.state_dir, &plan.name);
        let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
        let connected = startup::connect(
            &settings,
            &crate::credentials::Environment::from_process(),
            shutdown,
        )
        .await?;
        // Discovery sends through its own clone of the client (same credentials, its own
        // limiter).
        let discovery_client = connected.client.clone();
        // The state file is streamed into the engine's table (issue 13: no map of 100k
        // statuses beside it). Discovered agents are not known until the first discovery:
        // their persisted statuses are held and seeded into the engine (kept and saved, not
        // polled) instead of being forgotten by an engine that starts with the listed ones;
        // the first discovery forgets those it did not find.
        let discovering = settings.discovery.enabled;
        let mut held = KnownMap::new();
        // Discovery merges each of its results with the listed agents: only then are they
        // kept; otherwise the engine's compact table is their only copy (issue 13).
        let listed = if discovering {
            watchlist.agents.clone()
        } else {
            Vec::new()
        };
        let (engine, loaded) = startup::engine_loading(
            connected,
            &settings,
            watchlist.agents,
            sink.clone(),
            |seed| {
                // The watchlist's agents are in the table and freed by now.
                release_freed_memory();
                state_file.load_each(&mut |uuid, known| {
                    if let Some(known) = seed(uuid, known)
                        && discovering
                    {
                        held.insert(uuid, known);
                    }
                })
            },
            false,
        );
        if let Err(error) = loaded {
            // Nothing of it was kept (the engine forgot what it had read): fresh start.
            held.clear();
            keep_damaged(&state_file, error, sink.as_ref())?;
        }
        let engine = engine.with_state(state_file).with_control(control_rx);
        let engine = match metrics {
            Some(registry) => engine.with_metrics(registry.clone()),
            None => engine,
        };
        let (file, mut stored) = load_inventory(&settings, &plan.name, sink.as_ref())?;
        // As for statuses: only discovery may bring back an agent not listed now, so without
        // it an unlisted agent's inventory is forgotten at once.
        if !discovering {
            stored.retain(|uuid, _| AgentUuid::parse(uuid).is_ok_and(|u| engine.watches(&u)));
        }
        let engine = engine.with_inventory(
            InventoryOptions::from_settings(&settings.api, &settings.inventory),
            stored,
            file,
        );
        let mut discovery = Discovering::start(
            &settings,
            Some(discovery_client),
            held,
            &control,
            sink.clone(),
            shutdown,
        );
        discovery.forward(index, found.clone(), shutdown);
        Ok(AccountRun {
            name: plan.name,
            status: engine.status(),
            settings,
            sink,
            control,
            discovery,
            listed,
            engine: Some(engine),
            task: None,
        })
    }

    /// Agents watched now (the engine's own count until it runs, then its heartbeat's).
    fn agent_count(&self) -> usize {
        match &self.engine {
            Some(engine) => engine.agent_count(),
            None => self.status.agents.load(Ordering::Relaxed) as usize,
        }
    }

    /// Starts the engine on `shutdown`'s tracker.
    fn spawn(&mut self, shutdown: &Shutdown) {
        if let Some(engine) = self.engine.take() {
            self.task = Some(shutdown.spawn(engine.run(shutdown.token())));
        }
    }

    /// Applies a reloaded config's view of this account, or keeps what runs and says why.
    async fn reload(&mut self, new: Settings, new_listed: Vec<Agent>) {
        let (settings, not_applied) = apply_reload(&self.settings, new);
        // The file dropped `watchlist` because it turns [discovery] on, which waits for a
        // restart: applied now, the watchlist would be empty and every agent would stop.
        if settings.watchlist_path.is_none() && !settings.discovery.enabled {
            self.sink.emit(&Event::ConfigRejected {
                error_message: "`watchlist` may be left out only while [discovery] runs, and \
                                turning [discovery] on takes a restart: keep `watchlist` until \
                                then, or restart the daemon"
                    .to_owned(),
            });
            return;
        }
        if !not_applied.is_empty() {
            tracing::warn!(
                account = %self.name,
                "reload: {} take effect at the next restart; the watchlist, rate and intervals apply now",
                not_applied.join(", ")
            );
        }
        let (reply, answer) = tokio::sync::oneshot::channel();
        // Discovered agents stay across a reload: the file only changes what is listed.
        let sent = self.control.send(Control::Reload {
            agents: discovery::agents_to_watch(&new_listed, self.discovery.last.as_deref()),
            config: engine_config(&settings, false),
            reply,
        });
        // After the watchlist: agents added by it get their rescan slot in the new interval too.
        let _ = self
            .control
            .send(Control::Inventory(InventoryOptions::from_settings(
                &settings.api,
                &settings.inventory,
            )));
        if let (Ok(()), Ok((agents, added, removed))) = (sent, answer.await) {
            self.sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Watchlist,
                skipped: 0,
            });
            if settings.discovery.enabled {
                self.listed = new_listed;
            }
            self.settings = settings;
        }
    }
}

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

/// `STATUS=`: the one engine's line, or one part per account.
fn status_line(accounts: &[AccountRun]) -> String {
    match accounts {
        [one] => one.status.line(),
        several => several
            .iter()
            .map(|a| format!("{}: {}", a.name, a.status.line()))
            .collect::<Vec<_>>()
            .join(" | "),
    }
}

/// A state file that could not be read (once `state_dir` proved usable,
/// [`state::prepare_dir`]) is kept under another name, reported (`state_damaged` with
/// `moved_to`), and the daemon starts fresh rather than refusing to run; only a `state_dir`
/// that cannot be used, or such a file that cannot be kept, stops it.
fn keep_damaged(
    state: &StateFile,
    error: StateError,
    sink: &dyn EventSink,
) -> Result<(), StateError> {
    let moved_to = state.set_aside()?;
    sink.emit(&Event::StateDamaged {
        path: state::shown(state.path()),
        error_message: error.to_string(),
        moved_to: state::shown(&moved_to),
    });
    Ok(())
}

/// The inventory file and the snapshots it holds, when `[inventory]` is enabled (else none:
/// status-only mode reads and writes nothing more). A file that cannot be read is handled
/// as the state file is: kept under another name, reported, and the inventory starts empty.
fn load_inventory(
    settings: &Settings,
    account: &str,
    sink: &dyn EventSink,
) -> Result<(Option<InventoryFile>, InventoryMap), StateError> {
    if !settings.inventory.enabled {
        return Ok((None, InventoryMap::new()));
    }
    let file = InventoryFile::for_account(&settings.state_dir, account);
    let (stored, set_aside) = file.load_keeping_damaged()?;
    if let Some(SetAside { error, moved_to }) = set_aside {
        sink.emit(&Event::StateDamaged {
            path: state::shown(file.path()),
            error_message: error.to_string(),
            moved_to: state::shown(&moved_to),
        });
    }
    Ok((Some(file), stored))
}

/// Tells the service manager (no-op without `$NOTIFY_SOCKET`). Failures are logged, never
/// fatal: a daemon run by hand has no one to tell.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// SIGHUP: re-read the config and every account's watchlist; apply them per account, or
/// keep the running ones and say why. Adding or removing an account waits for a restart
/// (its engine, credentials and state file are set up at start).
async fn reload(config: &Path, accounts: &mut [AccountRun], sink: &dyn EventSink) {
    // RELOADING=1 and MONOTONIC_USEC in one datagram, as systemd expects.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let path = config.to_path_buf();
    let loaded = tokio::task::spawn_blocking(move || startup::load_accounts(&path)).await;
    let mut plans = match loaded {
        Ok(Ok((_, plans))) => plans,
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

/// The daemon's side of discovery: the refresh loop's results, applied to the engine like a
/// reload (merged with the listed agents), each change reported once.
struct Discovering {
    updates: Option<watch::Receiver<Option<Arc<Discovered>>>>,
    /// Uuids with a persisted status but not listed, until the first result is applied.
    held: Vec<AgentUuid>,
    /// The last result applied.
    last: Option<Arc<Discovered>>,
}

impl Discovering {
    /// Starts the refresh loop on `shutdown`'s tracker when `[discovery]` is on.
    fn start(
        settings: &Settings,
        client: Option<Client>,
        held: KnownMap,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: Arc<dyn EventSink>,
        shutdown: &Shutdown,
    ) -> Discovering {
        let held_uuids: Vec<AgentUuid> = held.keys().copied().collect();
        if !held.is_empty() {
            // Queued before the engine runs: it knows them before any result arrives.
            let _ = control.send(Control::Seed { known: held });
        }
        let updates = match client {
            Some(client) if settings.discovery.enabled => {
                let (tx, rx) = watch::channel(None);
                let discovery = Discovery::new(
                    client,
                    settings.discovery.clone(),
                    settings.api.requests_per_second,
                );
                shutdown.spawn(discovery::refresh::run(
                    discovery,
                    tx,
                    sink,
                    shutdown.token(),
                ));
                Some(rx)
            }
            _ => None,
        };
        Discovering {
            updates,
            held: held_uuids,
            last: None,
        }
    }

    /// Sends each complete pass to `to`, tagged `index`, until discovery or the daemon
    /// stops (one channel for all accounts' discoveries, so the daemon waits on one).
    fn forward(
        &mut self,
        index: usize,
        to: tokio::sync::mpsc::UnboundedSender<(usize, Arc<Discovered>)>,
        shutdown: &Shutdown,
    ) {
        let Some(mut rx) = self.updates.take() else {
            return;
        };
        let token = shutdown.token();
        shutdown.spawn(async move {
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    changed = rx.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        let found = rx.borrow_and_update().clone();
                        if let Some(found) = found
                            && to.send((index, found)).is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
    }

    /// Applies `found` (merged with `listed`) unless it equals the last one applied.
    async fn apply(
        &mut self,
        found: Arc<Discovered>,
        listed: &[Agent],
        current: &Settings,
        control: &tokio::sync::mpsc::UnboundedSender<Control>,
        sink: &dyn EventSink,
    ) {
        if self
            .last
            .as_deref()
            .is_some_and(|last| discovery::same_list(last, &found))
        {
            return;
        }
        let agents = discovery::merge(listed, &found.agents);
        let (reply, answer) = tokio::sync::oneshot::channel();
        let sent = control.send(Control::Reload {
            agents,
            config: engine_config(current, false),
            reply,
        });
        if let (Ok(()), Ok((agents, added, removed))) = (sent, answer.await) {
            sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Discovery,
                skipped: found.skipped,
            });
            self.last = Some(found);
            if !self.held.is_empty() {
                // Seeded at start and not found now: forgotten, as a reload forgets.
                let _ = control.send(Control::Forget {
                    uuids: std::mem::take(&mut self.held),
                });
            }
        }
    }
}

/// Hands the heap's free pages back to the system once start-up is over. The watchlist's text
/// and parse, the state file's and the watchlist itself are freed by now, but glibc keeps
/// freed memory below the heap's top mapped: at 100,000 agents that is RSS for nothing for the
/// daemon's whole life (issue 13). The peak (`VmHWM`) is not changed by this.
fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}
