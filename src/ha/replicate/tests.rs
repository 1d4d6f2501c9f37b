//! Push and restore against a real etcd ([`crate::ha::test_etcd`]).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use etcd_client::{Client, GetOptions, PutOptions};

use super::*;
use crate::agent_uuid::AgentUuid;
use crate::ha::test_etcd::TestEtcd;
use crate::state::StateFile;
use crate::status::Status;
use crate::tracker::{Known, RequestId};

const PREFIX: &str = "/cwp";

/// A leader: a lease and the election key bound to it.
async fn lead(client: &mut Client) -> Guard {
    let lease = client.lease_grant(60, None).await.unwrap().id();
    let key = format!("{PREFIX}/leader/{lease:x}").into_bytes();
    let put = PutOptions::new().with_lease(lease);
    client.put(key.clone(), "me", Some(put)).await.unwrap();
    Guard { key, lease }
}

/// Every key under the deployment's prefix, with its value.
async fn everything(client: &mut Client) -> BTreeMap<String, Vec<u8>> {
    let resp = client
        .get(PREFIX, Some(GetOptions::new().with_prefix()))
        .await
        .unwrap();
    resp.kvs()
        .iter()
        .map(|kv| (kv.key_str().unwrap().to_owned(), kv.value().to_vec()))
        .collect()
}

/// The state keys only.
async fn state_keys(client: &mut Client) -> BTreeMap<String, Vec<u8>> {
    let mut all = everything(client).await;
    all.retain(|k, _| k.starts_with(&crate::ha::state_prefix(PREFIX)));
    all
}

async fn revision(client: &mut Client) -> i64 {
    client
        .get("any", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// Every file of `dir` with its bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            (name, std::fs::read(e.path()).unwrap_or_default())
        })
        .collect()
}

fn entries(agents: u128) -> Vec<(AgentUuid, Known)> {
    (0..agents)
        .map(|i| {
            let known = Known {
                status: Status::Complete,
                request_id: RequestId::Uuid(AgentUuid::from_value(i.wrapping_mul(7919) + 1)),
                seen_at: 1_765_000_000 + i as i64,
            };
            (AgentUuid::from_value(i), known)
        })
        .collect()
}

/// A state_dir with one file of each replicated kind and some that are not replicated.
fn state_dir(agents: u128) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    StateFile::in_dir(d)
        .write_entries(&entries(agents))
        .unwrap();
    StateFile::for_account(d, "prod")
        .write_entries(&entries(3))
        .unwrap();
    for (name, content) in [
        (
            "inventory.json",
            "{\"version\":1,\"agents\":{}}\n".repeat(9000),
        ),
        ("discovery.prod.json", "{\"d\":1}\n".to_owned()),
        ("outbox-ops.json", "{\"records\":[1,2,3]}\n".to_owned()),
        ("outbox-ops.journal", "{\"seq\":4}\n".to_owned()),
        ("outbox-ops.journal.prev", "{\"seq\":3}\n".to_owned()),
        ("outbox-empty.journal", String::new()),
        // Not replicated:
        ("state.json.damaged-1765000000", "torn".to_owned()),
        ("state.json.tmp.77", "half".to_owned()),
        ("notes.txt", "mine".to_owned()),
    ] {
        std::fs::write(d.join(name), content).unwrap();
    }
    dir
}

const REPLICATED: [&str; 8] = [
    "state.json",
    "state.prod.json",
    "inventory.json",
    "discovery.prod.json",
    "outbox-ops.json",
    "outbox-ops.journal",
    "outbox-ops.journal.prev",
    "outbox-empty.journal",
];

#[tokio::test]
async fn a_push_restores_into_an_empty_dir_byte_for_byte_and_private() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let from = state_dir(2000);
    let mut r = Replicator::new(client.clone(), PREFIX, guard, from.path());
    let pushed = r.push().await.unwrap();
    assert_eq!(pushed.files, REPLICATED.len());
    assert!(pushed.chunks >= 4, "{pushed:?}");

    let to = tempfile::tempdir().unwrap();
    let restored = restore(&mut client, PREFIX, to.path()).await.unwrap();
    let mut want = contents(from.path());
    want.retain(|n, _| REPLICATED.contains(&n.as_str()));
    let got = contents(to.path());
    assert_eq!(got, want);
    assert!(restored.found);
    assert_eq!(restored.files, REPLICATED.len());
    assert_eq!(
        restored.bytes,
        want.values().map(|v| v.len() as u64).sum::<u64>()
    );
    assert_eq!(restored.removed, 0);
    let age = SystemTime::now()
        .duration_since(restored.pushed_at.unwrap())
        .unwrap();
    assert!(age < Duration::from_secs(60), "{age:?}");
    for name in REPLICATED {
        let mode = std::fs::metadata(to.path().join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}");
    }
    // The state file reads back as the daemon reads it.
    assert_eq!(StateFile::in_dir(to.path()).load().unwrap().len(), 2000);
}

