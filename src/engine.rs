//! The polling engine: one dispatcher that owns the rate limiter and the due queue, sends
//! polls, and turns answers into events.
//!
//! A poll's life: [`crate::scheduler::DueQueue`] says who is due → the [`Pacer`] grants a send
//! → a task calls the [`Poller`] (the signed [`crate::api::Client`] in production) → its answer
//! comes back over a channel → [`PollOutcome`] maps it to a status or a failure →
//! [`TransitionTracker`] decides whether it is a change → an [`Event`] goes to the sink → the
//! agent is rescheduled from its new status (or backed off after a failure).
//!
//! Only the dispatcher loop touches the queue, the tracker and the pacer: no locks, and the
//! order of sends is decided in one place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::api::{ApiError, Client, ErrorClass, TaskStatus};
use crate::events::{Event, EventSink};
use crate::pacing::Pacer;
use crate::rate_control::{COOL_DOWN, RateControl};
use crate::scheduler::{AgentId, Cadence, DueQueue, Intervals, backoff, phase, phase_window};
use crate::state::StateFile;
use crate::status::{PollOutcome, UNKNOWN};
use crate::tracker::{KnownMap, TransitionTracker};
use crate::watchlist::Agent;

/// While statuses change, the state file is rewritten at most this often.
pub const STATE_SAVE_EVERY: Duration = Duration::from_secs(1);
/// At most one `poll_failed` per agent in this time while it keeps failing.
pub const POLL_FAILED_EVERY: Duration = Duration::from_secs(60);
/// At most one `credentials_failed` event in this time, and while the API refuses our
/// credentials, at most one request (a probe) in this time: bad keys must not hammer the API.
pub const CREDENTIALS_EVENT_EVERY: Duration = Duration::from_secs(30);
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
        /// Where the answer goes.
        reply: tokio::sync::oneshot::Sender<(usize, usize, usize)>,
    },
}

/// What the engine is doing, shared with the daemon for `sd_notify` (STATUS, WATCHDOG).
/// Updated at least once per second while the dispatcher loop runs, so a stale `beats`
/// counter means the loop is wedged.
#[derive(Debug, Default)]
pub struct EngineStatus {
    /// Incremented on every loop turn that ends with a refresh (≥ once per second).
    pub beats: AtomicU64,
    /// Agents watched.
    pub agents: AtomicU64,
    /// Agents in COLLECTING.
    pub collecting: AtomicU64,
    /// Agents in AGENT_OFFLINE.
    pub offline: AtomicU64,
    /// The send rate in force.
    pub rate: AtomicU64,
    /// Requests sent in total.
    pub sent: AtomicU64,
    /// The API refuses our credentials (until an answer succeeds).
    pub credentials_failing: AtomicBool,
}

impl EngineStatus {
    /// One line for `systemctl status`.
    pub fn line(&self) -> String {
        let mut line = format!(
            "watching {} agents: {} collecting, {} offline; {} requests/s",
            self.agents.load(Ordering::Relaxed),
            self.collecting.load(Ordering::Relaxed),
            self.offline.load(Ordering::Relaxed),
            self.rate.load(Ordering::Relaxed),
        );
        if self.credentials_failing.load(Ordering::Relaxed) {
            line.push_str("; CREDENTIALS REFUSED by the API");
        }
        line
    }
}

/// Whatever answers `DescribeOpenPortTaskStatus` for one Uuid.
pub trait Poller: Send + Sync + 'static {
    /// One poll.
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send;
    /// Server minus local clock as learned so far, in milliseconds.
    fn clock_offset_ms(&self) -> i64 {
        0
    }
}

impl Poller for Client {
    fn poll(&self, uuid: &str) -> impl Future<Output = Result<TaskStatus, ApiError>> + Send {
        let client = self.clone();
        let uuid = uuid.to_string();
        async move { client.describe_open_port_task_status(&uuid).await }
    }
    fn clock_offset_ms(&self) -> i64 {
        Client::clock_offset_ms(self)
    }
}

/// How the engine polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Requests per second at most (1..=20).
    pub requests_per_second: u32,
    /// Requests in flight at most.
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
    pub status: String,
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
    /// Per agent, in watchlist order.
    pub agents: Vec<AgentReport>,
    /// Requests sent.
    pub sent: u64,
    /// Requests whose answer never came back before the stop deadline.
    pub abandoned: usize,
}

