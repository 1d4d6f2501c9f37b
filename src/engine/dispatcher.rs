//! The dispatcher: [`Engine`] and its one loop. It takes the earliest due job whose lane's
//! limiter has a slot and whose lane's own in-flight budget is not spent, sends it, and feeds
//! the answer to [`decide`]; between sends it waits in one `select!` for the next deadline, an
//! answer, a control message or the stop.
//!
//! It owns everything it touches (agent table, lanes, tasks in flight), so it needs
//! no locks, and the order of sends is decided in this one place.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::account::Account;
use super::agents::{AgentTable, Progress, StoredProgress};
use super::decide::{Context, Credentials, Decision, Who, decide};
use super::heartbeat::{Figures, Heartbeat};
use super::in_flight::{InFlight, Reply};
use super::lane::{Action, Job};
use super::saver::StateSaver;
use super::{AgentReport, Control, EngineConfig, EngineReport, EngineStatus, Poller};
use crate::agent_uuid::AgentUuid;
use crate::api::{ApiError, TaskStatus};
use crate::events::{Event, EventSink};
use crate::policy::Policy;
use crate::scheduler::{AgentId, Cadence, later};
use crate::state::StateFile;
use crate::status::PollOutcome;
use crate::tracker::{Known, KnownMap, RequestId};
use crate::watchlist::Agent;

/// The loop wakes at least this often, so the heartbeat stays fresh when nothing is due.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// `[ha]`: while the fence is closed, how often it is looked at again.
const FENCE_RECHECK: Duration = Duration::from_millis(100);

/// Permission denied ([`crate::api::ErrorClass::Denied`]) this many answers in a row, for at
/// least two agents and with no answer getting through in between: the policy denies
/// everything, which is refused credentials in all but name; the credentials gate closes. One
/// denied agent among working ones never gets there: the others' answers reset the count.
pub const DENIED_IN_A_ROW: u32 = 5;

/// Denied answers in a row since the last one that got through.
#[derive(Debug, Default)]
pub(super) struct DeniedStreak {
    /// How many.
    count: u32,
    /// The agent of the first of them.
    first: Option<AgentId>,
    /// More than one agent among them.
    several: bool,
}

impl DeniedStreak {
    /// One more denial for `id`; true when the streak now means "everything is denied".
    fn record(&mut self, id: AgentId) -> bool {
        self.count = self.count.saturating_add(1);
        match self.first {
            None => self.first = Some(id),
            Some(first) => self.several |= first != id,
        }
        self.count >= DENIED_IN_A_ROW && self.several
    }
}

/// The dispatcher and everything only it touches.
pub struct Engine<P: Poller> {
    pub(super) account: Account<P>,
    pub(super) sink: Arc<dyn EventSink>,
    pub(super) config: EngineConfig,
    /// Every agent, with its last known status: exactly-once transitions, and the state
    /// file's content.
    pub(super) agents: AgentTable,
    pub(super) saver: StateSaver,
    pub(super) heartbeat: Heartbeat,
    pub(super) control: Option<mpsc::UnboundedReceiver<Control>>,
    /// How long a stop waits for answers in flight.
    pub(super) drain_timeout: Duration,
    /// Requests sent in this run.
    pub(super) sent: u64,
    /// `once`: agents not answered yet.
    pub(super) pending_once: usize,
    /// `once`: the API refused the credentials; nothing more will work.
    pub(super) abort_once: Option<String>,
    /// Denials in a row, to tell a policy that denies everything from one denied agent.
    pub(super) denied: DeniedStreak,
    /// `once`: when the run gives up on agents still without a status.
    pub(super) once_until: Option<Instant>,
    /// `[metrics]`, when configured (see `observe`).
    pub(super) metrics: Option<Arc<crate::metrics::Metrics>>,
    /// The open-port inventory, when kept ([`Engine::with_inventory`]).
    pub(super) inventory: Option<Box<super::inventory_state::InventoryState>>,
    /// The expected-ports policy, when the engine was given one ([`Engine::with_policy`]).
    pub(super) policy: Option<PolicyState>,
    /// The `cwp` backend's listings and machines (`None` for yunjing; see `engine::cwp`).
    pub(super) cwp: Option<Box<super::cwp_state::CwpState>>,
}

