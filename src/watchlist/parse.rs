//! The watchlist parsed (whole, or in batches: see `batch.rs`) into raw `[[agent]]` tables,
//! and every table checked in file order ([`Checker`]): Uuids, names, tags, accounts,
//! duplicates, each problem at its line:column.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use toml::Spanned;

use super::batch::BatchPlan;
use super::{Agent, Assigned, Facts, MAX_NAME_CHARS, MAX_TAG_CHARS, MAX_TAGS, Watchlist};
use crate::agent_uuid::AgentUuid;
use crate::problems::{ConfigErrors, ProblemList, TypeHints, shown, text_problem};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a watchlist of [[agent]] tables")]
pub(super) struct RawWatchlist {
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
}

#[derive(Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "an [[agent]] table with uuid and optional name, tags and account"
)]
pub(super) struct RawAgent {
    uuid: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
    account: Option<Spanned<String>>,
    tags: Option<Spanned<Vec<Spanned<String>>>>,
}

/// The whole text in one `toml::from_str` call: small files, and the fallback that reports syntax
/// errors exactly.
pub(super) fn parse_whole(text: &str, path: &Path) -> Result<Watchlist, ConfigErrors> {
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
pub(super) fn parse_batched(
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

/// Validates `[[agent]]` tables in file order, whichever way they were parsed.
pub(super) struct Checker<'a> {
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
            Some(account) if crate::account_name::valid_account_name(account.get_ref()) => {
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
