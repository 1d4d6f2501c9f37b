//! The state file: each agent's last status, when it was seen, and its RequestId.
//!
//! `state_dir/state.json`, written atomically (temp file + fsync + rename + fsync of the
//! folder), so a crash at any moment leaves either the old or the new file, never a torn
//! one.
//!
//! Everything here treats the folder and the file as hostile until checked:
//! - The folder must be usable before the daemon polls ([`prepare_dir`], run by `check` and at
//!   the start of `run`): a folder (created, mode 0700, when missing), not writable by group or
//!   others (another user could swap the state file or plant links in it), and writable by us
//!   (a probe file is created and removed). Anything else is an error that says what to do,
//!   never a daemon that polls on and persists nothing.
//! - The temp file is created new (`O_CREAT|O_EXCL`) with `O_NOFOLLOW`, mode 0600: never
//!   written through an existing path or link.
//! - The state file is read through a symbolic link when it is one: only we or root can put
//!   one in a folder that group and others cannot write, so a link there was planted by the
//!   folder's owner, the operator.
//!   It is read only when it is a regular file of at most [`MAX_FILE_BYTES`], opened
//!   non-blocking (a FIFO planted there cannot hang the start).
//! - A file that cannot be read (damaged, not a regular file, too large, or written by a
//!   newer version) is never overwritten: [`StateFile::load_keeping_damaged`] renames it to
//!   `state.json.damaged-<unix time>` (never over an existing file) and the daemon starts
//!   fresh; when it cannot be renamed, start-up fails instead.
//!
//! The rooms: `dir.rs` checks the folder ([`prepare_dir`]); `format.rs` is the file's JSON
//! shape, read entry by entry and written borrowed; `read.rs` reads bounded and sets a
//! damaged file aside; `write.rs` is the atomic private write.

use std::io;
use std::path::{Path, PathBuf};

use crate::events::printable;

mod dir;
mod format;
mod read;
mod write;

pub use dir::prepare_dir;

/// What must be durable before a state file is written: called (on the saving thread, it may
/// block) before each write of the status and inventory files. Alert delivery's outboxes use
/// it (`crate::delivery`): an event is in its sinks' outboxes on disk before the state that
/// says it was emitted, so a crash between the two repeats the event, never loses it.
pub type SaveBarrier = std::sync::Arc<dyn Fn() + Send + Sync>;

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "state.json";
/// Format version written into the file.
const VERSION: u32 = 1;
/// The largest state file read. 100k agents take about 15 MiB; this leaves room for ten
/// times as many while a planted huge file (or a link to `/dev/zero`) cannot exhaust memory.
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// How many `state.json.damaged-<time>[.n]` names are tried before giving up.
const MAX_DAMAGED_NAMES: u32 = 100;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Could not read or write.
    #[error("{}: {source}", shown(path))]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not a state file we can read.
    #[error("{}: damaged state file: {}", shown(path), printable(reason))]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// `state_dir` cannot hold the state safely: the daemon would poll on and persist
    /// nothing, or another user could replace what it persists.
    #[error("state_dir {}: {problem}; {fix}", shown(dir))]
    Unusable {
        /// The folder.
        dir: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// What the operator should do.
        fix: String,
    },
    /// A damaged state file could not be renamed to keep it: starting fresh would overwrite
    /// it at the first save.
    #[error(
        "{}: cannot rename the unreadable state file to keep it ({source}); move it away by \
         hand, then start again",
        shown(path)
    )]
    SetAside {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Not written: the content would exceed what is read back at start. The previous file
    /// is kept (a file the next start refuses would cost more than a stale one).
    #[error(
        "{}: not written: the content would exceed {} MiB, the most that is read back at \
         start; the previous file is kept",
        shown(path),
        limit >> 20
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound, in bytes.
        limit: u64,
    },
}

impl StateError {
    /// Stable machine-readable code, for `error_code` log fields and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::Io { .. } => "StateError.Io",
            StateError::Damaged { .. } => "StateError.Damaged",
            StateError::Unusable { .. } => "StateError.Unusable",
            StateError::SetAside { .. } => "StateError.SetAside",
            StateError::TooLarge { .. } => "StateError.TooLarge",
        }
    }
}

/// A path for a message, escaped as [`printable`]; whole, not cut short: the operator must be
/// able to find it.
pub fn shown(path: &Path) -> String {
    printable(&path.to_string_lossy())
}

/// A state file that could not be read, kept under another name.
#[derive(Debug)]
pub struct SetAside {
    /// Why it could not be read.
    pub error: StateError,
    /// Where it is now.
    pub moved_to: PathBuf,
}

/// `version` of a file whose format this build writes as `current`: anything else is
/// damaged, and says whether a newer build wrote it.
pub fn check_version(path: &Path, version: u32, current: u32) -> Result<(), StateError> {
    if version == current {
        return Ok(());
    }
    let by = if version > current {
        "a newer cwp-portwatch"
    } else {
        "an unknown version"
    };
    Err(StateError::Damaged {
        path: path.to_path_buf(),
        reason: format!(
            "format version {version} written by {by} (this build reads version {current})"
        ),
    })
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        StateFile {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// The state file of `account` in `state_dir`: `state.<account>.json`, except the
    /// `default` account's, which keeps the single-account name so an upgrade to several
    /// accounts loses nothing. One file per account (rather than one keyed by account): each
    /// engine saves its own file with the saver it already has, and a damaged file costs one
    /// account its history, not all of them. `account` is `[a-z0-9_-]{1,32}` (checked by the
    /// config), so the name stays inside `state_dir`.
    pub fn for_account(state_dir: &Path, account: &str) -> Self {
        if account == crate::account_name::DEFAULT_ACCOUNT {
            return StateFile::in_dir(state_dir);
        }
        StateFile {
            path: state_dir.join(format!("state.{account}.json")),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file of this name in the same folder (the inventory's, beside the state), written
    /// and read with the same discipline.
    pub fn sibling(&self, file_name: &str) -> StateFile {
        StateFile {
            path: self.path.with_file_name(file_name),
        }
    }

    /// The folder the file is in.
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }
}

#[cfg(test)]
mod tests;
