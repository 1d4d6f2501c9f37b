//! One account's share of the running daemon ([`AccountRun`]): its client and credentials
//! refresher, its engine built from its watchlist with its state file streamed in, its
//! inventory file, and its discovery; how a reload reaches it; and its start, which one
//! account does on its own. `run` owns the accounts and the service-manager side.
//!
//! An account whose credentials cannot be had at start (STS answering 503, the metadata
//! service away, a key file not there yet) does not stop the daemon nor the other accounts:
//! it reports `account_failed` (attempt, code, next try) and a task tries again with backoff
//! ([`start_retry_delay`]: 2 s, 4 s, … 5 min) until it connects; then its engine is built and
//! runs like the others'. Meanwhile its status beats (the loop is alive: systemd's watchdog
//! must not restart the daemon for an account that is retrying, which would only start the
//! retries over) and `STATUS=` says that it is not polling and why. This holds when every
//! account fails: the daemon stays up, `READY=1` meaning "running, every account polling or
//! retrying its start", and keeps trying with clear logs; `check` and `once` still exit 1.
//! What is retried is what a remote service said (or its silence): a problem `check` reports
//! too (no credentials in the configured source, an unusable endpoint) still stops `run` at
//! start, naming it, since only a changed configuration and a restart fix it
//! ([`worth_retrying`]). Local failures at the deferred build (the state or inventory file)
//! stop the daemon, as they do at start: they are the same `state_dir` for every account.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent_uuid::AgentUuid;
use crate::api::Client;
use crate::config::Settings;
use crate::config::accounts::AccountPlan;
use crate::credentials::assume_role::AssumeRoleError;
use crate::credentials::cvm_role::CvmRoleError;
use crate::discovery::{self, Discovered};
use crate::engine::{Control, Engine, EngineReport, EngineStatus, InventoryOptions};
use crate::events::{Event, EventSink, WatchlistSource};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::metrics::Metrics;
use crate::policy::Policy;
use crate::shutdown::Shutdown;
use crate::state::{self, SaveBarrier, SetAside, StateError, StateFile};
use crate::tracker::KnownMap;
use crate::watchlist::{Agent, Watchlist};

use super::CommandError;
use super::discovering::Discovering;
use super::reload::apply_reload;
use super::startup::{self, Connected, engine_config};

/// Where every account's discovery results go, tagged with the account's index.
pub(super) type FoundSender = mpsc::UnboundedSender<(usize, Arc<Discovered>)>;
/// Where an account whose start was retried hands its client once it connects, tagged with
/// the account's index: the daemon then calls [`AccountRun::finish_start`].
pub(super) type StartedSender = mpsc::UnboundedSender<(usize, Connected)>;

/// Where an account's results reach the daemon's loop, each tagged with the account's index.
pub(super) struct ToDaemon {
    /// Its discovery's complete passes.
    pub(super) found: FoundSender,
    /// Its client, when its start was retried and it connected at last.
    pub(super) started: StartedSender,
}

/// What the accounts share besides the sink and the shutdown, for [`AccountRun::start`].
pub(super) struct Shared<'a> {
    /// The account's handle on the metrics registry, when `[metrics]` is on.
    pub(super) metrics: Option<&'a Arc<Metrics>>,
    /// The expected-ports policy, when `[policy] file` names one.
    pub(super) policy: Option<Arc<Policy>>,
    /// Alert delivery's outboxes, made durable before each state or inventory write, when
    /// `[[sink]]` blocks are configured.
    pub(super) barrier: Option<SaveBarrier>,
}

/// One account's share of the daemon: its own engine (limiters, rate control, credentials
/// gate, client), state file, discovery and listed agents. Accounts share only the event
/// sink, the metrics registry and the shutdown.
pub(super) struct AccountRun {
    /// `default` or the `[[account]]` name.
    pub(super) name: String,
    /// The settings this account runs with (shared ones + its own).
    pub(super) settings: Settings,
    /// The shared sink, marking this account's events when there are several.
    pub(super) sink: Arc<dyn EventSink>,
    /// Reloads, seeds and forgets for its engine.
    pub(super) control: tokio::sync::mpsc::UnboundedSender<Control>,
    pub(super) discovery: Discovering,
    /// The listed agents, kept only while discovery needs them to merge with.
    pub(super) listed: Vec<Agent>,
    pub(super) status: Arc<EngineStatus>,
    /// Built, not yet running (until the signal handlers are in place).
    pub(super) engine: Option<Engine<Client>>,
    /// Running.
    pub(super) task: Option<tokio::task::JoinHandle<(Engine<Client>, EngineReport)>>,
    /// While its start is retried: what building it later takes.
    starting: Option<Starting>,
    /// The expected-ports policy in force (shared by the accounts; `None`: none configured).
    pub(super) policy: Option<Arc<Policy>>,
}

