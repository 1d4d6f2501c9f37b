//! The inventory's side of the dispatcher: per agent (by [`AgentId`], beside the hot agent
//! table rather than in it) the fetch in progress and the reason of a queued task; per Uuid
//! the stored snapshots ([`crate::inventory::store`]); and the two lanes' jobs:
//! `CreateOpenPortTask` and `DescribeOpenPorts`, each behind its own strict limiter at its own
//! rate with its own throttling feedback, so inventory traffic never cuts the status polling
//! rate.
//!
//! Follow-ups are decided by [`super::inventory_decide`] (pure); this file carries them out:
//! queues, the snapshot store, events, and the inventory file. What it keeps is
//! [`super::inventory_state`]. A complete listing goes through [`inventory::reconcile`]: opens
//! are reported at once, and ports it missed are held and a confirming fetch is queued
//! [`confirm::CONFIRM_AFTER`] later (sent only while the agent is `COMPLETE`; agents that
//! start with held closes are fetched at start).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::time::Instant;

use super::Poller;
use super::dispatcher::Engine;
use super::in_flight::{InFlight, Reply};
use super::inventory_decide::{
    self, CREATE_MISSING_EVERY, Facts, FollowUp, InventoryOptions, Reason,
};
use super::inventory_state::{Fetch, InventorySaver, InventoryState, unix_secs};
use super::lane::{Action, Job};
use crate::agent_uuid::AgentUuid;
use crate::api::{ApiError, ErrorClass};
use crate::events::Event;
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::inventory::{self, PAGE_LIMIT, Page, Step, confirm};
use crate::scheduler::{AgentId, Cadence, later, phase, phase_window};
use crate::status::Status;

/// What a complete listing asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Confirm {
    /// A confirming fetch, the `nth` in a row, at this time.
    Again(u32, Instant),
    /// Closes still held after a round of confirming fetches: asked about again (as the
    /// `nth`) at this time.
    Later(u32, Instant),
    /// Nothing held.
    Done,
}

impl<P: Poller> Engine<P> {
    /// Keeps the open-port inventory (when `options.enabled`) with `stored` as the snapshots
    /// of an earlier run, saved to `file`; sets each lane's own rate and in-flight budget
    /// either way. Snapshots of agents not watched are held (saved, taken back when the agent
    /// is added, dropped by `Control::Retain` or `Control::Forget`).
    pub fn with_inventory(
        mut self,
        options: InventoryOptions,
        mut stored: InventoryMap,
        file: Option<InventoryFile>,
    ) -> Self {
        self.set_lane_limits(&options);
        let held: InventoryMap = stored
            .extract_if(|uuid, _| {
                !crate::agent_uuid::AgentUuid::parse(uuid).is_ok_and(|u| self.agents.contains(&u))
            })
            .collect();
        let state = InventoryState {
            options,
            map: stored,
            held,
            fetches: HashMap::new(),
            reasons: HashMap::new(),
            gave_up: HashSet::new(),
            saver: InventorySaver::new(file, self.saver.barrier.clone()),
            epoch: (Instant::now(), unix_secs()),
        };
        self.inventory = Some(Box::new(state));
        self.seed_findings_metrics();
        let ids: Vec<AgentId> = self.agents.watched().map(|(_, id)| id).collect();
        for id in ids {
            self.inventory_added(id);
        }
        self
    }

    /// The stored inventory (for tests and the demo).
    pub fn stored_inventory(&self) -> Option<&InventoryMap> {
        self.inventory.as_ref().map(|i| &i.map)
    }

    /// Open ports in the stored inventory, over every watched agent (`None` without one),
    /// for the `open_ports` gauge: a sum over the agents once per heartbeat.
    pub(super) fn open_ports_total(&self) -> Option<u64> {
        let inv = self.inventory.as_ref().filter(|i| i.options.enabled)?;
        Some(
            inv.map
                .values()
                .filter_map(|a| a.snapshot.as_ref())
                .map(|s| s.ports.len() as u64)
                .sum(),
        )
    }

