//! The binary's `check` command on valid and invalid files.

use std::path::Path;
use std::process::Command;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"));
    c.env_remove("CREDENTIALS_DIRECTORY")
        .env("TENCENTCLOUD_SECRET_ID", "AKIDcheck")
        .env("TENCENTCLOUD_SECRET_KEY", "super-secret-value-123");
    c
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_accepts_a_valid_config_and_prints_a_summary_without_secrets() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\nname = \"web-01\"\n",
    );
    let cfg = write(d.path(), "config.toml", "watchlist = \"watchlist.toml\"\n");
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("1 agents"), "{stdout}");
    assert!(stdout.contains("20 requests/s"), "{stdout}");
    assert!(stdout.contains("TENCENTCLOUD_SECRET_ID"), "{stdout}");
    assert!(!stdout.contains("super-secret-value-123"));
}

#[test]
fn check_lists_every_problem_with_its_line_and_exits_1() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\n[[agent]]\nuuid = \"not-a-uuid\"\n\n[[agent]]\nuuid = \"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"\n",
    );
    let cfg = write(
        d.path(),
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[api]\nrequests_per_second = 50\nmax_in_flight = 0\n",
    );
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml:3:"), "rps line: {stderr}");
    assert!(
        stderr.contains("config.toml:4:"),
        "max_in_flight line: {stderr}"
    );
}

#[test]
fn check_reports_watchlist_problems_naming_lines() {
    let d = tempfile::tempdir().unwrap();
    write(
        d.path(),
        "watchlist.toml",
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n\n[[agent]]\nuuid = \"not-a-uuid\"\n\n[[agent]]\nuuid = \"6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1\"\n",
    );
    let cfg = write(d.path(), "config.toml", "watchlist = \"watchlist.toml\"\n");
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
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
    let d = tempfile::tempdir().unwrap();
    let cfg = write(d.path(), "config.toml", "watchlist = \"w.toml\"\n[api\n");
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("config.toml:2:"), "{stderr}");
    let out = bin()
        .arg("check")
        .arg("--config")
        .arg(d.path().join("nope.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope.toml"));
}

#[test]
fn usage_errors_exit_2() {
    let out = bin().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
