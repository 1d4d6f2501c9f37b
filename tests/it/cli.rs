//! The binary's `check` command on valid and invalid files.

use std::time::Duration;

use crate::support::app::{App, Finished, run_within};

/// `check` exits at once; a hang is a failure, not a stuck test run.
const LIMIT: Duration = Duration::from_secs(10);

/// The binary with `args`, its own credentials in the environment (the secret must never be
/// printed).
fn run(app: &App, args: &[&str], config: &std::path::Path) -> Finished {
    let mut cmd = app.command(args);
    cmd.arg("--config")
        .arg(config)
        .env("TENCENTCLOUD_SECRET_ID", "AKIDcheck")
        .env("TENCENTCLOUD_SECRET_KEY", "super-secret-value-123");
    run_within(cmd, LIMIT)
}

#[test]
fn check_accepts_a_valid_config_and_prints_a_summary_without_secrets() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"web-01\"\n",
    );
    let cfg = app.write("config.toml", "watchlist = \"watchlist.toml\"\n");
    let out = run(&app, &["check"], &cfg);
    let stdout = &out.stdout;
    assert_eq!(out.code(), Some(0), "{stdout}{}", out.stderr);
    assert!(stdout.contains("1 agents"), "{stdout}");
    assert!(stdout.contains("20 requests/s"), "{stdout}");
    assert!(stdout.contains("TENCENTCLOUD_SECRET_ID"), "{stdout}");
    assert!(!stdout.contains("super-secret-value-123"));
}

#[test]
fn check_lists_every_problem_with_its_line_and_exits_1() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\n[[agent]]\nuuid = \"not-a-uuid\"\n\n[[agent]]\nuuid = \"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"\n",
    );
    let cfg = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[api]\nrequests_per_second = 50\nmax_in_flight = 0\n",
    );
    let out = run(&app, &["check"], &cfg);
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml:3:"), "rps line: {stderr}");
    assert!(
        stderr.contains("config.toml:4:"),
        "max_in_flight line: {stderr}"
    );
}

#[test]
fn check_reports_watchlist_problems_naming_lines() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\n[[agent]]\nuuid = \"not-a-uuid\"\n\n[[agent]]\nuuid = \"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"\n",
    );
    let cfg = app.write("config.toml", "watchlist = \"watchlist.toml\"\n");
    let out = run(&app, &["check"], &cfg);
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("watchlist.toml:5:"),
        "bad uuid line: {stderr}"
    );
    assert!(
        stderr.contains("watchlist.toml:8:"),
        "duplicate line: {stderr}"
    );
    assert!(
        stderr.contains("line 2"),
        "duplicate names the first line: {stderr}"
    );
}

#[test]
fn check_on_a_syntax_error_and_a_missing_file() {
    let app = App::new();
    let cfg = app.write("config.toml", "watchlist = \"w.toml\"\n[api\n");
    let out = run(&app, &["check"], &cfg);
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("config.toml:2:"), "{}", out.stderr);
    let out = run(&app, &["check"], &app.path().join("nope.toml"));
    assert_eq!(out.code(), Some(1));
    assert!(out.stderr.contains("nope.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let app = App::new();
    let out = run_within(app.command(&["frobnicate"]), LIMIT);
    assert_eq!(out.code(), Some(2));
}

/// Each line of an error report without its `error: ` / `caused by: ` prefix.
fn report_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .map(|l| {
            let l = l.trim();
            l.strip_prefix("error: ")
                .or_else(|| l.strip_prefix("caused by: "))
                .unwrap_or(l)
        })
        .filter(|l| !l.is_empty())
        .collect()
}

