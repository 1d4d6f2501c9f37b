//! Watchlist file: the CWP agents to watch.
//!
//! ```toml
//! [[agent]]
//! uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
//! name = "web-01"              # optional, shown in events
//! tags = ["web", "prod"]        # optional, what the expected-ports policy selects hosts by
//! ```
//!
//! A name is free text that reaches every event of its agent, so it is checked like every
//! such string (`problems::text_problem`): at most [`MAX_NAME_CHARS`] characters, no
//! control characters, line separators or bidirectional controls.
//!
//! Tags are checked the same way, each at its own line:column: at most [`MAX_TAGS`] per agent,
//! each at most [`MAX_TAG_CHARS`] characters, none empty; a tag written twice counts once.
//! They are kept sorted, and agents with the same tags share one [`Facts`] (100,000 agents
//! tagged alike cost one set, not 100,000).
//!
//! Uuids are checked and **normalized to lower case** by [`AgentUuid::parse`] (8-4-4-4-12 hex
//! digits), so a Uuid copied
//! in upper case from the console and the API's lower-case answers name the same agent; a
//! duplicate (compared without case) is a problem naming both lines. An empty watchlist is valid.
//!
//! It must scale to 100,000 agents (about 8 MB of text) within the daemon's memory budget:
//!
//! - The text is deserialized straight into small structs with `Spanned` strings (no
//!   `toml::Value` tree of owned values).
//! - A large file is parsed in **batches** of 1,000 `[[agent]]` tables (`BATCH_TABLES`), split
//!   at the `[[agent]]` header lines, so the toml parser's tokens, events and tables exist for one
//!   batch at a time (a whole-file parse of 100,000 agents peaks at about 200 MB; batches keep
//!   it at a few MB). Every span is shifted by its batch's byte offset, so problems keep their
//!   exact line:column. If a batch does not parse, or the file holds anything that could make a
//!   split unsafe (a multi-line string, or content other than comments before the first header),
//!   the whole file is parsed in one call instead, so syntax errors are reported exactly as
//!   before.
//! - Duplicates are found with one `HashMap` over the whole file (keyed by the Uuid's 128-bit
//!   value), and line numbers are computed only for the problems.
//!
//! The rooms: this file holds the watchlist's types; `facts.rs` the host facts ([`Facts`]);
//! `parse.rs` the parse and the checks of every `[[agent]]` table; `batch.rs` where a large
//! file is split into batches.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::agent_uuid::AgentUuid;
use crate::problems::{ConfigErrors, read_text};

mod batch;
mod facts;
mod parse;

pub use facts::Facts;

use parse::{parse_batched, parse_whole};

/// `[[agent]]` tables per batch when a large watchlist is parsed in batches.
const BATCH_TABLES: usize = 1_000;

/// The longest agent name, in characters: a name is a label shown in every event of its
/// agent, and a longer one (a 5 MB name once passed) only bloats or floods the logs.
pub const MAX_NAME_CHARS: usize = 256;

/// The most tags one agent may carry (watchlist `tags`, and discovered `Tag` names: see
/// [`crate::api::machines`]).
pub const MAX_TAGS: usize = 16;
/// The longest tag, in characters.
pub const MAX_TAG_CHARS: usize = 64;

/// One watched agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The CWP agent Uuid, validated and lower case.
    pub uuid: AgentUuid,
    /// Shown in events; `None` when the file gives none. At most [`MAX_NAME_CHARS`] characters,
    /// none of them a control character, line separator or bidirectional control.
    pub name: Option<String>,
    /// What the expected-ports policy selects hosts by, besides name and Uuid: `None` when
    /// there is nothing (no tag, no region, no WAN IP), the common case, so an untagged agent
    /// costs one pointer. Shared: a clone of an agent copies no tag.
    pub facts: Option<Arc<Facts>>,
}

impl Agent {
    /// An agent without facts.
    pub fn new(uuid: AgentUuid, name: Option<String>) -> Agent {
        Agent {
            uuid,
            name,
            facts: None,
        }
    }

    /// Its tags, sorted, each once (empty when none).
    pub fn tags(&self) -> &[Box<str>] {
        self.facts.as_deref().map_or(&[], Facts::tags)
    }
}

/// The validated watchlist, agents in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchlist {
    /// The file it was read from.
    pub path: PathBuf,
    /// Every agent once, in file order; may be empty.
    pub agents: Vec<Agent>,
    /// Agents whose table says `account = "…"` (several accounts: the agent belongs to that
    /// account instead of the one whose watchlist lists it). Checked against the configured
    /// accounts by `commands::startup::load_accounts`.
    pub assigned: Vec<Assigned>,
}

/// An `account = "…"` in an `[[agent]]` table, and where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// Index into [`Watchlist::agents`].
    pub index: usize,
    /// The account named (a valid account name; whether it is configured is checked later).
    pub account: String,
    /// 1-based line of the value.
    pub line: usize,
    /// 1-based column of the value.
    pub column: usize,
}

impl Watchlist {
    /// Reads and validates the watchlist file at `path`.
    pub fn load(path: &Path) -> Result<Watchlist, ConfigErrors> {
        let text = read_text(
            path,
            "change `watchlist` in the config file; config/watchlist.example.toml shows the format",
        )?;
        Watchlist::from_toml_str(&text, path)
    }

    /// Validates watchlist text; `path` is used in messages. Every problem is reported.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Watchlist, ConfigErrors> {
        parse_batched(text, path, BATCH_TABLES).unwrap_or_else(|| parse_whole(text, path))
    }
}

#[cfg(test)]
mod tests;
