//! Exactly-once transitions: what is known of an agent's status, and the change a new status
//! makes. Pure.
//!
//! A first answer for an agent with no known status is a change from `UNKNOWN`. A status
//! persisted by an earlier run counts as known, so a restart emits nothing for agents whose
//! status did not change. Failed polls never change what is known. The engine keeps each
//! agent's [`Known`] in its agent table (`engine::agents`); [`KnownMap`] is the form the state
//! file is read into.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::agent_uuid::AgentUuid;
use crate::status::Status;

/// Last known status per agent, as read from a state file.
pub type KnownMap = HashMap<AgentUuid, Known>;

/// What is known about one agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Known {
    /// The last status (known ones take no allocation: 100k agents share a handful).
    pub status: Status,
    /// RequestId of the answer that said so.
    pub request_id: RequestId,
    /// When it was seen, Unix seconds.
    pub seen_at: i64,
}

/// A RequestId as it is kept: the API's are lower-case Uuids, kept as their 16 bytes (no
/// allocation); any other text is kept as it is, so it reads back exactly.
#[derive(Clone, PartialEq, Eq)]
pub enum RequestId {
    /// A lower-case 8-4-4-4-12 Uuid.
    Uuid(AgentUuid),
    /// Anything else.
    Text(Box<str>),
}

impl RequestId {
    /// The text, as the API sent it.
    pub fn as_text(&self) -> Cow<'_, str> {
        match self {
            RequestId::Uuid(u) => Cow::Owned(u.text().to_string()),
            RequestId::Text(t) => Cow::Borrowed(t),
        }
    }
}

impl From<&str> for RequestId {
    fn from(text: &str) -> Self {
        match AgentUuid::parse(text) {
            // Upper case would not read back the same: kept as text.
            Ok(u) if *u.text() == *text => RequestId::Uuid(u),
            _ => RequestId::Text(text.into()),
        }
    }
}

impl From<String> for RequestId {
    fn from(text: String) -> Self {
        RequestId::from(text.as_str())
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        self.as_text() == *other
    }
}

impl PartialEq<str> for RequestId {
    fn eq(&self, other: &str) -> bool {
        self.as_text() == other
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestId::Uuid(u) => f.write_str(&u.text()),
            RequestId::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.as_text(), f)
    }
}

/// A plain string, as in every state file so far.
impl Serialize for RequestId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RequestId::Uuid(u) => serializer.serialize_str(&u.text()),
            RequestId::Text(t) => serializer.serialize_str(t),
        }
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        Ok(RequestId::from(&*text))
    }
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
    /// exactly-once.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_answer_is_a_change_from_unknown_then_only_changes() {
        let first = Transition::between(None, &Status::Collecting).unwrap();
        assert_eq!(
            (first.from.as_str(), first.to.as_str()),
            ("UNKNOWN", "COLLECTING")
        );
        assert_eq!(
            Transition::between(Some(&Status::Collecting), &Status::Collecting),
            None
        );
        let c = Transition::between(Some(&Status::Collecting), &Status::Complete).unwrap();
        assert_eq!((c.from.as_str(), c.to.as_str()), ("COLLECTING", "COMPLETE"));
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

    #[test]
    fn request_ids_that_are_uuids_are_kept_as_values_and_read_back_exactly() {
        for text in [
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
            "6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1",
            "r-1",
            "",
        ] {
            let id = RequestId::from(text);
            assert_eq!(id, text);
            assert_eq!(id.to_string(), text);
            let json = serde_json::to_string(&id).unwrap();
            assert_eq!(json, serde_json::to_string(text).unwrap());
            assert_eq!(serde_json::from_str::<RequestId>(&json).unwrap(), id);
        }
        assert!(matches!(
            RequestId::from("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"),
            RequestId::Uuid(_)
        ));
        let id = RequestId::from("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
        assert_ne!(id, "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2");
        assert!(id == *"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1" && id != *"r");
        assert_eq!(
            format!("{id:?}"),
            "\"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\""
        );
        assert_eq!(format!("{:?}", RequestId::from("r\n")), "\"r\\n\"");
        assert!(matches!(
            RequestId::from("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"),
            RequestId::Text(_)
        ));
        assert!(std::mem::size_of::<Known>() <= 48);
    }
}