/// Issue 8 #13: a start-up error once, not `error: X` then `caused by: X` (nor a cause whose
/// text the first line already quoted in full).
#[test]
fn startup_errors_print_each_message_once() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
    );
    let good = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[log]\nformat = \"json\"\n",
    );
    std::fs::create_dir_all(app.path().join("broken/state.json")).unwrap();
    let broken_state = app.write(
        "broken-state.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"broken\"\n",
    );
    let missing = app.path().join("missing.toml");
    let cases: Vec<(&str, &std::path::Path, bool, &str)> = vec![
        // (command, config, with a secret key, text the report must hold exactly once)
        ("run", &good, false, "TENCENTCLOUD_SECRET_KEY is missing"),
        ("once", &good, false, "TENCENTCLOUD_SECRET_KEY is missing"),
        ("run", &missing, true, "missing.toml"),
        ("status", &broken_state, true, "state.json"),
    ];
    for (command, config, with_key, needle) in cases {
        let mut cmd = app.command(&[command]);
        if !with_key {
            cmd.env_remove("TENCENTCLOUD_SECRET_KEY");
        }
        cmd.arg("--config").arg(config);
        let out = run_within(cmd, LIMIT);
        let stderr = out.stderr.clone();
        assert_eq!(out.code(), Some(1), "{command}: {stderr}");
        let lines = report_lines(&stderr);
        let hits = lines.iter().filter(|l| l.contains(needle)).count();
        assert_eq!(hits, 1, "{command}: {needle:?} in {hits} lines:\n{stderr}");
        for (i, a) in lines.iter().enumerate() {
            for (j, b) in lines.iter().enumerate() {
                assert!(
                    i == j || !a.contains(b),
                    "{command}: line {} repeats line {}:\n{stderr}",
                    i + 1,
                    j + 1
                );
            }
        }
    }
}

fn watchlist_of(n: usize) -> String {
    let mut w = String::with_capacity(n * 60);
    for i in 0..n {
        w.push_str(&format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-{i:012x}\"\nname = \"agent-{i}\"\n"
        ));
    }
    w
}

/// No panic text (`panicked`, `Broken pipe` backtrace), no exit 101.
fn assert_quiet_end(what: &str, status: std::process::ExitStatus, stderr: &str, code: i32) {
    assert!(!stderr.contains("panicked"), "{what}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{what}: {stderr}");
    assert_eq!(status.code(), Some(code), "{what}: {stderr}");
}

/// Issue 8 #10: `status … | head -1` ends quietly. The output (5,000 lines) is larger than a
/// pipe holds, so the binary is still writing when the reader goes away.
#[test]
fn status_ends_quietly_when_the_reader_closes_the_pipe() {
    use std::io::{BufRead, BufReader, Read};
    let app = App::new();
    app.write("watchlist.toml", watchlist_of(5000));
    std::fs::create_dir(app.path().join("state")).unwrap();
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n",
    );
    for format in ["text", "json"] {
        let mut child = app
            .with_config(&["status", "--format", format])
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(first.contains("6b6cd843"), "{first}");
        // The reader (and with it the pipe's read end) is gone here, as after `head -1`.
        let mut stderr = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        assert_quiet_end(&format!("status --format {format}"), status, &stderr, 0);
    }
}

/// A stdout whose reader is already gone.
fn closed_pipe() -> std::io::PipeWriter {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer
}

/// A closed stdout is a normal end for `check`: same exit code, no panic.
#[test]
fn check_ends_quietly_on_a_closed_stdout() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
    );
    app.write("config.toml", "watchlist = \"watchlist.toml\"\n");
    let out = app
        .with_config(&["check"])
        .stdout(closed_pipe())
        .output()
        .unwrap();
    assert_quiet_end(
        "check",
        out.status,
        &String::from_utf8_lossy(&out.stderr),
        0,
    );
}

