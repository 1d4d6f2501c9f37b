//! The `[[sink]]` blocks (`docs/delivery.md`): each one's name, kind, where its URL (and
//! DingTalk's secret) come from, which events it takes and how it paces and bounds them,
//! every mistake placed at its line:column in the same pass as the rest of the file.
//!
//! What is checked here is what the text says; the files `url_file` and `secret_file` name
//! are read by [`crate::delivery::settings::resolve`] (at start, on reload and by
//! `check --probe`), never here: the config text must not depend on a secret being readable
//! by whoever runs `check`.

use toml::Spanned;

use super::Check;
use crate::config::raw::RawSink;
use crate::delivery::select::{EventSelector, default_selectors, highest_severity};
use crate::delivery::settings::{
    CREDENTIALS_PREFIX, DEFAULT_MAX_AGE, DEFAULT_OUTBOX_LIMIT, MAX_AGE_RANGE, MAX_SINKS,
    OUTBOX_LIMIT_RANGE, SinkKind, SinkSettings, UrlSource, check_url, valid_credential_name,
};
use crate::policy::Severity;
use crate::problems::{Reported, shown};

/// How the operator may spell `kind`, for messages.
const KINDS: &str = "\"alertmanager\", \"wecom\", \"dingtalk\", \"slack\" or \"webhook\"";
/// How the operator may spell `min_severity`, for messages.
const SEVERITIES: &str = "\"info\", \"notice\", \"warning\" or \"critical\"";
/// The most entries of `events` (there are 23 event names, and statuses besides).
const MAX_SELECTORS: usize = 64;
/// The longest selector echoed back.
const MAX_SELECTOR_CHARS: usize = 128;

