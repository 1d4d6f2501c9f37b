//! Printing for commands whose output is piped: `status … | head -1` must end quietly.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has gone fails with `EPIPE`, and
//! `println!` turns that into a panic (exit 101 and a backtrace). Commands write through
//! [`stdout`] instead and treat [`std::io::ErrorKind::BrokenPipe`] as the normal end of their
//! output: the reader has everything it wanted.
//!
//! What is printed for people is escaped ([`crate::escape`]): commands escape each value they
//! put in a table, and [`stderr_line`] escapes whatever it is given but its line breaks.

use std::io::{self, BufWriter, ErrorKind, Write};

#[cfg(doc)]
use super::CommandError;

/// Runs `print` on a buffered, locked stdout and flushes. A reader that went away ends the
/// output early and is no error; any other write failure is returned (commands report it as
/// [`CommandError::Output`]).
pub fn stdout(print: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    let mut out = BufWriter::new(io::stdout().lock());
    match print(&mut out).and_then(|()| out.flush()) {
        Err(e) if reader_gone(&e) => Ok(()),
        other => other,
    }
}

/// Writes `text` and a newline to stderr, with every control character but its line breaks
/// escaped: the text may quote a path or a file's contents, and an ESC in them must not reach
/// the terminal. (Line breaks are kept because a list of problems is one per line; a caller
/// printing one hostile value escapes it whole with [`crate::escape::Escaped`].) Failures
/// are ignored: stderr is where failures would be reported, and an unreadable one must not
/// turn a result into a panic.
pub fn stderr_line(text: impl std::fmt::Display) {
    let text = text.to_string();
    let _ = writeln!(
        io::stderr().lock(),
        "{}",
        crate::escape::escape_keeping_lines(&text)
    );
}

/// Is this the error of a reader that went away?
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == ErrorKind::BrokenPipe
}
