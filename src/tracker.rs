//! Exactly-once transitions: the last known status of every agent, and the change a new status
//! makes. Pure.
//!
//! A first answer for an agent with no known status is a change from `UNKNOWN`. A status
//! persisted by an earlier run counts as known ([`TransitionTracker::seed`]), so a restart
//! emits nothing for agents whose status did not change. Failed polls never reach the tracker.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use crate::status::UNKNOWN;

/// Statuses stored without an allocation of their own (100k agents mostly share a handful).
const COMMON: [&str; 8] = [
    "COLLECTING",
    "COMPLETE",
    "AGENT_OFFLINE",
    "FAILED",
    "NO_TASK",
    "NOT_FOUND",
    "INVALID",
    UNKNOWN,
];

/// A status string, shared when it is a common one.
pub fn intern(status: &str) -> Cow<'static, str> {
    match COMMON.iter().find(|c| **c == status) {
        Some(c) => Cow::Borrowed(c),
        None => Cow::Owned(status.to_string()),
    }
}

fn interned<'de, D: Deserializer<'de>>(d: D) -> Result<Cow<'static, str>, D::Error> {
    let s = String::deserialize(d)?;
    Ok(match intern(&s) {
        Cow::Borrowed(c) => Cow::Borrowed(c),
        Cow::Owned(_) => Cow::Owned(s),
    })
}

/// Last known status per agent, keyed by the Uuid the engine shares (one allocation each).
pub type KnownMap = HashMap<Arc<str>, Known>;

/// What the tracker knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The last status.
    #[serde(deserialize_with = "interned")]
    pub status: Cow<'static, str>,
    /// RequestId of the answer that said so.
    pub request_id: String,
    /// When it was seen, Unix seconds.
    pub seen_at: i64,
}

/// A change of one agent's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Status before (`UNKNOWN` for a first answer).
    pub from: String,
    /// Status now.
    pub to: String,
}

/// Last known status per Uuid.
#[derive(Debug, Default, Clone)]
pub struct TransitionTracker {
    known: KnownMap,
}

impl TransitionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from statuses known from an earlier run, keeping only the agents `keep` names
    /// (the map is taken over, not copied).
    pub fn from_known(mut known: KnownMap, keep: impl Fn(&str) -> bool) -> Self {
        known.retain(|uuid, _| keep(uuid));
        known.shrink_to_fit();
        TransitionTracker { known }
    }

    /// Seeds a status known from an earlier run.
    pub fn seed(&mut self, uuid: &str, known: Known) {
        self.known.insert(Arc::from(uuid), known);
    }

    /// The tracker's own copy of a Uuid, for others to share instead of allocating one more.
    pub fn shared_uuid(&self, uuid: &str) -> Option<Arc<str>> {
        self.known.get_key_value(uuid).map(|(k, _)| k.clone())
    }

    /// Records a status; returns the transition when it differs from the known one.
    pub fn observe(
        &mut self,
        uuid: &Arc<str>,
        status: &str,
        request_id: &str,
        seen_at: i64,
    ) -> Option<Transition> {
        let record = Known {
            status: intern(status),
            request_id: request_id.to_string(),
            seen_at,
        };
        match self.known.get_mut(&**uuid) {
            Some(known) if known.status == status => {
                known.request_id = record.request_id;
                known.seen_at = seen_at;
                None
            }
            Some(known) => {
                let from = std::mem::replace(known, record).status;
                Some(Transition {
                    from: from.into_owned(),
                    to: status.to_string(),
                })
            }
            None => {
                self.known.insert(uuid.clone(), record);
                Some(Transition {
                    from: UNKNOWN.to_string(),
                    to: status.to_string(),
                })
            }
        }
    }

    /// The last known status, `UNKNOWN` when none.
    pub fn status(&self, uuid: &str) -> &str {
        self.known.get(uuid).map_or(UNKNOWN, |k| &k.status)
    }

    /// Everything known, for the state file.
    pub fn known(&self) -> &KnownMap {
        &self.known
    }

    /// Forgets an agent removed from the watchlist.
    pub fn forget(&mut self, uuid: &str) {
        self.known.remove(uuid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_is_a_change_from_unknown_then_only_changes() {
        let mut t = TransitionTracker::new();
        let u: &Arc<str> = &Arc::from("a");
        assert_eq!(t.status(u), "UNKNOWN");
        let first = t.observe(u, "COLLECTING", "r1", 1).unwrap();
        assert_eq!(
            (first.from.as_str(), first.to.as_str()),
            ("UNKNOWN", "COLLECTING")
        );
        assert_eq!(t.observe(u, "COLLECTING", "r2", 2), None);
        assert_eq!(t.known()[&**u].request_id, "r2");
        let c = t.observe(u, "COMPLETE", "r3", 3).unwrap();
        assert_eq!((c.from.as_str(), c.to.as_str()), ("COLLECTING", "COMPLETE"));
        assert_eq!(t.observe(u, "COMPLETE", "r4", 4), None);
    }

    #[test]
    fn seeded_status_counts_as_known() {
        let mut t = TransitionTracker::new();
        let known = Known {
            status: intern("COMPLETE"),
            request_id: "old".into(),
            seen_at: 0,
        };
        t.seed("a", known.clone());
        t.seed("b", known);
        assert_eq!(t.observe(&Arc::from("a"), "COMPLETE", "r", 1), None);
        let c = t.observe(&Arc::from("b"), "FAILED", "r", 1).unwrap();
        assert_eq!(c.from, "COMPLETE");
        t.forget("a");
        assert_eq!(t.status("a"), "UNKNOWN");
    }
}
