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