#[derive(Debug)]
struct AgentSlot {
    uuid: Arc<str>,
    name: Arc<str>,
    failures: u32,
    last_failed_event: Option<Instant>,
    transitions: u32,
    last_error: Option<String>,
    request_id: Option<String>,
    polled_once: bool,
}

struct Done {
    id: AgentId,
    result: Result<TaskStatus, ApiError>,
}

/// The dispatcher and everything only it touches.
pub struct Engine<P: Poller> {
    poller: Arc<P>,
    sink: Arc<dyn EventSink>,
    config: EngineConfig,
    agents: Vec<Option<AgentSlot>>,
    by_uuid: HashMap<Arc<str>, AgentId>,
    queue: DueQueue,
    tracker: TransitionTracker,
    pacer: Pacer,
    rate: RateControl,
    last_credentials_event: Option<Instant>,
    /// When the last request was sent (the credentials gate spaces probes from it).
    last_send: Option<Instant>,
    /// Where the credentials came from, for `credentials_failed`.
    credential_source: String,
    /// Wakes the credentials refresher (temporary credentials) on `AuthFailure.TokenFailure`.
    refresh_credentials: Option<Arc<tokio::sync::Notify>>,
    skew_reported_s: i64,
    sent: u64,
    pending_once: usize,
    /// How long a stop waits for answers in flight.
    drain_timeout: Duration,
    state: Option<StateFile>,
    state_dirty: bool,
    last_save: Option<Instant>,
    saving: Option<tokio::task::JoinHandle<()>>,
    status: Arc<EngineStatus>,
    last_refresh: Option<Instant>,
    control: Option<mpsc::UnboundedReceiver<Control>>,
    /// Agents removed from the watchlist while their request was in flight: the slot lives
    /// until the answer comes (and is dropped), or the agent is added back.
    orphans: HashMap<Arc<str>, AgentId>,
    /// Slots freed by reloads (never one whose request is still in flight).
    free_ids: Vec<AgentId>,
    /// `once`: the API refused the credentials; nothing more will work.
    abort_once: Option<String>,
}

impl<P: Poller> Engine<P> {
    /// An engine for `agents`; `known` holds statuses persisted by an earlier run.
    pub fn new(
        poller: P,
        sink: Arc<dyn EventSink>,
        config: EngineConfig,
        agents: &[Agent],
        known: KnownMap,
    ) -> Self {
        let watched: std::collections::HashSet<&str> =
            agents.iter().map(|a| a.uuid.as_str()).collect();
        // Agents no longer watched are forgotten, as on a reload.
        let tracker = TransitionTracker::from_known(known, |uuid| watched.contains(uuid));
        drop(watched);
        let mut engine = Engine {
            poller: Arc::new(poller),
            sink,
            config,
            agents: Vec::with_capacity(agents.len()),
            by_uuid: HashMap::with_capacity(agents.len()),
            // A collecting agent goes before any other that became due less than one
            // collecting interval earlier: first in practice, yet nobody starves.
            queue: DueQueue::new(config.intervals.collecting),
            tracker,
            pacer: Pacer::new(config.requests_per_second),
            rate: RateControl::new(config.requests_per_second),
            last_credentials_event: None,
            last_send: None,
            credential_source: String::new(),
            refresh_credentials: None,
            skew_reported_s: 0,
            sent: 0,
            pending_once: 0,
            drain_timeout: Duration::from_secs(5),
            state: None,
            state_dirty: false,
            last_save: None,
            saving: None,
            status: Arc::new(EngineStatus::default()),
            last_refresh: None,
            control: None,
            orphans: HashMap::new(),
            free_ids: Vec::new(),
            abort_once: None,
        };
        engine.add_agents(agents);
        engine
    }

    /// Persists statuses to `state` (at most once per [`STATE_SAVE_EVERY`] while they
    /// change, and when the run ends).
    pub fn with_state(mut self, state: StateFile) -> Self {
        self.state = Some(state);
        self
    }

    /// While statuses change: at most once per [`STATE_SAVE_EVERY`], encoded here, written
    /// (with its fsyncs) on a blocking thread so the dispatcher's pacing never waits for a
    /// disk. One write at a time; a change during a write is saved by the next one.
    fn save_state(&mut self) {
        let Some(state) = &self.state else { return };
        let now = Instant::now();
        let busy = self.saving.as_ref().is_some_and(|h| !h.is_finished());
        if !self.state_dirty
            || busy
            || self
                .last_save
                .is_some_and(|t| now.duration_since(t) < STATE_SAVE_EVERY)
        {
            return;
        }
        self.last_save = Some(now);
        self.state_dirty = false;
        let bytes = state.encode(self.tracker.known());
        let state = state.clone();
        self.saving = Some(tokio::task::spawn_blocking(move || {
            if let Err(e) = state.write(&bytes) {
                tracing::error!(error_code = e.code(), "cannot write the state file: {e}");
            }
        }));
    }

