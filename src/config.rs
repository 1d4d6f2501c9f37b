//! Config file: TOML text → validated [`Settings`].
//!
//! Two steps, the split ripgrep uses for its arguments. First serde reads the text into raw
//! structs that mirror the file: every field optional and wrapped in [`toml::Spanned`], unknown
//! keys rejected. Then [`Settings::from_toml_str`] checks every value, fills in the defaults and
//! collects *every* problem with its line and column, so `cwp-portwatch check` can list them all
//! at once instead of making the operator fix them one run at a time.
//!
//! Syntax, type and unknown-key errors come from the TOML parser, which stops at the first one;
//! they still carry file:line:column, and toml's message for an unknown key lists the allowed ones.
//!
//! [`Problem`], [`ConfigErrors`] and the file-reading helpers are shared with
//! [`crate::watchlist`], so both files report problems the same way.

use std::cell::OnceCell;
use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::Deserialize;
use toml::Spanned;

use crate::credentials::Environment;

/// Where the config file is read from when neither `--config` nor `CWP_PORTWATCH_CONFIG` is given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/cwp-portwatch/config.toml";
/// The CWP API endpoint used when `api.endpoint` is absent.
pub const DEFAULT_ENDPOINT: &str = "https://yunjing.tencentcloudapi.com";
/// The CVM metadata service, used for `source = "cvm-role"` and by the default chain.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://metadata.tencentyun.com/latest/meta-data/";
/// The API's documented limit per action; `api.requests_per_second` may not exceed it.
pub const MAX_REQUESTS_PER_SECOND: u32 = 20;
/// Upper bound of `api.max_in_flight`: more concurrency than this buys nothing at 20 req/s.
pub const MAX_IN_FLIGHT: usize = 256;
/// State folder used when neither `state_dir`, `$STATE_DIRECTORY`, `$XDG_STATE_HOME` nor `$HOME`
/// gives one.
pub const FALLBACK_STATE_DIR: &str = "/var/lib/cwp-portwatch";
/// Files larger than this are refused before parsing: a watchlist of 100,000 agents is ~8 MB, so
/// anything far bigger is a wrong path (a log, a disk image, `/dev/zero`), not a config.
pub(crate) const MAX_FILE_BYTES: u64 = 64 << 20;

/// The validated configuration: every value checked, every default filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The config file these settings were read from (as given, for messages and SIGHUP reloads).
    pub config_path: PathBuf,
    /// The watchlist file; a relative `watchlist` is resolved against the config file's folder.
    pub watchlist_path: PathBuf,
    /// Where the state file lives. Default: `$STATE_DIRECTORY` (its first entry when
    /// colon-separated), else `$XDG_STATE_HOME/cwp-portwatch` or `~/.local/state/cwp-portwatch`,
    /// else [`FALLBACK_STATE_DIR`].
    pub state_dir: PathBuf,
    /// `[api]`.
    pub api: ApiSettings,
    /// `[credentials]`, or [`CredentialSettings::Chain`] when the section is absent.
    pub credentials: CredentialSettings,
    /// `[poll]`.
    pub poll: PollSettings,
    /// `[log]`.
    pub log: LogSettings,
}

/// `[api]`: where requests go and how many at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiSettings {
    /// https, or http for a loopback host only (the simulator). Default [`DEFAULT_ENDPOINT`].
    pub endpoint: Url,
    /// Sent as `X-TC-Region` when set; `region = ""` means unset.
    pub region: Option<String>,
    /// 1..=20, default 20: the API's documented limit is 20 requests per second per action.
    pub requests_per_second: u32,
    /// 1..=256, default 32: concurrent requests, so slow answers do not cut throughput.
    pub max_in_flight: usize,
    /// Per-request timeout, > 0, default 10 s.
    pub timeout: Duration,
}

/// `[poll]`: how often an agent is polled, by what we last saw of it. All > 0.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Agents whose task is settled (`COMPLETE`, `FAILED`, `NO_TASK`, ...). Default 60 s.
    pub interval: Duration,
    /// Agents in `COLLECTING`: the transition users wait for. Default 5 s.
    pub collecting_interval: Duration,
    /// Agents in `AGENT_OFFLINE`. Default 30 s.
    pub offline_interval: Duration,
}

/// `log.format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// journald when stderr is the journal (`$JOURNAL_STREAM`), text on a terminal, else JSON.
    Auto,
    /// journald native protocol.
    Journald,
    /// JSON lines.
    Json,
    /// Human-readable lines.
    Text,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogSettings {
    /// Default [`LogFormat::Auto`].
    pub format: LogFormat,
    /// One of `trace`, `debug`, `info`, `warn`, `error` (lower case; the file may use any case).
    /// Default `info`.
    pub level: String,
}

/// `[credentials]`: where the SecretId/SecretKey come from. See [`crate::credentials::resolve`].
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSettings {
    /// No `[credentials]` section: systemd credentials, then environment, then profile file,
    /// then CVM instance role; the first source found wins.
    Chain,
    /// `source = "env"`: `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY`,
    /// optional `TENCENTCLOUD_SESSION_TOKEN`.
    Env,
    /// `source = "systemd"`: `$CREDENTIALS_DIRECTORY/secret_id`, `secret_key`,
    /// optional `session_token`.
    Systemd,
    /// `source = "profile"`: an INI profile file, as the Tencent Cloud SDKs and tccli write it.
    Profile {
        /// `profile_path`; `None` means `~/.tencentcloud/credentials`, then
        /// `/etc/tencentcloud/credentials`.
        path: Option<PathBuf>,
        /// `profile`: the section name, default `default`.
        profile: String,
    },
    /// `source = "cvm-role"`: temporary credentials from the CVM metadata service.
    CvmRole {
        /// `role`; `None` means: ask the metadata service which role the instance has.
        role: Option<String>,
        /// `metadata_endpoint`, default [`DEFAULT_METADATA_ENDPOINT`]; always ends with `/`.
        metadata_endpoint: Url,
    },
    /// `source = "file"`: two files each holding one value (trailing newline allowed).
    File {
        /// `secret_id_file`, resolved against the config file's folder.
        secret_id_file: PathBuf,
        /// `secret_key_file`, resolved against the config file's folder.
        secret_key_file: PathBuf,
    },
}

// ---------------------------------------------------------------------------------------------
// Problems
// ---------------------------------------------------------------------------------------------

