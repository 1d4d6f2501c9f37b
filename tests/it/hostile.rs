//! Hostile input (issue 5): the real binary's `check` and `run` against broken config and
//! watchlist files. Every case must exit 1 before doing anything, name the file and (where the
//! problem has one) its line:column exactly once, say what is wrong and what to write instead,
//! and never panic. `run` gets credentials, so they are never the problem, and is killed after
//! 5 s: a wrongly accepted file must fail the test, not hang it.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(5);

const GOOD_WATCHLIST: &str = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n";

/// Four valid lines; a case's own `[api]` keys follow on line 5. The endpoint is loopback's
/// discard port, so a wrongly accepted config polls nothing real.
const PREFIX: &str = "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"http://127.0.0.1:9\"\n";

fn bin(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"));
    for var in [
        "CREDENTIALS_DIRECTORY",
        "CWP_PORTWATCH_CONFIG",
        "STATE_DIRECTORY",
        "XDG_STATE_HOME",
        "JOURNAL_STREAM",
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "TENCENTCLOUD_SESSION_TOKEN",
    ] {
        c.env_remove(var);
    }
    c.env("HOME", home)
        .env("TENCENTCLOUD_SECRET_ID", "AKIDhostile")
        .env("TENCENTCLOUD_SECRET_KEY", "hostile-secret-key-456")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

struct Finished {
    /// `None`: still running after [`LIMIT`], killed.
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// Runs the command; kills it after `limit`.
fn finish_within(mut cmd: Command, limit: Duration) -> Finished {
    let mut child = cmd.spawn().expect("the binary starts");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    Finished {
        status,
        stdout: String::from_utf8_lossy(&stdout.join().unwrap()).into_owned(),
        stderr: String::from_utf8_lossy(&stderr.join().unwrap()).into_owned(),
    }
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
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &case.files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let config = path_in(dir.path(), case.config);
        let mut cmd = bin(dir.path());
        cmd.arg(command).arg("--config").arg(&config);
        let out = finish_within(cmd, LIMIT);
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

fn empty_watchlist_case() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("watchlist.toml"), "# nobody yet\n").unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, PREFIX).unwrap();
    (dir, config)
}

#[test]
fn hostile_empty_watchlist_is_valid_for_check() {
    let (dir, config) = empty_watchlist_case();
    let mut cmd = bin(dir.path());
    cmd.arg("check").arg("--config").arg(&config);
    let out = finish_within(cmd, LIMIT);
    assert_eq!(
        out.status.and_then(|s| s.code()),
        Some(0),
        "{}{}",
        out.stdout,
        out.stderr
    );
    assert!(out.stdout.contains("0 agents"), "{}", out.stdout);
    assert!(
        out.stdout.contains("the daemon will idle"),
        "{}",
        out.stdout
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
}

#[test]
fn hostile_empty_watchlist_run_starts_idles_and_stops_on_sigterm() {
    let (dir, config) = empty_watchlist_case();
    let mut cmd = bin(dir.path());
    cmd.arg("run").arg("--config").arg(&config);
    let mut child = cmd.spawn().expect("the binary starts");
    let stdout = drain(child.stdout.take().unwrap());
    let log = Arc::new(Mutex::new(String::new()));
    let reader = {
        let log = log.clone();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        })
    };
    let started = Instant::now();
    while !log.lock().unwrap().contains("daemon_started") && started.elapsed() < LIMIT {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    // The signal handlers are installed right after `daemon_started`; give them a moment.
    thread::sleep(Duration::from_secs(1));
    let early = child.try_wait().unwrap();
    if early.is_none() {
        let pid = libc::pid_t::try_from(child.id()).unwrap();
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    }
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    let _ = stdout.join();
    let log = log.lock().unwrap().clone();
    assert!(
        early.is_none(),
        "`run` exited before SIGTERM with {early:?}: {log}"
    );
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "`run` with an empty watchlist, after SIGTERM ({status:?}; None: still running 5 s \
         later): {log}"
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
    let home = tempfile::tempdir().unwrap();
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
        let out = finish_within(cmd, LIMIT);
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
