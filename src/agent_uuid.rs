//! [`AgentUuid`]: a CWP agent Uuid, validated once where it enters the program (the watchlist)
//! and carried as a type from then on, so no later code has to wonder whether a string was
//! checked or normalised.
//!
//! The rule ([`is_valid`]) is the one place that says what an agent Uuid looks like; the
//! watchlist and the simulator's scenario both use it.

use std::fmt;
use std::ops::Deref;
use std::str::FromStr;

/// A CWP agent Uuid: 8-4-4-4-12 hex digits, shown in lower case.
///
/// Lower case because the console shows Uuids in either case while the API answers in lower
/// case: normalising once makes both name the same agent everywhere (maps, logs, state file).
///
/// Kept as its 128-bit value (16 bytes, `Copy`, no allocation): at 100,000 agents a string per
/// Uuid (and one per table that keys on it) was a large part of the daemon's memory. The text
/// is made on demand with [`AgentUuid::text`], a stack value that derefs to `str`. Ordering is
/// the value's, which is also the lower-case text's order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AgentUuid([u8; 16]);

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
    /// Checks `text` with [`is_valid`]; the value is the same for any mix of cases.
    pub fn parse(text: &str) -> Result<AgentUuid, InvalidAgentUuid> {
        if !is_valid(text) {
            return Err(InvalidAgentUuid {
                shown: crate::problems::shown(text),
            });
        }
        let value = text
            .bytes()
            .filter(|&b| b != b'-')
            .fold(0u128, |acc, b| acc << 4 | u128::from(hex_digit(b)));
        Ok(AgentUuid(value.to_be_bytes()))
    }

    /// The Uuid from its 128-bit value.
    pub fn from_value(value: u128) -> AgentUuid {
        AgentUuid(value.to_be_bytes())
    }

    /// The 128-bit value: equal for two spellings of the same Uuid.
    pub fn value(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// The lower-case text, on the stack.
    pub fn text(&self) -> UuidText {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            out[at] = HEX[usize::from(byte >> 4)];
            out[at + 1] = HEX[usize::from(byte & 0x0f)];
            at += 2;
        }
        UuidText(out)
    }
}

/// An agent Uuid's lower-case text (36 bytes, no allocation); derefs to `str`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UuidText([u8; 36]);

impl UuidText {
    /// The text.
    pub fn as_str(&self) -> &str {
        // Only `AgentUuid::text` builds one, from ASCII hex digits and dashes.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl Deref for UuidText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self)
    }
}

impl fmt::Debug for UuidText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
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

impl From<AgentUuid> for String {
    fn from(uuid: AgentUuid) -> String {
        uuid.text().to_string()
    }
}

impl fmt::Display for AgentUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

/// As the string's `Debug` (quoted), the way the `String` it replaces printed.
impl fmt::Debug for AgentUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text(), f)
    }
}

/// Text equal to the Uuid's lower-case form.
impl PartialEq<str> for AgentUuid {
    fn eq(&self, other: &str) -> bool {
        *self.text() == *other
    }
}

impl PartialEq<&str> for AgentUuid {
    fn eq(&self, other: &&str) -> bool {
        *self.text() == **other
    }
}

impl PartialEq<String> for AgentUuid {
    fn eq(&self, other: &String) -> bool {
        *self.text() == **other
    }
}

/// A plain string, as before it was typed (JSON events, state file).
impl serde::Serialize for AgentUuid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text())
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

    /// The simulator (its own crate) writes the rule out instead of depending on the daemon: a
    /// scenario must accept exactly the Uuids a watchlist accepts, or a test agent could exist
    /// on one side only.
    #[test]
    fn the_simulator_accepts_exactly_the_watchlists_uuids() {
        let mut cases = vec![
            String::new(),
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".to_owned(),
            "6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1".to_owned(),
            "6b6cd8436bc14011a74cdc3fd26a7dd1".to_owned(),
            "{6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1}".to_owned(),
        ];
        // Every byte at every position of a valid Uuid: dashes, hex digits, neighbours.
        let valid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
        for at in 0..valid.len() {
            for c in [
                '-', '0', '9', 'a', 'f', 'A', 'F', 'g', 'G', '/', ':', '@', '`', ' ', 'é',
            ] {
                let mut s = valid.to_owned();
                s.replace_range(at..at + 1, c.encode_utf8(&mut [0; 4]));
                cases.push(s);
            }
        }
        cases.push(format!("{valid}0"));
        cases.push(valid[1..].to_owned());
        for case in &cases {
            assert_eq!(
                cwp_simulator::is_agent_uuid(case),
                is_valid(case),
                "{case:?}"
            );
        }
    }

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
        assert_eq!(&*upper.text(), "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
        assert_eq!(upper.value(), 0x6b6cd8436bc14011a74cdc3fd26a7dd1);
        assert_eq!(format!("{upper}"), &*upper.text());
        assert_eq!(format!("{upper:?}"), format!("{:?}", &*upper.text()));
        assert_eq!(AgentUuid::from_value(upper.value()), upper);
        assert_eq!(
            std::mem::size_of::<AgentUuid>(),
            16,
            "no allocation, no padding"
        );
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
    fn works_as_a_key_and_compares_with_text() {
        let uuid = AgentUuid::parse("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1").unwrap();
        let map: HashMap<AgentUuid, u32> = [(uuid, 7)].into();
        let other = AgentUuid::parse("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1").unwrap();
        assert_eq!(map.get(&other), Some(&7));
        assert!(uuid.text().starts_with("6b6c"));
        assert_eq!(uuid, "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
        assert_ne!(uuid, "6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1");
        assert_eq!(String::from(uuid), "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
        // Value order is text order.
        let low = AgentUuid::parse("00000000-0000-4000-8000-00000000000f").unwrap();
        let high = AgentUuid::parse("00000000-0000-4000-8000-0000000000a0").unwrap();
        assert!(low < high && *low.text() < *high.text());
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
            prop_assert_eq!(&*uuid.text(), text.to_ascii_lowercase());
            let hex = format!("{:032x}", uuid.value());
            let printed = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
            prop_assert_eq!(printed, &*uuid.text());
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
