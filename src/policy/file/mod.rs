//! The policy file: TOML text → checked rules, every problem placed at file:line:col in one
//! pass. The text is parsed into toml's spanned document tree (`DeTable`) and walked by hand
//! rather than deserialized into serde structs, because serde stops at the first wrong type or
//! unknown key, and `check` must list them all. Only TOML syntax errors stop the walk (the
//! parser's first one is reported, as for the config file).
//!
//! Sizes are bounded: the text ([`MAX_POLICY_BYTES`]), the rules ([`MAX_RULES`]), each list
//! ([`MAX_LIST_ENTRIES`]), the port entries and host entries of the whole file
//! ([`MAX_PORT_ENTRIES`], [`MAX_HOST_ENTRIES`]), names and globs (characters). Names, tags,
//! regions and globs may not hold control characters, line separators or bidi controls
//! ([`crate::problems::text_problem`]): they reach every event of their findings.
//!
//! The walk is one [`Reader`] whose methods live beside the part of the file they read:
//! - this file: the entry ([`parse`]), the bounds, the top-level keys (`default`, `rule`);
//! - `rule`: the `[[rule]]` list and one rule's keys (`name`, `severity`, duplicates);
//! - `hosts`: the `hosts` selector table and its lists (name globs, Uuids, accounts, labels);
//! - `entries`: the `allow` and `require` entries, strings and the table form;
//! - `values`: the small typed readers of toml values (strings, lists, globs) with their
//!   problems.

mod entries;
mod hosts;
mod rule;
mod values;

use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::evaluate::Compiled;
use super::{Capabilities, DefaultAction};
use crate::problems::{ConfigErrors, ProblemList, TypeHints, shown};

/// The largest policy file, in bytes: 10,000 rules of a few lines each is about 2 MB.
pub const MAX_POLICY_BYTES: usize = 8 << 20;
/// The most `[[rule]]` tables in one file.
pub const MAX_RULES: usize = 10_000;
/// The most entries in one list (`allow`, `require`, each key of `hosts`).
pub const MAX_LIST_ENTRIES: usize = 10_000;
/// The most `allow` and `require` entries in the whole file.
pub const MAX_PORT_ENTRIES: usize = 100_000;
/// The most `hosts` list entries in the whole file.
pub const MAX_HOST_ENTRIES: usize = 100_000;
/// The longest rule name, in characters (events carry it).
pub const MAX_RULE_NAME_CHARS: usize = 128;
/// The longest tag or region, in characters.
pub const MAX_LABEL_CHARS: usize = 256;

const HINTS: TypeHints = TypeHints {
    example_file: "config/policy.example.toml",
    for_key: |_| None,
};

type Value<'i> = Spanned<DeValue<'i>>;

/// Parses and checks `text`; see the module doc.
pub(crate) fn parse(text: &str, path: &Path, caps: Capabilities) -> Result<Compiled, ConfigErrors> {
    let mut problems = ProblemList::new(path, text);
    if text.len() > MAX_POLICY_BYTES {
        let reported = problems.general(format!(
            "the policy file is {} bytes, more than the {} MiB a policy may have; split \
             hosts into tags instead of listing them, or check that `[policy] file` names the \
             policy",
            text.len(),
            MAX_POLICY_BYTES >> 20
        ));
        return Err(problems.into_errors(reported));
    }
    let document = match DeTable::parse(text) {
        Ok(document) => document,
        Err(error) => {
            let reported = problems.syntax(&error, &HINTS);
            return Err(problems.into_errors(reported));
        }
    };
    let mut reader = Reader {
        problems,
        caps,
        port_entries: 0,
        host_entries: 0,
    };
    let mut default = DefaultAction::Allow;
    let mut rules = Vec::new();
    for (key, value) in document.get_ref().iter() {
        match key.get_ref().as_ref() {
            "default" => {
                if let Ok(action) = reader.default_action(value) {
                    default = action;
                }
            }
            "rule" => rules = reader.rules(value),
            _ => reader.unknown_key(key, "at the top of the policy file", &["default", "rule"]),
        }
    }
    reader.problems.finish()?;
    Ok(Compiled::new(default, rules))
}

/// Walks the document, recording problems.
struct Reader<'t> {
    problems: ProblemList<'t>,
    caps: Capabilities,
    /// `allow` and `require` entries seen so far.
    port_entries: usize,
    /// `hosts` list entries seen so far.
    host_entries: usize,
}

/// A value was refused; its problem is recorded in the [`Reader`]'s list.
#[derive(Debug, Clone, Copy)]
struct Refused;
impl Reader<'_> {
    fn default_action(&mut self, value: &Value<'_>) -> Result<DefaultAction, Refused> {
        let wanted = "\"allow\" (ports of hosts no rule selects are not reported) or \"alert\" \
                      (every one of them is reported as unexpected)";
        match self.string(value, "default", wanted)? {
            "allow" => Ok(DefaultAction::Allow),
            "alert" => Ok(DefaultAction::Alert),
            other => Err(self.at(
                value.span(),
                format!(
                    "`default` = {} is not a default; write {wanted}",
                    shown(other)
                ),
            )),
        }
    }
}