    /// New settings from a reload: the lanes' own rates and in-flight budgets,
    /// `create_missing` and `baseline` at once; a changed `rescan_interval` puts every agent at
    /// its slot in the new interval (by its Uuid, as at start: spread, never a burst), or stops
    /// rescans at "0s". `enabled` stays as started (the inventory file is opened, or not, at
    /// start).
    pub(super) fn reconfigure_inventory(&mut self, options: InventoryOptions) {
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let old = inv.options;
        inv.options = InventoryOptions {
            enabled: old.enabled,
            ..options
        };
        self.inventory_rates();
        // `cwp`: each agent's next fetch is at most one old interval away; the new one
        // applies from then on.
        if !old.enabled
            || old.rescan_interval == options.rescan_interval
            || !self.account.has_lane(Action::CreateTask)
        {
            return;
        }
        let now = Instant::now();
        let rescan = options.rescan_interval;
        let watched: Vec<(AgentUuid, AgentId)> = self.agents.watched().collect();
        let inv = self.inventory.as_mut().expect("checked above");
        let lane = self.account.lane(Action::CreateTask);
        for (uuid, id) in watched {
            // A task wanted for `create_missing` keeps its turn.
            if inv.reasons.get(&id) == Some(&Reason::Missing) {
                continue;
            }
            if rescan.is_zero() {
                lane.queue.remove(id);
            } else {
                lane.queue.schedule(
                    id,
                    later(now, phase(&uuid.text(), rescan)),
                    Cadence::Settled,
                );
            }
        }
    }

    /// Re-applies the lanes' own rates and in-flight budgets after a reload reconfigured them
    /// all alike.
    pub(super) fn inventory_rates(&mut self) {
        if let Some(options) = self.inventory.as_ref().map(|i| i.options) {
            self.set_lane_limits(&options);
        }
    }

    /// Each lane's own rate and in-flight budget, from `[api]` and `[api.actions.NAME]`.
    fn set_lane_limits(&mut self, options: &InventoryOptions) {
        for lane in &mut self.account.lanes {
            let at = lane.action.index();
            lane.set_target_rate(options.action_rates[at]);
            lane.set_max_in_flight(options.action_in_flight[at]);
        }
    }

    /// A newly watched agent: a first fetch when it is `COMPLETE` with nothing stored, and its
    /// rescan, both phased over a window by its Uuid rather than all at once.
    pub(super) fn inventory_added(&mut self, id: AgentId) {
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let Some(record) = self.agents.get(id) else {
            return;
        };
        // Back (discovered again, or listed again): what was stored of it still counts.
        let uuid = record.uuid.text();
        if let Some(entry) = inv.held.remove(&*uuid) {
            inv.map.insert(record.uuid.to_string(), entry);
            inv.saver.dirty = true;
        }
        if !inv.options.enabled {
            return;
        }
        // What it stored is evaluated under the policy now in force (it may have changed
        // while the agent was away or the daemon stopped): only differences are reported.
        self.policy_evaluate(id, None, None);
        if self.cwp.is_some() {
            // Its machine's Quuid decides (`cwp`): fetched once a listing matched it.
            self.cwp_inventory_added(id);
            return;
        }
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let Some(record) = self.agents.get(id) else {
            return;
        };
        let now = Instant::now();
        let stored = inv.map.get(&*uuid);
        let has_snapshot = stored.is_some_and(|s| s.snapshot.is_some());
        // Closes that awaited confirmation when the last run stopped: confirmed (or not) by
        // a fetch now, neither reported unconfirmed nor forgotten.
        let awaiting = stored.is_some_and(|s| !s.unconfirmed.is_empty());
        // A page of an earlier fetch still in flight (an agent back before the answer of its
        // orphaned request) would land in a new assembly: no fetch until it is answered; the
        // next `COMPLETE` or rescan fetches.
        let page_in_flight = self.account.lane(Action::FetchPorts).queue.is_in_flight(id);
        if *record.status() == Status::Complete && (!has_snapshot || awaiting) && !page_in_flight {
            let rate = inv.options.action_rates[Action::FetchPorts.index()];
            let window = phase_window(self.agents.len(), rate, self.config.intervals.settled);
            // Queued without its assembly: made at the first page (issue 27).
            inv.fetches
                .insert(id, Fetch::queued(if has_snapshot { 1 } else { 0 }));
            self.account.lane(Action::FetchPorts).queue.schedule(
                id,
                later(now, phase(&uuid, window)),
                Cadence::Settled,
            );
        }
        let rescan = inv.options.rescan_interval;
        if !rescan.is_zero() {
            // Its slot in the interval, by its Uuid: spread evenly, never a burst.
            self.account.lane(Action::CreateTask).queue.schedule(
                id,
                later(now, phase(&uuid, rescan)),
                Cadence::Settled,
            );
        }
    }

