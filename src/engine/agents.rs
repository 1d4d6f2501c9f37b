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

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use hashbrown::HashTable;

use tokio::time::Instant;

use crate::agent_uuid::AgentUuid;
use crate::policy::Host;
use crate::scheduler::AgentId;
use crate::status::Status;
use crate::tracker::{Known, KnownMap};
use crate::watchlist::Facts;

/// What this run has seen of one agent's polls: the part of its record that
/// [`super::decide::decide`] reads and rewrites (stored as [`StoredProgress`]).
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
    /// agent's known status).
    pub request_id: Option<String>,
    /// Answered at least once in this run (`once` mode counts them).
    pub polled_once: bool,
    /// `once`: no more polls for this agent (a status, or a final failure).
    pub done_once: bool,
}

/// [`Progress`] as the table keeps it, in 16 bytes: the fields only failing agents (and
/// `once`) use live in a box, and `once`'s two flags in the top bits of `transitions`
/// (which saturates below them).
#[derive(Debug, Default)]
pub(crate) struct StoredProgress {
    failures: u32,
    transitions: u32,
    rare: Option<Box<Rare>>,
}

const POLLED_ONCE: u32 = 1 << 31;
const DONE_ONCE: u32 = 1 << 30;
const TRANSITIONS: u32 = DONE_ONCE - 1;

#[derive(Debug)]
struct Rare {
    last_failed_event: Option<Instant>,
    last_error: Option<String>,
    request_id: Option<String>,
}

impl From<Progress> for StoredProgress {
    fn from(p: Progress) -> Self {
        let rare =
            (p.last_failed_event.is_some() || p.last_error.is_some() || p.request_id.is_some())
                .then(|| {
                    Box::new(Rare {
                        last_failed_event: p.last_failed_event,
                        last_error: p.last_error,
                        request_id: p.request_id,
                    })
                });
        let flags =
            if p.polled_once { POLLED_ONCE } else { 0 } | if p.done_once { DONE_ONCE } else { 0 };
        StoredProgress {
            failures: p.failures,
            transitions: p.transitions.min(TRANSITIONS) | flags,
            rare,
        }
    }
}

impl From<StoredProgress> for Progress {
    fn from(s: StoredProgress) -> Self {
        let (last_failed_event, last_error, request_id) = match s.rare {
            Some(r) => (r.last_failed_event, r.last_error, r.request_id),
            None => (None, None, None),
        };
        Progress {
            failures: s.failures,
            last_failed_event,
            transitions: s.transitions & TRANSITIONS,
            last_error,
            request_id,
            polled_once: s.transitions & POLLED_ONCE != 0,
            done_once: s.transitions & DONE_ONCE != 0,
        }
    }
}

impl StoredProgress {
    /// Status changes seen in this run.
    pub fn transitions(&self) -> u32 {
        self.transitions & TRANSITIONS
    }

    /// Answered at least once in this run.
    pub fn polled_once(&self) -> bool {
        self.transitions & POLLED_ONCE != 0
    }

    /// `once`: no more polls for this agent.
    pub fn done_once(&self) -> bool {
        self.transitions & DONE_ONCE != 0
    }