    /// At the end of a run: always written (`seen_at` moves even when no status changed),
    /// after any write still going.
    async fn save_state_final(&mut self) {
        if let Some(h) = self.saving.take() {
            let _ = h.await;
        }
        let Some(state) = self.state.clone() else {
            return;
        };
        let bytes = state.encode(self.tracker.known());
        let written = tokio::task::spawn_blocking(move || state.write(&bytes)).await;
        if let Ok(Err(e)) = written {
            tracing::error!(error_code = e.code(), "cannot write the state file: {e}");
        }
    }

    /// Names the credential source in `credentials_failed` events.
    pub fn with_credential_source(mut self, source: impl Into<String>) -> Self {
        self.credential_source = source.into();
        self
    }

    /// Wakes `notify` when the API says the temporary credentials' token is bad.
    pub fn with_credentials_refresh(mut self, notify: Arc<tokio::sync::Notify>) -> Self {
        self.refresh_credentials = Some(notify);
        self
    }

    /// The shared status (for `sd_notify`).
    pub fn status(&self) -> Arc<EngineStatus> {
        self.status.clone()
    }

    /// Accepts [`Control`] messages while running.
    pub fn with_control(mut self, control: mpsc::UnboundedReceiver<Control>) -> Self {
        self.control = Some(control);
        self
    }