    /// Agents the first discovery did not find: what was stored of them is forgotten.
    pub(super) fn inventory_forget_held(&mut self, uuids: &[AgentUuid]) {
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let mut dropped = Vec::new();
        for uuid in uuids {
            if let Some(entry) = inv.held.remove_entry(&*uuid.text()) {
                dropped.push(entry);
            }
        }
        if !dropped.is_empty() {
            inv.saver.dirty = true;
        }
        for (uuid, entry) in &dropped {
            self.policy_removed(uuid, entry);
        }
    }

    /// An agent no longer watched: its inventory is forgotten.
    pub(super) fn inventory_forget(&mut self, id: AgentId, uuid: &AgentUuid) {
        if let Some(cwp) = self.cwp.as_mut() {
            cwp.forget(id);
        }
        if let Some(inv) = self.inventory.as_mut() {
            inv.fetches.remove(&id);
            inv.reasons.remove(&id);
            inv.gave_up.remove(&id);
            if let Some((uuid, entry)) = inv.map.remove_entry(&*uuid.text()) {
                inv.saver.dirty = true;
                self.policy_removed(&uuid, &entry);
            }
        }
    }

    /// An agent no longer watched whose inventory is kept (discovery: it may come back):
    /// its work in progress stops, its stored entry waits with the others not watched.
    pub(super) fn inventory_retire(&mut self, id: AgentId, uuid: &AgentUuid) {
        if let Some(cwp) = self.cwp.as_mut() {
            cwp.forget(id);
        }
        if let Some(inv) = self.inventory.as_mut() {
            inv.fetches.remove(&id);
            inv.reasons.remove(&id);
            inv.gave_up.remove(&id);
            if let Some((key, entry)) = inv.map.remove_entry(&*uuid.text()) {
                inv.held.insert(key, entry);
            }
        }
    }

    /// Forgets the stored inventory of agents not watched unless `keep` says otherwise.
    pub(super) fn inventory_retain_held(&mut self, keep: impl Fn(&AgentUuid) -> bool) {
        if let Some(inv) = self.inventory.as_mut() {
            let dropped: Vec<(String, _)> = inv
                .held
                .extract_if(|uuid, _| !AgentUuid::parse(uuid).is_ok_and(|u| keep(&u)))
                .collect();
            if !dropped.is_empty() {
                inv.saver.dirty = true;
            }
            for (uuid, entry) in &dropped {
                self.policy_removed(uuid, entry);
            }
        }
    }

