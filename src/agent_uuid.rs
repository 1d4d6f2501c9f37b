//! [`AgentUuid`]: a CWP agent Uuid, validated once where it enters the program (the watchlist)
//! and carried as a type from then on, so no later code has to wonder whether a string was
//! checked or normalised.
//!
//! The rule ([`is_valid`]) is the one place that says what an agent Uuid looks like; the
//! watchlist and the simulator's scenario both use it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Arc;

/// A CWP agent Uuid: 8-4-4-4-12 hex digits, lower case.
///
/// Lower case because the console shows Uuids in either case while the API answers in lower
/// case: normalising once makes both name the same agent everywhere (maps, logs, state file).
///
/// Wraps an `Arc<str>`: cloning is a reference-count increment, and [`AgentUuid::to_arc`]
/// lets tables keyed by `Arc<str>` share the watchlist's allocation instead of copying 100,000
/// strings. It derefs to `str` and hashes like one (`Borrow<str>`), so maps keyed by it can be
/// queried with a `&str`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentUuid(Arc<str>);

/// The text is not an agent Uuid. Shows at most 60 characters of it, so a huge value cannot
/// flood a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{shown} is not an agent Uuid: write 8-4-4-4-12 hex digits, e.g. 6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
)]
pub struct InvalidAgentUuid {
    shown: String,
}

/// `true` for 8-4-4-4-12 hex digits with dashes, in any case (`6B6CD843-6bc1-...`); no braces,
/// no `urn:uuid:` prefix, no surrounding spaces.
pub fn is_valid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

impl AgentUuid {
    /// Checks `text` with [`is_valid`] and lower-cases it.
    pub fn parse(text: &str) -> Result<AgentUuid, InvalidAgentUuid> {
        if !is_valid(text) {
            return Err(InvalidAgentUuid {
                shown: crate::problems::shown(text),
            });
        }
        Ok(AgentUuid(Arc::from(text.to_ascii_lowercase())))
    }

    /// The Uuid, lower case.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 128-bit value: equal for two spellings of the same Uuid, and a compact key for
    /// duplicate detection over a large watchlist.
    pub fn value(&self) -> u128 {
        self.0
            .bytes()
            .filter(|&b| b != b'-')
            .fold(0u128, |acc, b| acc << 4 | u128::from(hex_digit(b)))
    }

    /// The shared string, for tables keyed by `Arc<str>` (no copy).
    pub fn to_arc(&self) -> Arc<str> {
        Arc::clone(&self.0)
    }
}

/// The value of a hex digit; only called on text [`is_valid`] accepted.
fn hex_digit(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0,
    }
}

impl FromStr for AgentUuid {
    type Err = InvalidAgentUuid;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        AgentUuid::parse(text)
    }
}

impl TryFrom<&str> for AgentUuid {
    type Error = InvalidAgentUuid;

    fn try_from(text: &str) -> Result<Self, Self::Error> {
        AgentUuid::parse(text)
    }
}

impl TryFrom<String> for AgentUuid {
    type Error = InvalidAgentUuid;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        AgentUuid::parse(&text)
    }
}

impl Deref for AgentUuid {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for AgentUuid {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for AgentUuid {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<AgentUuid> for Arc<str> {
    fn from(uuid: AgentUuid) -> Arc<str> {
        uuid.0
    }
}

impl From<AgentUuid> for String {
    fn from(uuid: AgentUuid) -> String {
        uuid.0.to_string()
    }
}

impl fmt::Display for AgentUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// As the string's `Debug` (quoted), the way the `String` it replaces printed.
impl fmt::Debug for AgentUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl PartialEq<str> for AgentUuid {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for AgentUuid {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

impl PartialEq<String> for AgentUuid {
    fn eq(&self, other: &String) -> bool {
        *self.0 == **other
    }
}

/// A plain string, as before it was typed (JSON events, state file).
impl serde::Serialize for AgentUuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Validated like [`AgentUuid::parse`].
impl<'de> serde::Deserialize<'de> for AgentUuid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        AgentUuid::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn shape() {
        assert!(is_valid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(is_valid("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"));
        for bad in [
            "",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1a",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1-",
            "6b6cd8436bc14011a74cdc3fd26a7dd1",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dg1",
            "6b6cd843_6bc1-4011-a74c-dc3fd26a7dd1",
            "6b6cd843x6bc1-4011-a74c-dc3fd26a7dd1",
            "g b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
            " 6b6cd843-6bc1-4011-a74c-dc3fd26a7dd",
            "{6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1}",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dé",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
            assert!(AgentUuid::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_lower_cases_and_keeps_the_value() {
        let upper = AgentUuid::parse("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1").unwrap();
        let lower: AgentUuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.as_str(), "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
        assert_eq!(upper.value(), 0x6b6cd8436bc14011a74cdc3fd26a7dd1);
        assert_eq!(format!("{upper}"), upper.as_str());
        assert_eq!(format!("{upper:?}"), format!("{:?}", upper.as_str()));
        assert_eq!(
            serde_json::to_string(&upper).unwrap(),
            "\"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\""
        );
        let back: AgentUuid =
            serde_json::from_str("\"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"").unwrap();
        assert_eq!(back, upper);
        assert!(serde_json::from_str::<AgentUuid>("\"web-01\"").is_err());
    }

    #[test]
    fn works_as_a_str_key() {
        let uuid = AgentUuid::parse("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1").unwrap();
        let map: HashMap<AgentUuid, u32> = [(uuid.clone(), 7)].into();
        assert_eq!(map.get("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"), Some(&7));
        assert!(uuid.starts_with("6b6c"));
        assert!(Arc::ptr_eq(&uuid.to_arc(), &Arc::<str>::from(uuid.clone())));
    }

    #[test]
    fn error_message_is_short() {
        let error = AgentUuid::parse(&"x".repeat(10_000)).unwrap_err();
        assert!(error.to_string().len() < 200, "{error}");
        assert!(error.to_string().contains("8-4-4-4-12"));
    }

    proptest! {
        /// Every well-formed Uuid, in any mix of cases, parses to its lower-case form, and its
        /// value prints back to the same text.
        #[test]
        fn well_formed_uuids_parse(text in "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}") {
            let uuid = AgentUuid::parse(&text).unwrap();
            prop_assert_eq!(uuid.as_str(), text.to_ascii_lowercase());
            let hex = format!("{:032x}", uuid.value());
            let printed = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
            prop_assert_eq!(printed, uuid.as_str());
        }

        /// Any other text: never panics, and whatever is accepted round-trips through its value
        /// (so nothing but 32 hex digits in the 8-4-4-4-12 layout gets in).
        #[test]
        fn anything_else_is_rejected_or_round_trips(text in ".{0,40}") {
            if let Ok(uuid) = AgentUuid::parse(&text) {
                let hex = format!("{:032x}", uuid.value());
                let printed = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
                prop_assert_eq!(printed, text.to_ascii_lowercase());
            }
        }

        /// One changed character in a valid Uuid that breaks the layout is always rejected.
        #[test]
        fn a_broken_layout_is_rejected(
            text in "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}",
            at in 0usize..36,
            with in "[g-z_ {}]",
        ) {
            let mut broken = text.clone();
            broken.replace_range(at..at + 1, &with);
            prop_assert!(AgentUuid::parse(&broken).is_err(), "{}", broken);
        }
    }
}
