//! The replicated state's keys in etcd and the requests on them: every write a txn guarded by
//! the leader's election key (`Compare::lease(guard.key) == guard.lease`), batched under
//! etcd's request limits; every read bounded and checked.
//!
//! Keys under `P/state/` ([`crate::ha::state_prefix`]):
//! - `P/state/manifest`: the root ([`super::manifest`]), written last in its own txn, so a
//!   reader sees the old or the new complete snapshot;
//! - `P/state/chunk/<sha256 hex>`: a chunk's bytes or a list piece (a file's chunk digests,
//!   32 bytes each), content-addressed: written before the manifest that refers to them,
//!   deleted after the manifest that no longer does.
//!
//! No key is attached to the leader's lease: the state must outlive a dead leader so that
//! the next one can load it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::manifest::{CHUNK_MAX, Digest, MAX_MANIFEST_BYTES, sha256};
use crate::ha::{Guard, HaError};

/// etcd's default `--max-request-bytes` is 1.5 MiB: a txn's keys and values stay under this.
const TXN_BYTES: usize = 1 << 20;
/// etcd's default `--max-txn-ops` is 128.
const TXN_OPS: usize = 64;
/// Keys per page when listing the chunks.
const LIST_PAGE: i64 = 1000;
/// Chunks fetched at once by a restore.
const FETCH_IN_FLIGHT: usize = 64;
/// One request's bound: a push or restore never hangs on an etcd that stopped answering.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The keys of one deployment.
#[derive(Debug, Clone)]
pub(super) struct Keys {
    manifest: String,
    chunk_prefix: String,
}

impl Keys {
    /// Under `crate::ha::state_prefix(prefix)`.
    pub(super) fn new(prefix: &str) -> Keys {
        let state = crate::ha::state_prefix(prefix);
        Keys {
            manifest: format!("{state}manifest"),
            chunk_prefix: format!("{state}chunk/"),
        }
    }

    pub(super) fn manifest(&self) -> &str {
        &self.manifest
    }

    pub(super) fn chunk(&self, digest: &Digest) -> String {
        format!("{}{}", self.chunk_prefix, hex::encode(digest))
    }
}

/// `f` within [`REQUEST_TIMEOUT`], its error as [`HaError::Etcd`].
async fn bounded<T>(
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, HaError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(Ok(t)) => Ok(t),
        // etcd's own text, escaped: it reaches the log.
        Ok(Err(e)) => Err(HaError::Etcd(format!(
            "{what}: {}",
            crate::events::printable(&e.to_string())
        ))),
        Err(_) => Err(HaError::Etcd(format!(
            "{what}: no answer within {REQUEST_TIMEOUT:?}"
        ))),
    }
}

/// Runs `ops` in one txn that applies only while `guard`'s key is still bound to its lease.
pub(super) async fn guarded(
    client: &mut Client,
    guard: &Guard,
    what: &str,
    ops: Vec<TxnOp>,
) -> Result<(), HaError> {
    let txn = Txn::new()
        .when([Compare::lease(
            guard.key.clone(),
            CompareOp::Equal,
            guard.lease,
        )])
        .and_then(ops);
    let resp = bounded(what, client.txn(txn)).await?;
    if resp.succeeded() {
        Ok(())
    } else {
        Err(HaError::NotLeader)
    }
}

/// Writes `chunks` in guarded txns of at most [`TXN_BYTES`] and [`TXN_OPS`]; `done` is
/// called with the digests of each txn once it is applied. Returns the bytes sent (keys and
/// values).
pub(super) async fn put_chunks(
    client: &mut Client,
    guard: &Guard,
    keys: &Keys,
    chunks: Vec<(Digest, Vec<u8>)>,
    done: &mut (dyn FnMut(&[Digest]) + Send),
) -> Result<u64, HaError> {
    let mut sent: u64 = 0;
    let mut batch: Vec<TxnOp> = Vec::new();
    let mut digests: Vec<Digest> = Vec::new();
    let mut size = 0usize;
    let mut chunks = chunks.into_iter().peekable();
    while let Some((digest, value)) = chunks.next() {
        let key = keys.chunk(&digest);
        size = size.saturating_add(key.len() + value.len());
        digests.push(digest);
        batch.push(TxnOp::put(key, value, None));
        // Keys are all as long: the next one's is this one's length.
        let full = match chunks.peek() {
            None => true,
            Some((_, v)) => {
                batch.len() >= TXN_OPS
                    || size.saturating_add(keys.chunk_prefix.len() + 64 + v.len()) > TXN_BYTES
            }
        };
        if full {
            guarded(client, guard, "writing chunks", std::mem::take(&mut batch)).await?;
            sent = sent.saturating_add(size as u64);
            done(&digests);
            digests.clear();
            size = 0;
        }
    }
    Ok(sent)
}