    /// A status answer was recorded for `id`: what the inventory does about it.
    pub(super) fn inventory_after_status(&mut self, id: AgentId, status: &Status, changed: bool) {
        // Status-only mode (the default) pays nothing more per answer.
        let Some(inv) = self.inventory.as_mut().filter(|i| i.options.enabled) else {
            return;
        };
        let Some(record) = self.agents.get(id) else {
            return;
        };
        if changed {
            inv.gave_up.remove(&id);
        }
        let stored = inv.map.get(&*record.uuid.text());
        let facts = Facts {
            changed,
            has_snapshot: stored.is_some_and(|s| s.snapshot.is_some()),
            fetching: inv.fetches.contains_key(&id),
            gave_up: inv.gave_up.contains(&id),
            requested_at: stored.and_then(|s| s.requested_at),
            now: inv.unix_now(),
        };
        let now = Instant::now();
        match inventory_decide::after_status(&inv.options, status, facts) {
            Some(FollowUp::FetchPorts) => {
                inv.fetches.insert(id, Fetch::queued(0));
                self.account
                    .lane(Action::FetchPorts)
                    .queue
                    .schedule(id, now, Cadence::Settled);
            }
            Some(FollowUp::CreateTask(reason)) => {
                inv.reasons.insert(id, reason);
                self.account
                    .lane(Action::CreateTask)
                    .queue
                    .schedule(id, now, Cadence::Settled);
            }
            None => {}
        }
    }

    /// The next job of lane `i` that needs a request, with the lane's slot taken for it;
    /// otherwise when to look again (`None`: nothing queued). For the inventory lanes the
    /// question "does this job need a request at all" ([`Engine::inventory_needs_request`])
    /// is answered *before* the slot is taken: a rescan that is not due, or a fetch forgotten
    /// since it was queued, is rescheduled (or dropped) without spending a slot. Taking the
    /// slot first cost the create lanes a third of their quota (15.3–16.4 requests/s of 20 with
    /// 33 rescans/s due, issue 27). The other lanes' jobs always need their request.
    pub(super) fn take_job(&mut self, i: usize, now: Instant) -> Result<Job, Option<Instant>> {
        /// Jobs set aside in one turn at most, so a queue of them cannot hold the loop; the
        /// rest are looked at in the next turn, at once.
        const SKIPS_PER_TURN: usize = 64;
        let lane = &mut self.account.lanes[i];
        if !matches!(lane.action, Action::CreateTask | Action::FetchPorts) {
            return lane.take(now);
        }
        for _ in 0..SKIPS_PER_TURN {
            let job = self.account.lanes[i].pop_ready(now)?;
            if self.inventory_needs_request(job, now) {
                return self.account.lanes[i].grant(job, now);
            }
        }
        Err(Some(now))
    }

    /// Whether an inventory job just popped needs its request; when not (a rescan that is not
    /// due, an agent or fetch gone, a confirming fetch whose agent runs a task again), the job
    /// is finished here: rescheduled at its next slot or dropped.
    pub(super) fn inventory_needs_request(&mut self, job: Job, now: Instant) -> bool {
        let id = job.agent();
        let (Some(inv), Some(record)) = (self.inventory.as_mut(), self.agents.get(id)) else {
            self.account.lane(job.action()).finish(id, None, now);
            return false;
        };
        let status = record.status();
        match job {
            Job::CreateTask(_) => {
                let rescan = inv.options.rescan_interval;
                let fetched_at = inv
                    .map
                    .get(&*record.uuid.text())
                    .and_then(|entry| entry.fetched_at);
                if inv.reasons.get(&id).copied().unwrap_or(Reason::Rescan) == Reason::Rescan
                    && !inventory_decide::rescan_now(rescan, status, fetched_at, inv.unix_now())
                {
                    // A task runs, the agent is offline, or its last task completed recently:
                    // look again at its next slot.
                    let next = (!rescan.is_zero()).then(|| (later(now, rescan), Cadence::Settled));
                    self.account.lane(Action::CreateTask).finish(id, next, now);
                    return false;
                }
                true
            }
            Job::FetchPorts(_) => {
                let Some(fetch) = inv.fetches.get(&id) else {
                    // Forgotten since it was queued.
                    self.account.lane(job.action()).finish(id, None, now);
                    return false;
                };
                if fetch.confirming_nth() > 0 && *status != Status::Complete {
                    // A task runs again (or the agent went away): its listing may be in the
                    // middle of a rewrite. The held closes wait for the fetch that follows
                    // the next COMPLETE, which confirms them as well.
                    inv.fetches.remove(&id);
                    self.account.lane(job.action()).finish(id, None, now);
                    return false;
                }
                true
            }
            Job::PollStatus(_) | Job::ListMachines(_) | Job::FetchAssetPorts(_) => true,
        }
    }