/// `simulate` with a closed stdout (a script read the port and closed the pipe) keeps serving
/// until stopped, then exits 0.
#[test]
fn simulate_keeps_serving_on_a_closed_stdout() {
    use std::io::{Read, Write};
    let app = App::new();
    // The port is chosen here (stdout, where simulate says it, is closed).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = app
        .command(&["simulate", "--listen", &format!("127.0.0.1:{port}")])
        .stdout(closed_pipe())
        .spawn()
        .unwrap();
    // Waits for the signal that it serves (an HTTP answer), not for a fixed time: it writes
    // its first line right after binding, before it can answer anything.
    let deadline = std::time::Instant::now() + LIMIT;
    let answered = loop {
        let exchange = std::net::TcpStream::connect(("127.0.0.1", port)).and_then(|mut s| {
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut answer = String::new();
            s.read_to_string(&mut answer)?;
            Ok(answer)
        });
        match exchange {
            Ok(answer) if answer.starts_with("HTTP/1.1 ") => break true,
            _ if child.try_wait().unwrap().is_some() => break false,
            _ if std::time::Instant::now() > deadline => break false,
            _ => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    let alive = answered && child.try_wait().unwrap().is_none();
    if alive {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(alive, "simulate stopped by itself: {stderr}");
    assert_quiet_end("simulate", out.status, &stderr, 0);
}

// ------------------------------------------------------------------------------------------
// Issue 8, items 7 and 11: `check` accepts exactly what `run` and `once` accept.
// ------------------------------------------------------------------------------------------

/// A config in `app` reading credentials from the profile file `credentials` beside it.
fn profile_config(app: &App) -> std::path::PathBuf {
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
    );
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[credentials]\nsource = \"profile\"\n\
         profile_path = \"credentials\"\n",
    )
}

/// Issue 8 #11: a profile file as Notepad saves it (UTF-8 BOM, CRLF, `;` comments) is read as
/// the SDKs read it; a value in quotes, which used to pass `check` and then fail with
/// `AuthFailure.SecretIdNotFound`, is refused by `check` at its file:line without showing it.
#[test]
fn check_reads_profile_files_as_the_sdks_do_and_refuses_quoted_values() {
    let app = App::new();
    let cfg = profile_config(&app);
    let profile = app.write(
        "credentials",
        "\u{feff}[default]\r\n; written by tccli\r\nsecret_id = AKIDprofile\r\nsecret_key = profile-secret-4711\r\n",
    );
    let out = run(&app, &["check"], &cfg);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("credentials profile file {}", profile.display())),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains("profile-secret-4711"),
        "{}",
        out.stdout
    );

    app.write(
        "credentials",
        "[default]\nsecret_id = AKIDprofile\nsecret_key = \"profile-secret-4711\"\n",
    );
    let out = run(&app, &["check"], &cfg);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains(&format!("{}:3", profile.display()))
            && out.stderr.contains("`secret_key` is in quotes")
            && out.stderr.contains("without quotes"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("profile-secret-4711"),
        "{}",
        out.stderr
    );
}

/// `cmd` with every proxy variable pointing at a closed loopback port: should an endpoint
/// that must be refused ever be used, the request goes nowhere instead of off this machine.
fn no_way_out(cmd: &mut std::process::Command) {
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
}

/// `command` with the app's config and the simulator's credentials (from
/// [`App::with_config`]), run to its end off the async runtime (the simulator needs it);
/// `guarded`: with [`no_way_out`].
async fn run_command(app: &App, command: &'static str, guarded: bool) -> Finished {
    let mut cmd = app.with_config(&[command]);
    if guarded {
        no_way_out(&mut cmd);
    }
    tokio::task::spawn_blocking(move || run_within(cmd, LIMIT))
        .await
        .unwrap()
}

