//! The agent table: every watched agent under a dense id, its last known status (the one
//! place it is kept: exactly-once transitions and the state file's content), what this run has
//! seen of its polls, and the bookkeeping reloads need (free ids to reuse, orphans whose
//! request is in flight, statuses of agents not watched yet).
//!
//! Why one compact table: the due queues, the in-flight tasks and the jobs hold a `usize`, not
//! a string, and a record is about 100 bytes with no allocation but the name (Uuids are their
//! 16-byte value, RequestIds too, the rarely used parts of [`Progress`] are boxed): 100,000
//! agents fit in a few MB (issue 13).
//!
//! Host facts (tags, region, WAN: what the expected-ports policy selects on, see
//! [`AgentTable::host`]) are not in the record: a side map holds them for the agents that
//! have any, and agents with equal facts share one copy from a pool. An untagged agent costs
//! nothing more; 100,000 agents tagged alike cost one set and a map entry each.
//!
//! This file holds the records, the index, the names and the reload bookkeeping;
//! `progress.rs` the poll progress and its compact form; `known.rs` the last known statuses
//! (watched and not); `host.rs` the host facts side map.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use crate::agent_uuid::AgentUuid;
use crate::scheduler::AgentId;
use crate::status::Status;
use crate::tracker::{Known, KnownMap};
use crate::watchlist::Facts;

mod host;
mod known;
mod progress;

pub(crate) use progress::{Progress, StoredProgress};

/// Where an agent's name is in the table's name buffer (8 bytes, instead of a pointer and
/// an allocation per agent).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct NameRef {
    start: u32,
    len: u32,
}

/// One watched agent.
#[derive(Debug)]
pub(crate) struct AgentRecord {
    /// Its Uuid.
    pub uuid: AgentUuid,
    /// Its name from the watchlist (empty when none), in the table's buffer:
    /// [`AgentTable::name`].
    name: NameRef,
    /// Its last known status (from an answer, or persisted by an earlier run); `None` until
    /// then, so the first answer is a change from `UNKNOWN`.
    pub known: Option<Known>,
    /// What its polls did.
    pub progress: StoredProgress,
}

impl AgentRecord {
    /// The last known status, `UNKNOWN` when none.
    pub fn status(&self) -> &Status {
        static UNKNOWN: Status = Status::Unknown;
        self.known.as_ref().map_or(&UNKNOWN, |k| &k.status)
    }
}

/// The text of `name` in `names`.
fn name_in(names: &str, name: NameRef) -> &str {
    let start = name.start as usize;
    names
        .get(start..start + name.len as usize)
        .unwrap_or_default()
}

/// The Uuid of the record under `id`, if any.
fn uuid_at(slots: &[Option<AgentRecord>], id: u32) -> Option<AgentUuid> {
    Some(slots.get(id as usize)?.as_ref()?.uuid)
}

/// Dense ids → agents, with a by-Uuid index.
#[derive(Debug, Default)]
pub(crate) struct AgentTable {
    slots: Vec<Option<AgentRecord>>,
    /// Ids of watched agents by their Uuid, which the index does not store again: it hashes
    /// and compares the records' own (4 bytes per agent instead of 24).
    by_uuid: HashTable<u32>,
    hasher: RandomState,
    /// Agents removed from the watchlist while their request was in flight: the slot lives
    /// until the answer comes (and is dropped), or the agent is added back.
    orphans: HashMap<AgentUuid, AgentId>,
    /// Slots freed by reloads (never one whose request is still in flight), reused so the
    /// table does not grow with every reload.
    free: Vec<AgentId>,
    /// Statuses persisted by an earlier run for agents not watched now (discovery's, until
    /// it finds them): saved with the rest, and taken over when the agent is added.
    unwatched: KnownMap,
    /// Every record's name, one after the other ([`NameRef`]).
    names: String,
    /// Bytes of `names` no record refers to any more (renamed or removed agents): the buffer
    /// is rebuilt when they are most of it.
    names_unused: usize,
    /// Host facts of the records that have any, by id ([`AgentTable::set_facts`]).
    facts: HashMap<u32, Arc<Facts>>,
    /// Every distinct facts value in `facts`, once: the entries share these. Each is this
    /// table's own copy, so its count is the pool's reference plus the records'.
    facts_pool: HashSet<Arc<Facts>>,
}

