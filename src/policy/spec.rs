//! Port specs and globs: the grammar `PORT[-PORT][/PROCESS-GLOB]`, the table form's extra
//! fields (`proto`, `bind`, `user`), and matching one against a port's facts. Pure; parsing
//! returns a message (what is wrong and what to write), the caller places it at file:line:col.
//!
//! Globs have two wildcards, `*` (any run of characters, also none) and `?` (exactly one
//! character), no escapes, and match the whole text (anchored), case-sensitively, character by
//! character (not byte by byte): Linux `comm` names are case-sensitive, and a process name may
//! hold spaces or any Unicode.

use super::PortFacts;
use crate::port_facts::{BindClass, BindIp};

/// The longest glob (process, host name, uuid, user), in characters. A process name is at most
/// 15 bytes on Linux (`TASK_COMM_LEN`), yunjing's may carry a path: 256 is room for both.
pub const MAX_GLOB_CHARS: usize = 256;

/// A compiled glob. The common shapes (no wildcard, a prefix followed by `*`, `*` alone) get
/// their own variants so that matching them is one comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Glob {
    /// No wildcard: the text must equal it.
    Exact(Box<str>),
    /// `PREFIX*` with no other wildcard.
    Prefix(Box<str>),
    /// `*`: anything, also the empty text.
    Any,
    /// Anything else: the general matcher.
    Pattern(Box<[Token]>),
}

/// One element of a general glob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Token {
    /// This character.
    Literal(char),
    /// `?`: any one character.
    One,
    /// `*`: any run of characters.
    Star,
}

impl Glob {
    /// Compiles `text` (already checked for length and forbidden characters).
    pub(crate) fn new(text: &str) -> Glob {
        let wild = |c: char| c == '*' || c == '?';
        if !text.contains(wild) {
            return Glob::Exact(text.into());
        }
        if let Some(prefix) = text.strip_suffix('*')
            && !prefix.contains(wild)
        {
            return if prefix.is_empty() {
                Glob::Any
            } else {
                Glob::Prefix(prefix.into())
            };
        }
        let mut tokens: Vec<Token> = Vec::with_capacity(text.len());
        for c in text.chars() {
            let token = match c {
                '*' => Token::Star,
                '?' => Token::One,
                c => Token::Literal(c),
            };
            // `**` means the same as `*`; one star is less backtracking.
            if !(token == Token::Star && tokens.last() == Some(&Token::Star)) {
                tokens.push(token);
            }
        }
        Glob::Pattern(tokens.into_boxed_slice())
    }

    /// Whether `text` matches the whole glob.
    pub(crate) fn matches(&self, text: &str) -> bool {
        match self {
            Glob::Exact(exact) => **exact == *text,
            Glob::Prefix(prefix) => text.starts_with(&**prefix),
            Glob::Any => true,
            Glob::Pattern(tokens) => matches_tokens(tokens, text),
        }
    }
}

/// The classic wildcard matcher with one backtrack point: on a mismatch, the last `*` takes one
/// more character. Linear space, O(pattern × text) time at worst (both are bounded), never
/// recursion.
fn matches_tokens(tokens: &[Token], text: &str) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    // (token after the last `*`, where that star's match ends now).
    let mut star: Option<(usize, usize)> = None;
    loop {
        let next = text.get(t..).and_then(|rest| rest.chars().next());
        match (tokens.get(p), next) {
            (None, None) => return true,
            (Some(Token::Star), _) => {
                p += 1;
                star = Some((p, t));
                continue;
            }
            (Some(Token::One), Some(c)) => {
                p += 1;
                t += c.len_utf8();
                continue;
            }
            (Some(Token::Literal(l)), Some(c)) if *l == c => {
                p += 1;
                t += c.len_utf8();
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last star take one more character, or fail.
        let Some((after_star, taken_to)) = star else {
            return false;
        };
        let Some(c) = text.get(taken_to..).and_then(|rest| rest.chars().next()) else {
            return false;
        };
        let taken_to = taken_to + c.len_utf8();
        star = Some((after_star, taken_to));
        p = after_star;
        t = taken_to;
    }
}

/// What is wrong with a glob's text, if anything (empty, too long, whitespace around it). The
/// caller checks forbidden characters with [`crate::problems::text_problem`].
pub(crate) fn glob_problem(what: &str, text: &str) -> Option<String> {
    if text.is_empty() {
        return Some(format!(
            "`{what}` is empty: write a name or a glob (`*` any run of characters, `?` one \
             character), e.g. \"nginx\" or \"python*\""
        ));
    }
    if text.chars().nth(MAX_GLOB_CHARS).is_some() {
        return Some(format!(
            "`{what}` is {} characters long; write at most {MAX_GLOB_CHARS}",
            text.chars().count()
        ));
    }
    if text.starts_with(char::is_whitespace) || text.ends_with(char::is_whitespace) {
        return Some(format!(
            "`{what}` = {} begins or ends with white space, which no name does; write it without \
             (spaces inside a name are kept)",
            crate::problems::shown(text)
        ));
    }
    None
}

/// `bind = "loopback" | "private" | "any"`: where a port may listen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BindScope {
    /// 127.0.0.0/8 and ::1 only.
    Loopback,
    /// Loopback, RFC 1918 (10/8, 172.16/12, 192.168/16), CGNAT 100.64/10, link-local
    /// (169.254/16, fe80::/10) and unique-local fc00::/7.
    Private,
    /// Any address, 0.0.0.0 and :: included.
    Any,
}