/// Issue 8 #7: `check` accepted `http://[::ffff:127.0.0.1]:PORT` (IPv4-mapped loopback) and
/// `run` refused it. One rule now serves both: `check` and `once` accept it and `once` polls
/// the simulator through it; `check`, `once` and `run` all refuse plain http to a host that is
/// not loopback, at start-up (nothing is sent: the test also routes any request to a closed
/// loopback proxy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_once_agree_on_which_http_endpoints_are_loopback() {
    let sim = crate::support::start_scenario(&crate::support::steady(1, "COMPLETE")).await;
    let endpoint = sim.endpoint();
    let port = endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
    let mapped = format!("http://[::ffff:127.0.0.1]:{port}");
    let app = App::for_simulator(&mapped, &crate::support::app::agents(0..1, "web-01"));
    let out = run_command(&app, "check", false).await;
    assert_eq!(
        out.code(),
        Some(0),
        "check {mapped}: {}{}",
        out.stdout,
        out.stderr
    );
    let out = run_command(&app, "once", false).await;
    let reachable = std::net::TcpStream::connect(format!("[::ffff:127.0.0.1]:{port}")).is_ok();
    if reachable {
        assert_eq!(
            out.code(),
            Some(0),
            "once {mapped}: {}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains("COMPLETE"), "{}", out.stdout);
        assert!(
            sim.stats().requests >= 1,
            "once did not reach the simulator"
        );
    } else {
        // No IPv6 sockets here: the poll fails, but the endpoint itself was not refused.
        assert!(!out.stderr.contains("loopback"), "{}", out.stderr);
    }

    let before = sim.stats().requests;
    for refused in [
        "http://10.0.0.1",
        "http://192.0.2.1:9",
        "http://[::ffff:10.0.0.1]:9",
        "http://[::2]:9",
        "http://localhost.example.com:9",
    ] {
        app.write("config.toml", crate::support::app::daemon_config(refused));
        for command in ["check", "once", "run"] {
            let out = run_command(&app, command, true).await;
            assert_eq!(
                out.code(),
                Some(1),
                "{command} {refused}: {}{}",
                out.stdout,
                out.stderr
            );
            assert!(
                out.stderr.contains("config.toml:4:12: ")
                    && out.stderr.contains("not loopback")
                    && out.stderr.contains("use https://"),
                "{command} {refused}: {}",
                out.stderr
            );
            assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
        }
    }
    assert_eq!(sim.stats().requests, before);
}

// Issue 8 #6: control characters from the API, the state file or a path never reach a
// terminal raw. Every human-readable line is one record, with `\n`, ESC & co. escaped.

/// Characters that must never appear raw in human-readable output (a subset of
/// `cwp_portwatch::escape::is_unsafe`, spelled out so that the test does not trust the code
/// under test).
fn has_raw_control(text: &str) -> bool {
    text.chars().any(|c| {
        (c.is_control() && c != '\n')
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202e}' | '\u{2066}')
    })
}

/// An error code with a line break, ESC sequences, a C1 CSI and bidi controls (no spaces: the
/// scenario file refuses those in a code). The simulator answers it as `Error.Code` and quotes
/// it in `Error.Message`.
const HOSTILE_CODE: &str =
    "FailedOperation.Forged\\n\\u001b[2J\\u001b[31mFORGED\\u009b31m\\u202eevil\\u2028x\\r\\u0007";

/// `once` with `[log] format = "text"`: the `poll_failed` log lines and the printed report
/// carry the hostile code and message escaped, one record per line, no ESC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_escapes_control_characters_from_api_answers() {
    use crate::support::{start_scenario, uuid};
    let sim = start_scenario(&format!(
        "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", error = \"{HOSTILE_CODE}\" }}]\n",
        uuid(0)
    ))
    .await;
    let app = App::for_simulator(&sim.endpoint(), &[(uuid(0), "web-01".to_owned())]);
    app.write(
        "config.toml",
        crate::support::app::daemon_config(&sim.endpoint())
            .replace("format = \"json\"", "format = \"text\""),
    );
    let cmd = app.with_config(&["once", "--format", "text"]);
    let out = tokio::task::spawn_blocking(move || run_within(cmd, Duration::from_secs(30)))
        .await
        .unwrap();
    sim.shutdown().await;
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    // Since the answer decoder checks `Error.Code` (issue 8 #6, decode part), the hostile code
    // is refused as `ClientError.Decode` and never quoted: what reaches the terminal is that
    // failure, one record per line, with nothing raw.
    assert!(
        stderr.contains("poll_failed") && stderr.contains("ClientError.Decode"),
        "the failure is logged: {stderr}"
    );
    assert!(
        !stderr.contains("FORGED"),
        "the hostile code is not quoted: {stderr}"
    );
    assert!(
        !has_raw_control(stderr),
        "raw control in the log: {stderr:?}"
    );
    assert!(
        !has_raw_control(stdout),
        "raw control in the report: {stdout:?}"
    );
    for line in stderr.lines() {
        // Every log line starts with its time, `HH:MM:SS.mmm`, then the level.
        let time = line.get(..12).unwrap_or("");
        assert!(
            time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.',
            "a line that is not a record: {line:?}\n{stderr}"
        );
    }
    assert_eq!(stdout.lines().count(), 1, "one agent, one line: {stdout:?}");
}

