//! The state files replicated to etcd while leader, and restored on a new leader.
//!
//! What: the files of `state_dir` that hold state ([`files::classify`]: statuses, inventories,
//! discovery, each sink's outbox and its journals), never temp files, `*.damaged-*` files,
//! probes or links. How: each file cut into content-defined chunks stored under their SHA-256
//! (`P/state/chunk/<hex>`), each file's chunk list cut the same way into list pieces stored as
//! chunks too, and one root manifest (`P/state/manifest`) naming the files and their list
//! pieces ([`manifest`] says why two levels; [`store`] has the key layout). A push:
//! 1. reads the files in the save barrier's order ([`files`]: the state before the outboxes),
//!    skipping those whose inode, length and times did not move, and hashing the others (a
//!    file saved again with the same content costs nothing);
//! 2. writes the chunks and list pieces etcd does not hold yet (several per txn, under
//!    etcd's limits);
//! 3. writes the manifest in one txn when it differs from the one in etcd: a reader sees the
//!    old or the new complete snapshot;
//! 4. deletes the chunks no manifest refers to any more.
//!
//! Every write is a txn that applies only while the leader's election key is still bound to
//! its lease ([`Guard`]): a deposed leader cannot overwrite its successor's state, and finds
//! out ([`HaError::NotLeader`]). Keys are not attached to the lease, so the state outlives a
//! dead leader.
//!
//! What a takeover can repeat: the replicated snapshot lags the dead leader's disk by at most
//! [`REPLICATE_EVERY`] plus one push's time, and its disk lagged its memory by the save
//! periods (the state file at most every second, the inventory every 2 s). Events emitted in
//! that window (about 2 s for statuses, 3 s for inventory events) are emitted again by the
//! new leader when it polls those agents, and outbox records the old leader delivered in the
//! last push interval (delivered, not yet marked in a pushed snapshot) are sent again. The
//! outbox in a snapshot is never older than its state, so an event the snapshot calls
//! emitted is in its outbox or was delivered. Not covered: a record taken into the old
//! leader's outbox after the last push, not delivered before it died, for a condition that
//! ended before the new leader polls the agent; it stays in the old host's journal (and its
//! log) only.
//!
//! The rooms: `files.rs` names, orders and opens the local files; `manifest.rs` is the
//! manifest and the chunker (pure); `store.rs` the etcd requests; here the push, its loop and
//! the restore.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::{Fence, Guard, HaError};

mod files;
mod manifest;
mod store;

use files::{Kind, OpenError, Stamp};
use manifest::{Digest, FileEntry, Manifest, list_pieces, sha256};
use store::Keys;

/// How often the replicated files' stamps are looked at (a few `lstat`s): a save is pushed
/// within this (once [`REPLICATE_EVERY`] has passed since the last push).
pub const WATCH_EVERY: Duration = Duration::from_millis(100);

/// At most this often, changes are pushed (the bound on what a takeover can repeat).
pub const REPLICATE_EVERY: Duration = Duration::from_secs(1);

/// Every this many pushes the chunks in etcd are listed again, so that a chunk removed behind
/// the leader's back (an operator, a restore from backup) is written again.
const RELIST_EVERY: u32 = 600;

/// Pushes what changed in `state_dir`.
pub struct Replicator {
    client: etcd_client::Client,
    keys: Keys,
    guard: Guard,
    dir: PathBuf,
    /// The files as last pushed (or found equal to etcd's), with the stamps they had then.
    pushed: HashMap<String, Pushed>,
    /// The chunks etcd holds, as far as this process knows; `None` until listed.
    in_etcd: Option<HashSet<Digest>>,
    /// The files etcd's manifest lists, when known (`None` after a manifest write whose
    /// outcome is unknown: it is written again).
    in_manifest: Option<Vec<FileEntry>>,
    /// Pushes since the last listing.
    since_listing: u32,
}

#[derive(Debug, Clone)]
struct Pushed {
    stamp: Stamp,
    entry: FileEntry,
    /// Its chunks (its list pieces are in `entry`).
    chunks: Vec<Digest>,
}

impl Pushed {
    /// Every key it needs in etcd: its chunks and its list pieces.
    fn needs(&self) -> impl Iterator<Item = &Digest> {
        self.chunks.iter().chain(self.entry.lists.iter())
    }
}

