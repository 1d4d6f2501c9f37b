//! `run` with `[ha]` (feature `ha`, `docs/ha.md`): the daemon as one candidate of an etcd
//! election, of which only the leader polls.
//!
//! The life of a process:
//! 1. **Start** as any daemon does (config, logging, policy, metrics bound and served with
//!    `cwp_portwatch_leader 0`, `state_dir` checked, signal handlers), then `READY=1` with
//!    `STATUS=standby: waiting for leadership of ELECTION as NAME (leader: X)`. Nothing polls,
//!    no API client exists.
//! 2. **Standby**: connects to etcd (retrying with backoff while it cannot, and saying so in
//!    the log and `STATUS=`), and campaigns. `/healthz` is healthy and says "standby";
//!    `WATCHDOG=1` is sent while the loop runs. SIGTERM ends it with 0.
//! 3. **Elected**: the leadership's [`crate::ha::Fence`] becomes the fence of every CWP client
//!    the process builds ([`crate::api::client::fence_every_client`]); `cwp_portwatch_leader`
//!    turns 1; the state its predecessor replicated is restored into `state_dir`
//!    ([`crate::ha::restore`]) *before* any engine or delivery starts, so the ordinary start-up
//!    reads the leader's last state; the [`crate::ha::Replicator`] starts; then the ordinary
//!    run ([`super::run::lead`]) with `leader_elected` as its first event and the term's
//!    `deposed` future in its loop.
//! 4. **End of the term**:
//!    - SIGTERM: the ordinary drain and final state save, then one last replication push,
//!      then `resign` so that a standby takes over at once; exit 0.
//!    - deposed (lease expired: paused or partitioned longer than the TTL; or the key gone):
//!      the fence closed before the lease could expire, so nothing has been sent since; the
//!      engines stop as at a stop (answers in flight drained, nothing new sent),
//!      `leadership_lost`, *no* replication push (the replicator is aborted; a push already
//!      under way is refused by etcd, its write being guarded by the lost key), and the
//!      process exits with 75 (`EX_TEMPFAIL`). Its memory is stale: systemd's
//!      `Restart=on-failure` starts it again as a standby, which restores fresh state when it
//!      next leads (the pattern of Kubernetes' controllers).

use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::config::accounts::AccountPlan;
use crate::events::{Event, EventSink, TracingSink};
use crate::ha::{self, Coordinator, HaError, HaSettings, Leadership, Replicator};
use crate::metrics::{Health, Metrics};
use crate::shutdown::{self, Shutdown, StopSignals};
use crate::watchlist::Watchlist;

use super::CommandError;
use super::run::{self, Deposed, Ended, Leading, Prepared, STATUS_EVERY, Term, notify};

/// How long the last replication push of a clean stop may take.
const LAST_PUSH_WITHIN: Duration = Duration::from_secs(10);
/// How long resigning may take (etcd away: the lease then expires on its own).
const RESIGN_WITHIN: Duration = Duration::from_secs(5);
/// How long a stopped standby waits for its campaign to revoke its lease.
const REVOKE_WITHIN: Duration = Duration::from_secs(3);
/// How often a standby asks etcd who leads, for `STATUS=` and `/healthz`.
const LEADER_LOOKUP_EVERY: Duration = Duration::from_secs(2);

/// The `[ha]` section of `settings`, when it asks for HA.
pub(super) fn settings_of(settings: &Settings) -> Option<HaSettings> {
    settings.ha.clone()
}

