//! Build script: sets `CWP_PORTWATCH_GIT_COMMIT`, the commit `--version` reports.
//!
//! Order: the `CWP_PORTWATCH_GIT_COMMIT` environment variable (a package build from a tarball
//! may know the commit), else `git rev-parse --short=12 HEAD`, else "unknown". Whatever git
//! prints is checked (hex only, bounded length) before it reaches the binary, and no failure here
//! ever fails the build: a version string is not worth a broken build.

use std::path::PathBuf;
use std::process::Command;

const VAR: &str = "CWP_PORTWATCH_GIT_COMMIT";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed={VAR}");
    let commit = std::env::var(VAR)
        .ok()
        .and_then(|c| valid(&c))
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env={VAR}={commit}");
}

/// A commit id as a short lowercase hex string of 7 to 40 characters, or nothing.
fn valid(text: &str) -> Option<String> {
    let text = text.trim();
    let ok = (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| text.to_ascii_lowercase())
}

/// Runs git in the manifest's folder; `None` when git is missing or this is not a checkout.
fn git(args: &[&str]) -> Option<String> {
    let dir = std::env::var_os("CARGO_MANIFEST_DIR")?;
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    if !out.status.success() || out.stdout.len() > 4096 {
        return None;
    }
    String::from_utf8(out.stdout)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// The checked-out commit, and a rerun trigger on the files that move when it changes (HEAD,
/// the branch it points at, packed-refs), so a new commit rebuilds without rebuilding always.
fn git_commit() -> Option<String> {
    // Only this crate's own checkout: a source tarball unpacked inside some other repository
    // (a distribution's packaging tree) must not report that repository's commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR")?);
    if top.canonicalize().ok()? != manifest.canonicalize().ok()? {
        return None;
    }
    let commit = valid(&git(&["rev-parse", "--short=12", "HEAD"])?)?;
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name])
            && PathBuf::from(&path).exists()
        {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(commit)
}