/// `status` on a state file whose status and RequestId hold a line break and ESC: one line
/// per agent, escaped, in text; the same value, without raw controls, in JSON.
#[test]
fn status_escapes_control_characters_from_the_state_file() {
    let app = App::new();
    let uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    app.write(
        "watchlist.toml",
        format!("[[agent]]\nuuid = \"{uuid}\"\nname = \"web-01\"\n"),
    );
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n",
    );
    std::fs::create_dir(app.path().join("state")).unwrap();
    let status = "COMPLETE\n\u{1b}[2J\u{9b}1m\u{202e}\u{2028}";
    let request_id = "r-1\r\n\u{1b}]0;pwned\u{7}";
    let state = serde_json::json!({
        "version": 1,
        "agents": { uuid: { "status": status, "request_id": request_id, "seen_at": 1 } }
    });
    app.write("state/state.json", state.to_string());

    let out = run_within(app.with_config(&["status", "--format", "text"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!has_raw_control(&out.stdout), "{:?}", out.stdout);
    assert_eq!(out.stdout.lines().count(), 1, "{:?}", out.stdout);
    assert!(
        out.stdout.contains("COMPLETE\\n\\u{1b}[2J"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("r-1\\r\\n\\u{1b}]0;pwned"),
        "{}",
        out.stdout
    );

    let out = run_within(app.with_config(&["status", "--format", "json"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!has_raw_control(&out.stdout), "{:?}", out.stdout);
    let line: serde_json::Value = serde_json::from_str(out.stdout.trim_end()).unwrap();
    assert_eq!(line["status"], status);
    assert_eq!(line["request_id"], request_id);
}

/// An error that quotes a path with control characters (here: the missing config file's own
/// name) prints it escaped.
#[test]
fn error_reports_escape_control_characters() {
    let app = App::new();
    let missing = app.path().join("no\u{1b}[31mpe\u{202e}.toml");
    for command in ["run", "status", "check"] {
        let out = run_within(
            {
                let mut c = app.command(&[command]);
                c.arg("--config").arg(&missing);
                c
            },
            LIMIT,
        );
        assert_eq!(out.code(), Some(1), "{command}: {}", out.stderr);
        assert!(!has_raw_control(&out.stderr), "{command}: {:?}", out.stderr);
        assert!(
            out.stderr.contains("no\\u{1b}[31mpe"),
            "{command}: {}",
            out.stderr
        );
    }
}

/// Issue 15: `demo` ends by itself (no signal, within its 26 s and a margin) with exit 0 and
/// its summary: one row per bundled agent with the final status its scenario ends at (the
/// table below is read off `config/demo-scenario.toml`, not computed by the crate) and every
/// transition counted, then the totals.
#[test]
fn demo_ends_by_itself_with_its_summary() {
    let app = App::new();
    let out = run_within(app.command(&["demo"]), Duration::from_secs(90));
    assert!(
        out.status.is_some(),
        "demo had to be killed:\n{}",
        out.stdout
    );
    assert_eq!(out.code(), Some(0), "{}\n{}", out.stdout, out.stderr);
    // (name, Uuid, final status, transitions from UNKNOWN on)
    let expected = [
        (
            "web-01",
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1",
            "COMPLETE",
            2,
        ),
        (
            "web-02",
            "1f0e4c2a-3b5d-4e6f-8a9b-0c1d2e3f4a5b",
            "COMPLETE",
            // COMPLETE, COLLECTING at 6 s, COMPLETE at 9 s, COLLECTING at 13 s, COMPLETE at 17 s
            5,
        ),
        ("db-01", "2a1b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "FAILED", 2),
        (
            "db-02",
            "3b2c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e",
            "COMPLETE",
            4,
        ),
        (
            "cache-01",
            "4c3d5e6f-7a8b-4c9d-8e1f-2a3b4c5d6e7f",
            "COMPLETE",
            3,
        ),
        (
            "batch-01",
            "5d4e6f7a-8b9c-4d0e-9f2a-3b4c5d6e7f8a",
            "COMPLETE",
            3,
        ),
        (
            "gone-01",
            "6e5f7a8b-9c0d-4e1f-8a3b-4c5d6e7f8a9b",
            "NOT_FOUND",
            2,
        ),
        (
            "edge-01",
            "7f6a8b9c-0d1e-4f2a-9b4c-5d6e7f8a9b0c",
            "COMPLETE",
            3,
        ),
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.starts_with("agent") && l.ends_with("transitions"))
        .unwrap_or_else(|| panic!("no summary table:\n{}", out.stdout));
    for (i, (name, uuid, status, transitions)) in expected.iter().enumerate() {
        let row: Vec<&str> = lines[header + 1 + i].split_whitespace().collect();
        assert_eq!(
            row,
            [*name, *uuid, *status, &transitions.to_string()],
            "{}",
            out.stdout
        );
    }
    let total: u32 = expected.iter().map(|e| e.3).sum();
    let last = lines.last().unwrap();
    assert!(
        // web-02's port 8080 opens (seen at 9 s) and closes (seen at 17 s).
        last.ends_with(&format!(
            "{total} status changes and 2 ports opened or closed reported."
        )),
        "{last}"
    );
    assert!(last.contains("(0 throttled)"), "{last}");
    // The demo policy flags that python3 (web hosts: ssh and nginx only), then clears it.
    assert!(
        out.stdout
            .contains("Policy (config/demo-policy.toml): 1 unexpected port(s) flagged, 1 cleared."),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("port_unexpected") || out.stdout.contains("port_unexpected"),
        "the finding is logged:\n{}\n{}",
        out.stdout,
        out.stderr
    );
    // What the demo shows is the daemon's events: the simulator's own per-request lines
    // (target `cwp_portwatch::simulator`, info) stay filtered out.
    let both = format!("{}{}", out.stdout, out.stderr);
    assert!(
        !both.contains("cwp_portwatch::simulator"),
        "simulator lines in the demo's output:\n{both}"
    );
}

/// Issue 20 #6: two accounts whose key files hold one SecretId (one quota at Tencent) and
/// which list one watchlist through a symlink passed `check` and started. Both `check` and
/// `run` (the same load) now refuse them at line:column, the SecretId masked, no key shown.
#[test]
fn check_and_run_refuse_accounts_sharing_a_secret_id_or_a_watchlist() {
    const ID: &str = "AKIDsharedBYtwoACCOUNTS0000000000042";
    const KEY: &str = "sharedSecretKeyValue000000000042";
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
    );
    std::os::unix::fs::symlink(
        app.path().join("watchlist.toml"),
        app.path().join("same.toml"),
    )
    .unwrap();
    for (name, value) in [("a.id", ID), ("b.id", ID), ("a.key", KEY), ("b.key", KEY)] {
        let path = app.write(name, value);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let cfg = app.write(
        "config.toml",
        "state_dir = \"state\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"watchlist.toml\"\n\
         [account.credentials]\nsource = \"file\"\nsecret_id_file = \"a.id\"\n\
         secret_key_file = \"a.key\"\n\
         [[account]]\nname = \"stage\"\nwatchlist = \"./same.toml\"\n\
         [account.credentials]\nsource = \"file\"\nsecret_id_file = \"b.id\"\n\
         secret_key_file = \"b.key\"\n",
    );
    for command in ["check", "run"] {
        let out = run(&app, &[command], &cfg);
        let stderr = &out.stderr;
        assert_eq!(out.code(), Some(1), "{command}: {stderr}");
        let at = |line: usize, column: usize| format!("{}:{line}:{column}: ", cfg.display());
        assert!(
            stderr.contains(&format!(
                "{}accounts `prod` (line 5) and `stage` use the same SecretId AKID…0042 (masked)",
                at(12, 1)
            )),
            "{command}: {stderr}"
        );
        assert!(
            stderr.contains(&format!(
                "{}accounts `prod` (line 4) and `stage` use the same watchlist",
                at(11, 13)
            )),
            "{command}: {stderr}"
        );
        for secret in [ID, KEY, "sharedBYtwo"] {
            assert!(
                !stderr.contains(secret),
                "{command} printed {secret}: {stderr}"
            );
            assert!(!out.stdout.contains(secret), "{command} printed {secret}");
        }
    }
}

/// Issue 20 #10: `ports` and `status` read only the default account's files and only listed
/// agents: `inventory.prod.json` existed and `ports --agent` exited 1; a discovery-only
/// account printed nothing. Both now read every account's files and every discovered agent
/// (named as discovery stored it), every line says its account, and `--account` selects one.
#[test]
fn status_and_ports_show_every_account_and_discovered_agents() {
    const LISTED: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    const FOUND: &str = "7c6cd843-6bc1-4011-a74c-dc3fd26a7dd2";
    let app = App::new();
    app.write(
        "watchlist.toml",
        format!("[[agent]]\nuuid = \"{LISTED}\"\nname = \"web-01\"\n"),
    );
    // `prod` is discovery only, with a key of its own.
    app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n\
         [[account]]\nname = \"prod\"\n\
         [account.credentials]\nsource = \"cvm-role\"\n\
         [account.discovery]\nenabled = true\nregions = [\"ap-beijing\"]\n",
    );
    std::fs::create_dir(app.path().join("state")).unwrap();
    let state = |uuid: &str, status: &str| {
        serde_json::json!({
            "version": 1,
            "agents": { uuid: { "status": status, "request_id": "r-1", "seen_at": 1 } }
        })
        .to_string()
    };
    let inventory = |uuid: &str, name: &str, port: u16| {
        serde_json::json!({
            "version": 1,
            "agents": { uuid: {
                "name": name, "fetched_at": 1,
                "snapshot": {
                    "ports": [{ "port": port, "process": "d", "pid": 7 }],
                    "machine_ip": "10.0.0.9", "machine_name": name
                }
            } }
        })
        .to_string()
    };
    app.write("state/state.json", state(LISTED, "COMPLETE"));
    app.write("state/inventory.json", inventory(LISTED, "web-01", 22));
    app.write("state/state.prod.json", state(FOUND, "AGENT_OFFLINE"));
    app.write(
        "state/inventory.prod.json",
        inventory(FOUND, "db-prod", 5432),
    );
    let json = |args: &[&str]| {
        let out = run_within(app.with_config(args), LIMIT);
        assert_eq!(out.code(), Some(0), "{args:?}: {}", out.stderr);
        out.stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|l| {
                let port = l["port"].as_u64().map(|p| p.to_string());
                let last = port.unwrap_or_else(|| l["status"].as_str().unwrap().to_owned());
                format!("{} {} {} {last}", l["account"], l["uuid"], l["agent_name"])
                    .replace('"', "")
            })
            .collect::<Vec<_>>()
    };
    let default_line = format!("default {LISTED} web-01");
    let prod_line = format!("prod {FOUND} db-prod");
    assert_eq!(
        json(&["status", "--format", "json"]),
        [
            format!("{default_line} COMPLETE"),
            format!("{prod_line} AGENT_OFFLINE")
        ]
    );
    assert_eq!(
        json(&["status", "--format", "json", "--account", "prod"]),
        [format!("{prod_line} AGENT_OFFLINE")]
    );
    assert_eq!(
        json(&["ports", "--format", "json"]),
        [format!("{default_line} 22"), format!("{prod_line} 5432")]
    );
    assert_eq!(
        json(&["ports", "--format", "json", "--agent", "db-prod"]),
        [format!("{prod_line} 5432")]
    );
    // Text: the account is the first column.
    let out = run_within(app.with_config(&["ports", "--agent", FOUND]), LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let words: Vec<&str> = out.stdout.split_whitespace().take(4).collect();
    assert_eq!(words, ["prod", FOUND, "db-prod", "5432"], "{}", out.stdout);
    let out = run_within(app.with_config(&["status", "--account", "default"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.lines().count(), 1, "{}", out.stdout);
    assert!(out.stdout.starts_with("default "), "{}", out.stdout);

    // An agent of another account than the one asked for, and an unknown account.
    let out = run_within(
        app.with_config(&["ports", "--account", "default", "--agent", "db-prod"]),
        LIMIT,
    );
    assert_eq!(out.code(), Some(1), "{}", out.stdout);
    assert!(out.stderr.contains("no watched agent"), "{}", out.stderr);
    for command in ["status", "ports"] {
        let out = run_within(app.with_config(&[command, "--account", "prdo"]), LIMIT);
        assert_eq!(out.code(), Some(1), "{command}: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{command}: {}", out.stdout);
        assert!(
            out.stderr
                .contains("no account is named prdo; the configured accounts are: default, prod"),
            "{command}: {}",
            out.stderr
        );
    }

    // A machine that left prod's discovery is kept in its files for `forget_after` but no
    // longer watched: neither command shows it (nor finds it by name).
    app.write(
        "state/discovery.prod.json",
        serde_json::json!({
            "version": 1,
            "machines": { FOUND: { "name": "db-prod", "missing": 3, "left_at": 1 } }
        })
        .to_string(),
    );
    assert_eq!(
        json(&["status", "--format", "json"]),
        [format!("{default_line} COMPLETE")]
    );
    assert_eq!(
        json(&["ports", "--format", "json"]),
        [format!("{default_line} 22")]
    );
    let out = run_within(app.with_config(&["ports", "--agent", "db-prod"]), LIMIT);
    assert_eq!(out.code(), Some(1), "{}", out.stdout);
}

/// Issue 22: `check` validates the policy file named by `[policy] file` (relative to the
/// config's folder) and lists its problems at policy-file:line:col, with the config's own.
#[test]
fn check_validates_the_policy_file_at_its_lines() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
    );
    app.write(
        "policy.toml",
        "default = \"alert\"\n[[rule]]\nname = \"web\"\nallow = [\"443/nginx\"]\n",
    );
    let cfg = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[policy]\nfile = \"policy.toml\"\n",
    );
    let out = run(&app, &["check"], &cfg);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("policy.toml (1 rules, default alert)"),
        "{}",
        out.stdout
    );

    app.write(
        "policy.toml",
        "default = \"deny\"\n[[rule]]\nname = \"db\"\n\
         allow = [\"5-3\", { port = 5432, bind = \"loopback\" }]\n",
    );
    let out = run(&app, &["check"], &cfg);
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(stderr.contains("policy.toml:1:11: `default`"), "{stderr}");
    assert!(
        stderr.contains("policy.toml:4:10: `allow`: the port range"),
        "{stderr}"
    );
    assert!(
        stderr.contains("policy.toml:4:32: `bind` cannot be checked: the yunjing backend"),
        "{stderr}"
    );
    assert!(stderr.contains("3 problem(s) found"), "{stderr}");

    // With a config problem as well, both files' problems are listed.
    let cfg = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[api]\nrequests_per_second = 50\n[policy]\nfile = \"policy.toml\"\n",
    );
    let out = run(&app, &["check"], &cfg);
    let stderr = &out.stderr;
    assert_eq!(out.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml:3:"), "{stderr}");
    assert!(stderr.contains("policy.toml:4:32:"), "{stderr}");
}