/// An account whose start failed, until its retry task connects.
struct Starting {
    index: usize,
    agents: Vec<Agent>,
    metrics: Option<Arc<Metrics>>,
    barrier: Option<SaveBarrier>,
    found: FoundSender,
    control_rx: mpsc::UnboundedReceiver<Control>,
    /// The last failure, for `STATUS=`.
    problem: Arc<Mutex<String>>,
}

impl AccountRun {
    /// Connects its client (starting its credentials refresher), loads its state, builds
    /// its engine and starts its discovery, whose results go `to_daemon` tagged `index`. When
    /// the client cannot connect, reports `account_failed` and returns the account waiting
    /// for its retry task (see the module docs); only local failures are errors.
    pub(super) async fn start(
        index: usize,
        plan: AccountPlan,
        watchlist: Watchlist,
        sink: Arc<dyn EventSink>,
        shared: Shared<'_>,
        shutdown: &Shutdown,
        to_daemon: &ToDaemon,
    ) -> Result<AccountRun, CommandError> {
        let Shared {
            metrics,
            policy,
            barrier,
        } = shared;
        let settings = plan.settings;
        let (control, control_rx) = mpsc::unbounded_channel();
        let status = Arc::new(EngineStatus::default());
        let env = crate::credentials::Environment::from_process();
        let connected = startup::connect(&settings, &env, shutdown).await;
        let mut account = AccountRun {
            name: plan.name,
            // Idle until the account runs: no client, nothing held.
            discovery: Discovering::idle(),
            settings,
            sink,
            control,
            listed: Vec::new(),
            status,
            engine: None,
            task: None,
            starting: Some(Starting {
                index,
                agents: watchlist.agents,
                metrics: metrics.cloned(),
                barrier,
                found: to_daemon.found.clone(),
                control_rx,
                problem: Arc::new(Mutex::new(String::new())),
            }),
            policy,
        };
        match connected {
            Ok(connected) => account.finish_start(connected, shutdown)?,
            Err(error) if worth_retrying(&error) => {
                account.retry_start(&error, env, shutdown, to_daemon.started.clone());
            }
            Err(error) => return Err(error),
        }
        Ok(account)
    }

    /// Reports the failed first attempt and spawns the task that tries again.
    fn retry_start(
        &mut self,
        error: &CommandError,
        env: crate::credentials::Environment,
        shutdown: &Shutdown,
        started: StartedSender,
    ) {
        let Some(starting) = &mut self.starting else {
            return;
        };
        let retry_in = start_retry_delay(1);
        report_start_failure(
            &self.name,
            error,
            1,
            retry_in,
            self.sink.as_ref(),
            &starting.problem,
        );
        let index = starting.index;
        let settings = self.settings.clone();
        let (name, sink, status, problem) = (
            self.name.clone(),
            self.sink.clone(),
            self.status.clone(),
            starting.problem.clone(),
        );
        let connecting = shutdown.clone();
        let token = shutdown.token();
        shutdown.spawn(async move {
            let connect = || startup::connect(&settings, &env, &connecting);
            let attempts = StartAttempts {
                account: &name,
                sink: sink.as_ref(),
                status: &status,
                problem: &problem,
            };
            if let Some(connected) = attempts.keep_trying(connect, 1, retry_in, &token).await {
                // The daemon may be stopping: then nobody takes it, and it is dropped.
                let _ = started.send((index, connected));
            }
        });
    }

