//! Hostile input (issue 5): the real binary's `check` and `run` against broken config and
//! watchlist files. Every case must exit 1 before doing anything, name the file and (where the
//! problem has one) its line:column exactly once, say what is wrong and what to write instead,
//! and never panic. `run` gets credentials, so they are never the problem, and is killed after
//! 5 s: a wrongly accepted file must fail the test, not hang it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::app::{self, App, NotifySocket, has_line, run_within};

const LIMIT: Duration = Duration::from_secs(5);

const GOOD_WATCHLIST: &str = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n";

/// Four valid lines; a case's own `[api]` keys follow on line 5. The endpoint is loopback's
/// discard port, so a wrongly accepted config polls nothing real.
const PREFIX: &str = "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"http://127.0.0.1:9\"\n";

/// The binary with `home` as `$HOME` and credentials of its own, so they are never the problem.
fn bin(home: &Path) -> Command {
    let mut c = app::command(home);
    c.env("TENCENTCLOUD_SECRET_ID", "AKIDhostile")
        .env("TENCENTCLOUD_SECRET_KEY", "hostile-secret-key-456");
    c
}

/// Where a problem must be reported.
enum Place {
    /// `file:line:column: `, exactly once.
    At(&'static str, usize, usize),
    /// `file:<line>:<column>: ` for some line and column (random input).
    Somewhere(&'static str),
    /// The file's path; the problem has no place inside it (the file is missing, or a folder).
    File(&'static str),
}

struct Case {
    name: &'static str,
    /// Written into the case's folder (which is also `$HOME`).
    files: Vec<(&'static str, Vec<u8>)>,
    /// Passed as `--config`, relative to the case's folder; "" is the folder itself.
    config: &'static str,
    places: Vec<Place>,
    /// What is wrong and what to write instead.
    needles: Vec<&'static str>,
}

fn path_in(dir: &Path, name: &str) -> PathBuf {
    if name.is_empty() {
        dir.to_path_buf()
    } else {
        dir.join(name)
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so a failure can be reproduced.
fn garbage(len: usize, seed: u64, printable: bool) -> Vec<u8> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let b = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8;
            if printable {
                match b % 97 {
                    96 => b'\n',
                    n => b' ' + n % 95,
                }
            } else {
                b
            }
        })
        .collect()
}

fn config(text: &str) -> (&'static str, Vec<u8>) {
    ("config.toml", text.as_bytes().to_vec())
}

fn watchlist(text: &str) -> (&'static str, Vec<u8>) {
    ("watchlist.toml", text.as_bytes().to_vec())
}

fn cases() -> Vec<Case> {
    let api = |line: &str| config(&format!("{PREFIX}{line}\n"));
    let good = || watchlist(GOOD_WATCHLIST);
    vec![
        Case {
            name: "TOML syntax error",
            files: vec![
                config("watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api\n"),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::At("config.toml", 3, 5)],
            needles: vec!["unclosed table", "expected `]`"],
        },
        Case {
            name: "unknown key at the top level",
            files: vec![
                config(
                    "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\nstate_directory = \"/tmp\"\n",
                ),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::At("config.toml", 3, 1)],
            needles: vec![
                "`state_directory`",
                "`state_dir`",
                "`api`",
                "`poll`",
                "`log`",
            ],
        },
        Case {
            name: "unknown key in [api]",
            files: vec![api("request_per_second = 5"), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 1)],
            needles: vec![
                "`request_per_second`",
                "`requests_per_second`",
                "`max_in_flight`",
                "`timeout`",
            ],
        },
        Case {
            name: "wrong type: requests_per_second = \"fast\"",
            files: vec![api("requests_per_second = \"fast\""), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 23)],
            // What to write instead: a whole number in range, not serde's "expected i64".
            needles: vec!["\"fast\"", "1 to 20"],
        },
        Case {
            name: "requests_per_second = 0",
            files: vec![api("requests_per_second = 0"), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 23)],
            needles: vec!["`requests_per_second` = 0 is out of range", "1 to 20"],
        },
        Case {
            name: "requests_per_second = 21",
            files: vec![api("requests_per_second = 21"), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 23)],
            needles: vec!["`requests_per_second` = 21 is out of range", "1 to 20"],
        },
        Case {
            name: "max_in_flight = 1000",
            files: vec![api("max_in_flight = 1000"), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 17)],
            needles: vec!["`max_in_flight` = 1000 is out of range", "1 to 256"],
        },
        Case {
            name: "duration \"5 parsecs\"",
            files: vec![api("timeout = \"5 parsecs\""), good()],
            config: "config.toml",
            places: vec![Place::At("config.toml", 5, 11)],
            needles: vec!["\"5 parsecs\" is not a duration", "timeout = \"10s\""],
        },
        Case {
            name: "duration \"0s\"",
            files: vec![
                config(
                    "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[poll]\ninterval = \"0s\"\n",
                ),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::At("config.toml", 4, 12)],
            needles: vec!["greater than zero", "interval = \"1m\""],
        },
        Case {
            name: "http:// endpoint to a non-loopback host",
            files: vec![
                config(
                    "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"http://192.0.2.1\"\n",
                ),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::At("config.toml", 4, 12)],
            needles: vec!["not loopback", "use https://"],
        },
        Case {
            name: "missing config file",
            files: vec![good()],
            config: "nope.toml",
            places: vec![Place::File("nope.toml")],
            needles: vec!["no such file", "--config"],
        },
        Case {
            name: "missing watchlist file",
            files: vec![config(
                "watchlist = \"missing.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"http://127.0.0.1:9\"\n",
            )],
            config: "config.toml",
            places: vec![Place::File("missing.toml")],
            needles: vec!["no such file", "`watchlist`"],
        },
        Case {
            name: "a directory given as config",
            files: vec![good()],
            config: "",
            places: vec![Place::File("")],
            needles: vec!["directory", "--config"],
        },
        Case {
            name: "3 MB of random bytes",
            files: vec![
                ("config.toml", garbage(3 << 20, 0x5eed_1234, false)),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::Somewhere("config.toml")],
            needles: vec!["not valid UTF-8"],
        },
        Case {
            name: "3 MB of printable garbage",
            files: vec![("config.toml", garbage(3 << 20, 0xfeed_5678, true)), good()],
            config: "config.toml",
            places: vec![Place::Somewhere("config.toml")],
            needles: vec![],
        },
        Case {
            name: "non-UTF-8 byte in a string",
            files: vec![
                (
                    "config.toml",
                    b"watchlist = \"w\xffatchlist.toml\"\n".to_vec(),
                ),
                good(),
            ],
            config: "config.toml",
            places: vec![Place::At("config.toml", 1, 15)],
            needles: vec!["not valid UTF-8", "0xff", "save it as UTF-8"],
        },
        Case {
            name: "watchlist: invalid Uuid",
            files: vec![
                config(PREFIX),
                watchlist("[[agent]]\nuuid = \"not-a-uuid\"\n"),
            ],
            config: "config.toml",
            places: vec![Place::At("watchlist.toml", 2, 8)],
            needles: vec!["\"not-a-uuid\" is not an agent Uuid", "8-4-4-4-12"],
        },
        Case {
            name: "watchlist: duplicate Uuid",
            files: vec![
                config(PREFIX),
                watchlist(
                    "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\n[[agent]]\nuuid = \"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"\n",
                ),
            ],
            config: "config.toml",
            places: vec![Place::At("watchlist.toml", 5, 8)],
            needles: vec!["line 2 and line 5", "remove one"],
        },
        Case {
            name: "watchlist: unknown key in [[agent]]",
            files: vec![
                config(PREFIX),
                watchlist(&format!("{GOOD_WATCHLIST}hostname = \"web-01\"\n")),
            ],
            config: "config.toml",
            places: vec![Place::At("watchlist.toml", 3, 1)],
            needles: vec!["`hostname`", "`uuid`", "`name`"],
        },
        Case {
            name: "several problems at once: 3 bad Uuids and a bad duration",
            files: vec![
                api("timeout = \"5 parsecs\""),
                watchlist(
                    "[[agent]]\nuuid = \"not-a-uuid\"\n\n[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd\"\n\n[[agent]]\nuuid = \"{6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1}\"\n",
                ),
            ],
            config: "config.toml",
            places: vec![
                Place::At("config.toml", 5, 11),
                Place::At("watchlist.toml", 2, 8),
                Place::At("watchlist.toml", 5, 8),
                Place::At("watchlist.toml", 8, 8),
            ],
            needles: vec!["is not a duration", "is not an agent Uuid"],
        },
    ]
}

