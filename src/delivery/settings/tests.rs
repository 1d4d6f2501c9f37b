//! [`super::resolve`] against real files, and [`super::check_url`].

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::ExposeSecret;

use super::*;
use crate::delivery::select::default_selectors;

const WECOM: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=0d9f7b1c-KEY-1234";

fn sink(kind: SinkKind, url: UrlSource, secret_file: Option<PathBuf>) -> SinkSettings {
    SinkSettings {
        name: "ops".into(),
        kind,
        url,
        secret_file,
        events: default_selectors(),
        min_severity: Severity::Warning,
        max_age: DEFAULT_MAX_AGE,
        per_minute: kind.default_per_minute(),
        outbox_limit: DEFAULT_OUTBOX_LIMIT,
    }
}

/// A file of `mode` holding `content`.
fn file(dir: &Path, name: &str, content: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn no_env() -> Environment {
    Environment::from_pairs([("HOME", "/nowhere")])
}

#[test]
fn urls_and_secrets_are_read_from_private_files() {
    let dir = tempfile::tempdir().unwrap();
    let url = file(dir.path(), "url", &format!("\u{feff}{WECOM}\n"), 0o600);
    let resolved = resolve_with(
        &sink(SinkKind::Wecom, UrlSource::File(url), None),
        &no_env(),
    )
    .unwrap();
    assert_eq!(resolved.url.expose_secret(), WECOM);
    assert!(resolved.secret.is_none());
    // The Debug text shows what the sink is, never what it holds.
    let debug = format!("{resolved:?}");
    assert!(debug.contains("ops") && debug.contains("wecom"), "{debug}");
    assert!(!debug.contains("KEY"), "{debug}");

    let secret = file(dir.path(), "secret", "SEC0123456789abcdef\n", 0o640);
    let url = file(
        dir.path(),
        "ding",
        "https://oapi.dingtalk.com/robot/send?access_token=TOKEN",
        0o400,
    );
    let resolved = resolve_with(
        &sink(SinkKind::Dingtalk, UrlSource::File(url), Some(secret)),
        &no_env(),
    )
    .unwrap();
    assert_eq!(
        resolved
            .secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned()),
        Some("SEC0123456789abcdef".to_owned())
    );

    let inline = url::Url::parse("http://127.0.0.1:9093/").unwrap();
    let resolved = resolve_with(
        &sink(SinkKind::Alertmanager, UrlSource::Inline(inline), None),
        &no_env(),
    )
    .unwrap();
    assert_eq!(resolved.url.expose_secret(), "http://127.0.0.1:9093/");
}

