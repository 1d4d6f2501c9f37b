//! Watchlist changes while the engine runs: start-up and reload phase new agents in, kept
//! agents keep their status and schedule, removed ones stop and are forgotten.
//!
//! Why orphans: an agent removed while its request is in flight keeps its id (and its
//! request keeps counting against `max_in_flight`) until the answer comes and is dropped; if
//! it is added back first, it gets the same id back, so one agent never has two requests in
//! flight.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::dispatcher::Engine;
use super::lane::Action;
use super::{Control, EngineConfig, Poller};
use crate::scheduler::{AgentId, Cadence, later, phase, phase_window};
use crate::watchlist::Agent;

impl<P: Poller> Engine<P> {
    /// Carries out a control message.
    pub(super) fn apply(&mut self, control: Control) {
        match control {
            Control::Reload {
                agents,
                config,
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
                let (added, removed) = self.replace_watchlist(&agents);
                if removed > 0 {
                    self.saver.mark_dirty();
                }
                self.heartbeat.refresh_soon();
                let _ = reply.send((self.agent_count(), added, removed));
            }
            Control::Inventory(options) => self.reconfigure_inventory(options),
            Control::Seed { known } => {
                for (uuid, status) in known {
                    if self.tracker.shared_uuid(&uuid).is_none() {
                        self.tracker.seed(&uuid, status);
                    }
                }
            }
            Control::Forget { uuids } => {
                self.inventory_forget_held(&uuids);
                for uuid in uuids {
                    if !self.agents.contains(&uuid) {
                        self.tracker.forget(&uuid);
                        self.saver.mark_dirty();
                    }
                }
            }
        }
    }

    /// Adds agents not watched yet, their first polls phased over one pass at the rate
    /// (capped at the settled interval) instead of bursting. Returns how many were added.
    pub(super) fn add_agents(&mut self, agents: &[&Agent]) -> usize {
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
        let lane = Action::PollStatus.index();
        let mut added = 0;
        for agent in agents {
            let uuid = agent.uuid.as_str();
            let name = agent.name.as_deref().unwrap_or("");
            if self.agents.contains(uuid) {
                continue;
            }
            if let Some(id) = self.agents.readopt(uuid, name) {
                // Back before its last answer came: the same id, still in flight; the answer
                // reschedules it.
                self.account.lanes[lane]
                    .queue
                    .schedule(id, now, Cadence::Settled);
                added += 1;
                continue;
            }
            // Share the tracker's copy of the Uuid, else the watchlist's: never one more.
            let shared = self
                .tracker
                .shared_uuid(uuid)
                .unwrap_or_else(|| agent.uuid.to_arc());
            let id = self.agents.insert(shared, name);
            let cadence = Cadence::of(self.tracker.status(uuid));
            self.account.lanes[lane]
                .queue
                .schedule(id, later(now, phase(uuid, window)), cadence);
            self.inventory_added(id);
            added += 1;
        }
        self.pending_once += added;
        added
    }

    /// Applies a new watchlist: kept agents keep status and schedule, new ones are phased
    /// in, removed ones stop and are forgotten. Returns (added, removed).
    pub(super) fn replace_watchlist(&mut self, agents: &[Agent]) -> (usize, usize) {
        let wanted: HashSet<&str> = agents.iter().map(|a| a.uuid.as_str()).collect();
        let gone: Vec<(Arc<str>, AgentId)> = self
            .agents
            .watched()
            .filter(|(u, _)| !wanted.contains(&***u))
            .map(|(u, id)| (u.clone(), id))
            .collect();
        for (uuid, id) in &gone {
            let lanes = &mut self.account.lanes;
            let in_flight = lanes.iter().any(|l| l.queue.is_in_flight(*id));
            self.agents.remove(uuid, in_flight);
            for lane in lanes {
                lane.queue.remove(*id);
            }
            self.tracker.forget(uuid);
            self.inventory_forget(*id, uuid);
        }
        let mut new = Vec::new();
        for a in agents {
            match self.agents.id_of(a.uuid.as_str()) {
                Some(id) => self.agents.rename(id, a.name.as_deref().unwrap_or("")),
                None => new.push(a),
            }
        }
        let added = self.add_agents(&new);
        (added, gone.len())
    }
}
