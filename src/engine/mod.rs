//! The polling engine: one dispatcher that owns the limiters and the due queues, sends
//! requests, and turns answers into events.
//!
//! A poll's life: an agent's `lane::Job` waits in its lane's [`crate::scheduler::DueQueue`]
//! → the lane's [`crate::pacing::Pacer`] grants a send → a task owned by the dispatcher calls
//! the [`Poller`] (the signed [`crate::api::Client`] in production) → the answer comes back to
//! the dispatcher → `decide::decide` says what it means for the agent (new status and
//! transition, next due time, events, signals) → the dispatcher applies that: known status, queue,
//! rate control, credentials gate, sink.
//!
//! Where things are:
//! - `dispatcher`: [`Engine`], the one loop, and its builder API. Only it touches the queues,
//!   the agent table and the pacers: no locks, and the order of sends is decided in one place.
//! - `agents`: the agent table (dense ids, each agent's record with its last known status,
//!   orphans of reloads, free ids, statuses kept for agents not watched yet).
//! - `decide`: pure "what does this answer mean for this agent": retry policy, `poll_failed`
//!   throttling, credentials and once-mode bookkeeping. Unit-tested without I/O or clocks.
//! - `lane`: per action, a due queue, a strict pacer, a rate control and an in-flight budget;
//!   `lane::Job`, `lane::Action`, and `lane::answered`, the per-answer metrics hook each
//!   request calls.
//! - `account`: what belongs to one set of credentials: the poller, its lanes, the
//!   credentials gate and the learned clock skew.
//! - `in_flight`: the spawned requests, tracked so a stop can drain and abort them.
//! - `reload`: watchlist changes (start-up phasing, reloads, orphans).
//! - `saver`: the state file, saved off-thread while statuses change and once at the end.
//! - `heartbeat`: [`EngineStatus`], the numbers the daemon shows `systemd`.
//! - `inventory`, `inventory_state` and `inventory_decide`: the open-port inventory's two
//!   lanes (`CreateOpenPortTask`, `DescribeOpenPorts`), what it keeps (per-agent state beside
//!   the agent table, stored snapshots, the inventory file's saver), and the pure rules for
//!   its follow-up jobs (fetch after `COMPLETE`, `create_missing`, rescans at each agent's
//!   slot) with their [`InventoryOptions`].
//! - `findings`: the expected-ports policy evaluated on each agent's stored snapshot, its
//!   findings compared with the stored ones and emitted once per change.
//! - `observe`: the engine's side of [`crate::metrics`] (the registry handed in, the gauges
//!   refreshed with the heartbeat).
//!
//! ## Backends (issue 24)
//! An account talks to one API, yunjing or `cwp` (`[api] service`, per `[[account]]` too),
//! and its backend ([`Backend`], `backend.rs`) decides which lanes its engine has: yunjing's
//! `DescribeOpenPortTaskStatus`, `CreateOpenPortTask`, `DescribeOpenPorts`, or `cwp`'s
//! `DescribeMachines` and `DescribeAssetPortInfoList` (`cwp.rs`). The backend is the
//! poller's ([`Poller::backend`]: a `Client` signing for `cwp` is a `cwp` one), so an engine
//! never has a lane its client cannot serve. What changed in the design to make this one
//! engine rather than a fork: `Account::lanes` holds the backend's lanes only (before, one per
//! `Action`, at `Action::index`), found by action; a lane's queue holds what its jobs are
//! about (agents, or for `DescribeMachines` the listing cursors); code that schedules
//! yunjing's status polls or tasks asks whether the account has that lane; and the end of a
//! port listing (reconcile, store, events, confirmation) is one function for both
//! (`Engine::store_snapshot`). Everything else — the loop, pacing, agent table, exactly-once
//! statuses, state and inventory files, policy, metrics and sinks — is shared unchanged.
//!
//! ## Adding an action (e.g. `CreateOpenPortTask`, `DescribeOpenPorts`)
//! 1. a variant in `lane::Action` and in the backend's `Backend::actions` (its lane, with
//!    its own strict limiter and rate control, is then created by `account::Account::new`)
//!    and in `lane::Job` (what one request does, e.g. `FetchPorts(agent)`, with any paging
//!    state kept beside the agent's record);
//! 2. a method on [`Poller`] for the call and a `in_flight::Reply` variant for its answer;
//! 3. an arm in `Engine::send` and in `Engine::on_answer`, and a pure `decide` for it that
//!    may ask for follow-up jobs (a `COMPLETE` after `COLLECTING` → `FetchPorts`), which the
//!    dispatcher schedules in that job's lane.
//!
//! The loop itself does not change: it already takes the earliest due job of whichever lane
//! has a free slot (its pacer's and its own in-flight budget's).
//!
//! ## Adding accounts
//! One engine per account (decided; `[[account]]`, issue 12). Each account gets its own
//! [`Engine`]: its own dispatcher loop, lanes with strict limiters per action, rate control,
//! credentials gate and client (its region, its credentials and their refresher), all in the
//! same process and runtime, sharing only the event sink, the metrics registry and the
//! shutdown token (`commands::run` builds them, one `AccountRun` each, in
//! `commands/account_run.rs`). Tencent's quota is per action *per account*, so per-account
//! limiters are exactly the quota; and isolation (one
//! account's throttling, refused credentials or outage never slows another) holds by
//! construction, as nothing on the hot path is shared. The engine itself does not know its
//! account: the sink it is given marks its events ([`crate::account`]), and each keeps
//! its own state file (`state.<account>.json`).

