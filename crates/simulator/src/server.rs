//! The simulator as a server: its options, the [`RunningSimulator`] handle (start, statistics,
//! faults, shutdown), the state every connection shares, and the accept and connection loops.
//! What happens to one request is `handle.rs`; the module docs of `routes.rs` list the order
//! of checks.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use hyper::header::HeaderValue;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{Faults, PortFaults};
use super::handle::handle;
use super::inventory::CreatedTask;
use super::limiter::{ActionWindow, LimiterKind};
use super::machines::MachineHooks;
use super::scenario::OpenPortSpec;
use super::scenario::Scenario;
use super::stats::{SimStats, StatsState};
use super::sts::{DurationCap, StsFailure, TemporaryCredentials};

/// The only API version of CWP.
pub const API_VERSION: &str = "2018-02-28";
/// The task-status action, answered from each agent's timeline and created tasks.
pub const DESCRIBE_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Starts an open-port collection task for one agent.
pub const CREATE_TASK_ACTION: &str = "CreateOpenPortTask";
/// Pages the open ports collected by an agent's latest completed task.
pub const DESCRIBE_PORTS_ACTION: &str = "DescribeOpenPorts";
/// Largest accepted clock difference, as the real API: 5 minutes.
pub const MAX_SKEW_SECS: i64 = 300;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Agents, timelines and credentials.
    pub scenario: Scenario,
    /// The per-action rate limit.
    pub limiter: LimiterKind,
    /// Added before every answer (errors included).
    pub latency: Duration,
    /// Per action (`X-TC-Action`), added instead of `latency`: one slow action beside fast
    /// ones, as a half-broken API answers (issue 20: `DescribeOpenPorts` in 8 s).
    pub action_latency: HashMap<String, Duration>,
    /// The simulator's clock is the system clock plus this (signed), for `Date`, the
    /// signature-expiry check and its message.
    pub clock_offset_secs: i64,
    /// Injected faults (changeable later with [`RunningSimulator::set_faults`]).
    pub faults: Faults,
    /// Seed for the fault draws, for reproducible runs; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl SimulatorOptions {
    /// Defaults: 20/s sliding window, no latency, no clock offset, no faults, random seed.
    pub fn new(scenario: Scenario) -> SimulatorOptions {
        SimulatorOptions {
            scenario,
            limiter: LimiterKind::default(),
            latency: Duration::ZERO,
            action_latency: HashMap::new(),
            clock_offset_secs: 0,
            faults: Faults::default(),
            seed: None,
        }
    }
}
/// A simulator serving on a socket; dropping it without [`shutdown`](Self::shutdown) leaves the
/// accept loop running until the runtime ends.
pub struct RunningSimulator {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for RunningSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSimulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningSimulator {
    /// Binds `listen`, spawns the accept loop and returns at once.
    pub async fn start(opts: SimulatorOptions, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            shared.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::info!(target: "cwp_portwatch::simulator", %addr, "simulator listening");
        Ok(RunningSimulator {
            addr,
            shared,
            cancel,
            tracker,
        })
    }

    /// `http://ADDR`, the endpoint to give a client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the statistics and the request log.
    pub fn stats(&self) -> SimStats {
        let mut stats = lock(&self.shared.stats).snapshot();
        for ((window, action), meter) in lock(&self.shared.limiters).iter() {
            let meter = meter.stats();
            stats
                .per_account
                .entry(window.clone())
                .or_default()
                .insert(action.clone(), meter.clone());
            let all = stats.per_action.entry(action.clone()).or_default();
            all.arrived += meter.arrived;
            all.accepted += meter.accepted;
            all.throttled += meter.throttled;
            all.max_arrivals_in_window =
                all.max_arrivals_in_window.max(meter.max_arrivals_in_window);
            all.max_accepted_in_window =
                all.max_accepted_in_window.max(meter.max_accepted_in_window);
        }
        stats
    }