/// Is `rest` `<digits>:<digits>: ...`?
fn starts_with_line_column(rest: &str) -> bool {
    let mut parts = rest.splitn(3, ':');
    let number =
        |s: Option<&str>| s.is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()));
    number(parts.next()) && number(parts.next()) && parts.next().is_some_and(|s| s.starts_with(' '))
}

/// Runs every case with `command`; returns one line per failed expectation.
fn failures(command: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for case in cases() {
        let dir = App::new();
        for (name, bytes) in &case.files {
            dir.write(name, bytes);
        }
        let config = path_in(dir.path(), case.config);
        let mut cmd = bin(dir.path());
        cmd.arg(command).arg("--config").arg(&config);
        let out = run_within(cmd, LIMIT);
        let stderr = &out.stderr;
        let mut wrong = Vec::new();
        let mut fail = |what: String| wrong.push(what);
        match out.status {
            None => fail(format!(
                "still running after {LIMIT:?}: the bad input was accepted (killed)"
            )),
            Some(status) if status.code() != Some(1) => {
                fail(format!("exit status {status}, want exit code 1"))
            }
            Some(_) => {}
        }
        if stderr.contains("panicked") {
            fail("panicked".into());
        }
        if stderr.len() > 8 << 10 {
            fail(format!(
                "{} bytes on stderr: the message must not echo the input",
                stderr.len()
            ));
        }
        for place in &case.places {
            match *place {
                Place::At(file, line, column) => {
                    let want = format!("{}:{line}:{column}: ", dir.path().join(file).display());
                    match stderr.matches(&want).count() {
                        1 => {}
                        0 => fail(format!("does not name {want:?}")),
                        n => fail(format!("names {want:?} {n} times, want once")),
                    }
                }
                Place::Somewhere(file) => {
                    let prefix = format!("{}:", dir.path().join(file).display());
                    let placed = stderr
                        .match_indices(&prefix)
                        .filter(|(i, _)| starts_with_line_column(&stderr[i + prefix.len()..]))
                        .count();
                    if placed != 1 {
                        fail(format!(
                            "names {prefix}<line>:<column> {placed} times, want once"
                        ));
                    }
                }
                Place::File(file) => {
                    let want = path_in(dir.path(), file).display().to_string();
                    if !stderr.contains(&want) {
                        fail(format!("does not name the file {want:?}"));
                    }
                }
            }
        }
        let mut seen = std::collections::HashSet::new();
        for line in stderr.lines() {
            let line = line.trim();
            let line = line.strip_prefix("caused by: ").unwrap_or(line);
            if !line.is_empty() && !seen.insert(line) {
                fail(format!("prints the same line twice: {line:?}"));
            }
        }
        for needle in &case.needles {
            if !stderr.contains(needle) {
                fail(format!("does not say {needle:?}"));
            }
        }
        if out.stdout.contains("OK") {
            fail(format!("stdout says OK: {}", out.stdout));
        }
        if !wrong.is_empty() {
            failures.push(format!(
                "`{command}` / {}:\n  - {}\n  stderr:\n    {}",
                case.name,
                wrong.join("\n  - "),
                stderr.trim_end().replace('\n', "\n    ")
            ));
        }
    }
    failures
}