#[tokio::test]
async fn a_push_without_change_writes_nothing_and_a_resave_of_the_same_content_neither() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = state_dir(500);
    let mut r = Replicator::new(client.clone(), PREFIX, guard.clone(), dir.path());
    assert!(r.push().await.unwrap().bytes > 0);
    let rev = revision(&mut client).await;
    assert_eq!(r.push().await.unwrap(), PushReport::default());
    // Saved again with the same content: a new inode and times, the same bytes.
    StateFile::in_dir(dir.path())
        .write_entries(&entries(500))
        .unwrap();
    assert_eq!(r.push().await.unwrap(), PushReport::default());
    assert_eq!(revision(&mut client).await, rev, "etcd was written");

    // A new replicator (a takeover, after a restore) finds everything in etcd already.
    let mut fresh = Replicator::new(client.clone(), PREFIX, guard, dir.path());
    assert_eq!(fresh.push().await.unwrap(), PushReport::default());
    assert_eq!(revision(&mut client).await, rev, "etcd was written");
}

#[tokio::test]
async fn one_agent_changed_among_10000_writes_at_most_two_chunks() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = tempfile::tempdir().unwrap();
    let file = StateFile::in_dir(dir.path());
    let mut agents = entries(10_000);
    file.write_entries(&agents).unwrap();
    let size = std::fs::metadata(file.path()).unwrap().len();
    let mut r = Replicator::new(client.clone(), PREFIX, guard, dir.path());
    let first = r.push().await.unwrap();
    assert!(first.chunks >= 100, "{first:?} for {size} bytes");

    agents[5_000].1.status = Status::new("AGENT_OFFLINE");
    agents[5_000].1.seen_at += 60;
    file.write_entries(&agents).unwrap();
    let second = r.push().await.unwrap();
    assert_eq!(second.files, 1);
    assert!((1..=2).contains(&second.chunks), "{second:?}");
    assert!((1..=2).contains(&second.lists), "{second:?}");
    assert!(second.deleted <= 4, "{second:?}");
    assert!(second.bytes < 100 << 10, "{second:?}");
    // Only what the manifest refers to stays in etcd.
    let keys = state_keys(&mut client).await;
    let manifest = Manifest::parse(&keys[&format!("{PREFIX}/state/manifest")]).unwrap();
    let chunk = |d: &Digest| &keys[&format!("{PREFIX}/state/chunk/{}", hex::encode(d))];
    let mut referenced: HashSet<Digest> = manifest.files[0].lists.iter().copied().collect();
    for piece in &manifest.files[0].lists {
        referenced.extend(manifest::read_piece(chunk(piece)).unwrap());
    }
    assert_eq!(keys.len(), referenced.len() + 1);
}

#[tokio::test]
async fn a_push_under_a_guard_that_no_longer_holds_is_not_leader_and_writes_nothing() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let dir = state_dir(100);

    // Another lease holds the key.
    let other = lead(&mut client).await;
    let mine = client.lease_grant(60, None).await.unwrap().id();
    let stolen = Guard {
        key: other.key.clone(),
        lease: mine,
    };
    let mut r = Replicator::new(client.clone(), PREFIX, stolen, dir.path());
    assert!(matches!(r.push().await, Err(HaError::NotLeader)));
    assert!(state_keys(&mut client).await.is_empty());

    // The key is gone.
    let gone = Guard {
        key: format!("{PREFIX}/leader/gone").into_bytes(),
        lease: mine,
    };
    let mut r = Replicator::new(client.clone(), PREFIX, gone, dir.path());
    assert!(matches!(r.push().await, Err(HaError::NotLeader)));
    assert!(state_keys(&mut client).await.is_empty());

    // A leader deposed after a push: its next push changes nothing in etcd.
    let mut r = Replicator::new(client.clone(), PREFIX, other.clone(), dir.path());
    r.push().await.unwrap();
    let before = state_keys(&mut client).await;
    client.lease_revoke(other.lease).await.unwrap();
    std::fs::write(dir.path().join("outbox-ops.json"), "{\"records\":[]}\n").unwrap();
    std::fs::write(dir.path().join("state.json"), "{}\n".repeat(30_000)).unwrap();
    assert!(matches!(r.push().await, Err(HaError::NotLeader)));
    assert_eq!(state_keys(&mut client).await, before);
}