    /// Refreshes the shared status, at most once per second (counting agents per status is
    /// O(agents)).
    fn refresh_status(&mut self, now: Instant) {
        if self
            .last_refresh
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return;
        }
        self.last_refresh = Some(now);
        let (collecting, offline) = self.status_counts();
        let s = &self.status;
        s.agents.store(self.by_uuid.len() as u64, Ordering::Relaxed);
        s.collecting.store(collecting as u64, Ordering::Relaxed);
        s.offline.store(offline as u64, Ordering::Relaxed);
        s.rate
            .store(u64::from(self.pacer.rate()), Ordering::Relaxed);
        s.sent.store(self.sent, Ordering::Relaxed);
        s.beats.fetch_add(1, Ordering::Relaxed);
    }

    fn apply(&mut self, control: Control) {
        match control {
            Control::Reload {
                agents,
                config,
                reply,
            } => {
                self.config = EngineConfig {
                    once: self.config.once,
                    ..config
                };
                self.rate.set_target(config.requests_per_second);
                self.queue.set_boost(config.intervals.collecting);
                self.pacer.set_rate(self.rate.rate());
                let (added, removed) = self.replace_watchlist(&agents);
                self.state_dirty |= removed > 0;
                self.last_refresh = None;
                let _ = reply.send((self.agent_count(), added, removed));
            }
        }
    }

    /// Sets how long a stop waits for answers in flight (default 5 s).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    fn add_agents(&mut self, agents: &[Agent]) -> usize {
        let now = Instant::now();
        let window = if self.config.once {
            Duration::ZERO
        } else {
            phase_window(
                agents.len(),
                self.config.requests_per_second,
                self.config.intervals.settled,
            )
        };
        let mut added = 0;
        for agent in agents {
            if self.by_uuid.contains_key(agent.uuid.as_str()) {
                continue;
            }
            if let Some((uuid, id)) = self.orphans.remove_entry(agent.uuid.as_str()) {
                // Back before its last answer came: the same slot, still in flight; the answer
                // reschedules it.
                if let Some(slot) = self.agents[id].as_mut() {
                    slot.name = Arc::from(agent.name.as_deref().unwrap_or(""));
                }
                self.by_uuid.insert(uuid, id);
                self.queue.schedule(id, now, Cadence::Settled);
                added += 1;
                continue;
            }
            let uuid: Arc<str> = self
                .tracker
                .shared_uuid(&agent.uuid)
                .unwrap_or_else(|| Arc::from(agent.uuid.as_str()));
            // Reuse a freed slot, so tables do not grow with every reload.
            let id = self.free_ids.pop().unwrap_or(self.agents.len());
            if id == self.agents.len() {
                self.agents.push(None);
            }
            self.agents[id] = Some(AgentSlot {
                uuid: uuid.clone(),
                name: Arc::from(agent.name.as_deref().unwrap_or("")),
                failures: 0,
                last_failed_event: None,
                transitions: 0,
                last_error: None,
                request_id: None,
                polled_once: false,
            });
            self.by_uuid.insert(uuid, id);
            let cadence = Cadence::of(self.tracker.status(&agent.uuid));
            self.queue
                .schedule(id, now + phase(&agent.uuid, window), cadence);
            added += 1;
        }
        self.pending_once += added;
        added
    }

    /// Applies a new watchlist: kept agents keep status and schedule, new ones are phased
    /// in, removed ones stop and are forgotten. Returns (added, removed).
    pub fn replace_watchlist(&mut self, agents: &[Agent]) -> (usize, usize) {
        let wanted: std::collections::HashSet<&str> =
            agents.iter().map(|a| a.uuid.as_str()).collect();
        let gone: Vec<(Arc<str>, AgentId)> = self
            .by_uuid
            .iter()
            .filter(|(u, _)| !wanted.contains(&***u))
            .map(|(u, id)| (u.clone(), *id))
            .collect();
        for (uuid, id) in &gone {
            self.by_uuid.remove(uuid);
            if self.queue.is_in_flight(*id) {
                self.orphans.insert(uuid.clone(), *id);
            } else {
                self.agents[*id] = None;
                self.free_ids.push(*id);
            }
            self.queue.remove(*id);
            self.tracker.forget(uuid);
        }
        let new: Vec<Agent> = agents
            .iter()
            .filter(|a| !self.by_uuid.contains_key(a.uuid.as_str()))
            .cloned()
            .collect();
        for a in agents {
            if let Some(&id) = self.by_uuid.get(a.uuid.as_str())
                && let Some(slot) = self.agents[id].as_mut()
            {
                slot.name = Arc::from(a.name.as_deref().unwrap_or(""));
            }
        }
        let added = self.add_agents(&new);
        (added, gone.len())
    }

    /// Agents watched now.
    pub fn agent_count(&self) -> usize {
        self.by_uuid.len()
    }

    /// Last known statuses, for the state file.
    pub fn known(&self) -> &KnownMap {
        self.tracker.known()
    }

    /// The rate in force (lower than configured after throttling).
    pub fn current_rate(&self) -> u32 {
        self.pacer.rate()
    }

    /// Counts of agents per status, for `sd_notify` STATUS.
    pub fn status_counts(&self) -> (usize, usize) {
        // The tracker holds watched agents only (seeding filters, removal forgets), so one
        // pass over its values counts them without a lookup per agent.
        let mut collecting = 0;
        let mut offline = 0;
        for known in self.tracker.known().values() {
            match &*known.status {
                "COLLECTING" => collecting += 1,
                "AGENT_OFFLINE" => offline += 1,
                _ => {}
            }
        }
        (collecting, offline)
    }

    fn emit(&self, event: Event) {
        self.sink.emit(&event);
    }

    /// Runs until `shutdown` (or, in `once` mode, until every agent answered once).
    pub async fn run(mut self, shutdown: CancellationToken) -> (Self, EngineReport) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
        let mut control = self.control.take();
        loop {
            while let Ok(done) = rx.try_recv() {
                self.on_done(done);
            }
            self.save_state();
            self.refresh_status(Instant::now());
            if self.config.once && (self.pending_once == 0 || self.abort_once.is_some()) {
                break;
            }
            let now = Instant::now();
            let mut wake_at = None;
            let gate = self.credentials_gate();
            if gate.is_some_and(|g| g > now) {
                wake_at = gate;
            } else if self.queue.in_flight() < self.config.max_in_flight {
                match self.queue.next_due() {
                    Some(due) if due <= now => match self.pacer.try_acquire() {
                        Ok(()) => {
                            if let Some(id) = self.queue.pop_due(now) {
                                self.send(id, tx.clone());
                            }
                            continue;
                        }
                        Err(at) => wake_at = Some(at),
                    },
                    due => wake_at = due,
                }
            }
            // Wake at least once a second: the status and the watchdog's heartbeat stay fresh
            // even when nothing is due for a long time.
            let wake_at = wake_at.map_or(now + Duration::from_secs(1), |t| {
                t.min(now + Duration::from_secs(1))
            });
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(done) = rx.recv() => self.on_done(done),
                Some(c) = async { match control.as_mut() { Some(c) => c.recv().await, None => None } } => self.apply(c),
                _ = sleep_until(wake_at) => {}
            }
        }
        // Stop sending; let answers in flight land within the drain bound.
        let deadline = Instant::now() + self.drain_timeout;
        while self.queue.in_flight() > 0 {
            tokio::select! {
                Some(done) = rx.recv() => self.on_done(done),
                _ = sleep_until(deadline) => break,
            }
        }
        self.save_state_final().await;
        let report = self.report();
        (self, report)
    }

    /// While the API refuses our credentials: not before this (one probe per period).
    fn credentials_gate(&self) -> Option<Instant> {
        if !self.status.credentials_failing.load(Ordering::Relaxed) {
            return None;
        }
        self.last_send.map(|t| t + CREDENTIALS_EVENT_EVERY)
    }

    fn send(&mut self, id: AgentId, tx: mpsc::UnboundedSender<Done>) {
        let Some(slot) = self.agents[id].as_ref() else {
            return;
        };
        self.sent += 1;
        self.last_send = Some(Instant::now());
        let uuid = slot.uuid.clone();
        let poller = self.poller.clone();
        tokio::spawn(async move {
            let result = poller.poll(&uuid).await;
            // The dispatcher is gone only when stopping: the answer is no longer wanted.
            let _ = tx.send(Done { id, result });
        });
    }

    fn on_done(&mut self, done: Done) {
        let now = Instant::now();
        let Some(slot) = self.agents.get_mut(done.id).and_then(Option::as_mut) else {
            return;
        };
        if self.orphans.get(&slot.uuid) == Some(&done.id) {
            // Removed from the watchlist while this answer was on its way: forgotten.
            self.orphans.remove(&slot.uuid);
            self.agents[done.id] = None;
            self.free_ids.push(done.id);
            self.queue.finish(done.id, now, Cadence::Settled);
            return;
        }
        if !slot.polled_once {
            slot.polled_once = true;
            self.pending_once = self.pending_once.saturating_sub(1);
        }
        let uuid = slot.uuid.clone();
        let name = slot.name.clone();
        match PollOutcome::from_result(done.result) {
            PollOutcome::Status {
                status,
                request_id,
                error_code,
            } => {
                self.status
                    .credentials_failing
                    .store(false, Ordering::Relaxed);
                if slot.failures > 0 {
                    let failed_polls = std::mem::take(&mut slot.failures);
                    slot.last_failed_event = None;
                    self.sink.emit(&Event::PollRecovered {
                        uuid: uuid.to_string(),
                        agent_name: name.to_string(),
                        failed_polls,
                    });
                }
                slot.last_error = None;
                if self.config.once {
                    // The daemon finds it in the tracker; only `once` reports failures' ids.
                    slot.request_id = Some(request_id.clone());
                }
                let seen_at = unix_now();
                if let Some(t) = self.tracker.observe(&uuid, &status, &request_id, seen_at) {
                    slot.transitions += 1;
                    self.state_dirty = true;
                    self.sink.emit(&Event::StatusChanged {
                        uuid: uuid.to_string(),
                        agent_name: name.to_string(),
                        from_status: t.from,
                        to_status: t.to,
                        request_id,
                        error_code,
                    });
                }
                let cadence = Cadence::of(&status);
                let next = now + self.config.intervals.of(cadence);
                self.finish(done.id, next, cadence);
                self.recover_rate(now);
            }
            PollOutcome::Failed(error) => {
                slot.last_error = Some(format!("{}: {}", error.code(), error.message()));
                if self.config.once {
                    slot.request_id = error.request_id().map(str::to_string);
                }
                let cadence = Cadence::of(self.tracker.status(&uuid));
                let interval = self.config.intervals.of(cadence);
                let next = match error.class() {
                    ErrorClass::Throttled => {
                        self.throttled(now, error.code());
                        // Not the agent's fault: it goes again as soon as the rate allows.
                        now
                    }
                    ErrorClass::Clock => {
                        self.count_failure(done.id, &error, now);
                        // The client re-learned the server's time from this very answer, so
                        // the first retry is immediate; repeats back off.
                        self.backoff_next(done.id, now, interval)
                    }
                    ErrorClass::CredentialsRefresh if self.refresh_credentials.is_some() => {
                        // Temporary credentials: fetch fresh ones, then this agent goes again.
                        if let Some(n) = &self.refresh_credentials {
                            n.notify_one();
                        }
                        self.count_failure(done.id, &error, now);
                        self.backoff_next(done.id, now, interval)
                    }
                    ErrorClass::Fatal | ErrorClass::CredentialsRefresh => {
                        if self.config.once {
                            // Every other poll would be refused the same way.
                            self.abort_once =
                                Some(format!("{}: {}", error.code(), error.message()));
                        }
                        self.credentials_failed(now, &error);
                        self.count_failure(done.id, &error, now);
                        // The gate spaces probes; the agent itself is due right away so that
                        // the first probe after the fix finds work.
                        now
                    }
                    ErrorClass::Request | ErrorClass::AgentStatus(_) => {
                        self.count_failure(done.id, &error, now);
                        now + interval
                    }
                    ErrorClass::Transient => {
                        self.count_failure(done.id, &error, now);
                        self.backoff_next(done.id, now, interval)
                    }
                };
                self.finish(done.id, next, cadence);
            }
        }
        self.check_skew();
    }

    fn finish(&mut self, id: AgentId, next: Instant, cadence: Cadence) {
        if self.config.once {
            // Nothing is polled twice in `once` mode.
            self.queue.remove(id);
        } else {
            self.queue.finish(id, next, cadence);
        }
    }

    fn backoff_next(&self, id: AgentId, now: Instant, cap: Duration) -> Instant {
        let failures = self.agents[id].as_ref().map_or(1, |s| s.failures);
        if failures <= 1 {
            return now;
        }
        now + backoff(failures - 1, cap, rand::random::<f64>())
    }

    fn count_failure(&mut self, id: AgentId, error: &ApiError, now: Instant) {
        let Some(slot) = self.agents[id].as_mut() else {
            return;
        };
        slot.failures += 1;
        let due = slot
            .last_failed_event
            .is_none_or(|t| now.duration_since(t) >= POLL_FAILED_EVERY);
        if due {
            slot.last_failed_event = Some(now);
            let event = Event::PollFailed {
                uuid: slot.uuid.to_string(),
                agent_name: slot.name.to_string(),
                error_code: error.code().to_string(),
                error_message: error.message(),
                request_id: error.request_id().map(str::to_string),
                consecutive_failures: slot.failures,
            };
            self.emit(event);
        }
    }

    fn throttled(&mut self, now: Instant, code: &str) {
        if let Some(rate) = self.rate.on_throttled(now) {
            self.pacer.set_rate(rate);
            self.pacer.pause_until(now + COOL_DOWN);
            self.emit(Event::RateLimited {
                error_code: code.to_string(),
                requests_per_second: rate,
            });
        }
    }

    fn recover_rate(&mut self, now: Instant) {
        if let Some(rate) = self.rate.on_success(now) {
            self.pacer.set_rate(rate);
        }
    }

    fn credentials_failed(&mut self, now: Instant, error: &ApiError) {
        self.status
            .credentials_failing
            .store(true, Ordering::Relaxed);
        let due = self
            .last_credentials_event
            .is_none_or(|t| now.duration_since(t) >= CREDENTIALS_EVENT_EVERY);
        if due {
            self.last_credentials_event = Some(now);
            self.emit(Event::CredentialsFailed {
                error_code: error.code().to_string(),
                error_message: error.message(),
                source: self.credential_source.clone(),
            });
        }
    }

    fn check_skew(&mut self) {
        let skew_s = self.poller.clock_offset_ms() / 1000;
        if skew_s.unsigned_abs() > CLOCK_SKEW_WARN.as_secs()
            && (skew_s - self.skew_reported_s).abs() > 5
        {
            self.skew_reported_s = skew_s;
            self.emit(Event::ClockSkew {
                skew_seconds: skew_s,
            });
        }
    }

    fn report(&self) -> EngineReport {
        let agents = self
            .agents
            .iter()
            .flatten()
            .filter(|s| !self.orphans.contains_key(&s.uuid))
            .map(|s| AgentReport {
                uuid: s.uuid.to_string(),
                name: s.name.to_string(),
                status: self.tracker.status(&s.uuid).to_string(),
                transitions: s.transitions,
                last_error: s.last_error.clone().or_else(|| {
                    // `once` stopped early: this agent was never asked.
                    self.abort_once.clone().filter(|_| !s.polled_once)
                }),
                request_id: s.request_id.clone().or_else(|| {
                    self.tracker
                        .known()
                        .get(&*s.uuid)
                        .map(|k| k.request_id.clone())
                }),
            })
            .collect();
        EngineReport {
            agents,
            sent: self.sent,
            abandoned: self.queue.in_flight(),
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `UNKNOWN`, re-exported for callers printing reports.
pub const UNKNOWN_STATUS: &str = UNKNOWN;