fn assert_no_failures(command: &str) {
    let failures = failures(command);
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn hostile_input_check_exits_1_naming_every_problem() {
    assert_no_failures("check");
}

#[test]
fn hostile_input_run_refuses_to_start() {
    assert_no_failures("run");
}

fn empty_watchlist_case() -> (App, PathBuf) {
    let dir = App::new();
    dir.write("watchlist.toml", "# nobody yet\n");
    let config = dir.write("config.toml", PREFIX);
    (dir, config)
}

#[test]
fn hostile_empty_watchlist_is_valid_for_check() {
    let (dir, config) = empty_watchlist_case();
    let mut cmd = bin(dir.path());
    cmd.arg("check").arg("--config").arg(&config);
    let out = run_within(cmd, LIMIT);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 agents"), "{}", out.stdout);
    assert!(
        out.stdout.contains("the daemon will idle"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[tokio::test]
async fn hostile_empty_watchlist_run_starts_idles_and_stops_on_sigterm() {
    let (dir, config) = empty_watchlist_case();
    // READY=1 comes after the signal handlers are installed; with a watchdog of 0.4 s the
    // main loop then sends a STATUS= every 0.2 s for as long as it runs, and STOPPING=1 when
    // it ends. Two STATUS= after READY=1 without STOPPING=1: it started and idles.
    let mut notify = NotifySocket::bind(dir.path());
    let mut cmd = bin(dir.path());
    cmd.arg("run")
        .arg("--config")
        .arg(&config)
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "400000");
    let mut child = app::Running::spawn(cmd);
    let idling = |r: &[String]| {
        r.iter()
            .position(|m| has_line(m, "READY=1"))
            .is_some_and(|at| r[at + 1..].iter().filter(|m| m.contains("STATUS=")).count() >= 2)
            || r.iter().any(|m| m.contains("STOPPING=1"))
    };
    let seen = notify.wait_for(Duration::from_secs(20), idling).await;
    let received = notify.received().to_vec();
    let early = child.exited();
    if early.is_none() {
        child.signal(libc::SIGTERM);
    }
    let out = child.finish(LIMIT).await;
    let log = out.stderr;
    assert!(
        seen,
        "no READY=1 and two STATUS= after it: {received:?}\n{log}"
    );
    assert!(
        early.is_none() && !received.iter().any(|m| m.contains("STOPPING=1")),
        "`run` ended before SIGTERM ({early:?}): {received:?}\n{log}"
    );
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "`run` with an empty watchlist, after SIGTERM ({:?}; None: still running 5 s \
         later): {log}",
        out.status
    );
    assert!(!log.contains("panicked"), "{log}");
    assert!(log.contains("\"daemon_started\""), "{log}");
    assert!(log.contains("\"agents\":0"), "{log}");
    assert!(log.contains("\"daemon_stopping\""), "{log}");
    // The spec: "An empty watchlist is valid (the daemon idles and says so)."
    assert!(
        log.to_lowercase().contains("idle"),
        "`run` with an empty watchlist must say that it idles: {log}"
    );
}

#[test]
fn hostile_usage_errors_exit_2_and_version_help_exit_0() {
    let home = App::new();
    for (args, want, needle) in [
        (
            &["--frobnicate"][..],
            2,
            "unexpected argument '--frobnicate'",
        ),
        (
            &["check", "--frobnicate"][..],
            2,
            "unexpected argument '--frobnicate'",
        ),
        (
            &["run", "--confg", "x.toml"][..],
            2,
            "unexpected argument '--confg'",
        ),
        (
            &["frobnicate"][..],
            2,
            "unrecognized subcommand 'frobnicate'",
        ),
        (
            &["check", "--config"][..],
            2,
            "a value is required for '--config",
        ),
        (&[][..], 2, "Usage:"),
        (&["--version"][..], 0, env!("CARGO_PKG_VERSION")),
        (&["--help"][..], 0, "check"),
        (&["check", "--help"][..], 0, "--config"),
        (&["run", "--help"][..], 0, "--config"),
    ] {
        let mut cmd = bin(home.path());
        cmd.args(args);
        let out = run_within(cmd, LIMIT);
        let text = format!("{}{}", out.stdout, out.stderr);
        assert_eq!(
            out.status.and_then(|s| s.code()),
            Some(want),
            "{args:?}: {text}"
        );
        assert!(
            text.contains(needle),
            "{args:?} should say {needle:?}: {text}"
        );
        assert!(!text.contains("panicked"), "{args:?}: {text}");
        if want == 0 {
            assert!(out.stderr.is_empty(), "{args:?}: {}", out.stderr);
        }
    }
}

// Issue 8 items 3 and 5 (state_dir): an unusable or unsafe `state_dir` is refused by `check`
// and by `run` before its first poll, with what is wrong and what to do.

/// One bad `state_dir`: its name, the config value, and what the report must say.
struct BadStateDir {
    name: &'static str,
    value: String,
    needles: Vec<&'static str>,
}

/// Every kind of bad `state_dir`, set up in `app`'s folder.
fn bad_state_dirs(app: &App) -> Vec<BadStateDir> {
    use std::os::unix::fs::PermissionsExt;
    let file = app.write("a-file", "not a folder\n");
    let dangling = app.path().join("dangling");
    std::os::unix::fs::symlink(app.path().join("no-such-target"), &dangling).unwrap();
    let shared = app.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o770)).unwrap();
    let world = app.path().join("world");
    std::fs::create_dir(&world).unwrap();
    std::fs::set_permissions(&world, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let text = |p: &Path| p.to_str().unwrap().to_owned();
    vec![
        BadStateDir {
            name: "a regular file",
            value: text(&file),
            needles: vec!["not a folder"],
        },
        BadStateDir {
            name: "a folder under a regular file",
            value: text(&file.join("state")),
            needles: vec!["cannot create"],
        },
        BadStateDir {
            name: "a dangling symlink",
            value: text(&dangling),
            needles: vec!["symbolic link", "no-such-target"],
        },
        BadStateDir {
            name: "a folder under /proc",
            value: "/proc/self".to_owned(),
            needles: vec!["cannot write"],
        },
        BadStateDir {
            name: "a group-writable folder",
            value: text(&shared),
            needles: vec!["writable by other users", "chmod 700"],
        },
        BadStateDir {
            name: "a world-writable sticky folder",
            value: text(&world),
            needles: vec!["writable by other users", "chmod 700"],
        },
    ]
}

/// What every refusal must look like: exit 1, `state_dir` and its value named with what is
/// wrong and what to do, no panic, no "OK".
fn assert_refused(command: &str, case: &BadStateDir, out: &app::Finished) {
    let what = format!(
        "`{command}` with state_dir = {} ({})",
        case.value, case.name
    );
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(1), "{what}: {stderr}");
    assert!(stderr.contains("state_dir"), "{what}: {stderr}");
    assert!(stderr.contains(&case.value), "{what}: {stderr}");
    for needle in &case.needles {
        assert!(
            stderr.contains(needle),
            "{what} should say {needle:?}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(!out.stdout.contains("OK"), "{what}: {}", out.stdout);
}

#[test]
fn hostile_state_dir_check_refuses_an_unusable_or_shared_folder() {
    let app = App::new();
    app.write("watchlist.toml", GOOD_WATCHLIST);
    for case in bad_state_dirs(&app) {
        let config = app.write(
            "config.toml",
            PREFIX.replace(
                "state_dir = \"state\"",
                &format!("state_dir = {:?}", case.value),
            ),
        );
        let mut cmd = bin(app.path());
        cmd.arg("check").arg("--config").arg(&config);
        let out = run_within(cmd, LIMIT);
        assert_refused("check", &case, &out);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_state_dir_run_exits_1_before_any_poll() {
    use crate::support::{start_scenario, steady, uuid};
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let app = App::for_simulator(&sim.endpoint(), &[(uuid(0), "a".to_owned())]);
    for case in bad_state_dirs(&app) {
        app.write(
            "config.toml",
            app::daemon_config(&sim.endpoint()).replace(
                "state_dir = \"state\"",
                &format!("state_dir = {:?}", case.value),
            ),
        );
        let cmd = app.with_config(&["run"]);
        let out = tokio::task::spawn_blocking(move || run_within(cmd, LIMIT))
            .await
            .unwrap();
        assert_refused("run", &case, &out);
        assert!(out.named("daemon_started").is_empty(), "{}", out.stderr);
        assert!(
            sim.stats().log.is_empty(),
            "`run` with state_dir = {} polled before refusing: {}",
            case.value,
            out.stderr
        );
    }
    sim.shutdown().await;
}

/// Issue 8 (class: every file read is bounded): `check --config /dev/zero` reads at most the
/// config's size limit, also when it looks for the watchlist's problems of a config that
/// failed; that second read used to go on until memory ran out.
#[test]
fn hostile_check_of_an_endless_config_reads_a_bounded_amount() {
    use std::os::unix::process::CommandExt;
    /// Address-space ceiling: a regression fails this test, not the machine.
    const CEILING: libc::rlim_t = 2 << 30;
    let app = App::new();
    let mut cmd = bin(app.path());
    cmd.arg("check").arg("--config").arg("/dev/zero");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: CEILING,
                rlim_max: CEILING,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Reaped by wait4 below, which `Child::wait` cannot do: it gives no resource usage.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().unwrap();
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 on our own unreaped child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid);
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.unwrap(), &mut stderr).unwrap();
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 1,
        "{status}: {stderr}"
    );
    // A device is refused before it is read (any endless or huge input file is a problem
    // either way: refused as no regular file, or cut at the size limit).
    assert!(
        stderr.contains("not a regular file") || stderr.contains("larger than 64 MiB"),
        "{stderr}"
    );
    // ru_maxrss is in KiB: the 64 MiB limit (+1 byte) read once, not the address space.
    let peak_mib = usage.ru_maxrss / 1024;
    assert!(peak_mib < 400, "peak {peak_mib} MiB: {stderr}");
}

/// Issue 8 (class: control characters never reach people's terminals): a `state_dir` holding
/// one is refused at its line (it is a typo or an attack, and would be created as written),
/// and `check`'s summary shows every path escaped (a config file may be called anything).
#[test]
fn hostile_control_characters_in_paths_are_refused_or_escaped() {
    let app = App::new();
    app.write("watchlist.toml", GOOD_WATCHLIST);
    let config = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"st\\u001b[2Jate\"\n",
    );
    let mut cmd = bin(app.path());
    cmd.arg("check").arg("--config").arg(&config);
    let out = run_within(cmd, LIMIT);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("config.toml:2:13:"), "{}", out.stderr);
    assert!(out.stderr.contains("control character"), "{}", out.stderr);
    assert!(!out.stderr.contains('\u{1b}'), "{:?}", out.stderr);
    assert!(
        !app.path().join("st\u{1b}[2Jate").exists(),
        "created anyway"
    );

    let odd = app.write(
        "odd\u{1b}]0;pwned\u{7}.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n",
    );
    let mut cmd = bin(app.path());
    cmd.arg("check").arg("--config").arg(&odd);
    let out = run_within(cmd, LIMIT);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        !out.stdout.chars().any(|c| c.is_control() && c != '\n'),
        "{:?}",
        out.stdout
    );
    assert!(out.stdout.contains("odd\\u{1b}]0;pwned"), "{}", out.stdout);
}