/// The daemon as a candidate of `ha`'s election: standby until it leads, then the ordinary
/// run; see the module docs.
pub(super) async fn run(
    settings: Settings,
    plans: Vec<(AccountPlan, Watchlist)>,
    ha: HaSettings,
) -> Result<ExitCode, CommandError> {
    let Prepared {
        policy,
        metrics,
        server,
    } = run::prepare(&settings, &plans).await?;
    let shutdown = Shutdown::new();
    let health = Arc::new(Health::default());
    let election = ha::election_name(&ha.election);
    let mut standby = Standby::new(&ha, &election, health.clone(), metrics.clone());
    standby.show(None);
    if let (Some(handles), Some(server)) = (&metrics, server) {
        // Served from the start: a standby is scraped and probed like a leader.
        shutdown.spawn(server.serve_health(handles[0].clone(), health.clone(), shutdown.token()));
    }
    // Signal handlers before READY=1: a SIGTERM to a standby is a clean stop.
    let hup =
        match StopSignals::install().and_then(|stop| Ok((stop, signal(SignalKind::hangup())?))) {
            Ok((stop, hup)) => {
                shutdown.cancel_on(stop);
                hup
            }
            Err(e) => {
                shutdown.finish(shutdown::GRACE).await;
                return Err(CommandError::Signals(e));
            }
        };
    standby.hup = Some(hup);
    notify(&[NotifyState::Ready, NotifyState::Status(&standby.line())]);
    tracing::info!(
        name = %ha.name,
        election = %election,
        "standby: waiting for leadership"
    );

    let Some((coordinator, mut leadership)) = standby.wait_for_leadership(&shutdown).await else {
        notify(&[
            NotifyState::Stopping,
            NotifyState::Status("stopping: standby"),
        ]);
        shutdown.finish(shutdown::GRACE).await;
        return Ok(ExitCode::SUCCESS);
    };
    let hup = standby.hup.take();
    // Elected. The fence first: no client exists yet, every one built from now on checks it.
    let fence = leadership.fence();
    if crate::api::client::fence_every_client(fence.clone()).is_err() {
        // A process leads once (a deposed one exits): a second term is a bug, not a state.
        tracing::error!("elected a second time in one process; exiting so systemd restarts it");
        leadership.resign().await;
        return Ok(ExitCode::from(run::EX_TEMPFAIL));
    }
    if let Some(handles) = &metrics {
        handles[0].set_leader(true);
    }
    tracing::info!(
        name = %ha.name,
        election = %election,
        "elected: restoring the replicated state before polling"
    );
    notify(&[NotifyState::Status(
        "leader: restoring the replicated state",
    )]);
    let guard = leadership.guard();
    let repl_stop = CancellationToken::new();
    let mut replicating = None;
    let ended = {
        let mut deposed = std::pin::pin!(async {
            let lost = leadership.deposed().await;
            Deposed {
                reason: lost.reason,
                holder: lost.holder,
            }
        });
        let mut client = coordinator.client();
        let restored = {
            let mut restoring =
                std::pin::pin!(restore(&mut client, &ha.election, &settings.state_dir));
            // READY=1 was sent as a standby: the watchdog is fed while a large state is
            // written.
            let mut ticker = tokio::time::interval(watchdog_tick());
            loop {
                tokio::select! {
                    lost = deposed.as_mut() => break Err(Some(lost)),
                    _ = shutdown.cancelled() => break Err(None),
                    () = &mut restoring => break Ok(()),
                    _ = ticker.tick() => notify(&[NotifyState::Watchdog]),
                }
            }
        };
        match restored {
            Err(Some(lost)) => {
                // Lost before polling: nothing was sent, nothing to stop.
                TracingSink.emit(&Event::LeadershipLost {
                    name: ha.name.clone(),
                    holder: lost.holder,
                    reason: lost.reason,
                });
                notify(&[NotifyState::Stopping]);
                shutdown.finish(shutdown::GRACE).await;
                Ok(Ended::Deposed)
            }
            Err(None) => {
                notify(&[NotifyState::Stopping]);
                shutdown.finish(shutdown::GRACE).await;
                Ok(Ended::Stopped)
            }
            Ok(()) => {
                let replicator = Replicator::new(
                    coordinator.client(),
                    &ha.election,
                    guard,
                    &settings.state_dir,
                );
                // Not on the shutdown's tracker: a clean stop pushes last, after the engines'
                // final save; a deposed leader aborts it.
                replicating = Some(tokio::spawn(
                    replicator.run(fence.clone(), repl_stop.clone()),
                ));
                run::lead(
                    settings,
                    plans,
                    Leading {
                        policy,
                        metrics,
                        server: None,
                        health,
                        shutdown,
                        hup,
                        term: Some(Term {
                            name: ha.name.clone(),
                            election: ha.election.clone(),
                            fence,
                            deposed: deposed.as_mut(),
                        }),
                    },
                )
                .await
            }
        }
    };
    match ended {
        Ok(Ended::Deposed) => {
            if let Some(replicating) = replicating {
                replicating.abort();
            }
            Ok(ExitCode::from(run::EX_TEMPFAIL))
        }
        other => {
            // A stop (or an error of the run): what the engines saved last goes to etcd, then
            // a standby may take over at once.
            repl_stop.cancel();
            if let Some(replicating) = replicating
                && tokio::time::timeout(LAST_PUSH_WITHIN, replicating)
                    .await
                    .is_err()
            {
                tracing::warn!(
                    "the last replication push did not end within {} s; the next leader \
                     starts from the previous one",
                    LAST_PUSH_WITHIN.as_secs()
                );
            }
            if tokio::time::timeout(RESIGN_WITHIN, leadership.resign())
                .await
                .is_err()
            {
                tracing::warn!(
                    "resigning did not end within {} s; a standby takes over when the lease \
                     expires",
                    RESIGN_WITHIN.as_secs()
                );
            }
            other.map(|end| end.exit_code())
        }
    }
}