impl<P: Poller> Engine<P> {
    /// An engine for `agents`; `known` holds statuses persisted by an earlier run (those of
    /// agents not in `agents` are forgotten, as on a reload).
    pub fn new(
        poller: P,
        sink: Arc<dyn EventSink>,
        config: EngineConfig,
        agents: &[Agent],
        known: KnownMap,
    ) -> Self {
        let (engine, loaded) = Self::loading(poller, sink, config, agents.iter(), |seed| {
            for (uuid, k) in known {
                let _not_watched = seed(uuid, k);
            }
            Ok::<(), std::convert::Infallible>(())
        });
        match loaded {
            Ok(()) => engine,
        }
    }

    /// An engine for `agents` whose persisted statuses `load` feeds in one by one, straight
    /// into the agent table (a state file is streamed: 100,000 agents' statuses never sit in
    /// a map beside the table, issue 13). `agents` given by value are freed once they are in
    /// the table, before `load` runs. `load` gets a function that takes a status for a
    /// watched agent and gives back one it cannot place (an agent not watched). The agents are
    /// scheduled after `load`, each by its known status. When `load` fails, everything it fed
    /// is forgotten (a state file damaged half-way is no state at all) and its error returned
    /// beside the engine.
    pub fn loading<E, A: std::borrow::Borrow<Agent>>(
        poller: P,
        sink: Arc<dyn EventSink>,
        config: EngineConfig,
        agents: impl IntoIterator<Item = A, IntoIter: ExactSizeIterator>,
        load: impl FnOnce(&mut dyn FnMut(AgentUuid, Known) -> Option<Known>) -> Result<(), E>,
    ) -> (Self, Result<(), E>) {
        let agents = agents.into_iter();
        let account = Account::new(poller, &config);
        let cwp = (account.backend == super::Backend::Cwp).then(Box::default);
        let mut engine = Engine {
            cwp,
            account,
            sink,
            config,
            agents: AgentTable::with_capacity(agents.len()),
            saver: StateSaver::default(),
            heartbeat: Heartbeat::default(),
            control: None,
            drain_timeout: Duration::from_secs(5),
            sent: 0,
            pending_once: 0,
            abort_once: None,
            denied: DeniedStreak::default(),
            once_until: None,
            metrics: None,
            inventory: None,
            policy: None,
        };
        let (new, _) = engine.insert_agents(agents);
        let loaded = load(&mut |uuid, known| engine.agents.seed_watched(uuid, known));
        if loaded.is_err() {
            engine.agents.forget_all_known();
        }
        engine.schedule_new(&new);
        engine.agents.shrink_to_fit();
        (engine, loaded)
    }

    /// Persists statuses to `state` (at most once per [`super::STATE_SAVE_EVERY`] while they
    /// change, and when the run ends).
    pub fn with_state(mut self, state: StateFile) -> Self {
        self.saver.set_file(state);
        self
    }

    /// Calls `barrier` (on the saving thread) before each write of the state and inventory
    /// files, whichever builder comes first.
    pub fn with_save_barrier(mut self, barrier: crate::state::SaveBarrier) -> Self {
        if let Some(inventory) = &mut self.inventory {
            inventory.saver.set_barrier(Some(barrier.clone()));
        }
        self.saver.barrier = Some(barrier);
        self
    }

    /// Names the credential source in `credentials_failed` events.
    pub fn with_credential_source(mut self, source: impl Into<String>) -> Self {
        self.account.credential_source = source.into();
        self
    }

    /// Wakes `notify` when the API says the temporary credentials' token is bad.
    pub fn with_credentials_refresh(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.account.refresh_credentials = Some(notify);
        self
    }