/// Deletes the chunks `gone` in guarded txns of at most [`TXN_OPS`]; `done` is called with
/// each txn's digests once it is applied. Returns the bytes sent.
pub(super) async fn delete_chunks(
    client: &mut Client,
    guard: &Guard,
    keys: &Keys,
    gone: Vec<Digest>,
    done: &mut (dyn FnMut(&[Digest]) + Send),
) -> Result<u64, HaError> {
    let mut sent: u64 = 0;
    for batch in gone.chunks(TXN_OPS) {
        let names: Vec<String> = batch.iter().map(|d| keys.chunk(d)).collect();
        let bytes: usize = names.iter().map(String::len).sum();
        let ops = names.into_iter().map(|k| TxnOp::delete(k, None)).collect();
        guarded(client, guard, "deleting unreferenced chunks", ops).await?;
        sent = sent.saturating_add(bytes as u64);
        done(batch);
    }
    Ok(sent)
}

/// The chunks present in etcd (keys only, page by page). A key under the chunk prefix that is
/// not a chunk name is left alone.
pub(super) async fn list_chunks(
    client: &mut Client,
    keys: &Keys,
) -> Result<HashSet<Digest>, HaError> {
    let prefix = keys.chunk_prefix.as_bytes();
    let end = prefix_end(prefix);
    let mut from = prefix.to_vec();
    let mut found = HashSet::new();
    loop {
        let options = GetOptions::new()
            .with_range(end.clone())
            .with_keys_only()
            .with_limit(LIST_PAGE);
        let resp = bounded("listing chunks", client.get(from.clone(), Some(options))).await?;
        for kv in resp.kvs() {
            let name = &kv.key()[prefix.len().min(kv.key().len())..];
            let mut d = [0u8; 32];
            if name.len() == 64 && hex::decode_to_slice(name, &mut d).is_ok() {
                found.insert(d);
            }
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                // The next key after `last`.
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(found),
        }
    }
}

/// The smallest key greater than every key starting with `prefix` (etcd's `with_prefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The manifest's bytes, `None` when there is none; refused when larger than a manifest may
/// be.
pub(super) async fn get_manifest(
    client: &mut Client,
    keys: &Keys,
) -> Result<Option<Vec<u8>>, HaError> {
    let resp = bounded("reading the manifest", client.get(keys.manifest(), None)).await?;
    let Some(kv) = resp.kvs().first() else {
        return Ok(None);
    };
    if kv.value().len() > MAX_MANIFEST_BYTES {
        return Err(HaError::Replica(format!(
            "{}: {} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may",
            keys.manifest(),
            kv.value().len()
        )));
    }
    Ok(Some(kv.value().to_vec()))
}

/// The chunks `wanted`, each checked against its name (at most [`CHUNK_MAX`] bytes, SHA-256
/// equal to the digest in its key). A chunk missing or damaged is [`HaError::Replica`].
pub(super) async fn get_chunks(
    client: &Client,
    keys: &Keys,
    wanted: Vec<Digest>,
) -> Result<HashMap<Digest, Vec<u8>>, HaError> {
    let mut got = HashMap::with_capacity(wanted.len());
    let mut tasks = tokio::task::JoinSet::new();
    let mut wanted = wanted.into_iter();
    loop {
        while tasks.len() < FETCH_IN_FLIGHT {
            let Some(digest) = wanted.next() else { break };
            let mut client = client.clone();
            let key = keys.chunk(&digest);
            tasks.spawn(async move {
                let resp = bounded("reading a chunk", client.get(key.clone(), None)).await?;
                let Some(kv) = resp.kvs().first() else {
                    return Err(HaError::Replica(format!("{key} is missing")));
                };
                let value = kv.value();
                if value.len() > CHUNK_MAX || value.is_empty() || sha256(value) != digest {
                    return Err(HaError::Replica(format!(
                        "{key} is damaged: its content does not match its name"
                    )));
                }
                Ok((digest, value.to_vec()))
            });
        }
        let Some(done) = tasks.join_next().await else {
            return Ok(got);
        };
        match done {
            Ok(Ok((digest, bytes))) => {
                got.insert(digest, bytes);
            }
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(HaError::Etcd(format!("reading a chunk: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"p/state/chunk/"), b"p/state/chunk0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }

    #[test]
    fn keys_live_under_the_state_prefix() {
        let keys = Keys::new("/cwp/");
        assert_eq!(keys.manifest(), "/cwp/state/manifest");
        assert_eq!(
            keys.chunk(&[0xab; 32]),
            format!("/cwp/state/chunk/{}", "ab".repeat(32))
        );
    }
}
