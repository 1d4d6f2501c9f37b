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

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use crate::agent_uuid::AgentUuid;
use crate::problems::{ConfigErrors, ProblemList, TypeHints, read_text, shown, text_problem};

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

/// An agent's host facts for the expected-ports policy: its tags (watchlist `tags`,
/// discovered `Tag` names), its region and whether it has a WAN IP (both from discovery).
/// Tags are kept sorted and each once, so equal sets compare (and hash) equal whatever order
/// they were written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Facts {
    tags: Box<[Box<str>]>,
    region: Option<Box<str>>,
    wan: bool,
}

impl Facts {
    /// Facts of these tags (sorted here, duplicates folded), region and WAN flag. Bounds are
    /// the callers' (the watchlist and the API parser check them).
    pub fn new<T: Into<Box<str>>>(
        tags: impl IntoIterator<Item = T>,
        region: Option<Box<str>>,
        wan: bool,
    ) -> Facts {
        let mut tags: Vec<Box<str>> = tags.into_iter().map(Into::into).collect();
        tags.sort_unstable();
        tags.dedup();
        Facts {
            tags: tags.into_boxed_slice(),
            region: region.filter(|r| !r.is_empty()),
            wan,
        }
    }

    /// Tags, sorted, each once.
    pub fn tags(&self) -> &[Box<str>] {
        &self.tags
    }

    /// The machine's region, when discovery said.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The machine has a WAN IP (discovery's `MachineWanIp`).
    pub fn wan(&self) -> bool {
        self.wan
    }

    /// These facts with `region` when they name none (a discovered machine's region is the
    /// one its listing asked for when its row does not say).
    pub fn or_region(mut self, region: &str) -> Facts {
        if self.region.is_none() && !region.is_empty() {
            self.region = Some(region.into());
        }
        self
    }

    /// No tag, no region, no WAN IP.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.region.is_none() && !self.wan
    }

    /// As an [`Agent::facts`]: `None` when empty.
    pub fn shared(self) -> Option<Arc<Facts>> {
        (!self.is_empty()).then(|| Arc::new(self))
    }

    /// A listed agent's facts with a discovered machine's: the union of the tags, region and
    /// WAN flag from discovery (the watchlist has neither). `None` when both are.
    pub fn merged(listed: Option<&Arc<Facts>>, found: Option<&Arc<Facts>>) -> Option<Arc<Facts>> {
        match (listed, found) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(Arc::clone(one)),
            (Some(listed), Some(found)) => {
                if listed.tags.iter().all(|t| found.tags.contains(t)) {
                    return Some(Arc::clone(found));
                }
                let tags = listed.tags.iter().chain(found.tags.iter()).cloned();
                Facts::new(tags, found.region.clone(), found.wan).shared()
            }
        }
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a watchlist of [[agent]] tables")]
struct RawWatchlist {
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an [[agent]] table with uuid and optional name, tags and account"
)]
struct RawAgent {
    uuid: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    tags: Option<Spanned<Vec<Spanned<String>>>>,
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

/// The whole text in one `toml::from_str` call: small files, and the fallback that reports syntax
/// errors exactly.
fn parse_whole(text: &str, path: &Path) -> Result<Watchlist, ConfigErrors> {
    let raw: RawWatchlist = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(error) => {
            let mut problems = ProblemList::new(path, text);
            let reported = problems.syntax(
                &error,
                &TypeHints {
                    example_file: "config/watchlist.example.toml",
                    for_key: |_| None,
                },
            );
            return Err(problems.into_errors(reported));
        }
    };
    let mut checker = Checker::new(path, text, raw.agent.len());
    for entry in raw.agent {
        checker.agent(entry, 0);
    }
    checker.finish(path)
}