    /// Replaces the fault probabilities for requests that arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Makes `DescribeOpenPorts` answer for agent `uuid` exactly `ports`, from now on and
    /// whatever tasks do, until [`clear_ports`](Self::clear_ports). `false` (and nothing set)
    /// for a Uuid not in the scenario.
    pub fn set_ports(&self, uuid: &str, ports: Vec<OpenPortSpec>) -> bool {
        self.override_ports(uuid, |o| {
            o.now = Some(ports.into());
            o.after_next_page = None;
        })
    }

    /// Like [`set_ports`](Self::set_ports), but only once the next `DescribeOpenPorts` page for
    /// `uuid` has been answered: the page after it sees `ports`. For tests of a port list that
    /// changes while a client pages it (`TotalCount` changes between pages when the sizes
    /// differ).
    pub fn set_ports_after_next_page(&self, uuid: &str, ports: Vec<OpenPortSpec>) -> bool {
        self.override_ports(uuid, |o| o.after_next_page = Some(ports.into()))
    }

    /// Back to the scenario's `ports` timeline for `uuid` (also drops a pending
    /// [`set_ports_after_next_page`](Self::set_ports_after_next_page)).
    pub fn clear_ports(&self, uuid: &str) {
        if let Some(&index) = self.shared.agents.get(uuid) {
            lock(&self.shared.port_overrides).remove(&index);
        }
    }

    /// Replaces the hostile-answer settings of `DescribeOpenPorts` (see [`PortFaults`]).
    pub fn set_port_faults(&self, faults: PortFaults) {
        *lock(&self.shared.port_faults) = faults;
    }

    fn override_ports(&self, uuid: &str, change: impl FnOnce(&mut PortOverride)) -> bool {
        let Some(&index) = self.shared.agents.get(uuid) else {
            return false;
        };
        change(lock(&self.shared.port_overrides).entry(index).or_default());
        true
    }

    /// Changes what `DescribeMachines` lists from now on (see [`MachineHooks`]).
    pub fn machine_hooks(&self) -> &MachineHooks {
        &self.shared.machine_hooks
    }

    /// Grants `AssumeRole` at most `cap` (whatever `DurationSeconds` asks), so tests see
    /// temporary credentials expire and renew within seconds; `None`: as asked.
    pub fn cap_assume_role_duration(&self, cap: Option<Duration>) {
        *lock(&self.shared.assume_role_cap) = cap;
    }

    /// Scripts `AssumeRole` failures (see [`StsFailure`]), after those already scripted.
    pub fn fail_assume_role(&self, failure: StsFailure) {
        lock(&self.shared.sts_failures).push(failure);
    }

    /// The `TmpSecretKey` and `Token` of every temporary credential held now (not revoked),
    /// so a test can check that none of them ever reached a client's output.
    pub fn temporary_secrets(&self) -> Vec<String> {
        self.shared.temporary_secrets()
    }

    /// Forgets every credential `AssumeRole` issued: requests signed with one answer
    /// `AuthFailure.SecretIdNotFound` until the client assumes the role again.
    pub fn revoke_temporary_credentials(&self) {
        self.shared.revoke_temporary();
    }