impl BindScope {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            BindScope::Loopback => "loopback",
            BindScope::Private => "private",
            BindScope::Any => "any",
        }
    }

    /// Whether a port bound to `bind_ip` is within this scope, by the address's class
    /// ([`BindIp::class`], the `cwp` backend's: loopback, private, any or public). No
    /// address at all is only within `any`: a port that cannot be shown to be local is not.
    pub(crate) fn admits(self, bind_ip: Option<BindIp>) -> bool {
        if self == BindScope::Any {
            return true;
        }
        let Some(class) = bind_ip.map(BindIp::class) else {
            return false;
        };
        match self {
            BindScope::Any => true,
            BindScope::Loopback => class == BindClass::Loopback,
            BindScope::Private => matches!(class, BindClass::Loopback | BindClass::Private),
        }
    }
}

/// `proto = "tcp" | "udp"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    /// TCP (a backend's `tcp6` counts).
    Tcp,
    /// UDP (a backend's `udp6` counts).
    Udp,
}

impl Proto {
    /// The name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    /// Whether the backend's protocol text names this protocol (any case, `6` suffix allowed).
    fn admits(self, proto: Option<&str>) -> bool {
        let Some(proto) = proto else {
            return false;
        };
        let proto = proto.trim();
        let proto = proto.strip_suffix('6').unwrap_or(proto);
        proto.eq_ignore_ascii_case(self.as_str())
    }
}

/// One validated entry of `allow` or `require`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PortSpec {
    /// Lowest port of the range.
    pub(crate) low: u16,
    /// Highest port of the range (`low` for a single port).
    pub(crate) high: u16,
    /// The process glob; `None`: any process.
    pub(crate) process: Option<Glob>,
    /// The process glob as written ("" when none): what a `Missing` finding carries.
    pub(crate) process_text: Box<str>,
    /// Table form only.
    pub(crate) proto: Option<Proto>,
    /// Table form only.
    pub(crate) bind: Option<BindScope>,
    /// Table form only: a glob over the listening user.
    pub(crate) user: Option<Glob>,
    /// `user` as written.
    pub(crate) user_text: Option<Box<str>>,
    /// What a `Missing` finding carries as `spec`: a string entry as written, a table entry in
    /// the string grammar with its other fields appended (`5432/postgres bind=loopback`).
    pub(crate) text: Box<str>,
}

impl PortSpec {
    /// Whether an open port with these facts matches the entry.
    pub(crate) fn matches(&self, port: &PortFacts<'_>) -> bool {
        self.low <= port.port && port.port <= self.high && self.matches_beyond_port(port)
    }

    /// The entry's conditions other than the port number.
    pub(crate) fn matches_beyond_port(&self, port: &PortFacts<'_>) -> bool {
        self.process
            .as_ref()
            .is_none_or(|g| g.matches(port.process))
            && self.proto.is_none_or(|p| p.admits(port.proto))
            && self.bind.is_none_or(|b| b.admits(port.bind_ip))
            && self
                .user
                .as_ref()
                .is_none_or(|g| port.user.is_some_and(|user| g.matches(user)))
    }
}

/// `PORT` or `PORT-PORT`: a port range, low ≤ high, each 0..=65535.
pub(crate) fn parse_ports(text: &str) -> Result<(u16, u16), String> {
    let (low, high) = match text.split_once('-') {
        Some((low, high)) => (parse_port(low, text)?, parse_port(high, text)?),
        None => {
            let port = parse_port(text, text)?;
            (port, port)
        }
    };
    if low > high {
        return Err(format!(
            "the port range {} runs backwards ({low} > {high}); write the lower port first, \
             e.g. \"{high}-{low}\"",
            crate::problems::shown(text)
        ));
    }
    Ok((low, high))
}

fn parse_port(part: &str, whole: &str) -> Result<u16, String> {
    let advice = "write a port number from 0 to 65535 or a range such as \"8000-8099\", \
                  optionally followed by /PROCESS (e.g. \"443/nginx\")";
    if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{} is not a port or port range; {advice}",
            crate::problems::shown(whole)
        ));
    }
    match part.parse::<u32>() {
        Ok(port) if port <= u32::from(u16::MAX) => Ok(port as u16),
        _ => Err(format!(
            "port {} is out of range; {advice}",
            crate::problems::shown(part)
        )),
    }
}

/// Parses the string form `PORT[-PORT][/PROCESS-GLOB]` into its ports and process glob text
/// (`None` when no `/`). The glob's own checks are the caller's ([`glob_problem`]).
pub(crate) fn split_spec(text: &str) -> Result<(u16, u16, Option<&str>), String> {
    let (ports, process) = match text.split_once('/') {
        Some((ports, process)) => (ports, Some(process)),
        None => (text, None),
    };
    let (low, high) = parse_ports(ports)?;
    Ok((low, high, process))
}

/// The canonical text of an entry (see [`PortSpec::text`]).
pub(crate) fn spec_text(
    low: u16,
    high: u16,
    process: Option<&str>,
    proto: Option<Proto>,
    bind: Option<BindScope>,
    user: Option<&str>,
) -> String {
    let mut text = if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    };
    if let Some(process) = process {
        text.push('/');
        text.push_str(process);
    }
    if let Some(proto) = proto {
        text.push_str(" proto=");
        text.push_str(proto.as_str());
    }
    if let Some(bind) = bind {
        text.push_str(" bind=");
        text.push_str(bind.as_str());
    }
    if let Some(user) = user {
        text.push_str(" user=");
        text.push_str(user);
    }
    text
}
