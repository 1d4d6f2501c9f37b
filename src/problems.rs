//! Problem reporting for the operator's TOML files (config, watchlist, simulator scenario):
//! where a problem is (file, line, column), what kind it is, and the message saying what to
//! write instead.
//!
//! Owns [`Problem`], [`ProblemKind`], [`ConfigErrors`] (every problem of one or more files, with
//! a stable `code()`), `ProblemList` (collects problems for one file) and the file-reading helpers
//! `read_text` and `text_from_bytes`, so every file is read, placed and reported the same
//! way. The text rules shared with the simulator (`LineIndex`, byte offset → line:column, the
//! only such function; `forbidden_char`, `text_problem`, `shown`, `MAX_FILE_BYTES`) live in the
//! `cwp_text` crate and are re-exported here.

use std::fmt;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub(crate) use cwp_text::{LineIndex, MAX_FILE_BYTES, forbidden_char, shown, text_problem};

/// Proof that a problem was recorded in a [`ProblemList`]: only its recording methods
/// ([`ProblemList::at`], [`ProblemList::general`], [`ProblemList::syntax`]) make one. Checks return `Result<T, Reported>`, so a missing value
/// always has a problem behind it and [`ProblemList::into_errors`] needs no "cannot happen" arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reported(());

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
        write!(f, "{}", shown_path(&self.file))?;
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

/// What to tell an operator who wrote a value of the wrong type, per file format.
pub(crate) struct TypeHints {
    /// The example file that shows every key of this format, for the generic advice.
    pub(crate) example_file: &'static str,
    /// Advice for the keys this format knows better than "a string" or "a number" (the
    /// config's ranged integers and durations); `None` falls back to the generic advice.
    pub(crate) for_key: fn(&str) -> Option<String>,
}

impl TypeHints {
    /// What to write instead, for a value of the wrong type at `key`.
    fn hint(&self, key: Option<&str>, message: &str) -> String {
        if let Some(hint) = key.and_then(self.for_key) {
            return hint;
        }
        match key {
            Some(k)
                if message.contains("expected a string") || message.contains("expected string") =>
            {
                format!("write `{k}` as a string in quotes")
            }
            // "expected …" only: "invalid type: integer" names what was found, not what is wanted.
            Some(k)
                if message.contains("expected i64") || message.contains("expected an integer") =>
            {
                format!("write `{k}` as a whole number without quotes")
            }
            _ => format!("check the value's type against {}", self.example_file),
        }
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

    /// 1-based line and column (in characters) of the start of `span`.
    pub(crate) fn line_col_of(&self, span: &Range<usize>) -> (usize, usize) {
        self.lines.line_col(span.start)
    }

    pub(crate) fn line_of(&self, span: &Range<usize>) -> usize {
        self.lines.line_col(span.start).0
    }

    /// A semantic problem at the start of `span`.
    pub(crate) fn at(&mut self, span: Range<usize>, message: impl Into<String>) -> Reported {
        let (line, column) = self.lines.line_col(span.start);
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: Some(line),
            column: Some(column),
            message: message.into(),
            kind: ProblemKind::Invalid,
        });
        Reported(())
    }

    /// A semantic problem without a place in the file (a required key is missing).
    pub(crate) fn general(&mut self, message: impl Into<String>) -> Reported {
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line: None,
            column: None,
            message: message.into(),
            kind: ProblemKind::Invalid,
        });
        Reported(())
    }

    /// The TOML parser's error (syntax, type or unknown key), placed by its span.
    /// `hints` says what to write instead when the error is a value of the wrong type.
    pub(crate) fn syntax(&mut self, error: &toml::de::Error, hints: &TypeHints) -> Reported {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = self.lines.line_col(span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        let mut message = quoted_text_shown(&error.message().trim_end().replace('\n', "; "));
        // serde says "expected i64"; an operator needs to hear what to write.
        if message.starts_with("invalid type")
            && let Some(span) = error.span()
        {
            let key = self.lines.key_at(span.start);
            message.push_str(&format!("; {}", hints.hint(key.as_deref(), &message)));
        }
        self.problems.push(Problem {
            file: self.file.to_path_buf(),
            line,
            column,
            message,
            kind: ProblemKind::Syntax,
        });
        Reported(())
    }

    /// `Err` with the problems in file order (those without a line first), if there are any.
    pub(crate) fn finish(self) -> Result<(), ConfigErrors> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(self.sorted())
        }
    }

    /// The problems in file order; `Reported` proves there is at least one.
    pub(crate) fn into_errors(self, _reported: Reported) -> ConfigErrors {
        self.sorted()
    }

    fn sorted(mut self) -> ConfigErrors {
        self.problems
            .sort_by_key(|problem| (problem.line.unwrap_or(0), problem.column.unwrap_or(0)));
        ConfigErrors {
            problems: self.problems,
        }
    }
}

