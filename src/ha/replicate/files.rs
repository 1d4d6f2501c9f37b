//! Which files of `state_dir` are replicated, in which order a push reads them, and how they
//! are read: names only of the shapes the daemon writes, regular files only, never through a
//! link, bounded by the size their own reader accepts.
//!
//! The order is the save barrier's ([`crate::state::SaveBarrier`]) read backwards: the engine
//! makes an event durable in its outbox before it writes the state file that says the event
//! was emitted, so a push reads the state, inventory and discovery files first and the
//! outbox files after. The snapshot's outboxes are then never older than its state: an event
//! the replicated state calls emitted is in the replicated outbox (or was delivered).
//!
//! Within one sink's files the order is `outbox-S.journal`, then `.journal.prev`, then
//! `outbox-S.json`: the sink moves the journal aside as `.prev` when it takes a snapshot and
//! removes `.prev` once that snapshot is on disk, so whatever a journal held when it was read
//! is still in `.prev` or already in the snapshot when those are read after it (read the other
//! way round, a snapshot taken between the reads would lose the journal's records).

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

/// The longest account or sink name (`[a-z0-9_-]{1,32}`, checked by the config).
const MAX_ID_CHARS: usize = 32;

/// The kinds of replicated file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    /// `state.json`, `state.<account>.json`.
    State,
    /// `inventory.json`, `inventory.<account>.json`.
    Inventory,
    /// `discovery.json`, `discovery.<account>.json`.
    Discovery,
    /// `outbox-<sink>.journal`.
    Journal,
    /// `outbox-<sink>.journal.prev`.
    JournalPrev,
    /// `outbox-<sink>.json`.
    Outbox,
}

impl Kind {
    /// The largest file of this kind that is replicated: the bound its own reader accepts
    /// (a larger one is refused at start anyway, so it could only have been planted).
    pub(super) fn cap(self) -> u64 {
        match self {
            Kind::State => crate::state::MAX_FILE_BYTES,
            Kind::Inventory => crate::inventory::store::MAX_INVENTORY_BYTES,
            Kind::Discovery => crate::discovery::remembered::MAX_DISCOVERY_BYTES,
            Kind::Journal | Kind::JournalPrev | Kind::Outbox => {
                crate::delivery::outbox::MAX_OUTBOX_BYTES
            }
        }
    }

    /// Where a push reads it: the files the save barrier protects (state, inventory,
    /// discovery) before the outboxes, and each sink's journal before its `.prev` before its
    /// snapshot (the module's doc says why).
    fn rank(self) -> u8 {
        match self {
            Kind::State | Kind::Inventory | Kind::Discovery => 0,
            Kind::Journal => 1,
            Kind::JournalPrev => 2,
            Kind::Outbox => 3,
        }
    }

    /// Outbox files are written first and removed first by a restore (an outbox is durable
    /// before the state that relies on it, as in the engine).
    pub(super) fn is_outbox(self) -> bool {
        self.rank() > 0
    }
}

/// The kind of a replicated file named `name`, or `None` for every other name (temp files,
/// `*.damaged-*`, probes, anything an operator put there). Also the check of a name read from
/// etcd: it cannot hold `/` or `..`, as an account or sink name is `[a-z0-9_-]{1,32}`.
pub(super) fn classify(name: &str) -> Option<Kind> {
    let id = |s: &str| {
        (1..=MAX_ID_CHARS).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    };
    for (base, kind) in [
        ("state", Kind::State),
        ("inventory", Kind::Inventory),
        ("discovery", Kind::Discovery),
    ] {
        if let Some(rest) = name.strip_prefix(base)
            && let Some(middle) = rest.strip_suffix(".json")
        {
            if middle.is_empty() {
                return Some(kind);
            }
            if let Some(account) = middle.strip_prefix('.')
                && id(account)
            {
                return Some(kind);
            }
        }
    }
    let sink_file = name.strip_prefix("outbox-")?;
    for (suffix, kind) in [
        (".journal.prev", Kind::JournalPrev),
        (".journal", Kind::Journal),
        (".json", Kind::Outbox),
    ] {
        if let Some(sink) = sink_file.strip_suffix(suffix)
            && id(sink)
        {
            return Some(kind);
        }
    }
    None
}

