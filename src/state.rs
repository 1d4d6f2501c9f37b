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

use std::collections::HashMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::agent_uuid::AgentUuid;
use crate::events::printable;
use crate::tracker::{Known, KnownMap};

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

/// Makes sure `dir` can hold the state: a folder (created with its missing parents, mode
/// 0700, when absent), not writable by group or others, in which we can create and remove a
/// file. Run by `check` and before `run` polls, so a state that could not be persisted, or
/// could be swapped by another user, is an error at once and not a silent loss later.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    let unusable = |problem: String, fix: String| StateError::Unusable {
        dir: dir.to_path_buf(),
        problem,
        fix,
    };
    let shown_dir = shown(dir);
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        // Missing, or a file where a parent folder should be: creating it says which.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            if let Ok(target) = fs::read_link(dir) {
                // A relative target is relative to the link's folder.
                let target = dir.parent().unwrap_or(Path::new("/")).join(target);
                return Err(unusable(
                    format!(
                        "is a symbolic link to {}, which does not exist",
                        shown(&target)
                    ),
                    format!(
                        "create the folder it points to (install -d -m 700 {}) or set \
                         state_dir to a folder",
                        shown(&target)
                    ),
                ));
            }
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    unusable(
                        format!("cannot create the folder ({e})"),
                        format!(
                            "create it (install -d -m 700 {shown_dir}) or set state_dir to a \
                             folder the daemon's user can write"
                        ),
                    )
                })?;
            fs::metadata(dir).map_err(|e| {
                unusable(
                    format!("cannot be read after creating it ({e})"),
                    "set state_dir to a folder the daemon's user can write".to_owned(),
                )
            })?
        }
        Err(e) => {
            return Err(unusable(
                format!("cannot be read ({e})"),
                "set state_dir to a folder the daemon's user can read and write".to_owned(),
            ));
        }
    };
    if !meta.is_dir() {
        return Err(unusable(
            "is not a folder".to_owned(),
            "set state_dir to a folder (it is created when missing)".to_owned(),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unusable(
            format!(
                "is writable by other users (mode {mode:04o}), who could replace the state file"
            ),
            format!("chmod 700 {shown_dir}, or set state_dir to a private folder"),
        ));
    }
    // The probe: created new, never through a link, as the state's temp file is.
    let probe = dir.join(format!(".{FILE_NAME}.probe.{}", std::process::id()));
    remove_leftover(&probe);
    let cannot_write = |e: io::Error| {
        unusable(
            format!("cannot write in it ({e})"),
            "set state_dir to a folder on a writable file system that the daemon's user can \
             write (not under /proc or /sys)"
                .to_owned(),
        )
    };
    create_new_private(&probe).map_err(cannot_write)?;
    fs::remove_file(&probe).map_err(cannot_write)
}

/// Removes what a crashed run (or anyone) left at `path`; a link is removed, never followed.
/// Errors are left to the `create_new` that follows, which reports them.
fn remove_leftover(path: &Path) {
    let _ = fs::remove_file(path);
}

/// A file created new for writing: `O_EXCL` and `O_NOFOLLOW`, so never an existing file or a
/// link's target, and mode 0600.
fn create_new_private(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// What is read, as a [`serde::de::DeserializeSeed`]: each agent's entry goes to `each` as
/// soon as it is parsed (straight into the engine's table: no map of 100k agents while
/// loading). The file's `version`; keys that are not agent Uuids are skipped (no build wrote
/// them; an agent not watched is forgotten anyway).
struct FileIn<'f> {
    each: &'f mut dyn FnMut(AgentUuid, Known),
}

const FIELDS: &[&str] = &["version", "agents"];