/// What kind of problem: decides [`ConfigErrors::code`]. Ordered from most to least fundamental.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// The file does not exist.
    NotFound,
    /// The file exists but cannot be read, is too large or is not UTF-8.
    Unreadable,
    /// The text is not valid TOML, has a value of the wrong type, or an unknown key.
    Syntax,
    /// The TOML is fine but a value is not acceptable (range, format, missing key...).
    Invalid,
}

impl ProblemKind {
    /// Stable machine-readable code, for `error_code` log fields.
    pub fn code(self) -> &'static str {
        match self {
            ProblemKind::NotFound => "ConfigError.NotFound",
            ProblemKind::Unreadable => "ConfigError.Unreadable",
            ProblemKind::Syntax => "ConfigError.Syntax",
            ProblemKind::Invalid => "ConfigError.Invalid",
        }
    }
}

/// One problem in a config or watchlist file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem has a place in the file.
    pub line: Option<usize>,
    /// 1-based column in characters, when the problem has a place in the file.
    pub column: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
    /// What kind of problem.
    pub kind: ProblemKind,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(column) = self.column {
                write!(f, ":{column}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found in a config (and possibly watchlist) file. `Display` prints one problem
/// per line as `file:line:column: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors {
    /// In file order for semantic problems; never empty when returned as an error.
    pub problems: Vec<Problem>,
}

impl ConfigErrors {
    /// Stable machine-readable code of the most fundamental problem: `ConfigError.NotFound`,
    /// `ConfigError.Unreadable`, `ConfigError.Syntax` or `ConfigError.Invalid`.
    pub fn code(&self) -> &'static str {
        self.problems
            .iter()
            .map(|p| p.kind)
            .min()
            .unwrap_or(ProblemKind::Invalid)
            .code()
    }

    /// Appends another file's problems, so `check` can report config and watchlist together.
    pub fn merge(&mut self, other: ConfigErrors) {
        self.problems.extend(other.problems);
    }

    fn single(problem: Problem) -> ConfigErrors {
        ConfigErrors {
            problems: vec![problem],
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Byte offset → 1-based line and character column. The line starts are computed on first use
/// only, so a file without problems never pays for it, and a file with many problems pays once.
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    starts: OnceCell<Vec<usize>>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            starts: OnceCell::new(),
        }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end or inside a character are
    /// clamped to the nearest character boundary before it.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = starts.partition_point(|&start| start <= offset); // ≥ 1: starts[0] == 0
        let column = self.text[starts[line - 1]..offset].chars().count() + 1;
        (line, column)
    }
}

impl LineIndex<'_> {
    /// The key of a `key = value` line holding `offset`, if the line looks like one.
    pub(crate) fn key_at(&self, offset: usize) -> Option<String> {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = &self.text[start..];
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| key.to_string())
    }
}

/// What to write instead, for a value of the wrong type.
fn type_hint(key: Option<&str>, message: &str) -> String {
    match key {
        Some("requests_per_second") => {
            "write a whole number from 1 to 20 without quotes, e.g. `requests_per_second = 20`"
                .to_string()
        }
        Some("max_in_flight") => {
            "write a whole number from 1 to 256 without quotes, e.g. `max_in_flight = 32`"
                .to_string()
        }
        Some(k @ ("timeout" | "interval" | "collecting_interval" | "offline_interval")) => {
            format!("write a duration in quotes, e.g. `{k} = \"5s\"`")
        }
        Some(k) if message.contains("expected a string") || message.contains("expected string") => {
            format!("write `{k}` as a string in quotes")
        }
        Some(k) if message.contains("expected i64") || message.contains("integer") => {
            format!("write `{k}` as a whole number without quotes")
        }
        _ => "check the value's type against config/config.example.toml".to_string(),
    }
}

/// Collects problems for one file, turning spans into line:column.
pub(crate) struct ProblemList<'a> {
    file: &'a Path,
    lines: LineIndex<'a>,
    pub(crate) problems: Vec<Problem>,
}

impl<'a> ProblemList<'a> {
    pub(crate) fn new(file: &'a Path, text: &'a str) -> Self {
        ProblemList {
            file,
            lines: LineIndex::new(text),
            problems: Vec::new(),
        }
    }

    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        self.lines.line_col(span.start).0
    }

    /// A semantic problem at the start of `span`.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        let (line, column) = self.lines.line_col(span.start);
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
            kind: ProblemKind::Invalid,
        });
    }

    /// A semantic problem without a place in the file (a required key is missing).
    pub(crate) fn general(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            kind: ProblemKind::Invalid,
        });
    }

    /// The TOML parser's error (syntax, type or unknown key), placed by its span.
    pub(crate) fn syntax(&mut self, error: &toml::de::Error) {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = self.lines.line_col(span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        let mut message = error.message().trim_end().replace('\n', "; ");
        // serde says "expected i64"; an operator needs to hear what to write.
        if message.starts_with("invalid type")
            && let Some(span) = error.span()
        {
            let key = self.lines.key_at(span.start);
            message.push_str(&format!("; {}", type_hint(key.as_deref(), &message)));
        }
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            column,
            message,
            kind: ProblemKind::Syntax,
        });
    }

    /// `Err` with the problems in file order (those without a line first), if there are any.
    pub(crate) fn finish(mut self) -> Result<(), ConfigErrors> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            self.problems
                .sort_by_key(|problem| (problem.line.unwrap_or(0), problem.column.unwrap_or(0)));
            Err(ConfigErrors {
                problems: self.problems,
            })
        }
    }
}

/// Reads a config or watchlist file as UTF-8 text. `create_hint` completes "create it or …".
/// Problems are reported, never panics: missing file, unreadable, too large, not UTF-8 (placed at
/// the line:column of the first bad byte).
pub(crate) fn read_text(path: &Path, create_hint: &str) -> Result<String, ConfigErrors> {
    let fail = |kind: ProblemKind, message: String| {
        ConfigErrors::single(Problem {
            file: path.to_path_buf(),
            line: None,
            column: None,
            message,
            kind,
        })
    };
    let describe = |error: &std::io::Error| match error.kind() {
        std::io::ErrorKind::NotFound => "no such file".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    };
    let file = std::fs::File::open(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            fail(
                ProblemKind::NotFound,
                format!(
                    "cannot read {}: no such file; create it or {create_hint}",
                    path.display()
                ),
            )
        } else {
            fail(
                ProblemKind::Unreadable,
                format!(
                    "cannot read {}: {}; make it readable by the service user or {create_hint}",
                    path.display(),
                    describe(&error)
                ),
            )
        }
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| {
            fail(
                ProblemKind::Unreadable,
                format!(
                    "cannot read {}: {}; {create_hint}",
                    path.display(),
                    describe(&error)
                ),
            )
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(
            ProblemKind::Unreadable,
            format!(
                "{} is larger than {} MiB, so it is not a TOML file of this program; {create_hint}",
                path.display(),
                MAX_FILE_BYTES >> 20
            ),
        ));
    }
    text_from_bytes(bytes, path)
}

