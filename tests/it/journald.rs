//! The daemon's journal output as its consumers see it: the real binary, `log.format =
//! "journald"`, a real systemd-journald, and `journalctl -o json` reading the entries back.
//!
//! journald need not run under systemd: when `/run/systemd/journal/socket` has no listener, the
//! test starts `/lib/systemd/systemd-journald` itself and leaves it running, as `.ci/run` does.
//! It fails, never skips, when journald cannot be started.

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cwp_portwatch::events::message_id;
use cwp_simulator::{DEFAULT_SECRET_KEY, RunningSimulator};
use serde_json::{Map, Value};

use crate::support::app::{App, Running};
use crate::support::*;

const JOURNAL_DIR: &str = "/run/systemd/journal";
const SOCKET: &str = "/run/systemd/journal/socket";
const JOURNALD: [&str; 2] = [
    "/lib/systemd/systemd-journald",
    "/usr/lib/systemd/systemd-journald",
];

type Entry = Map<String, Value>;

/// Does a journald listen on the socket? (Like tracing-journald: an empty datagram, which
/// journald discards, goes through only when someone listens.)
fn journald_listens() -> bool {
    UnixDatagram::unbound()
        .and_then(|s| s.send_to(&[], SOCKET))
        .is_ok()
}

/// Makes sure a journald listens on [`SOCKET`], starting one when none does. A journald started
/// here is left running, as `.ci/run` leaves its own: a concurrent test run may be logging to
/// it. A lock file keeps two test runs from starting two.
#[expect(
    clippy::zombie_processes,
    reason = "journald is left running on purpose; init reaps it once this test run exits"
)]
fn ensure_journald() {
    if journald_listens() {
        return;
    }
    let hint = "start one first: `mkdir -p /run/systemd/journal; /lib/systemd/systemd-journald &` \
                (Debian/Ubuntu package `systemd`; needs root)";
    let ci = if std::env::var_os("CI").is_some() {
        " (CI)"
    } else {
        ""
    };
    let Some(binary) = JOURNALD.iter().map(Path::new).find(|p| p.is_file()) else {
        panic!("no journald listens on {SOCKET} and systemd-journald is not installed{ci}; {hint}");
    };
    if let Err(e) = std::fs::create_dir_all(JOURNAL_DIR) {
        panic!(
            "no journald listens on {SOCKET} and {JOURNAL_DIR} cannot be made ({e}){ci}; {hint}"
        );
    }
    let lock = std::fs::File::create(format!("{JOURNAL_DIR}/.cwp-portwatch-test.lock"))
        .unwrap_or_else(|e| panic!("cannot make a lock file in {JOURNAL_DIR}: {e}{ci}; {hint}"));
    // SAFETY: flock(2) on a file descriptor we own; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if journald_listens() {
        return;
    }
    let log_path = std::env::temp_dir().join(format!(
        "cwp-portwatch-test-journald-{}.log",
        std::process::id()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    Command::new(binary)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        // Its own process group: a Ctrl-C of the test run does not stop it half-way.
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}{ci}; {hint}", binary.display()));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !journald_listens() {
        if Instant::now() > deadline {
            panic!(
                "started {} but nothing listens on {SOCKET} after 5 s{ci}; its output ({}):\n{}",
                binary.display(),
                log_path.display(),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_file(&log_path);
}

/// The entries of process `pid` since `since` (Unix seconds), read with journalctl.
fn journal(since: u64, pid: u32) -> Vec<Entry> {
    let out = Command::new("journalctl")
        .args(["-o", "json", "--no-pager"])
        .arg(format!("--since=@{since}"))
        .arg("SYSLOG_IDENTIFIER=cwp-portwatch")
        .arg(format!("_PID={pid}"))
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run journalctl ({e}): install the systemd package (apt-get install systemd)"
            )
        });
    assert!(
        out.status.success(),
        "journalctl: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str::<Entry>(l).expect("journalctl -o json gives JSON objects"))
        .collect()
}

/// A field's single text value; a field sent twice would show as an array (a defect).
fn field<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    match e.get(name)? {
        Value::String(s) => Some(s.as_str()),
        other => panic!("{name} is not one text value but {other} in {e:?}"),
    }
}

