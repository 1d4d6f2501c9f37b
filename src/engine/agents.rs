//! The agent table: every watched agent under a dense id, what this run has seen of its polls,
//! and the bookkeeping reloads need (free ids to reuse, orphans whose request is in flight).
//!
//! Why dense ids: the due queues, the in-flight tasks and the jobs hold a `usize`, not a
//! string, so 100k agents cost one Uuid allocation each (shared with the tracker's map).

use std::collections::HashMap;
use std::sync::Arc;

use tokio::time::Instant;

use crate::scheduler::AgentId;

/// What this run has seen of one agent's polls: the part of its record that
/// [`super::decide::decide`] reads and rewrites.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Failed polls in a row.
    pub failures: u32,
    /// When the last `poll_failed` was emitted (they are throttled per agent).
    pub last_failed_event: Option<Instant>,
    /// Status changes seen in this run.
    pub transitions: u32,
    /// The error of the last poll, when it failed (for the report).
    pub last_error: Option<String>,
    /// RequestId of the last answer (kept in `once` mode only: the daemon finds it in the
    /// tracker).
    pub request_id: Option<String>,
    /// Answered at least once in this run (`once` mode counts them).
    pub polled_once: bool,
    /// `once`: no more polls for this agent (a status, or a final failure).
    pub done_once: bool,
}

/// One watched agent.
#[derive(Debug)]
pub(crate) struct AgentRecord {
    /// Its Uuid, the same allocation as the tracker's key.
    pub uuid: Arc<str>,
    /// Its name from the watchlist, empty when none.
    pub name: Arc<str>,
    /// What its polls did.
    pub progress: Progress,
}

/// Dense ids → agents, with a by-Uuid index.
#[derive(Debug, Default)]
pub(crate) struct AgentTable {
    slots: Vec<Option<AgentRecord>>,
    by_uuid: HashMap<Arc<str>, AgentId>,
    /// Agents removed from the watchlist while their request was in flight: the slot lives
    /// until the answer comes (and is dropped), or the agent is added back.
    orphans: HashMap<Arc<str>, AgentId>,
    /// Slots freed by reloads (never one whose request is still in flight), reused so the
    /// table does not grow with every reload.
    free: Vec<AgentId>,
}

impl AgentTable {
    /// An empty table with room for `n` agents.
    pub fn with_capacity(n: usize) -> Self {
        AgentTable {
            slots: Vec::with_capacity(n),
            by_uuid: HashMap::with_capacity(n),
            ..Default::default()
        }
    }

    /// Agents watched now (orphans are not watched).
    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    /// Is this Uuid watched?
    pub fn contains(&self, uuid: &str) -> bool {
        self.by_uuid.contains_key(uuid)
    }

    /// The id of a watched agent.
    pub fn id_of(&self, uuid: &str) -> Option<AgentId> {
        self.by_uuid.get(uuid).copied()
    }

    /// The record under `id`, orphans included.
    pub fn get(&self, id: AgentId) -> Option<&AgentRecord> {
        self.slots.get(id).and_then(Option::as_ref)
    }

    /// The record under `id`, orphans included.
    pub fn get_mut(&mut self, id: AgentId) -> Option<&mut AgentRecord> {
        self.slots.get_mut(id).and_then(Option::as_mut)
    }

    /// Watched agents: (Uuid, id).
    pub fn watched(&self) -> impl Iterator<Item = (&Arc<str>, AgentId)> {
        self.by_uuid.iter().map(|(u, id)| (u, *id))
    }

    /// Records of watched agents in table order (orphans left out), for the report.
    pub fn records(&self) -> impl Iterator<Item = &AgentRecord> {
        self.slots
            .iter()
            .flatten()
            .filter(|r| !self.orphans.contains_key(&r.uuid))
    }

    /// An agent back in the watchlist before the answer of its orphaned request came: it is
    /// watched again under the same id (still in flight; the answer reschedules it).
    pub fn readopt(&mut self, uuid: &str, name: &str) -> Option<AgentId> {
        let (uuid, id) = self.orphans.remove_entry(uuid)?;
        if let Some(record) = self.get_mut(id) {
            record.name = Arc::from(name);
        }
        self.by_uuid.insert(uuid, id);
        Some(id)
    }

    /// Adds a new agent, reusing a freed id when there is one.
    pub fn insert(&mut self, uuid: Arc<str>, name: &str) -> AgentId {
        let id = self.free.pop().unwrap_or(self.slots.len());
        if id == self.slots.len() {
            self.slots.push(None);
        }
        self.slots[id] = Some(AgentRecord {
            uuid: uuid.clone(),
            name: Arc::from(name),
            progress: Progress::default(),
        });
        self.by_uuid.insert(uuid, id);
        id
    }

    /// Renames a watched agent (a reload may change names).
    pub fn rename(&mut self, id: AgentId, name: &str) {
        if let Some(record) = self.get_mut(id)
            && *record.name != *name
        {
            record.name = Arc::from(name);
        }
    }

    /// Stops watching an agent. With its request in flight it becomes an orphan (the id stays
    /// taken until the answer comes); otherwise its id is freed.
    pub fn remove(&mut self, uuid: &str, in_flight: bool) -> Option<AgentId> {
        let (uuid, id) = self.by_uuid.remove_entry(uuid)?;
        if in_flight {
            self.orphans.insert(uuid, id);
        } else {
            self.slots[id] = None;
            self.free.push(id);
        }
        Some(id)
    }

    /// Is `id` an agent removed from the watchlist whose request is still in flight?
    pub fn is_orphan(&self, id: AgentId) -> bool {
        self.get(id)
            .is_some_and(|r| self.orphans.get(&r.uuid) == Some(&id))
    }

    /// The answer for `id` arrived: when it is an orphan's, the agent is forgotten now and
    /// its id freed. Returns whether it was.
    pub fn release_orphan(&mut self, id: AgentId) -> bool {
        let Some(record) = self.get(id) else {
            return false;
        };
        if self.orphans.get(&record.uuid) != Some(&id) {
            return false;
        }
        let uuid = record.uuid.clone();
        self.orphans.remove(&uuid);
        self.slots[id] = None;
        self.free.push(id);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_ids_are_reused_and_orphans_keep_theirs_until_the_answer() {
        let mut t = AgentTable::default();
        let a = t.insert(Arc::from("a"), "");
        let b = t.insert(Arc::from("b"), "web");
        assert_eq!((a, b), (0, 1));
        assert_eq!(t.remove("a", false), Some(0));
        assert_eq!(t.insert(Arc::from("c"), ""), 0, "a's id reused");
        // b removed while in flight: an orphan, not watched, not reported, id kept.
        assert_eq!(t.remove("b", true), Some(1));
        assert!(!t.contains("b"));
        assert_eq!(t.len(), 1);
        assert_eq!(t.records().count(), 1);
        assert_eq!(
            t.insert(Arc::from("d"), ""),
            2,
            "an orphan's id is not free"
        );
        // Back before its answer: same id, new name.
        assert_eq!(t.readopt("b", "web-2"), Some(1));
        assert_eq!(&*t.get(1).unwrap().name, "web-2");
        assert!(!t.release_orphan(1), "watched again: the answer is its own");
        // Gone again; the answer frees the id.
        t.remove("b", true);
        assert!(t.release_orphan(1));
        assert!(t.get(1).is_none());
        assert_eq!(t.insert(Arc::from("e"), ""), 1);
    }
}