mod account;
mod agents;
mod backend;
mod cwp;
mod cwp_state;
#[cfg(test)]
mod cwp_tests;
mod decide;
mod dispatcher;
#[cfg(test)]
mod fence_tests;
mod findings;
#[cfg(test)]
mod findings_tests;
mod heartbeat;
mod in_flight;
mod inventory;
mod inventory_decide;
mod inventory_state;
#[cfg(test)]
mod inventory_tests;
mod lane;
#[cfg(test)]
mod lane_tests;
mod observe;
mod reload;
mod saver;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Duration;

use crate::api::{ApiError, Client, TaskStatus};
use crate::scheduler::Intervals;
use crate::status::Status;
use crate::watchlist::Agent;

pub use backend::Backend;
pub use cwp::{CwpListing, cwp_listings};
pub use dispatcher::Engine;
pub use findings::evaluate as evaluate_snapshot;
pub use findings::removed_events as removed_finding_events;
pub use heartbeat::EngineStatus;
pub use inventory_decide::InventoryOptions;

/// While statuses change, the state file is rewritten at most this often.
pub const STATE_SAVE_EVERY: Duration = Duration::from_secs(1);
/// At most one `poll_failed` per agent in this time while it keeps failing.
pub const POLL_FAILED_EVERY: Duration = Duration::from_secs(60);
/// At most one `credentials_failed` event in this time, and while the API refuses our
/// credentials, at most one request (a probe) in this time: bad keys must not hammer the API.
pub const CREDENTIALS_EVENT_EVERY: Duration = Duration::from_secs(30);
/// `once`: tries per agent for a failure worth retrying (transient, clock, refreshed token),
/// the first retry at once, the next after a backoff of up to 1 s. Throttled polls do not
/// count: they wait for the rate, within [`once_deadline`].
pub const ONCE_TRIES: u32 = 3;
/// `once`: the shortest deadline for the whole run.
pub const ONCE_DEADLINE_MIN: Duration = Duration::from_secs(60);

/// How long a `once` run may take before the agents still without a status are reported as
/// failed: [`ONCE_DEADLINE_MIN`] plus eight passes' worth of the agents at the configured
/// rate (one pass at an eighth of the rate, as throttling may cut it three times, or fewer
/// cuts and the retries), so a throttled API still gets every agent polled, and a stuck one
/// cannot keep `once` running for ever.
pub fn once_deadline(agents: usize, requests_per_second: u32) -> Duration {
    let pass_secs = (agents as u64 / u64::from(requests_per_second.max(1))).saturating_add(1);
    ONCE_DEADLINE_MIN.saturating_add(Duration::from_secs(pass_secs.saturating_mul(8)))
}