fn must<'a>(e: &'a Entry, name: &str) -> &'a str {
    field(e, name).unwrap_or_else(|| panic!("no {name} in {e:?}"))
}

fn event(e: &Entry) -> Option<&str> {
    field(e, "EVENT")
}

/// Waits until the simulator has answered `uuid` with `answer` at least `times` times.
async fn wait_answered(sim: &RunningSimulator, uuid: &str, answer: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answered = sim
            .stats()
            .log
            .iter()
            .filter(|r| r.uuid.as_deref() == Some(uuid) && r.answer == answer)
            .count();
        if answered >= times {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{uuid} answered {answer} {answered} times, want {times}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_events_reach_a_real_journal_with_their_fields() {
    ensure_journald();

    // web-01 finishes collecting at 1 s, db-01 is offline (an API error), app-01 has failed.
    let (web, db, app_uuid) = (uuid(0), uuid(1), uuid(2));
    let sim = start_scenario(&format!(
        r#"
[[agent]]
uuid = "{web}"
timeline = [ {{ at = "0s", status = "COLLECTING" }}, {{ at = "1s", status = "COMPLETE" }} ]
[[agent]]
uuid = "{db}"
timeline = [ {{ at = "0s", error = "FailedOperation.AgentOffline" }} ]
[[agent]]
uuid = "{app_uuid}"
timeline = [ {{ at = "0s", status = "FAILED" }} ]
"#
    ))
    .await;

    // Names unique to this run, so entries of earlier runs cannot match.
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let run = format!("{}-{nanos:09}", std::process::id());
    let names = [
        (web.clone(), format!("web-01-{run}")),
        (db.clone(), format!("db-01-{run}")),
        (app_uuid.clone(), format!("app-01-{run}")),
    ];
    let mut watchlist = String::new();
    for (uuid, name) in &names {
        watchlist.push_str(&format!(
            "[[agent]]\nuuid = \"{uuid}\"\nname = \"{name}\"\n"
        ));
    }
    let app = App::new();
    app.write("watchlist.toml", watchlist);
    app.write(
        "config.toml",
        format!(
            "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n\
             [api]\nendpoint = \"{}\"\n\
             [poll]\ninterval = \"500ms\"\ncollecting_interval = \"500ms\"\noffline_interval = \"500ms\"\n\
             [log]\nformat = \"journald\"\nlevel = \"debug\"\n",
            sim.endpoint()
        ),
    );

    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let daemon: Running = app.daemon(&[]);
    let pid = daemon.pid();

    // Every status reached and answered once more: the daemon had handled the answer that
    // changed it before it sent the next request.
    wait_answered(&sim, &web, "COMPLETE", 2).await;
    wait_answered(&sim, &db, "FailedOperation.AgentOffline", 2).await;
    wait_answered(&sim, &app_uuid, "FAILED", 2).await;
    let out = daemon.stop().await;
    sim.shutdown().await;
    let output = format!("stdout:\n{}\nstderr:\n{}", out.stdout, out.stderr);
    assert_eq!(
        out.code(),
        Some(0),
        "the daemon's exit after SIGTERM: {:?}\n{output}",
        out.status
    );

    // journald writes asynchronously: wait for the last event to be readable.
    let deadline = Instant::now() + Duration::from_secs(5);
    let entries = loop {
        let entries = journal(since, pid);
        if entries.iter().any(|e| event(e) == Some("daemon_stopping")) || Instant::now() > deadline
        {
            break entries;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Issue 15: no field of any entry (events or debug lines) carries the secret key. The
    // debug lines are there to scan: the start-up's known one (a `debug!`, which
    // tracing-journald writes at PRIORITY 6; `trace!` is 7).
    assert!(
        entries.iter().any(|e| {
            e.get("PRIORITY").and_then(Value::as_str) == Some("6")
                && e.get("MESSAGE").and_then(Value::as_str) == Some("credentials found")
        }),
        "no debug entry in the journal, so none was scanned: {entries:?}"
    );
    for e in &entries {
        for (name, value) in e {
            assert!(
                !value.to_string().contains(DEFAULT_SECRET_KEY),
                "the secret key in the journal field {name}: {e:?}"
            );
        }
    }
    let events: Vec<&Entry> = entries.iter().filter(|e| event(e).is_some()).collect();
    let summary: Vec<String> = events
        .iter()
        .map(|e| format!("{} {}", must(e, "EVENT"), must(e, "MESSAGE")))
        .collect();
    assert!(
        !events.is_empty(),
        "no entries of pid {pid} in the journal (journalctl -o json SYSLOG_IDENTIFIER=cwp-portwatch _PID={pid})\n{output}"
    );

    // Every event: its kind's MESSAGE_ID, our identifier, a message, no prefixed fields.
    for e in &events {
        let name = must(e, "EVENT");
        assert_eq!(must(e, "SYSLOG_IDENTIFIER"), "cwp-portwatch", "{e:?}");
        assert!(!must(e, "MESSAGE").is_empty(), "{e:?}");
        let id = must(e, "MESSAGE_ID");
        assert!(
            message_id::ALL.contains(&id),
            "{name}: MESSAGE_ID {id} unknown"
        );
        assert!(
            !e.keys().any(|k| k.starts_with("F_")),
            "{name}: fields carry the F_ prefix: {e:?}"
        );
    }

    // Started first, stopping last, with version and agents.
    assert_eq!(
        event(events[0]),
        Some("daemon_started"),
        "first event: {summary:#?}"
    );
    assert_eq!(
        event(events[events.len() - 1]),
        Some("daemon_stopping"),
        "last event: {summary:#?}"
    );
    for (e, id) in [
        (events[0], message_id::DAEMON_STARTED),
        (events[events.len() - 1], message_id::DAEMON_STOPPING),
    ] {
        assert_eq!(must(e, "MESSAGE_ID"), id, "{e:?}");
        assert_eq!(must(e, "VERSION"), env!("CARGO_PKG_VERSION"), "{e:?}");
        assert_eq!(must(e, "AGENTS"), "3", "{e:?}");
        assert_eq!(must(e, "PRIORITY"), "5", "{e:?}");
    }
    let loaded = events
        .iter()
        .find(|e| event(e) == Some("watchlist_loaded"))
        .unwrap_or_else(|| panic!("no watchlist_loaded: {summary:#?}"));
    assert_eq!(must(loaded, "MESSAGE_ID"), message_id::WATCHLIST_LOADED);
    assert_eq!(
        (
            must(loaded, "AGENTS"),
            must(loaded, "ADDED"),
            must(loaded, "REMOVED")
        ),
        ("3", "3", "0")
    );

    // Each status change exactly once, in order, with every field.
    let expected: [(&str, &str, &str, Option<&str>); 4] = [
        (web.as_str(), "UNKNOWN", "COLLECTING", None),
        (web.as_str(), "COLLECTING", "COMPLETE", None),
        (
            db.as_str(),
            "UNKNOWN",
            "AGENT_OFFLINE",
            Some("FailedOperation.AgentOffline"),
        ),
        (app_uuid.as_str(), "UNKNOWN", "FAILED", None),
    ];
    let changes: Vec<&Entry> = events
        .iter()
        .copied()
        .filter(|e| event(e) == Some("status_changed"))
        .collect();
    for (uuid, name) in &names {
        let got: Vec<(&str, &str)> = changes
            .iter()
            .filter(|e| must(e, "UUID") == uuid.as_str())
            .map(|e| (must(e, "FROM_STATUS"), must(e, "TO_STATUS")))
            .collect();
        let want: Vec<(&str, &str)> = expected
            .iter()
            .filter(|x| x.0 == uuid.as_str())
            .map(|x| (x.1, x.2))
            .collect();
        assert_eq!(got, want, "status changes of {name}: {summary:#?}");
    }
    assert_eq!(changes.len(), expected.len(), "{summary:#?}");
    for e in &changes {
        let uuid = must(e, "UUID");
        let (from, to) = (must(e, "FROM_STATUS"), must(e, "TO_STATUS"));
        let name = &names.iter().find(|(u, _)| u == uuid).unwrap().1;
        let error_code = expected
            .iter()
            .find(|x| x.0 == uuid && x.1 == from && x.2 == to)
            .unwrap()
            .3;
        assert_eq!(must(e, "AGENT_NAME"), name, "{e:?}");
        assert!(!must(e, "REQUEST_ID").is_empty(), "{e:?}");
        assert_eq!(field(e, "ERROR_CODE"), error_code, "{e:?}");
        assert_eq!(must(e, "MESSAGE_ID"), message_id::STATUS_CHANGED, "{e:?}");
        assert_eq!(must(e, "SYSLOG_IDENTIFIER"), "cwp-portwatch", "{e:?}");
        // warn → 4, info → 5 (tracing-journald's mapping: notice).
        let priority = if to == "AGENT_OFFLINE" || to == "FAILED" {
            "4"
        } else {
            "5"
        };
        assert_eq!(must(e, "PRIORITY"), priority, "{e:?}");
        assert_eq!(
            must(e, "MESSAGE"),
            format!("{name} ({}…) {from} → {to}", &uuid[..8]),
            "{e:?}"
        );
    }
}

/// What `once` at `debug` with `log.format = "auto"` wrote to stderr, given as `stderr`, with
/// `JOURNAL_STREAM` set to `journal_stream` when given; and its pid.
fn auto_once(
    app: &App,
    stderr: Stdio,
    journal_stream: Option<String>,
) -> (std::process::Output, u32) {
    let mut cmd = app.with_config(&["once"]);
    cmd.stderr(stderr);
    if let Some(value) = journal_stream {
        cmd.env("JOURNAL_STREAM", value);
    }
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    (child.wait_with_output().unwrap(), pid)
}

/// `dev:ino` of an open file, as systemd puts it in `$JOURNAL_STREAM`.
fn dev_ino(file: &std::fs::File) -> String {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().unwrap();
    format!("{}:{}", meta.dev(), meta.ino())
}

/// Issue 15: `log.format = "auto"` is the journal when stderr is the stream systemd names in
/// `$JOURNAL_STREAM`, text on a terminal, JSON otherwise (a pipe, a file, or a
/// `$JOURNAL_STREAM` naming some other stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_format_auto_picks_the_journal_a_terminal_or_json() {
    ensure_journald();
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    let app = App::for_simulator(&sim.endpoint(), &crate::support::app::agents(0..2, "auto"));
    app.write(
        "config.toml",
        crate::support::app::daemon_config(&sim.endpoint())
            .replace("format = \"json\"", "format = \"auto\"")
            .replace("level = \"info\"", "level = \"debug\""),
    );
    let is_json = |line: &str| serde_json::from_str::<Map<String, Value>>(line).is_ok();

    // A pipe, with and without a $JOURNAL_STREAM that names another stream: JSON.
    let other = std::fs::File::create(app.path().join("other")).unwrap();
    for stream in [None, Some(dev_ino(&other))] {
        let what = format!("a pipe, JOURNAL_STREAM {stream:?}");
        let app = &app;
        let (out, _) = tokio::task::block_in_place(|| auto_once(app, Stdio::piped(), stream));
        assert!(out.status.success(), "{what}: {:?}", out.status);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("credentials found"), "{what}: {stderr}");
        assert!(
            stderr.lines().all(is_json),
            "{what}: not JSON lines: {stderr}"
        );
    }

    // A terminal: text.
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty(3) fills two descriptors we then own; no name, default settings.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors are open and owned by nobody else.
    let (master, slave) = unsafe {
        use std::os::fd::FromRawFd;
        (
            std::fs::File::from_raw_fd(master),
            std::os::fd::OwnedFd::from_raw_fd(slave),
        )
    };
    let (out, _) = tokio::task::block_in_place(|| auto_once(&app, Stdio::from(slave), None));
    assert!(out.status.success(), "a terminal: {:?}", out.status);
    let mut text = Vec::new();
    // The slave is closed (the child exited and our copy moved into it): the master reads
    // what was written, then fails with EIO.
    let mut master = master;
    let _ = std::io::Read::read_to_end(&mut master, &mut text);
    let text = String::from_utf8_lossy(&text);
    assert!(text.contains("credentials found"), "a terminal: {text}");
    assert!(
        !text.lines().any(|l| is_json(l.trim_end_matches('\r'))),
        "a terminal got JSON: {text}"
    );

    // stderr is the stream $JOURNAL_STREAM names: the journal, nothing on stderr.
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let file = std::fs::File::create(app.path().join("stream")).unwrap();
    let stream = dev_ino(&file);
    let (out, pid) =
        tokio::task::block_in_place(|| auto_once(&app, Stdio::from(file), Some(stream)));
    assert!(out.status.success(), "the journal: {:?}", out.status);
    let written = std::fs::read_to_string(app.path().join("stream")).unwrap();
    assert!(written.is_empty(), "the journal: stderr got {written}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let entries = journal(since, pid);
        if entries
            .iter()
            .any(|e| field(e, "MESSAGE") == Some("credentials found"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no \"credentials found\" of pid {pid} in the journal: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    sim.shutdown().await;
}

/// Issue 22: a policy finding reaches the journal with the port event's fields, `RULE`,
/// `SEVERITY`, its own MESSAGE_ID, and `PRIORITY` 3 for a critical one (error), so
/// `journalctl MESSAGE_ID=… SEVERITY=critical` finds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_finding_reaches_the_journal_with_rule_and_severity() {
    ensure_journald();
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    sim.set_ports(
        &uuid(0),
        vec![cwp_simulator::OpenPortSpec {
            port: 6379,
            process: "redis-server".into(),
            pid: 4242,
        }],
    );
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = format!("web-{}-{nanos:09}", std::process::id());
    let app = App::new();
    app.write(
        "watchlist.toml",
        format!("[[agent]]\nuuid = \"{}\"\nname = \"{name}\"\n", uuid(0)),
    );
    app.write(
        "policy.toml",
        "[[rule]]\nname = \"web tier\"\nhosts = { names = [\"web-*\"] }\n\
         allow = [\"22/sshd\"]\nseverity = \"critical\"\n",
    );
    app.write(
        "config.toml",
        format!(
            "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n\
             [api]\nendpoint = \"{}\"\n\
             [poll]\ninterval = \"300ms\"\ncollecting_interval = \"300ms\"\noffline_interval = \"300ms\"\n\
             [inventory]\nenabled = true\n[policy]\nfile = \"policy.toml\"\n\
             [log]\nformat = \"journald\"\n",
            sim.endpoint()
        ),
    );
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 1;
    let daemon: Running = app.daemon(&[]);
    let pid = daemon.pid();
    // Fetched and answered again: the finding was emitted before the next poll went out.
    let deadline = Instant::now() + Duration::from_secs(20);
    while sim
        .stats()
        .per_action
        .get("DescribeOpenPorts")
        .is_none_or(|s| s.arrived == 0)
    {
        assert!(Instant::now() < deadline, "the ports were never fetched");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    wait_answered(&sim, &uuid(0), "COMPLETE", 3).await;
    let out = daemon.stop().await;
    sim.shutdown().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let deadline = Instant::now() + Duration::from_secs(5);
    let finding = loop {
        let entries = journal(since, pid);
        if let Some(e) = entries.iter().find(|e| event(e) == Some("port_unexpected")) {
            break e.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no port_unexpected of pid {pid} in the journal: {entries:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(must(&finding, "MESSAGE_ID"), message_id::PORT_UNEXPECTED);
    assert_eq!(must(&finding, "UUID"), uuid(0));
    assert_eq!(must(&finding, "AGENT_NAME"), name);
    assert_eq!(must(&finding, "PORT"), "6379");
    assert_eq!(must(&finding, "PROCESS_NAME"), "redis-server");
    assert_eq!(must(&finding, "PID"), "4242");
    assert_eq!(must(&finding, "RULE"), "web tier");
    assert_eq!(must(&finding, "SEVERITY"), "critical");
    assert!(!must(&finding, "REQUEST_ID").is_empty());
    assert!(!must(&finding, "MACHINE_IP").is_empty());
    assert_eq!(must(&finding, "PRIORITY"), "3", "critical: error");
    assert_eq!(field(&finding, "REASON"), None);
    // What docs/events.md tells operators to type finds it.
    let query = Command::new("journalctl")
        .args(["-o", "json", "--no-pager"])
        .arg(format!("--since=@{since}"))
        .arg(format!("MESSAGE_ID={}", message_id::PORT_UNEXPECTED))
        .arg("SEVERITY=critical")
        .arg(format!("_PID={pid}"))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&query.stdout)
            .lines()
            .filter(|l| l.starts_with('{'))
            .count(),
        1
    );
}