// ------------------------------------------------------------------------------------------
// Issue 8, items 4, 11 and 12: values the parser accepted but `run` could not use (huge
// durations, quoted profile values, names that garble output). `check` must reject each one
// at its place, and `run` must refuse to start on it: exit 1, no panic, no event.
// ------------------------------------------------------------------------------------------

/// One value `check` and `run` must both reject.
struct Bad {
    name: &'static str,
    /// Written into the case's folder; the config is always `config.toml`.
    files: Vec<(&'static str, Vec<u8>)>,
    /// `file:line:column` (file relative to the folder), or `file:line` when `column` is 0.
    at: (&'static str, usize, usize),
    /// What is wrong and what to write instead.
    needles: Vec<&'static str>,
}

/// A config of [`PREFIX`] and `rest`, which starts on line 5.
fn bad_config(rest: &str) -> (&'static str, Vec<u8>) {
    config(&format!("{PREFIX}{rest}"))
}

/// A watchlist whose only agent, on lines 1 to 3, is called `name` (TOML source text).
fn named_agent(name: &str) -> (&'static str, Vec<u8>) {
    watchlist(&format!("{GOOD_WATCHLIST}name = \"{name}\"\n"))
}

fn bad_values() -> Vec<Bad> {
    let good = || watchlist(GOOD_WATCHLIST);
    let profile = |rest: &str| {
        bad_config(&format!(
            "[credentials]\nsource = \"profile\"\nprofile_path = \"credentials\"\n{rest}"
        ))
    };
    vec![
        Bad {
            name: "#4 interval = u64::MAX seconds",
            files: vec![
                bad_config("[poll]\ninterval = \"18446744073709551615s\"\n"),
                good(),
            ],
            at: ("config.toml", 6, 12),
            needles: vec!["is out of range", "from 100ms to 24h"],
        },
        Bad {
            name: "#4 collecting_interval too large for humantime",
            files: vec![
                bad_config("[poll]\ncollecting_interval = \"584542046090years\"\n"),
                good(),
            ],
            at: ("config.toml", 6, 23),
            needles: vec!["is out of range", "from 100ms to 24h"],
        },
        Bad {
            name: "#4 timeout = 1000000h",
            files: vec![bad_config("timeout = \"1000000h\"\n"), good()],
            at: ("config.toml", 5, 11),
            needles: vec!["is out of range", "from 100ms to 5m"],
        },
        Bad {
            name: "#4 offline_interval = 1ns",
            files: vec![bad_config("[poll]\noffline_interval = \"1ns\"\n"), good()],
            at: ("config.toml", 6, 20),
            needles: vec!["is out of range", "from 100ms to 24h"],
        },
        Bad {
            name: "#12 a 5 MB agent name",
            files: vec![config(PREFIX), named_agent(&"x".repeat(5 << 20))],
            at: ("watchlist.toml", 3, 8),
            needles: vec!["`name` is 5242880 characters long", "at most 256"],
        },
        Bad {
            name: "#12 U+2028 in an agent name",
            files: vec![config(PREFIX), named_agent("web\u{2028}01")],
            at: ("watchlist.toml", 3, 8),
            needles: vec!["U+2028", "line separator"],
        },
        Bad {
            name: "#12 U+202E in an agent name (escaped in TOML)",
            files: vec![config(PREFIX), named_agent("web-\\u202E10")],
            at: ("watchlist.toml", 3, 8),
            needles: vec!["U+202E", "bidirectional"],
        },
        Bad {
            name: "#12 a C1 control (U+0085) in an agent name",
            files: vec![config(PREFIX), named_agent("web\u{85}01")],
            at: ("watchlist.toml", 3, 8),
            needles: vec!["U+0085", "control character"],
        },
        Bad {
            name: "#12 U+2066 in the profile name",
            files: vec![profile("profile = \"prod\u{2066}\"\n"), good()],
            at: ("config.toml", 8, 11),
            needles: vec!["U+2066", "bidirectional"],
        },
        Bad {
            name: "#12 a role name that is a path",
            files: vec![
                bad_config("[credentials]\nsource = \"cvm-role\"\nrole = \"../admin\"\n"),
                good(),
            ],
            at: ("config.toml", 7, 8),
            needles: vec!["not a CAM role name", "CwpPortwatchRole"],
        },
        Bad {
            name: "#12 a bidi control in the watchlist path",
            files: vec![
                config("watchlist = \"lmth.\u{202e}watchlist.toml\"\nstate_dir = \"state\"\n"),
                good(),
            ],
            at: ("config.toml", 1, 13),
            needles: vec!["U+202E", "bidirectional"],
        },
        Bad {
            name: "#11 a quoted secret in the profile file",
            files: vec![
                profile(""),
                (
                    "credentials",
                    b"[default]\nsecret_id = AKIDquoted\nsecret_key = \"quoted-secret-key-789\"\n"
                        .to_vec(),
                ),
                good(),
            ],
            at: ("credentials", 3, 0),
            needles: vec!["secret_key", "in quotes", "without quotes"],
        },
    ]
}

/// Runs every [`bad_values`] case with `command`; one line per failed expectation.
fn bad_value_failures(command: &str) -> Vec<String> {
    let mut failures = Vec::new();
    for case in bad_values() {
        let dir = App::new();
        for (name, bytes) in &case.files {
            dir.write(name, bytes);
        }
        let mut cmd = bin(dir.path());
        cmd.arg(command).arg("--config").arg(dir.config());
        let out = run_within(cmd, LIMIT);
        let stderr = &out.stderr;
        let mut wrong = Vec::new();
        match out.status {
            None => wrong.push(format!("still running after {LIMIT:?}: accepted (killed)")),
            Some(status) if status.code() != Some(1) => {
                wrong.push(format!("exit status {status}, want exit code 1"))
            }
            Some(_) => {}
        }
        if stderr.contains("panicked") {
            wrong.push("panicked".into());
        }
        if stderr.len() > 8 << 10 {
            wrong.push(format!(
                "{} bytes on stderr: echoes the input",
                stderr.len()
            ));
        }
        if stderr.contains("quoted-secret-key-789") {
            wrong.push("prints the secret key".into());
        }
        if out.events.iter().any(|e| e["event"] == "status_changed") {
            wrong.push("logged a status_changed".into());
        }
        let (file, line, column) = case.at;
        let place = dir.path().join(file).display().to_string();
        let want = match column {
            0 => format!("{place}:{line}"),
            _ => format!("{place}:{line}:{column}: "),
        };
        match stderr.matches(&want).count() {
            1 => {}
            n => wrong.push(format!("names {want:?} {n} times, want once")),
        }
        for needle in &case.needles {
            if !stderr.contains(needle) {
                wrong.push(format!("does not say {needle:?}"));
            }
        }
        if !wrong.is_empty() {
            let shown: String = stderr.chars().take(2000).collect();
            failures.push(format!(
                "`{command}` / {}:\n  - {}\n  stderr:\n    {}",
                case.name,
                wrong.join("\n  - "),
                shown.trim_end().replace('\n', "\n    ")
            ));
        }
    }
    failures
}

#[test]
fn hostile_bad_values_check_rejects_each_at_its_place() {
    let failures = bad_value_failures("check");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hostile_bad_values_run_refuses_to_start() {
    let failures = bad_value_failures("run");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Issue 8 #4 as reported: against a simulator that answers, a huge interval made `run` log a
/// `status_changed` and then panic with no state written. Now it exits 1 before any poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_huge_interval_run_exits_1_before_polling() {
    let sim = crate::support::start_scenario(&crate::support::steady(1, "COMPLETE")).await;
    let app = App::for_simulator(&sim.endpoint(), &app::agents(0..1, "web-01"));
    let config = app::daemon_config(&sim.endpoint()).replacen(
        "interval = \"300ms\"",
        "interval = \"18446744073709551615s\"",
        1,
    );
    app.write("config.toml", config);
    let out = app.daemon(&[]).finish(LIMIT).await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    assert!(out.named("status_changed").is_empty(), "{}", out.stderr);
    assert!(out.stderr.contains("is out of range"), "{}", out.stderr);
    assert_eq!(sim.stats().requests, 0, "polled before refusing");
}
