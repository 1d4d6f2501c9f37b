//! The checked fields of `cwp` answers: each value is parsed into a type that can only hold
//! what the field may mean, or refused with a typed [`Problem`]. Pure and total: any string
//! gives a value or a problem, never a panic (property tests feed them arbitrary input).
//!
//! A leaf of its own (not under `api::cwp`, which re-exports it as `fields`): the inventory
//! stores these values and the policy matches them, and neither may depend on the client.
//!
//! - [`parse_port`]: `Port` arrives as a **string** (`"22"`): 1 to 5 ASCII digits, no sign,
//!   no space, no leading zero, 1..=65535. Port 0 is no listening port.
//! - [`parse_pid`]: `Pid` arrives as a string too: empty means unknown, else 1 to 10 digits
//!   within `u32`.
//! - [`BindIp`]: an IPv4 or IPv6 literal as the standard library reads it (no zone, no
//!   brackets, no spaces, no leading zeros in IPv4 parts), at most [`MAX_BIND_IP_BYTES`];
//!   classified [`BindClass`] `loopback | private | any | public` for the policy's `bind`.
//! - [`Proto`]: `tcp`, `udp`, … (the API's own example says `http`; its filter documents `""`
//!   as "unknown"): empty or 1 to [`MAX_PROTO_BYTES`] ASCII letters and digits, kept in lower
//!   case so `TCP` and `tcp` are one identity.
//! - [`Quuid`]: the machine's id: 1 to [`MAX_QUUID_BYTES`] of `A-Z a-z 0-9 - _ .`.
//! - [`FirstSeen`]: `FirstTime` as the API writes times, `"2024-10-11 12:23:34"` (the
//!   official example answer; API 3.0's data formats call it `Timestamp`), with no zone:
//!   Tencent's consoles give Beijing time and the API's ISO 8601 example is `+08:00`, so it is
//!   read as UTC+08:00 (an assumption: no document states this field's zone). An RFC 3339 time with an offset is read
//!   as it says. Empty and MySQL's zero date `0000-00-00 00:00:00` mean unknown.
//! - [`checked_text`]: free text (`ProcessName`, `User`, `ProcessPath`): bounded bytes and no
//!   control, separator or bidirectional character ([`crate::problems::forbidden_char`]), so
//!   what reaches events, log lines and the policy is what a reader sees.
//!
//! Problems name what is wrong, never quote the value (it may be anything).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::problems::forbidden_char;

/// Longest `Quuid` accepted (real ones are 36-byte UUIDs).
pub const MAX_QUUID_BYTES: usize = 64;
/// Longest `Proto` accepted (`tcp`, `udp`, `tcp6`, …).
pub const MAX_PROTO_BYTES: usize = 16;
/// Longest `BindIp` looked at: the longest IPv6 text (with an embedded IPv4) is 45 bytes.
pub const MAX_BIND_IP_BYTES: usize = 64;
/// Longest `User` accepted (Linux user names are at most 32 bytes; Windows' `DOMAIN\user`
/// can be longer).
pub const MAX_USER_BYTES: usize = 256;
/// Longest `ProcessPath` accepted (Linux `PATH_MAX`).
pub const MAX_PATH_BYTES: usize = 4096;
/// Longest time string looked at (`2024-10-11T12:23:34.123456789+08:00` is 35 bytes).
pub const MAX_TIME_BYTES: usize = 64;

/// What is wrong with one field of an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// Absent or `null` where a value is required.
    #[error("is missing")]
    Missing,
    /// Present with the wrong JSON type.
    #[error("is {found}, not {expected}")]
    WrongType {
        /// What came (`a number`, `an object`, …).
        found: &'static str,
        /// What the field must be.
        expected: &'static str,
    },
    /// An empty string where a value is required.
    #[error("is empty")]
    Empty,
    /// Longer than its bound.
    #[error("is {len} bytes long (at most {max})")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A control, separator or bidirectional character, or a character the field's alphabet
    /// does not have.
    #[error("has a character it may not have (at byte {at})")]
    BadCharacter {
        /// Byte offset of the first one.
        at: usize,
    },
    /// Not a port number.
    #[error("is not a port number ({0})")]
    Port(#[from] PortProblem),
    /// Not a process id.
    #[error("is not a process id (decimal digits within 0 to 4294967295)")]
    Pid,
    /// Not an IPv4 or IPv6 address.
    #[error("is not an IPv4 or IPv6 address")]
    Ip,
    /// Not an agent Uuid.
    #[error("is not an agent Uuid")]
    Uuid,
    /// Not a time as the API writes them.
    #[error("is not a time of the form YYYY-MM-DD hh:mm:ss (or RFC 3339)")]
    Time,
    /// A row of another machine than the one asked for.
    #[error("is another machine's")]
    OtherMachine,
    /// A second row with the same key in one answer.
    #[error("repeats row {first} of the same answer")]
    Repeated {
        /// Index of the first row with that key.
        first: usize,
    },
}