/// Pushes `state_dir(100)`; returns etcd, a client and the chunk keys.
async fn pushed() -> (TestEtcd, Client, Vec<String>) {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = state_dir(100);
    Replicator::new(client.clone(), PREFIX, guard, dir.path())
        .push()
        .await
        .unwrap();
    let chunks = state_keys(&mut client)
        .await
        .into_keys()
        .filter(|k| k.contains("/chunk/"))
        .collect();
    (etcd, client, chunks)
}

/// A state_dir with files of its own, and its contents.
fn local() -> (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("state.json"),
        "{\"version\":1,\"agents\":{}}",
    )
    .unwrap();
    std::fs::write(dir.path().join("outbox-old.json"), "{}").unwrap();
    let before = contents(dir.path());
    (dir, before)
}

#[tokio::test]
async fn a_tampered_or_missing_chunk_is_replica_and_nothing_is_written() {
    let (_etcd, mut client, chunks) = pushed().await;
    let (dir, before) = local();

    client
        .put(chunks[1].clone(), "tampered", None)
        .await
        .unwrap();
    let e = restore(&mut client, PREFIX, dir.path()).await.unwrap_err();
    assert!(
        matches!(&e, HaError::Replica(m) if m.contains("damaged")),
        "{e}"
    );
    assert_eq!(contents(dir.path()), before);

    client.delete(chunks[1].clone(), None).await.unwrap();
    let e = restore(&mut client, PREFIX, dir.path()).await.unwrap_err();
    assert!(
        matches!(&e, HaError::Replica(m) if m.contains("missing")),
        "{e}"
    );
    assert_eq!(contents(dir.path()), before);

    client
        .put(format!("{PREFIX}/state/manifest"), "{not json", None)
        .await
        .unwrap();
    let e = restore(&mut client, PREFIX, dir.path()).await.unwrap_err();
    assert!(
        matches!(&e, HaError::Replica(m) if m.contains("manifest")),
        "{e}"
    );
    assert_eq!(contents(dir.path()), before);
}

#[tokio::test]
async fn a_manifest_naming_files_outside_the_replicated_set_is_refused() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    // A well-formed replica in every other way: a chunk, its list piece.
    let content = b"planted";
    let digest = hex::encode(sha256(content));
    let piece = sha256(content).to_vec();
    let list = hex::encode(sha256(&piece));
    let whole = hex::encode(manifest::content_digest(&[sha256(content)]));
    client
        .put(format!("{PREFIX}/state/chunk/{digest}"), &content[..], None)
        .await
        .unwrap();
    client
        .put(format!("{PREFIX}/state/chunk/{list}"), piece, None)
        .await
        .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    for name in ["../x", "a/b", "../state.json", "/etc/cron.d/x", "notes.txt"] {
        let manifest = serde_json::json!({"format": 1, "pushed_at_ms": 0, "files": [
            {"name": name, "len": content.len(), "chunks_sha256": whole, "lists": [list]},
        ]});
        client
            .put(
                format!("{PREFIX}/state/manifest"),
                serde_json::to_vec(&manifest).unwrap(),
                None,
            )
            .await
            .unwrap();
        let e = restore(&mut client, PREFIX, &dir).await.unwrap_err();
        assert!(
            matches!(&e, HaError::Replica(m) if m.contains("not a replicated state file")),
            "{name}: {e}"
        );
        assert!(contents(&dir).is_empty(), "{name}");
        assert_eq!(contents(parent.path()).len(), 1, "{name}");
    }
    // A replicated name with a content digest that does not match its chunks: refused.
    let manifest = serde_json::json!({"format": 1, "pushed_at_ms": 0, "files": [
        {"name": "outbox-x.json", "len": content.len(), "chunks_sha256": digest, "lists": [list]},
    ]});
    client
        .put(
            format!("{PREFIX}/state/manifest"),
            serde_json::to_vec(&manifest).unwrap(),
            None,
        )
        .await
        .unwrap();
    let e = restore(&mut client, PREFIX, &dir).await.unwrap_err();
    assert!(
        matches!(&e, HaError::Replica(m) if m.contains("does not match")),
        "{e}"
    );
    assert!(contents(&dir).is_empty());
    // The same replica under a replicated name is restored (the refusals were the names').
    let manifest = serde_json::json!({"format": 1, "pushed_at_ms": 0, "files": [
        {"name": "outbox-x.json", "len": content.len(), "chunks_sha256": whole, "lists": [list]},
    ]});
    client
        .put(
            format!("{PREFIX}/state/manifest"),
            serde_json::to_vec(&manifest).unwrap(),
            None,
        )
        .await
        .unwrap();
    restore(&mut client, PREFIX, &dir).await.unwrap();
    assert_eq!(std::fs::read(dir.join("outbox-x.json")).unwrap(), content);
}