    /// Stops accepting, lets connections finish what they are answering (up to 1 s, longer
    /// stalls are cut), and waits for every task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// State shared by every connection.
pub(super) struct Shared {
    pub(super) scenario: Scenario,
    /// Uuid → index in `scenario.agents`, so a large scenario costs no scan per request.
    pub(super) agents: HashMap<String, usize>,
    pub(super) limiter_kind: LimiterKind,
    pub(super) latency: Duration,
    pub(super) action_latency: HashMap<String, Duration>,
    pub(super) clock_offset_secs: i64,
    pub(super) start: Instant,
    pub(super) faults: Mutex<Faults>,
    pub(super) rng: Mutex<StdRng>,
    /// Per action: the limiter and the meter of accepted requests.
    /// Per (rate window, action): the limiter and its meters. The window is the SecretId, or
    /// `role:RoleArn` for temporary credentials (see `sts.rs`).
    pub(super) limiters: Mutex<HashMap<(String, String), ActionWindow>>,
    /// Permanent SecretId → SecretKey: the scenario's main pair and its `[[credential]]`s.
    pub(super) keys: HashMap<String, String>,
    /// Credentials issued by `AssumeRole`.
    pub(super) temporary: Mutex<TemporaryCredentials>,
    /// Grant at most this long to `AssumeRole` (a test hook).
    pub(super) assume_role_cap: Mutex<DurationCap>,
    /// Scripted `AssumeRole` failures (a test hook).
    pub(super) sts_failures: Mutex<Vec<StsFailure>>,
    /// The simulator's clock at `start`, in Unix seconds, for `CreateTime`/`ModifyTime`.
    pub(super) start_unix: i64,
    /// Agent index → the latest task created through `CreateOpenPortTask`.
    pub(super) tasks: Mutex<HashMap<usize, CreatedTask>>,
    /// Agent index → ports set by a test, served instead of the scenario's.
    pub(super) port_overrides: Mutex<HashMap<usize, PortOverride>>,
    /// Hostile `DescribeOpenPorts` answers.
    pub(super) port_faults: Mutex<PortFaults>,
    /// `DescribeMachines` test hooks.
    pub(super) machine_hooks: MachineHooks,
    pub(super) stats: Mutex<StatsState>,
}

/// Ports a test set for one agent (see [`RunningSimulator::set_ports`]).
#[derive(Default)]
pub(super) struct PortOverride {
    /// Served now.
    pub(super) now: Option<Arc<[OpenPortSpec]>>,
    /// Becomes `now` once the next page has been answered.
    pub(super) after_next_page: Option<Arc<[OpenPortSpec]>>,
}

/// A poisoned lock only means another request panicked mid-update of counters; the counters
/// are still usable, and the simulator must keep answering.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(opts: SimulatorOptions) -> Shared {
        let agents = opts
            .scenario
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.uuid.clone(), i))
            .collect();
        let rng = match opts.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        let mut keys: HashMap<String, String> = opts
            .scenario
            .extra_credentials
            .iter()
            .map(|c| (c.secret_id.clone(), c.secret_key.clone()))
            .collect();
        keys.insert(
            opts.scenario.secret_id.clone(),
            opts.scenario.secret_key.clone(),
        );
        Shared {
            keys,
            temporary: Mutex::new(TemporaryCredentials::default()),
            assume_role_cap: Mutex::new(None),
            sts_failures: Mutex::new(Vec::new()),
            scenario: opts.scenario,
            agents,
            limiter_kind: opts.limiter,
            latency: opts.latency,
            action_latency: opts.action_latency,
            clock_offset_secs: opts.clock_offset_secs,
            start: Instant::now(),
            faults: Mutex::new(opts.faults),
            rng: Mutex::new(rng),
            limiters: Mutex::new(HashMap::new()),
            machine_hooks: MachineHooks::default(),
            start_unix: unix_now().saturating_add(opts.clock_offset_secs),
            tasks: Mutex::new(HashMap::new()),
            port_overrides: Mutex::new(HashMap::new()),
            port_faults: Mutex::new(PortFaults::default()),
            stats: Mutex::new(StatsState::default()),
        }
    }

    /// Unix seconds on the simulator's clock (system time plus the configured offset).
    pub(super) fn now_unix(&self) -> i64 {
        unix_now().saturating_add(self.clock_offset_secs)
    }

    /// `Date`: the simulator's clock, clamped to what an HTTP date can say (1970 to the end of
    /// 9999: `httpdate` panics past it), so no `--clock-offset` can take the server down.
    pub(super) fn date_header(&self) -> HeaderValue {
        /// 9999-12-31T23:59:59Z.
        const LAST_HTTP_DATE: u64 = 253_402_300_799;
        let secs = u64::try_from(self.now_unix()).map_or(0, |s| s.min(LAST_HTTP_DATE));
        let time = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(UNIX_EPOCH);
        HeaderValue::from_str(&httpdate::fmt_http_date(time))
            .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    }
}

/// Seconds since the Unix epoch on the system clock, saturating at the ends of `i64` (the
/// daemon's `clock::unix_now`, three lines, written out so that the simulator needs none of the
/// daemon).
fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(stream, shared.clone(), cancel.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(target: "cwp_portwatch::simulator", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(target: "cwp_portwatch::simulator", error = %e, "connection ended");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}
