//! The `run`, `once` and `status` commands: settings → credentials → client → engine.
//!
//! Everything here is wiring; the decisions live in [`crate::engine`] and below.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::client::ClientBuildError;
use crate::api::{Client, ClientOptions};
use crate::cli::Format;
use crate::config::{ConfigErrors, Settings};
use crate::credentials::cvm_role::{CvmRole, CvmRoleError, run_refresher};
use crate::credentials::{CredentialError, Environment, Resolved, resolve};
use crate::engine::{Control, Engine, EngineConfig, EngineReport};
use crate::events::{Event, EventSink, TracingSink};
use crate::logging::{self, LoggingError};
use crate::scheduler::Intervals;
use crate::state::{StateError, StateFile};
use crate::watchlist::Watchlist;

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Config or watchlist invalid (every problem, one per line).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// No usable credentials.
    #[error("{0}")]
    Credentials(#[from] CredentialError),
    /// CVM instance-role credentials could not be fetched.
    #[error(
        "{0} (no credentials in $CREDENTIALS_DIRECTORY, the environment or a profile file, so the CVM instance role was tried; \
         set TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY or [credentials] in the config when this is not a CVM)"
    )]
    CvmRole(#[from] CvmRoleError),
    /// The client could not be built.
    #[error("{0}")]
    Client(#[from] ClientBuildError),
    /// Logging could not be set up.
    #[error("{0}")]
    Logging(#[from] LoggingError),
    /// The state file could not be read.
    #[error("{0}")]
    State(#[from] StateError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals,
    /// The engine task died.
    #[error("the polling engine failed: {0}")]
    Engine(String),
}

impl DaemonError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Config(e) => e.code(),
            DaemonError::Credentials(e) => e.code(),
            DaemonError::CvmRole(e) => e.code(),
            DaemonError::Client(e) => e.code(),
            DaemonError::Logging(e) => e.code(),
            DaemonError::State(e) => e.code(),
            DaemonError::Signals => "DaemonError.Signals",
            DaemonError::Engine(_) => "DaemonError.Engine",
        }
    }
}

/// Loads the config and its watchlist, reporting the problems of both at once.
pub fn load(config: &Path) -> Result<(Settings, Watchlist), ConfigErrors> {
    let settings = Settings::load(config).map_err(|mut problems| {
        add_watchlist_problems(config, &mut problems);
        problems
    })?;
    let watchlist = Watchlist::load(&settings.watchlist_path)?;
    Ok((settings, watchlist))
}

/// When the config is invalid, its watchlist may still be found (the `watchlist` key alone
/// read leniently): its problems are listed too, so one `check` shows everything to fix.
pub fn add_watchlist_problems(config: &Path, problems: &mut ConfigErrors) {
    let Ok(text) = std::fs::read_to_string(config) else {
        return;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(name) = table.get("watchlist").and_then(|v| v.as_str()) else {
        return;
    };
    let path = config.parent().unwrap_or(Path::new(".")).join(name);
    if path.is_file()
        && let Err(more) = Watchlist::load(&path)
    {
        problems.merge(more);
    }
}

/// The engine's settings from the config.
pub fn engine_config(settings: &Settings, once: bool) -> EngineConfig {
    EngineConfig {
        requests_per_second: settings.api.requests_per_second,
        max_in_flight: settings.api.max_in_flight,
        intervals: Intervals {
            settled: settings.poll.interval,
            collecting: settings.poll.collecting_interval,
            offline: settings.poll.offline_interval,
        },
        once,
    }
}

/// A signed client and where its credentials come from.
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The credential source, for `credentials_failed`.
    pub source: String,
    /// Wakes the CVM-role refresher early (on `AuthFailure.TokenFailure`); `None` for
    /// static credentials.
    pub refresh: Option<Arc<tokio::sync::Notify>>,
}