/// One push.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Files that changed (new, changed or gone).
    pub files: usize,
    /// Chunks written.
    pub chunks: usize,
    /// List pieces written (a file's chunk list, cut as the files are: see `manifest.rs`).
    pub lists: usize,
    /// Bytes written to etcd (keys and values, deleted keys included).
    pub bytes: u64,
    /// Chunks deleted (no manifest refers to them any more).
    pub deleted: usize,
}

/// What [`restore`] wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreReport {
    /// Files written into `state_dir`.
    pub files: usize,
    /// Their bytes.
    pub bytes: u64,
    /// Whether etcd held a replicated state at all (`false`: the first leader ever, nothing
    /// was changed).
    pub found: bool,
    /// Replicated files of `state_dir` that the replica does not list, removed (a stale
    /// outbox would send again what the old leader delivered).
    pub removed: usize,
    /// When the replica was pushed (the old leader's clock).
    pub pushed_at: Option<SystemTime>,
}

/// What one scan of `state_dir` found.
struct Scan {
    /// The files in read order.
    files: Vec<Pushed>,
    /// Chunks and list pieces etcd does not hold yet.
    new_chunks: Vec<(Digest, Vec<u8>)>,
    /// How many of them are list pieces.
    new_lists: usize,
}

/// Reads the replicated files of `dir` in order: a file whose stamp did not move since
/// `pushed` is taken as it was, one whose content hashes the same keeps its chunks; the
/// others are chunked, and their chunks not in `in_etcd` returned with their bytes. Blocking.
fn scan(
    dir: &Path,
    pushed: &HashMap<String, Pushed>,
    in_etcd: &HashSet<Digest>,
) -> Result<Scan, HaError> {
    let names = files::list(dir)
        .map_err(|e| HaError::Local(format!("{}: {e}", crate::state::shown(dir))))?;
    let held = |p: &Pushed| p.needs().all(|c| in_etcd.contains(c));
    let mut out = Scan {
        files: Vec::with_capacity(names.len()),
        new_chunks: Vec::new(),
        new_lists: 0,
    };
    let mut queued = HashSet::new();
    for (name, kind) in names {
        let opened = match files::open(dir, &name, kind) {
            Ok(opened) => opened,
            Err(OpenError::Gone) => continue,
            Err(OpenError::Refused(why)) => return Err(HaError::Local(why)),
        };
        let stamp = opened.stamp;
        let before = pushed.get(&name).filter(|p| held(p));
        if let Some(p) = before.filter(|p| p.stamp == stamp) {
            out.files.push(p.clone());
            continue;
        }
        // Chunk by chunk: only the chunks etcd lacks are kept (a file unchanged in content
        // has none: its chunks are all held).
        let shown = || crate::state::shown(&dir.join(&name));
        let mut new = |d: Digest, bytes: Vec<u8>| {
            let new = !in_etcd.contains(&d) && queued.insert(d);
            if new {
                out.new_chunks.push((d, bytes));
            }
            new
        };
        let (mut len, mut chunks) = (0u64, Vec::new());
        for piece in manifest::chunks(opened.reader(kind)) {
            let piece = piece.map_err(|e| HaError::Local(format!("{}: {e}", shown())))?;
            len = len.saturating_add(piece.len() as u64);
            if len > kind.cap() {
                return Err(HaError::Local(files::too_large(&shown(), kind)));
            }
            let d = sha256(&piece);
            chunks.push(d);
            new(d, piece);
        }
        let digest = manifest::content_digest(&chunks);
        if let Some(p) = before.filter(|p| p.entry.chunks_sha256 == digest) {
            out.files.push(Pushed { stamp, ..p.clone() });
            continue;
        }
        let mut lists = Vec::new();
        let mut new_lists = 0;
        for piece in list_pieces(&chunks) {
            let d = sha256(&piece);
            lists.push(d);
            new_lists += usize::from(new(d, piece));
        }
        out.new_lists += new_lists;
        let entry = FileEntry {
            name,
            kind,
            len,
            chunks_sha256: digest,
            lists,
        };
        out.files.push(Pushed {
            stamp,
            entry,
            chunks,
        });
    }
    Ok(out)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Replicator {
    /// Replicates `state_dir` under the deployment `prefix`, guarded by `guard`.
    pub fn new(client: etcd_client::Client, prefix: &str, guard: Guard, state_dir: &Path) -> Self {
        Replicator {
            client,
            keys: Keys::new(prefix),
            guard,
            dir: state_dir.to_path_buf(),
            pushed: HashMap::new(),
            in_etcd: None,
            in_manifest: None,
            since_listing: 0,
        }
    }

    /// Pushes what changed since the last push. The first push (and one every
    /// `RELIST_EVERY` pushes) lists what etcd holds first: after a takeover the restored state's
    /// chunks and manifest are there already, and are not written again.
    pub async fn push(&mut self) -> Result<PushReport, HaError> {
        if self.in_etcd.is_none() || self.since_listing >= RELIST_EVERY {
            let chunks = store::list_chunks(&mut self.client, &self.keys).await?;
            // A manifest this build cannot read is simply written over.
            self.in_manifest = store::get_manifest(&mut self.client, &self.keys)
                .await?
                .and_then(|bytes| Manifest::parse(&bytes).ok())
                .map(|m| m.files);
            self.in_etcd = Some(chunks);
            self.since_listing = 0;
        }
        self.since_listing = self.since_listing.saturating_add(1);
        let in_etcd = self.in_etcd.get_or_insert_with(HashSet::new);

        let (dir, pushed, known) = (self.dir.clone(), self.pushed.clone(), in_etcd.clone());
        let scan = tokio::task::spawn_blocking(move || scan(&dir, &pushed, &known))
            .await
            .map_err(|e| HaError::Local(format!("reading state_dir: {e}")))??;

        let mut report = PushReport {
            chunks: scan.new_chunks.len() - scan.new_lists,
            lists: scan.new_lists,
            ..PushReport::default()
        };
        // Changed against etcd's manifest when it is known, else against the last push.
        let before: HashMap<&str, &Digest> = match &self.in_manifest {
            Some(files) => files
                .iter()
                .map(|f| (f.name.as_str(), &f.chunks_sha256))
                .collect(),
            None => (self.pushed.values())
                .map(|p| (p.entry.name.as_str(), &p.entry.chunks_sha256))
                .collect(),
        };
        let names: HashSet<&str> = scan.files.iter().map(|p| p.entry.name.as_str()).collect();
        report.files = (scan.files.iter().map(|p| &p.entry))
            .filter(|f| before.get(f.name.as_str()) != Some(&&f.chunks_sha256))
            .count()
            + before.keys().filter(|n| !names.contains(*n)).count();

        // 1. The chunks, before the manifest that refers to them.
        report.bytes = store::put_chunks(
            &mut self.client,
            &self.guard,
            &self.keys,
            scan.new_chunks,
            &mut |done| in_etcd.extend(done.iter().copied()),
        )
        .await?;

        // 2. The manifest, in one txn, when it differs from etcd's.
        let files: Vec<FileEntry> = scan.files.iter().map(|p| p.entry.clone()).collect();
        if self.in_manifest.as_ref() != Some(&files) {
            let manifest = Manifest {
                pushed_at_ms: unix_ms(SystemTime::now()),
                files,
            };
            let bytes = manifest.encode().map_err(HaError::Local)?;
            let key = self.keys.manifest().to_owned();
            let sent = (key.len() + bytes.len()) as u64;
            // Unknown until etcd answers (a timeout may still have applied it).
            self.in_manifest = None;
            let put = etcd_client::TxnOp::put(key, bytes, None);
            store::guarded(
                &mut self.client,
                &self.guard,
                "writing the manifest",
                vec![put],
            )
            .await?;
            report.bytes = report.bytes.saturating_add(sent);
            self.in_manifest = Some(manifest.files);
        }
        self.pushed = (scan.files.into_iter())
            .map(|p| (p.entry.name.clone(), p))
            .collect();

        // 3. The chunks etcd's manifest (known: written or read above) no longer refers to.
        let referenced: HashSet<&Digest> = self.pushed.values().flat_map(Pushed::needs).collect();
        let gone: Vec<Digest> = in_etcd
            .iter()
            .filter(|d| !referenced.contains(d))
            .copied()
            .collect();
        if !gone.is_empty() {
            report.deleted = gone.len();
            let sent = store::delete_chunks(
                &mut self.client,
                &self.guard,
                &self.keys,
                gone,
                &mut |done| {
                    for d in done {
                        in_etcd.remove(d);
                    }
                },
            )
            .await?;
            report.bytes = report.bytes.saturating_add(sent);
        }
        Ok(report)
    }

    /// Every [`REPLICATE_EVERY`] while `fence` is open, until `stop`; one last push then
    /// (guarded as every push: it applies only while this process still leads). Errors are
    /// logged with their codes (once until they change) and retried at the next tick; the
    /// loop ends when a guarded write finds that this process no longer leads. Await it
    /// before resigning: the last push needs the leadership.
    pub async fn run(self, fence: Fence, stop: CancellationToken) {
        self.run_while(move || fence.may_send(), stop).await;
    }

    /// [`Replicator::run`] with the fence as a function (tests).
    ///
    /// Why it watches rather than pushing on a fixed tick: the engines save at most every
    /// second; a push on its own 1-s tick could land just before a save and carry it only a
    /// second later, so a takeover could repeat up to two seconds of events. Watching the
    /// files' stamps every [`WATCH_EVERY`] (a few `lstat`s) pushes within that of each save,
    /// still at most once per [`REPLICATE_EVERY`]: a push is due when a stamp moved (or the
    /// last push failed) and the last attempt is that old.
    async fn run_while(mut self, open: impl Fn() -> bool, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = None;
        let mut last_attempt: Option<tokio::time::Instant> = None;
        // The stamps at the last successful push; `None`: push at the first chance.
        let mut pushed_stamps = None;
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            if !open() || last_attempt.is_some_and(|t| now.duration_since(t) < REPLICATE_EVERY) {
                continue;
            }
            let dir = self.dir.clone();
            let stamps = tokio::task::spawn_blocking(move || files::stamps(&dir).ok())
                .await
                .ok()
                .flatten();
            if stamps.is_some() && stamps == pushed_stamps {
                continue;
            }
            last_attempt = Some(now);
            if !self.push_logged(&mut failing).await {
                return;
            }
            // Stamps read before the push: a save during it is pushed at the next chance.
            pushed_stamps = if failing.is_none() { stamps } else { None };
        }
        // The engines have stopped and saved: their last state goes to etcd.
        self.push_logged(&mut failing).await;
    }

    /// One push, its outcome logged; `false` when this process no longer leads.
    async fn push_logged(&mut self, failing: &mut Option<String>) -> bool {
        match self.push().await {
            Ok(r) => {
                if failing.take().is_some() {
                    tracing::info!("state replication to etcd works again");
                }
                if r.bytes > 0 {
                    tracing::debug!(
                        files = r.files,
                        chunks = r.chunks,
                        lists = r.lists,
                        deleted = r.deleted,
                        bytes = r.bytes,
                        "state replicated to etcd"
                    );
                }
                true
            }
            Err(e @ HaError::NotLeader) => {
                tracing::warn!(
                    error_code = e.code(),
                    "state replication stops: a guarded write found that this process no \
                     longer leads"
                );
                false
            }
            Err(e) => {
                let said = e.to_string();
                if failing.as_deref() != Some(said.as_str()) {
                    tracing::error!(
                        error_code = e.code(),
                        "cannot replicate the state to etcd ({said}); retried every {}s, a \
                         takeover now would repeat what changed since the last push",
                        REPLICATE_EVERY.as_secs()
                    );
                }
                *failing = Some(said);
                true
            }
        }
    }
}

