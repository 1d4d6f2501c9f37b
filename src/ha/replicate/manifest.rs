//! The root manifest `P/state/manifest`: which files the replicated snapshot holds, each with
//! its length, its SHA-256 and the list of its chunks (`P/state/chunk/<sha256>`). Pure: built
//! by a push, and read back by a restore as hostile input, every field checked.
//!
//! ```json
//! {"format":1,"pushed_at_ms":1765000000000,
//!  "files":[{"name":"state.json","len":15000000,"sha256":"<64 hex>","chunks":["<64 hex>",…]}]}
//! ```

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
/// two chunks around it, not every chunk after it).
pub(super) const CHUNK_MIN: usize = 16 << 10;
/// Average chunk size.
pub(super) const CHUNK_AVG: usize = 64 << 10;
/// The largest chunk (four fit in a txn under etcd's request limit).
pub(super) const CHUNK_MAX: usize = 256 << 10;

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
    /// Its SHA-256.
    pub(super) sha256: Digest,
    /// Its chunks, in order.
    pub(super) chunks: Vec<Digest>,
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
    sha256: String,
    chunks: Vec<String>,
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
                    sha256: hex::encode(f.sha256),
                    chunks: f.chunks.iter().map(hex::encode).collect(),
                })
                .collect(),
        };
        // Strings and integers only: serialising to memory cannot fail.
        let bytes = serde_json::to_vec(&raw).unwrap_or_default();
        if bytes.len() > MAX_MANIFEST_BYTES {
            let chunks: usize = self.files.iter().map(|f| f.chunks.len()).sum();
            return Err(format!(
                "the manifest of {} files and {chunks} chunks takes {} bytes, more than the \
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
    /// (its kind's cap, and the sum), each hash, each chunk list (nonempty chunks of at most
    /// [`CHUNK_MAX`]). The error says what is wrong.
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
            let sha256 = digest(&f.sha256).ok_or_else(|| format!("{shown}: a bad sha256"))?;
            // Each chunk holds 1..=CHUNK_MAX bytes: the count is bounded by the length.
            let count = f.chunks.len() as u64;
            let fits = count <= f.len
                && count
                    .checked_mul(CHUNK_MAX as u64)
                    .is_some_and(|most| most >= f.len);
            if !fits {
                return Err(format!(
                    "{shown}: {count} chunks cannot hold {} bytes",
                    f.len
                ));
            }
            let chunks = f
                .chunks
                .iter()
                .map(|c| digest(c))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| format!("{shown}: a bad chunk name"))?;
            files.push(FileEntry {
                name: f.name,
                kind,
                len: f.len,
                sha256,
                chunks,
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

/// The content-defined chunks of `bytes` (none for an empty file).
pub(super) fn chunks(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    fastcdc::v2020::FastCDC::new(bytes, CHUNK_MIN, CHUNK_AVG, CHUNK_MAX)
        .map(move |c| &bytes[c.offset..c.offset + c.length])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, content: &[u8]) -> FileEntry {
        FileEntry {
            name: name.into(),
            kind: classify(name).unwrap(),
            len: content.len() as u64,
            sha256: sha256(content),
            chunks: chunks(content).map(sha256).collect(),
        }
    }

    #[test]
    fn a_manifest_reads_back_as_written() {
        let m = Manifest {
            pushed_at_ms: 1_765_000_000_000,
            files: vec![
                entry("state.json", &vec![7u8; 300_000]),
                entry("outbox-a.journal", b""),
            ],
        };
        assert!(m.files[0].chunks.len() >= 2);
        assert_eq!(Manifest::parse(&m.encode().unwrap()).unwrap(), m);
    }

    fn raw(name: &str, len: u64, chunks: &[&str]) -> Vec<u8> {
        let h = "ab".repeat(32);
        serde_json::to_vec(&serde_json::json!({
            "format": 1, "pushed_at_ms": 0,
            "files": [{"name": name, "len": len, "sha256": h, "chunks": chunks}],
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
            (raw("state.json", 10, &[]), "0 chunks cannot hold 10 bytes"),
            (
                raw("state.json", 1, &[&c, &c]),
                "2 chunks cannot hold 1 bytes",
            ),
            (
                raw("state.json", CHUNK_MAX as u64 + 1, &[&c]),
                "1 chunks cannot hold",
            ),
            (raw("state.json", u64::MAX, &[&c]), "more than the"),
            (raw("state.json", 10, &["zz"]), "a bad chunk name"),
            (raw("state.json", 10, &[&c.to_uppercase()]), "a bad chunk"),
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
            {"name": "state.json", "len": 0, "sha256": c, "chunks": []},
            {"name": "state.json", "len": 0, "sha256": c, "chunks": []},
        ]});
        let e = Manifest::parse(&serde_json::to_vec(&twice).unwrap()).unwrap_err();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_local_change_changes_one_or_two_chunks() {
        // Pseudo-random text (a real state file is not all one byte).
        let mut x: u64 = 1;
        let before: Vec<u8> = (0..2_000_000)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                b'a' + (x >> 59) as u8
            })
            .collect();
        let mut after = before.clone();
        after.splice(1_000_000..1_000_010, b"0123456789abcdef".iter().copied());
        let old: HashSet<Digest> = chunks(&before).map(sha256).collect();
        let new: Vec<Digest> = chunks(&after).map(sha256).collect();
        let changed = new.iter().filter(|c| !old.contains(*c)).count();
        assert!(new.len() > 10, "{} chunks", new.len());
        assert!((1..=2).contains(&changed), "{changed} chunks changed");
        assert!(chunks(&after).all(|c| c.len() <= CHUNK_MAX));
    }
}
