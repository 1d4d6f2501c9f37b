//! Exactly-once transitions: the last known status of every agent, and the change a new status
//! makes. Pure.
//!
//! A first answer for an agent with no known status is a change from `UNKNOWN`. A status
//! persisted by an earlier run counts as known ([`TransitionTracker::seed`]), so a restart
//! emits nothing for agents whose status did not change. Failed polls never reach the tracker.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::status::Status;

/// Last known status per agent, keyed by the Uuid the engine shares (one allocation each).
pub type KnownMap = HashMap<Arc<str>, Known>;

/// What the tracker knows about one agent.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The last status (known ones take no allocation: 100k agents share a handful).
    pub status: Status,
    /// RequestId of the answer that said so.
    pub request_id: String,
    /// When it was seen, Unix seconds.
    pub seen_at: i64,
}

/// A change of one agent's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Status before (`UNKNOWN` for a first answer).
    pub from: Status,
    /// Status now.
    pub to: Status,
}

impl Transition {
    /// The change `now` makes to what was known (`None`: nothing known yet). The one rule of
    /// exactly-once, shared by the tracker and the engine's `decide`.
    pub fn between(known: Option<&Status>, now: &Status) -> Option<Transition> {
        match known {
            Some(k) if k == now => None,
            k => Some(Transition {
                from: k.cloned().unwrap_or_default(),
                to: now.clone(),
            }),
        }
    }
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
        status: &Status,
        request_id: &str,
        seen_at: i64,
    ) -> Option<Transition> {
        let transition = Transition::between(self.current(uuid), status);
        self.record(uuid, status.clone(), request_id.to_string(), seen_at);
        transition
    }

    /// Stores what an answer said, whether or not it was a change (the caller decided that
    /// with [`Transition::between`]).
    pub fn record(&mut self, uuid: &Arc<str>, status: Status, request_id: String, seen_at: i64) {
        let record = Known {
            status,
            request_id,
            seen_at,
        };
        match self.known.get_mut(&**uuid) {
            Some(known) => *known = record,
            None => {
                self.known.insert(uuid.clone(), record);
            }
        }
    }

    /// The last known status, if any.
    pub fn current(&self, uuid: &str) -> Option<&Status> {
        self.known.get(uuid).map(|k| &k.status)
    }

    /// The last known status, `UNKNOWN` when none.
    pub fn status(&self, uuid: &str) -> &Status {
        static UNKNOWN: Status = Status::Unknown;
        self.current(uuid).unwrap_or(&UNKNOWN)
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
        let first = t.observe(u, &Status::Collecting, "r1", 1).unwrap();
        assert_eq!(
            (first.from.as_str(), first.to.as_str()),
            ("UNKNOWN", "COLLECTING")
        );
        assert_eq!(t.observe(u, &Status::Collecting, "r2", 2), None);
        assert_eq!(t.known()[&**u].request_id, "r2");
        let c = t.observe(u, &Status::Complete, "r3", 3).unwrap();
        assert_eq!((c.from.as_str(), c.to.as_str()), ("COLLECTING", "COMPLETE"));
        assert_eq!(t.observe(u, &Status::Complete, "r4", 4), None);
    }

    #[test]
    fn seeded_status_counts_as_known() {
        let mut t = TransitionTracker::new();
        let known = Known {
            status: Status::Complete,
            request_id: "old".into(),
            seen_at: 0,
        };
        t.seed("a", known.clone());
        t.seed("b", known);
        assert_eq!(t.observe(&Arc::from("a"), &Status::Complete, "r", 1), None);
        let c = t.observe(&Arc::from("b"), &Status::Failed, "r", 1).unwrap();
        assert_eq!(c.from, Status::Complete);
        t.forget("a");
        assert_eq!(t.status("a"), "UNKNOWN");
    }

    #[test]
    fn from_known_keeps_only_the_watched_and_shares_their_uuids() {
        let known = |status: Status| Known {
            status,
            request_id: "old".into(),
            seen_at: 5,
        };
        let map: KnownMap = [
            (Arc::from("a"), known(Status::Complete)),
            (Arc::from("b"), known(Status::Failed)),
        ]
        .into_iter()
        .collect();
        let mut t = TransitionTracker::from_known(map, |u| u == "a");
        assert_eq!(t.known().len(), 1);
        assert_eq!(t.current("a"), Some(&Status::Complete));
        assert_eq!(t.current("b"), None);
        assert_eq!(t.status("b"), "UNKNOWN");
        let shared = t.shared_uuid("a").expect("a is known");
        assert_eq!(&*shared, "a");
        assert!(Arc::ptr_eq(
            &shared,
            t.known().get_key_value("a").unwrap().0
        ));
        assert_eq!(t.shared_uuid("b"), None);
        // Recording keeps what the answer said, change or not.
        t.record(&shared, Status::Complete, "r9".into(), 9);
        assert_eq!(
            t.known()["a"],
            Known {
                status: Status::Complete,
                request_id: "r9".into(),
                seen_at: 9
            }
        );
        t.record(&Arc::from("c"), Status::Collecting, "r10".into(), 10);
        assert_eq!(t.current("c"), Some(&Status::Collecting));
        assert_eq!(t.known()["c"].seen_at, 10);
    }

    #[test]
    fn state_entries_read_and_write_as_before() {
        // The state file's agent entries: the same JSON as when statuses were strings.
        let json = r#"{"status":"COLLECTING","request_id":"r","seen_at":7}"#;
        let k: Known = serde_json::from_str(json).unwrap();
        assert_eq!(k.status, Status::Collecting);
        assert_eq!(serde_json::to_string(&k).unwrap(), json);
        let odd = r#"{"status":"SOMETHING_NEW","request_id":"r","seen_at":7}"#;
        let k: Known = serde_json::from_str(odd).unwrap();
        assert_eq!(k.status, "SOMETHING_NEW");
        assert_eq!(serde_json::to_string(&k).unwrap(), odd);
    }
}
