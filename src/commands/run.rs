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

use crate::config::Settings;
use crate::engine::Control;
use crate::events::{Event, EventSink, TracingSink};
use crate::shutdown::{self, Shutdown, StopSignals};
use crate::state::{self, SetAside, StateError, StateFile};
use crate::tracker::KnownMap;

use super::CommandError;
use super::reload::apply_reload;
use super::startup::{self, engine_config};

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM/SIGINT (or the engine's death).
pub async fn run(config: &Path) -> Result<ExitCode, CommandError> {
    let (settings, watchlist) = startup::load_and_log(config)?;
    let sink: Arc<dyn EventSink> = Arc::new(TracingSink);
    // Before any poll: a state that could not be persisted is an error now, not a loss later.
    let (state, known) = load_state(&settings.state_dir, sink.as_ref())?;
    let shutdown = Shutdown::new();
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = startup::engine(
        &settings,
        &watchlist.agents,
        sink.clone(),
        known,
        false,
        &shutdown,
    )
    .await;
    let engine = match engine {
        Ok(engine) => engine.with_state(state).with_control(control_rx),
        Err(e) => {
            // The CVM-role refresher may already run; it must not outlive the failure.
            shutdown.finish(shutdown::GRACE).await;
            return Err(e);
        }
    };
    // The engine keeps its own compact copy; 100k agents' worth of strings need not stay twice.
    drop(watchlist);
    release_freed_memory();
    let status = engine.status();
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
            _ = hup.recv() => {
                current = reload(&current, &control, sink.as_ref()).await;
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

/// Tells the service manager (no-op without `$NOTIFY_SOCKET`). Failures are logged, never
/// fatal: a daemon run by hand has no one to tell.
fn notify(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// SIGHUP: re-read config and watchlist; apply them, or keep the running ones and say why.
async fn reload(
    current: &Settings,
    control: &tokio::sync::mpsc::UnboundedSender<Control>,
    sink: &dyn EventSink,
) -> Settings {
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
            return current.clone();
        }
        Err(e) => {
            sink.emit(&Event::ConfigRejected {
                error_message: format!("reload failed: {e}"),
            });
            return current.clone();
        }
    };
    let (settings, not_applied) = apply_reload(current, settings);
    if !not_applied.is_empty() {
        tracing::warn!(
            "reload: {} take effect at the next restart; the watchlist, rate and intervals apply now",
            not_applied.join(", ")
        );
    }
    let (reply, answer) = tokio::sync::oneshot::channel();
    let sent = control.send(Control::Reload {
        agents: watchlist.agents,
        config: engine_config(&settings, false),
        reply,
    });
    match (sent, answer.await) {
        (Ok(()), Ok((agents, added, removed))) => {
            sink.emit(&Event::WatchlistLoaded {
                agents,
                added,
                removed,
            });
            settings
        }
        _ => current.clone(),
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
