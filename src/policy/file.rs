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

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::evaluate::{Compiled, DEFAULT_RULE, ParsedRule};
use super::select::{ExactSet, NameSet, Selector};
use super::spec::{
    BindScope, Glob, MAX_GLOB_CHARS, PortSpec, Proto, glob_problem, parse_ports, spec_text,
    split_spec,
};
use super::{Capabilities, DefaultAction, Severity};
use crate::problems::{ConfigErrors, ProblemList, TypeHints, shown, text_problem};

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
    /// Records a problem at `span`.
    fn at(&mut self, span: Range<usize>, message: impl Into<String>) -> Refused {
        self.problems.at(span, message);
        Refused
    }

    fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        place: &str,
        known: &[&str],
    ) {
        let known = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        self.at(
            key.span(),
            format!(
                "unknown key {} {place}; the keys here are {known} (config/policy.example.toml \
                 shows each)",
                shown(key.get_ref())
            ),
        );
    }

    fn wrong_type(&mut self, value: &Value<'_>, key: &str, wanted: &str) -> Refused {
        self.at(
            value.span(),
            format!(
                "`{key}` must be {wanted}, not a {}",
                value.get_ref().type_str()
            ),
        )
    }

    fn string<'v>(
        &mut self,
        value: &'v Value<'_>,
        key: &str,
        wanted: &str,
    ) -> Result<&'v str, Refused> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text.as_ref()),
            _ => Err(self.wrong_type(value, key, wanted)),
        }
    }

    /// The items of an array, refused when empty (`empty` says why that is a mistake) or longer
    /// than [`MAX_LIST_ENTRIES`].
    fn list<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
        wanted: &str,
        empty: &str,
    ) -> Result<&'v [Value<'i>], Refused> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.wrong_type(value, key, wanted));
        };
        if items.is_empty() {
            return Err(self.at(value.span(), format!("`{key}` is empty: {empty}")));
        }
        if items.len() > MAX_LIST_ENTRIES {
            return Err(self.at(
                value.span(),
                format!(
                    "`{key}` has {} entries; a list may have at most {MAX_LIST_ENTRIES} (select \
                     hosts by tag or name glob instead of listing them, or use port ranges)",
                    items.len()
                ),
            ));
        }
        Ok(items)
    }

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

    /// The `[[rule]]` tables that have no problem, in file order.
    fn rules(&mut self, value: &Value<'_>) -> Vec<ParsedRule> {
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

    fn hosts(&mut self, value: &Value<'_>) -> Result<Selector, Refused> {
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

    /// A glob's text checked: length, white space around it, forbidden characters.
    fn glob<'s>(
        &mut self,
        text: &'s str,
        span: Range<usize>,
        what: &str,
    ) -> Result<&'s str, Refused> {
        // Forbidden characters first: they are the worse news (and U+0085 is white space too).
        if let Some(message) = text_problem(what, text, MAX_GLOB_CHARS) {
            return Err(self.at(span, message));
        }
        if let Some(message) = glob_problem(what, text) {
            return Err(self.at(span, message));
        }
        Ok(text)
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

    /// `allow` or `require`: each entry a string `PORT[-PORT][/PROCESS]` or a table.
    fn port_list(&mut self, value: &Value<'_>, key: &str) -> Vec<PortSpec> {
        let empty = if key == "allow" {
            "write the ports the hosts may open, e.g. [\"22/sshd\"], or remove the key"
        } else {
            "write the ports the hosts must have open, e.g. [\"443/nginx\"], or remove the key"
        };
        let Ok(items) = self.list(
            value,
            key,
            "a list of port entries, e.g. [\"22/sshd\", \"8000-8099/python*\"]",
            empty,
        ) else {
            return Vec::new();
        };
        self.port_entries += items.len();
        if self.port_entries > MAX_PORT_ENTRIES {
            self.at(
                value.span(),
                format!(
                    "the file has more than {MAX_PORT_ENTRIES} `allow` and `require` entries; \
                     use port ranges and process globs"
                ),
            );
            return Vec::new();
        }
        let mut specs: Vec<PortSpec> = Vec::with_capacity(items.len());
        // Canonical text → where it was first listed.
        let mut seen: HashMap<Box<str>, Range<usize>> = HashMap::with_capacity(items.len());
        for item in items.iter() {
            let spec = match item.get_ref() {
                DeValue::String(text) => self.spec_string(text, item.span(), key),
                DeValue::Table(table) => self.spec_table(table, item.span(), key),
                _ => Err(self.wrong_type(
                    item,
                    key,
                    "a list of \"PORT[-PORT][/PROCESS]\" strings or { port = ..., process = ... } \
                     tables",
                )),
            };
            let Ok(spec) = spec else { continue };
            // Compared in canonical form: "443-443/nginx" repeats "443/nginx".
            let canonical: Box<str> = spec_text(
                spec.low,
                spec.high,
                spec.process.is_some().then_some(&*spec.process_text),
                spec.proto,
                spec.bind,
                spec.user_text.as_deref(),
            )
            .into();
            if let Some(first) = seen.get(&canonical) {
                let first_line = self.problems.line_of(first);
                self.at(
                    item.span(),
                    format!(
                        "{} is listed twice in `{key}` (first on line {first_line}); remove one",
                        shown(&spec.text)
                    ),
                );
                continue;
            }
            seen.insert(canonical, item.span());
            specs.push(spec);
        }
        specs
    }

    fn spec_string(
        &mut self,
        text: &str,
        span: Range<usize>,
        key: &str,
    ) -> Result<PortSpec, Refused> {
        let (low, high, process) = split_spec(text)
            .map_err(|message| self.at(span.clone(), format!("`{key}`: {message}")))?;
        let process = match process {
            Some(glob) => Some(self.glob(glob, span, "process")?),
            None => None,
        };
        let mut spec = build_spec(low, high, process, None, None, None);
        // A string entry is named as written.
        spec.text = text.into();
        Ok(spec)
    }

    fn spec_table(
        &mut self,
        table: &DeTable<'_>,
        span: Range<usize>,
        key: &str,
    ) -> Result<PortSpec, Refused> {
        let before = self.problems.problems.len();
        let mut ports = None;
        let mut process = None;
        let mut proto = None;
        let mut bind = None;
        let mut user = None;
        for (field, value) in table.iter() {
            let field_name: &str = field.get_ref().as_ref();
            let needs = |caps: Capabilities| match field_name {
                "proto" => (!caps.proto).then_some("the protocol of a port"),
                "bind" => (!caps.bind).then_some("the address a port is bound to"),
                "user" => (!caps.user).then_some("the user a port listens as"),
                _ => None,
            };
            if let Some(lacking) = needs(self.caps) {
                let backend = if self.caps == Capabilities::YUNJING {
                    "the yunjing backend does not report"
                } else {
                    "this account's backend does not report"
                };
                let at = field.span();
                self.at(
                    at,
                    format!(
                        "`{field_name}` cannot be checked: {backend} {lacking} (yunjing \
                         reports only port, process and pid), and a condition that cannot be \
                         checked is refused rather than ignored; remove `{field_name}` from \
                         this entry, or comment the entry out until the cwp backend \
                         ([api] service = \"cwp\") is in use"
                    ),
                );
                continue;
            }
            match field_name {
                "port" => {
                    ports = match value.get_ref() {
                        DeValue::Integer(n) => {
                            let parsed = u64::from_str_radix(n.as_str(), n.radix())
                                .ok()
                                .filter(|&p| p <= u64::from(u16::MAX));
                            match parsed {
                                Some(p) => Some((p as u16, p as u16)),
                                None => {
                                    self.at(
                                        value.span(),
                                        format!(
                                            "port {n} is out of range; write a port number \
                                             from 0 to 65535"
                                        ),
                                    );
                                    None
                                }
                            }
                        }
                        DeValue::String(text) => match parse_ports(text) {
                            Ok(range) => Some(range),
                            Err(message) => {
                                self.at(value.span(), format!("`port`: {message}"));
                                None
                            }
                        },
                        _ => {
                            self.wrong_type(
                                value,
                                "port",
                                "a port number such as 5432, or a string such as \"5432\" or \
                                 \"8000-8099\"",
                            );
                            None
                        }
                    }
                }
                "process" => {
                    process = self
                        .string(
                            value,
                            "process",
                            "a process name or glob, e.g. \"postgres\"",
                        )
                        .and_then(|text| self.glob(text, value.span(), "process"))
                        .ok()
                }
                "user" => {
                    user = self
                        .string(value, "user", "a user name or glob, e.g. \"postgres\"")
                        .and_then(|text| self.glob(text, value.span(), "user"))
                        .ok()
                }
                "proto" => {
                    let wanted = "\"tcp\" or \"udp\"";
                    proto = match self.string(value, "proto", wanted) {
                        Ok("tcp") => Some(Proto::Tcp),
                        Ok("udp") => Some(Proto::Udp),
                        Ok(other) => {
                            self.at(
                                value.span(),
                                format!(
                                    "`proto` = {} is not a protocol; write {wanted}",
                                    shown(other)
                                ),
                            );
                            None
                        }
                        Err(_) => None,
                    }
                }
                "bind" => {
                    let wanted = "\"loopback\" (127.0.0.0/8, ::1), \"private\" (loopback, \
                                  RFC 1918, 100.64.0.0/10, link-local, fc00::/7) or \"any\"";
                    bind = match self.string(value, "bind", wanted) {
                        Ok("loopback") => Some(BindScope::Loopback),
                        Ok("private") => Some(BindScope::Private),
                        Ok("any") => Some(BindScope::Any),
                        Ok(other) => {
                            self.at(
                                value.span(),
                                format!(
                                    "`bind` = {} is not a bind scope; write {wanted}",
                                    shown(other)
                                ),
                            );
                            None
                        }
                        Err(_) => None,
                    }
                }
                _ => self.unknown_key(
                    field,
                    &format!("in an `{key}` entry"),
                    &["port", "process", "proto", "bind", "user"],
                ),
            }
        }
        if !table.contains_key("port") {
            self.at(
                span,
                format!(
                    "this `{key}` entry has no `port`: add port = 5432 (or a range such as \
                     port = \"8000-8099\")"
                ),
            );
        }
        if self.problems.problems.len() > before {
            return Err(Refused);
        }
        let Some((low, high)) = ports else {
            return Err(Refused);
        };
        Ok(build_spec(low, high, process, proto, bind, user))
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

fn build_spec(
    low: u16,
    high: u16,
    process: Option<&str>,
    proto: Option<Proto>,
    bind: Option<BindScope>,
    user: Option<&str>,
) -> PortSpec {
    PortSpec {
        low,
        high,
        process: process.map(Glob::new),
        process_text: process.unwrap_or_default().into(),
        proto,
        bind,
        user: user.map(Glob::new),
        user_text: user.map(Box::from),
        text: spec_text(low, high, process, proto, bind, user).into(),
    }
}