/// Why a `Port` string is not a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PortProblem {
    /// `""`.
    #[error("empty")]
    Empty,
    /// A sign, space, letter or any other non-digit.
    #[error("not only decimal digits")]
    NotDigits,
    /// `"022"`: not how a port is written; refused so that one port has one spelling.
    #[error("a leading zero")]
    LeadingZero,
    /// `"0"`: no socket listens on port 0.
    #[error("0 is no listening port")]
    Zero,
    /// Above 65535 (or more than 5 digits).
    #[error("above 65535")]
    TooLarge,
}

/// Reads a `Port` string: see the module docs.
pub fn parse_port(text: &str) -> Result<u16, PortProblem> {
    if text.is_empty() {
        return Err(PortProblem::Empty);
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(PortProblem::NotDigits);
    }
    if text == "0" {
        return Err(PortProblem::Zero);
    }
    if text.starts_with('0') {
        return Err(PortProblem::LeadingZero);
    }
    if text.len() > 5 {
        return Err(PortProblem::TooLarge);
    }
    // At most 5 digits: fits a u32 without overflow.
    let value = text.bytes().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    u16::try_from(value).map_err(|_| PortProblem::TooLarge)
}

/// Reads a `Pid` string: `""` is unknown (`None`); else decimal digits within `u32`.
pub fn parse_pid(text: &str) -> Result<Option<u32>, Problem> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > 10 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Problem::Pid);
    }
    // At most 10 digits: fits a u64.
    let value = text.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    u32::try_from(value).map(Some).map_err(|_| Problem::Pid)
}

/// Free text of at most `max` bytes without a forbidden character.
pub fn checked_text(text: &str, max: usize) -> Result<&str, Problem> {
    if text.len() > max {
        return Err(Problem::TooLong {
            len: text.len(),
            max,
        });
    }
    if let Some((at, _)) = text
        .char_indices()
        .find(|(_, c)| forbidden_char(*c).is_some())
    {
        return Err(Problem::BadCharacter { at });
    }
    Ok(text)
}

/// What a listener's bind address exposes it to, for the policy's
/// `bind = "loopback|private|any"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindClass {
    /// `127.0.0.0/8`, `::1` (also IPv4-mapped): this host only.
    Loopback,
    /// RFC 1918, shared address space `100.64.0.0/10`, link-local, IPv6 unique-local and
    /// link-local: not routed on the internet.
    Private,
    /// `0.0.0.0` or `::`: every address of the host, public ones included.
    Any,
    /// Everything else (multicast, broadcast and documentation ranges too: when in doubt,
    /// exposed).
    Public,
}

impl BindClass {
    /// The policy's word for it.
    pub fn name(self) -> &'static str {
        match self {
            BindClass::Loopback => "loopback",
            BindClass::Private => "private",
            BindClass::Any => "any",
            BindClass::Public => "public",
        }
    }

    /// The class named `word` (as the policy writes it).
    pub fn from_name(word: &str) -> Option<BindClass> {
        [
            BindClass::Loopback,
            BindClass::Private,
            BindClass::Any,
            BindClass::Public,
        ]
        .into_iter()
        .find(|class| class.name() == word)
    }
}

impl fmt::Display for BindClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A listener's bind address, checked. Compared and shown in the standard form
/// (`0:0::1` and `::1` are one address), so a respelled address is no new port.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct BindIp(IpAddr);

impl BindIp {
    /// Reads a `BindIp` string: see the module docs.
    pub fn parse(text: &str) -> Result<BindIp, Problem> {
        if text.is_empty() {
            return Err(Problem::Empty);
        }
        if text.len() > MAX_BIND_IP_BYTES {
            return Err(Problem::TooLong {
                len: text.len(),
                max: MAX_BIND_IP_BYTES,
            });
        }
        IpAddr::from_str(text).map(BindIp).map_err(|_| Problem::Ip)
    }

    /// The address.
    pub fn addr(self) -> IpAddr {
        self.0
    }

