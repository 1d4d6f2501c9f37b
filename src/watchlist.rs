//! Watchlist file: the CWP agents to watch.
//!
//! ```toml
//! [[agent]]
//! uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
//! name = "web-01"              # optional, shown in events
//! ```
//!
//! Uuids are checked (8-4-4-4-12 hex digits) and **normalized to lower case**, so a Uuid copied
//! in upper case from the console and the API's lower-case answers name the same agent; a
//! duplicate (compared without case) is a problem naming both lines. An empty watchlist is valid.
//!
//! It must scale to 100,000 agents: the text is deserialized straight into small structs with
//! `Spanned` strings (no `toml::Value` tree of owned values), duplicates are found with one
//! `HashMap` pass, and line numbers are computed only for the problems.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use crate::config::{ConfigErrors, ProblemList, read_text, shown};

/// One watched agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Agent {
    /// The CWP agent Uuid, lower case.
    pub uuid: String,
    /// Shown in events; `None` when the file gives none.
    pub name: Option<String>,
}

/// The validated watchlist, agents in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watchlist {
    /// The file it was read from.
    pub path: PathBuf,
    /// Every agent once, in file order; may be empty.
    pub agents: Vec<Agent>,
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
    expecting = "an [[agent]] table with uuid and optional name"
)]
struct RawAgent {
    uuid: Option<Spanned<String>>,
    name: Option<Spanned<String>>,
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
        let mut problems = ProblemList::new(path, text);
        let raw: RawWatchlist = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                problems.syntax(&error);
                return Err(problems.finish().unwrap_err());
            }
        };
        let mut agents = Vec::with_capacity(raw.agent.len());
        // Lower-cased uuid → span of its first occurrence.
        let mut seen: HashMap<String, std::ops::Range<usize>> =
            HashMap::with_capacity(raw.agent.len());
        for entry in raw.agent {
            let entry_span = entry.span();
            let RawAgent { uuid, name } = entry.into_inner();
            let name = match name {
                None => None,
                Some(name) => {
                    let text = name.get_ref();
                    if text.trim().is_empty() {
                        problems.at(
                            name.span(),
                            "`name` is empty: write a name such as name = \"web-01\", or remove \
                             the line",
                        );
                        None
                    } else if text.chars().any(char::is_control) {
                        problems.at(
                            name.span(),
                            format!(
                                "`name` = {} contains control characters (newline, tab, ...), \
                                 which would garble log lines; write it on one line without them",
                                shown(text)
                            ),
                        );
                        None
                    } else {
                        Some(name.into_inner())
                    }
                }
            };
            let Some(uuid) = uuid else {
                problems.at(
                    entry_span,
                    "this [[agent]] has no `uuid`: add uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\" \
                     (the agent's Uuid from the CWP console)",
                );
                continue;
            };
            if !is_valid_uuid(uuid.get_ref()) {
                problems.at(
                    uuid.span(),
                    format!(
                        "`uuid` = {} is not an agent Uuid; write 8-4-4-4-12 hex digits, e.g. \
                         uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"",
                        shown(uuid.get_ref())
                    ),
                );
                continue;
            }
            let span = uuid.span();
            let lower = uuid.into_inner().to_ascii_lowercase();
            if let Some(first) = seen.get(&lower) {
                let first_line = problems.line_of(first);
                let this_line = problems.line_of(&span);
                problems.at(
                    span,
                    format!(
                        "duplicate agent uuid {lower}: listed on line {first_line} and line \
                         {this_line} (Uuids are compared without case); remove one of the two"
                    ),
                );
                continue;
            }
            seen.insert(lower.clone(), span);
            agents.push(Agent { uuid: lower, name });
        }
        problems.finish()?;
        Ok(Watchlist {
            path: path.to_path_buf(),
            agents,
        })
    }
}

/// `true` for 8-4-4-4-12 hex digits with dashes, in any case (`6B6CD843-6bc1-...`); no braces,
/// no `urn:uuid:` prefix, no surrounding spaces.
pub fn is_valid_uuid(s: &str) -> bool {
    let bytes = s.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
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
    fn uuid_shape() {
        assert!(is_valid_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(is_valid_uuid("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"));
        for bad in [
            "",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1a",
            "6b6cd8436bc14011a74cdc3fd26a7dd1",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dg1",
            "6b6cd843_6bc1-4011-a74c-dc3fd26a7dd1",
            " 6b6cd843-6bc1-4011-a74c-dc3fd26a7dd",
            "{6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1}",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dé",
        ] {
            assert!(!is_valid_uuid(bad), "{bad:?}");
        }
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
                    uuid: "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
                    name: Some("web-01".into())
                },
                Agent {
                    uuid: "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".into(),
                    name: None
                },
                Agent {
                    uuid: "f47ac10b-58cc-4372-a567-0e02b2c3d479".into(),
                    name: Some("db-01".into())
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
        assert!(errors.problems[0].message.contains("control characters"));
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
}
