//! Watchlist changes while the engine runs: start-up and reload phase new agents in, kept
//! agents keep their status and schedule, removed ones stop and are forgotten.
//!
//! Why orphans: an agent removed while its request is in flight keeps its id (and its
//! request keeps counting against `max_in_flight`) until the answer comes and is dropped; if
//! it is added back first, it gets the same id back, so one agent never has two requests in
//! flight.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::Engine;
use super::lane::Action;
use super::{Control, EngineConfig, Poller, Removed};
use crate::agent_uuid::AgentUuid;
use crate::scheduler::{AgentId, Cadence, later, phase, phase_window};
use crate::watchlist::Agent;

impl<P: Poller> Engine<P> {
    /// Carries out a control message.
    pub(super) fn apply(&mut self, control: Control) {
        match control {
            Control::Reload {
                agents,
                config,
                removed,
                reply,
            } => {
                // `once` is how this run was started, not a setting a reload changes.
                self.config = EngineConfig {
                    once: self.config.once,
                    ..config
                };
                for lane in &mut self.account.lanes {
                    lane.reconfigure(&config);
                }
                self.inventory_rates();
                let (added, gone) = self.replace_watchlist(&agents, removed);
                if gone > 0 {
                    self.saver.mark_dirty();
                }
                // A kept agent renamed or with new facts (tags, region, WAN) may be selected
                // by other rules now.
                self.policy_hosts_changed();
                self.heartbeat.refresh_soon();
                let _ = reply.send((self.agent_count(), added, gone));
            }
            Control::Inventory(options) => self.reconfigure_inventory(options),
            Control::Policy(policy) => self.set_policy(policy),
            Control::Seed { known } => {
                for (uuid, status) in known {
                    self.agents.seed(uuid, status);
                }
            }
            Control::Forget { uuids } => {
                self.inventory_forget_held(&uuids);
                for uuid in uuids {
                    if self.agents.forget_unwatched(&uuid) {
                        self.saver.mark_dirty();
                    }
                }
            }
            Control::Retain { keep } => {
                if self.agents.retain_unwatched(|u| keep.contains(u)) {
                    self.saver.mark_dirty();
                }
                self.inventory_retain_held(|u| keep.contains(u));
            }
        }
    }

    /// Adds agents not watched yet, their first polls phased over one pass at the rate
    /// (capped at the settled interval) instead of bursting. Returns how many were added.
    pub(super) fn add_agents(&mut self, agents: &[&Agent]) -> usize {
        let (new, readopted) = self.insert_agents(agents.iter().copied());
        self.schedule_new(&new);
        readopted + new.len()
    }

    /// Puts agents not watched yet in the table; returns the ids of those to schedule, and
    /// how many came back before the answer of their orphaned request: those keep their id
    /// and are queued at once (still in flight: the answer reschedules them).
    pub(super) fn insert_agents<A: std::borrow::Borrow<Agent>>(
        &mut self,
        agents: impl Iterator<Item = A>,
    ) -> (Vec<AgentId>, usize) {
        let now = Instant::now();
        // `cwp`: statuses come from the machine listings, no agent is queued for them.
        let status_lane = self.account.has_lane(Action::PollStatus);
        let mut new = Vec::with_capacity(agents.size_hint().0);
        let mut readopted = 0;
        for agent in agents {
            let agent = agent.borrow();
            let name = agent.name.as_deref().unwrap_or("");
            if self.agents.contains(&agent.uuid) {
                continue;
            }
            if let Some(id) = self.agents.readopt(&agent.uuid, name) {
                self.agents.set_facts(id, agent.facts.as_ref());
                if status_lane {
                    self.account
                        .lane(Action::PollStatus)
                        .queue
                        .schedule(id, now, Cadence::Settled);
                }
                // Its kept inventory comes back with it (else it would be baselined again and
                // saved twice, held and watched), with its rescan slot.
                self.inventory_added(id);
                self.pending_once += 1;
                readopted += 1;
                continue;
            }
            let id = self.agents.insert(agent.uuid, name);
            self.agents.set_facts(id, agent.facts.as_ref());
            new.push(id);
        }
        (new, readopted)
    }

    /// Schedules agents just put in the table, each by its known status, their first polls
    /// phased over one pass at the rate (capped at the settled interval).
    pub(super) fn schedule_new(&mut self, new: &[AgentId]) {
        let now = Instant::now();
        let window = if self.config.once {
            Duration::ZERO
        } else {
            phase_window(
                new.len(),
                self.config.requests_per_second,
                self.config.intervals.settled,
            )
        };
        let status_lane = self.account.has_lane(Action::PollStatus);
        if status_lane {
            self.account
                .lane(Action::PollStatus)
                .queue
                .reserve(new.len());
        }
        for &id in new {
            let Some(record) = self.agents.get(id) else {
                continue;
            };
            if status_lane {
                let cadence = Cadence::of(record.status());
                let due = later(now, phase(&record.uuid.text(), window));
                self.account
                    .lane(Action::PollStatus)
                    .queue
                    .schedule(id, due, cadence);
            }
            self.inventory_added(id);
        }
        self.pending_once += new.len();
    }

    /// Applies a new watchlist: kept agents keep status and schedule, new ones are phased
    /// in, removed ones stop and are forgotten, or with [`Removed::Keep`] kept as agents not
    /// watched (as discovery's before its first pass). Returns (added, removed).
    pub(super) fn replace_watchlist(
        &mut self,
        agents: &[Agent],
        removed: Removed,
    ) -> (usize, usize) {
        let wanted: HashSet<AgentUuid> = agents.iter().map(|a| a.uuid).collect();
        let gone: Vec<(AgentUuid, AgentId)> = self
            .agents
            .watched()
            .filter(|(u, _)| !wanted.contains(u))
            .collect();
        for (uuid, id) in &gone {
            let in_flight = self.account.agent_in_flight(*id);
            if removed == Removed::Keep {
                self.agents.retire(uuid, in_flight);
            } else {
                self.agents.remove(uuid, in_flight);
            }
            // Not the `cwp` listings' lane: its queue holds cursors, not agents.
            for lane in self.account.agent_lanes() {
                lane.queue.remove(*id);
            }
            match removed {
                Removed::Forget => self.inventory_forget(*id, uuid),
                Removed::Keep => self.inventory_retire(*id, uuid),
            }
        }
        let mut new = Vec::new();
        for a in agents {
            match self.agents.id_of(&a.uuid) {
                Some(id) => {
                    self.agents.rename(id, a.name.as_deref().unwrap_or(""));
                    self.agents.set_facts(id, a.facts.as_ref());
                }
                None => new.push(a),
            }
        }
        let added = self.add_agents(&new);
        (added, gone.len())
    }
}
