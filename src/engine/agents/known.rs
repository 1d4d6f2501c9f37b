//! The last known statuses: the watched agents' (in their records) and those of agents not
//! watched yet, kept for when they are added; what the state file holds.

use super::AgentTable;
use crate::agent_uuid::AgentUuid;
use crate::status::Status;
use crate::tracker::Known;

impl AgentTable {
    /// Every status known: watched agents' and the unwatched ones kept for later (orphans
    /// were forgotten when removed). What the state file holds.
    pub fn known(&self) -> impl Iterator<Item = (AgentUuid, &Known)> {
        let watched = self
            .records()
            .filter_map(|r| r.known.as_ref().map(|k| (r.uuid, k)));
        watched.chain(self.unwatched.iter().map(|(u, k)| (*u, k)))
    }

    /// Calls `f` with the last known status of each watched agent that has one.
    pub fn for_each_status(&self, f: &mut dyn FnMut(&Status)) {
        for record in self.records() {
            if let Some(known) = &record.known {
                f(&known.status);
            }
        }
    }

    /// A copy of [`AgentTable::known`] for the saver's thread (allocated once, at its size).
    pub fn known_copy(&self) -> Vec<(AgentUuid, Known)> {
        let watched = self.records().filter(|r| r.known.is_some()).count();
        let mut copy = Vec::with_capacity(watched.saturating_add(self.unwatched.len()));
        copy.extend(self.known().map(|(u, k)| (u, k.clone())));
        copy
    }

    /// The last known status of a watched agent, if any.
    pub fn known_of(&self, uuid: &AgentUuid) -> Option<&Known> {
        self.get(self.id_of(uuid)?)?.known.as_ref()
    }

    /// A status persisted by an earlier run: a watched agent's when it has none yet, else
    /// kept for when the agent is added (an agent whose status is known keeps it).
    pub fn seed(&mut self, uuid: AgentUuid, known: Known) {
        match self.id_of(&uuid).and_then(|id| self.get_mut(id)) {
            Some(record) => {
                if record.known.is_none() {
                    record.known = Some(known);
                }
            }
            None => {
                self.unwatched.entry(uuid).or_insert(known);
            }
        }
    }

    /// A status persisted by an earlier run, for a watched agent only: `Some` gives it back
    /// when the agent is not watched.
    pub fn seed_watched(&mut self, uuid: AgentUuid, known: Known) -> Option<Known> {
        match self.id_of(&uuid).and_then(|id| self.get_mut(id)) {
            Some(record) => {
                record.known = Some(known);
                None
            }
            None => Some(known),
        }
    }

    /// Forgets every status (a state file that turned out damaged half-way through).
    pub fn forget_all_known(&mut self) {
        for record in self.slots.iter_mut().flatten() {
            record.known = None;
        }
        self.unwatched.clear();
    }

    /// Forgets what is known of `uuid` unless it is watched; true when something was.
    pub fn forget_unwatched(&mut self, uuid: &AgentUuid) -> bool {
        !self.contains(uuid) && self.unwatched.remove(uuid).is_some()
    }

    /// Forgets what is known of every agent not watched unless `keep` says otherwise; true
    /// when something was.
    pub fn retain_unwatched(&mut self, keep: impl Fn(&AgentUuid) -> bool) -> bool {
        let before = self.unwatched.len();
        self.unwatched.retain(|u, _| keep(u));
        self.unwatched.len() != before
    }
}
