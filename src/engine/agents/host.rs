//! The table's host facts (tags, region, WAN): a side map for the agents that have any, its
//! values shared from a pool, and the [`Host`] view the expected-ports policy selects on.

use std::sync::Arc;

use super::{AgentTable, name_in};
use crate::policy::Host;
use crate::scheduler::AgentId;
use crate::watchlist::Facts;

impl AgentTable {
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
    pub(super) fn release_facts(&mut self, old: Arc<Facts>) {
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
}
