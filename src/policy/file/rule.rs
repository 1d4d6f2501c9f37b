//! A `[[rule]]` table: the list of rules (their bound, duplicate names) and one rule's keys
//! (`name`, `severity`, with `hosts`, `allow` and `require` handed to their readers).

use std::collections::HashMap;
use std::ops::Range;

use toml::de::DeValue;

use super::{MAX_RULE_NAME_CHARS, MAX_RULES, Reader, Refused, Value};
use crate::policy::Severity;
use crate::policy::evaluate::{DEFAULT_RULE, ParsedRule};
use crate::policy::select::Selector;
use crate::problems::{shown, text_problem};

impl Reader<'_> {
    /// The `[[rule]]` tables that have no problem, in file order.
    pub(super) fn rules(&mut self, value: &Value<'_>) -> Vec<ParsedRule> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(value, "rule", "a list of [[rule]] tables");
            return Vec::new();
        };
        if items.len() > MAX_RULES {
            self.at(
                value.span(),
                format!(
                    "the file has {} rules; a policy may have at most {MAX_RULES}: merge rules \
                     that allow the same ports",
                    items.len()
                ),
            );
            return Vec::new();
        }
        let mut rules = Vec::with_capacity(items.len());
        // Name (as written) → where it was first given; names are compared before the rest
        // of a rule is checked, so a duplicate is found even in a rule with other problems.
        let mut names: HashMap<&str, Range<usize>> = HashMap::with_capacity(items.len());
        for item in items.iter() {
            let mut duplicate = false;
            if let DeValue::Table(table) = item.get_ref()
                && let Some(name) = table.get("name")
                && let DeValue::String(text) = name.get_ref()
            {
                let text: &str = text.as_ref();
                if let Some(first) = names.get(text) {
                    let first_line = self.problems.line_of(first);
                    self.at(
                        name.span(),
                        format!(
                            "duplicate rule name {}: already the name of the rule on line \
                             {first_line}; names are unique (events carry them), rename one",
                            shown(text)
                        ),
                    );
                    duplicate = true;
                } else {
                    names.insert(text, name.span());
                }
            }
            if let Some(rule) = self.rule(item)
                && !duplicate
            {
                rules.push(rule);
            }
        }
        rules
    }

    /// One `[[rule]]`, or `None` when it has a problem.
    fn rule(&mut self, item: &Value<'_>) -> Option<ParsedRule> {
        let DeValue::Table(table) = item.get_ref() else {
            self.wrong_type(item, "rule", "a [[rule]] table");
            return None;
        };
        let before = self.problems.problems.len();
        let mut name = None;
        let mut severity = Severity::Warning;
        let mut hosts = Selector::default();
        let mut allow = Vec::new();
        let mut require = Vec::new();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => name = self.rule_name(value).ok(),
                "severity" => {
                    if let Ok(s) = self.severity(value) {
                        severity = s;
                    }
                }
                "hosts" => {
                    if let Ok(h) = self.hosts(value) {
                        hosts = h;
                    }
                }
                "allow" => allow = self.port_list(value, "allow"),
                "require" => require = self.port_list(value, "require"),
                _ => self.unknown_key(
                    key,
                    "in a [[rule]]",
                    &["name", "hosts", "allow", "require", "severity"],
                ),
            }
        }
        if !table.contains_key("name") {
            self.at(
                item.span(),
                "this [[rule]] has no `name`: add name = \"web tier\" (unique in the file; \
                 the events of its findings carry it)",
            );
        }
        let name = name?;
        if self.problems.problems.len() > before {
            return None;
        }
        Some(ParsedRule {
            name,
            severity,
            hosts,
            allow,
            require,
        })
    }

    fn rule_name(&mut self, value: &Value<'_>) -> Result<Box<str>, Refused> {
        let name = self.string(value, "name", "a string, e.g. name = \"web tier\"")?;
        if name.trim().is_empty() {
            return Err(self.at(
                value.span(),
                "`name` is empty: write a name such as name = \"web tier\"",
            ));
        }
        if let Some(message) = text_problem("name", name, MAX_RULE_NAME_CHARS) {
            return Err(self.at(value.span(), message));
        }
        if name == DEFAULT_RULE {
            return Err(self.at(
                value.span(),
                "`name` = \"default\" is taken: findings of the file's `default = \"alert\"` \
                 carry rule \"default\"; choose another name",
            ));
        }
        Ok(name.into())
    }

    fn severity(&mut self, value: &Value<'_>) -> Result<Severity, Refused> {
        let wanted = "\"info\", \"notice\", \"warning\" (the default) or \"critical\"";
        let text = self.string(value, "severity", wanted)?;
        Severity::parse(text).ok_or_else(|| {
            self.at(
                value.span(),
                format!(
                    "`severity` = {} is not a severity; write {wanted}",
                    shown(text)
                ),
            )
        })
    }
}