/// Writes the replicated state into `state_dir`, retrying while etcd cannot be read (the
/// caller gives up when leadership is lost or the daemon stops). A replica that cannot be
/// read back is reported, and the run starts from the local files (statuses repeated as
/// first answers are better than no polling).
async fn restore(client: &mut etcd_client::Client, prefix: &str, state_dir: &Path) {
    let mut attempt = 0u32;
    loop {
        match ha::restore(client, prefix, state_dir).await {
            Ok(report) => {
                tracing::info!(
                    files = report.files,
                    bytes = report.bytes,
                    "replicated state restored into state_dir"
                );
                return;
            }
            Err(e @ HaError::Etcd(_)) => {
                attempt = attempt.saturating_add(1);
                let wait = etcd_retry_delay(attempt);
                tracing::warn!(
                    error_code = e.code(),
                    "cannot read the replicated state ({e}); trying again in {} ms",
                    wait.as_millis()
                );
                tokio::time::sleep(wait).await;
            }
            Err(e) => {
                tracing::error!(
                    error_code = e.code(),
                    "cannot restore the replicated state ({e}); polling from the local \
                     state_dir as it is"
                );
                return;
            }
        }
    }
}

/// How often `STATUS=` and `WATCHDOG=1` go out: every half of `WatchdogSec`, at most
/// [`STATUS_EVERY`].
fn watchdog_tick() -> Duration {
    sd_notify::watchdog_enabled().map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY))
}

/// Wait after the `attempt`-th failed etcd call: 0.5 s doubling to 8 s (a standby must
/// notice an etcd that is back well within a lease).
fn etcd_retry_delay(attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(4);
    Duration::from_millis(500).saturating_mul(1u32 << exponent)
}

/// A candidate that does not lead: what it shows systemd, `/healthz` and `/metrics`.
struct Standby {
    name: String,
    election: String,
    settings: HaSettings,
    health: Arc<Health>,
    metrics: Option<Vec<Arc<Metrics>>>,
    /// Who leads, as last asked (`None`: nobody, or not known).
    leader: Arc<Mutex<Option<String>>>,
    /// Why it cannot campaign now (etcd unreachable), when so.
    problem: Option<String>,
    hup: Option<Signal>,
}

impl Standby {
    fn new(
        settings: &HaSettings,
        election: &str,
        health: Arc<Health>,
        metrics: Option<Vec<Arc<Metrics>>>,
    ) -> Self {
        if let Some(handles) = &metrics {
            handles[0].set_leader(false);
        }
        Standby {
            name: settings.name.clone(),
            election: election.to_owned(),
            settings: settings.clone(),
            health,
            metrics,
            leader: Arc::new(Mutex::new(None)),
            problem: None,
            hup: None,
        }
    }

    /// `STATUS=` (and `/healthz`'s line).
    fn line(&self) -> String {
        let leader = self
            .leader
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut line = format!(
            "standby: waiting for leadership of {} as {} (leader: {})",
            self.election,
            self.name,
            leader.as_deref().unwrap_or("none known")
        );
        if let Some(problem) = &self.problem {
            line.push_str("; ");
            line.push_str(problem);
        }
        crate::events::printable(&line)
    }

    /// Shows the line to `/healthz` (and, with `problem`, why it cannot campaign).
    fn show(&mut self, problem: Option<String>) {
        self.problem = problem;
        self.health.standby(self.line());
        if let Some(handles) = &self.metrics {
            handles[0].set_leader(false);
        }
    }