/// UTF-8 check that reports the first bad byte's line:column instead of panicking.
pub(crate) fn text_from_bytes(bytes: Vec<u8>, path: &Path) -> Result<String, ConfigErrors> {
    String::from_utf8(bytes).map_err(|error| {
        let offset = error.utf8_error().valid_up_to();
        let bytes = error.as_bytes();
        // The prefix is valid UTF-8 by definition, so line:column are computed on it.
        let prefix = std::str::from_utf8(&bytes[..offset]).unwrap_or_default();
        let (line, column) = LineIndex::new(prefix).line_col(offset);
        ConfigErrors::single(Problem {
            file: path.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: format!(
                "the file is not valid UTF-8 (byte 0x{:02x} at byte offset {offset}); \
                 TOML files must be UTF-8: save it as UTF-8 or remove that character",
                bytes[offset]
            ),
            kind: ProblemKind::Unreadable,
        })
    })
}

/// A value as shown inside a message: quoted, escaped, and cut short when long.
pub(crate) fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 60;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("{:?}…", head)
    }
}

// ---------------------------------------------------------------------------------------------
// Raw structs: the file as written
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config file")]
struct RawConfig {
    watchlist: Option<Spanned<String>>,
    state_dir: Option<Spanned<String>>,
    api: Option<RawApi>,
    credentials: Option<Spanned<RawCredentials>>,
    poll: Option<RawPoll>,
    log: Option<RawLog>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "an [api] table")]
struct RawApi {
    endpoint: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    requests_per_second: Option<Spanned<i64>>,
    max_in_flight: Option<Spanned<i64>>,
    timeout: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [credentials] table")]
struct RawCredentials {
    source: Option<Spanned<String>>,
    secret_id_file: Option<Spanned<String>>,
    secret_key_file: Option<Spanned<String>>,
    profile_path: Option<Spanned<String>>,
    profile: Option<Spanned<String>>,
    role: Option<Spanned<String>>,
    metadata_endpoint: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [poll] table")]
struct RawPoll {
    interval: Option<Spanned<RawDuration>>,
    collecting_interval: Option<Spanned<RawDuration>>,
    offline_interval: Option<Spanned<RawDuration>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [log] table")]
struct RawLog {
    format: Option<Spanned<String>>,
    level: Option<Spanned<String>>,
}

/// A duration as written. Numbers are accepted by the parser only to be refused with a hint
/// (`timeout = 10` → write `"10s"`), which is kinder than serde's "expected a string".
#[derive(Deserialize)]
#[serde(
    untagged,
    expecting = "a duration string such as \"5s\", \"250ms\" or \"2m\""
)]
enum RawDuration {
    Text(String),
    Integer(i64),
    Float(f64),
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl Settings {
    /// Reads and validates the config file at `path`. The watchlist is not read here
    /// (see [`crate::watchlist::Watchlist::load`]); credentials are not resolved here.
    pub fn load(path: &Path) -> Result<Settings, ConfigErrors> {
        let text = read_text(
            path,
            "pass --config PATH (or set CWP_PORTWATCH_CONFIG); config/config.example.toml shows every key",
        )?;
        Settings::from_toml_str(&text, path)
    }

    /// Validates config text; `path` is used in messages and to resolve relative paths.
    /// Defaults that depend on the environment (`state_dir`) come from the process environment.
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Settings, ConfigErrors> {
        Settings::from_toml_str_with(text, path, &Environment::from_process())
    }

    /// As [`Settings::from_toml_str`], with the environment given (for tests).
    pub fn from_toml_str_with(
        text: &str,
        path: &Path,
        env: &Environment,
    ) -> Result<Settings, ConfigErrors> {
        let mut problems = ProblemList::new(path, text);
        let raw: RawConfig = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(error) => {
                problems.syntax(&error);
                return Err(problems.finish().unwrap_err());
            }
        };
        let mut check = Check {
            problems,
            base_dir: base_dir(path),
        };

        let watchlist_path = match &raw.watchlist {
            Some(value) => check.path(value, "watchlist", "\"watchlist.toml\"", true),
            None => {
                check.problems.general(
                    "`watchlist` is missing: add watchlist = \"watchlist.toml\" (the watchlist \
                     file, relative to this file's folder) near the top, before any [section]",
                );
                None
            }
        };
        let state_dir = match &raw.state_dir {
            Some(value) => check.path(value, "state_dir", "\"/var/lib/cwp-portwatch\"", false),
            None => Some(default_state_dir(env)),
        };
        let api = check.api(raw.api.as_ref());
        let credentials = match &raw.credentials {
            Some(section) => check.credentials(section),
            None => Some(CredentialSettings::Chain),
        };
        let poll = check.poll(raw.poll.as_ref());
        let log = check.log(raw.log.as_ref());

        check.problems.finish()?;
        // Every `None` above has recorded a problem, so `finish` has returned the errors.
        match (watchlist_path, state_dir, api, credentials, poll, log) {
            (
                Some(watchlist_path),
                Some(state_dir),
                Some(api),
                Some(credentials),
                Some(poll),
                Some(log),
            ) => Ok(Settings {
                config_path: path.to_path_buf(),
                watchlist_path,
                state_dir,
                api,
                credentials,
                poll,
                log,
            }),
            _ => unreachable!("a missing setting without a recorded problem"),
        }
    }
}

/// The folder relative paths are resolved against: the config file's folder, made absolute so a
/// later change of working directory cannot change what a path means.
fn base_dir(config_path: &Path) -> PathBuf {
    let parent = match config_path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::path::absolute(parent).unwrap_or_else(|_| parent.to_path_buf())
}

/// `$STATE_DIRECTORY` (systemd's `StateDirectory=`; first entry when colon-separated), else
/// `$XDG_STATE_HOME/cwp-portwatch`, else `~/.local/state/cwp-portwatch`, else
/// [`FALLBACK_STATE_DIR`]. Relative values are ignored, as the XDG spec says.
pub fn default_state_dir(env: &Environment) -> PathBuf {
    let absolute = |value: &str| {
        let path = PathBuf::from(value);
        (!value.is_empty() && path.is_absolute()).then_some(path)
    };
    if let Some(dir) = env
        .get("STATE_DIRECTORY")
        .and_then(|value| value.split(':').next())
        .and_then(absolute)
    {
        return dir;
    }
    if let Some(dir) = env.get("XDG_STATE_HOME").and_then(absolute) {
        return dir.join("cwp-portwatch");
    }
    if let Some(home) = env.get("HOME").and_then(absolute) {
        return home.join(".local/state/cwp-portwatch");
    }
    PathBuf::from(FALLBACK_STATE_DIR)
}

struct Check<'a> {
    problems: ProblemList<'a>,
    base_dir: PathBuf,
}