/// Writes the replicated state of `prefix` into `state_dir` (before the engines start).
///
/// Everything is read and checked first (the manifest's fields, each chunk's hash, each
/// file's length and hash): a damaged replica is [`HaError::Replica`] and nothing is written.
/// Then, as the engine orders its own writes (an outbox durable before the state that relies
/// on it): the outbox files the replica does not list are removed, its outbox files written,
/// its state files written, and the other state files it does not list removed. Each file is
/// written atomically and private ([`crate::state::StateFile`]). Files of other names are
/// left alone. No replica in etcd (the first leader ever): nothing changes.
pub async fn restore(
    client: &mut etcd_client::Client,
    prefix: &str,
    state_dir: &Path,
) -> Result<RestoreReport, HaError> {
    let keys = Keys::new(prefix);
    let Some(bytes) = store::get_manifest(client, &keys).await? else {
        return Ok(RestoreReport::default());
    };
    let manifest = Manifest::parse(&bytes)
        .map_err(|e| HaError::Replica(format!("{}: {e}", keys.manifest())))?;
    // The list pieces, then the chunks they list; each checked against its name.
    let mut pieces: Vec<Digest> = manifest
        .files
        .iter()
        .flat_map(|f| f.lists.clone())
        .collect();
    pieces.sort_unstable();
    pieces.dedup();
    let pieces = store::get_chunks(client, &keys, pieces).await?;
    let mut lists = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let shown = crate::events::printable(&f.name);
        let mut chunks = Vec::new();
        for d in &f.lists {
            let listed = pieces
                .get(d)
                .and_then(|p| manifest::read_piece(p))
                .ok_or_else(|| HaError::Replica(format!("{shown}: a damaged list piece")))?;
            chunks.extend(listed);
            if chunks.len() as u64 > manifest::most_chunks(f.len) {
                break; // too many already (refused below): memory bounded by the length
            }
        }
        if !manifest::check_chunks(chunks.len() as u64, f.len) {
            return Err(HaError::Replica(format!(
                "{shown}: {} chunks cannot hold its {} bytes",
                chunks.len(),
                f.len
            )));
        }
        if manifest::content_digest(&chunks) != f.chunks_sha256 {
            return Err(HaError::Replica(format!(
                "{shown}: its chunk list does not match the manifest's chunks_sha256"
            )));
        }
        lists.push(chunks);
    }
    drop(pieces);
    let mut uses: HashMap<Digest, usize> = HashMap::new();
    let mut wanted = Vec::new();
    for d in lists.iter().flatten() {
        let n = uses.entry(*d).or_insert(0);
        if *n == 0 {
            wanted.push(*d);
        }
        *n += 1;
    }
    let mut chunks = store::get_chunks(client, &keys, wanted).await?;
    let mut files = Vec::with_capacity(manifest.files.len());
    for (f, list) in manifest.files.into_iter().zip(lists) {
        let shown = crate::events::printable(&f.name);
        // The chunks were checked against their names; their lengths against the file's
        // before anything is allocated for it.
        let len: u64 = list
            .iter()
            .map(|d| chunks.get(d).map_or(0, |c| c.len() as u64))
            .sum();
        if len != f.len {
            return Err(HaError::Replica(format!(
                "{shown}: its chunks hold {len} bytes, the manifest says {}",
                f.len
            )));
        }
        let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
        for d in &list {
            // Each chunk's last use takes it out of the map: no second copy of the state.
            let n = uses.get_mut(d).map(|n| {
                *n -= 1;
                *n
            });
            match (n, chunks.get(d)) {
                (Some(0), _) => bytes.extend(chunks.remove(d).unwrap_or_default()),
                (_, Some(c)) => bytes.extend_from_slice(c),
                (_, None) => {}
            }
        }
        files.push((f.name, f.kind, bytes));
    }
    let pushed_at_ms = manifest.pushed_at_ms;
    let dir = state_dir.to_path_buf();
    let mut report = tokio::task::spawn_blocking(move || write_files(&dir, files))
        .await
        .map_err(|e| HaError::Local(format!("writing the restored state: {e}")))??;
    report.pushed_at = Some(SystemTime::UNIX_EPOCH + Duration::from_millis(pushed_at_ms));
    Ok(report)
}