    /// Sends an inventory job that [`Engine::inventory_needs_request`] let through (in the
    /// same turn: nothing changed since); false when it cannot be sent after all (an agent,
    /// the inventory or the fetch gone: not reachable after that check, kept so a job is
    /// never lost).
    pub(super) fn send_inventory(&mut self, job: Job, in_flight: &mut InFlight) -> bool {
        let now = Instant::now();
        let id = job.agent();
        let (Some(inv), Some(record)) = (self.inventory.as_mut(), self.agents.get(id)) else {
            self.account.lane(job.action()).finish(id, None, now);
            return false;
        };
        let uuid = record.uuid.text();
        let poller = self.account.poller.clone();
        match job {
            Job::CreateTask(_) => {
                let unix_now = inv.unix_now();
                let entry = inv.map.entry(uuid.to_string()).or_default();
                entry.requested_at = Some(unix_now);
                inv.saver.dirty = true;
                let metrics = self.metrics.clone();
                in_flight.spawn(job, async move {
                    let sent = Instant::now();
                    let result = poller.create_task(&uuid).await;
                    super::lane::answered(metrics.as_deref(), job.action(), &result, sent);
                    Reply::TaskCreated(result)
                });
            }
            Job::FetchPorts(_) => {
                let Some(fetch) = inv.fetches.get(&id) else {
                    self.account.lane(job.action()).finish(id, None, now);
                    return false;
                };
                let offset = fetch.offset();
                let metrics = self.metrics.clone();
                in_flight.spawn(job, async move {
                    let sent = Instant::now();
                    let result = poller.describe_ports(&uuid, PAGE_LIMIT, offset).await;
                    super::lane::answered(metrics.as_deref(), job.action(), &result, sent);
                    Reply::Ports(result)
                });
            }
            Job::PollStatus(_) | Job::ListMachines(_) | Job::FetchAssetPorts(_) => return false,
        }
        true
    }

    /// An answer in `action`'s lane for an agent removed meanwhile: its job is finished and
    /// the answer dropped; the id is freed only when no other lane still has a request in
    /// flight for it (with two lanes in flight, freeing it at the first answer would let a
    /// new agent take the id and receive the other answer). Returns whether it was one.
    pub(super) fn drop_orphan_answer(&mut self, id: AgentId, action: Action) -> bool {
        if !self.agents.is_orphan(id) {
            return false;
        }
        let now = Instant::now();
        self.account.lane(action).finish(id, None, now);
        if !self.account.agent_in_flight(id) {
            self.agents.release_orphan(id);
        }
        true
    }