    /// Builds the engine on `connected`: its state streamed in, its inventory, its
    /// discovery started. The engine runs at [`AccountRun::spawn`].
    pub(super) fn finish_start(
        &mut self,
        connected: Connected,
        shutdown: &Shutdown,
    ) -> Result<(), CommandError> {
        let Some(Starting {
            index,
            agents,
            metrics,
            barrier,
            found,
            control_rx,
            ..
        }) = self.starting.take()
        else {
            return Ok(());
        };
        let settings = &self.settings;
        let sink = &self.sink;
        let state_file = StateFile::for_account(&settings.state_dir, &self.name);
        // Discovery sends through its own clone of the client (same credentials, its own
        // limiter).
        let discovery_client = connected.client.clone();
        // The state file is streamed into the engine's table (issue 13: no map of 100k
        // statuses beside it). Discovered agents are not known until the first discovery:
        // their persisted statuses are held and seeded into the engine (kept and saved, not
        // polled) instead of being forgotten by an engine that starts with the listed ones;
        // from the first discovery on, those it does not remember are forgotten.
        let discovering = settings.discovery.enabled;
        let mut held = KnownMap::new();
        // Discovery merges each of its results with the listed agents: only then are they
        // kept; otherwise the engine's compact table is their only copy (issue 13).
        let listed = if discovering {
            agents.clone()
        } else {
            Vec::new()
        };
        let (engine, loaded) = startup::engine_loading(
            connected,
            settings,
            agents,
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
        let engine = engine
            .with_state(state_file)
            .with_control(control_rx)
            .with_status(self.status.clone());
        let engine = match metrics {
            Some(registry) => engine.with_metrics(registry),
            None => engine,
        };
        let engine = match barrier {
            Some(barrier) => engine.with_save_barrier(barrier),
            None => engine,
        };
        // Before the inventory: its agents' stored findings are compared with this policy's
        // as they are added, so what changed while the daemon was stopped is reported once.
        let engine = engine.with_policy(self.policy.clone(), &self.name);
        let (file, mut stored) = load_inventory(settings, &self.name, sink.as_ref())?;
        // As for statuses: only discovery may bring back an agent not listed now, so without
        // it an unlisted agent's inventory is forgotten at once.
        // Its policy findings end with it: cleared (`removed`) once, as a reload would.
        if !discovering {
            let dropped: Vec<_> = stored
                .extract_if(|uuid, _| !AgentUuid::parse(uuid).is_ok_and(|u| engine.watches(&u)))
                .collect();
            for (uuid, entry) in &dropped {
                for event in crate::engine::removed_finding_events(uuid, entry) {
                    sink.emit(&event);
                }
            }
        }
        let engine = engine.with_inventory(
            InventoryOptions::from_settings(&settings.api, &settings.inventory)
                .sharing_machines_with_discovery(discovering),
            stored,
            file,
        );
        let mut discovery = Discovering::start(
            settings,
            &self.name,
            Some(discovery_client),
            held,
            &self.control,
            sink.clone(),
            shutdown,
        )?;
        discovery.forward(index, found, shutdown);
        self.discovery = discovery;
        self.listed = listed;
        self.engine = Some(engine);
        Ok(())
    }

    /// `STATUS=` for this account: its engine's line, or why it is not polling yet.
    pub(super) fn line(&self) -> String {
        match &self.starting {
            Some(starting) => format!(
                "NOT POLLING: {}",
                starting
                    .problem
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .as_str()
            ),
            None => self.status.line(),
        }
    }

    /// Agents watched now (the engine's own count until it runs, then its heartbeat's).
    pub(super) fn agent_count(&self) -> usize {
        match (&self.engine, &self.starting) {
            (Some(engine), _) => engine.agent_count(),
            (None, Some(starting)) => starting.agents.len(),
            (None, None) => self.status.agents.load(Ordering::Relaxed) as usize,
        }
    }

    /// Starts the engine on `shutdown`'s tracker.
    pub(super) fn spawn(&mut self, shutdown: &Shutdown) {
        if let Some(engine) = self.engine.take() {
            self.task = Some(shutdown.spawn(engine.run(shutdown.token())));
        }
    }

    /// A reloaded policy (changed): the engine evaluates every stored inventory again; an
    /// account still starting starts with it.
    pub(super) fn set_policy(&mut self, policy: Option<Arc<Policy>>) {
        self.policy = policy.clone();
        if self.starting.is_none() {
            let _ = self.control.send(Control::Policy(policy));
        }
    }

    /// Applies a reloaded config's view of this account, or keeps what runs and says why.
    pub(super) async fn reload(&mut self, new: Settings, new_listed: Vec<Agent>) {
        let (settings, not_applied) = apply_reload(&self.settings, new);
        if let Some(starting) = &mut self.starting {
            // No engine to ask yet (a reply would never come): it starts with these.
            tracing::info!(
                account = %self.name,
                "reload: the account is not polling yet; it starts with the reloaded watchlist"
            );
            starting.agents = new_listed;
            self.settings = settings;
            return;
        }
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
            removed: crate::engine::Removed::Forget,
            reply,
        });
        // After the watchlist: agents added by it get their rescan slot in the new interval too.
        let _ = self.control.send(Control::Inventory(
            InventoryOptions::from_settings(&settings.api, &settings.inventory)
                .sharing_machines_with_discovery(settings.discovery.enabled),
        ));
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

/// Whether a failed start is tried again: what a remote service (STS, the metadata service)
/// answered, or its silence, can change without a restart. A problem `check` reports as well
/// (no credentials in the configured source, an endpoint that cannot be used) stops `run` as
/// before: the configuration must change, and a restart applies it.
fn worth_retrying(error: &CommandError) -> bool {
    match error {
        CommandError::CvmRole(e) => !matches!(e, CvmRoleError::Setup { .. }),
        CommandError::AssumeRole(e) => !matches!(
            e,
            AssumeRoleError::Setup(_)
                | AssumeRoleError::Base(_)
                | AssumeRoleError::BaseCvmRole(CvmRoleError::Setup { .. })
        ),
        // The chain fell through to the metadata service: most likely no CVM and no
        // credentials configured, which its message explains; kept as it was.
        _ => false,
    }
}

/// Wait after the `attempt`-th failed start of an account: 2 s, 4 s, 8 s, … up to 5 min.
/// Starts at once, not at the 30 s of a refused key: the usual cause is a passing one (STS
/// answering 503, the network not up yet at boot).
pub(super) fn start_retry_delay(attempt: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(2);
    const MAX: Duration = Duration::from_secs(300);
    let exponent = attempt.saturating_sub(1).min(16);
    FIRST.saturating_mul(1u32 << exponent).min(MAX)
}

/// `account_failed` for one failed attempt, and the `STATUS=` text that goes with it.
fn report_start_failure(
    account: &str,
    error: &CommandError,
    attempt: u32,
    retry_in: Duration,
    sink: &dyn EventSink,
    problem: &Mutex<String>,
) {
    *problem.lock().unwrap_or_else(|e| e.into_inner()) = format!(
        "start failed with {} (attempt {attempt}), next try in {} s",
        error.code(),
        retry_in.as_secs()
    );
    sink.emit(&Event::AccountFailed {
        account: account.to_owned(),
        error_code: error.code().to_owned(),
        error_message: error.to_string(),
        attempt,
        retry_in_seconds: retry_in.as_secs(),
    });
}

/// One account's retried start: who it is and where its failures are told.
struct StartAttempts<'a> {
    account: &'a str,
    sink: &'a dyn EventSink,
    /// Beaten every second while retrying: the loop is alive.
    status: &'a EngineStatus,
    problem: &'a Mutex<String>,
}