/// The text in batches of `batch_tables` `[[agent]]` tables; `None` when it must be parsed whole
/// instead (too few tables to be worth it, a construct that makes splitting unsafe, or a batch
/// that does not parse: then only the whole-file parse places the error exactly).
fn parse_batched(
    text: &str,
    path: &Path,
    batch_tables: usize,
) -> Option<Result<Watchlist, ConfigErrors>> {
    let plan = BatchPlan::of(text, batch_tables)?;
    let mut checker = Checker::new(path, text, plan.tables);
    for range in plan.batches(text.len()) {
        // Any error: drop what was built (the `?` returns) before the whole-file parse starts.
        let raw: RawWatchlist = toml::from_str(&text[range.clone()]).ok()?;
        for entry in raw.agent {
            checker.agent(entry, range.start);
        }
    }
    Some(checker.finish(path))
}

/// Where to split a watchlist: the byte offsets where batches start.
#[derive(Debug, PartialEq, Eq)]
struct BatchPlan {
    /// Start of every batch; the first is 0, so the head (comments before the first header) is
    /// parsed with the first batch, and every other one is the start of an `[[agent]]` line.
    starts: Vec<usize>,
    /// How many `[[agent]]` header lines the file has.
    tables: usize,
}

impl BatchPlan {
    /// `None` unless splitting is both safe and useful: no multi-line string anywhere (a
    /// header-like line inside one is not a header), nothing but blank and comment lines before
    /// the first `[[agent]]` header (top-level keys such as `agent = []` interact with the
    /// tables), and more than one batch.
    fn of(text: &str, batch_tables: usize) -> Option<BatchPlan> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let batch_tables = batch_tables.max(1);
        let mut starts = vec![0];
        let mut tables = 0;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if is_agent_header(line) {
                if tables > 0 && tables % batch_tables == 0 {
                    starts.push(offset);
                }
                tables += 1;
            } else if tables == 0 && !is_blank_or_comment(line) {
                return None;
            }
            offset += line.len();
        }
        (starts.len() > 1).then_some(BatchPlan { starts, tables })
    }

    /// The byte ranges of the batches, in file order, covering the whole text.
    fn batches(&self, len: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let ends = self.starts.iter().skip(1).copied().chain([len]);
        self.starts.iter().zip(ends).map(|(&start, end)| start..end)
    }
}