impl Check<'_> {
    /// Every `[[sink]]` block, in file order.
    pub(in crate::config) fn sinks(
        &mut self,
        raw: &[Spanned<RawSink>],
    ) -> Result<Vec<SinkSettings>, Reported> {
        if let Some(extra) = raw.get(MAX_SINKS) {
            return Err(self.problems.at(
                extra.span(),
                format!(
                    "more than {MAX_SINKS} [[sink]] blocks: one sink per receiver is enough; \
                     a receiver routes further (Alertmanager's routes, a robot per group)"
                ),
            ));
        }
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut out = Vec::with_capacity(raw.len());
        let mut failed = None;
        for block in raw {
            match self.sink(block, &mut seen) {
                Ok(sink) => out.push(sink),
                Err(reported) => failed = Some(reported),
            }
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok(out),
        }
    }

    fn sink(
        &mut self,
        block: &Spanned<RawSink>,
        seen: &mut Vec<(String, usize)>,
    ) -> Result<SinkSettings, Reported> {
        let raw = block.get_ref();
        let name = self.sink_name(block, seen);
        let kind = match &raw.kind {
            None => Err(self.problems.at(
                block.span(),
                format!("this [[sink]] has no `kind`: add kind = {KINDS}"),
            )),
            Some(value) => SinkKind::parse(value.get_ref()).ok_or_else(|| {
                self.problems.at(
                    value.span(),
                    format!(
                        "`kind` = {} is not a sink kind; write kind = {KINDS}",
                        shown(value.get_ref())
                    ),
                )
            }),
        };
        // The rest depends on the kind; with an unknown kind, only what holds for every kind.
        let known = kind.as_ref().ok().copied();
        let url = self.sink_url(block, known);
        let secret_file = self.secret_file(block, known);
        let events = self.selectors(raw.events.as_ref());
        let min_severity = match &raw.min_severity {
            None => Ok(Severity::Warning),
            Some(value) => Severity::parse(value.get_ref()).ok_or_else(|| {
                self.problems.at(
                    value.span(),
                    format!(
                        "`min_severity` = {} is not a severity; write min_severity = \
                         {SEVERITIES} (findings by their rule's severity, other events by \
                         their level: info, warn = warning, error = critical)",
                        shown(value.get_ref())
                    ),
                )
            }),
        };
        // A selector whose events are always below `min_severity` would deliver nothing.
        let never = match (&events, &min_severity, &raw.events) {
            (Ok(selectors), Ok(min), Some(written)) => {
                self.never_sent(selectors, *min, written, raw.min_severity.as_ref())
            }
            _ => Ok(()),
        };
        let max_age = self.duration(
            raw.max_age.as_ref(),
            "max_age",
            DEFAULT_MAX_AGE,
            &MAX_AGE_RANGE,
        );
        let per_minute = match known {
            Some(kind) => self.integer_in(
                raw.per_minute.as_ref(),
                "per_minute",
                1..=i64::from(kind.max_per_minute()),
                kind.default_per_minute(),
                &format!(
                    " (messages per minute; kind = \"{}\" takes at most {}, and events over \
                     the rate are folded into digests, never dropped)",
                    kind.as_str(),
                    kind.max_per_minute()
                ),
            ),
            None => Ok(0),
        };
        let outbox_limit = self.integer_in(
            raw.outbox_limit.as_ref(),
            "outbox_limit",
            *OUTBOX_LIMIT_RANGE.start() as i64..=*OUTBOX_LIMIT_RANGE.end() as i64,
            DEFAULT_OUTBOX_LIMIT,
            " (events kept for this sink while it cannot deliver; a full outbox gives up the \
             oldest that is not a resolution, and says so)",
        );
        never?;
        Ok(SinkSettings {
            name: name?,
            kind: kind?,
            url: url?,
            secret_file: secret_file?,
            events: events?,
            min_severity: min_severity?,
            max_age: max_age?,
            per_minute: per_minute?,
            outbox_limit: outbox_limit?,
        })
    }

    /// `name`: required, `[a-z0-9_-]{1,32}` (the outbox file's name and a metrics label),
    /// unique.
    fn sink_name(
        &mut self,
        block: &Spanned<RawSink>,
        seen: &mut Vec<(String, usize)>,
    ) -> Result<String, Reported> {
        let Some(value) = &block.get_ref().name else {
            return Err(self.problems.at(
                block.span(),
                "this [[sink]] has no `name`: add e.g. name = \"oncall\" (lower-case letters, \
                 digits, `_` and `-`, at most 32; it names the outbox file and the metrics)",
            ));
        };
        let text = value.get_ref();
        if !crate::account_name::valid_account_name(text) {
            return Err(self.problems.at(
                value.span(),
                format!(
                    "sink `name` = {} is not valid: use 1 to 32 lower-case letters, digits, \
                     `_` and `-`, e.g. name = \"oncall\"",
                    shown(text)
                ),
            ));
        }
        if let Some((_, line)) = seen.iter().find(|(n, _)| n == text) {
            return Err(self.problems.at(
                value.span(),
                format!(
                    "sink name {} is used twice (first at line {line}): give each [[sink]] \
                     its own name (each has its own outbox)",
                    shown(text)
                ),
            ));
        }
        let line = self.problems.line_of(&value.span());
        seen.push((text.clone(), line));
        Ok(text.clone())
    }

    /// `url` or `url_file`, exactly one; robot kinds take `url_file` only.
    fn sink_url(
        &mut self,
        block: &Spanned<RawSink>,
        kind: Option<SinkKind>,
    ) -> Result<UrlSource, Reported> {
        let raw = block.get_ref();
        match (&raw.url, &raw.url_file) {
            (Some(url), Some(_)) => Err(self.problems.at(
                url.span(),
                "this [[sink]] has both `url` and `url_file`: keep one",
            )),
            (None, None) => Err(self.problems.at(
                block.span(),
                match kind {
                    Some(kind) if kind.url_is_secret() => format!(
                        "this [[sink]] has no `url_file`: a {} robot's URL is its key, so it \
                         is read from a file: add url_file = \"%d/{}_url\" (a systemd \
                         credential) or the path of a file of mode 0600",
                        kind.as_str(),
                        kind.as_str()
                    ),
                    _ => "this [[sink]] has no `url`: add e.g. url = \"http://127.0.0.1:9093\" \
                          (or url_file = \"…\", a file holding it)"
                        .to_owned(),
                },
            )),
            (Some(url), None) => {
                if let Some(kind) = kind.filter(|k| k.url_is_secret()) {
                    // The value is the key: do not echo it back.
                    return Err(self.problems.at(
                        url.span(),
                        format!(
                            "a {kind} robot's URL is its key and must not be in the config \
                             text: put it in a file (mode 0600, or a systemd credential) and \
                             write url_file = \"%d/{kind}_url\" or its path instead of `url` \
                             (and change the robot's key if this file was shared)",
                            kind = kind.as_str()
                        ),
                    ));
                }
                let text = self.text(url, "url", "\"http://127.0.0.1:9093\"", true, 4096)?;
                // Not echoed: a user, password or query may be a secret.
                check_url(text.trim(), false)
                    .map(UrlSource::Inline)
                    .map_err(|problem| {
                        self.problems.at(
                            url.span(),
                            format!("`url` {problem}; e.g. url = \"http://127.0.0.1:9093\""),
                        )
                    })
            }
            (None, Some(file)) => self
                .secret_path(file, "url_file", "\"%d/oncall_url\"")
                .map(UrlSource::File),
        }
    }

    /// `secret_file`: required for `dingtalk`, refused for the other kinds.
    fn secret_file(
        &mut self,
        block: &Spanned<RawSink>,
        kind: Option<SinkKind>,
    ) -> Result<Option<std::path::PathBuf>, Reported> {
        match (&block.get_ref().secret_file, kind) {
            (None, Some(SinkKind::Dingtalk)) => Err(self.problems.at(
                block.span(),
                "this dingtalk [[sink]] has no `secret_file`: DingTalk robots with \"加签\" \
                 (signing) need the secret (SEC…): add secret_file = \"%d/dingtalk_secret\" or \
                 the path of a file of mode 0600 holding it",
            )),
            (None, _) => Ok(None),
            (Some(value), Some(kind)) if kind != SinkKind::Dingtalk => Err(self.problems.at(
                value.span(),
                format!(
                    "`secret_file` applies only to kind = \"dingtalk\" (its signing secret), \
                     but this sink is kind = \"{}\"; remove the line",
                    kind.as_str()
                ),
            )),
            (Some(value), _) => self
                .secret_path(value, "secret_file", "\"%d/dingtalk_secret\"")
                .map(Some),
        }
    }

    /// A file holding a secret: a path (resolved against the config's folder), or
    /// `%d/NAME`, a systemd credential (kept as written; read from `$CREDENTIALS_DIRECTORY`).
    pub(in crate::config) fn secret_path(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        example: &str,
    ) -> Result<std::path::PathBuf, Reported> {
        let text = value.get_ref().trim();
        if let Some(name) = text.strip_prefix(CREDENTIALS_PREFIX) {
            if valid_credential_name(name) {
                return Ok(std::path::PathBuf::from(text));
            }
            return Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {} is not a systemd credential: after `%d/` write the name given \
                     to LoadCredential= (letters, digits, `_`, `-`, `.`, `@`; no `/`), e.g. \
                     {key} = {example}",
                    shown(text)
                ),
            ));
        }
        if text.starts_with('%') {
            return Err(self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {}: only `%d/NAME` (systemd's credentials folder) is expanded; \
                     write {key} = {example} or a path",
                    shown(text)
                ),
            ));
        }
        self.path(value, key, example, true)
    }

    /// `events`: a list of selectors ([`EventSelector::parse`]), each placed when wrong; the
    /// policy's findings when absent.
    fn selectors(
        &mut self,
        value: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<EventSelector>, Reported> {
        let Some(value) = value else {
            return Ok(default_selectors());
        };
        let list = value.get_ref();
        if list.is_empty() {
            return Err(self.problems.at(
                value.span(),
                "`events` is empty, so the sink would deliver nothing: list events, e.g. \
                 events = [\"port_unexpected\", \"port_missing\"], or remove the line for \
                 those (the default)",
            ));
        }
        if let Some(extra) = list.get(MAX_SELECTORS) {
            return Err(self.problems.at(
                extra.span(),
                format!("`events` has more than {MAX_SELECTORS} entries; list each event once"),
            ));
        }
        let mut out: Vec<EventSelector> = Vec::with_capacity(list.len());
        let mut failed = None;
        for entry in list {
            let text = entry.get_ref();
            if let Some(message) = crate::problems::text_problem("events", text, MAX_SELECTOR_CHARS)
            {
                failed = Some(self.problems.at(entry.span(), message));
                continue;
            }
            match EventSelector::parse(text) {
                Ok(selector) if out.contains(&selector) => {
                    failed = Some(self.problems.at(
                        entry.span(),
                        format!("`events` lists {} twice; keep one", shown(text)),
                    ));
                }
                Ok(selector) => out.push(selector),
                Err(problem) => {
                    failed = Some(
                        self.problems
                            .at(entry.span(), format!("`events`: {} {problem}", shown(text))),
                    );
                }
            }
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok(out),
        }
    }

    /// Refuses a selector whose events are always below `min_severity`: it would look
    /// configured and deliver nothing.
    fn never_sent(
        &mut self,
        selectors: &[EventSelector],
        min: Severity,
        written: &Spanned<Vec<Spanned<String>>>,
        min_written: Option<&Spanned<String>>,
    ) -> Result<(), Reported> {
        let mut failed = None;
        for (selector, entry) in selectors.iter().zip(written.get_ref()) {
            if let Some(highest) = highest_severity(selector)
                && highest < min
            {
                let why = if min_written.is_some() {
                    ""
                } else {
                    " (the default)"
                };
                failed = Some(self.problems.at(
                    entry.span(),
                    format!(
                        "`events`: {} are {} events, below min_severity = \"{}\"{why}, so \
                         none would be sent; write min_severity = \"{}\" or remove the entry",
                        shown(&selector.as_written()),
                        highest.as_str(),
                        min.as_str(),
                        highest.as_str()
                    ),
                ));
            }
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::{Problem, Settings};
    use crate::credentials::Environment;
    use crate::delivery::{EventSelector, SinkKind, UrlSource};
    use crate::policy::Severity;

    const HEAD: &str = "watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n";

    fn load(text: &str) -> Result<Settings, Vec<Problem>> {
        Settings::from_toml_str_with(
            text,
            Path::new("/etc/cwp-portwatch/config.toml"),
            &Environment::from_pairs([("HOME", "/home/op")]),
        )
        .map_err(|e| e.problems)
    }

    fn selectors(list: &[&str]) -> Vec<EventSelector> {
        list.iter()
            .map(|s| EventSelector::parse(s).unwrap())
            .collect()
    }

    #[test]
    fn sinks_are_read_with_their_defaults_and_paths() {
        let settings = load(&format!(
            "{HEAD}\
             [[sink]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n\
             [[sink]]\nname = \"ops-chat\"\nkind = \"wecom\"\nurl_file = \"%d/wecom_url\"\n\
             events = [\"port_unexpected\", \"status_changed:AGENT_OFFLINE\"]\n\
             min_severity = \"notice\"\nmax_age = \"2h\"\nper_minute = 10\noutbox_limit = 500\n\
             [[sink]]\nname = \"ding\"\nkind = \"dingtalk\"\nurl_file = \"secrets/ding_url\"\n\
             secret_file = \"/run/keys/ding\"\n\
             [[sink]]\nname = \"hook\"\nkind = \"webhook\"\nurl_file = \"hook_url\"\n"
        ))
        .unwrap();
        let s = &settings.sinks;
        assert_eq!(s.len(), 4);
        assert_eq!(
            (s[0].name.as_str(), s[0].kind),
            ("oncall", SinkKind::Alertmanager)
        );
        assert_eq!(
            s[0].url,
            UrlSource::Inline(url::Url::parse("http://127.0.0.1:9093").unwrap())
        );
        assert_eq!(s[0].secret_file, None);
        assert_eq!(s[0].events, selectors(&["port_unexpected", "port_missing"]));
        assert_eq!(s[0].min_severity, Severity::Warning);
        assert_eq!(s[0].max_age, Duration::from_secs(24 * 3600));
        assert_eq!(s[0].per_minute, 120);
        assert_eq!(s[0].outbox_limit, 10_000);
        // `%d/NAME` is kept as written: it is read from $CREDENTIALS_DIRECTORY.
        assert_eq!(s[1].url, UrlSource::File(PathBuf::from("%d/wecom_url")));
        assert_eq!(
            s[1].events,
            selectors(&["port_unexpected", "status_changed:AGENT_OFFLINE"])
        );
        assert_eq!(s[1].min_severity, Severity::Notice);
        assert_eq!(s[1].max_age, Duration::from_secs(7200));
        assert_eq!((s[1].per_minute, s[1].outbox_limit), (10, 500));
        // Other paths are resolved against the config's folder.
        assert_eq!(
            s[2].url,
            UrlSource::File(PathBuf::from("/etc/cwp-portwatch/secrets/ding_url"))
        );
        assert_eq!(s[2].secret_file, Some(PathBuf::from("/run/keys/ding")));
        assert_eq!(s[2].per_minute, 20);
        assert_eq!(s[3].per_minute, 600);
        // No [[sink]]: none.
        assert!(load(HEAD).unwrap().sinks.is_empty());
    }

    #[test]
    fn every_sink_mistake_is_placed_at_its_line_and_column_in_one_pass() {
        let text = format!(
            "{HEAD}\
             [[sink]]\n\
             name = \"oncall\"\n\
             kind = \"pager\"\n\
             url = \"http://127.0.0.1:9093\"\n\
             [[sink]]\n\
             name = \"oncall\"\n\
             kind = \"wecom\"\n\
             url = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=SECRETKEY\"\n\
             secret_file = \"/run/keys/s\"\n\
             [[sink]]\n\
             name = \"Bad Name\"\n\
             kind = \"alertmanager\"\n\
             url = \"http://user:pw@am:9093\"\n\
             events = [\"port_unexpected\", \"port_open\", \"status_changed:offline\", \"poll_failed:FAILED\", \"port_unexpected\"]\n\
             min_severity = \"high\"\n\
             max_age = \"10s\"\n\
             per_minute = 7000\n\
             outbox_limit = 5\n\
             [[sink]]\n\
             kind = \"dingtalk\"\n\
             url_file = \"%d/a/b\"\n\
             [[sink]]\n\
             name = \"both\"\n\
             kind = \"webhook\"\n\
             url = \"ftp://example.com/x\"\n\
             url_file = \"/x\"\n\
             [[sink]]\n\
             name = \"quiet\"\n\
             kind = \"slack\"\n\
             url_file = \"~/slack\"\n\
             events = [\"daemon_started\", \"status_changed:COMPLETE\", \"poll_failed\"]\n\
             per_minute = 61\n\
             [[sink]]\n\
             name = \"nourl\"\n\
             kind = \"webhook\"\n\
             url = \"https://hooks.example.com/x?token=abc\"\n\
             events = []\n"
        );
        let found = load(&text).unwrap_err();
        let expected: &[(usize, usize, &[&str])] = &[
            (5, 8, &["`kind` = \"pager\"", "\"alertmanager\", \"wecom\""]),
            (8, 8, &["\"oncall\" is used twice", "first at line 4"]),
            (
                10,
                7,
                &[
                    "wecom robot's URL is its key",
                    "url_file = \"%d/wecom_url\"",
                ],
            ),
            (11, 15, &["applies only to kind = \"dingtalk\""]),
            (13, 8, &["\"Bad Name\"", "lower-case"]),
            (15, 7, &["user or password"]),
            (
                16,
                30,
                &["\"port_open\" is not an event name", "port_opened"],
            ),
            (16, 43, &["status_changed:offline", "AGENT_OFFLINE"]),
            (16, 69, &["only status_changed takes one"]),
            (16, 91, &["lists \"port_unexpected\" twice"]),
            (17, 16, &["`min_severity` = \"high\"", "\"critical\""]),
            (18, 11, &["`max_age`", "1m to 720h"]),
            (19, 14, &["`per_minute` = 7000", "1 to 6000"]),
            (20, 16, &["`outbox_limit` = 5", "10 to 1000000"]),
            // A block without a key to point at is placed at its `[[sink]]` header.
            (21, 1, &["no `name`"]),
            (
                23,
                12,
                &["`url_file` = \"%d/a/b\" is not a systemd credential"],
            ),
            (27, 7, &["both `url` and `url_file`"]),
            (32, 12, &["`~` is not expanded"]),
            (
                33,
                11,
                &[
                    "\"daemon_started\" are info events",
                    "min_severity = \"warning\" (the default)",
                ],
            ),
            (33, 29, &["\"status_changed:COMPLETE\" are info events"]),
            (
                34,
                14,
                &["`per_minute` = 61", "1 to 60", "kind = \"slack\""],
            ),
            (38, 7, &["has a query", "url_file"]),
            (39, 10, &["`events` is empty"]),
        ];
        for (line, column, hints) in expected {
            let problem = found
                .iter()
                .find(|p| p.line == Some(*line) && p.column == Some(*column))
                .unwrap_or_else(|| panic!("nothing at {line}:{column}: {found:#?}"));
            for hint in *hints {
                assert!(
                    problem.message.contains(hint),
                    "{line}:{column}: {:?} lacks {hint:?}",
                    problem.message
                );
            }
        }
        // The dingtalk sink lacks its secret too: also at its header.
        assert!(
            found
                .iter()
                .any(|p| p.line == Some(21) && p.message.contains("no `secret_file`")),
            "{found:#?}"
        );
        assert_eq!(found.len(), expected.len() + 1, "{found:#?}");
        // The key given inline is never echoed back.
        // Nothing that may be a key is echoed back: a robot's URL, a password, a query.
        for secret in ["SECRETKEY", "pw@", "token=abc"] {
            assert!(
                found.iter().all(|p| !p.message.contains(secret)),
                "{found:#?}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_by_the_parser() {
        let e = load(&format!(
            "{HEAD}[[sink]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\ntoken = \"x\"\n"
        ))
        .unwrap_err();
        assert_eq!(e[0].line, Some(7), "{e:#?}");
        assert!(
            e[0].message.contains("token") && e[0].message.contains("url_file"),
            "{e:#?}"
        );
        let e = load(&format!(
            "{HEAD}[[sink]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\nmax_age = 60\n"
        ))
        .unwrap_err();
        assert!(e[0].message.contains("has no unit"), "{e:#?}");
        let e = load(&format!(
            "{HEAD}[[sink]]\nname = \"a\"\nkind = \"webhook\"\nurl = \"http://h/\"\nevents = \"port_missing\"\n"
        ))
        .unwrap_err();
        assert_eq!(e[0].line, Some(7), "{e:#?}");
    }

    #[test]
    fn more_sinks_than_the_bound_are_refused_at_the_first_extra() {
        let mut text = HEAD.to_owned();
        for i in 0..=crate::delivery::settings::MAX_SINKS {
            text.push_str(&format!(
                "[[sink]]\nname = \"s{i}\"\nkind = \"webhook\"\nurl = \"http://h/\"\n"
            ));
        }
        let e = load(&text).unwrap_err();
        assert_eq!(e.len(), 1, "{e:#?}");
        assert!(e[0].message.contains("more than 32"), "{e:#?}");
        assert_eq!(e[0].line, Some(3 + 4 * 32), "{e:#?}");
    }

    #[test]
    fn the_examples_sink_blocks_parse_when_uncommented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["config/config.example.toml", "packaging/config.toml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            // Every commented line from the first `# [[sink]]` on that holds a key or a header.
            let (_, from) = text.split_once("\n# [[sink]]").expect(file);
            let mut block = String::from("[[sink]]\n");
            for line in from.lines().skip(1) {
                let Some(line) = line.strip_prefix("# ") else {
                    break;
                };
                if line.starts_with("[[sink]]") || line.contains(" = ") {
                    block.push_str(line);
                    block.push('\n');
                }
            }
            let settings = load(&format!("{HEAD}{block}"))
                .unwrap_or_else(|e| panic!("{file}: {e:#?}\n{block}"));
            assert!(settings.sinks.len() >= 2, "{file}: {block}");
        }
    }
}