/// Writes the checked `files` into `dir` and removes the replicated files it does not list,
/// outboxes first (see [`restore`]). Blocking.
fn write_files(dir: &Path, files: Vec<(String, Kind, Vec<u8>)>) -> Result<RestoreReport, HaError> {
    let mut report = RestoreReport {
        found: true,
        ..RestoreReport::default()
    };
    let listed: HashSet<String> = files.iter().map(|(n, _, _)| n.clone()).collect();
    let stale: Vec<(String, Kind)> = files::list(dir)
        .map_err(|e| HaError::Local(format!("{}: {e}", crate::state::shown(dir))))?
        .into_iter()
        .filter(|(n, _)| !listed.contains(n))
        .collect();
    let remove = |name: &str| {
        let path = dir.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(HaError::Local(format!(
                "{}: cannot remove this file, which the replicated state does not hold \
                 ({e}); remove it by hand",
                crate::state::shown(&path)
            ))),
        }
    };
    let file = crate::state::StateFile::in_dir(dir);
    for outboxes in [true, false] {
        if outboxes {
            for (name, _) in stale.iter().filter(|(_, k)| k.is_outbox()) {
                report.removed += remove(name)?;
            }
        }
        for (name, _, bytes) in files.iter().filter(|(_, k, _)| k.is_outbox() == outboxes) {
            file.sibling(name)
                .write(bytes)
                .map_err(|e| HaError::Local(e.to_string()))?;
            report.files += 1;
            report.bytes = report.bytes.saturating_add(bytes.len() as u64);
        }
        if !outboxes {
            for (name, _) in stale.iter().filter(|(_, k)| !k.is_outbox()) {
                report.removed += remove(name)?;
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests;
