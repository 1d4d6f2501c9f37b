//! Exactly-once transitions: the last known status of every agent, and the change a new status
//! makes. Pure.
//!
//! A first answer for an agent with no known status is a change from `UNKNOWN`. A status
//! persisted by an earlier run counts as known ([`TransitionTracker::seed`]), so a restart
//! emits nothing for agents whose status did not change. Failed polls never reach the tracker.

use std::collections::HashMap;

use crate::status::UNKNOWN;

/// What the tracker knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// The last status.
    pub status: String,
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
    known: HashMap<String, Known>,
}

impl TransitionTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Seeds a status known from an earlier run.
    pub fn seed(&mut self, uuid: &str, known: Known) {
        self.known.insert(uuid.to_string(), known);
    }

    /// Records a status; returns the transition when it differs from the known one.
    pub fn observe(
        &mut self,
        uuid: &str,
        status: &str,
        request_id: &str,
        seen_at: i64,
    ) -> Option<Transition> {
        let record = Known {
            status: status.to_string(),
            request_id: request_id.to_string(),
            seen_at,
        };
        match self.known.get_mut(uuid) {
            Some(known) if known.status == status => {
                known.request_id = record.request_id;
                known.seen_at = seen_at;
                None
            }
            Some(known) => {
                let from = std::mem::replace(known, record).status;
                Some(Transition {
                    from,
                    to: status.to_string(),
                })
            }
            None => {
                self.known.insert(uuid.to_string(), record);
                Some(Transition {
                    from: UNKNOWN.to_string(),
                    to: status.to_string(),
                })
            }
        }
    }

    /// The last known status, `UNKNOWN` when none.
    pub fn status(&self, uuid: &str) -> &str {
        self.known.get(uuid).map_or(UNKNOWN, |k| k.status.as_str())
    }

    /// Everything known, for the state file.
    pub fn known(&self) -> &HashMap<String, Known> {
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
        let u = "a";
        assert_eq!(t.status(u), "UNKNOWN");
        let first = t.observe(u, "COLLECTING", "r1", 1).unwrap();
        assert_eq!(
            (first.from.as_str(), first.to.as_str()),
            ("UNKNOWN", "COLLECTING")
        );
        assert_eq!(t.observe(u, "COLLECTING", "r2", 2), None);
        assert_eq!(t.known()[u].request_id, "r2");
        let c = t.observe(u, "COMPLETE", "r3", 3).unwrap();
        assert_eq!((c.from.as_str(), c.to.as_str()), ("COLLECTING", "COMPLETE"));
        assert_eq!(t.observe(u, "COMPLETE", "r4", 4), None);
    }

    #[test]
    fn seeded_status_counts_as_known() {
        let mut t = TransitionTracker::new();
        let known = Known {
            status: "COMPLETE".into(),
            request_id: "old".into(),
            seen_at: 0,
        };
        t.seed("a", known.clone());
        t.seed("b", known);
        assert_eq!(t.observe("a", "COMPLETE", "r", 1), None);
        let c = t.observe("b", "FAILED", "r", 1).unwrap();
        assert_eq!(c.from, "COMPLETE");
        t.forget("a");
        assert_eq!(t.status("a"), "UNKNOWN");
    }
}