/// Opens `path` for reading if it is a regular file (links followed, as reading does). Opened
/// with `O_NONBLOCK`, so a FIFO without a writer cannot block the open (and with it `check`
/// or the start-up) forever; the type is then checked on the opened file, so it cannot change
/// between the check and the read. `O_NONBLOCK` changes nothing for reading a regular file.
pub(crate) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        Ok(file)
    } else if kind.is_dir() {
        Err(std::io::Error::new(
            std::io::ErrorKind::IsADirectory,
            "it is a directory, not a file",
        ))
    } else {
        Err(std::io::Error::other(
            "not a regular file (a pipe, socket or device)",
        ))
    }
}

/// A parser message made safe to print: it quotes the file's own text between backticks (an
/// unknown key, which may be megabytes long or hold a bidi control), so every character
/// [`forbidden_char`] refuses is escaped and each quoted part is cut to 60 characters.
fn quoted_text_shown(message: &str) -> String {
    const MAX_QUOTED_CHARS: usize = 60;
    let mut shown = String::with_capacity(message.len().min(1024));
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            shown.push('`');
        }
        let quoted = i % 2 == 1;
        for (n, c) in part.chars().enumerate() {
            if quoted && n == MAX_QUOTED_CHARS {
                shown.push('…');
                break;
            }
            match forbidden_char(c) {
                Some(_) => shown.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
                None => shown.push(c),
            }
        }
    }
    shown
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
    let file = open_regular(path).map_err(|error| {
        if error.kind() == std::io::ErrorKind::NotFound {
            fail(
                ProblemKind::NotFound,
                format!(
                    "cannot read {}: no such file; create it or {create_hint}",
                    shown_path(path)
                ),
            )
        } else {
            let advice = match error.kind() {
                std::io::ErrorKind::PermissionDenied => "make it readable by the service user or ",
                _ => "",
            };
            fail(
                ProblemKind::Unreadable,
                format!(
                    "cannot read {}: {}; {advice}{create_hint}",
                    shown_path(path),
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
                    shown_path(path),
                    describe(&error)
                ),
            )
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(fail(
            ProblemKind::Unreadable,
            format!(
                "{} is larger than {} MiB, so it is not a TOML file of this program; {create_hint}",
                shown_path(path),
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

/// A path as shown inside a message: as written, but with every character
/// [`forbidden_char`] refuses escaped (`\u{a}`), because paths also come from the command line
/// and the environment (`--config`, `$HOME`, `$CREDENTIALS_DIRECTORY`), where nothing checked
/// them, and a newline or bidi control in one could forge or disguise a line of a report.
pub(crate) fn shown_path(path: &Path) -> ShownPath<'_> {
    ShownPath(path)
}

/// See [`shown_path`].
pub(crate) struct ShownPath<'a>(&'a Path);

impl fmt::Display for ShownPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string_lossy();
        if !text.chars().any(|c| forbidden_char(c).is_some()) {
            return f.write_str(&text);
        }
        for c in text.chars() {
            match forbidden_char(c) {
                Some(_) => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                None => write!(f, "{c}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `path` as a named pipe (FIFO) with no writer: opening it for reading blocks forever.
    pub(crate) fn fifo(dir: &Path) -> PathBuf {
        let path = dir.join("fifo");
        let name = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a NUL-terminated path; no memory is shared.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o600) }, 0);
        path
    }

    /// `read` on another thread, which must finish within 5 s.
    pub(crate) fn within_5s<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || done.send(read()));
        result
            .recv_timeout(std::time::Duration::from_secs(5))
            .expect("still blocked after 5 s")
    }

    /// A config or watchlist path naming a FIFO (or a device) used to block `check` forever in
    /// `open`; it is refused at once as not a regular file.
    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = fifo(dir.path());
        let errors = within_5s(move || read_text(&path, "pass --config PATH").unwrap_err());
        assert_eq!(errors.code(), "ConfigError.Unreadable");
        assert!(
            errors.to_string().contains("not a regular file"),
            "{errors}"
        );
        let errors = read_text(dir.path(), "pass --config PATH").unwrap_err();
        assert!(errors.to_string().contains("directory"), "{errors}");
    }

    /// A path from the command line or the environment (`--config`, `$HOME`,
    /// `$CREDENTIALS_DIRECTORY`) is shown with its forbidden characters escaped, so a newline
    /// or a bidi control in it cannot forge or disguise a line of the report.
    #[test]
    fn paths_in_messages_have_forbidden_characters_escaped() {
        let problem = Problem {
            file: PathBuf::from("/etc/a\nfake: OK\u{202e}.toml"),
            line: Some(1),
            column: Some(2),
            message: "m".into(),
            kind: ProblemKind::Invalid,
        };
        let text = problem.to_string();
        assert_eq!(text, "/etc/a\\u{a}fake: OK\\u{202e}.toml:1:2: m");
        assert_eq!(shown_path(Path::new("/etc/é x")).to_string(), "/etc/é x");
    }
}