/// A `clock_skew` event when the learned offset exceeds this.
pub const CLOCK_SKEW_WARN: Duration = Duration::from_secs(30);

/// Asks the running engine to change what it does (sent by the daemon on SIGHUP).
#[derive(Debug)]
pub enum Control {
    /// A new watchlist and settings; the reply says (agents, added, removed).
    Reload {
        /// The new watchlist.
        agents: Vec<Agent>,
        /// The new polling settings.
        config: EngineConfig,
        /// What becomes of what is known of the agents it removes.
        removed: Removed,
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<(usize, usize, usize)>,
    },
    /// New `[inventory]` settings and per-action rates (sent after a `Reload`). Whether the
    /// inventory is kept at all (`enabled`) is decided at start and stays.
    Inventory(InventoryOptions),
    /// Statuses persisted by an earlier run for agents a later `Reload` may add (discovery's
    /// agents are not known at start): kept (and saved) though not watched, they count as
    /// known when the agent is added, as for agents listed at start. A Uuid the engine
    /// already knows keeps what it knows.
    Seed {
        /// Uuid → status from the state file.
        known: crate::tracker::KnownMap,
    },
    /// Forgets what is known of these Uuids unless they are watched. (Discovery sends
    /// [`Control::Retain`], which names what to keep instead.)
    Forget {
        /// The Uuids.
        uuids: Vec<crate::agent_uuid::AgentUuid>,
    },
    /// Forgets what is known (status, stored inventory) of every agent not watched whose Uuid
    /// is not in `keep`: discovery keeps what it remembers (agents that left less than
    /// `forget_after` ago), and nothing else of an agent not watched outlives a pass.
    Retain {
        /// The Uuids whose state is kept.
        keep: std::collections::HashSet<crate::agent_uuid::AgentUuid>,
    },
    /// A new expected-ports policy (`None`: none configured any more): every watched
    /// agent's stored inventory is evaluated again, with no API call, and only the
    /// differences are emitted.
    Policy(Option<std::sync::Arc<crate::policy::Policy>>),
}

/// What a [`Control::Reload`] does with what is known of the agents it removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removed {
    /// Forgotten at once (the operator took them out of the watchlist).
    Forget,
    /// Kept, not watched, in the state and inventory files until a [`Control::Retain`] or
    /// [`Control::Forget`] drops it (discovery: a machine that left may come back, and must
    /// then repeat no event).
    Keep,
}

/// Whatever answers `DescribeOpenPortTaskStatus` for one Uuid: the API client, or a fake in
/// tests so the dispatcher can run under paused time.
pub trait Poller: Send + Sync + 'static {
    /// One poll.
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send;
    /// Server minus local clock as learned so far, in milliseconds.
    fn clock_offset_ms(&self) -> i64 {
        0
    }
    /// `CreateOpenPortTask`; the answer's RequestId. (Pollers of status-only tests need not
    /// implement it.)
    fn create_task(&self, uuid: &str) -> impl Future<Output = Result<String, ApiError>> + Send {
        let _ = uuid;
        async {
            Err(ApiError::Transport(
                "this poller cannot create tasks".into(),
            ))
        }
    }
    /// One page of `DescribeOpenPorts`.
    fn describe_ports(
        &self,
        uuid: &str,
        limit: u32,
        offset: u32,
    ) -> impl Future<Output = Result<crate::inventory::Page, ApiError>> + Send {
        let _ = (uuid, limit, offset);
        async { Err(ApiError::Transport("this poller cannot list ports".into())) }
    }
    /// Which API it talks to, and so which lanes the engine has ([`Backend`]).
    fn backend(&self) -> Backend {
        Backend::Yunjing
    }
    /// Whether a request may be sent now (`[ha]`: the fence is open); while not, the
    /// dispatcher takes no job.
    fn may_send(&self) -> bool {
        true
    }
    /// One page of `cwp` `DescribeMachines`.
    fn describe_machines(
        &self,
        query: &crate::api::cwp::MachinesQuery,
    ) -> impl Future<Output = Result<crate::api::cwp::MachinesPage, ApiError>> + Send {
        let _ = query;
        async {
            Err(ApiError::Transport(
                "this poller cannot list machines".into(),
            ))
        }
    }
    /// One page of `cwp` `DescribeAssetPortInfoList`.
    fn describe_asset_ports(
        &self,
        query: &crate::api::cwp::PortsQuery,
    ) -> impl Future<Output = Result<crate::api::cwp::PortsPage, ApiError>> + Send {
        let _ = query;
        async {
            Err(ApiError::Transport(
                "this poller cannot list asset ports".into(),
            ))
        }
    }
}