    /// The answer of `CreateOpenPortTask`.
    pub(super) fn on_task_created(&mut self, id: AgentId, result: Result<String, ApiError>) {
        let now = Instant::now();
        let action = Action::CreateTask;
        if self.drop_orphan_answer(id, action) {
            return;
        }
        if self.inventory.is_none() {
            self.account.lane(action).finish(id, None, now);
            return;
        }
        let Some(record) = self.agents.get(id) else {
            self.account.lane(action).finish(id, None, now);
            return;
        };
        let (uuid, name) = (record.uuid.text(), self.agents.name(id).to_string());
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        let rescan = inv.options.rescan_interval;
        let reason = inv.reasons.get(&id).copied().unwrap_or(Reason::Rescan);
        let mut next = (!rescan.is_zero()).then(|| (later(now, rescan), Cadence::Settled));
        match result {
            Ok(request_id) => {
                inv.reasons.remove(&id);
                self.sink.emit(&Event::ScanRequested {
                    uuid: uuid.to_string(),
                    agent_name: name.to_string(),
                    reason: reason.as_str().to_owned(),
                    request_id,
                });
                let lane = self.account.lane(action);
                lane.finish(id, next, now);
                lane.succeeded(now);
                // The task is collecting now: poll its status soon, not a settled interval
                // later.
                self.account
                    .lane(Action::PollStatus)
                    .queue
                    .schedule(id, now, Cadence::Collecting);
            }
            Err(e) if e.class() == ErrorClass::Throttled => {
                self.throttled(action, e.code(), now);
                self.account
                    .lane(action)
                    .finish(id, Some((now, Cadence::Settled)), now);
            }
            Err(e) => {
                tracing::warn!(
                    uuid = &*uuid,
                    error_code = e.code(),
                    "CreateOpenPortTask failed: {}",
                    crate::events::printable(&e.to_string())
                );
                if reason == Reason::Missing {
                    // `requested_at` bounds the next try; the next NO_TASK asks again.
                    inv.reasons.remove(&id);
                    if rescan.is_zero() {
                        next = None;
                    }
                } else if next.is_none() {
                    next = Some((later(now, CREATE_MISSING_EVERY), Cadence::Settled));
                }
                self.account.lane(action).finish(id, next, now);
            }
        }
    }

    /// One page of `DescribeOpenPorts`.
    pub(super) fn on_ports(&mut self, id: AgentId, result: Result<Page, ApiError>) {
        let now = Instant::now();
        let action = Action::FetchPorts;
        if self.drop_orphan_answer(id, action) {
            return;
        }
        let (Some(inv), Some(record)) = (self.inventory.as_mut(), self.agents.get(id)) else {
            self.account.lane(action).finish(id, None, now);
            return;
        };
        let (uuid, name) = (record.uuid.text(), self.agents.name(id).to_string());
        // No fetch in progress: the agent was forgotten (and maybe watched again) while this
        // page was on its way. Its offset belongs to a fetch that no longer exists: dropped,
        // never appended to another.
        let Some(fetch) = inv.fetches.get_mut(&id) else {
            self.account.lane(action).finish(id, None, now);
            return;
        };
        let step = match result {
            Ok(page) => {
                self.account.lane(action).succeeded(now);
                fetch.assembly().page(page)
            }
            Err(e) if e.class() == ErrorClass::Throttled => {
                // Not the agent's fault: the same page again as the rate allows.
                self.throttled(action, e.code(), now);
                self.account
                    .lane(action)
                    .finish(id, Some((now, Cadence::Settled)), now);
                return;
            }
            Err(e) => fetch.assembly().failed(e.code(), &e.to_string()),
        };
        // Closes still held after a round of confirming fetches are asked about again this
        // much later: decided at last, never reported unconfirmed, never held for ever.
        let again_after = self.config.intervals.settled;
        let Some(inv) = self.inventory.as_mut() else {
            return;
        };
        // A complete snapshot stored: the policy's findings on it, after its port events.
        let mut evaluate = None;
        let next = match step {
            Step::Next(_) => Some((now, Cadence::Settled)),
            Step::Complete(snapshot, request_id) => {
                let nth = inv.fetches.remove(&id).map_or(0, |a| a.confirming_nth());
                let (next, previous) =
                    self.store_snapshot(id, (&uuid, &name), snapshot, &request_id, nth);
                evaluate = Some((request_id, previous));
                let Some(inv) = self.inventory.as_mut() else {
                    return;
                };
                match next {
                    Confirm::Again(nth, at) | Confirm::Later(nth, at) => {
                        inv.fetches.insert(id, Fetch::queued(nth));
                        Some((at, Cadence::Settled))
                    }
                    Confirm::Done => None,
                }
            }
            Step::Failed(e) => {
                inv.fetches.remove(&id);
                self.sink.emit(&Event::InventoryFailed {
                    uuid: uuid.to_string(),
                    agent_name: name.to_string(),
                    error_code: e.code().to_owned(),
                    error_message: e.to_string(),
                });
                let holding = inv
                    .map
                    .get(&*uuid)
                    .is_some_and(|entry| !entry.unconfirmed.is_empty());
                if holding {
                    // Closes awaiting confirmation: asked about again, as above.
                    inv.fetches.insert(id, Fetch::queued(1));
                    Some((later(now, again_after), Cadence::Settled))
                } else {
                    inv.gave_up.insert(id);
                    None
                }
            }
        };
        if let Some((request_id, previous)) = evaluate {
            self.policy_evaluate(id, Some(&request_id), previous.as_deref());
        }
        self.account.lane(action).finish(id, next, now);
    }