/// `names` (replicated ones, with their kinds) in the order a push reads them.
pub(super) fn read_order(mut names: Vec<(String, Kind)>) -> Vec<(String, Kind)> {
    names.sort_by(|(a, ka), (b, kb)| (ka.rank(), a).cmp(&(kb.rank(), b)));
    names
}

/// The replicated files in `dir`, in read order. Only names are looked at here: what each
/// is, is checked when it is opened.
pub(super) fn list(dir: &Path) -> std::io::Result<Vec<(String, Kind)>> {
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // No state yet: nothing to replicate.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        // A name that is not UTF-8 is none of ours.
        if let Ok(name) = entry.file_name().into_string()
            && let Some(kind) = classify(&name)
        {
            names.push((name, kind));
        }
    }
    Ok(read_order(names))
}

/// What identifies a file's version without reading it: a save replaces the file (new
/// inode), a journal append moves its length and times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// An open replicated file.
pub(super) struct Opened {
    file: File,
    /// Its stamp.
    pub(super) stamp: Stamp,
}

/// Why a file was not read.
#[derive(Debug)]
pub(super) enum OpenError {
    /// Gone since it was listed (a `.prev` removed, an outbox of a removed sink): not
    /// replicated.
    Gone,
    /// A link, not a regular file, too large, unreadable: the push fails and says which.
    Refused(String),
}

/// Opens `dir/name` for reading: never through a link (`O_NOFOLLOW`), non-blocking (a FIFO
/// planted there cannot hang the push), a regular file of at most `kind`'s cap.
pub(super) fn open(dir: &Path, name: &str, kind: Kind) -> Result<Opened, OpenError> {
    let path = dir.join(name);
    let shown = || crate::state::shown(&path);
    let file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Gone),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(OpenError::Refused(format!(
                "{}: a symbolic link: not replicated (state files are never read through a \
                 link); replace it with the file",
                shown()
            )));
        }
        Err(e) => return Err(OpenError::Refused(format!("{}: {e}", shown()))),
    };
    let meta = file
        .metadata()
        .map_err(|e| OpenError::Refused(format!("{}: {e}", shown())))?;
    if !meta.is_file() {
        return Err(OpenError::Refused(format!(
            "{}: not a regular file; remove it",
            shown()
        )));
    }
    if meta.len() > kind.cap() {
        return Err(OpenError::Refused(too_large(&shown(), kind)));
    }
    let stamp = Stamp::of(&meta);
    Ok(Opened { file, stamp })
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// The replicated files of `dir` and their stamps, without opening any (`lstat`: a link is
/// stamped as the link): what the replicator watches to push soon after each save. Equal
/// results mean no replicated file was written, appended, replaced, created or removed.
pub(super) fn stamps(dir: &Path) -> std::io::Result<Vec<(String, Option<Stamp>)>> {
    Ok(list(dir)?
        .into_iter()
        .map(|(name, _)| {
            let stamp = std::fs::symlink_metadata(dir.join(&name))
                .ok()
                .map(|m| Stamp::of(&m));
            (name, stamp)
        })
        .collect())
}

/// The error for a file larger than `kind`'s cap.
pub(super) fn too_large(shown: &str, kind: Kind) -> String {
    format!(
        "{shown}: larger than {} MiB, the most its reader accepts: not replicated; it is \
         refused at start too, move it away",
        kind.cap() >> 20
    )
}