impl Poller for Client {
    fn backend(&self) -> Backend {
        if self.service() == crate::api::cwp::SERVICE {
            Backend::Cwp
        } else {
            Backend::Yunjing
        }
    }
    fn describe_machines(
        &self,
        query: &crate::api::cwp::MachinesQuery,
    ) -> impl Future<Output = Result<crate::api::cwp::MachinesPage, ApiError>> + Send {
        let client = crate::api::cwp::CwpClient::from_client(self.clone());
        let query = query.clone();
        async move {
            match client {
                Some(client) => client.describe_machines(&query).await,
                None => Err(ApiError::Transport("not a cwp client".into())),
            }
        }
    }
    fn describe_asset_ports(
        &self,
        query: &crate::api::cwp::PortsQuery,
    ) -> impl Future<Output = Result<crate::api::cwp::PortsPage, ApiError>> + Send {
        let client = crate::api::cwp::CwpClient::from_client(self.clone());
        let query = query.clone();
        async move {
            match client {
                Some(client) => client.describe_asset_port_info_list(&query).await,
                None => Err(ApiError::Transport("not a cwp client".into())),
            }
        }
    }
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        // Borrows: the dispatcher's request future owns the poller and the Uuid (two `Arc`s),
        // so no per-poll copy of the client (URL, host, region) or of the Uuid is needed.
        self.describe_open_port_task_status(uuid)
    }
    fn clock_offset_ms(&self) -> i64 {
        Client::clock_offset_ms(self)
    }
    fn may_send(&self) -> bool {
        Client::may_send(self)
    }
    fn create_task(&self, uuid: &str) -> impl Future<Output = Result<String, ApiError>> + Send {
        let client = self.clone();
        let uuid = uuid.to_string();
        async move { client.create_open_port_task(&uuid).await }
    }
    fn describe_ports(
        &self,
        uuid: &str,
        limit: u32,
        offset: u32,
    ) -> impl Future<Output = Result<crate::inventory::Page, ApiError>> + Send {
        let client = self.clone();
        let uuid = uuid.to_string();
        async move { client.describe_open_ports(&uuid, limit, offset).await }
    }
}

/// How the engine polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Requests per second at most (1..=20).
    pub requests_per_second: u32,
    /// Requests in flight at most, per lane: each lane's own budget (until
    /// [`Engine::with_inventory`] sets the per-action ones), never one shared by all.
    pub max_in_flight: usize,
    /// Poll intervals per cadence.
    pub intervals: Intervals,
    /// Poll every agent once, then stop (`cwp-portwatch once`).
    pub once: bool,
}

/// The last answer for one agent, for `once` and the demo's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentReport {
    /// Uuid.
    pub uuid: String,
    /// Name, empty when none.
    pub name: String,
    /// Last known status.
    pub status: Status,
    /// Status changes seen in this run.
    pub transitions: u32,
    /// The error of the last poll, when it failed.
    pub last_error: Option<String>,
    /// RequestId of the last answer.
    pub request_id: Option<String>,
}

/// What a run did.
#[derive(Debug, Clone, Default)]
pub struct EngineReport {
    /// Per agent, in watchlist order (`once` mode; empty otherwise, see
    /// [`Engine::agent_reports`]).
    pub agents: Vec<AgentReport>,
    /// Requests sent.
    pub sent: u64,
    /// Requests whose answer never came back before the stop deadline.
    pub abandoned: usize,
}