impl<'de> serde::de::DeserializeSeed<'de> for FileIn<'_> {
    type Value = u32;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<u32, D::Error> {
        d.deserialize_struct("StateFile", FIELDS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for FileIn<'_> {
    type Value = u32;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a state file: an object with version and agents")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<u32, A::Error> {
        use serde::de::Error;
        let each = self.each;
        let (mut version, mut agents) = (None, false);
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match &*key {
                "version" if version.is_none() => version = Some(map.next_value::<u32>()?),
                "agents" if !agents => {
                    agents = true;
                    map.next_value_seed(Agents { each: &mut *each })?;
                }
                "version" | "agents" => {
                    return Err(A::Error::custom(format!("duplicate field `{key}`")));
                }
                other => return Err(A::Error::unknown_field(other, FIELDS)),
            }
        }
        if !agents {
            return Err(A::Error::missing_field("agents"));
        }
        version.ok_or_else(|| A::Error::missing_field("version"))
    }
}

/// The `agents` object of [`FileIn`].
struct Agents<'f> {
    each: &'f mut dyn FnMut(AgentUuid, Known),
}

impl<'de> serde::de::DeserializeSeed<'de> for Agents<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Agents<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an object of agent Uuid → status")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(MaybeUuid(uuid)) = map.next_key()? {
            let known: Known = map.next_value()?;
            if let Some(uuid) = uuid {
                (self.each)(uuid, known);
            }
        }
        Ok(())
    }
}

/// A key that may be an agent Uuid: parsed from the parser's buffer, no string allocated.
struct MaybeUuid(Option<AgentUuid>);

impl<'de> Deserialize<'de> for MaybeUuid {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = MaybeUuid;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an agent Uuid")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<MaybeUuid, E> {
                Ok(MaybeUuid(AgentUuid::parse(text).ok()))
            }
        }
        d.deserialize_str(V)
    }
}

/// What is written: borrowed entries, serialized as they are iterated (saving copies
/// nothing).
#[derive(Serialize)]
#[serde(bound(serialize = "Entries<'a, I>: Serialize"))]
struct FileOut<'a, I> {
    version: u32,
    agents: Entries<'a, I>,
}

/// The entries of [`FileOut`], taken once by `serialize`.
struct Entries<'a, I>(
    std::cell::RefCell<Option<I>>,
    std::marker::PhantomData<&'a Known>,
);