impl Check<'_> {
    /// A non-empty string, or a problem. `example` is the value to suggest; keys that are not
    /// `required` may also be removed.
    fn non_empty<'v>(
        &mut self,
        value: &'v Spanned<String>,
        key: &str,
        example: &str,
        required: bool,
    ) -> Option<&'v str> {
        if value.get_ref().trim().is_empty() {
            let or_remove = if required {
                ""
            } else {
                ", or remove the line for the default"
            };
            self.problems.at(
                value.span(),
                format!("`{key}` is empty: write {key} = {example}{or_remove}"),
            );
            None
        } else {
            Some(value.get_ref())
        }
    }

    /// A path: non-empty, no `~`, resolved against the config file's folder.
    fn path(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        example: &str,
        required: bool,
    ) -> Option<PathBuf> {
        let text = self.non_empty(value, key, example, required)?;
        if text.starts_with('~') {
            self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {}: `~` is not expanded in this file; write the full path, \
                     e.g. \"/home/user/...\"",
                    shown(text)
                ),
            );
            return None;
        }
        Some(self.base_dir.join(text))
    }

    fn duration(
        &mut self,
        value: Option<&Spanned<RawDuration>>,
        key: &str,
        default: Duration,
    ) -> Option<Duration> {
        let Some(value) = value else {
            return Some(default);
        };
        let example = humantime::format_duration(default);
        let text = match value.get_ref() {
            RawDuration::Text(text) => text,
            RawDuration::Integer(n) => {
                self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {n} has no unit: durations are strings with a unit; \
                         write {key} = \"{n}s\" (or \"{n}ms\", \"{n}m\")"
                    ),
                );
                return None;
            }
            RawDuration::Float(n) => {
                self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {n} has no unit: durations are strings with a unit; \
                         write e.g. {key} = \"{example}\""
                    ),
                );
                return None;
            }
        };
        match humantime::parse_duration(text.trim()) {
            Ok(duration) if duration.is_zero() => {
                self.problems.at(
                    value.span(),
                    format!("`{key}` must be greater than zero; write e.g. {key} = \"{example}\""),
                );
                None
            }
            Ok(duration) => Some(duration),
            Err(error) => {
                self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {} is not a duration ({error}); write a number with a unit, \
                         e.g. {key} = \"{example}\" (units: ms, s, m, h)",
                        shown(text)
                    ),
                );
                None
            }
        }
    }

    fn integer_in(
        &mut self,
        value: Option<&Spanned<i64>>,
        key: &str,
        range: std::ops::RangeInclusive<i64>,
        default: i64,
        why: &str,
    ) -> Option<i64> {
        let Some(value) = value else {
            return Some(default);
        };
        let n = *value.get_ref();
        if range.contains(&n) {
            Some(n)
        } else {
            self.problems.at(
                value.span(),
                format!(
                    "`{key}` = {n} is out of range: write a whole number from {} to {}{why}",
                    range.start(),
                    range.end()
                ),
            );
            None
        }
    }

    /// An endpoint URL: parses, has a host, no user, query or fragment. With `https_only` (the
    /// API endpoint) http is accepted for loopback hosts only and the path must be `/`.
    fn endpoint(
        &mut self,
        value: &Spanned<String>,
        key: &str,
        https_only: bool,
        example: &str,
    ) -> Option<Url> {
        let text = self
            .non_empty(value, key, &format!("{example:?}"), false)?
            .trim();
        let url = match Url::parse(text) {
            Ok(url) => url,
            Err(error) => {
                self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` = {} is not a URL ({error}); write e.g. {key} = {example:?}",
                        shown(text)
                    ),
                );
                return None;
            }
        };
        let fail = |check: &mut Self, message: String| {
            check.problems.at(value.span(), message);
            None
        };
        if url.host().is_none() {
            return fail(
                self,
                format!(
                    "`{key}` = {} has no host; write e.g. {key} = {example:?}",
                    shown(text)
                ),
            );
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return fail(
                self,
                format!(
                    "`{key}` = {} must be scheme://host[:port]/path only, without user, query or \
                     fragment; write e.g. {key} = {example:?}",
                    shown(text)
                ),
            );
        }
        // The CWP API is always served at `/` (the signature covers the path), so a path on the
        // API endpoint is a mistake; the metadata endpoint is a base that relative paths join.
        if https_only && url.path() != "/" {
            return fail(
                self,
                format!(
                    "`{key}` has the path {:?}, but the API is always served at `/`; write only \
                     scheme and host, e.g. {key} = {example:?}",
                    url.path()
                ),
            );
        }
        match url.scheme() {
            "https" => Some(url),
            "http" if !https_only || is_loopback(&url) => Some(url),
            "http" => fail(
                self,
                format!(
                    "`{key}` = {} uses http:// for a host that is not loopback, which would send \
                     signed requests unencrypted; use https:// (http:// is accepted only for \
                     127.0.0.0/8, ::1 and localhost)",
                    shown(text)
                ),
            ),
            other => fail(
                self,
                format!(
                    "`{key}` scheme `{other}` is not supported; write an https:// URL, e.g. \
                     {key} = {example:?}"
                ),
            ),
        }
    }

    fn api(&mut self, raw: Option<&RawApi>) -> Option<ApiSettings> {
        let endpoint = match raw.and_then(|api| api.endpoint.as_ref()) {
            Some(value) => self.endpoint(value, "endpoint", true, DEFAULT_ENDPOINT),
            None => Some(Url::parse(DEFAULT_ENDPOINT).expect("default endpoint is a URL")),
        };
        let region = match raw.and_then(|api| api.region.as_ref()) {
            None => None,
            Some(value) if value.get_ref().is_empty() => None,
            Some(value) => {
                let text = value.get_ref();
                if text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                    Some(text.clone())
                } else {
                    self.problems.at(
                        value.span(),
                        format!(
                            "`region` = {} is not a region name; write e.g. region = \
                             \"ap-guangzhou\", or region = \"\" to send no region",
                            shown(text)
                        ),
                    );
                    None
                }
            }
        };
        let requests_per_second = self.integer_in(
            raw.and_then(|api| api.requests_per_second.as_ref()),
            "requests_per_second",
            1..=i64::from(MAX_REQUESTS_PER_SECOND),
            i64::from(MAX_REQUESTS_PER_SECOND),
            ": the API's documented limit is 20 requests per second per action, and more only \
             earns RequestLimitExceeded answers",
        );
        let max_in_flight = self.integer_in(
            raw.and_then(|api| api.max_in_flight.as_ref()),
            "max_in_flight",
            1..=MAX_IN_FLIGHT as i64,
            32,
            " (concurrent requests; 32 is plenty at 20 requests per second)",
        );
        let timeout = self.duration(
            raw.and_then(|api| api.timeout.as_ref()),
            "timeout",
            Duration::from_secs(10),
        );
        let region_ok = raw
            .and_then(|api| api.region.as_ref())
            .is_none_or(|value| value.get_ref().is_empty() || region.is_some());
        if !region_ok {
            return None;
        }
        Some(ApiSettings {
            endpoint: endpoint?,
            region,
            requests_per_second: u32::try_from(requests_per_second?).ok()?,
            max_in_flight: usize::try_from(max_in_flight?).ok()?,
            timeout: timeout?,
        })
    }

    fn poll(&mut self, raw: Option<&RawPoll>) -> Option<PollSettings> {
        let interval = self.duration(
            raw.and_then(|poll| poll.interval.as_ref()),
            "interval",
            Duration::from_secs(60),
        );
        let collecting_interval = self.duration(
            raw.and_then(|poll| poll.collecting_interval.as_ref()),
            "collecting_interval",
            Duration::from_secs(5),
        );
        let offline_interval = self.duration(
            raw.and_then(|poll| poll.offline_interval.as_ref()),
            "offline_interval",
            Duration::from_secs(30),
        );
        Some(PollSettings {
            interval: interval?,
            collecting_interval: collecting_interval?,
            offline_interval: offline_interval?,
        })
    }

    fn log(&mut self, raw: Option<&RawLog>) -> Option<LogSettings> {
        let format = match raw.and_then(|log| log.format.as_ref()) {
            None => Some(LogFormat::Auto),
            Some(value) => match value.get_ref().trim().to_ascii_lowercase().as_str() {
                "auto" => Some(LogFormat::Auto),
                "journald" => Some(LogFormat::Journald),
                "json" => Some(LogFormat::Json),
                "text" => Some(LogFormat::Text),
                _ => {
                    self.problems.at(
                        value.span(),
                        format!(
                            "`format` = {} is not a log format; write one of \"auto\", \
                             \"journald\", \"json\", \"text\"",
                            shown(value.get_ref())
                        ),
                    );
                    None
                }
            },
        };
        let level = match raw.and_then(|log| log.level.as_ref()) {
            None => Some("info".to_owned()),
            Some(value) => {
                let level = value.get_ref().trim().to_ascii_lowercase();
                if ["trace", "debug", "info", "warn", "error"].contains(&level.as_str()) {
                    Some(level)
                } else {
                    self.problems.at(
                        value.span(),
                        format!(
                            "`level` = {} is not a log level; write one of \"trace\", \"debug\", \
                             \"info\", \"warn\", \"error\"",
                            shown(value.get_ref())
                        ),
                    );
                    None
                }
            }
        };
        Some(LogSettings {
            format: format?,
            level: level?,
        })
    }

    fn credentials(&mut self, section: &Spanned<RawCredentials>) -> Option<CredentialSettings> {
        const SOURCES: &str = "\"env\", \"systemd\", \"profile\", \"cvm-role\" or \"file\"";
        let raw = section.get_ref();
        let Some(source) = &raw.source else {
            self.problems.at(
                section.span(),
                format!(
                    "[credentials] has no `source`: write source = {SOURCES}, or remove the \
                     section to use the default chain (systemd, environment, profile file, CVM role)"
                ),
            );
            return None;
        };
        let source_name = source.get_ref().trim();
        // Which keys each source uses; any other key present is a mistake worth reporting.
        let keys: [(&str, Option<&Spanned<String>>, &str); 6] = [
            ("secret_id_file", raw.secret_id_file.as_ref(), "file"),
            ("secret_key_file", raw.secret_key_file.as_ref(), "file"),
            ("profile_path", raw.profile_path.as_ref(), "profile"),
            ("profile", raw.profile.as_ref(), "profile"),
            ("role", raw.role.as_ref(), "cvm-role"),
            (
                "metadata_endpoint",
                raw.metadata_endpoint.as_ref(),
                "cvm-role",
            ),
        ];
        let known = ["env", "systemd", "profile", "cvm-role", "file"];
        if !known.contains(&source_name) {
            self.problems.at(
                source.span(),
                format!(
                    "`source` = {} is not a credential source; write source = {SOURCES}",
                    shown(source.get_ref())
                ),
            );
            return None;
        }
        let mut misplaced = false;
        for (key, value, used_by) in keys {
            if let Some(value) = value
                && used_by != source_name
            {
                misplaced = true;
                self.problems.at(
                    value.span(),
                    format!(
                        "`{key}` applies only to source = \"{used_by}\", but source = \
                         \"{source_name}\"; remove the line or change `source`"
                    ),
                );
            }
        }
        let settings = match source_name {
            "env" => Some(CredentialSettings::Env),
            "systemd" => Some(CredentialSettings::Systemd),
            "profile" => {
                let path = match &raw.profile_path {
                    Some(value) => Some(self.path(
                        value,
                        "profile_path",
                        "\"/etc/tencentcloud/credentials\"",
                        false,
                    )?),
                    None => None,
                };
                let profile = match &raw.profile {
                    Some(value) => self
                        .non_empty(value, "profile", "\"default\"", false)?
                        .trim()
                        .to_owned(),
                    None => "default".to_owned(),
                };
                Some(CredentialSettings::Profile { path, profile })
            }
            "cvm-role" => {
                let role = match &raw.role {
                    Some(value) => Some(
                        self.non_empty(value, "role", "\"CwpPortwatchRole\"", false)?
                            .trim()
                            .to_owned(),
                    ),
                    None => None,
                };
                let mut metadata_endpoint = match &raw.metadata_endpoint {
                    Some(value) => {
                        self.endpoint(value, "metadata_endpoint", false, DEFAULT_METADATA_ENDPOINT)?
                    }
                    None => Url::parse(DEFAULT_METADATA_ENDPOINT).expect("default is a URL"),
                };
                // Relative joins (`cam/security-credentials/`) need the trailing slash.
                if !metadata_endpoint.path().ends_with('/') {
                    let path = format!("{}/", metadata_endpoint.path());
                    metadata_endpoint.set_path(&path);
                }
                Some(CredentialSettings::CvmRole {
                    role,
                    metadata_endpoint,
                })
            }
            "file" => {
                let mut file = |value: Option<&Spanned<String>>, key: &str| match value {
                    Some(value) => self.path(value, key, "\"/path/to/file\"", true),
                    None => {
                        self.problems.at(
                            source.span(),
                            format!(
                                "source = \"file\" needs `{key}`: add {key} = \"/path/to/file\" \
                                 (a file holding only that value) to [credentials]"
                            ),
                        );
                        None
                    }
                };
                let secret_id_file = file(raw.secret_id_file.as_ref(), "secret_id_file");
                let secret_key_file = file(raw.secret_key_file.as_ref(), "secret_key_file");
                Some(CredentialSettings::File {
                    secret_id_file: secret_id_file?,
                    secret_key_file: secret_key_file?,
                })
            }
            _ => unreachable!("checked against `known` above"),
        };
        if misplaced { None } else { settings }
    }
}

/// 127.0.0.0/8, ::1 (also as IPv4-mapped) and `localhost`: the only hosts http:// may use.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/config")
            .join(name)
    }

    fn env() -> Environment {
        Environment::from_pairs([("HOME", "/home/op")])
    }

    fn parse(text: &str) -> Result<Settings, ConfigErrors> {
        Settings::from_toml_str_with(text, Path::new("/etc/cwp-portwatch/config.toml"), &env())
    }

    fn problems(text: &str) -> Vec<Problem> {
        parse(text).expect_err("should be invalid").problems
    }

    /// The problem on `line`, which must exist and contain every one of `hints`.
    fn assert_problem(problems: &[Problem], line: usize, hints: &[&str]) {
        let problem = problems
            .iter()
            .find(|p| p.line == Some(line))
            .unwrap_or_else(|| panic!("no problem on line {line}: {problems:#?}"));
        for hint in hints {
            assert!(
                problem.message.contains(hint),
                "line {line}: {:?} lacks {hint:?}",
                problem.message
            );
        }
    }

    #[test]
    fn valid_config_with_every_key() {
        let path = fixture("good-full.toml");
        let settings =
            Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
                .unwrap();
        let folder = path.parent().unwrap();
        assert_eq!(settings.config_path, path);
        assert_eq!(settings.watchlist_path, folder.join("agents.toml"));
        assert_eq!(settings.state_dir, PathBuf::from("/srv/portwatch/state"));
        assert_eq!(settings.api.endpoint.as_str(), "http://127.0.0.1:8080/");
        assert_eq!(settings.api.region.as_deref(), Some("ap-guangzhou"));
        assert_eq!(settings.api.requests_per_second, 15);
        assert_eq!(settings.api.max_in_flight, 8);
        assert_eq!(settings.api.timeout, Duration::from_millis(2500));
        assert_eq!(
            settings.credentials,
            CredentialSettings::File {
                secret_id_file: folder.join("secrets/secret_id"),
                secret_key_file: PathBuf::from("/run/keys/secret_key"),
            }
        );
        assert_eq!(
            settings.poll,
            PollSettings {
                interval: Duration::from_secs(120),
                collecting_interval: Duration::from_secs(1),
                offline_interval: Duration::from_secs(45),
            }
        );
        assert_eq!(settings.log.format, LogFormat::Json);
        assert_eq!(settings.log.level, "debug");
    }

    #[test]
    fn example_config_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.example.toml");
        let settings =
            Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
                .unwrap();
        assert_eq!(
            settings.api.endpoint.as_str(),
            "https://yunjing.tencentcloudapi.com/"
        );
    }

    #[test]
    fn defaults() {
        let settings = Settings::load(&fixture("good-minimal.toml")).unwrap();
        assert_eq!(
            settings.watchlist_path,
            PathBuf::from("/etc/cwp-portwatch/watchlist.toml")
        );
        assert_eq!(
            settings.api,
            ApiSettings {
                endpoint: Url::parse(DEFAULT_ENDPOINT).unwrap(),
                region: None,
                requests_per_second: 20,
                max_in_flight: 32,
                timeout: Duration::from_secs(10),
            }
        );
        assert_eq!(settings.credentials, CredentialSettings::Chain);
        assert_eq!(
            settings.poll,
            PollSettings {
                interval: Duration::from_secs(60),
                collecting_interval: Duration::from_secs(5),
                offline_interval: Duration::from_secs(30),
            }
        );
        assert_eq!(
            settings.log,
            LogSettings {
                format: LogFormat::Auto,
                level: "info".to_owned()
            }
        );
    }

    #[test]
    fn relative_paths_resolve_against_the_config_folder() {
        let settings = parse("watchlist = \"w.toml\"\nstate_dir = \"../state\"").unwrap();
        assert_eq!(
            settings.watchlist_path,
            PathBuf::from("/etc/cwp-portwatch/w.toml")
        );
        assert_eq!(
            settings.state_dir,
            PathBuf::from("/etc/cwp-portwatch/../state")
        );
        let settings = parse("watchlist = \"/abs/w.toml\"").unwrap();
        assert_eq!(settings.watchlist_path, PathBuf::from("/abs/w.toml"));
    }

    #[test]
    fn state_dir_default_order() {
        let dir = |pairs: &[(&str, &str)]| {
            default_state_dir(&Environment::from_pairs(pairs.iter().copied()))
        };
        assert_eq!(
            dir(&[
                ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b"),
                ("XDG_STATE_HOME", "/x"),
                ("HOME", "/h")
            ]),
            PathBuf::from("/var/lib/a")
        );
        assert_eq!(
            dir(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")]),
            PathBuf::from("/x/cwp-portwatch")
        );
        assert_eq!(
            dir(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")]),
            PathBuf::from("/h/.local/state/cwp-portwatch")
        );
        assert_eq!(dir(&[]), PathBuf::from(FALLBACK_STATE_DIR));
        let settings = parse("watchlist = \"w.toml\"").unwrap();
        assert_eq!(
            settings.state_dir,
            PathBuf::from("/home/op/.local/state/cwp-portwatch")
        );
    }

    #[test]
    fn every_rule_violated_is_reported_with_its_line() {
        let path = fixture("bad-values.toml");
        let errors =
            Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
                .unwrap_err();
        println!("{errors}");
        let p = &errors.problems;
        assert_eq!(errors.code(), "ConfigError.Invalid");
        assert_problem(p, 2, &["`watchlist` is empty", "watchlist = "]);
        assert_problem(p, 3, &["`~` is not expanded", "full path"]);
        assert_problem(p, 6, &["not loopback", "use https://"]);
        assert_problem(p, 7, &["not a region name", "ap-guangzhou"]);
        assert_problem(
            p,
            8,
            &[
                "= 50 is out of range",
                "from 1 to 20",
                "documented limit is 20",
            ],
        );
        assert_problem(p, 9, &["= 0 is out of range", "from 1 to 256"]);
        assert_problem(p, 10, &["greater than zero", "timeout = \"10s\""]);
        assert_problem(p, 13, &["needs `secret_key_file`"]);
        assert_problem(p, 15, &["`role` applies only to source = \"cvm-role\""]);
        assert_problem(p, 18, &["\"soon\" is not a duration", "interval = \"1m\""]);
        assert_problem(p, 19, &["has no unit", "collecting_interval = \"5s\""]);
        assert_problem(p, 20, &["\"-1s\" is not a duration"]);
        assert_problem(p, 23, &["\"xml\" is not a log format", "\"journald\""]);
        assert_problem(p, 24, &["\"verbose\" is not a log level", "\"warn\""]);
        assert_eq!(p.len(), 14, "{errors}");
        // Display: one problem per line, file:line:column: message, in file order.
        let text = errors.to_string();
        assert_eq!(text.lines().count(), 14);
        let first = text.lines().next().unwrap();
        assert!(
            first.starts_with(&format!("{}:2:13: ", path.display())),
            "{first}"
        );
        assert!(text.lines().nth(13).unwrap().contains(":24:"), "{text}");
    }

    #[test]
    fn missing_watchlist_is_a_problem_without_a_line() {
        let problems = problems("[log]\nlevel = \"info\"\n");
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, None);
        assert!(
            problems[0]
                .message
                .contains("add watchlist = \"watchlist.toml\"")
        );
        assert!(
            problems[0]
                .to_string()
                .starts_with("/etc/cwp-portwatch/config.toml: `watchlist` is missing")
        );
    }

    #[test]
    fn unknown_key_names_its_line_and_the_allowed_keys() {
        let path = fixture("bad-unknown-key.toml");
        let errors = Settings::load(&path).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Syntax");
        assert_eq!(errors.problems.len(), 1);
        let problem = &errors.problems[0];
        assert_eq!((problem.line, problem.column), (Some(5), Some(1)));
        for key in [
            "requests_per_sec",
            "endpoint",
            "region",
            "requests_per_second",
            "max_in_flight",
            "timeout",
        ] {
            assert!(
                problem.message.contains(key),
                "{} lacks {key}",
                problem.message
            );
        }
        assert!(
            errors
                .to_string()
                .starts_with(&format!("{}:5:1: unknown field", path.display()))
        );
        let errors = parse("watchlist = \"w\"\nwatchlst = \"w\"\n").unwrap_err();
        assert_eq!(errors.problems[0].line, Some(2));
        assert!(errors.problems[0].message.contains("`state_dir`"));
    }

    #[test]
    fn wrong_types_and_syntax_errors_have_a_place() {
        let errors = parse("watchlist = \"w\"\n[api]\nrequests_per_second = \"20\"\n").unwrap_err();
        assert_eq!(errors.problems[0].line, Some(3));
        assert_eq!(errors.code(), "ConfigError.Syntax");
        let errors = parse("watchlist = \"w\"\n\n[poll\ninterval = \"5s\"\n").unwrap_err();
        assert_eq!(errors.problems[0].line, Some(3));
        let errors = parse("watchlist = \"w\"\napi = 5\n").unwrap_err();
        assert!(
            errors.problems[0].message.contains("[api] table"),
            "{errors}"
        );
    }

    #[test]
    fn durations() {
        let poll = |value: &str| parse(&format!("watchlist = \"w\"\n[poll]\ninterval = {value}\n"));
        assert_eq!(
            poll("\"250ms\"").unwrap().poll.interval,
            Duration::from_millis(250)
        );
        assert_eq!(
            poll("\"2m\"").unwrap().poll.interval,
            Duration::from_secs(120)
        );
        assert_eq!(
            poll("\"1h 30m\"").unwrap().poll.interval,
            Duration::from_secs(5400)
        );
        for bad in [
            "\"\"",
            "\"0\"",
            "\"0ms\"",
            "\"5\"",
            "\"5 parsecs\"",
            "2.5",
            "60",
            "-1",
        ] {
            let problems = poll(bad).unwrap_err().problems;
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].line, Some(3), "{bad}");
            assert!(
                problems[0].message.contains("interval = \""),
                "{bad}: {}",
                problems[0].message
            );
        }
    }

    #[test]
    fn endpoints() {
        let api = |value: &str| parse(&format!("watchlist = \"w\"\n[api]\nendpoint = {value:?}\n"));
        for ok in [
            "https://yunjing.tencentcloudapi.com",
            "https://yunjing.ap-guangzhou.tencentcloudapi.com/",
            "http://127.0.0.1:9000",
            "http://127.8.9.10",
            "http://[::1]:8080/",
            "http://localhost:1234",
            "http://LOCALHOST",
        ] {
            assert!(api(ok).is_ok(), "{ok}: {:?}", api(ok));
        }
        for (bad, hint) in [
            ("http://10.0.0.1", "use https://"),
            ("http://localhost.example.com", "use https://"),
            ("http://128.0.0.1", "use https://"),
            ("ftp://example.com", "not supported"),
            ("yunjing.tencentcloudapi.com", "is not a URL"),
            (
                "https://yunjing.tencentcloudapi.com/v1",
                "always served at `/`",
            ),
            (
                "https://yunjing.tencentcloudapi.com/?a=b",
                "without user, query or fragment",
            ),
            ("", "`endpoint` is empty"),
        ] {
            let problems = api(bad).unwrap_err().problems;
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].line, Some(3));
            assert!(
                problems[0].message.contains(hint),
                "{bad}: {}",
                problems[0].message
            );
        }
    }

    #[test]
    fn region_empty_means_unset() {
        let settings = parse("watchlist = \"w\"\n[api]\nregion = \"\"\n").unwrap();
        assert_eq!(settings.api.region, None);
    }

    #[test]
    fn credential_sections() {
        let creds = |body: &str| parse(&format!("watchlist = \"w\"\n[credentials]\n{body}\n"));
        assert_eq!(
            creds("source = \"env\"").unwrap().credentials,
            CredentialSettings::Env
        );
        assert_eq!(
            creds("source = \"systemd\"").unwrap().credentials,
            CredentialSettings::Systemd
        );
        assert_eq!(
            creds("source = \"profile\"").unwrap().credentials,
            CredentialSettings::Profile {
                path: None,
                profile: "default".to_owned()
            }
        );
        assert_eq!(
            creds("source = \"profile\"\nprofile_path = \"creds.ini\"\nprofile = \"prod\"")
                .unwrap()
                .credentials,
            CredentialSettings::Profile {
                path: Some(PathBuf::from("/etc/cwp-portwatch/creds.ini")),
                profile: "prod".to_owned()
            }
        );
        assert_eq!(
            creds("source = \"cvm-role\"").unwrap().credentials,
            CredentialSettings::CvmRole {
                role: None,
                metadata_endpoint: Url::parse(DEFAULT_METADATA_ENDPOINT).unwrap()
            }
        );
        assert_eq!(
            creds("source = \"cvm-role\"\nrole = \"Poller\"\nmetadata_endpoint = \"http://127.0.0.1:9/meta\"")
                .unwrap()
                .credentials,
            CredentialSettings::CvmRole {
                role: Some("Poller".to_owned()),
                metadata_endpoint: Url::parse("http://127.0.0.1:9/meta/").unwrap()
            }
        );

        let problems = creds("").unwrap_err().problems;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, Some(2), "{problems:?}");
        assert!(problems[0].message.contains("has no `source`"));
        assert!(problems[0].message.contains("remove the section"));

        let problems = creds("source = \"vault\"").unwrap_err().problems;
        assert_problem(&problems, 3, &["not a credential source", "\"cvm-role\""]);

        let problems = creds("source = \"file\"").unwrap_err().problems;
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert_problem(&problems, 3, &["needs `secret_id_file`"]);
        assert!(problems[1].message.contains("needs `secret_key_file`"));

        let problems = creds("source = \"env\"\nprofile = \"x\"\nsecret_id_file = \"f\"")
            .unwrap_err()
            .problems;
        assert_problem(
            &problems,
            4,
            &["`profile` applies only to source = \"profile\""],
        );
        assert_problem(
            &problems,
            5,
            &["`secret_id_file` applies only to source = \"file\""],
        );

        let problems = creds("source = \"profile\"\nprofile = \"\"")
            .unwrap_err()
            .problems;
        assert_problem(&problems, 4, &["`profile` is empty"]);

        let problems = creds("source = \"cvm-role\"\nrole = \" \"")
            .unwrap_err()
            .problems;
        assert_problem(&problems, 4, &["`role` is empty"]);

        let problems = creds("source = \"env\"\nsecret = \"x\"")
            .unwrap_err()
            .problems;
        assert_problem(&problems, 4, &["unknown field `secret`", "secret_key_file"]);
    }

    #[test]
    fn missing_file_says_how_to_fix_it() {
        let errors = Settings::load(Path::new("/nonexistent/cwp/config.toml")).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.NotFound");
        let text = errors.to_string();
        assert!(text.starts_with("/nonexistent/cwp/config.toml: cannot read /nonexistent/cwp/config.toml: no such file; create it or pass --config"), "{text}");
    }

    #[test]
    fn a_directory_is_unreadable_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let errors = Settings::load(dir.path()).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Unreadable");
    }

    #[test]
    fn non_utf8_bytes_are_placed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, b"watchlist = \"w\"\n# caf\xc3\xa9 \xff\xfe\n").unwrap();
        let errors = Settings::load(&path).unwrap_err();
        assert_eq!(errors.code(), "ConfigError.Unreadable");
        let problem = &errors.problems[0];
        assert_eq!((problem.line, problem.column), (Some(2), Some(8)));
        assert!(problem.message.contains("not valid UTF-8"));
        assert!(problem.message.contains("0xff"));
    }

    /// A deterministic pseudo-random byte stream (xorshift), so no `rand` dependency is needed.
    fn garbage(len: usize, printable: bool) -> Vec<u8> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let byte = (state >> 24) as u8;
                if printable { b' ' + byte % 95 } else { byte }
            })
            .collect()
    }

    #[test]
    fn megabytes_of_garbage_give_one_problem_fast() {
        let dir = tempfile::tempdir().unwrap();
        for printable in [false, true] {
            let path = dir.path().join("garbage.toml");
            std::fs::write(&path, garbage(3 << 20, printable)).unwrap();
            let started = std::time::Instant::now();
            let errors = Settings::load(&path).unwrap_err();
            println!(
                "3 MB of garbage (printable: {printable}) rejected in {:?}",
                started.elapsed()
            );
            assert_eq!(errors.problems.len(), 1, "{errors}");
            assert!(errors.problems[0].line.is_some());
        }
        // Valid TOML but a huge wrong value: still one problem.
        let huge = format!(
            "watchlist = \"w\"\n[log]\nlevel = \"{}\"\n",
            "x".repeat(3 << 20)
        );
        let errors = parse(&huge).unwrap_err();
        assert_eq!(errors.problems.len(), 1);
        assert!(
            errors.problems[0].message.len() < 300,
            "long values are cut short"
        );
    }

    #[test]
    fn line_index_counts_characters() {
        let index = LineIndex::new("a\nbé c\n\nd");
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(2), (2, 1));
        assert_eq!(index.line_col(5), (2, 3)); // after "bé" (é is 2 bytes)
        assert_eq!(index.line_col(4), (2, 2)); // inside é: clamped to its start
        assert_eq!(index.line_col(8), (3, 1));
        assert_eq!(index.line_col(100), (4, 2));
    }

    #[test]
    fn merged_errors_take_the_most_fundamental_code() {
        let mut errors = parse("watchlist = \"\"").unwrap_err();
        errors.merge(Settings::load(Path::new("/nonexistent/x.toml")).unwrap_err());
        assert_eq!(errors.problems.len(), 2);
        assert_eq!(errors.code(), "ConfigError.NotFound");
    }
}
