//! The root manifest `P/state/manifest`: which files the replicated snapshot holds, each with
//! its length, its SHA-256 and its chunk list. Pure: built by a push, and read back by a
//! restore as hostile input, every field checked.
//!
//! ```json
//! {"format":1,"pushed_at_ms":1765000000000,
//!  "files":[{"name":"state.json","len":13400000,"chunks_sha256":"<64 hex>","lists":["<64 hex>",…]}]}
//! ```
//!
//! Two levels, because the steady state rewrites small pieces of big files every second: a
//! file is cut into small content-defined chunks (8 KiB on average: 20 agents changed in a
//! save rewrite about 20 chunks, not 20 × 64 KiB), and its list of chunk digests is itself
//! cut into *list pieces*, content-defined too (a piece ends after a digest whose first two
//! bytes are a multiple of [`LIST_AVG`]), so a changed chunk rewrites one piece of its list,
//! not the list, and the root manifest names only the pieces (a few kilobytes at 100,000
//! agents, where one flat list of every chunk would take hundreds). Chunks and pieces are
//! both stored as `P/state/chunk/<sha256>`.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::files::{Kind, classify};

/// The format this build writes and reads.
pub(super) const FORMAT: u32 = 1;
/// The largest manifest written or read: under etcd's default request limit (1.5 MiB) with
/// room for the txn around it. About 14,000 chunk references: some 900 MB of state at the
/// average chunk size.
pub(super) const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// The most files one manifest lists (a file per kind and account or sink).
const MAX_FILES: usize = 4096;
/// The largest sum of the files' lengths: a restore holds them all in memory before it
/// writes any (nothing is written unless the whole snapshot checks out).
pub(super) const MAX_TOTAL_BYTES: u64 = 2 << 30;

/// The chunker's sizes (FastCDC, content-defined: a change in one agent changes the one or
/// two chunks around it, not every chunk after it). Part of the format: a restore bounds a
/// file's chunk count by them.
pub(super) const CHUNK_MIN: usize = 2 << 10;
/// Average chunk size.
pub(super) const CHUNK_AVG: usize = 8 << 10;
/// The largest chunk, and the largest list piece.
pub(super) const CHUNK_MAX: usize = 64 << 10;
/// A list piece ends after a digest whose first two bytes are a multiple of this: 128
/// digests (4 KiB) on average.
const LIST_AVG: u16 = 128;
/// The most digests in a list piece ([`CHUNK_MAX`] bytes).
const LIST_MAX: usize = CHUNK_MAX / 32;

/// A SHA-256.
pub(super) type Digest = [u8; 32];

/// SHA-256 of `bytes`.
pub(super) fn sha256(bytes: &[u8]) -> Digest {
    Sha256::digest(bytes).into()
}

/// One replicated file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct FileEntry {
    /// Its name in `state_dir` (one of [`classify`]'s).
    pub(super) name: String,
    /// Its kind.
    pub(super) kind: Kind,
    /// Its length.
    pub(super) len: u64,
    /// The SHA-256 of its chunks' digests end to end ([`content_digest`]).
    pub(super) chunks_sha256: Digest,
    /// Its list pieces, in order ([`list_pieces`]).
    pub(super) lists: Vec<Digest>,
}

/// A checked manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Manifest {
    /// When it was pushed (Unix milliseconds, the leader's clock).
    pub(super) pushed_at_ms: u64,
    /// The files, in the order they were read.
    pub(super) files: Vec<FileEntry>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    format: u32,
    pushed_at_ms: u64,
    files: Vec<RawFile>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    name: String,
    len: u64,
    chunks_sha256: String,
    lists: Vec<String>,
}

impl Manifest {
    /// The JSON written to etcd; `Err` when it would exceed [`MAX_MANIFEST_BYTES`].
    pub(super) fn encode(&self) -> Result<Vec<u8>, String> {
        let raw = RawManifest {
            format: FORMAT,
            pushed_at_ms: self.pushed_at_ms,
            files: self
                .files
                .iter()
                .map(|f| RawFile {
                    name: f.name.clone(),
                    len: f.len,
                    chunks_sha256: hex::encode(f.chunks_sha256),
                    lists: f.lists.iter().map(hex::encode).collect(),
                })
                .collect(),
        };
        // Strings and integers only: serialising to memory cannot fail.
        let bytes = serde_json::to_vec(&raw).unwrap_or_default();
        if bytes.len() > MAX_MANIFEST_BYTES {
            let lists: usize = self.files.iter().map(|f| f.lists.len()).sum();
            return Err(format!(
                "the manifest of {} files and {lists} list pieces takes {} bytes, more than the \
                 {MAX_MANIFEST_BYTES} a manifest may (etcd's request limit): the state is \
                 too large to replicate",
                self.files.len(),
                bytes.len()
            ));
        }
        Ok(bytes)
    }

