use std::collections::HashMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use super::write::{Step, rename_if_free};
use super::*;
use crate::agent_uuid::AgentUuid;
use crate::tracker::{Known, KnownMap};

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
        let entries: Vec<(AgentUuid, Known)> = new.iter().map(|(u, k)| (*u, k.clone())).collect();
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