#[tokio::test]
async fn a_restore_removes_replicated_files_the_replica_does_not_hold_and_keeps_others() {
    let (_etcd, mut client, _) = pushed().await;
    let (dir, _) = local();
    for name in [
        "outbox-old.journal",
        "state.gone.json",
        "state.json.damaged-1",
        "notes.txt",
    ] {
        std::fs::write(dir.path().join(name), "x").unwrap();
    }
    let report = restore(&mut client, PREFIX, dir.path()).await.unwrap();
    assert_eq!(report.removed, 3, "{report:?}");
    let names: Vec<String> = contents(dir.path()).into_keys().collect();
    let mut want: Vec<&str> = REPLICATED.to_vec();
    want.extend(["notes.txt", "state.json.damaged-1"]);
    want.sort();
    assert_eq!(names, want);
}

#[tokio::test]
async fn without_a_replica_a_restore_changes_nothing_and_says_so() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let (dir, before) = local();
    let report = restore(&mut client, PREFIX, dir.path()).await.unwrap();
    assert_eq!(report, RestoreReport::default());
    assert!(!report.found);
    assert_eq!(contents(dir.path()), before);
}

/// Waits until `f` holds (polling etcd), at most 10 s.
async fn until<F: AsyncFnMut() -> bool>(mut f: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_loop_pushes_while_open_pushes_once_more_at_stop_and_ends_when_deposed() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = state_dir(100);
    let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = CancellationToken::new();
    let r = Replicator::new(client.clone(), PREFIX, guard.clone(), dir.path());
    let is_open = open.clone();
    let run = tokio::spawn(r.run_while(
        move || is_open.load(std::sync::atomic::Ordering::SeqCst),
        stop.clone(),
    ));
    // Closed fence: nothing is pushed.
    tokio::time::sleep(REPLICATE_EVERY * 2).await;
    assert!(state_keys(&mut client).await.is_empty());
    open.store(true, std::sync::atomic::Ordering::SeqCst);
    until(async || !state_keys(&mut client).await.is_empty()).await;

    // A change just before the stop is in etcd when the loop has ended.
    std::fs::write(dir.path().join("outbox-ops.json"), "{\"records\":[9]}\n").unwrap();
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
    let to = tempfile::tempdir().unwrap();
    restore(&mut client, PREFIX, to.path()).await.unwrap();
    assert_eq!(
        std::fs::read(to.path().join("outbox-ops.json")).unwrap(),
        b"{\"records\":[9]}\n"
    );

    // Deposed: the loop ends by itself.
    let stop = CancellationToken::new();
    let r = Replicator::new(client.clone(), PREFIX, guard.clone(), dir.path());
    let run = tokio::spawn(r.run_while(|| true, stop.clone()));
    client.lease_revoke(guard.lease).await.unwrap();
    std::fs::write(dir.path().join("outbox-ops.json"), "{\"records\":[]}\n").unwrap();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .expect("the loop ends when deposed")
        .unwrap();
    assert!(!stop.is_cancelled());
}