    /// Reads a manifest from etcd, checking everything: the format, the count of files, each
    /// name (one of the replicated shapes, so no `/` or `..`; no name twice), each length
    /// (its kind's cap, and the sum), each hash, each list (none for an empty file, at most
    /// one piece per byte otherwise; the chunks in them are checked by [`check_chunks`]). The
    /// error says what is wrong.
    pub(super) fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(format!(
                "the manifest takes {} bytes, more than the {MAX_MANIFEST_BYTES} this build \
                 reads",
                bytes.len()
            ));
        }
        let raw: RawManifest = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "the manifest is not one this build reads: {}",
                crate::events::printable(&e.to_string())
            )
        })?;
        if raw.format != FORMAT {
            return Err(format!(
                "the manifest has format {} (this build reads format {FORMAT}): upgrade this \
                 host to the leader's version",
                raw.format
            ));
        }
        if raw.files.len() > MAX_FILES {
            return Err(format!(
                "the manifest lists {} files, more than {MAX_FILES}",
                raw.files.len()
            ));
        }
        let mut names = HashSet::new();
        let mut total: u64 = 0;
        let mut files = Vec::with_capacity(raw.files.len());
        for f in raw.files {
            let shown = crate::events::printable(&f.name);
            let kind = match classify(&f.name) {
                Some(kind) if !f.name.contains('/') && !f.name.contains("..") => kind,
                _ => {
                    return Err(format!(
                        "the manifest names a file {shown:?}, not a replicated state file"
                    ));
                }
            };
            if !names.insert(f.name.clone()) {
                return Err(format!("the manifest lists {shown} twice"));
            }
            if f.len > kind.cap() {
                return Err(format!(
                    "{shown}: {} bytes, more than the {} a state file of its kind may",
                    f.len,
                    kind.cap()
                ));
            }
            total = total
                .checked_add(f.len)
                .filter(|t| *t <= MAX_TOTAL_BYTES)
                .ok_or_else(|| {
                    format!("the files take more than {MAX_TOTAL_BYTES} bytes together")
                })?;
            let chunks_sha256 =
                digest(&f.chunks_sha256).ok_or_else(|| format!("{shown}: a bad chunks_sha256"))?;
            // Each piece lists at least one chunk, and there are no more chunks than
            // `check_chunks` allows.
            let count = f.lists.len() as u64;
            if (f.len == 0) != (count == 0) || count > f.len / CHUNK_MIN as u64 + 1 {
                return Err(format!(
                    "{shown}: {count} list pieces cannot describe {} bytes",
                    f.len
                ));
            }
            let lists = f
                .lists
                .iter()
                .map(|c| digest(c))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{shown}: a bad list piece name"))?;
            files.push(FileEntry {
                name: f.name,
                kind,
                len: f.len,
                chunks_sha256,
                lists,
            });
        }
        Ok(Manifest {
            pushed_at_ms: raw.pushed_at_ms,
            files,
        })
    }
}

/// 64 lower-case hex digits.
fn digest(text: &str) -> Option<Digest> {
    if text.len() != 64 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let mut d = [0; 32];
    hex::decode_to_slice(text, &mut d).ok()?;
    Some(d)
}

/// A file's content digest: the SHA-256 of its chunks' digests end to end. With each chunk
/// checked against its own digest, it checks the whole content (which chunks, in which order)
/// without a second pass over the bytes.
pub(super) fn content_digest(chunks: &[Digest]) -> Digest {
    let mut h = Sha256::new();
    for d in chunks {
        h.update(d);
    }
    h.finalize().into()
}