impl<'a, I: Iterator<Item = (AgentUuid, &'a Known)>> Serialize for Entries<'a, I> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.0.borrow_mut().take();
        s.collect_map(entries.into_iter().flatten())
    }
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
        if account == crate::config::DEFAULT_ACCOUNT {
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

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<KnownMap, StateError> {
        self.load_capped(MAX_FILE_BYTES)
    }

    /// [`StateFile::load`] with the size limit given (tests use a small one).
    fn load_capped(&self, max_bytes: u64) -> Result<KnownMap, StateError> {
        let mut known = HashMap::new();
        self.load_each_capped(max_bytes, &mut |uuid, k| {
            known.insert(uuid, k);
        })?;
        Ok(known)
    }

    /// Reads the state, giving each agent's entry to `each` as it is parsed (a missing file
    /// gives none). On an error, entries already given must be dropped: the file is damaged.
    pub fn load_each(&self, each: &mut dyn FnMut(AgentUuid, Known)) -> Result<(), StateError> {
        self.load_each_capped(MAX_FILE_BYTES, each)
    }

    fn load_each_capped(
        &self,
        max_bytes: u64,
        each: &mut dyn FnMut(AgentUuid, Known),
    ) -> Result<(), StateError> {
        if let Some(version) = self.read_json_seed(max_bytes, FileIn { each })? {
            check_version(&self.path, version, VERSION)?;
        }
        Ok(())
    }

    /// A file of this name in the same folder (the inventory's, beside the state), written
    /// and read with the same discipline.
    pub fn sibling(&self, file_name: &str) -> StateFile {
        StateFile {
            path: self.path.with_file_name(file_name),
        }
    }

    /// Reads and parses the file as JSON; `None` when it is missing. Read only when it is a
    /// regular file of at most `max_bytes` (checked before and while reading), opened
    /// non-blocking: a FIFO planted here must not hang the start.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        max_bytes: u64,
    ) -> Result<Option<T>, StateError> {
        self.read_json_seed(max_bytes, std::marker::PhantomData::<T>)
    }

    /// [`StateFile::read_json`] with a [`serde::de::DeserializeSeed`] (entries streamed to a
    /// callback).
    fn read_json_seed<S: for<'de> serde::de::DeserializeSeed<'de>>(
        &self,
        max_bytes: u64,
        seed: S,
    ) -> Result<Option<<S as serde::de::DeserializeSeed<'static>>::Value>, StateError> {
        let damaged = |reason: String| StateError::Damaged {
            path: self.path.clone(),
            reason,
        };
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(source)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(damaged(
                "not a regular file (a folder, a FIFO or a device)".to_owned(),
            ));
        }
        let too_large = || damaged(format!("larger than {} MiB", max_bytes >> 20));
        if meta.len() > max_bytes {
            return Err(too_large());
        }
        // Streamed, not read whole: 100k agents' file would otherwise sit in memory beside
        // the map built from it. Bounded again while reading: the file may grow meanwhile.
        let mut limited = file.take(max_bytes.saturating_add(1));
        let reader = io::BufReader::with_capacity(64 * 1024, &mut limited);
        let mut de = serde_json::Deserializer::from_reader(reader);
        let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        if limited.limit() == 0 {
            return Err(too_large());
        }
        parsed.map(Some).map_err(|e| damaged(e.to_string()))
    }

    /// Reads the state for a daemon that starts: a missing file is an empty state, and a
    /// file that cannot be read is renamed (see [`StateFile::set_aside`]) so the first save
    /// cannot overwrite it; the daemon then starts fresh. Fails only when such a file cannot
    /// be kept.
    pub fn load_keeping_damaged(&self) -> Result<(KnownMap, Option<SetAside>), StateError> {
        match self.load() {
            Ok(known) => Ok((known, None)),
            Err(error) => {
                let moved_to = self.set_aside()?;
                Ok((HashMap::new(), Some(SetAside { error, moved_to })))
            }
        }
    }

    /// Renames the state file to `state.json.damaged-<unix time>` (`….1`, `….2`, … when that
    /// name is taken), never over an existing file, and makes the rename durable.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let failed = |source| StateError::SetAside {
            path: self.path.clone(),
            source,
        };
        let stamp = crate::clock::unix_now();
        // `state.json` or a sibling's (`inventory.json`) own name.
        let own = self.path.file_name().map_or_else(
            || FILE_NAME.to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        for n in 0..MAX_DAMAGED_NAMES {
            let name = match n {
                0 => format!("{own}.damaged-{stamp}"),
                n => format!("{own}.damaged-{stamp}.{n}"),
            };
            let target = self.path.with_file_name(name);
            match rename_no_replace(&self.path, &target) {
                Ok(()) => {
                    sync_dir(self.dir()).map_err(failed)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(failed(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{MAX_DAMAGED_NAMES} damaged copies from this second exist already"),
        )))
    }

    /// The folder the file is in.
    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        }
    }

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
    fn write_entries_hooked(
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
    fn write_hooked(
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
    fn write_with(
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

/// Where [`StateFile::write_hooked`] calls its hook: before creating the temp file, halfway
/// through writing it, before its fsync, before the rename, before the folder's fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Write,
    Sync,
    Rename,
    SyncDir,
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// `rename(from, to)` that fails with `AlreadyExists` instead of replacing `to`:
/// `renameat2(RENAME_NOREPLACE)`, atomic. On a file system without it, a check then a rename:
/// racy only against writers of `state_dir`, which [`prepare_dir`] keeps to us (and root).
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
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
fn rename_if_free(from: &Path, to: &Path) -> io::Result<()> {
    match fs::symlink_metadata(to) {
        Ok(_) => Err(io::Error::from(io::ErrorKind::AlreadyExists)),
        Err(m) if m.kind() == io::ErrorKind::NotFound => fs::rename(from, to),
        Err(m) => Err(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Known;

    #[test]
    fn streamed_writes_are_the_encoded_bytes_and_load_back() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        let entries: Vec<(AgentUuid, Known)> = (0..3u128)
            .map(|i| {
                let known = Known {
                    status: if i == 2 {
                        crate::status::Status::new("SOMETHING_NEW")
                    } else {
                        crate::status::Status::Complete
                    },
                    request_id: if i == 0 {
                        "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into()
                    } else {
                        format!("r-{i}").into()
                    },
                    seen_at: 1_700_000_000 + i as i64,
                };
                (AgentUuid::from_value(i), known)
            })
            .collect();
        s.write_entries(&entries).unwrap();
        let written = fs::read(s.path()).unwrap();
        assert_eq!(written, s.encode(entries.iter().map(|(u, k)| (*u, k))));
        let loaded = s.load().unwrap();
        assert_eq!(loaded.len(), 3);
        for (u, k) in &entries {
            assert_eq!(&loaded[u], k);
        }
        // Streamed in: each entry once, keys that are not Uuids skipped.
        fs::write(
            s.path(),
            r#"{"version":1,"agents":{"web-01":{"status":"COMPLETE","request_id":"r","seen_at":1},"00000000-0000-0000-0000-000000000001":{"status":"FAILED","request_id":"r","seen_at":2}}}"#,
        )
        .unwrap();
        let mut seen = Vec::new();
        s.load_each(&mut |u, k| seen.push((u, k.status))).unwrap();
        assert_eq!(
            seen,
            [(AgentUuid::from_value(1), crate::status::Status::Failed)]
        );
        // A version after the agents still decides: the entries fed are to be dropped.
        fs::write(s.path(), r#"{"agents":{},"version":2}"#).unwrap();
        assert!(s.load_each(&mut |_, _| {}).is_err());
        fs::write(s.path(), r#"{"version":1}"#).unwrap();
        assert!(s.load_each(&mut |_, _| {}).is_err(), "agents missing");
        fs::write(s.path(), r#"{"version":1,"agents":{},"agents":{}}"#).unwrap();
        assert!(s.load_each(&mut |_, _| {}).is_err(), "agents twice");
        fs::write(s.path(), r#"{"version":1,"agents":{},"other":1}"#).unwrap();
        assert!(s.load_each(&mut |_, _| {}).is_err(), "unknown field");
        fs::write(s.path(), r#"{"version":1,"agents":{}} trailing"#).unwrap();
        assert!(s.load_each(&mut |_, _| {}).is_err(), "trailing bytes");
    }

    #[test]
    fn round_trip_missing_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        assert!(s.load().unwrap().is_empty());
        let mut known = HashMap::new();
        known.insert(
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap(),
            Known {
                status: crate::status::Status::Complete,
                request_id: "r1".into(),
                seen_at: 42,
            },
        );
        s.save(&known).unwrap();
        assert_eq!(s.load().unwrap(), known);
        fs::write(s.path(), b"{\"version\":1,\"agents\":{\"x\":").unwrap();
        let e = s.load().unwrap_err();
        assert_eq!(e.code(), "StateError.Damaged");
        fs::write(s.path(), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(s.load().unwrap_err().code(), "StateError.Damaged");
        // No temp files are left behind.
        s.save(&known).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    /// One agent's state, told apart by `seen_at`.
    fn one_agent(seen_at: i64) -> KnownMap {
        HashMap::from([(
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap(),
            Known {
                status: crate::status::Status::Collecting,
                request_id: format!("request-{seen_at}").into(),
                seen_at,
            },
        )])
    }

    const STEPS: [Step; 5] = [
        Step::Create,
        Step::Write,
        Step::Sync,
        Step::Rename,
        Step::SyncDir,
    ];

    /// The state file holds exactly `old` or exactly `new`, never anything else.
    fn old_or_new(s: &StateFile, old: &KnownMap, new: &KnownMap, at: &str) -> bool {
        let got = s
            .load()
            .unwrap_or_else(|e| panic!("{at}: the state file does not load: {e}"));
        assert!(
            got == *old || got == *new,
            "{at}: neither old nor new: {got:?}"
        );
        got == *new
    }

    /// Atomicity, deterministically: a write that fails at each step, or crashes there (a
    /// panic: nothing after it runs, not even the clean-up), leaves the old file before the
    /// rename and the new one after it, and the hook sees old-or-new at every step.
    #[test]
    fn a_write_failing_or_crashing_at_any_step_leaves_the_old_or_the_new_file() {
        let (old, new) = (one_agent(1), one_agent(2));
        // Big enough that half of it is not valid JSON of either.
        let mut big_new = new.clone();
        for i in 0..500 {
            big_new.insert(
                format!("{i:08x}-0000-4000-8000-000000000000")
                    .parse()
                    .unwrap(),
                old[&"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap()].clone(),
            );
        }
        for new in [new, big_new] {
            for fail_at in STEPS {
                for crash in [false, true] {
                    let at = format!("{fail_at:?} (crash: {crash})");
                    let dir = tempfile::tempdir().unwrap();
                    let s = StateFile::in_dir(dir.path());
                    s.save(&old).unwrap();
                    let bytes = s.encode(new.iter().map(|(u, k)| (*u, k)));
                    let mut seen = Vec::new();
                    let mut hook = |step: Step| {
                        old_or_new(&s, &old, &new, &format!("{at}, at {step:?}"));
                        seen.push(step);
                        if step != fail_at {
                            Ok(())
                        } else if crash {
                            panic!("crash at {step:?}")
                        } else {
                            Err(io::Error::other(format!("fails at {step:?}")))
                        }
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        s.write_hooked(&bytes, &mut hook)
                    }));
                    // Every step up to the failing one was reached, in order.
                    let upto = STEPS.iter().position(|s| *s == fail_at).unwrap();
                    assert_eq!(seen, STEPS[..=upto], "{at}");
                    match result {
                        Err(_) => assert!(crash, "{at}: only the crash panics"),
                        Ok(r) => assert_eq!(r.unwrap_err().code(), "StateError.Io", "{at}"),
                    }
                    let is_new = old_or_new(&s, &old, &new, &at);
                    assert_eq!(
                        is_new,
                        fail_at == Step::SyncDir,
                        "{at}: which file is there"
                    );
                    let left: Vec<_> = fs::read_dir(dir.path())
                        .unwrap()
                        .map(|e| e.unwrap().file_name())
                        .collect();
                    if !crash {
                        // A failed write removes its temp file.
                        assert_eq!(left.len(), 1, "{at}: {left:?}");
                    }
                    // The next write after a crash (same pid: the same temp name) works.
                    s.save(&one_agent(3)).unwrap();
                    assert_eq!(s.load().unwrap(), one_agent(3), "{at}");
                    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{at}");
                }
            }
        }
    }

    #[test]
    fn temp_files_are_new_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = dir
            .path()
            .join(format!("state.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        s.save(&HashMap::new()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(
            fs::symlink_metadata(&tmp).is_err(),
            "the planted link is gone"
        );
        let mode = fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    /// Runs `f` on a thread; `None` when it has not returned within 5 s (it hangs).
    fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(5)).ok()
    }

    #[test]
    fn a_fifo_or_a_folder_as_state_file_is_damaged_and_never_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        let path = std::ffi::CString::new(s.path().to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
        let fifo = s.clone();
        let e = within_5s(move || fifo.load().map(|k| k.len()))
            .expect("loading a FIFO must not wait for a writer")
            .unwrap_err();
        assert_eq!(e.code(), "StateError.Damaged", "{e}");
        assert!(e.to_string().contains("not a regular file"), "{e}");
        fs::remove_file(s.path()).unwrap();
        fs::create_dir(s.path()).unwrap();
        let e = s.load().unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }

    /// Only a missing file is an empty state: a state file that cannot be opened for any
    /// other reason (here a link loop) is an error, never a fresh start that the next save
    /// would write over it.
    #[test]
    fn a_state_file_that_cannot_be_opened_is_an_error_not_an_empty_state() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        std::os::unix::fs::symlink(s.path(), s.path()).unwrap();
        let e = s.load().unwrap_err();
        assert_eq!(e.code(), "StateError.Io", "{e}");
    }

    #[test]
    fn a_state_file_over_the_size_limit_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        // Sparse: no disk space, and any reading of it would take long.
        File::create(s.path())
            .unwrap()
            .set_len((256 << 20) + 1)
            .unwrap();
        let e = s.load().unwrap_err();
        assert_eq!(e.code(), "StateError.Damaged", "{e}");
        assert!(e.to_string().contains("larger than 256 MiB"), "{e}");
    }

    #[test]
    fn control_characters_from_a_damaged_file_are_escaped_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        fs::write(
            s.path(),
            "{\"version\":1,\"agents\":{},\"\\u001b]0;pwned\\u0007\":1}",
        )
        .unwrap();
        let e = s.load().unwrap_err().to_string();
        assert!(!e.chars().any(char::is_control), "{e:?}");
        assert!(e.contains("\\u{1b}]0;pwned"), "{e:?}");
    }

    #[test]
    fn a_state_file_that_grows_past_the_limit_while_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        s.save(&HashMap::new()).unwrap();
        // Valid JSON, but more bytes than the limit: what a file growing meanwhile looks like.
        fs::write(
            s.path(),
            format!("{{\"version\":1,\"agents\":{{}}}}{}", " ".repeat(64)),
        )
        .unwrap();
        let e = s.load_capped(32).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        assert!(s.load_capped(1 << 20).unwrap().is_empty());
        // Exactly at the limit is still read; one byte more is not.
        let len = fs::metadata(s.path()).unwrap().len();
        assert!(s.load_capped(len).unwrap().is_empty());
        assert!(s.load_capped(len - 1).is_err());
    }

    #[test]
    fn prepare_dir_creates_a_missing_folder_private_with_its_parents() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let state_dir = dir.path().join("a/b/state");
        prepare_dir(&state_dir).unwrap();
        for d in [
            dir.path().join("a"),
            dir.path().join("a/b"),
            state_dir.clone(),
        ] {
            let mode = fs::metadata(&d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{}: {mode:o}", d.display());
        }
        // The probe leaves nothing behind; a second check passes as well.
        assert_eq!(fs::read_dir(&state_dir).unwrap().count(), 0);
        prepare_dir(&state_dir).unwrap();
        // A folder reached through a link is fine.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&state_dir, &link).unwrap();
        prepare_dir(&link).unwrap();
    }

    #[test]
    fn prepare_dir_refuses_what_cannot_hold_the_state_and_says_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let dangling = dir.path().join("dangling");
        std::os::unix::fs::symlink("gone", &dangling).unwrap();
        let shared = dir.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::set_permissions(&shared, fs::Permissions::from_mode(0o775)).unwrap();
        let cases = [
            (file.clone(), "is not a folder"),
            (file.join("state"), "cannot create the folder"),
            (dangling, "symbolic link to"),
            (shared.clone(), "chmod 700"),
            (PathBuf::from("/proc/self"), "cannot write in it"),
        ];
        for (path, needle) in cases {
            let e = prepare_dir(&path).unwrap_err();
            assert_eq!(e.code(), "StateError.Unusable", "{e}");
            let text = e.to_string();
            assert!(text.starts_with("state_dir "), "{text}");
            assert!(text.contains(path.to_str().unwrap()), "{text}");
            assert!(text.contains(needle), "{}: {text}", path.display());
        }
        // A folder that cannot even be looked at (a link loop) is reported as such, not
        // taken for a missing one.
        let looped = dir.path().join("looped");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let text = prepare_dir(&looped).unwrap_err().to_string();
        assert!(text.contains("cannot be read"), "{text}");
        assert!(
            prepare_dir(&dir.path().join("dangling"))
                .unwrap_err()
                .to_string()
                .contains(&format!(
                    "install -d -m 700 {}",
                    dir.path().join("gone").display()
                ))
        );
        // Nothing was created in the refused folders.
        assert_eq!(fs::read_dir(&shared).unwrap().count(), 0);
        // A control character in the path is shown escaped.
        let odd = dir.path().join("odd\u{1b}[2Jfile");
        fs::write(&odd, b"x").unwrap();
        let text = prepare_dir(&odd).unwrap_err().to_string();
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }

    #[test]
    fn a_damaged_or_newer_file_is_set_aside_never_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        // Names a set-aside of this second or the next would pick, taken already.
        let now = crate::clock::unix_now();
        let taken: Vec<PathBuf> = [now, now + 1]
            .iter()
            .map(|t| dir.path().join(format!("state.json.damaged-{t}")))
            .collect();
        for t in &taken {
            fs::write(t, b"precious").unwrap();
        }
        fs::write(s.path(), br#"{"version":2,"agents":{}}"#).unwrap();
        let (known, set_aside) = s.load_keeping_damaged().unwrap();
        assert!(known.is_empty());
        let set_aside = set_aside.expect("the newer file is set aside");
        assert!(
            set_aside
                .error
                .to_string()
                .contains("a newer cwp-portwatch"),
            "{}",
            set_aside.error
        );
        assert!(
            !taken.contains(&set_aside.moved_to),
            "{:?}",
            set_aside.moved_to
        );
        assert_eq!(
            fs::read(&set_aside.moved_to).unwrap(),
            br#"{"version":2,"agents":{}}"#
        );
        for t in &taken {
            assert_eq!(fs::read(t).unwrap(), b"precious");
        }
        assert!(!s.path().exists());
        // A good file and a missing one are loaded as they are.
        assert!(s.load_keeping_damaged().unwrap().1.is_none());
        s.save(&HashMap::new()).unwrap();
        assert!(s.load_keeping_damaged().unwrap().1.is_none());
        assert!(s.path().exists());
    }

    /// The fallback rename never replaces anything, not even a dangling link, and renames
    /// to a free name.
    #[test]
    fn the_fallback_rename_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let (from, taken, link, free) = (
            dir.path().join("from"),
            dir.path().join("taken"),
            dir.path().join("link"),
            dir.path().join("free"),
        );
        fs::write(&from, b"new").unwrap();
        fs::write(&taken, b"precious").unwrap();
        std::os::unix::fs::symlink("nowhere", &link).unwrap();
        for to in [&taken, &link] {
            let e = rename_if_free(&from, to).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::AlreadyExists, "{}", to.display());
        }
        assert_eq!(fs::read(&taken).unwrap(), b"precious");
        rename_if_free(&from, &free).unwrap();
        assert_eq!(fs::read(&free).unwrap(), b"new");
        assert!(!from.exists());
        // A name that cannot even be checked is an error, and nothing moves.
        let e = rename_if_free(&free, &taken.join("under-a-file")).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOTDIR), "{e}");
        assert!(free.exists());
    }

    /// The folder synced after a rename: the state file's own, or `.` for a bare name.
    #[test]
    fn the_folder_of_the_state_file() {
        let s = StateFile::in_dir(Path::new("/var/lib/cwp-portwatch"));
        assert_eq!(s.dir(), Path::new("/var/lib/cwp-portwatch"));
        let bare = StateFile {
            path: PathBuf::from(FILE_NAME),
        };
        assert_eq!(bare.dir(), Path::new("."));
    }

    #[test]
    fn a_state_file_that_cannot_be_set_aside_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        // A path whose folder does not exist: the rename fails.
        let s = StateFile {
            path: dir.path().join("gone/state.json"),
        };
        let e = s.set_aside().unwrap_err();
        assert_eq!(e.code(), "StateError.SetAside");
        assert!(e.to_string().contains("move it away by hand"), "{e}");
        // The OS error is what is reported, not a name collision after 100 tries.
        let StateError::SetAside { source, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(source.kind(), io::ErrorKind::NotFound, "{e}");
    }

    /// Issue 21 item 10: the same failures and crashes at every step through
    /// `write_entries`, the path the daemon's saver writes with (`engine/saver.rs`), for a
    /// file of about 200 KB (torn at [`Step::Write`]: the buffer spilled, the end not yet
    /// written) and a small one: the old file before the rename, the new one after it,
    /// old-or-new at every step, no temp file left by a failure, and the next write works.
    #[test]
    fn the_savers_write_entries_failing_or_crashing_at_any_step_leaves_the_old_or_the_new_file() {
        let (old, new) = (one_agent(1), one_agent(2));
        let mut big_new = new.clone();
        for i in 0..2_000 {
            big_new.insert(
                format!("{i:08x}-0000-4000-8000-000000000000")
                    .parse()
                    .unwrap(),
                old[&"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".parse().unwrap()].clone(),
            );
        }
        for new in [new, big_new] {
            let entries: Vec<(AgentUuid, Known)> =
                new.iter().map(|(u, k)| (*u, k.clone())).collect();
            for fail_at in STEPS {
                for crash in [false, true] {
                    let at = format!("{} agents, {fail_at:?} (crash: {crash})", new.len());
                    let dir = tempfile::tempdir().unwrap();
                    let s = StateFile::in_dir(dir.path());
                    s.save(&old).unwrap();
                    let tmp = s
                        .path()
                        .with_extension(format!("json.tmp.{}", std::process::id()));
                    let mut seen = Vec::new();
                    let mut torn = false;
                    let mut hook = |step: Step| {
                        old_or_new(&s, &old, &new, &format!("{at}, at {step:?}"));
                        if step == Step::Write {
                            // What the temp file holds mid-write is not a state file yet.
                            let partial = fs::read(&tmp).unwrap();
                            torn = serde_json::from_slice::<serde_json::Value>(&partial).is_err();
                        }
                        seen.push(step);
                        if step != fail_at {
                            Ok(())
                        } else if crash {
                            panic!("crash at {step:?}")
                        } else {
                            Err(io::Error::other(format!("fails at {step:?}")))
                        }
                    };
                    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        s.write_entries_hooked(&entries, &mut hook)
                    }));
                    let upto = STEPS.iter().position(|s| *s == fail_at).unwrap();
                    assert_eq!(seen, STEPS[..=upto], "{at}");
                    assert!(
                        torn || upto < 1,
                        "{at}: the temp file was complete mid-write"
                    );
                    match result {
                        Err(_) => assert!(crash, "{at}: only the crash panics"),
                        Ok(r) => assert_eq!(r.unwrap_err().code(), "StateError.Io", "{at}"),
                    }
                    let is_new = old_or_new(&s, &old, &new, &at);
                    assert_eq!(
                        is_new,
                        fail_at == Step::SyncDir,
                        "{at}: which file is there"
                    );
                    if !crash {
                        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{at}");
                    }
                    s.write_entries(&[]).unwrap();
                    assert!(s.load().unwrap().is_empty(), "{at}");
                    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "{at}");
                }
            }
        }
    }
}