/// The loop pushes soon after a save (it watches the files' stamps), not on a tick of its
/// own that a save just missed; and while nothing changes it writes nothing.
#[tokio::test]
async fn the_loop_pushes_soon_after_each_save_and_nothing_while_nothing_changes() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = state_dir(100);
    let stop = CancellationToken::new();
    let r = Replicator::new(client.clone(), PREFIX, guard, dir.path());
    let run = tokio::spawn(r.run_while(|| true, stop.clone()));
    until(async || !state_keys(&mut client).await.is_empty()).await;
    // Quiet: three seconds without a change write nothing (no periodic pushes).
    tokio::time::sleep(REPLICATE_EVERY).await;
    let quiet = revision(&mut client).await;
    tokio::time::sleep(REPLICATE_EVERY * 3).await;
    assert_eq!(
        revision(&mut client).await,
        quiet,
        "pushed while nothing changed"
    );
    // A save more than REPLICATE_EVERY after the last push is in etcd within a few watch
    // periods (bound: half a second, for a loaded machine), not on a later tick of a fixed
    // 1-s period (which measured 0.9 s here).
    for round in 0..3u8 {
        let saved = Instant::now();
        let body = format!("{{\"records\":[{round}]}}\n");
        std::fs::write(dir.path().join("outbox-ops.json"), &body).unwrap();
        let before = revision(&mut client).await;
        until(async || revision(&mut client).await > before).await;
        let took = saved.elapsed();
        println!(
            "save {round} in etcd {} ms after it was written",
            took.as_millis()
        );
        assert!(
            took < REPLICATE_EVERY / 2,
            "a save reached etcd only after {took:?}: pushed on a tick, not on the change"
        );
        tokio::time::sleep(REPLICATE_EVERY + WATCH_EVERY).await;
    }
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(15), run)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn an_unreachable_etcd_is_an_etcd_error_and_the_next_push_after_its_return_works() {
    let mut etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let guard = lead(&mut client).await;
    let dir = state_dir(100);
    let mut r = Replicator::new(client.clone(), PREFIX, guard, dir.path());
    r.push().await.unwrap();
    etcd.stop();
    std::fs::write(dir.path().join("outbox-ops.json"), "{\"records\":[7]}\n").unwrap();
    let e = r.push().await.unwrap_err();
    assert!(matches!(e, HaError::Etcd(_)), "{e}");
    etcd.start().await;
    let mut pushed = None;
    // The client reconnects by itself; its first requests may still fail.
    for _ in 0..100 {
        match r.push().await {
            Ok(report) => {
                pushed = Some(report);
                break;
            }
            Err(HaError::Etcd(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("{e}"),
        }
    }
    let pushed = pushed.expect("a push after etcd came back");
    assert_eq!(pushed.files, 1, "{pushed:?}");
    let mut client = etcd.client().await;
    let to = tempfile::tempdir().unwrap();
    restore(&mut client, PREFIX, to.path()).await.unwrap();
    assert_eq!(
        std::fs::read(to.path().join("outbox-ops.json")).unwrap(),
        b"{\"records\":[7]}\n"
    );
}

/// The fixture itself: it answers, stops answering when stopped, and keeps its data.
#[tokio::test]
async fn the_test_etcd_starts_answers_stops_and_starts_again_with_its_data() {
    let mut etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    client.put("k", "v", None).await.unwrap();
    etcd.stop();
    assert!(
        client.get("k", None).await.is_err(),
        "a stopped etcd must not answer"
    );
    etcd.start().await;
    let mut client = etcd.client().await;
    let got = client.get("k", None).await.unwrap();
    assert_eq!(got.kvs()[0].value(), b"v");
}

/// A list piece naming more chunks than the file's length allows is refused before any chunk
/// is fetched.
#[tokio::test]
async fn a_list_of_more_chunks_than_the_length_allows_is_replica() {
    let etcd = TestEtcd::new().await;
    let mut client = etcd.client().await;
    let digests = [sha256(b"a"), sha256(b"b"), sha256(b"c")];
    let piece: Vec<u8> = digests.concat();
    let list = hex::encode(sha256(&piece));
    client
        .put(format!("{PREFIX}/state/chunk/{list}"), piece, None)
        .await
        .unwrap();
    let manifest = serde_json::json!({"format": 1, "pushed_at_ms": 0, "files": [
        {"name": "state.json", "len": 3, "lists": [list],
         "chunks_sha256": hex::encode(manifest::content_digest(&digests))},
    ]});
    client
        .put(
            format!("{PREFIX}/state/manifest"),
            serde_json::to_vec(&manifest).unwrap(),
            None,
        )
        .await
        .unwrap();
    let (dir, before) = local();
    let e = restore(&mut client, PREFIX, dir.path()).await.unwrap_err();
    assert!(
        matches!(&e, HaError::Replica(m) if m.contains("3 chunks cannot hold its 3 bytes")),
        "{e}"
    );
    assert_eq!(contents(dir.path()), before);
}