/// A signed client for the settings, with credentials from the chain. CVM-role credentials
/// are fetched once here (so a broken metadata service fails start-up with a clear error),
/// then refreshed before expiry by a background task that stops with `shutdown`.
pub async fn client(
    settings: &Settings,
    env: &Environment,
    shutdown: &CancellationToken,
) -> Result<Connected, DaemonError> {
    let options = ClientOptions {
        endpoint: settings.api.endpoint.clone(),
        region: settings.api.region.clone(),
        timeout: settings.api.timeout,
        max_idle_connections: settings.api.max_in_flight,
    };
    match resolve(&settings.credentials, env)? {
        Resolved::Static(creds, source) => {
            tracing::debug!(source = %source, "credentials found");
            Ok(Connected {
                client: Client::new(options, creds)?,
                source: source.to_string(),
                refresh: None,
            })
        }
        Resolved::CvmRole {
            role,
            metadata_endpoint,
        } => {
            let cvm = CvmRole::new(metadata_endpoint, role)?;
            let first = cvm.fetch().await?;
            let source = format!("CVM instance role {}", first.role);
            let client = Client::new(options, first.credentials)?;
            let refresh = Arc::new(tokio::sync::Notify::new());
            let updated = client.clone();
            tokio::spawn(run_refresher(
                cvm,
                move |c| updated.set_credentials(c),
                refresh.clone(),
                shutdown.clone(),
            ));
            Ok(Connected {
                client,
                source,
                refresh: Some(refresh),
            })
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

fn load_state(state: &StateFile, sink: &dyn EventSink) -> crate::tracker::KnownMap {
    match state.load() {
        Ok(known) => known,
        Err(e) => {
            sink.emit(&Event::StateDamaged {
                path: state.path().display().to_string(),
                error_message: e.to_string(),
            });
            Default::default()
        }
    }
}

/// Tells the service manager (no-op without `$NOTIFY_SOCKET`). Failures are logged, never
/// fatal: a daemon run by hand has no one to tell.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("sd_notify failed: {e}");
    }
}

/// `cwp-portwatch run`: the daemon. SIGHUP reloads, SIGTERM/SIGINT stop gracefully.
pub async fn run(config: &Path) -> Result<ExitCode, DaemonError> {
    use sd_notify::NotifyState;
    use tokio::signal::unix::{SignalKind, signal};

    let (settings, watchlist) = load(config)?;
    logging::init(settings.log.format, &settings.log.level)?;
    let shutdown = CancellationToken::new();
    let connected = client(&settings, &Environment::from_process(), &shutdown).await?;
    let sink: Arc<dyn EventSink> = Arc::new(TracingSink);
    let state = StateFile::in_dir(&settings.state_dir);
    let known = load_state(&state, sink.as_ref());
    let (control, control_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut engine = Engine::new(
        connected.client,
        sink.clone(),
        engine_config(&settings, false),
        &watchlist.agents,
        known,
    )
    .with_state(state)
    .with_control(control_rx)
    .with_credential_source(connected.source);
    if let Some(refresh) = connected.refresh {
        engine = engine.with_credentials_refresh(refresh);
    }
    // The engine keeps its own compact copy; 100k agents' worth of strings need not stay twice.
    drop(watchlist);
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
    // Signal handlers before READY=1: a SIGHUP right after start must not kill us.
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    );
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = signals else {
        return Err(DaemonError::Signals);
    };
    let mut engine_task = tokio::spawn(engine.run(shutdown.clone()));
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
            _ = term.recv() => break None,
            _ = int.recv() => break None,
            result = &mut engine_task => break Some(result),
            _ = hup.recv() => {
                current = reload(&current, &control, sink.as_ref()).await;
                notify(&[NotifyState::Ready, NotifyState::Status(&status.line())]);
            }
            _ = ticker.tick() => {
                let beats = status.beats.load(std::sync::atomic::Ordering::Relaxed);
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
    let result = match engine_result {
        Some(r) => r,
        None => engine_task.await,
    };
    let agents = match result {
        Ok((engine, _)) => engine.agent_count(),
        Err(e) => {
            tracing::error!("the polling engine failed: {e}");
            return Err(DaemonError::Engine(e.to_string()));
        }
    };
    sink.emit(&Event::DaemonStopping { version, agents });
    Ok(ExitCode::SUCCESS)
}

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// SIGHUP: re-read config and watchlist; apply them, or keep the running ones and say why.
async fn reload(
    current: &Settings,
    control: &tokio::sync::mpsc::UnboundedSender<Control>,
    sink: &dyn EventSink,
) -> Settings {
    use sd_notify::NotifyState;
    // RELOADING=1 and MONOTONIC_USEC in one datagram, as systemd expects.
    match NotifyState::monotonic_usec_now() {
        Ok(now) => notify(&[NotifyState::Reloading, now]),
        Err(_) => notify(&[NotifyState::Reloading]),
    }
    let path = current.config_path.clone();
    let loaded = tokio::task::spawn_blocking(move || load(&path)).await;
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
    // What a reload cannot change in a running process stays as it runs (and `current`
    // keeps saying so, so the next reload compares against what really runs).
    let mut settings = settings;
    let mut not_applied = Vec::new();
    if settings.api.endpoint != current.api.endpoint
        || settings.api.region != current.api.region
        || settings.api.timeout != current.api.timeout
    {
        not_applied.push("api.endpoint/region/timeout");
        settings.api.endpoint = current.api.endpoint.clone();
        settings.api.region = current.api.region.clone();
        settings.api.timeout = current.api.timeout;
    }
    if settings.credentials != current.credentials {
        not_applied.push("[credentials]");
        settings.credentials = current.credentials.clone();
    }
    if settings.state_dir != current.state_dir {
        not_applied.push("state_dir");
        settings.state_dir = current.state_dir.clone();
    }
    if settings.log != current.log {
        not_applied.push("[log]");
        settings.log = current.log.clone();
    }
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

fn print_report(report: &EngineReport, format: Format) {
    for a in &report.agents {
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "uuid": a.uuid, "agent_name": a.name, "status": a.status,
                    "request_id": a.request_id, "error": a.last_error,
                })
            ),
            Format::Text => println!(
                "{:<36}  {:<16}  {:<14}  {}",
                a.uuid,
                a.name,
                a.status,
                a.last_error.as_deref().unwrap_or("")
            ),
        }
    }
}

