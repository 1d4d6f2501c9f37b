//! The state file's JSON shape: `{"version": 1, "agents": {uuid: entry}}`, read entry by
//! entry ([`FileIn`]) and written from borrowed entries ([`FileOut`]).

use serde::{Deserialize, Serialize};

use crate::agent_uuid::AgentUuid;
use crate::tracker::Known;

/// What is read, as a [`serde::de::DeserializeSeed`]: each agent's entry goes to `each` as
/// soon as it is parsed (straight into the engine's table: no map of 100k agents while
/// loading). The file's `version`; keys that are not agent Uuids are skipped (no build wrote
/// them; an agent not watched is forgotten anyway).
pub(super) struct FileIn<'f> {
    pub(super) each: &'f mut dyn FnMut(AgentUuid, Known),
}

const FIELDS: &[&str] = &["version", "agents"];

impl<'de> serde::de::DeserializeSeed<'de> for FileIn<'_> {
    type Value = u32;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_struct("StateFile", FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for FileIn<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a state file: an object with version and agents")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u32, A::Error> {
        use serde::de::Error;
        let each = self.each;
        let (mut version, mut agents) = (None, false);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "version" if version.is_none() => version = Some(map.next_value::<u32>()?),
                "agents" if !agents => {
                    agents = true;
                    map.next_value_seed(Agents { each: &mut *each })?;
                }
                "version" | "agents" => {
                    return Err(A::Error::custom(format!("duplicate field `{key}`")));
                }
                other => return Err(A::Error::unknown_field(other, FIELDS)),
            }
        }
        if !agents {
            return Err(A::Error::missing_field("agents"));
        }
        version.ok_or_else(|| A::Error::missing_field("version"))
    }
}

/// The `agents` object of [`FileIn`].
struct Agents<'f> {
    each: &'f mut dyn FnMut(AgentUuid, Known),
}

impl<'de> serde::de::DeserializeSeed<'de> for Agents<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Agents<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of agent Uuid → status")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(MaybeUuid(uuid)) = map.next_key()? {
            let known: Known = map.next_value()?;
            if let Some(uuid) = uuid {
                (self.each)(uuid, known);
            }
        }
        Ok(())
    }
}

/// A key that may be an agent Uuid: parsed from the parser's buffer, no string allocated.
struct MaybeUuid(Option<AgentUuid>);

impl<'de> Deserialize<'de> for MaybeUuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MaybeUuid;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an agent Uuid")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MaybeUuid, E> {
                Ok(MaybeUuid(AgentUuid::parse(text).ok()))
            }
        }
        d.deserialize_str(V)
    }
}

/// What is written: borrowed entries, serialized as they are iterated (saving copies
/// nothing).
#[derive(Serialize)]
#[serde(bound(serialize = "Entries<'a, I>: Serialize"))]
pub(super) struct FileOut<'a, I> {
    pub(super) version: u32,
    pub(super) agents: Entries<'a, I>,
}

/// The entries of [`FileOut`], taken once by `serialize`.
pub(super) struct Entries<'a, I>(
    pub(super) std::cell::RefCell<Option<I>>,
    pub(super) std::marker::PhantomData<&'a Known>,
);

impl<'a, I: Iterator<Item = (AgentUuid, &'a Known)>> Serialize for Entries<'a, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.0.borrow_mut().take();
        s.collect_map(entries.into_iter().flatten())
    }
}