impl AgentTable {
    /// An empty table with room for `n` agents.
    pub fn with_capacity(n: usize) -> Self {
        AgentTable {
            slots: Vec::with_capacity(n),
            by_uuid: HashTable::with_capacity(n),
            ..Default::default()
        }
    }

    /// The id of a watched agent, found in the index by the records' Uuids.
    fn find(&self, uuid: &AgentUuid) -> Option<AgentId> {
        let slots = &self.slots;
        self.by_uuid
            .find(self.hasher.hash_one(uuid), |&id| {
                uuid_at(slots, id) == Some(*uuid)
            })
            .map(|&id| id as usize)
    }

    /// Puts `id` (whose record holds `uuid`) in the index.
    fn index(&mut self, uuid: AgentUuid, id: AgentId) {
        // Ids are dense indexes of this table: fewer than 2^32 (400 GB of records).
        let Ok(small) = u32::try_from(id) else {
            return;
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_uuid
            .insert_unique(hasher.hash_one(uuid), small, |&id| {
                uuid_at(slots, id).map_or(0, |u| hasher.hash_one(u))
            });
    }

    /// Takes `uuid` out of the index; its id.
    fn unindex(&mut self, uuid: &AgentUuid) -> Option<AgentId> {
        let slots = &self.slots;
        let entry = self
            .by_uuid
            .find_entry(self.hasher.hash_one(uuid), |&id| {
                uuid_at(slots, id) == Some(*uuid)
            })
            .ok()?;
        let (id, _) = entry.remove();
        Some(id as usize)
    }

    /// Agents watched now (orphans are not watched).
    pub fn len(&self) -> usize {
        self.by_uuid.len()
    }

    /// Is this Uuid watched?
    pub fn contains(&self, uuid: &AgentUuid) -> bool {
        self.find(uuid).is_some()
    }

    /// The id of a watched agent.
    pub fn id_of(&self, uuid: &AgentUuid) -> Option<AgentId> {
        self.find(uuid)
    }

    /// The name of the record under `id` (empty when none).
    pub fn name(&self, id: AgentId) -> &str {
        self.get(id).map_or("", |r| name_in(&self.names, r.name))
    }

    /// The record under `id` and its name, the record mutable.
    pub fn get_mut_named(&mut self, id: AgentId) -> Option<(&mut AgentRecord, &str)> {
        let record = self.slots.get_mut(id)?.as_mut()?;
        let name = name_in(&self.names, record.name);
        Some((record, name))
    }

    /// Records of watched agents with their names, in table order.
    pub fn named_records(&self) -> impl Iterator<Item = (&AgentRecord, &str)> {
        self.records().map(|r| (r, name_in(&self.names, r.name)))
    }

    /// Puts `name` in the buffer. (More than 4 GiB of names, which no watchlist reaches, would
    /// leave the newest agents unnamed rather than wrap.)
    fn store_name(&mut self, name: &str) -> NameRef {
        if name.is_empty() {
            return NameRef::default();
        }
        let (Ok(start), Ok(len)) = (u32::try_from(self.names.len()), u32::try_from(name.len()))
        else {
            return NameRef::default();
        };
        if start.checked_add(len).is_none() {
            return NameRef::default();
        }
        self.names.push_str(name);
        NameRef { start, len }
    }

    /// A name no record refers to any more; the buffer is rebuilt, live names only, when most
    /// of it is such (reloads that rename or remove many agents).
    fn drop_name(&mut self, name: NameRef) {
        self.names_unused = self.names_unused.saturating_add(name.len as usize);
        if self.names_unused > 4096 && self.names_unused > self.names.len() / 2 {
            let mut names = String::with_capacity(self.names.len() - self.names_unused);
            for record in self.slots.iter_mut().flatten() {
                let text = name_in(&self.names, record.name);
                // Fits: the new buffer is smaller than the old one.
                record.name = NameRef {
                    start: names.len() as u32,
                    len: record.name.len,
                };
                names.push_str(text);
            }
            self.names = names;
            self.names_unused = 0;
        }
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
    pub fn watched(&self) -> impl Iterator<Item = (AgentUuid, AgentId)> + '_ {
        self.by_uuid
            .iter()
            .filter_map(|&id| Some((uuid_at(&self.slots, id)?, id as usize)))
    }

    /// Records of watched agents in table order (orphans left out), for the report.
    pub fn records(&self) -> impl Iterator<Item = &AgentRecord> {
        self.slots
            .iter()
            .flatten()
            .filter(|r| !self.orphans.contains_key(&r.uuid))
    }

    /// Stops watching an agent as [`AgentTable::remove`] does, but keeps its status as one of
    /// an agent not watched (saved, and its own again when it is added back).
    pub fn retire(&mut self, uuid: &AgentUuid, in_flight: bool) -> Option<AgentId> {
        let id = self.id_of(uuid)?;
        if let Some(known) = self.get_mut(id).and_then(|r| r.known.take()) {
            self.unwatched.insert(*uuid, known);
        }
        self.remove(uuid, in_flight)
    }

    /// An agent back in the watchlist before the answer of its orphaned request came: it is
    /// watched again under the same id (still in flight; the answer reschedules it).
    pub fn readopt(&mut self, uuid: &AgentUuid, name: &str) -> Option<AgentId> {
        let (uuid, id) = self.orphans.remove_entry(uuid)?;
        let known = self.unwatched.remove(&uuid);
        if let Some(record) = self.get_mut(id) {
            record.known = known;
        }
        self.rename(id, name);
        self.index(uuid, id);
        Some(id)
    }

    /// Adds a new agent, reusing a freed id when there is one. A status kept for it while
    /// it was not watched becomes its own.
    pub fn insert(&mut self, uuid: AgentUuid, name: &str) -> AgentId {
        let id = self.free.pop().unwrap_or(self.slots.len());
        if id == self.slots.len() {
            self.slots.push(None);
        }
        let known = self.unwatched.remove(&uuid);
        let name = self.store_name(name);
        self.slots[id] = Some(AgentRecord {
            uuid,
            name,
            known,
            progress: StoredProgress::default(),
        });
        self.index(uuid, id);
        id
    }

    /// Renames a watched agent (a reload may change names).
    pub fn rename(&mut self, id: AgentId, name: &str) {
        let Some(old) = self.get(id).map(|r| r.name) else {
            return;
        };
        if name_in(&self.names, old) == name {
            return;
        }
        let new = self.store_name(name);
        if let Some(record) = self.get_mut(id) {
            record.name = new;
        }
        self.drop_name(old);
    }

    /// Stops watching an agent and forgets its status. With its request in flight it becomes
    /// an orphan (the id stays taken until the answer comes); otherwise its id is freed.
    pub fn remove(&mut self, uuid: &AgentUuid, in_flight: bool) -> Option<AgentId> {
        let id = self.unindex(uuid)?;
        let uuid = *uuid;
        if in_flight {
            if let Some(record) = self.get_mut(id) {
                record.known = None;
            }
            self.orphans.insert(uuid, id);
        } else {
            self.free_slot(id);
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
        if !self.is_orphan(id) {
            return false;
        }
        if let Some(uuid) = self.get(id).map(|r| r.uuid) {
            self.orphans.remove(&uuid);
        }
        self.free_slot(id);
        true
    }

    /// Empties the slot `id` for reuse.
    fn free_slot(&mut self, id: AgentId) {
        if let Some(record) = self.slots.get_mut(id).and_then(Option::take) {
            self.drop_name(record.name);
            if let Some(old) = u32::try_from(id).ok().and_then(|k| self.facts.remove(&k)) {
                self.release_facts(old);
            }
            self.free.push(id);
        }
    }

    /// Hands freed capacity back after start-up (the table was sized for the watchlist).
    pub fn shrink_to_fit(&mut self) {
        self.slots.shrink_to_fit();
        self.names.shrink_to_fit();
        self.facts.shrink_to_fit();
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_uuid
            .shrink_to_fit(|&id| uuid_at(slots, id).map_or(0, |u| hasher.hash_one(u)));
        self.unwatched.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