impl StartAttempts<'_> {
    /// Calls `connect` after `wait`, then after [`start_retry_delay`] of each failure
    /// (reported as `account_failed`, numbered after the `made` attempts already made), until
    /// it succeeds (`Some`) or `shutdown` (`None`). Beats `status` every second meanwhile,
    /// during the attempts too (an STS that takes its whole timeout to answer).
    async fn keep_trying<T, F: Future<Output = Result<T, CommandError>>>(
        &self,
        mut connect: impl FnMut() -> F,
        made: u32,
        wait: Duration,
        shutdown: &CancellationToken,
    ) -> Option<T> {
        let mut attempt = made;
        let mut wait = wait;
        let mut beat = tokio::time::interval(Duration::from_secs(1));
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = tokio::time::Instant::now();
            let sleep = tokio::time::sleep_until(now.checked_add(wait).unwrap_or(now));
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    _ = &mut sleep => break,
                    _ = beat.tick() => self.beat(),
                }
            }
            attempt = attempt.saturating_add(1);
            let connecting = connect();
            tokio::pin!(connecting);
            let result = loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return None,
                    result = &mut connecting => break result,
                    _ = beat.tick() => self.beat(),
                }
            };
            match result {
                Ok(connected) => {
                    tracing::info!(
                        account = %self.account,
                        attempt,
                        "the account started after failed attempts"
                    );
                    return Some(connected);
                }
                Err(error) => {
                    wait = start_retry_delay(attempt);
                    report_start_failure(
                        self.account,
                        &error,
                        attempt,
                        wait,
                        self.sink,
                        self.problem,
                    );
                }
            }
        }
    }

    fn beat(&self) {
        self.status.beats.fetch_add(1, Ordering::Relaxed);
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

/// Hands the heap's free pages back to the system once start-up is over. The watchlist's text
/// and parse, the state file's and the watchlist itself are freed by now, but glibc keeps
/// freed memory below the heap's top mapped: at 100,000 agents that is RSS for nothing for the
/// daemon's whole life (issue 13). The peak (`VmHWM`) is not changed by this.
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::CollectingSink;

    #[test]
    fn start_retries_wait_2_s_doubling_to_5_min() {
        let secs: Vec<u64> = (1..=10).map(|n| start_retry_delay(n).as_secs()).collect();
        assert_eq!(secs, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(start_retry_delay(0).as_secs(), 2);
        assert_eq!(start_retry_delay(u32::MAX).as_secs(), 300);
    }

    fn unavailable() -> CommandError {
        CommandError::AssumeRole(AssumeRoleError::BadAnswer {
            role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
            problem: "scripted".to_owned(),
        })
    }

    #[test]
    fn remote_failures_are_retried_configuration_problems_are_not() {
        let role_arn = || "qcs::cam::uin/1:roleName/r".to_owned();
        let api = || crate::api::ApiError::Transport("reset".to_owned());
        let unreachable = || CvmRoleError::Unreachable {
            url: "http://127.0.0.1:9/".to_owned(),
            reason: "refused".to_owned(),
        };
        let setup = || CvmRoleError::Setup {
            endpoint: "ftp://x/".to_owned(),
            reason: "scheme".to_owned(),
        };
        let retried = [
            CommandError::AssumeRole(AssumeRoleError::Unavailable {
                role_arn: role_arn(),
                error: api(),
            }),
            CommandError::AssumeRole(AssumeRoleError::Refused {
                role_arn: role_arn(),
                error: api(),
            }),
            unavailable(),
            CommandError::AssumeRole(AssumeRoleError::BaseCvmRole(unreachable())),
            CommandError::CvmRole(unreachable()),
        ];
        for error in &retried {
            assert!(worth_retrying(error), "{error}");
        }
        let stopping = [
            CommandError::CvmRole(setup()),
            CommandError::CvmRoleFallback(unreachable()),
            CommandError::AssumeRole(AssumeRoleError::BaseCvmRole(setup())),
            CommandError::Credentials(crate::credentials::CredentialError::NotFound {
                origin: "environment".to_owned(),
                detail: "unset".to_owned(),
            }),
        ];
        for error in &stopping {
            assert!(!worth_retrying(error), "{error}");
        }
    }

    /// The account_failed events: (attempt, retry_in_seconds).
    fn failures(sink: &CollectingSink) -> Vec<(u32, u64)> {
        sink.events()
            .iter()
            .filter_map(|e| match e {
                Event::AccountFailed {
                    account,
                    error_code,
                    attempt,
                    retry_in_seconds,
                    ..
                } => {
                    assert_eq!(account, "second");
                    assert_eq!(error_code, "AssumeRoleError.BadAnswer");
                    Some((*attempt, *retry_in_seconds))
                }
                _ => None,
            })
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_start_is_tried_again_with_backoff_reported_and_beating() {
        let sink = CollectingSink::default();
        let status = EngineStatus::default();
        let problem = Mutex::new(String::new());
        let attempts = StartAttempts {
            account: "second",
            sink: &sink,
            status: &status,
            problem: &problem,
        };
        let started = tokio::time::Instant::now();
        let tries = Mutex::new(Vec::new());
        let connect = || {
            let mut tries = tries.lock().unwrap();
            tries.push(started.elapsed().as_secs());
            let fail = tries.len() < 3;
            async move {
                // An attempt takes a while (an STS near its timeout).
                tokio::time::sleep(Duration::from_secs(1)).await;
                if fail { Err(unavailable()) } else { Ok(42) }
            }
        };
        // The first attempt (made by `start`) failed: next in 2 s.
        let got = attempts
            .keep_trying(connect, 1, start_retry_delay(1), &CancellationToken::new())
            .await;
        assert_eq!(got, Some(42));
        // 2 s after the first failure; each later one 1 s (the attempt) + 4 s, + 8 s.
        assert_eq!(*tries.lock().unwrap(), [2, 7, 16]);
        assert_eq!(failures(&sink), [(2, 4), (3, 8)]);
        assert!(
            problem
                .lock()
                .unwrap()
                .contains("AssumeRoleError.BadAnswer (attempt 3)"),
            "{problem:?}"
        );
        // Beaten about once a second all along, through the waits and the attempts.
        let beats = status.beats.load(Ordering::Relaxed);
        assert!((16..=18).contains(&beats), "{beats}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_start_stops_with_the_daemon_even_mid_attempt() {
        let sink = CollectingSink::default();
        let status = EngineStatus::default();
        let problem = Mutex::new(String::new());
        let attempts = StartAttempts {
            account: "second",
            sink: &sink,
            status: &status,
            problem: &problem,
        };
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            stop.cancel();
        });
        let connect = || async {
            std::future::pending::<()>().await;
            Ok::<_, CommandError>(())
        };
        let got = attempts
            .keep_trying(connect, 1, Duration::from_secs(2), &shutdown)
            .await;
        assert_eq!(got, None);
        assert!(failures(&sink).is_empty());
    }
}
