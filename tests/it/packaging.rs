//! What the packages ship, checked without building one (`scripts/package.sh` and CI build,
//! install and purge the real `.deb`): `--version` names the commit, the packaged
//! `/etc/cwp-portwatch/config.toml` makes `check` name exactly what the operator still has to
//! fill in, and the hidden `generate` command writes the man pages and completions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::support::app::{App, Finished, run_within};
use crate::support::uuid;

const LIMIT: Duration = Duration::from_secs(10);
const PACKAGED_CONFIG: &str = include_str!("../../packaging/config.toml");

/// The packaged config in its own folder (as in /etc/cwp-portwatch), nothing else there yet.
fn installed(app: &App) -> PathBuf {
    let etc = app.path().join("etc");
    std::fs::create_dir(&etc).unwrap();
    let config = etc.join("config.toml");
    std::fs::write(&config, PACKAGED_CONFIG).unwrap();
    config
}

fn check(app: &App, config: &Path, creds: Option<&Path>) -> Finished {
    let mut cmd = app.command(&["check", "--config"]);
    cmd.arg(config);
    if let Some(dir) = creds {
        cmd.env("CREDENTIALS_DIRECTORY", dir);
    }
    run_within(cmd, LIMIT)
}

#[test]
fn version_names_the_package_version_and_the_git_commit() {
    let app = App::new();
    let out = run_within(app.command(&["--version"]), LIMIT);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let git = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    assert_eq!(
        out.stdout.trim(),
        format!("cwp-portwatch {} (commit {git})", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_on_the_packaged_config_names_only_the_watchlist_and_the_credentials() {
    let app = App::new();
    let config = installed(&app);
    let out = check(&app, &config, None);
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let problems: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| !l.ends_with("problem(s) found"))
        .collect();
    assert_eq!(problems.len(), 2, "{}", out.stderr);
    assert!(problems[0].contains("watchlist.toml"), "{}", out.stderr);
    assert!(problems[1].starts_with("credentials:"), "{}", out.stderr);
    assert!(out.stderr.contains("2 problem(s) found"), "{}", out.stderr);
}

#[test]
fn the_packaged_config_passes_check_once_both_are_filled_in() {
    let app = App::new();
    let config = installed(&app);
    let etc = config.parent().unwrap();
    std::fs::write(
        etc.join("watchlist.toml"),
        format!("[[agent]]\nuuid = \"{}\"\n", uuid(1)),
    )
    .unwrap();
    let creds = app.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("secret_id"), "AKIDpackaged").unwrap();
    std::fs::write(creds.join("secret_key"), "packaged-secret-key").unwrap();
    let out = check(&app, &config, Some(&creds));
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("systemd"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("packaged-secret-key"),
        "{}",
        out.stdout
    );
}

#[test]
fn generate_writes_man_pages_and_completions() {
    let app = App::new();
    let dir = app.path().join("gen");
    for what in ["man", "completions"] {
        let mut cmd = app.command(&["generate", what]);
        cmd.arg(dir.join(what));
        let out = run_within(cmd, LIMIT);
        assert_eq!(out.code(), Some(0), "{}", out.stderr);
    }
    let page = std::fs::read_to_string(dir.join("man/cwp-portwatch.1")).unwrap();
    assert!(page.contains(".TH cwp-portwatch 1"), "{page}");
    for sub in ["run", "check", "once", "status"] {
        assert!(page.contains(sub), "{sub} not in {page}");
    }
    assert!(dir.join("man/cwp-portwatch-check.1").is_file());
    assert!(dir.join("man/cwp-portwatch.toml.5").is_file());
    let bash = std::fs::read_to_string(dir.join("completions/cwp-portwatch.bash")).unwrap();
    assert!(bash.contains("check"), "{bash}");
    assert!(dir.join("completions/_cwp-portwatch").is_file());
    assert!(dir.join("completions/cwp-portwatch.fish").is_file());
    // Again into the same folder: refused with a hint, files untouched, no panic.
    let mut cmd = app.command(&["generate", "man"]);
    cmd.arg(dir.join("man"));
    let again = run_within(cmd, LIMIT);
    assert_eq!(again.code(), Some(1), "{}", again.stderr);
    assert!(
        again.stderr.contains("new, empty folder"),
        "{}",
        again.stderr
    );
    assert!(!again.stderr.contains("panicked"), "{}", again.stderr);
}