#[test]
fn systemd_credentials_are_read_from_the_credentials_directory() {
    let dir = tempfile::tempdir().unwrap();
    file(dir.path(), "wecom_url", WECOM, 0o400);
    let settings = sink(
        SinkKind::Wecom,
        UrlSource::File(PathBuf::from("%d/wecom_url")),
        None,
    );
    let env = Environment::from_pairs([("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
    let resolved = resolve_with(&settings, &env).unwrap();
    assert_eq!(resolved.url.expose_secret(), WECOM);

    let e = resolve_with(&settings, &no_env()).unwrap_err();
    assert_eq!(e.code(), "SinkError.NoCredentialsDirectory");
    let text = e.to_string();
    assert!(text.contains("LoadCredential=wecom_url:"), "{text}");
    assert!(
        text.starts_with("sink ops: `url_file` = \"%d/wecom_url\""),
        "{text}"
    );
    // A credential not loaded: the file named in the folder.
    let empty = tempfile::tempdir().unwrap();
    let env = Environment::from_pairs([("CREDENTIALS_DIRECTORY", empty.path().to_str().unwrap())]);
    let e = resolve_with(&settings, &env).unwrap_err();
    assert_eq!(e.code(), "SinkError.Unreadable");
    assert!(e.to_string().contains("wecom_url"), "{e}");
    assert!(e.to_string().contains("does not exist"), "{e}");
}

#[test]
fn unusable_files_are_named_and_their_content_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let resolve_url = |kind: SinkKind, path: PathBuf| {
        resolve_with(&sink(kind, UrlSource::File(path), None), &no_env()).unwrap_err()
    };
    let cases: Vec<(SinkKind, PathBuf, &str, &str)> = vec![
        (
            SinkKind::Slack,
            dir.path().join("missing"),
            "SinkError.Unreadable",
            "does not exist or is empty",
        ),
        (
            SinkKind::Slack,
            file(dir.path(), "blank", " \n", 0o600),
            "SinkError.Unreadable",
            "does not exist or is empty",
        ),
        (
            SinkKind::Slack,
            dir.path().to_path_buf(),
            "SinkError.Unreadable",
            "directory",
        ),
        (
            SinkKind::Wecom,
            file(dir.path(), "open", WECOM, 0o644),
            "SinkError.Unreadable",
            "readable by every user",
        ),
        (
            SinkKind::Wecom,
            file(dir.path(), "big", &"K".repeat(70 * 1024), 0o600),
            "SinkError.Unreadable",
            "larger than 64 KiB",
        ),
        (
            SinkKind::Wecom,
            file(dir.path(), "words", "KEY is\nsomething else KEY", 0o600),
            "SinkError.Invalid",
            "whitespace or control",
        ),
        (
            SinkKind::Wecom,
            file(dir.path(), "nourl", "KEY-not-a-url", 0o600),
            "SinkError.Invalid",
            "is not a URL",
        ),
        (
            SinkKind::Wecom,
            file(
                dir.path(),
                "plain",
                "http://qyapi.weixin.qq.com/send?key=KEY",
                0o600,
            ),
            "SinkError.Invalid",
            "unencrypted",
        ),
        (
            SinkKind::Webhook,
            file(
                dir.path(),
                "userinfo",
                "https://me:KEY@hooks.example/",
                0o600,
            ),
            "SinkError.Invalid",
            "user or password",
        ),
    ];
    for (kind, path, code, says) in cases {
        let e = resolve_url(kind, path.clone());
        let text = e.to_string();
        assert_eq!(e.code(), code, "{text}");
        assert!(text.contains(says), "{text}");
        assert!(text.contains("sink ops: `url_file`"), "{text}");
        assert!(!text.contains("KEY"), "{text}");
    }
    // http:// to loopback is fine for a robot (a local relay, the tests' receivers).
    let local = file(
        dir.path(),
        "local",
        "http://127.0.0.1:8080/send?key=K",
        0o600,
    );
    assert!(
        resolve_with(
            &sink(SinkKind::Wecom, UrlSource::File(local), None),
            &no_env()
        )
        .is_ok()
    );
    // A secret that is not one.
    let url = file(
        dir.path(),
        "ding",
        "https://oapi.dingtalk.com/robot/send?t=1",
        0o600,
    );
    let secret = file(dir.path(), "sec", "\"SECKEY\"", 0o600);
    let e = resolve_with(
        &sink(SinkKind::Dingtalk, UrlSource::File(url), Some(secret)),
        &no_env(),
    )
    .unwrap_err();
    assert_eq!(e.code(), "SinkError.Invalid");
    assert!(e.to_string().contains("`secret_file`"), "{e}");
    assert!(e.to_string().contains("in quotes"), "{e}");
    assert!(!e.to_string().contains("SECKEY"), "{e}");
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fifo");
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = resolve_with(
        &sink(SinkKind::Slack, UrlSource::File(path), None),
        &no_env(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
}

#[test]
fn check_url_rules() {
    for good in [
        "http://127.0.0.1:9093",
        "https://am.example.com/prefix/",
        "http://[::1]:9093/",
    ] {
        assert!(check_url(good, false).is_ok(), "{good}");
    }
    assert!(check_url("https://hooks.slack.com/services/T/B/X?x=1", true).is_ok());
    for (bad, says) in [
        ("https://h/x?key=1", "has a query"),
        ("https://h/x#frag", "fragment"),
        ("https://u:p@h/", "user or password"),
        ("https://u@h/", "user or password"),
        ("ftp://h/", "scheme `ftp`"),
        ("unix:/run/am.sock", "scheme `unix`"),
        ("h:9093", "scheme"),
        ("not a url", "whitespace"),
        ("http://h/\u{1b}[2J", "control"),
        ("http://", "not a URL"),
    ] {
        let e = check_url(bad, false).unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
    let long = format!("https://h/{}", "a".repeat(MAX_URL_CHARS));
    assert!(
        check_url(&long, true)
            .unwrap_err()
            .contains("longer than 2048")
    );
}

#[test]
fn credential_names() {
    assert_eq!(
        credential_name(Path::new("%d/wecom_url")),
        Some("wecom_url")
    );
    assert_eq!(credential_name(Path::new("/etc/x")), None);
    for good in ["a", "wecom_url", "ding.secret", "x-1@y"] {
        assert!(valid_credential_name(good), "{good}");
    }
    for bad in ["", ".", "..", "a/b", "a b", "ä", &"x".repeat(256)] {
        assert!(!valid_credential_name(bad), "{bad}");
    }
}