/// TOML whitespace.
fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The line without its line ending.
fn line_body(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// `^[ \t]*\[\[[ \t]*agent[ \t]*\]\][ \t]*(#.*)?$`, the header of an `[[agent]]` table. (A
/// quoted `[["agent"]]` does not match: it stays inside its batch, which is still correct.)
fn is_agent_header(line: &str) -> bool {
    let header = || {
        let rest = line_body(line)
            .trim_start_matches(is_ws)
            .strip_prefix("[[")?;
        let rest = rest.trim_start_matches(is_ws).strip_prefix("agent")?;
        let rest = rest.trim_start_matches(is_ws).strip_prefix("]]")?;
        let rest = rest.trim_start_matches(is_ws);
        Some(rest.is_empty() || rest.starts_with('#'))
    };
    header().unwrap_or(false)
}

fn is_blank_or_comment(line: &str) -> bool {
    let rest = line_body(line).trim_start_matches(is_ws);
    rest.is_empty() || rest.starts_with('#')
}

/// Validates `[[agent]]` tables in file order, whichever way they were parsed.
struct Checker<'a> {
    problems: ProblemList<'a>,
    /// Uuid (as a number, so case does not matter) → byte offset of its first occurrence.
    seen: HashMap<u128, usize>,
    agents: Vec<Agent>,
    assigned: Vec<Assigned>,
    /// Every distinct tag set so far, shared by the agents that carry it.
    tag_sets: HashMap<Box<[Box<str>]>, Arc<Facts>>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path, text: &'a str, tables: usize) -> Self {
        Checker {
            problems: ProblemList::new(path, text),
            seen: HashMap::with_capacity(tables),
            agents: Vec::with_capacity(tables),
            assigned: Vec::new(),
            tag_sets: HashMap::new(),
        }
    }

    /// Checks `tags = [...]`, each problem at its place; the valid tags as shared facts.
    fn tags(
        &mut self,
        tags: Spanned<Vec<Spanned<String>>>,
        shift: impl Fn(Range<usize>) -> Range<usize>,
    ) -> Option<Arc<Facts>> {
        let problems = &mut self.problems;
        if tags.get_ref().len() > MAX_TAGS {
            problems.at(
                shift(tags.span()),
                format!(
                    "`tags` has {} entries; write at most {MAX_TAGS} (a tag names a group of \
                     hosts for the policy: one per role, tier or owner)",
                    tags.get_ref().len()
                ),
            );
            return None;
        }
        let mut kept: Vec<Box<str>> = Vec::with_capacity(tags.get_ref().len());
        for tag in tags.into_inner() {
            let text = tag.get_ref();
            if text.trim().is_empty() {
                problems.at(
                    shift(tag.span()),
                    "a tag is empty: write a tag such as \"web\", or remove it from `tags`",
                );
            } else if let Some(message) = text_problem("tags", text, MAX_TAG_CHARS) {
                problems.at(shift(tag.span()), message);
            } else {
                kept.push(tag.into_inner().into_boxed_str());
            }
        }
        let facts = Facts::new(kept, None, false);
        if facts.is_empty() {
            return None;
        }
        let shared = self
            .tag_sets
            .entry(facts.tags.clone())
            .or_insert_with(|| Arc::new(facts));
        Some(Arc::clone(shared))
    }

    /// Checks one table; `offset` is where the text it was parsed from starts in the file.
    fn agent(&mut self, entry: Spanned<RawAgent>, offset: usize) {
        let shift = |span: Range<usize>| span.start + offset..span.end + offset;
        let entry_span = shift(entry.span());
        let RawAgent {
            uuid,
            name,
            account,
            tags,
        } = entry.into_inner();
        let facts = tags.and_then(|tags| self.tags(tags, shift));
        let problems = &mut self.problems;
        let account = match account {
            None => None,
            Some(account) if crate::account::valid_account_name(account.get_ref()) => {
                let (line, column) = problems.line_col_of(&shift(account.span()));
                Some((account.into_inner(), line, column))
            }
            Some(account) => {
                problems.at(
                    shift(account.span()),
                    format!(
                        "`account` = {} is not an account name: write the `name` of an \
                         [[account]] in the config (lower-case letters, digits, `_` and `-`), \
                         or remove the line for the account this watchlist belongs to",
                        shown(account.get_ref())
                    ),
                );
                None
            }
        };
        let name = match name {
            None => None,
            Some(name) => {
                let text = name.get_ref();
                if text.trim().is_empty() {
                    problems.at(
                        shift(name.span()),
                        "`name` is empty: write a name such as name = \"web-01\", or remove \
                         the line",
                    );
                    None
                } else if let Some(message) = text_problem("name", text, MAX_NAME_CHARS) {
                    problems.at(shift(name.span()), message);
                    None
                } else {
                    let mut name = name.into_inner();
                    name.shrink_to_fit();
                    Some(name)
                }
            }
        };
        let Some(uuid) = uuid else {
            problems.at(
                entry_span,
                "this [[agent]] has no `uuid`: add uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\" \
                 (the agent's Uuid from the CWP console)",
            );
            return;
        };
        let span = shift(uuid.span());
        let Ok(parsed) = AgentUuid::parse(uuid.get_ref()) else {
            problems.at(
                span,
                format!(
                    "`uuid` = {} is not an agent Uuid; write 8-4-4-4-12 hex digits, e.g. \
                     uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"",
                    shown(uuid.get_ref())
                ),
            );
            return;
        };
        let value = parsed.value();
        if let Some(&first) = self.seen.get(&value) {
            let first_line = problems.line_of(&(first..first));
            let this_line = problems.line_of(&span);
            problems.at(
                span,
                format!(
                    "duplicate agent uuid {parsed}: listed on line {first_line} and line \
                     {this_line} (Uuids are compared without case); remove one of the two"
                ),
            );
            return;
        }
        self.seen.insert(value, span.start);
        if let Some((account, line, column)) = account {
            self.assigned.push(Assigned {
                index: self.agents.len(),
                account,
                line,
                column,
            });
        }
        self.agents.push(Agent {
            uuid: parsed,
            name,
            facts,
        });
    }

    fn finish(self, path: &Path) -> Result<Watchlist, ConfigErrors> {
        let Checker {
            problems,
            seen,
            mut agents,
            assigned,
            tag_sets,
        } = self;
        drop((seen, tag_sets));
        problems.finish()?;
        agents.shrink_to_fit();
        Ok(Watchlist {
            path: path.to_path_buf(),
            agents,
            assigned,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/watchlist")
            .join(name)
    }

    fn parse(text: &str) -> Result<Watchlist, ConfigErrors> {
        Watchlist::from_toml_str(text, Path::new("watchlist.toml"))
    }

    #[test]
    fn good_file_is_normalized_to_lower_case() {
        let path = fixture("good.toml");
        let watchlist = Watchlist::load(&path).unwrap();
        assert_eq!(watchlist.path, path);
        assert_eq!(
            watchlist.agents,
            vec![
                Agent {
                    uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap(),
                    name: Some("web-01".into()),
                    facts: None,
                },
                Agent {
                    uuid: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".parse().unwrap(),
                    name: None,
                    facts: None,
                },
                Agent {
                    uuid: "f47ac10b-58cc-4372-a567-0e02b2c3d479".parse().unwrap(),
                    name: Some("db-01".into()),
                    facts: None,
                },
            ]
        );
    }

    #[test]
    fn example_watchlist_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/watchlist.example.toml");
        assert_eq!(Watchlist::load(&path).unwrap().agents.len(), 3);
    }

    #[test]
    fn every_bad_uuid_is_reported_with_its_line() {
        let errors = Watchlist::load(&fixture("bad-uuid.toml")).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Invalid");
        let lines: Vec<_> = errors.problems.iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(
            lines,
            vec![(Some(5), Some(8)), (Some(9), Some(8))],
            "{errors}"
        );
        for problem in &errors.problems {
            assert!(problem.message.contains("8-4-4-4-12 hex digits"));
        }
        assert!(
            errors.problems[0]
                .message
                .contains("\"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd\"")
        );
    }

    #[test]
    fn duplicate_names_both_lines() {
        let errors = Watchlist::load(&fixture("duplicate.toml")).unwrap_err();
        assert_eq!(errors.problems.len(), 1, "{errors}");
        let problem = &errors.problems[0];
        assert_eq!(problem.line, Some(9));
        assert!(
            problem.message.contains("line 2 and line 9"),
            "{}",
            problem.message
        );
        assert!(
            problem
                .message
                .contains("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1")
        );
    }

    #[test]
    fn type_errors_point_at_the_watchlist_example() {
        let errors = parse("agent = \"x\"\n").unwrap_err();
        let message = &errors.problems[0].message;
        assert!(
            message.contains("config/watchlist.example.toml"),
            "{message}"
        );
        assert!(!message.contains("config.example.toml"), "{message}");
    }

    #[test]
    fn empty_watchlist_is_valid() {
        assert!(
            Watchlist::load(&fixture("empty.toml"))
                .unwrap()
                .agents
                .is_empty()
        );
        assert!(parse("").unwrap().agents.is_empty());
        assert!(parse("agent = []").unwrap().agents.is_empty());
    }

    #[test]
    fn unknown_keys_and_missing_uuid() {
        let errors = Watchlist::load(&fixture("unknown-key.toml")).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Syntax");
        let problem = &errors.problems[0];
        assert_eq!(problem.line, Some(3));
        assert!(problem.message.contains("`hostname`") && problem.message.contains("`name`"));

        let errors =
            parse("[[agents]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n").unwrap_err();
        assert!(errors.problems[0].message.contains("`agent`"), "{errors}");

        let errors =
            parse("[[agent]]\nname = \"x\"\n\n[[agent]]\nname = \"\"\nuuid = \"x\"\n").unwrap_err();
        assert_eq!(errors.problems.len(), 3, "{errors}");
        assert_eq!(errors.problems[0].line, Some(1));
        assert!(errors.problems[0].message.contains("has no `uuid`"));
        assert!(errors.problems[1].message.contains("`name` is empty"));
        assert!(errors.problems[2].message.contains("not an agent Uuid"));

        let errors =
            parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"a\\nb\"\n")
                .unwrap_err();
        assert!(errors.problems[0].message.contains("a control character"));
    }

    /// Batches of `batch` tables (which must really be batched) against the whole-file parse.
    fn assert_batches_match_whole(text: &str, batch: usize) -> Result<Watchlist, ConfigErrors> {
        let path = Path::new("watchlist.toml");
        let plan = BatchPlan::of(text, batch).expect("this text is split");
        assert!(plan.starts.len() > 1, "{plan:?}");
        let batched = parse_batched(text, path, batch).expect("every batch parses");
        let whole = parse_whole(text, path);
        assert_eq!(batched, whole, "batch size {batch}");
        assert_eq!(parse(text), whole);
        whole
    }

    #[test]
    fn batches_give_the_same_agents_and_problem_positions_as_one_parse() {
        let uuid = |i: usize| format!("{i:08x}-0000-4000-8000-{i:012x}");
        let mut text = String::from("# comment before the first table\n\n   # indented comment\n");
        for i in 0..40 {
            // Vary the header's spelling, so batches start at every allowed form.
            text.push_str(match i % 4 {
                0 => "[[agent]]\n",
                1 => "  [[ agent ]]   # with a comment\n",
                2 => "[[agent]]\r\n",
                _ => "\t[[agent]]\t\n",
            });
            match i {
                3 => text.push_str("name = \"no uuid\"\n"),
                7 => text.push_str("uuid = \"not-a-uuid\"\nname = \"\"\n"),
                12 => text.push_str(&format!("uuid = \"{}\"\n", uuid(2).to_uppercase())),
                18 => text.push_str(&format!("uuid = \"{}\"\nname = \"a\\tb\"\n", uuid(18))),
                25 => text.push_str(&format!("name = \"ü-é\"\nuuid = \"{}\"\n", uuid(99))),
                31 | 39 => text.push_str(&format!("uuid = \"{}\"\n", uuid(30))),
                _ => text.push_str(&format!("uuid = \"{}\"\nname = \"h-{i}\"\n", uuid(i))),
            }
            text.push('\n');
        }
        for batch in [1, 2, 3, 7, 39] {
            let errors = assert_batches_match_whole(&text, batch).unwrap_err();
            let places: Vec<_> = errors
                .problems
                .iter()
                .map(|p| (p.line.unwrap(), p.column.unwrap()))
                .collect();
            assert_eq!(
                places,
                vec![
                    (16, 2),
                    (32, 8),
                    (33, 8),
                    (52, 8),
                    (76, 8),
                    (127, 8),
                    (158, 8)
                ],
                "{errors}"
            );
            assert!(errors.problems[0].message.contains("has no `uuid`"));
            assert!(errors.problems[3].message.contains("line 13 and line 52"));
            assert!(errors.problems[4].message.contains("a control character"));
            assert!(errors.problems[6].message.contains("line 123 and line 158"));
        }

        // Without problems, the agents match too.
        let good = big_watchlist(50);
        for batch in [1, 4, 49] {
            let watchlist = assert_batches_match_whole(&good, batch).unwrap();
            assert_eq!(watchlist.agents.len(), 50);
        }
    }

    #[test]
    fn unsafe_or_unparsable_batches_fall_back_to_one_parse() {
        let good = big_watchlist(6);
        let path = Path::new("watchlist.toml");
        // A syntax error in the fourth batch: the batches give up, the whole parse places it.
        let broken = good.replacen("name = \"host-3\"", "name = host-3", 1);
        assert!(BatchPlan::of(&broken, 1).is_some());
        assert_eq!(parse_batched(&broken, path, 1), None);
        let errors = parse(&broken).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Syntax");
        assert_eq!(errors.problems[0].line, Some(15), "{errors}");

        // Not split at all: multi-line strings, keys before the first table, too few tables.
        for text in [
            format!("{good}[[agent]]\nname = \"\"\"\n[[agent]]\n\"\"\"\n"),
            format!("{good}[[agent]]\nname = '''x'''\n"),
            format!("agent = []\n{good}"),
            format!("[[\"agent\"]]\n{good}"),
        ] {
            assert_eq!(BatchPlan::of(&text, 1), None, "{text}");
            assert_eq!(parse_batched(&text, path, 1), None);
            assert_eq!(parse(&text), parse_whole(&text, path));
            assert!(parse(&text).is_err());
        }
        assert_eq!(BatchPlan::of(&good, 6), None);

        // The header pattern.
        for header in [
            "[[agent]]",
            " [[ agent ]] # x",
            "[[agent]]\r\n",
            "[[agent]]#",
        ] {
            assert!(is_agent_header(header), "{header:?}");
        }
        for other in [
            "[agent]",
            "[[agents]]",
            "[[agent.x]]",
            "[[agent]] x",
            "# [[agent]]",
        ] {
            assert!(!is_agent_header(other), "{other:?}");
        }
    }

    /// Issue 8 #12: a 5 MB name and names with U+2028 or U+202E passed and reached every log
    /// line. A name is at most 256 characters, without control characters, line or paragraph
    /// separators or bidirectional controls; each refusal is placed at the value and names the
    /// character.
    #[test]
    fn names_are_bounded_and_free_of_controls_separators_and_bidi() {
        let named = |name: &str| {
            parse(&format!(
                "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"{name}\"\n"
            ))
        };
        let longest = "é".repeat(256);
        assert_eq!(
            named(&longest).unwrap().agents[0].name.as_deref(),
            Some(longest.as_str())
        );
        assert!(named("web-01 (主) ünïcode ok").is_ok());
        let errors = named(&"x".repeat(5 << 20)).unwrap_err();
        let problem = &errors.problems[0];
        assert_eq!((problem.line, problem.column), (Some(3), Some(8)));
        assert!(
            problem
                .message
                .contains("`name` is 5242880 characters long")
                && problem.message.contains("at most 256"),
            "{problem}"
        );
        assert!(problem.message.len() < 300, "the value is cut short");
        for (written, code, what) in [
            ("a\\u2028b", "U+2028", "line separator"),
            ("a\\u2029b", "U+2029", "paragraph separator"),
            ("a\\u202Eb", "U+202E", "bidirectional"),
            ("a\\u202Ab", "U+202A", "bidirectional"),
            ("a\\u200Eb", "U+200E", "bidirectional"),
            ("a\\u200Fb", "U+200F", "bidirectional"),
            ("a\\u2066b", "U+2066", "bidirectional"),
            ("a\\u2069b", "U+2069", "bidirectional"),
            ("a\\u061Cb", "U+061C", "bidirectional"),
            ("a\\u0085b", "U+0085", "control character"),
            ("a\\u009Bb", "U+009B", "control character"),
            ("a\\u007Fb", "U+007F", "control character"),
            ("a\\u001Bb", "U+001B", "control character"),
            ("a\\tb", "U+0009", "control character"),
        ] {
            let errors = named(written).unwrap_err();
            assert_eq!(errors.problems.len(), 1, "{written}: {errors}");
            let problem = &errors.problems[0];
            assert_eq!(
                (problem.line, problem.column),
                (Some(3), Some(8)),
                "{written}"
            );
            assert!(
                problem.message.contains(code) && problem.message.contains(what),
                "{written}: {problem}"
            );
            assert!(problem.message.contains("at character 2"), "{problem}");
        }
    }

    proptest::proptest! {
        /// Whatever a name holds, a forbidden character anywhere in it is refused, and an
        /// accepted name has none and at most 256 characters.
        #[test]
        fn no_forbidden_character_gets_through(
            name in "\\PC{0,300}",
            bad in proptest::sample::select(vec![
                '\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{9f}', '\u{2028}', '\u{2029}',
                '\u{200e}', '\u{200f}', '\u{202a}', '\u{202e}', '\u{2066}', '\u{2069}',
                '\u{61c}',
            ]),
            at in 0usize..300,
        ) {
            let toml_string = |text: &str| toml::Value::String(text.to_owned()).to_string();
            let text = |name: &str| format!(
                "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = {}\n",
                toml_string(name)
            );
            if let Ok(watchlist) = parse(&text(&name)) {
                let accepted = watchlist.agents[0].name.clone().unwrap_or_default();
                proptest::prop_assert!(accepted.chars().count() <= 256);
                let clean = accepted.chars().all(|c| !c.is_control()
                    && !matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}'
                        | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{61c}'));
                proptest::prop_assert!(clean, "{:?}", accepted);
            }
            let mut chars: Vec<char> = name.chars().collect();
            chars.insert(at.min(chars.len()), bad);
            let with_bad: String = chars.into_iter().collect();
            proptest::prop_assert!(parse(&text(&with_bad)).is_err(), "{:?}", with_bad);
        }
    }

    fn big_watchlist(count: usize) -> String {
        let mut text = String::with_capacity(count * 80);
        for i in 0..count {
            text.push_str(&format!(
                "[[agent]]\nuuid = \"{:08x}-0000-4000-8000-{:012x}\"\nname = \"host-{i}\"\n\n",
                i, i
            ));
        }
        text
    }

    #[test]
    fn hundred_thousand_agents() {
        let text = big_watchlist(100_000);
        let started = std::time::Instant::now();
        let watchlist = parse(&text).unwrap();
        println!(
            "100,000 agents ({} MB) parsed in {:?}",
            text.len() >> 20,
            started.elapsed()
        );
        assert_eq!(watchlist.agents.len(), 100_000);
        assert_eq!(watchlist.agents[99_999].name.as_deref(), Some("host-99999"));

        // Every agent duplicated: 100,000 problems, each naming both lines, still quick.
        let doubled = format!("{text}{text}");
        let started = std::time::Instant::now();
        let errors = parse(&doubled).unwrap_err();
        println!("100,000 duplicates reported in {:?}", started.elapsed());
        assert_eq!(errors.problems.len(), 100_000);
        assert!(
            errors.problems[0]
                .message
                .contains("line 2 and line 400002"),
            "{}",
            errors.problems[0]
        );
    }

    /// Tags: each refused at its own line:column, the whole list when it is too long;
    /// kept sorted with duplicates folded, and one shared set for agents tagged alike.
    #[test]
    fn tags_are_checked_at_their_place_sorted_folded_and_shared() {
        let w = parse(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
             tags = [\"web\", \"prod\", \"web\"]\n\
             [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\ntags = [\"prod\", \"web\"]\n\
             [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd3\"\ntags = []\n",
        )
        .unwrap();
        let tags: Vec<&str> = w.agents[0].tags().iter().map(|t| &**t).collect();
        assert_eq!(tags, ["prod", "web"]);
        assert_eq!(w.agents[0].facts, w.agents[1].facts);
        assert!(
            Arc::ptr_eq(
                w.agents[0].facts.as_ref().unwrap(),
                w.agents[1].facts.as_ref().unwrap()
            ),
            "one set for both"
        );
        assert_eq!(w.agents[2].facts, None, "no tags: nothing stored");
        let facts = w.agents[0].facts.as_deref().unwrap();
        assert_eq!((facts.region(), facts.wan()), (None, false));

        let problems = parse(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
             tags = [\"ok\", \"\", \"a\\u202Eb\", \"  \"]\n\
             [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\ntags = [\"x\", \"y\\tz\"]\n",
        )
        .unwrap_err()
        .problems;
        let places: Vec<_> = problems
            .iter()
            .map(|p| (p.line.unwrap(), p.column.unwrap()))
            .collect();
        assert_eq!(places, [(3, 15), (3, 19), (3, 31), (6, 14)], "{problems:?}");
        assert!(problems[0].message.contains("a tag is empty"));
        assert!(problems[1].message.contains("U+202E"), "{}", problems[1]);
        assert!(problems[2].message.contains("a tag is empty"));
        assert!(problems[3].message.contains("U+0009"), "{}", problems[3]);

        let long = "t".repeat(MAX_TAG_CHARS + 1);
        let problems = parse(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"{long}\"]\n"
        ))
        .unwrap_err()
        .problems;
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(9)));
        assert!(
            problems[0].message.contains("65 characters long")
                && problems[0].message.contains("at most 64"),
            "{}",
            problems[0]
        );
        assert!(
            parse(&format!(
                "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"{}\"]\n",
                "é".repeat(MAX_TAG_CHARS)
            ))
            .is_ok(),
            "64 characters (128 bytes) is the limit"
        );

        // Too many: one problem at the list, however long it is.
        for n in [MAX_TAGS + 1, 100_000] {
            let list: Vec<String> = (0..n).map(|i| format!("\"t{i}\"")).collect();
            let problems = parse(&format!(
                "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [{}]\n",
                list.join(", ")
            ))
            .unwrap_err()
            .problems;
            assert_eq!(problems.len(), 1);
            assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(8)));
            assert!(
                problems[0]
                    .message
                    .contains(&format!("`tags` has {n} entries"))
                    && problems[0].message.contains("at most 16"),
                "{}",
                problems[0]
            );
        }
        let list: Vec<String> = (0..MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
        let w = parse(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [{}]\n",
            list.join(", ")
        ))
        .unwrap();
        assert_eq!(w.agents[0].tags().len(), MAX_TAGS);

        // Not a list of strings: a type error that names the key.
        let errors =
            parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = \"web\"\n")
                .unwrap_err();
        assert_eq!(errors.problems[0].line, Some(3), "{errors}");
        let errors =
            parse("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [1]\n")
                .unwrap_err();
        assert_eq!(errors.problems[0].line, Some(3), "{errors}");
    }

    #[test]
    fn tags_survive_batching() {
        let mut text = String::new();
        for i in 0..30 {
            text.push_str(&format!(
                "[[agent]]\nuuid = \"{i:08x}-0000-4000-8000-{i:012x}\"\ntags = [\"t{}\", \"all\"]\n",
                i % 3
            ));
        }
        text.push_str(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntags = [\"\"]\n",
        );
        let errors = assert_batches_match_whole(&text, 4).unwrap_err();
        assert_eq!(
            (errors.problems[0].line, errors.problems[0].column),
            (Some(93), Some(9))
        );
        let good = text.rsplit_once("[[agent]]").unwrap().0;
        let w = assert_batches_match_whole(good, 4).unwrap();
        let tags: Vec<&str> = w.agents[4].tags().iter().map(|t| &**t).collect();
        assert_eq!(tags, ["all", "t1"]);
    }

    #[test]
    fn merged_facts_are_the_union_of_tags_with_region_and_wan_from_discovery() {
        let listed = Facts::new(["web", "prod"], None, false).shared();
        let found = Facts::new(["prod", "eu"], Some("ap-guangzhou".into()), true).shared();
        let merged = Facts::merged(listed.as_ref(), found.as_ref()).unwrap();
        let tags: Vec<&str> = merged.tags().iter().map(|t| &**t).collect();
        assert_eq!(tags, ["eu", "prod", "web"]);
        assert_eq!(
            (merged.region(), merged.wan()),
            (Some("ap-guangzhou"), true)
        );
        assert_eq!(Facts::merged(None, None), None);
        assert!(Arc::ptr_eq(
            &Facts::merged(listed.as_ref(), None).unwrap(),
            listed.as_ref().unwrap()
        ));
        // Listed tags all found: the discovered set as is.
        let sub = Facts::new(["eu"], None, false).shared();
        assert!(Arc::ptr_eq(
            &Facts::merged(sub.as_ref(), found.as_ref()).unwrap(),
            found.as_ref().unwrap()
        ));
        assert_eq!(
            Facts::new(Vec::<String>::new(), Some("".into()), false).shared(),
            None
        );
    }

    #[test]
    fn an_account_key_is_kept_with_its_place_and_checked_by_rule() {
        let w = parse(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\
             [[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2\"\naccount = \"prod\"\n",
        )
        .unwrap();
        assert_eq!(
            w.assigned,
            [Assigned {
                index: 1,
                account: "prod".into(),
                line: 5,
                column: 11
            }]
        );
        let problems = parse(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\naccount = \"Prod X\"\n",
        )
        .unwrap_err()
        .problems;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!((problems[0].line, problems[0].column), (Some(3), Some(11)));
        assert!(problems[0].message.contains("not an account name"));
    }
}
