//! The atomic private write: a temp file created new (`O_EXCL`, `O_NOFOLLOW`, mode 0600),
//! fsynced, renamed over the file, the folder fsynced; and the rename that never replaces.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use super::format::{Entries, FileOut};
use super::{StateError, StateFile, VERSION};
use crate::agent_uuid::AgentUuid;
use crate::tracker::{Known, KnownMap};

impl StateFile {
    /// The file's bytes for `known` (cheap enough for the dispatcher; the slow part, the
    /// write with its fsyncs, is [`StateFile::write`]).
    pub fn encode<'a>(&self, known: impl Iterator<Item = (AgentUuid, &'a Known)>) -> Vec<u8> {
        let file = FileOut {
            version: VERSION,
            agents: Entries(
                std::cell::RefCell::new(Some(known)),
                std::marker::PhantomData,
            ),
        };
        // Strings and integers only: serialising to memory cannot fail.
        let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes encoded state atomically: temp file, fsync, rename, fsync of the folder.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        self.write_hooked(bytes, &mut |_| Ok(()))
    }

    /// Encodes `entries` straight into the temp file (64 KiB buffered) and writes it as
    /// [`StateFile::write`] does: the file's bytes (13 MB at 100k agents) never sit in memory
    /// whole. For the saver's thread: `entries` is a copy of the table's statuses taken on
    /// the dispatcher, which thus neither encodes nor waits for the disk.
    pub fn write_entries(&self, entries: &[(AgentUuid, Known)]) -> Result<(), StateError> {
        self.write_entries_hooked(entries, &mut |_| Ok(()))
    }

    /// [`StateFile::write_entries`] calling `hook` at each [`Step`], as
    /// [`StateFile::write_hooked`] does: the daemon's own path (the saver's) under the same
    /// failure and crash tests. [`Step::Write`] comes after the buffer's last spill to the
    /// file and before its final flush, so a file of more than 64 KiB is torn there.
    pub(super) fn write_entries_hooked(
        &self,
        entries: &[(AgentUuid, Known)],
        hook: &mut dyn FnMut(Step) -> io::Result<()>,
    ) -> Result<(), StateError> {
        self.write_with(
            &mut |file, hook| {
                let mut out = io::BufWriter::with_capacity(64 * 1024, file);
                let body = FileOut {
                    version: VERSION,
                    agents: Entries(
                        std::cell::RefCell::new(Some(entries.iter().map(|(u, k)| (*u, k)))),
                        std::marker::PhantomData,
                    ),
                };
                serde_json::to_writer(&mut out, &body).map_err(io::Error::other)?;
                hook(Step::Write)?;
                out.write_all(b"\n")?;
                out.flush()
            },
            hook,
        )
    }

    /// Writes the content `fill` streams into the temp file (unbuffered: wrap it), with the
    /// discipline of [`StateFile::write`]; when `fill` fails, the temp file is removed and the
    /// previous file stays as it was.
    pub fn write_streamed(
        &self,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> Result<(), StateError> {
        self.write_with(&mut |f, _| fill(f), &mut |_| Ok(()))
    }

    /// [`StateFile::write`] calling `hook` at each [`Step`]: an error from it is that step
    /// failing, a panic in it a crash at that moment. Tests use it to prove that the file is
    /// the old or the new content at every step (a real crash cannot be placed that exactly).
    pub(super) fn write_hooked(
        &self,
        bytes: &[u8],
        hook: &mut dyn FnMut(Step) -> io::Result<()>,
    ) -> Result<(), StateError> {
        self.write_with(
            &mut |f, hook| {
                // In two parts so that a test can stop between them: a torn temp file.
                let (head, tail) = bytes.split_at(bytes.len() / 2);
                f.write_all(head)?;
                hook(Step::Write)?;
                f.write_all(tail)
            },
            hook,
        )
    }

    /// The atomic write, `fill` writing the content (and calling the hook at
    /// [`Step::Write`] when it can).
    #[allow(clippy::type_complexity)]
    pub(super) fn write_with(
        &self,
        fill: &mut dyn FnMut(&mut File, &mut dyn FnMut(Step) -> io::Result<()>) -> io::Result<()>,
        hook: &mut dyn FnMut(Step) -> io::Result<()>,
    ) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.dir();
        // Checked at start-up; created again (private) if someone removed it since.
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io)?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let result = (|| {
            // A leftover of a crashed run with the same pid (or a link planted there) is
            // removed, never followed; `create_new` + `O_NOFOLLOW` refuse anything that
            // appears meanwhile.
            remove_leftover(&tmp);
            hook(Step::Create)?;
            let mut f = create_new_private(&tmp)?;
            fill(&mut f, &mut *hook)?;
            hook(Step::Sync)?;
            f.sync_all()?;
            hook(Step::Rename)?;
            fs::rename(&tmp, &self.path)?;
            hook(Step::SyncDir)?;
            // The rename itself is durable only once the folder is synced.
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Encodes and writes the state atomically.
    pub fn save(&self, known: &KnownMap) -> Result<(), StateError> {
        self.write(&self.encode(known.iter().map(|(u, k)| (*u, k))))
    }
}

/// Removes what a crashed run (or anyone) left at `path`; a link is removed, never followed.
/// Errors are left to the `create_new` that follows, which reports them.
pub(super) fn remove_leftover(path: &Path) {
    let _ = fs::remove_file(path);
}

/// A file created new for writing: `O_EXCL` and `O_NOFOLLOW`, so never an existing file or a
/// link's target, and mode 0600.
pub(super) fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Where [`StateFile::write_hooked`] calls its hook: before creating the temp file, halfway
/// through writing it, before its fsync, before the rename, before the folder's fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Create,
    Write,
    Sync,
    Rename,
    SyncDir,
}

/// Makes a rename in `dir` durable.
pub(super) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`:
/// `renameat2(RENAME_NOREPLACE)`, atomic. On a file system without it, a check then a rename:
/// racy only against writers of `state_dir`, which [`prepare_dir`] keeps to us (and root).
pub(super) fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in the path"))
    };
    let (c_from, c_to) = (c_path(from)?, c_path(to)?);
    // SAFETY: both pointers are valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => rename_if_free(from, to),
        _ => Err(e),
    }
}

/// The fallback of [`rename_no_replace`] where `renameat2` is missing: a check, then a
/// rename (its own function so that tests reach it on file systems that have `renameat2`).
pub(super) fn rename_if_free(from: &Path, to: &Path) -> io::Result<()> {
    match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Err(m) if m.kind() == io::ErrorKind::NotFound => fs::rename(from, to),
        Err(m) => Err(m),
    }
}