    /// A complete listing of `id`'s ports: reconciled with what is stored (opens reported,
    /// closes held or confirmed, [`inventory::reconcile`]), stored, its events emitted. Says
    /// whether a confirming fetch is wanted, and gives back the snapshot it replaced (for the
    /// policy). Shared by both backends: only how the listing was paged differs.
    pub(super) fn store_snapshot(
        &mut self,
        id: AgentId,
        (uuid, name): (&str, &str),
        snapshot: inventory::Snapshot,
        request_id: &str,
        nth: u32,
    ) -> (Confirm, Option<Arc<inventory::Snapshot>>) {
        let now = Instant::now();
        // Closes still held after a round of confirming fetches are asked about again this
        // much later: decided at last, never reported unconfirmed, never held for ever.
        let again_after = self.config.intervals.settled;
        let Some(inv) = self.inventory.as_mut() else {
            return (Confirm::Done, None);
        };
        let _ = id;
        let unix_now = inv.unix_now();
        let entry = inv.map.entry(uuid.to_string()).or_default();
        let who = inventory::Who { uuid, name };
        let last = entry
            .snapshot
            .as_deref()
            .map(|s| (s, entry.unconfirmed.as_slice()));
        let reconciled =
            inventory::reconcile(who, last, snapshot, inv.options.baseline, request_id);
        let previous = entry.snapshot.take();
        entry.snapshot = Some(Arc::new(reconciled.stored));
        entry.unconfirmed = reconciled.unconfirmed;
        entry.fetched_at = Some(unix_now);
        if *entry.name != *name {
            entry.name = name.to_string();
        }
        let held = entry.unconfirmed.len();
        inv.saver.dirty = true;
        for event in &reconciled.events {
            self.sink.emit(event);
        }
        let next = if confirm::fetch_again(held, nth) {
            // Ports missing for the first time: a second complete fetch confirms (or not)
            // their close.
            Confirm::Again(nth.saturating_add(1), later(now, confirm::CONFIRM_AFTER))
        } else if held > 0 {
            tracing::warn!(
                uuid,
                ports = held,
                "the port list missed other ports at each of {} confirming fetches; \
                 their close is asked about again in {}s",
                confirm::CONFIRMING_FETCHES,
                again_after.as_secs()
            );
            Confirm::Later(1, later(now, again_after))
        } else {
            Confirm::Done
        };
        (next, previous)
    }

    /// A throttling answer in `action`'s lane: its rate alone is cut.
    pub(super) fn throttled(&mut self, action: Action, code: &str, now: Instant) {
        if let Some(rate) = self.account.lane(action).throttled(now) {
            self.sink.emit(&Event::RateLimited {
                error_code: code.to_owned(),
                requests_per_second: rate,
            });
        }
    }

    /// Saves the inventory file when due.
    pub(super) fn inventory_tick(&mut self, now: Instant) {
        if let Some(inv) = self.inventory.as_mut() {
            inv.saver.tick(now, &[&inv.map, &inv.held]);
        }
    }

    /// At the end of a run: the last changes saved.
    pub(super) async fn inventory_finish(&mut self) {
        if let Some(inv) = self.inventory.as_mut() {
            inv.saver.finish(&[&inv.map, &inv.held]).await;
        }
    }
}
