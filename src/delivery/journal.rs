//! The outbox's journal: each record a sink takes is appended to `outbox-{sink}.journal` as
//! it is taken, so a `kill -9` at any moment loses none of them.
//!
//! Why: the outbox file ([`super::outbox::OutboxFile`]) is a whole snapshot, written (with
//! fsyncs) before each send and before each state save ([`crate::state::SaveBarrier`]). An
//! event emitted and killed before the next snapshot was lost to its sinks when its condition
//! also ended before the restart (the restarted daemon never sees it again: an agent offline
//! for a moment while the daemon was down). A `write(2)` reaches the kernel's page cache,
//! which a killed process cannot take back, so one appended line per record closes that gap
//! for process crashes; the snapshots' fsyncs still cover machine crashes for the state files.
//!
//! The cycle: the snapshot is taken under the outbox's lock and, under the same lock, the
//! journal is moved aside as `outbox-{sink}.journal.prev` (when no earlier one waits) and a new
//! one begun; once the snapshot is on disk, `.prev` is removed. Every line of `.prev` was
//! written before the snapshot was taken, so the snapshot holds it (or it was delivered). At
//! start, the snapshot is loaded and then `.prev` and the journal are replayed: only records
//! numbered at or after the snapshot's `next_seq` are new (earlier ones are in the snapshot
//! or were delivered), so a replay never repeats a delivered record.
//!
//! Files are created private (0600) and never through a link (`O_NOFOLLOW`), read only as
//! regular files of at most [`super::outbox::MAX_OUTBOX_BYTES`]; a line that cannot be read
//! (the torn end of a write cut by the kill) is skipped. A journal that cannot be written is
//! logged once and the sink goes on with snapshots alone.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::Record;
use super::outbox::{MAX_OUTBOX_BYTES, Outbox};

/// A sink's journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    previous: PathBuf,
    file: Option<File>,
    /// A write failed once: said once, then the sink runs on snapshots alone.
    reported: bool,
}

/// `outbox-{sink}.journal` and its `.prev` in `state_dir`.
fn paths(state_dir: &Path, sink: &str) -> (PathBuf, PathBuf) {
    let path = state_dir.join(format!("outbox-{sink}.journal"));
    let previous = state_dir.join(format!("outbox-{sink}.journal.prev"));
    (path, previous)
}

/// Opens `path` for appending: created 0600 when missing, never through a symbolic link, and
/// only a regular file (a FIFO or device planted there is refused without blocking).
fn open_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

impl Journal {
    /// The journal of `sink` in `state_dir`, open for appending (a failure is logged and the
    /// sink runs on snapshots alone).
    pub fn open(state_dir: &Path, sink: &str) -> Journal {
        let (path, previous) = paths(state_dir, sink);
        let mut journal = Journal {
            file: None,
            path,
            previous,
            reported: false,
        };
        match open_append(&journal.path) {
            Ok(file) => journal.file = Some(file),
            Err(e) => journal.report(&e),
        }
        journal
    }

    fn report(&mut self, error: &std::io::Error) {
        if !self.reported {
            self.reported = true;
            tracing::error!(
                path = %crate::state::shown(&self.path),
                "cannot write the outbox journal ({error}): events taken since the last \
                 outbox save are lost if the daemon is killed; fix the state directory"
            );
        }
    }

    /// Appends `record` (numbered already) as one line: one `write(2)`, no fsync.
    pub fn append(&mut self, record: &Record) {
        let Some(file) = &mut self.file else { return };
        // Strings, numbers and JSON values only: serialising to memory cannot fail.
        let mut line = serde_json::to_vec(record).unwrap_or_default();
        line.push(b'\n');
        if let Err(e) = file.write_all(&line) {
            self.file = None;
            self.report(&e);
        }
    }

    /// With a snapshot just taken (under the outbox's lock): moves the journal aside as
    /// `.prev` unless an earlier `.prev` still waits, and begins a new one. After the
    /// snapshot is on disk, [`Journal::snapshot_written`] removes `.prev`.
    pub fn snapshot_taken(&mut self) {
        if self.file.is_none() || self.previous.exists() {
            // Without a journal there is nothing to move; with a `.prev` still there (its
            // snapshot failed), the journal keeps growing until one succeeds.
            return;
        }
        if let Err(e) = std::fs::rename(&self.path, &self.previous) {
            self.report(&e);
            return;
        }
        match open_append(&self.path) {
            Ok(file) => self.file = Some(file),
            Err(e) => {
                self.file = None;
                self.report(&e);
            }
        }
    }

    /// The snapshot taken with the last [`Journal::snapshot_taken`] is on disk: `.prev` is
    /// no longer needed.
    pub fn snapshot_written(&self) {
        match std::fs::remove_file(&self.previous) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(
                path = %crate::state::shown(&self.previous),
                "cannot remove the previous outbox journal ({e}); it is replayed harmlessly \
                 at the next start"
            ),
        }
    }
}

