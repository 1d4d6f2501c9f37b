//! The simulator as a server, the top of the crate: the [`RunningSimulator`] handle (start,
//! statistics, faults, test hooks, shutdown) and the accept and connection loops. The options
//! are `options.rs`, the state every connection shares `shared.rs`; what happens to one request
//! is `handle.rs`; the module docs of `routes.rs` list the order of checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::faults::{AssetPortFaults, Faults, PortFaults};
use super::handle::handle;
use super::lock::lock;
use super::machine_hooks::MachineHooks;
use super::options::SimulatorOptions;
use super::scenario::{CwpPortFacts, OpenPortSpec};
use super::shared::{PortOverride, Shared};
use super::stats::SimStats;
use super::temporary::StsFailure;

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
    ///
    /// The `cwp` API serves them too (for the agent's `Quuid`), with the default facts of
    /// [`CwpPortFacts::defaults`](crate::CwpPortFacts::defaults), first seen now.
    pub fn set_ports(&self, uuid: &str, ports: Vec<OpenPortSpec>) -> bool {
        let since = self.shared.since_start(tokio::time::Instant::now());
        self.override_ports(uuid, |o| {
            o.now = Some(ports.into());
            o.now_cwp = None;
            o.after_next_page = None;
            o.after_next_page_cwp = None;
            o.since = since;
        })
    }

    /// Like [`set_ports`](Self::set_ports), with each port's `cwp` facts (protocol, bind
    /// address, user, path, first seen): what `DescribeAssetPortInfoList` answers for the
    /// agent's `Quuid` from now on (yunjing's `DescribeOpenPorts` sees the ports alone), e.g. a
    /// port moving from `127.0.0.1` to `0.0.0.0`. `false` for a Uuid not in the scenario.
    pub fn set_cwp_ports(&self, uuid: &str, ports: Vec<(OpenPortSpec, CwpPortFacts)>) -> bool {
        let since = self.shared.since_start(tokio::time::Instant::now());
        let (open, facts): (Vec<_>, Vec<_>) = ports.into_iter().unzip();
        self.override_ports(uuid, |o| {
            o.now = Some(open.into());
            o.now_cwp = Some(facts.into());
            o.after_next_page = None;
            o.after_next_page_cwp = None;
            o.since = since;
        })
    }

    /// Like [`set_cwp_ports`](Self::set_cwp_ports), once the next page for the agent has been
    /// answered (as [`set_ports_after_next_page`](Self::set_ports_after_next_page)).
    pub fn set_cwp_ports_after_next_page(
        &self,
        uuid: &str,
        ports: Vec<(OpenPortSpec, CwpPortFacts)>,
    ) -> bool {
        let (open, facts): (Vec<_>, Vec<_>) = ports.into_iter().unzip();
        self.override_ports(uuid, |o| {
            o.after_next_page = Some(open.into());
            o.after_next_page_cwp = Some(facts.into());
        })
    }

    /// Like [`set_ports`](Self::set_ports), but only once the next `DescribeOpenPorts` page for
    /// `uuid` has been answered: the page after it sees `ports`. For tests of a port list that
    /// changes while a client pages it (`TotalCount` changes between pages when the sizes
    /// differ). A `DescribeAssetPortInfoList` page for the agent's `Quuid` counts as a page too.
    pub fn set_ports_after_next_page(&self, uuid: &str, ports: Vec<OpenPortSpec>) -> bool {
        self.override_ports(uuid, |o| {
            o.after_next_page = Some(ports.into());
            o.after_next_page_cwp = None;
        })
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

    /// Replaces the run-time hostile-answer settings of the `cwp` `DescribeAssetPortInfoList`
    /// (see [`AssetPortFaults`]); a scenario's per-agent `cwp_faults` stay as they are.
    pub fn set_asset_port_faults(&self, faults: AssetPortFaults) {
        *lock(&self.shared.asset_port_faults) = faults;
    }

    /// Changes what the `cwp` API's `DescribeMachines` lists from now on (see
    /// [`MachineHooks`]); yunjing's `DescribeMachines` has its own
    /// ([`machine_hooks`](Self::machine_hooks)), so a test steers one backend alone.
    pub fn cwp_machine_hooks(&self) -> &MachineHooks {
        &self.shared.cwp_machine_hooks
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
