//! The `allow` and `require` entries of a rule: the list (bounded over the whole file, no
//! entry twice in canonical form), the string form `PORT[-PORT][/PROCESS]` and the table form
//! (`port`, `process`, `proto`, `bind`, `user`, refused where the backend cannot check them).

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use super::{MAX_PORT_ENTRIES, Reader, Refused, Value};
use crate::policy::Capabilities;
use crate::policy::spec::{BindScope, Glob, PortSpec, Proto, parse_ports, spec_text, split_spec};
use crate::problems::shown;

impl Reader<'_> {
    /// `allow` or `require`: each entry a string `PORT[-PORT][/PROCESS]` or a table.
    pub(super) fn port_list(&mut self, value: &Value<'_>, key: &str) -> Vec<PortSpec> {
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