/// Adds to `outbox` (as loaded from its snapshot) the records of `sink`'s journals that the
/// snapshot does not hold, oldest first; returns how many. Unreadable lines are skipped; an
/// unreadable file (too big, not a regular file) is reported and skipped.
pub fn replay(state_dir: &Path, sink: &str, outbox: &mut Outbox) -> usize {
    let (path, previous) = paths(state_dir, sink);
    let mut added = 0;
    for path in [previous, path] {
        let bytes = match read_bounded(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!(
                    path = %crate::state::shown(&path),
                    "cannot read the outbox journal ({e}); its events are not replayed"
                );
                continue;
            }
        };
        for line in bytes.split(|b| *b == b'\n') {
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            if outbox.push_replayed(record) {
                added += 1;
            }
        }
    }
    added
}

/// The whole file when it is a regular file of at most [`MAX_OUTBOX_BYTES`]; `None` when
/// missing.
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_OUTBOX_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_OUTBOX_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_OUTBOX_BYTES} bytes"
        )));
    }
    Ok(Some(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Severity;

    fn record(n: u64) -> Record {
        Record {
            seq: 0,
            at_ms: n,
            event: "port_unexpected".to_owned(),
            account: None,
            severity: Severity::Warning,
            key: format!("k{n}"),
            resolves: false,
            ends: None,
            message: format!("event {n}"),
            fields: serde_json::Map::new(),
        }
    }

    /// Pushes `n` records the way the sink does: numbered, journaled, queued.
    fn take(outbox: &mut Outbox, journal: &mut Journal, n: u64) {
        let mut r = record(n);
        r.seq = outbox.next_seq();
        journal.append(&r);
        outbox.push(r);
    }

    fn seqs(o: &Outbox) -> Vec<u64> {
        o.offer(usize::MAX).iter().map(|r| r.seq).collect()
    }

    #[test]
    fn records_taken_after_the_last_snapshot_come_back_and_delivered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::new("s", 100);
        let mut journal = Journal::open(dir.path(), "s");
        for n in 1..=3 {
            take(&mut outbox, &mut journal, n);
        }
        // Record 1 delivered, then a snapshot (the worker's save after a send).
        outbox.start(1);
        outbox.finish_in_flight();
        let snapshot = outbox.encode();
        journal.snapshot_taken();
        std::fs::write(dir.path().join("snap.json"), &snapshot).unwrap();
        journal.snapshot_written();
        // Taken after the snapshot: only in the journal when the process is killed.
        take(&mut outbox, &mut journal, 4);
        take(&mut outbox, &mut journal, 5);
        drop(journal);

        let mut restarted = Outbox::new("s", 100);
        // As loaded from the snapshot: records 2 and 3, next_seq 4.
        for n in 2..=3 {
            let mut r = record(n);
            r.seq = n;
            assert!(restarted.push_replayed(r));
        }
        let added = replay(dir.path(), "s", &mut restarted);
        assert_eq!(added, 2);
        assert_eq!(
            seqs(&restarted),
            [2, 3, 4, 5],
            "1 was delivered: never again"
        );
        assert_eq!(
            restarted.next_seq(),
            6,
            "numbers go on after the replayed ones"
        );
        assert!(!dir.path().join("outbox-s.journal.prev").exists());
    }

    #[test]
    fn a_snapshot_that_failed_keeps_the_previous_journal_until_one_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::new("s", 100);
        let mut journal = Journal::open(dir.path(), "s");
        take(&mut outbox, &mut journal, 1);
        journal.snapshot_taken(); // its write fails: no snapshot_written
        take(&mut outbox, &mut journal, 2);
        journal.snapshot_taken(); // `.prev` still waits: no second move
        take(&mut outbox, &mut journal, 3);
        drop(journal);
        let mut restarted = Outbox::new("s", 100);
        assert_eq!(replay(dir.path(), "s", &mut restarted), 3);
        assert_eq!(seqs(&restarted), [1, 2, 3]);
    }

    #[test]
    fn a_torn_line_and_garbage_are_skipped_and_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut outbox = Outbox::new("s", 100);
        let mut journal = Journal::open(dir.path(), "s");
        take(&mut outbox, &mut journal, 1);
        drop(journal);
        let path = dir.path().join("outbox-s.journal");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let mut text = std::fs::read(&path).unwrap();
        text.extend_from_slice(b"\xff\xfe not json\n{\"seq\":2,\"at_ms\":");
        std::fs::write(&path, text).unwrap();
        let mut restarted = Outbox::new("s", 100);
        assert_eq!(replay(dir.path(), "s", &mut restarted), 1);
        assert_eq!(seqs(&restarted), [1]);
    }

    #[test]
    fn a_link_or_a_fifo_in_the_journals_place_is_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, b"").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join("outbox-s.journal")).unwrap();
        let mut journal = Journal::open(dir.path(), "s");
        journal.append(&record(1));
        assert_eq!(
            std::fs::read(&target).unwrap(),
            b"",
            "nothing through the link"
        );
        let fifo = dir.path().join("outbox-f.journal");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let mut journal = Journal::open(dir.path(), "f");
        journal.append(&record(1));
        let mut restarted = Outbox::new("f", 100);
        assert_eq!(
            replay(dir.path(), "f", &mut restarted),
            0,
            "read without blocking"
        );
    }
}