impl Opened {
    /// Its content, read up to one byte past `kind`'s cap (the file may have grown since it
    /// was opened: a journal being appended to; the reader counts and refuses that byte).
    pub(super) fn reader(self, kind: Kind) -> impl Read {
        self.file.take(kind.cap().saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemons_names_are_replicated_and_nothing_else() {
        for (name, kind) in [
            ("state.json", Kind::State),
            ("state.prod-1.json", Kind::State),
            ("inventory.json", Kind::Inventory),
            ("inventory.a_b.json", Kind::Inventory),
            ("discovery.json", Kind::Discovery),
            ("discovery.prod.json", Kind::Discovery),
            ("outbox-ops.json", Kind::Outbox),
            ("outbox-ops.journal", Kind::Journal),
            ("outbox-ops.journal.prev", Kind::JournalPrev),
        ] {
            assert_eq!(classify(name), Some(kind), "{name}");
        }
        let long = format!("state.{}.json", "a".repeat(33));
        for name in [
            "state.json.tmp.123",
            "state.json.damaged-1765000000",
            "inventory.json.damaged-1.2",
            "outbox-ops.json.tmp.77",
            "outbox-ops.journal.json.tmp.77",
            ".probe-123",
            "state..json",
            "state.Prod.json",
            "state.a.b.json",
            "state.../x.json",
            "../state.json",
            "a/state.json",
            "outbox-.json",
            "outbox-../x.json",
            "outbox-a/b.json",
            "outbox-ops.journal.prev.prev",
            "xstate.json",
            "state.jsonx",
            &long,
            "",
        ] {
            assert_eq!(classify(name), None, "{name:?}");
        }
        assert_eq!(
            classify(&format!("state.{}.json", "a".repeat(32))),
            Some(Kind::State)
        );
    }

    /// The save barrier read backwards: every state-like file before every outbox file, and
    /// each sink's journal before its `.prev` before its snapshot.
    #[test]
    fn a_push_reads_the_state_before_the_outboxes_and_a_journal_before_its_snapshot() {
        let names = [
            "outbox-b.json",
            "outbox-a.journal.prev",
            "state.json",
            "outbox-a.json",
            "discovery.x.json",
            "outbox-b.journal",
            "inventory.json",
            "outbox-a.journal",
            "state.x.json",
        ];
        let listed = names
            .iter()
            .map(|n| (n.to_string(), classify(n).unwrap()))
            .collect();
        let order: Vec<String> = read_order(listed).into_iter().map(|(n, _)| n).collect();
        let at = |n: &str| order.iter().position(|o| o == n).unwrap();
        for state in [
            "state.json",
            "state.x.json",
            "inventory.json",
            "discovery.x.json",
        ] {
            for outbox in names.iter().filter(|n| n.starts_with("outbox-")) {
                assert!(at(state) < at(outbox), "{state} after {outbox}: {order:?}");
            }
        }
        assert!(at("outbox-a.journal") < at("outbox-a.journal.prev"));
        assert!(at("outbox-a.journal.prev") < at("outbox-a.json"));
        assert!(at("outbox-b.journal") < at("outbox-b.json"));
    }

    #[test]
    fn links_fifos_and_oversized_files_are_refused_and_a_vanished_file_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("target"), b"{}").unwrap();
        std::os::unix::fs::symlink(d.join("target"), d.join("state.json")).unwrap();
        assert!(
            matches!(open(d, "state.json", Kind::State), Err(OpenError::Refused(m)) if m.contains("symbolic link"))
        );
        let fifo = std::ffi::CString::new(d.join("outbox-a.json").to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(
            matches!(open(d, "outbox-a.json", Kind::Outbox), Err(OpenError::Refused(m)) if m.contains("not a regular file"))
        );
        let big = File::create(d.join("outbox-b.json")).unwrap();
        big.set_len(Kind::Outbox.cap() + 1).unwrap();
        assert!(
            matches!(open(d, "outbox-b.json", Kind::Outbox), Err(OpenError::Refused(m)) if m.contains("larger than"))
        );
        assert!(matches!(
            open(d, "inventory.json", Kind::Inventory),
            Err(OpenError::Gone)
        ));
        let listed: Vec<String> = list(d).unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(listed, ["state.json", "outbox-a.json", "outbox-b.json"]);
    }
}