/// The content-defined chunks of what `source` reads (none when it reads nothing), read a
/// chunk at a time: a push never holds a whole file (77 MB at 100,000 agents), only the
/// chunks etcd does not have.
pub(super) fn chunks<R: std::io::Read>(
    source: R,
) -> impl Iterator<Item = std::io::Result<Vec<u8>>> {
    fastcdc::v2020::StreamCDC::new(source, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX).map(|c| match c {
        Ok(c) => Ok(c.data),
        Err(fastcdc::v2020::Error::IoError(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    })
}

/// A file's chunk digests cut into list pieces (each the digests' 32 bytes end to end), a
/// piece ending after a digest whose first two bytes are a multiple of [`LIST_AVG`] or at
/// [`LIST_MAX`] digests: where the pieces end depends on the digests only, so a changed chunk
/// changes its piece and at most the next (not every piece after it).
pub(super) fn list_pieces(chunks: &[Digest]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut piece = Vec::new();
    for d in chunks {
        piece.extend_from_slice(d);
        if u16::from_be_bytes([d[0], d[1]]).is_multiple_of(LIST_AVG) || piece.len() >= LIST_MAX * 32
        {
            pieces.push(std::mem::take(&mut piece));
        }
    }
    if !piece.is_empty() {
        pieces.push(piece);
    }
    pieces
}

/// The digests of a list piece read from etcd (its hash already checked): whole digests, at
/// least one.
pub(super) fn read_piece(piece: &[u8]) -> Option<impl Iterator<Item = Digest> + '_> {
    if piece.is_empty() || !piece.len().is_multiple_of(32) {
        return None;
    }
    Some(piece.chunks_exact(32).map(|d| {
        let mut digest = [0; 32];
        digest.copy_from_slice(d);
        digest
    }))
}

/// Whether `count` chunks can be the content-defined chunks of `len` bytes: all but the last
/// hold at least [`CHUNK_MIN`] bytes, none more than [`CHUNK_MAX`]. Bounds what a restore
/// fetches by the file's checked length.
pub(super) fn check_chunks(count: u64, len: u64) -> bool {
    let most = if len == 0 {
        0
    } else {
        len / CHUNK_MIN as u64 + 1
    };
    let least = len.div_ceil(CHUNK_MAX as u64);
    (least..=most).contains(&count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pseudo-random text (a real state file is not all one byte).
    fn text(len: usize) -> Vec<u8> {
        let mut x: u64 = 1;
        (0..len)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b'a' + (x >> 59) as u8
            })
            .collect()
    }

    fn digests(content: &[u8]) -> Vec<Digest> {
        chunks(content).map(|c| sha256(&c.unwrap())).collect()
    }

    fn entry(name: &str, content: &[u8]) -> FileEntry {
        let chunks: Vec<Digest> = digests(content);
        FileEntry {
            name: name.into(),
            kind: classify(name).unwrap(),
            len: content.len() as u64,
            chunks_sha256: content_digest(&chunks),
            lists: list_pieces(&chunks).iter().map(|p| sha256(p)).collect(),
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = Manifest {
            pushed_at_ms: 1_765_000_000_000,
            files: vec![
                entry("state.json", &text(3_000_000)),
                entry("outbox-a.journal", b""),
            ],
        };
        assert!(m.files[0].lists.len() >= 2, "{:?}", m.files[0].lists.len());
        assert_eq!(Manifest::parse(&m.encode().unwrap()).unwrap(), m);
    }

    fn raw(name: &str, len: u64, lists: &[&str]) -> Vec<u8> {
        let h = "ab".repeat(32);
        serde_json::to_vec(&serde_json::json!({
            "format": 1, "pushed_at_ms": 0,
            "files": [{"name": name, "len": len, "chunks_sha256": h, "lists": lists}],
        }))
        .unwrap()
    }

    #[test]
    fn hostile_manifests_are_refused_with_what_is_wrong() {
        let c = "cd".repeat(32);
        assert!(Manifest::parse(&raw("state.json", 10, &[&c])).is_ok());
        for (bytes, says) in [
            (raw("../x", 10, &[&c]), "not a replicated state file"),
            (raw("a/b", 10, &[&c]), "not a replicated state file"),
            (
                raw("../state.json", 10, &[&c]),
                "not a replicated state file",
            ),
            (raw("state.json.tmp.1", 10, &[&c]), "not a replicated"),
            (
                raw("state.json", 10, &[]),
                "0 list pieces cannot describe 10",
            ),
            (
                raw("state.json", 0, &[&c]),
                "1 list pieces cannot describe 0",
            ),
            (raw("state.json", 1, &[&c, &c]), "2 list pieces cannot"),
            (raw("state.json", u64::MAX, &[&c]), "more than the"),
            (raw("state.json", 10, &["zz"]), "a bad list piece name"),
            (raw("state.json", 10, &[&c.to_uppercase()]), "a bad list"),
            (
                b"{\"format\":2,\"pushed_at_ms\":0,\"files\":[]}".to_vec(),
                "format 2",
            ),
            (
                b"{\"format\":1,\"files\":[]}".to_vec(),
                "not one this build reads",
            ),
            (b"[]".to_vec(), "not one this build reads"),
            (vec![b' '; MAX_MANIFEST_BYTES + 1], "more than the"),
        ] {
            let e = Manifest::parse(&bytes).unwrap_err();
            assert!(e.contains(says), "{e} (wanted {says})");
        }
        let twice = serde_json::json!({"format": 1, "pushed_at_ms": 0, "files": [
            {"name": "state.json", "len": 0, "chunks_sha256": c, "lists": []},
            {"name": "state.json", "len": 0, "chunks_sha256": c, "lists": []},
        ]});
        let e = Manifest::parse(&serde_json::to_vec(&twice).unwrap()).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_local_change_changes_one_or_two_chunks_and_list_pieces() {
        let before = text(20_000_000);
        let mut after = before.clone();
        after.splice(10_000_000..10_000_010, b"0123456789abcdef".iter().copied());
        let old: Vec<Digest> = digests(&before);
        let new: Vec<Digest> = digests(&after);
        let changed = |old: &[Digest], new: &[Digest]| {
            let old: HashSet<&Digest> = old.iter().collect();
            new.iter().filter(|c| !old.contains(c)).count()
        };
        assert!(new.len() > 1000, "{} chunks", new.len());
        assert!((1..=2).contains(&changed(&old, &new)));
        assert!(chunks(&after[..]).all(|c| c.unwrap().len() <= CHUNK_MAX));
        // Streamed chunks are the same as those of the whole content in memory.
        let whole: Vec<Digest> =
            fastcdc::v2020::FastCDC::new(&after, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
                .map(|c| sha256(&after[c.offset..c.offset + c.length]))
                .collect();
        assert_eq!(whole, new);
        let pieces = |chunks: &[Digest]| -> Vec<Digest> {
            list_pieces(chunks).iter().map(|p| sha256(p)).collect()
        };
        let (old_lists, new_lists) = (pieces(&old), pieces(&new));
        assert!(new_lists.len() > 5, "{} pieces", new_lists.len());
        assert!((1..=2).contains(&changed(&old_lists, &new_lists)));
        // The pieces read back as the chunk list.
        let back: Vec<Digest> = list_pieces(&new)
            .iter()
            .flat_map(|p| read_piece(p).unwrap().collect::<Vec<_>>())
            .collect();
        assert_eq!(back, new);
        assert!(list_pieces(&new).iter().all(|p| p.len() <= CHUNK_MAX));
        assert!(check_chunks(new.len() as u64, after.len() as u64));
    }

    #[test]
    fn list_pieces_never_exceed_their_bound_and_bad_ones_are_refused() {
        // Digests that never end a piece: cut at LIST_MAX.
        let all: Vec<Digest> = (0..5000u32)
            .map(|i| {
                let mut d = [1u8; 32];
                d[4..8].copy_from_slice(&i.to_be_bytes());
                d
            })
            .collect();
        let pieces = list_pieces(&all);
        assert_eq!(pieces.len(), 3);
        assert_eq!(pieces[0].len(), CHUNK_MAX);
        assert!(read_piece(b"").is_none());
        assert!(read_piece(&[0; 33]).is_none());
        assert!(list_pieces(&[]).is_empty());
    }

    #[test]
    fn a_chunk_count_must_fit_the_length() {
        assert!(check_chunks(0, 0));
        assert!(!check_chunks(1, 0));
        assert!(check_chunks(1, 1));
        assert!(!check_chunks(2, 1));
        assert!(!check_chunks(1, CHUNK_MAX as u64 + 1));
        assert!(check_chunks(2, CHUNK_MAX as u64 + 1));
        let len = 100 * CHUNK_MIN as u64;
        assert!(check_chunks(101, len));
        assert!(!check_chunks(102, len));
    }
}
