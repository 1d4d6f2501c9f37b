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

use crate::api::Client;
use crate::config::Settings;
use crate::discovery::{self, Discovered, Discovery};
use crate::engine::{Control, InventoryOptions};
use crate::events::{Event, EventSink, Tee, TracingSink, WatchlistSource};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::shutdown::{self, Shutdown, StopSignals};
use crate::state::{self, SetAside, StateError, StateFile};
use crate::tracker::KnownMap;
use crate::watchlist::Agent;

use super::CommandError;
use super::reload::apply_reload;
use super::startup::{self, engine_config};

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM/SIGINT (or the engine's death).
pub async fn run(config: &Path) -> Result<ExitCode, CommandError> {
    let (settings, watchlist) = startup::load_and_log(config)?;
    // Bound before anything else starts: a taken port fails the start, clearly.
    let metrics = startup::metrics(&settings.metrics).await?;
    // The registry sees the events the log sees, from the same sink: counters agree with
    // the log by construction.
    let sink: Arc<dyn EventSink> = match &metrics {
        Some((registry, _)) => Arc::new(Tee(TracingSink, registry.clone())),
        None => Arc::new(TracingSink),
    };
    // Before any poll: a state that could not be persisted is an error now, not a loss later.
    let (state, known) = load_state(&settings.state_dir, sink.as_ref())?;
    // Discovered agents are not known until the first discovery: their persisted statuses are
    // seeded into the engine (kept and saved, not polled) instead of being forgotten by an
    // engine that starts with the listed ones; the first discovery forgets those it did not find.
    let (known, held) = if settings.discovery.enabled {
        hold_unlisted(known, &watchlist.agents)
    } else {
        (known, KnownMap::new())
    };
    let shutdown = Shutdown::new();
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let connected = startup::connect(
        &settings,
        &crate::credentials::Environment::from_process(),
        &shutdown,
    )
    .await;
    // Discovery sends through its own clone of the client (same credentials, its own limiter).
    let discovery_client = connected.as_ref().ok().map(|c| c.client.clone());
    let engine = connected.map(|connected| {
        startup::engine_for(
            connected,
            &settings,
            &watchlist.agents,
            sink.clone(),
            known,
            false,
        )
    });
    let engine = match engine {
        Ok(engine) => {
            let engine = engine.with_state(state).with_control(control_rx);
            let engine = match &metrics {
                Some((registry, _)) => engine.with_metrics(registry.clone()),
                None => engine,
            };
            match load_inventory(&settings, sink.as_ref()) {
                Ok((file, mut stored)) => {
                    // As for statuses: only discovery may bring back an agent not listed now,
                    // so without it an unlisted agent's inventory is forgotten at once.
                    if !settings.discovery.enabled {
                        let listed: std::collections::HashSet<&str> =
                            watchlist.agents.iter().map(|a| a.uuid.as_str()).collect();
                        stored.retain(|uuid, _| listed.contains(uuid.as_str()));
                    }
                    engine.with_inventory(
                        InventoryOptions::from_settings(&settings.api, &settings.inventory),
                        stored,
                        file,
                    )
                }
                Err(e) => {
                    shutdown.finish(shutdown::GRACE).await;
                    return Err(e.into());
                }
            }
        }
        Err(e) => {
            // The CVM-role refresher may already run; it must not outlive the failure.
            shutdown.finish(shutdown::GRACE).await;
            return Err(e);
        }
    };
    // The engine keeps its own compact copy; 100k agents' worth of strings need not stay twice,
    // unless discovery needs the listed agents to merge each of its results with.
    let mut listed = if settings.discovery.enabled {
        watchlist.agents
    } else {
        drop(watchlist);
        Vec::new()
    };
    let mut discovery = Discovering::start(
        &settings,
        discovery_client,
        held,
        &control,
        sink.clone(),
        &shutdown,
    );
    release_freed_memory();
    let status = engine.status();
    if let Some((registry, server)) = metrics {
        shutdown.spawn(server.serve(registry, status.clone(), shutdown.token()));
    }
    let version = env!("CARGO_PKG_VERSION").to_string();
    let agents = engine.agent_count();
    sink.emit(&Event::DaemonStarted {
        version: version.clone(),
        agents,
    });
    sink.emit(&Event::WatchlistLoaded {
        agents,
        added: agents,
        removed: 0,
        source: WatchlistSource::Watchlist,
        skipped: 0,
    });
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
    let mut engine_task = shutdown.spawn(engine.run(shutdown.token()));
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("watching {agents} agents, starting")),
    ]);

    // STATUS every few seconds; WATCHDOG=1 every half of WatchdogSec, and only while the
    // dispatcher's heartbeat advances, so a wedged loop gets restarted by systemd.
    let watchdog = sd_notify::watchdog_enabled();
    let tick = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_beats = 0;
    let mut current = settings;
    let engine_result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break None,
            result = &mut engine_task => break Some(result),
            found = discovery.next() => {
                discovery.apply(found, &listed, &current, &control, sink.as_ref()).await;
            }
            _ = hup.recv() => {
                let discovered = discovery.last.clone();
                let (settings, new_listed) =
                    reload(&current, &control, sink.as_ref(), discovered.as_deref()).await;
                current = settings;
                if let (Some(new_listed), true) = (new_listed, current.discovery.enabled) {
                    listed = new_listed;
                }
                notify(&[NotifyState::Ready, NotifyState::Status(&status.line())]);
            }
            _ = ticker.tick() => {
                let beats = status.beats.load(Ordering::Relaxed);
                let line = status.line();
                if watchdog.is_some() && beats != last_beats {
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
    // The engine drains its answers in flight within its own bound; then the rest stops.
    let result = match engine_result {
        Some(r) => r,
        None => engine_task.await,
    };
    shutdown.finish(shutdown::GRACE).await;
    let agents = match result {
        Ok((engine, _)) => engine.agent_count(),
        Err(e) => {
            tracing::error!("the polling engine failed: {e}");
            return Err(CommandError::Engine(e.to_string()));
        }
    };
    sink.emit(&Event::DaemonStopping { version, agents });
    Ok(ExitCode::SUCCESS)
}

/// The state file and the statuses it holds, once `state_dir` proved usable
/// ([`state::prepare_dir`]). A file that cannot be read is kept under another name, reported
/// (`state_damaged` with `moved_to`), and the daemon starts fresh rather than refusing to run;
/// only a `state_dir` that cannot be used, or such a file that cannot be kept, stops it.
fn load_state(state_dir: &Path, sink: &dyn EventSink) -> Result<(StateFile, KnownMap), StateError> {
    state::prepare_dir(state_dir)?;
    let state = StateFile::in_dir(state_dir);
    let (known, set_aside) = state.load_keeping_damaged()?;
    if let Some(SetAside { error, moved_to }) = set_aside {
        sink.emit(&Event::StateDamaged {
            path: state::shown(state.path()),
            error_message: error.to_string(),
            moved_to: state::shown(&moved_to),
        });
    }
    Ok((state, known))
}

/// The inventory file and the snapshots it holds, when `[inventory]` is enabled (else none:
/// status-only mode reads and writes nothing more). A file that cannot be read is handled
/// as the state file is: kept under another name, reported, and the inventory starts empty.
fn load_inventory(
    settings: &Settings,
    sink: &dyn EventSink,
) -> Result<(Option<InventoryFile>, InventoryMap), StateError> {
    if !settings.inventory.enabled {
        return Ok((None, InventoryMap::new()));
    }
    let file = InventoryFile::in_dir(&settings.state_dir);
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

/// Splits persisted statuses into those of listed agents (for the engine at start) and the
/// rest (held for discovery).
fn hold_unlisted(mut known: KnownMap, listed: &[Agent]) -> (KnownMap, KnownMap) {
    let listed: std::collections::HashSet<&str> = listed.iter().map(|a| a.uuid.as_str()).collect();
    let held = known
        .extract_if(|uuid, _| !listed.contains(&**uuid))
        .collect();
    (known, held)
}

/// Tells the service manager (no-op without `$NOTIFY_SOCKET`). Failures are logged, never
/// fatal: a daemon run by hand has no one to tell.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// SIGHUP: re-read config and watchlist; apply them, or keep the running ones and say why.
/// Returns the settings now in force and, when the new watchlist was applied, its agents.
async fn reload(
    current: &Settings,
    control: &tokio::sync::mpsc::UnboundedSender<Control>,
    sink: &dyn EventSink,
    discovered: Option<&Discovered>,
) -> (Settings, Option<Vec<Agent>>) {
    // RELOADING=1 and MONOTONIC_USEC in one datagram, as systemd expects.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let path = current.config_path.clone();
    let loaded = tokio::task::spawn_blocking(move || startup::load(&path)).await;
    let (settings, watchlist) = match loaded {
        Ok(Ok(pair)) => pair,
        Ok(Err(problems)) => {
            sink.emit(&Event::ConfigRejected {
                error_message: problems.to_string(),
            });
            return (current.clone(), None);
        }
        Err(e) => {
            sink.emit(&Event::ConfigRejected {
                error_message: format!("reload failed: {e}"),
            });
            return (current.clone(), None);
        }
    };
    let (settings, not_applied) = apply_reload(current, settings);
    // The file dropped `watchlist` because it turns [discovery] on, which waits for a restart:
    // applied now, the watchlist would be empty and every agent would stop.
    if settings.watchlist_path.is_none() && !settings.discovery.enabled {
        sink.emit(&Event::ConfigRejected {
            error_message: "`watchlist` may be left out only while [discovery] runs, and turning \
                            [discovery] on takes a restart: keep `watchlist` until then, or \
                            restart the daemon"
                .to_owned(),
        });
        return (current.clone(), None);
    }
    if !not_applied.is_empty() {
        tracing::warn!(
            "reload: {} take effect at the next restart; the watchlist, rate and intervals apply now",
            not_applied.join(", ")
        );
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    // Discovered agents stay across a reload: the file only changes what is listed.
    let sent = control.send(Control::Reload {
        agents: discovery::agents_to_watch(&watchlist.agents, discovered),
        config: engine_config(&settings, false),
        reply,
    });
    // After the watchlist: agents added by it get their rescan slot in the new interval too.
    let _ = control.send(Control::Inventory(InventoryOptions::from_settings(
        &settings.api,
        &settings.inventory,
    )));
    match (sent, answer.await) {
        (Ok(()), Ok((agents, added, removed))) => {
            sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
                source: WatchlistSource::Watchlist,
                skipped: 0,
            });
            (settings, Some(watchlist.agents))
        }
        _ => (current.clone(), None),
    }
}

/// The daemon's side of discovery: the refresh loop's results, applied to the engine like a
/// reload (merged with the listed agents), each change reported once.
struct Discovering {
    updates: Option<watch::Receiver<Option<Arc<Discovered>>>>,
    /// Uuids with a persisted status but not listed, until the first result is applied.
    held: Vec<Arc<str>>,
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
        let held_uuids: Vec<Arc<str>> = held.keys().cloned().collect();
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

    /// The next complete pass; pending forever when discovery is off or has stopped.
    async fn next(&mut self) -> Arc<Discovered> {
        if let Some(rx) = &mut self.updates {
            while rx.changed().await.is_ok() {
                if let Some(found) = rx.borrow_and_update().clone() {
                    return found;
                }
            }
            self.updates = None;
        }
        std::future::pending().await
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