/// Passes every event but `status_changed`.
struct WithoutStatusChanges<S>(S);

impl<S: EventSink> EventSink for WithoutStatusChanges<S> {
    fn emit(&self, event: &Event) {
        if !matches!(event, Event::StatusChanged { .. }) {
            self.0.emit(event);
        }
    }
}

/// `cwp-portwatch once`: every agent polled once through the same limiter.
pub async fn once(config: &Path, format: Format) -> Result<ExitCode, DaemonError> {
    let (settings, watchlist) = load(config)?;
    logging::init(settings.log.format, &settings.log.level)?;
    let shutdown = CancellationToken::new();
    let connected = client(&settings, &Environment::from_process(), &shutdown).await?;
    // `once` prints each agent's status on stdout; a `status_changed` from UNKNOWN for every
    // agent on every run would only mislead journal alerting. Failures are still logged.
    let sink: Arc<dyn EventSink> = Arc::new(WithoutStatusChanges(TracingSink));
    let mut engine = Engine::new(
        connected.client,
        sink,
        engine_config(&settings, true),
        &watchlist.agents,
        Default::default(),
    )
    .with_credential_source(connected.source);
    if let Some(refresh) = connected.refresh {
        engine = engine.with_credentials_refresh(refresh);
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        stop_signal().await;
        stop.cancel();
    });
    let (_, report) = engine.run(shutdown).await;
    print_report(&report, format);
    let failed = report
        .agents
        .iter()
        .any(|a| a.last_error.is_some() || a.status == crate::status::UNKNOWN);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `cwp-portwatch status`: the persisted statuses, no API call.
pub fn status(config: &Path, format: Format) -> Result<ExitCode, DaemonError> {
    let (settings, watchlist) = load(config)?;
    let state = StateFile::in_dir(&settings.state_dir);
    if !state.path().exists() {
        eprintln!(
            "no state file at {} yet: every agent is UNKNOWN (the daemon writes it; check state_dir)",
            state.path().display()
        );
    }
    let known = state.load()?;
    for agent in &watchlist.agents {
        let k = known.get(agent.uuid.as_str());
        let status = k.map_or(crate::status::UNKNOWN, |k| &*k.status);
        let name = agent.name.as_deref().unwrap_or("");
        match format {
            Format::Json => println!(
                "{}",
                serde_json::json!({
                    "uuid": agent.uuid, "agent_name": name, "status": status,
                    "seen_at": k.map(|k| k.seen_at), "request_id": k.map(|k| &k.request_id),
                })
            ),
            Format::Text => println!(
                "{:<36}  {:<16}  {:<14}  {}",
                agent.uuid,
                name,
                status,
                k.map(|k| k.request_id.as_str()).unwrap_or("")
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