    /// What it exposes the listener to.
    pub fn class(self) -> BindClass {
        match self.0 {
            IpAddr::V4(v4) => class_v4(v4),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => class_v4(v4),
                None => class_v6(v6),
            },
        }
    }
}

impl From<IpAddr> for BindIp {
    fn from(addr: IpAddr) -> BindIp {
        BindIp(addr)
    }
}

impl fmt::Display for BindIp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

fn class_v4(v4: Ipv4Addr) -> BindClass {
    let [a, b, ..] = v4.octets();
    if v4.is_unspecified() {
        BindClass::Any
    } else if v4.is_loopback() {
        BindClass::Loopback
    } else if v4.is_private() || v4.is_link_local() || (a == 100 && (64..128).contains(&b)) {
        BindClass::Private
    } else {
        BindClass::Public
    }
}

fn class_v6(v6: Ipv6Addr) -> BindClass {
    if v6.is_unspecified() {
        BindClass::Any
    } else if v6.is_loopback() {
        BindClass::Loopback
    } else if v6.is_unique_local() || v6.is_unicast_link_local() {
        BindClass::Private
    } else {
        BindClass::Public
    }
}

/// A port's protocol: empty (unknown) or a short lower-case word. Checked again when read
/// back from a file.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Proto(Box<str>);

impl TryFrom<String> for Proto {
    type Error = Problem;
    fn try_from(text: String) -> Result<Proto, Problem> {
        Proto::parse(&text)
    }
}

impl From<Proto> for String {
    fn from(proto: Proto) -> String {
        proto.0.into()
    }
}

impl Proto {
    /// Reads a `Proto` string: see the module docs.
    pub fn parse(text: &str) -> Result<Proto, Problem> {
        if text.len() > MAX_PROTO_BYTES {
            return Err(Problem::TooLong {
                len: text.len(),
                max: MAX_PROTO_BYTES,
            });
        }
        if let Some(at) = text.bytes().position(|b| !b.is_ascii_alphanumeric()) {
            return Err(Problem::BadCharacter { at });
        }
        Ok(Proto(text.to_ascii_lowercase().into()))
    }

    /// The word, lower case; empty when the API did not know.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine's `Quuid`, checked.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct Quuid(Box<str>);

impl Quuid {
    /// Reads a `Quuid`: 1 to [`MAX_QUUID_BYTES`] of `A-Z a-z 0-9 - _ .`.
    pub fn parse(text: &str) -> Result<Quuid, Problem> {
        if text.is_empty() {
            return Err(Problem::Empty);
        }
        if text.len() > MAX_QUUID_BYTES {
            return Err(Problem::TooLong {
                len: text.len(),
                max: MAX_QUUID_BYTES,
            });
        }
        if let Some(at) = text
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')))
        {
            return Err(Problem::BadCharacter { at });
        }
        Ok(Quuid(text.into()))
    }

    /// As sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `other` names the same machine (ids compare without regard to ASCII case).
    pub fn is(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other)
    }
}

impl TryFrom<String> for Quuid {
    type Error = Problem;
    fn try_from(text: String) -> Result<Quuid, Problem> {
        Quuid::parse(&text)
    }
}

impl From<Quuid> for String {
    fn from(quuid: Quuid) -> String {
        quuid.0.into()
    }
}

impl fmt::Display for Quuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When CWP first saw a port (`FirstTime`), as Unix seconds.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct FirstSeen(i64);

/// The zone of the API's zone-less times: Beijing, UTC+08:00 (see the module docs).
pub const API_TIME_OFFSET: time::UtcOffset = time::macros::offset!(+8);

/// 1970-01-01 and 9999-12-31T23:59:59Z: the times a first sighting may have.
const FIRST_SEEN_RANGE: std::ops::RangeInclusive<i64> = 0..=253_402_300_799;

impl FirstSeen {
    /// Reads a time as the API writes it: `None` for `""` and the zero date; see the module
    /// docs.
    pub fn parse(text: &str) -> Result<Option<FirstSeen>, Problem> {
        if text.is_empty() || text == "0000-00-00 00:00:00" {
            return Ok(None);
        }
        if text.len() > MAX_TIME_BYTES {
            return Err(Problem::TooLong {
                len: text.len(),
                max: MAX_TIME_BYTES,
            });
        }
        let unix = match api_time(text) {
            Some(unix) => unix,
            None => {
                time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                    .map_err(|_| Problem::Time)?
                    .unix_timestamp()
            }
        };
        if !FIRST_SEEN_RANGE.contains(&unix) {
            return Err(Problem::Time);
        }
        Ok(Some(FirstSeen(unix)))
    }