    /// The error of the last poll, when it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.rare.as_ref()?.last_error.as_deref()
    }

    /// `once`: RequestId of the last answer.
    pub fn request_id(&self) -> Option<&str> {
        self.rare.as_ref()?.request_id.as_deref()
    }
}

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

    /// Sets the host facts of the record under `id` (a reload or a discovery pass brings new
    /// ones); `None` clears them.
    pub fn set_facts(&mut self, id: AgentId, facts: Option<&Arc<Facts>>) {
        let Ok(key) = u32::try_from(id) else {
            return;
        };
        if self.get(id).is_none() {
            return;
        }
        let facts = facts.filter(|f| !f.is_empty());
        if self.facts.get(&key).map(|f| &**f) == facts.map(|f| &**f) {
            return;
        }
        let old = match facts {
            Some(facts) => {
                let shared = match self.facts_pool.get(&**facts) {
                    Some(shared) => Arc::clone(shared),
                    None => {
                        // The table's own copy: the caller's stays the caller's.
                        let own = Arc::new(Facts::clone(facts));
                        self.facts_pool.insert(Arc::clone(&own));
                        own
                    }
                };
                self.facts.insert(key, shared)
            }
            None => self.facts.remove(&key),
        };
        if let Some(old) = old {
            self.release_facts(old);
        }
    }

    /// `old` no longer belongs to a record: out of the pool when no other record has it.
    fn release_facts(&mut self, old: Arc<Facts>) {
        // This one and the pool's.
        if Arc::strong_count(&old) <= 2 {
            self.facts_pool.remove(&*old);
        }
    }

    /// The host facts of the record under `id`, when it has any.
    pub fn facts(&self, id: AgentId) -> Option<&Facts> {
        self.facts.get(&u32::try_from(id).ok()?).map(|f| &**f)
    }

    /// What the expected-ports policy knows of the agent under `id` (orphans included):
    /// its Uuid, its name ("" when none), `account`, and its facts, lent to `f`; `None` when
    /// there is no such record.
    ///
    /// Why lent and not returned: [`Host::uuid`] is text, and a record keeps its Uuid as the
    /// 16-byte value (text for 100,000 agents would add 3.6 MB); the text is made on the stack
    /// here, for the time of `f`.
    pub fn with_host<R>(
        &self,
        id: AgentId,
        account: &str,
        f: impl FnOnce(&Host<'_>) -> R,
    ) -> Option<R> {
        let record = self.get(id)?;
        let facts = self.facts(id);
        let uuid = record.uuid.text();
        let host = Host {
            uuid: uuid.as_str(),
            name: name_in(&self.names, record.name),
            account,
            tags: facts.map_or(&[], Facts::tags),
            region: facts.and_then(Facts::region).unwrap_or(""),
            wan: facts.is_some_and(Facts::wan),
        };
        Some(f(&host))
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
mod tests {
    use super::*;

    fn u(i: u128) -> AgentUuid {
        AgentUuid::from_value(i)
    }

    fn known(status: Status) -> Known {
        Known {
            status,
            request_id: "r".into(),
            seen_at: 1,
        }
    }

    #[test]
    fn freed_ids_are_reused_and_orphans_keep_theirs_until_the_answer() {
        let mut t = AgentTable::with_capacity(64);
        // Sized for the watchlist at once: no growth while 100,000 agents are put in.
        assert!(t.slots.capacity() >= 64 && t.by_uuid.capacity() >= 64);
        let a = t.insert(u(1), "");
        let b = t.insert(u(2), "web");
        assert_eq!((a, b), (0, 1));
        assert!(t.contains(&u(1)) && t.contains(&u(2)) && !t.contains(&u(3)));
        assert_eq!((t.id_of(&u(2)), t.id_of(&u(3))), (Some(1), None));
        assert_eq!(t.remove(&u(1), false), Some(0));
        assert_eq!(t.insert(u(3), ""), 0, "a's id reused");
        // b removed while in flight: an orphan, not watched, not reported, id kept.
        assert_eq!(t.remove(&u(2), true), Some(1));
        assert!(!t.contains(&u(2)));
        assert_eq!(t.len(), 1);
        assert_eq!(t.records().count(), 1);
        assert_eq!(t.insert(u(4), ""), 2, "an orphan's id is not free");
        // Back before its answer: same id, new name.
        assert_eq!(t.readopt(&u(2), "web-2"), Some(1));
        assert_eq!(t.name(1), "web-2");
        assert!(!t.release_orphan(1), "watched again: the answer is its own");
        // Gone again; the answer frees the id.
        t.remove(&u(2), true);
        assert!(t.release_orphan(1));
        assert!(t.get(1).is_none());
        assert_eq!(t.insert(u(5), ""), 1);
    }

    #[test]
    fn known_statuses_live_in_the_records_and_unwatched_ones_wait() {
        let mut t = AgentTable::default();
        let a = t.insert(u(1), "");
        assert_eq!(t.get(a).unwrap().status(), &Status::Unknown);
        // A watched agent takes a seeded status when it has none, and keeps its own.
        t.seed(u(1), known(Status::Collecting));
        t.seed(u(1), known(Status::Failed));
        assert_eq!(t.get(a).unwrap().status(), &Status::Collecting);
        // An unwatched one is kept, saved, and taken over when the agent is added.
        t.seed(u(9), known(Status::Complete));
        assert_eq!(t.known().count(), 2);
        assert!(t.known_of(&u(9)).is_none(), "not watched");
        let b = t.insert(u(9), "");
        assert_eq!(t.get(b).unwrap().status(), &Status::Complete);
        assert_eq!(t.known().count(), 2);
        // Removal forgets, in flight or not.
        t.remove(&u(1), true);
        assert_eq!(t.known().map(|(u, _)| u).collect::<Vec<_>>(), [u(9)]);
        assert_eq!(t.readopt(&u(1), ""), Some(a));
        assert_eq!(t.get(a).unwrap().status(), &Status::Unknown);
        // Only unwatched statuses can be forgotten that way.
        t.seed(u(7), known(Status::Failed));
        assert!(!t.forget_unwatched(&u(9)));
        assert!(t.forget_unwatched(&u(7)));
        assert!(!t.forget_unwatched(&u(7)));
        // seed_watched gives back what it cannot place.
        assert!(t.seed_watched(u(8), known(Status::Failed)).is_some());
        assert!(t.seed_watched(u(1), known(Status::Failed)).is_none());
        assert_eq!(
            t.known_of(&u(9)).map(|k| &k.status),
            Some(&Status::Complete)
        );
        assert_eq!(t.known_of(&u(1)).map(|k| &k.status), Some(&Status::Failed));
        assert_eq!(t.known_of(&u(8)), None, "not watched");
        let mut copy = t.known_copy();
        copy.sort_by_key(|(u, _)| *u);
        let mut known: Vec<(AgentUuid, Known)> = t.known().map(|(u, k)| (u, k.clone())).collect();
        known.sort_by_key(|(u, _)| *u);
        assert_eq!(copy, known);
        assert_eq!(copy.len(), 2, "agent 9, and agent 1's seed_watched status");
        t.forget_all_known();
        assert_eq!(t.known().count(), 0);
    }

    #[test]
    fn progress_round_trips_and_boxes_only_what_failing_agents_use() {
        let ok = Progress {
            failures: 0,
            transitions: 3,
            polled_once: true,
            ..Progress::default()
        };
        let stored = StoredProgress::from(ok.clone());
        assert!(stored.rare.is_none());
        assert_eq!(Progress::from(stored), ok);
        let failing = Progress {
            failures: 2,
            last_error: Some("InternalError: m".into()),
            request_id: Some("r".into()),
            last_failed_event: Some(Instant::now()),
            ..ok
        };
        // Any one of the rare fields is kept.
        for one in [
            Progress {
                last_error: Some("e".into()),
                ..Progress::default()
            },
            Progress {
                request_id: Some("r".into()),
                ..Progress::default()
            },
            Progress {
                last_failed_event: Some(Instant::now()),
                ..Progress::default()
            },
        ] {
            assert_eq!(Progress::from(StoredProgress::from(one.clone())), one);
        }
        let stored = StoredProgress::from(failing.clone());
        assert_eq!(stored.last_error(), Some("InternalError: m"));
        assert_eq!(stored.request_id(), Some("r"));
        assert_eq!(
            (
                stored.transitions(),
                stored.polled_once(),
                stored.done_once()
            ),
            (3, true, false)
        );
        assert_eq!(Progress::from(stored), failing);
        assert_eq!(std::mem::size_of::<StoredProgress>(), 16);
        // Flags and a huge count do not bleed into each other.
        let many = Progress {
            transitions: u32::MAX,
            done_once: true,
            ..Progress::default()
        };
        let stored = StoredProgress::from(many);
        assert!(stored.done_once() && !stored.polled_once());
        let back = Progress::from(stored);
        assert_eq!(
            (back.transitions, back.polled_once, back.done_once),
            (TRANSITIONS, false, true)
        );
        assert!(
            std::mem::size_of::<AgentRecord>() <= 88,
            "{}",
            std::mem::size_of::<AgentRecord>()
        );
    }

    fn facts(tags: &[&str], region: Option<&str>, wan: bool) -> Option<Arc<Facts>> {
        Facts::new(tags.iter().copied(), region.map(Into::into), wan).shared()
    }

    /// What the policy sees of an agent: its Uuid's text, name, account and facts; facts in a
    /// side map shared from a pool, updated and dropped with the agent.
    #[test]
    fn hosts_carry_name_uuid_account_and_facts_shared_and_released() {
        let mut t = AgentTable::default();
        let a = t.insert(u(1), "web-01");
        let b = t.insert(u(2), "");
        let c = t.insert(u(3), "web-03");
        let seen = |t: &AgentTable, id| {
            t.with_host(id, "prod", |h| {
                let tags: Vec<String> = h.tags.iter().map(|t| t.to_string()).collect();
                (
                    h.uuid.to_owned(),
                    h.name.to_owned(),
                    h.account.to_owned(),
                    tags,
                    h.region.to_owned(),
                    h.wan,
                )
            })
        };
        assert_eq!(
            seen(&t, a).unwrap(),
            (
                "00000000-0000-0000-0000-000000000001".to_owned(),
                "web-01".to_owned(),
                "prod".to_owned(),
                vec![],
                String::new(),
                false
            )
        );
        assert_eq!(seen(&t, b).unwrap().1, "", "no name");
        assert_eq!(seen(&t, 99), None);

        // Two agents with equal facts (separate allocations) share the table's one copy.
        t.set_facts(
            a,
            facts(&["web", "prod"], Some("ap-guangzhou"), true).as_ref(),
        );
        t.set_facts(
            c,
            facts(&["prod", "web"], Some("ap-guangzhou"), true).as_ref(),
        );
        let (_, _, _, tags, region, wan) = seen(&t, a).unwrap();
        assert_eq!(
            (tags, region.as_str(), wan),
            (
                vec!["prod".to_owned(), "web".to_owned()],
                "ap-guangzhou",
                true
            )
        );
        assert_eq!(t.facts_pool.len(), 1);
        assert!(Arc::ptr_eq(&t.facts[&0], &t.facts[&2]));
        assert!(t.facts(b).is_none() && t.facts.len() == 2);

        // New facts replace the old; the old set leaves the pool with its last agent.
        t.set_facts(a, facts(&["db"], None, false).as_ref());
        assert_eq!(seen(&t, a).unwrap().3, ["db"]);
        assert_eq!(t.facts_pool.len(), 2);
        t.set_facts(c, None);
        assert_eq!(seen(&t, c).unwrap().3, Vec::<String>::new());
        assert_eq!(t.facts_pool.len(), 1, "web/prod is no one's any more");
        // Empty facts are none.
        t.set_facts(b, Some(&Arc::new(Facts::default())));
        assert!(t.facts(b).is_none());

        // An orphan keeps its facts until its slot is freed; a reused id starts without.
        t.remove(&u(1), true);
        assert_eq!(seen(&t, a).unwrap().3, ["db"]);
        assert!(t.release_orphan(a));
        assert!(t.facts.is_empty() && t.facts_pool.is_empty());
        let d = t.insert(u(4), "new");
        assert_eq!(d, a, "the freed id");
        assert_eq!(seen(&t, d).unwrap().3, Vec::<String>::new());
        // A removed agent (not in flight) drops them at once; set_facts on no record is a no-op.
        t.set_facts(d, facts(&["x"], None, false).as_ref());
        t.remove(&u(4), false);
        assert!(t.facts.is_empty() && t.facts_pool.is_empty());
        t.set_facts(d, facts(&["x"], None, false).as_ref());
        assert!(t.facts.is_empty());
        // The record itself did not grow.
        assert!(std::mem::size_of::<AgentRecord>() <= 88);
    }

    #[test]
    fn names_live_in_one_buffer_rebuilt_when_mostly_unused() {
        let mut t = AgentTable::default();
        let long = "n".repeat(200);
        let ids: Vec<AgentId> = (0..100)
            .map(|i| t.insert(u(i), &format!("{long}{i}")))
            .collect();
        let empty = t.insert(u(1000), "");
        assert_eq!(t.name(empty), "");
        assert_eq!(t.name(ids[7]), format!("{long}7"));
        let full = t.names.len();
        // Renaming to the same name keeps the bytes; a new name appends.
        t.rename(ids[7], &format!("{long}7"));
        assert_eq!(t.names.len(), full);
        t.rename(ids[7], "web");
        assert_eq!(t.name(ids[7]), "web");
        // Removing agents leaves their bytes until they are more than half of the buffer
        // (and more than 4 KiB); then the buffer is rebuilt with the live names only.
        let mut i = 99;
        while t.names_unused + 203 <= t.names.len() / 2 {
            t.remove(&u(i), false);
            i -= 1;
        }
        let before = t.names.len();
        assert_eq!(before, full + 3, "nothing rebuilt at half or less");
        t.remove(&u(i), false);
        assert!(t.names.len() < before / 2, "{} of {before}", t.names.len());
        assert_eq!(t.names_unused, 0);
        for i in 10..i {
            t.remove(&u(i), false);
        }
        assert!(t.names.len() < full / 2, "{} of {full}", t.names.len());
        // A small buffer is never rebuilt: 4 KiB unused is not worth a pass.
        let mut small = AgentTable::default();
        let a = small.insert(u(1), "a");
        small.insert(u(2), "b");
        small.rename(a, "c");
        small.rename(a, "d");
        assert_eq!((small.names.as_str(), small.names_unused), ("abcd", 2));
        for (i, &id) in ids.iter().enumerate().take(10) {
            let want = if i == 7 {
                "web".to_string()
            } else {
                format!("{long}{i}")
            };
            assert_eq!(t.name(id), want);
        }
        // An orphan keeps its name until readopted under a new one.
        t.remove(&u(3), true);
        assert_eq!(t.name(ids[3]), format!("{long}3"));
        t.readopt(&u(3), "back");
        assert_eq!(t.name(ids[3]), "back");
        let named: Vec<&str> = t.named_records().map(|(_, n)| n).take(2).collect();
        assert_eq!(named[0], format!("{long}0"));
    }
}