    /// Connects and campaigns until elected (`Some`) or stopped (`None`), retrying etcd
    /// faults with backoff and saying so.
    async fn wait_for_leadership(
        &mut self,
        shutdown: &Shutdown,
    ) -> Option<(Arc<Coordinator>, Leadership)> {
        let mut attempt = 0u32;
        loop {
            let settings = self.settings.clone();
            let connected = self
                .alive_until(Some(shutdown), async move {
                    Coordinator::connect(&settings).await
                })
                .await?;
            let coordinator = match connected {
                Ok(coordinator) => Arc::new(coordinator),
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    self.etcd_failed(&e, attempt, shutdown).await?;
                    continue;
                }
            };
            if attempt > 0 {
                tracing::info!("etcd reached again: campaigning");
                attempt = 0;
            }
            self.show(None);
            // Who leads, asked now and then beside the campaign (for STATUS= and /healthz).
            let looking = CancellationToken::new();
            tokio::spawn(look_up_leader(
                coordinator.clone(),
                self.leader.clone(),
                looking.clone(),
            ));
            let stop = shutdown.token();
            let campaigning = coordinator.clone();
            // The campaign sees the stop itself and revokes its lease (so that a stopped
            // standby's key never delays a takeover); bounded, as etcd may not answer.
            let campaign = self
                .alive_until(None, async move {
                    tokio::select! {
                        campaigned = campaigning.campaign(&stop) => campaigned,
                        () = async {
                            stop.cancelled().await;
                            tokio::time::sleep(REVOKE_WITHIN).await;
                        } => Ok(None),
                    }
                })
                .await;
            looking.cancel();
            match campaign? {
                Ok(Some(leadership)) => return Some((coordinator, leadership)),
                // The stop.
                Ok(None) => return None,
                Err(e) => {
                    attempt = attempt.saturating_add(1);
                    self.etcd_failed(&e, attempt, shutdown).await?;
                }
            }
        }
    }

    /// Says that etcd failed and waits before the next attempt; `None` on a stop.
    async fn etcd_failed(
        &mut self,
        error: &HaError,
        attempt: u32,
        shutdown: &Shutdown,
    ) -> Option<()> {
        let wait = etcd_retry_delay(attempt);
        tracing::warn!(
            error_code = error.code(),
            attempt,
            "standby: cannot reach etcd ({error}); trying again in {} ms",
            wait.as_millis()
        );
        self.show(Some(format!(
            "cannot reach etcd ({}), next try in {} ms",
            error.code(),
            wait.as_millis()
        )));
        notify(&[NotifyState::Status(&self.line())]);
        self.alive_until(Some(shutdown), tokio::time::sleep(wait))
            .await
    }

    /// Runs `work` while keeping the standby alive for systemd (`STATUS=`, `WATCHDOG=1`) and
    /// acknowledging SIGHUP; `None` when `shutdown` (if given: else `work` sees the stop
    /// itself) stops the daemon first.
    async fn alive_until<T>(
        &mut self,
        shutdown: Option<&Shutdown>,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        let watchdog = sd_notify::watchdog_enabled();
        let mut ticker = tokio::time::interval(watchdog_tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut work = std::pin::pin!(work);
        loop {
            let hup = async {
                match self.hup.as_mut() {
                    Some(hup) => hup.recv().await,
                    None => std::future::pending().await,
                }
            };
            let stopped = async {
                match shutdown {
                    Some(shutdown) => shutdown.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stopped => return None,
                done = &mut work => return Some(done),
                _ = hup => {
                    match NotifyState::monotonic_usec_now() {
                        Ok(now) => notify(&[NotifyState::Reloading, now]),
                        Err(_) => notify(&[NotifyState::Reloading]),
                    }
                    tracing::info!(
                        "standby: nothing runs to reload; a changed configuration applies \
                         when the service is restarted"
                    );
                    notify(&[NotifyState::Ready, NotifyState::Status(&self.line())]);
                }
                _ = ticker.tick() => {
                    let line = self.line();
                    self.health.standby(line.clone());
                    // The standby's loop is this one: it runs, so the watchdog is fed.
                    if watchdog.is_some() {
                        notify(&[NotifyState::Watchdog, NotifyState::Status(&line)]);
                    } else {
                        notify(&[NotifyState::Status(&line)]);
                    }
                }
            }
        }
    }
}

/// Asks who leads every [`LEADER_LOOKUP_EVERY`] into `leader`, until `stop`.
async fn look_up_leader(
    coordinator: Arc<Coordinator>,
    leader: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
) {
    loop {
        let asked = tokio::select! {
            _ = stop.cancelled() => return,
            asked = coordinator.leader() => asked,
        };
        if let Ok(name) = asked {
            *leader.lock().unwrap_or_else(PoisonError::into_inner) = name;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LEADER_LOOKUP_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::etcd_retry_delay;

    #[test]
    fn etcd_retries_wait_half_a_second_doubling_to_8_s() {
        let ms: Vec<u128> = (1..=7).map(|n| etcd_retry_delay(n).as_millis()).collect();
        assert_eq!(ms, [500, 1000, 2000, 4000, 8000, 8000, 8000]);
        assert_eq!(etcd_retry_delay(0).as_millis(), 500);
        assert_eq!(etcd_retry_delay(u32::MAX).as_millis(), 8000);
    }
}
