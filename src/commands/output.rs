//! Printing for commands whose output is piped: `status … | head -1` must end quietly.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader has gone fails with `EPIPE`, and
//! `println!` turns that into a panic (exit 101 and a backtrace). Commands write through
//! [`stdout`] instead and treat [`std::io::ErrorKind::BrokenPipe`] as the normal end of their
//! output: the reader has everything it wanted.

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

/// Writes `text` and a newline to stderr. Failures are ignored: stderr is where failures
/// would be reported, and an unreadable one must not turn a result into a panic.
pub fn stderr_line(text: impl std::fmt::Display) {
    let _ = writeln!(io::stderr().lock(), "{text}");
}

/// Is this the error of a reader that went away?
pub fn reader_gone(e: &io::Error) -> bool {
    e.kind() == ErrorKind::BrokenPipe
}