    /// Accepts [`Control`] messages while running.
    pub fn with_control(mut self, control: mpsc::UnboundedReceiver<Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// Sets how long a stop waits for answers in flight (default 5 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Reports into `status` instead of a status of its own: the daemon hands an account's
    /// status out (`sd_notify`, `/healthz`) before its engine exists, while its start is
    /// retried, and the engine built later must beat that same one.
    pub fn with_status(mut self, status: Arc<EngineStatus>) -> Self {
        self.heartbeat.status = status;
        self.heartbeat.refresh_soon();
        self
    }

    /// The shared status (for `sd_notify`).
    pub fn status(&self) -> Arc<EngineStatus> {
        self.heartbeat.status.clone()
    }

    /// Is this agent watched?
    pub fn watches(&self, uuid: &AgentUuid) -> bool {
        self.agents.contains(uuid)
    }

    /// What the expected-ports policy knows of a watched agent (its name, tags, region, WAN
    /// flag, with `account`), lent to `f` (see `AgentTable::with_host` in `engine::agents`).
    pub fn with_host<R>(
        &self,
        uuid: &AgentUuid,
        account: &str,
        f: impl FnOnce(&crate::policy::Host<'_>) -> R,
    ) -> Option<R> {
        self.agents.with_host(self.agents.id_of(uuid)?, account, f)
    }

    /// Agents watched now.
    pub fn agent_count(&self) -> usize {
        self.agents.len()
    }

    /// Runs until `shutdown` (or, in `once` mode, until every agent answered once).
    pub async fn run(mut self, shutdown: CancellationToken) -> (Self, EngineReport) {
        let mut in_flight = InFlight::default();
        let mut control = self.control.take();
        if self.config.once {
            let budget = super::once_deadline(self.agents.len(), self.config.requests_per_second);
            self.once_until = Some(later(Instant::now(), budget));
        }
        // One stop future and one timer for the whole loop, the timer moved with `reset`:
        // a new `sleep_until` and `cancelled()` per turn register and deregister a timer
        // entry and a waiter two or three times per poll (issue 13).
        let cancelled = shutdown.cancelled();
        tokio::pin!(cancelled);
        let sleep = tokio::time::sleep_until(Instant::now());
        tokio::pin!(sleep);
        loop {
            while let Some((job, reply)) = in_flight.try_next() {
                self.on_answer(job, reply);
            }
            let now = Instant::now();
            self.saver.tick(now, &self.agents);
            self.inventory_tick(now);
            self.refresh_heartbeat(now);
            if self.config.once
                && (self.pending_once == 0
                    || self.abort_once.is_some()
                    || self.once_until.is_some_and(|until| now >= until))
            {
                break;
            }
            let wake_at = match self.next_job(now) {
                Ok(job) => {
                    self.send(job, &mut in_flight);
                    continue;
                }
                Err(wake_at) => self.once_until.map_or(wake_at, |until| wake_at.min(until)),
            };
            if sleep.deadline() != wake_at {
                sleep.as_mut().reset(wake_at);
            }
            tokio::select! {
                biased;
                _ = &mut cancelled => break,
                Some((job, reply)) = in_flight.next() => self.on_answer(job, reply),
                Some(c) = async { match control.as_mut() { Some(c) => c.recv().await, None => None } } => self.apply(c),
                _ = &mut sleep => {}
            }
        }
        // Stop sending; let answers in flight land within the drain bound, abort the rest.
        let deadline = later(Instant::now(), self.drain_timeout);
        while self.account.in_flight() > 0 {
            tokio::select! {
                Some((job, reply)) = in_flight.next() => self.on_answer(job, reply),
                _ = sleep_until(deadline) => break,
            }
        }
        let abandoned = self.account.in_flight();
        in_flight.abort_all().await;
        self.saver.finish(&self.agents).await;
        self.inventory_finish().await;
        let report = self.report(abandoned);
        (self, report)
    }

    /// The job to send now, or when to look again (at the latest one heartbeat from now).
    fn next_job(&mut self, now: Instant) -> Result<Job, Instant> {
        let mut wake_at = later(now, HEARTBEAT);
        if let Some(gate) = self.account.credentials.closed_until()
            && gate > now
        {
            return Err(wake_at.min(gate));
        }
        // `[ha]`: no proof of leadership, no send; looked at again within a heartbeat.
        if !self.account.poller.may_send() {
            return Err(later(now, FENCE_RECHECK));
        }
        // Lanes in order of their earliest due job; a lane whose limiter has no slot yet, or
        // whose own in-flight budget is spent, must not hold back another's: a full lane is
        // left out (an answer in it wakes the loop), never waited for. (A bit per lane: no
        // allocation per turn.)
        debug_assert!(self.account.lanes.len() <= 64);
        let mut tried = 0u64;
        loop {
            let best = self
                .account
                .lanes
                .iter_mut()
                .enumerate()
                .filter(|(i, lane)| tried & (1 << i) == 0 && lane.has_room())
                .filter_map(|(i, lane)| lane.queue.next_due().map(|due| (due, i)))
                .min();
            match best {
                Some((due, i)) if due <= now => {
                    tried |= 1 << i;
                    match self.take_job(i, now) {
                        Ok(job) => return Ok(job),
                        Err(at) => wake_at = at.map_or(wake_at, |at| wake_at.min(at)),
                    }
                }
                Some((due, _)) => return Err(wake_at.min(due)),
                None => return Err(wake_at),
            }
        }
    }

    fn send(&mut self, job: Job, in_flight: &mut InFlight) {
        let now = Instant::now();
        match job {
            Job::PollStatus(id) => {
                let Some(record) = self.agents.get(id) else {
                    // Only queued agents are due; should one be missing, release its slot.
                    self.account.lane(job.action()).finish(id, None, now);
                    return;
                };
                let uuid = record.uuid.text();
                let poller = self.account.poller.clone();
                let metrics = self.metrics.clone();
                in_flight.spawn(job, async move {
                    let sent = Instant::now();
                    let result = poller.poll(&uuid).await;
                    super::lane::answered(metrics.as_deref(), job.action(), &result, sent);
                    Reply::TaskStatus(result)
                });
            }
            Job::CreateTask(_) | Job::FetchPorts(_) => {
                if !self.send_inventory(job, in_flight) {
                    return;
                }
            }
            Job::ListMachines(_) | Job::FetchAssetPorts(_) => {
                if !self.send_cwp(job, in_flight) {
                    return;
                }
            }
        }
        self.sent += 1;
        self.account.credentials.last_send = Some(now);
    }

    fn on_answer(&mut self, job: Job, reply: Reply) {
        let now = Instant::now();
        if reply.fenced() {
            // The fence closed between taking the job and sending it: nothing was sent, so
            // nothing is decided; the job waits in its queue for the fence to open.
            let lane = self.account.lane(job.action());
            lane.finish(
                job.agent(),
                Some((later(now, FENCE_RECHECK), Cadence::Settled)),
                now,
            );
            return;
        }
        match reply {
            Reply::TaskStatus(result) => self.on_task_status(job.agent(), result, now),
            Reply::TaskCreated(result) => self.on_task_created(job.agent(), result),
            Reply::Ports(result) => self.on_ports(job.agent(), result),
            Reply::Machines(result) => self.on_machines(job.agent(), result),
            Reply::AssetPorts(result) => self.on_asset_ports(job.agent(), result),
        }
        self.account.check_skew(self.sink.as_ref());
    }

    fn on_task_status(&mut self, id: AgentId, result: Result<TaskStatus, ApiError>, now: Instant) {
        let action = Action::PollStatus;
        if self.drop_orphan_answer(id, action) {
            // Removed from the watchlist while this answer was on its way: forgotten.
            return;
        }
        let Some((record, name)) = self.agents.get_mut_named(id) else {
            self.account.lane(action).finish(id, None, now);
            return;
        };
        let ctx = Context {
            now,
            intervals: self.config.intervals,
            once: self.config.once,
            can_refresh_credentials: self.account.refresh_credentials.is_some(),
            last_credentials_event: self.account.credentials.last_event,
            credential_source: &self.account.credential_source,
            jitter: rand::random::<f64>(),
        };
        let uuid = record.uuid.text();
        let who = Who { uuid: &uuid, name };
        let mut decision = decide(
            who,
            Progress::from(std::mem::take(&mut record.progress)),
            record.known.as_ref().map(|k| &k.status),
            PollOutcome::from_result(result),
            &ctx,
        );
        record.progress = StoredProgress::from(std::mem::take(&mut decision.progress));
        let observed = (decision.observed.as_ref()).map(|o| (o.status.clone(), o.changed));
        self.apply_decision(id, action, decision, now);
        if let Some((status, changed)) = observed {
            self.inventory_after_status(id, &status, changed);
        }
    }

    /// Carries out a [`Decision`]: known status, state, credentials gate, events, queue, rate.
    fn apply_decision(&mut self, id: AgentId, action: Action, decision: Decision, now: Instant) {
        let Decision {
            observed,
            next,
            events,
            signals,
            ..
        } = decision;
        if signals.done_once {
            self.pending_once = self.pending_once.saturating_sub(1);
        }
        if let Some(o) = observed {
            if o.changed {
                self.saver.mark_dirty();
                self.heartbeat.statuses_changed();
            }
            if let Some(record) = self.agents.get_mut(id) {
                // What the answer said, change or not (`decide` compared).
                record.known = Some(Known {
                    status: o.status,
                    request_id: RequestId::from(o.request_id),
                    seen_at: crate::clock::unix_now(),
                });
            }
        }
        match signals.credentials {
            Some(Credentials::Accepted) => self.account.credentials.refused = false,
            Some(Credentials::Refused { reported }) => {
                self.account.credentials.refused = true;
                if reported {
                    self.account.credentials.last_event = Some(now);
                }
            }
            None => {}
        }
        if signals.succeeded {
            self.denied = DeniedStreak::default();
        }
        let mut events = events;
        if let Some((code, message)) = signals.denied
            && self.denied.record(id)
        {
            // Every agent is denied: the credentials' policy, not one agent's resource.
            let reported = self
                .account
                .credentials
                .last_event
                .is_none_or(|t| now.duration_since(t) >= super::CREDENTIALS_EVENT_EVERY);
            if reported {
                self.account.credentials.last_event = Some(now);
                events.insert(
                    0,
                    Event::CredentialsFailed {
                        error_code: code.clone(),
                        error_message: message.clone(),
                        source: self.account.credential_source.clone(),
                    },
                );
            }
            self.account.credentials.refused = true;
            self.heartbeat.set_credentials_failing(true);
            if self.config.once {
                self.abort_once = Some(format!("{code}: {message}"));
            }
        }
        if signals.credentials.is_some() {
            self.heartbeat
                .set_credentials_failing(self.account.credentials.refused);
        }
        if signals.refresh_credentials
            && let Some(n) = &self.account.refresh_credentials
        {
            n.notify_one();
        }
        if let Some(why) = signals.abort_once {
            self.abort_once = Some(why);
        }
        for event in &events {
            self.sink.emit(event);
        }
        let lane = self.account.lane(action);
        if let Some(code) = signals.throttled
            && let Some(rate) = lane.throttled(now)
        {
            self.sink.emit(&Event::RateLimited {
                error_code: code,
                requests_per_second: rate,
            });
        }
        lane.finish(id, next, now);
        if signals.succeeded {
            lane.succeeded(now);
        }
    }

    fn refresh_heartbeat(&mut self, now: Instant) {
        let figures = Figures {
            agents: self.agents.len(),
            rate: (self.account)
                .lane(self.account.backend.status_action())
                .pacer
                .rate(),
            sent: self.sent,
        };
        if self.heartbeat.refresh(now, &self.agents, figures) {
            self.refresh_metrics(now);
        }
    }

    /// The run's report. Per agent only in `once` mode, whose output it is: the daemon's stop
    /// does not need 100,000 agents' worth of strings at its last moment (issue 13); it can ask
    /// [`Engine::agent_reports`].
    fn report(&self, abandoned: usize) -> EngineReport {
        EngineReport {
            agents: if self.config.once {
                self.agent_reports()
            } else {
                Vec::new()
            },
            sent: self.sent,
            abandoned,
        }
    }

    /// Per watched agent, in table order: its status, transitions, last error, RequestId.
    pub fn agent_reports(&self) -> Vec<AgentReport> {
        self.agents
            .named_records()
            .map(|(r, name)| AgentReport {
                uuid: r.uuid.to_string(),
                name: name.to_string(),
                status: r.status().clone(),
                transitions: r.progress.transitions(),
                last_error: r.progress.last_error().map(str::to_string).or_else(|| {
                    // `once` stopped early: this agent was never asked, or has no status yet.
                    if !self.config.once || r.progress.done_once() {
                        None
                    } else if let Some(why) = self.abort_once.clone() {
                        Some(why).filter(|_| !r.progress.polled_once())
                    } else {
                        Some(format!(
                            "no status before the run ended (stopped, or the once deadline \
                             of {} passed)",
                            humantime::format_duration(super::once_deadline(
                                self.agents.len(),
                                self.config.requests_per_second
                            ))
                        ))
                    }
                }),
                request_id: r
                    .progress
                    .request_id()
                    .map(str::to_string)
                    .or_else(|| r.known.as_ref().map(|k| k.request_id.to_string())),
            })
            .collect()
    }
}

/// The policy an engine evaluates (`engine::findings` applies it), and the account its hosts belong to.
#[derive(Debug)]
pub(super) struct PolicyState {
    /// `None`: no policy configured (findings stored by an earlier run clear as `allowed`).
    pub(super) policy: Option<Arc<Policy>>,
    /// The account's name, a host fact (`hosts = { accounts = [...] }`).
    pub(super) account: Box<str>,
}