    /// From Unix seconds.
    pub fn from_unix(seconds: i64) -> FirstSeen {
        FirstSeen(seconds)
    }

    /// Unix seconds.
    pub fn unix(self) -> i64 {
        self.0
    }

    /// RFC 3339 in the API's zone, e.g. `2024-10-11T12:23:34+08:00`: the time the console
    /// shows, with the zone it was read in.
    pub fn rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .map(|t| t.to_offset(API_TIME_OFFSET))
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_else(|| self.0.to_string())
    }
}

impl fmt::Display for FirstSeen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rfc3339())
    }
}

/// `YYYY-MM-DD HH:MM:SS` exactly (19 bytes, every digit a digit), a valid calendar time, in
/// [`API_TIME_OFFSET`]: Unix seconds.
fn api_time(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() != 19 {
        return None;
    }
    let shape_ok = b.iter().enumerate().all(|(i, c)| match i {
        4 | 7 => *c == b'-',
        10 => *c == b' ',
        13 | 16 => *c == b':',
        _ => c.is_ascii_digit(),
    });
    if !shape_ok {
        return None;
    }
    let num = |range: std::ops::Range<usize>| {
        b[range]
            .iter()
            .fold(0u32, |n, c| n * 10 + u32::from(c - b'0'))
    };
    let month = time::Month::try_from(u8::try_from(num(5..7)).ok()?).ok()?;
    let date = time::Date::from_calendar_date(
        i32::try_from(num(0..4)).ok()?,
        month,
        u8::try_from(num(8..10)).ok()?,
    )
    .ok()?;
    let clock = time::Time::from_hms(
        u8::try_from(num(11..13)).ok()?,
        u8::try_from(num(14..16)).ok()?,
        u8::try_from(num(17..19)).ok()?,
    )
    .ok()?;
    Some(
        time::PrimitiveDateTime::new(date, clock)
            .assume_offset(API_TIME_OFFSET)
            .unix_timestamp(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ports_are_decimal_1_to_65535_in_one_spelling() {
        for (text, want) in [("1", 1), ("22", 22), ("8080", 8080), ("65535", 65535)] {
            assert_eq!(parse_port(text), Ok(want), "{text}");
        }
        use PortProblem::*;
        for (text, want) in [
            ("", Empty),
            ("0", Zero),
            ("00", LeadingZero),
            ("022", LeadingZero),
            ("65536", TooLarge),
            ("99999", TooLarge),
            ("123456", TooLarge),
            ("18446744073709551617", TooLarge),
            (" 22", NotDigits),
            ("22 ", NotDigits),
            ("2 2", NotDigits),
            ("+22", NotDigits),
            ("-1", NotDigits),
            ("22\n", NotDigits),
            ("0x16", NotDigits),
            ("２２", NotDigits), // full-width digits
            ("22.0", NotDigits),
            ("1e3", NotDigits),
        ] {
            assert_eq!(parse_port(text), Err(want), "{text:?}");
        }
        let huge = "9".repeat(1 << 20);
        assert_eq!(parse_port(&huge), Err(TooLarge));
    }

    #[test]
    fn pids_are_digits_within_u32_or_unknown() {
        assert_eq!(parse_pid(""), Ok(None));
        assert_eq!(parse_pid("0"), Ok(Some(0)));
        assert_eq!(parse_pid("1024"), Ok(Some(1024)));
        assert_eq!(parse_pid("4294967295"), Ok(Some(u32::MAX)));
        for bad in [
            "4294967296",
            "99999999999",
            "-1",
            " 1",
            "1 ",
            "abc",
            "1.5",
            "null",
        ] {
            assert_eq!(parse_pid(bad), Err(Problem::Pid), "{bad:?}");
        }
    }

    #[test]
    fn bind_addresses_are_ip_literals_and_classified() {
        use BindClass::*;
        for (text, class, shown) in [
            ("0.0.0.0", Any, "0.0.0.0"),
            ("::", Any, "::"),
            ("0:0:0:0:0:0:0:0", Any, "::"),
            ("127.0.0.1", Loopback, "127.0.0.1"),
            ("127.8.9.10", Loopback, "127.8.9.10"),
            ("::1", Loopback, "::1"),
            ("0:0::1", Loopback, "::1"),
            ("::ffff:127.0.0.1", Loopback, "::ffff:127.0.0.1"),
            ("10.0.0.11", Private, "10.0.0.11"),
            ("172.16.0.1", Private, "172.16.0.1"),
            ("172.31.255.255", Private, "172.31.255.255"),
            ("192.168.1.1", Private, "192.168.1.1"),
            ("100.64.0.1", Private, "100.64.0.1"),
            ("169.254.0.1", Private, "169.254.0.1"),
            ("fd00::1", Private, "fd00::1"),
            ("fe80::1", Private, "fe80::1"),
            ("::ffff:10.1.2.3", Private, "::ffff:10.1.2.3"),
            ("172.32.0.1", Public, "172.32.0.1"),
            ("100.128.0.1", Public, "100.128.0.1"),
            ("110.84.0.11", Public, "110.84.0.11"),
            ("2001:db8::1", Public, "2001:db8::1"),
            ("2402:4e00::1", Public, "2402:4e00::1"),
            ("224.0.0.1", Public, "224.0.0.1"),
            ("255.255.255.255", Public, "255.255.255.255"),
        ] {
            let bind = BindIp::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(bind.class(), class, "{text}");
            assert_eq!(bind.to_string(), shown, "{text}");
            assert_eq!(BindClass::from_name(class.name()), Some(class));
        }
        assert_eq!(BindIp::parse(""), Err(Problem::Empty));
        assert!(matches!(
            BindIp::parse(&"1".repeat(65)),
            Err(Problem::TooLong { len: 65, .. })
        ));
        for bad in [
            "*",
            "localhost",
            " 0.0.0.0",
            "0.0.0.0 ",
            "010.0.0.1",
            "256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "[::1]",
            "fe80::1%eth0",
            "0.0.0.0:22",
            "::1/128",
            "1.2.3.4\u{0}",
            "::g",
        ] {
            assert_eq!(BindIp::parse(bad), Err(Problem::Ip), "{bad:?}");
        }
        assert_eq!(BindClass::from_name("everywhere"), None);
    }

    #[test]
    fn protocols_are_short_words_in_lower_case() {
        assert_eq!(Proto::parse("tcp").unwrap().as_str(), "tcp");
        assert_eq!(Proto::parse("UDP").unwrap().as_str(), "udp");
        assert_eq!(Proto::parse("tcp6").unwrap().as_str(), "tcp6");
        assert_eq!(Proto::parse("").unwrap().as_str(), "", "unknown");
        assert_eq!(
            Proto::parse("tcp udp"),
            Err(Problem::BadCharacter { at: 3 })
        );
        assert_eq!(
            Proto::parse("t\u{1b}"),
            Err(Problem::BadCharacter { at: 1 })
        );
        assert!(matches!(
            Proto::parse(&"t".repeat(17)),
            Err(Problem::TooLong { .. })
        ));
        // Read back from a file: checked again.
        assert!(serde_json::from_str::<Proto>(r#""t\u001b""#).is_err());
        assert_eq!(
            serde_json::from_str::<Proto>(r#""TCP""#).unwrap().as_str(),
            "tcp"
        );
    }

    #[test]
    fn quuids_are_bounded_ids() {
        let q = Quuid::parse("24c9be55-c743-4a75-a5c7-2a2912341234").unwrap();
        assert!(q.is("24C9BE55-C743-4A75-A5C7-2A2912341234"));
        assert!(!q.is("24c9be55-c743-4a75-a5c7-2a2912341235"));
        assert_eq!(Quuid::parse(""), Err(Problem::Empty));
        assert!(matches!(
            Quuid::parse(&"a".repeat(MAX_QUUID_BYTES + 1)),
            Err(Problem::TooLong { .. })
        ));
        assert_eq!(
            Quuid::parse(&"a".repeat(MAX_QUUID_BYTES))
                .unwrap()
                .as_str()
                .len(),
            64
        );
        for (bad, at) in [("../etc", 2), ("a b", 1), ("a\u{1b}[2J", 1), ("é", 0)] {
            assert_eq!(
                Quuid::parse(bad),
                Err(Problem::BadCharacter { at }),
                "{bad:?}"
            );
        }
        // Through serde too: a stored Quuid is checked again when read.
        assert!(serde_json::from_str::<Quuid>("\"a/b\"").is_err());
        assert_eq!(
            serde_json::from_str::<Quuid>("\"q-1\"").unwrap().as_str(),
            "q-1"
        );
    }

    #[test]
    fn text_is_bounded_and_free_of_controls_and_bidi() {
        assert_eq!(checked_text("/usr/sbin/sshd", 64), Ok("/usr/sbin/sshd"));
        assert_eq!(checked_text("", 64), Ok(""));
        assert_eq!(checked_text("数据库", 9), Ok("数据库"));
        assert!(matches!(
            checked_text("数据库", 8),
            Err(Problem::TooLong { len: 9, max: 8 })
        ));
        for (bad, at) in [
            ("a\nb", 1),
            ("\u{1b}[31m", 0),
            ("ab\u{7f}", 2),
            ("x\u{202e}y", 1),
            ("é\u{2028}", 2),
        ] {
            assert_eq!(
                checked_text(bad, 64),
                Err(Problem::BadCharacter { at }),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn first_seen_reads_the_api_format_as_beijing_time() {
        // The SDK example's time: 12:23:34 in Beijing is 04:23:34 UTC.
        let t = FirstSeen::parse("2024-10-11 12:23:34").unwrap().unwrap();
        assert_eq!(t.unix(), 1_728_620_614);
        assert_eq!(t.rfc3339(), "2024-10-11T12:23:34+08:00");
        // Midnight in Beijing is the previous day in UTC.
        let t = FirstSeen::parse("2024-01-01 00:00:00").unwrap().unwrap();
        assert_eq!(t.unix(), 1_704_038_400);
        // RFC 3339 is read with its own offset.
        for text in ["2024-10-11T04:23:34Z", "2024-10-11T12:23:34+08:00"] {
            assert_eq!(
                FirstSeen::parse(text).unwrap().unwrap().unix(),
                1_728_620_614
            );
        }
        assert_eq!(FirstSeen::parse(""), Ok(None));
        assert_eq!(FirstSeen::parse("0000-00-00 00:00:00"), Ok(None));
        for bad in [
            "2024-10-11",
            "2024-10-11 12:23",
            "2024-13-11 12:23:34",
            "2024-02-30 12:23:34",
            "2024-10-11 24:00:00",
            "2024-10-11 12:60:00",
            "2024/10/11 12:23:34",
            "2024-10-11  12:23:3",
            "+024-10-11 12:23:34",
            " 2024-10-11 12:23:34",
            "1969-12-31 23:59:59",
            "1970-01-01 07:59:59",
            "yesterday",
            "1728620614",
        ] {
            assert_eq!(FirstSeen::parse(bad), Err(Problem::Time), "{bad:?}");
        }
        assert!(matches!(
            FirstSeen::parse(&"9".repeat(100)),
            Err(Problem::TooLong { .. })
        ));
        assert_eq!(
            FirstSeen::parse("1970-01-01 08:00:00")
                .unwrap()
                .unwrap()
                .unix(),
            0
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn every_parser_is_total(text in "\\PC{0,80}|[0-9 .:a-fA-F%\\[\\]-]{0,50}") {
            let _ = parse_port(&text);
            let _ = parse_pid(&text);
            let _ = BindIp::parse(&text).map(BindIp::class);
            let _ = Proto::parse(&text);
            let _ = Quuid::parse(&text);
            let _ = FirstSeen::parse(&text).map(|t| t.map(FirstSeen::rfc3339));
            let _ = checked_text(&text, 16);
        }

        #[test]
        fn a_port_reads_back_as_written(port in 1u16..) {
            prop_assert_eq!(parse_port(&port.to_string()), Ok(port));
        }

        #[test]
        fn an_address_reads_back_in_its_standard_form(bits in any::<u128>(), v4 in any::<u32>()) {
            for addr in [IpAddr::from(Ipv6Addr::from(bits)), IpAddr::from(Ipv4Addr::from(v4))] {
                let bind = BindIp::parse(&addr.to_string()).unwrap();
                prop_assert_eq!(bind.addr(), addr);
                prop_assert_eq!(BindIp::parse(&bind.to_string()), Ok(bind));
            }
        }

        #[test]
        fn an_api_time_reads_back(unix in 0i64..253_402_271_999) {
            let t = time::OffsetDateTime::from_unix_timestamp(unix).unwrap().to_offset(API_TIME_OFFSET);
            let text = format!(
                "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
                t.year(), u8::from(t.month()), t.day(), t.hour(), t.minute(), t.second()
            );
            prop_assert_eq!(FirstSeen::parse(&text), Ok(Some(FirstSeen::from_unix(unix))));
        }
    }
}
