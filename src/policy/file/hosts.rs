//! The `hosts` selector table of a rule: its keys, each list bounded over the whole file, and
//! the entries (name globs, agent Uuids, account names, tags and regions, `wan`).

use std::ops::Range;

use toml::de::DeValue;

use super::{MAX_HOST_ENTRIES, MAX_LABEL_CHARS, Reader, Refused, Value};
use crate::policy::select::{ExactSet, NameSet, Selector};
use crate::policy::spec::Glob;
use crate::problems::{shown, text_problem};

impl Reader<'_> {
    pub(super) fn hosts(&mut self, value: &Value<'_>) -> Result<Selector, Refused> {
        let DeValue::Table(table) = value.get_ref() else {
            return Err(self.wrong_type(
                value,
                "hosts",
                "a table, e.g. hosts = { tags = [\"web\"], accounts = [\"prod\"] }",
            ));
        };
        let before = self.problems.problems.len();
        let mut selector = Selector::default();
        for (key, value) in table.iter() {
            let key_name: &str = key.get_ref().as_ref();
            match key_name {
                "names" => {
                    selector.names = self
                        .host_list(value, key_name, |reader, text, span| {
                            reader.glob(text, span, "names").map(Glob::new)
                        })
                        .map(NameSet::new)
                }
                "uuids" => {
                    selector.uuids = self
                        .host_list(value, key_name, |reader, text, span| {
                            reader.uuid(text, span)
                        })
                        .map(NameSet::new)
                }
                "accounts" => {
                    selector.accounts = self
                        .host_list(value, key_name, |reader, text, span| {
                            if crate::account_name::valid_account_name(text) {
                                Ok(text.into())
                            } else {
                                Err(reader.at(
                                    span,
                                    format!(
                                        "{} is not an account name: write the `name` of an \
                                         [[account]] of the config, or \"default\" for the \
                                         top-level one",
                                        shown(text)
                                    ),
                                ))
                            }
                        })
                        .map(ExactSet::new)
                }
                "tags" | "regions" => {
                    selector_label(self, &mut selector, key_name, value);
                }
                "wan" => match value.get_ref() {
                    DeValue::Boolean(wan) => selector.wan = Some(*wan),
                    _ => {
                        self.wrong_type(
                            value,
                            "wan",
                            "true (hosts with a WAN IP) or false (hosts without)",
                        );
                    }
                },
                _ => self.unknown_key(
                    key,
                    "in `hosts`",
                    &["names", "uuids", "accounts", "tags", "regions", "wan"],
                ),
            }
        }
        if self.problems.problems.len() > before {
            return Err(Refused);
        }
        Ok(selector)
    }

    /// One list key of `hosts`; each entry through `entry`.
    fn host_list<T>(
        &mut self,
        value: &Value<'_>,
        key: &str,
        mut entry: impl FnMut(&mut Self, &str, Range<usize>) -> Result<T, Refused>,
    ) -> Option<Vec<T>> {
        let items = self
            .list(
                value,
                key,
                "a list of strings, e.g. [\"web-*\"]",
                "an empty list selects no host; remove the key so that it does not filter",
            )
            .ok()?;
        self.host_entries += items.len();
        if self.host_entries > MAX_HOST_ENTRIES {
            self.at(
                value.span(),
                format!(
                    "the file lists more than {MAX_HOST_ENTRIES} host entries in `hosts`; \
                     select hosts by tag or name glob instead"
                ),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut failed = false;
        for item in items.iter() {
            let Ok(text) = self.string(item, key, "a list of strings") else {
                failed = true;
                continue;
            };
            match entry(self, text, item.span()) {
                Ok(t) => out.push(t),
                Err(_) => failed = true,
            }
        }
        (!failed).then_some(out)
    }
    /// A Uuid or a Uuid glob, lower-cased (host Uuids are lower case).
    fn uuid(&mut self, text: &str, span: Range<usize>) -> Result<Glob, Refused> {
        let advice = "write an agent Uuid (8-4-4-4-12 hex digits), or a glob of one such as \
                      \"6b6cd843-*\"";
        let text = self.glob(text, span.clone(), "uuids")?;
        let lower = text.to_ascii_lowercase();
        let wild = lower.contains(['*', '?']);
        let valid = if wild {
            lower
                .chars()
                .all(|c| c.is_ascii_hexdigit() || matches!(c, '-' | '*' | '?'))
        } else {
            crate::agent_uuid::AgentUuid::parse(&lower).is_ok()
        };
        if !valid {
            return Err(self.at(
                span,
                format!("{} is not an agent Uuid; {advice}", shown(text)),
            ));
        }
        Ok(Glob::new(&lower))
    }
}

/// `tags` or `regions` of `hosts`: exact labels.
fn selector_label(reader: &mut Reader<'_>, selector: &mut Selector, key: &str, value: &Value<'_>) {
    let what = if key == "tags" { "a tag" } else { "a region" };
    let set = reader
        .host_list(value, key, |reader, text, span| {
            if text.trim().is_empty() {
                return Err(reader.at(
                    span,
                    format!("{what} is empty: write it as the host carries it, or remove it"),
                ));
            }
            match text_problem(key, text, MAX_LABEL_CHARS) {
                Some(message) => Err(reader.at(span, message)),
                None => Ok(Box::<str>::from(text)),
            }
        })
        .map(ExactSet::new);
    if key == "tags" {
        selector.tags = set;
    } else {
        selector.regions = set;
    }
}
