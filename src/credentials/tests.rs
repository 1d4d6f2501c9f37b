//! Unit tests of credential resolution: the chain order, explicit sources, and that no error or
//! `Debug` text shows a secret.

#[test]
fn environment_debug_shows_names_not_values() {
    let env = Environment::from_pairs([("TENCENTCLOUD_SECRET_KEY", "very-secret-value")]);
    let text = format!("{env:?}");
    assert!(text.contains("TENCENTCLOUD_SECRET_KEY"));
    assert!(!text.contains("very-secret-value"));
}

use super::*;
use secrecy::ExposeSecret;

const ID: &str = "AKIDexampleexampleexample";
const KEY: &str = "s3cr3t-key-value-never-shown";

/// A temp folder with `name → content` files.
fn files(entries: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in entries {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

/// An environment with these variables and no system profile file.
fn env(pairs: &[(&str, &str)]) -> Environment {
    Environment::from_pairs(pairs.iter().copied())
        .with_system_profile("/nonexistent/tencentcloud/credentials")
}

fn static_creds(resolved: Resolved) -> (Credentials, CredentialSource) {
    match resolved {
        Resolved::Static(credentials, source) => (credentials, source),
        other => panic!("expected static credentials, got {other:?}"),
    }
}

fn profile_text(id: &str, key: &str) -> String {
    format!(
        "# tccli\n[other]\nsecret_id = nope\n\n[default]\nsecret_id = {id}\nsecret_key = {key}\n"
    )
}

#[test]
fn chain_order_systemd_env_profile_cvm() {
    let systemd = files(&[
        ("secret_id", "AKIDsystemd\n"),
        ("secret_key", "k1\n"),
        ("session_token", "tok\n"),
    ]);
    let home = files(&[(".tencentcloud/credentials", &profile_text("AKIDhome", "k3"))]);
    let system = files(&[("credentials", &profile_text("AKIDsystem", "k4"))]);
    let systemd_dir = systemd.path().to_str().unwrap();
    let home_dir = home.path().to_str().unwrap();
    let env_vars = [
        ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
        ("TENCENTCLOUD_SECRET_KEY", "k2"),
    ];

    let all = Environment::from_pairs(
        [("CREDENTIALS_DIRECTORY", systemd_dir), ("HOME", home_dir)]
            .into_iter()
            .chain(env_vars),
    )
    .with_system_profile(system.path().join("credentials"));
    let (creds, source) = static_creds(resolve(&CredentialSettings::Chain, &all).unwrap());
    assert_eq!(source, CredentialSource::Systemd);
    assert_eq!(creds.secret_id, "AKIDsystemd");
    assert_eq!(creds.secret_key.expose_secret(), "k1");
    assert_eq!(creds.token.unwrap().expose_secret(), "tok");

    let no_systemd = Environment::from_pairs([("HOME", home_dir)].into_iter().chain(env_vars))
        .with_system_profile(system.path().join("credentials"));
    let (creds, source) = static_creds(resolve(&CredentialSettings::Chain, &no_systemd).unwrap());
    assert_eq!(
        (creds.secret_id.as_str(), source),
        ("AKIDenv", CredentialSource::Env)
    );
    assert!(creds.token.is_none());

    let home_only =
        env(&[("HOME", home_dir)]).with_system_profile(system.path().join("credentials"));
    let (creds, source) = static_creds(resolve(&CredentialSettings::Chain, &home_only).unwrap());
    assert_eq!(creds.secret_id, "AKIDhome");
    assert_eq!(
        source,
        CredentialSource::Profile(home.path().join(".tencentcloud/credentials"))
    );

    let system_only = env(&[("HOME", "/nonexistent/home")])
        .with_system_profile(system.path().join("credentials"));
    let (creds, source) = static_creds(resolve(&CredentialSettings::Chain, &system_only).unwrap());
    assert_eq!(creds.secret_id, "AKIDsystem");
    assert_eq!(
        source.to_string(),
        format!(
            "profile file {}",
            system.path().join("credentials").display()
        )
    );

    match resolve(&CredentialSettings::Chain, &env(&[])).unwrap() {
        Resolved::CvmRole {
            role,
            metadata_endpoint,
        } => {
            assert_eq!(role, None);
            assert_eq!(metadata_endpoint.as_str(), DEFAULT_METADATA_ENDPOINT);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn systemd_directory_without_our_files_falls_through() {
    let dir = files(&[("other_credential", "x")]);
    let env = env(&[
        ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
        ("TENCENTCLOUD_SECRET_ID", ID),
        ("TENCENTCLOUD_SECRET_KEY", KEY),
    ]);
    let (_, source) = static_creds(resolve(&CredentialSettings::Chain, &env).unwrap());
    assert_eq!(source, CredentialSource::Env);
}

#[test]
fn incomplete_sources_are_errors_not_fall_throughs() {
    let systemd = files(&[("secret_id", ID)]);
    let env_full = [
        ("TENCENTCLOUD_SECRET_ID", ID),
        ("TENCENTCLOUD_SECRET_KEY", KEY),
    ];
    let with_systemd = Environment::from_pairs(
        [("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]
            .into_iter()
            .chain(env_full),
    );
    let error = resolve(&CredentialSettings::Chain, &with_systemd).unwrap_err();
    assert_eq!(error.code(), "CredentialError.Incomplete");
    assert!(
        error.to_string().contains("secret_key is missing"),
        "{error}"
    );
    assert!(
        error.to_string().contains("LoadCredential=secret_key"),
        "{error}"
    );

    let systemd = files(&[("secret_key", KEY)]);
    let error = resolve(
        &CredentialSettings::Chain,
        &env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("secret_id is missing"),
        "{error}"
    );

    let error = resolve(
        &CredentialSettings::Chain,
        &env(&[("TENCENTCLOUD_SECRET_ID", ID)]),
    )
    .unwrap_err();
    assert_eq!(error.code(), "CredentialError.Incomplete");
    assert!(
        error
            .to_string()
            .contains("TENCENTCLOUD_SECRET_KEY is missing"),
        "{error}"
    );

    let error = resolve(
        &CredentialSettings::Chain,
        &env(&[
            ("TENCENTCLOUD_SECRET_KEY", KEY),
            ("TENCENTCLOUD_SECRET_ID", "  "),
        ]),
    )
    .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("TENCENTCLOUD_SECRET_ID is missing"),
        "{error}"
    );
    assert!(!error.to_string().contains(KEY));

    let home = files(&[(
        ".tencentcloud/credentials",
        "[default]\nsecret_id = AKIDx\n",
    )]);
    let error = resolve(
        &CredentialSettings::Chain,
        &env(&[("HOME", home.path().to_str().unwrap())]),
    )
    .unwrap_err();
    assert_eq!(error.code(), "CredentialError.Incomplete");
    assert!(
        error
            .to_string()
            .contains("section [default]: secret_key is missing"),
        "{error}"
    );
}

#[test]
fn values_are_trimmed_and_checked() {
    let systemd = files(&[
        ("secret_id", &format!("  {ID}\r\n")),
        ("secret_key", &format!("{KEY}\n\n")),
    ]);
    let env = env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]);
    let (creds, _) = static_creds(resolve(&CredentialSettings::Systemd, &env).unwrap());
    assert_eq!(creds.secret_id, ID);
    assert_eq!(creds.secret_key.expose_secret(), KEY);

    let error = resolve(
        &CredentialSettings::Env,
        &super::tests::env(&[
            ("TENCENTCLOUD_SECRET_ID", ID),
            ("TENCENTCLOUD_SECRET_KEY", "two words"),
        ]),
    )
    .unwrap_err();
    assert_eq!(error.code(), "CredentialError.Invalid");
    assert!(
        error
            .to_string()
            .contains("the SecretKey contains whitespace")
    );
    assert!(!error.to_string().contains("two words"));
}

#[test]
fn explicit_sources() {
    let error = resolve(&CredentialSettings::Env, &env(&[])).unwrap_err();
    assert_eq!(error.code(), "CredentialError.NotFound");
    assert!(
        error
            .to_string()
            .contains("TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set")
    );

    let error = resolve(&CredentialSettings::Systemd, &env(&[])).unwrap_err();
    assert_eq!(error.code(), "CredentialError.NotFound");
    assert!(
        error
            .to_string()
            .contains("$CREDENTIALS_DIRECTORY is not set"),
        "{error}"
    );

    // Explicit systemd ignores the environment even when it is set.
    let env_set = env(&[
        ("TENCENTCLOUD_SECRET_ID", ID),
        ("TENCENTCLOUD_SECRET_KEY", KEY),
    ]);
    assert!(resolve(&CredentialSettings::Systemd, &env_set).is_err());

    let dir = files(&[(
        "creds.ini",
        "[prod]\nsecret_id=AKIDprod\nsecret_key : kprod\ntoken = t\n[default]\nsecret_id = AKIDdef\nsecret_key = kdef\n",
    )]);
    let path = dir.path().join("creds.ini");
    let settings = CredentialSettings::Profile {
        path: Some(path.clone()),
        profile: "prod".into(),
    };
    let (creds, source) = static_creds(resolve(&settings, &env(&[])).unwrap());
    assert_eq!(creds.secret_id, "AKIDprod");
    assert_eq!(creds.secret_key.expose_secret(), "kprod");
    assert_eq!(creds.token.unwrap().expose_secret(), "t");
    assert_eq!(source, CredentialSource::Profile(path.clone()));

    let settings = CredentialSettings::Profile {
        path: Some(path.clone()),
        profile: "staging".into(),
    };
    let error = resolve(&settings, &env(&[])).unwrap_err();
    assert_eq!(error.code(), "CredentialError.NotFound");
    assert!(error.to_string().contains("[staging]"), "{error}");

    let settings = CredentialSettings::File {
        secret_id_file: dir.path().join("id"),
        secret_key_file: dir.path().join("key"),
    };
    let error = resolve(&settings, &env(&[])).unwrap_err();
    assert_eq!(error.code(), "CredentialError.Incomplete");
    assert!(error.to_string().contains("secret_id_file"), "{error}");
    std::fs::write(dir.path().join("id"), format!("{ID}\n")).unwrap();
    std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
    let (creds, source) = static_creds(resolve(&settings, &env(&[])).unwrap());
    assert_eq!(creds.secret_id, ID);
    assert!(source.to_string().starts_with("files "));

    let role = CredentialSettings::CvmRole {
        role: Some("R".into()),
        metadata_endpoint: reqwest::Url::parse("http://127.0.0.1:1/").unwrap(),
    };
    assert!(
        matches!(resolve(&role, &env(&[])).unwrap(), Resolved::CvmRole { role: Some(r), .. } if r == "R")
    );
}

#[test]
fn unreadable_files_are_reported_without_content() {
    let dir = files(&[]);
    std::fs::create_dir(dir.path().join("secret_id")).unwrap();
    std::fs::write(dir.path().join("secret_key"), KEY).unwrap();
    let error = resolve(
        &CredentialSettings::Systemd,
        &env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]),
    )
    .unwrap_err();
    assert_eq!(error.code(), "CredentialError.Unreadable");
    assert!(error.to_string().contains("secret_id"), "{error}");

    let dir = files(&[("secret_key", KEY)]);
    std::fs::write(dir.path().join("secret_id"), b"AKID\xff\xfe").unwrap();
    let error = resolve(
        &CredentialSettings::Systemd,
        &env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]),
    )
    .unwrap_err();
    assert_eq!(error.code(), "CredentialError.Unreadable");
    assert!(error.to_string().contains("not UTF-8"));
}

#[test]
fn debug_never_shows_secrets() {
    let creds = Credentials {
        secret_id: ID.into(),
        secret_key: SecretString::from(KEY),
        token: Some(SecretString::from("session-token-value")),
    };
    let resolved = Resolved::Static(creds.clone(), CredentialSource::Env);
    for text in [
        format!("{creds:?}"),
        format!("{creds:#?}"),
        format!("{resolved:?}"),
    ] {
        assert!(text.contains(ID));
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains("session-token-value"), "{text}");
        assert!(text.contains("[redacted]"));
    }
}

#[test]
fn environment_snapshot() {
    let env = Environment::from_pairs([("A", "1")]);
    assert_eq!(env.get("A"), Some("1"));
    assert_eq!(env.get("B"), None);
    let process = Environment::from_process();
    assert_eq!(process.get("PATH").is_some(), std::env::var("PATH").is_ok());
}

#[test]
fn source_display() {
    assert_eq!(
        CredentialSource::Systemd.to_string(),
        "systemd credentials ($CREDENTIALS_DIRECTORY)"
    );
    assert_eq!(
        CredentialSource::Env.to_string(),
        "environment (TENCENTCLOUD_SECRET_ID)"
    );
    assert_eq!(
        CredentialSource::Profile("/root/.tencentcloud/credentials".into()).to_string(),
        "profile file /root/.tencentcloud/credentials"
    );
}

/// `path`'s `[default]` (or `profile`) credentials.
fn from_profile_file(
    text: &[u8],
    profile: &str,
) -> (tempfile::TempDir, Result<Resolved, CredentialError>) {
    let dir = files(&[]);
    let path = dir.path().join("credentials");
    std::fs::write(&path, text).unwrap();
    let settings = CredentialSettings::Profile {
        path: Some(path),
        profile: profile.into(),
    };
    let resolved = resolve(&settings, &env(&[]));
    (dir, resolved)
}

/// Issue 8 #11: what the official SDKs read is read the same way. Python's configparser (used
/// by tencentcloud-sdk-python): `=` or `:`, keys in any case, values and lines trimmed, `#`
/// and `;` full-line comments, CRLF. A UTF-8 BOM (Notepad's) is skipped, as the Go SDK's INI
/// reader does; it used to hide the first `[default]` header.
#[test]
fn profile_files_are_read_as_the_sdks_read_them() {
    for text in [
        format!("\u{feff}[default]\nsecret_id = {ID}\nsecret_key = {KEY}\n"),
        format!("\u{feff}[default]\r\nsecret_id={ID}\r\nsecret_key={KEY}\r\n"),
        format!(
            "; tccli\n# comment\n  [default]  \n\tSECRET_ID : {ID}  \n   # indented comment\n  \
             Secret_Key =   {KEY}\t\n\n[other]\nsecret_id = \"quoted elsewhere is not read\"\n"
        ),
    ] {
        let (_dir, resolved) = from_profile_file(text.as_bytes(), "default");
        let (creds, _) = static_creds(resolved.unwrap_or_else(|e| panic!("{text:?}: {e}")));
        assert_eq!(creds.secret_id, ID, "{text:?}");
        assert_eq!(creds.secret_key.expose_secret(), KEY, "{text:?}");
    }
}

/// Issue 8 #11: quoted values passed `check` and then failed with
/// `AuthFailure.SecretIdNotFound` (configparser keeps quotes as part of the value; one Go
/// reader strips them, another keeps them). Such mistakes in the section read are now refused
/// with the file's path and line, what to write, and never the value.
#[test]
fn profile_mistakes_are_refused_with_their_line() {
    let cases: [(&str, &str, &[&str]); 9] = [
        (
            "[default]\nsecret_id = \"AKIDquoted\"\nsecret_key = kx\n",
            ":2",
            &[
                "`secret_id` is in quotes",
                "secret_id = AKID… without quotes",
            ],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key = 'sk-quoted-secret'\n",
            ":3",
            &["`secret_key` is in quotes", "without quotes"],
        ),
        (
            "\u{feff}[default]\nsecret_id = AKIDx\nsecret_key = kx\ntoken = \"sk-quoted-secret\"\n",
            ":4",
            &["`token` is in quotes"],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key = sk-quoted-secret   # prod key\n",
            ":3",
            &["comment after the value", "own line"],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key = sk-quoted-secret ; prod key\n",
            ":3",
            &["comment after the value"],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key = kx\nsecret_id = AKIDy\n",
            ":4",
            &["`secret_id` is set twice", "line 2 and line 4", "keep one"],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key =\n   sk-quoted-secret\n",
            ":4",
            &["continues", "same line as its key"],
        ),
        (
            "[default]\nsecret_id = AKIDx\nsecret_key\n",
            ":3",
            &["not `key = value`", "secret_id = …"],
        ),
        (
            "[default]\nsecret_id = AKIDx\n[other]\n[default]\nsecret_key = kx\n",
            ":4",
            &["[default] appears twice", "line 1 and line 4"],
        ),
    ];
    for (text, line, needles) in cases {
        let (dir, resolved) = from_profile_file(text.as_bytes(), "default");
        let error = resolved.expect_err(text);
        let message = error.to_string();
        assert_eq!(
            error.code(),
            "CredentialError.Invalid",
            "{text:?}: {message}"
        );
        let place = format!("{}{line}", dir.path().join("credentials").display());
        assert!(
            message.contains(&place),
            "{text:?}: {message} lacks {place}"
        );
        for needle in needles {
            assert!(
                message.contains(needle),
                "{text:?}: {message} lacks {needle:?}"
            );
        }
        assert!(!message.contains("sk-quoted-secret"), "{message}");
    }
}

/// The class of #11 beyond profile files: a value the API can never accept (in quotes, not
/// printable ASCII, absurdly long) is refused where it is read, for every source, instead of
/// being sent and answered with an authentication failure.
#[test]
fn every_source_refuses_values_the_api_cannot_accept() {
    let huge = "A".repeat(1 << 20);
    for (id, key, needle) in [
        ("\"AKIDx\"", KEY, "the SecretId is in quotes"),
        (ID, "'quoted-secret'", "the SecretKey is in quotes"),
        ("AKIDé", KEY, "the SecretId contains"),
        (ID, "key\u{202e}", "the SecretKey contains"),
        (huge.as_str(), KEY, "the SecretId is longer than"),
    ] {
        let error = resolve(
            &CredentialSettings::Env,
            &env(&[
                ("TENCENTCLOUD_SECRET_ID", id),
                ("TENCENTCLOUD_SECRET_KEY", key),
            ]),
        )
        .unwrap_err();
        let message = error.to_string();
        assert_eq!(error.code(), "CredentialError.Invalid", "{message}");
        assert!(message.contains(needle), "{message} lacks {needle:?}");
        assert!(
            !message.contains("quoted-secret") && message.len() < 400,
            "{message}"
        );
    }
    let systemd = files(&[("secret_id", ID), ("secret_key", "\"quoted-secret\"\n")]);
    let error = resolve(
        &CredentialSettings::Systemd,
        &env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]),
    )
    .unwrap_err();
    assert!(
        error.to_string().contains("the SecretKey is in quotes"),
        "{error}"
    );
}

/// The class of #11's BOM: a secret file saved with a UTF-8 BOM (Windows editors) is read
/// like the profile file, without it.
#[test]
fn secret_files_with_a_bom_are_read_without_it() {
    let systemd = files(&[
        ("secret_id", &format!("\u{feff}{ID}\r\n")),
        ("secret_key", &format!("\u{feff}{KEY}")),
    ]);
    let env = env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]);
    let (creds, _) = static_creds(resolve(&CredentialSettings::Systemd, &env).unwrap());
    assert_eq!(creds.secret_id, ID);
    assert_eq!(creds.secret_key.expose_secret(), KEY);
}

/// A secret or profile path naming a FIFO blocked start-up forever in `open`; it is refused
/// at once as not a regular file.
#[test]
fn a_fifo_as_a_secret_file_is_refused_without_blocking() {
    let dir = files(&[("secret_id", ID)]);
    let _ = crate::problems::tests::fifo(dir.path());
    std::fs::rename(dir.path().join("fifo"), dir.path().join("secret_key")).unwrap();
    let env = env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
    let error = crate::problems::tests::within_5s(move || {
        resolve(&CredentialSettings::Systemd, &env).unwrap_err()
    });
    assert_eq!(error.code(), "CredentialError.Unreadable");
    assert!(error.to_string().contains("not a regular file"), "{error}");
}

/// A credential variable whose value is not UTF-8 used to be dropped from the snapshot, so the
/// chain silently fell through to the next source (another account's profile file, the CVM
/// role). It is now refused, by name, without the value.
#[test]
fn a_credential_variable_that_is_not_utf8_is_refused_not_skipped() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let home = files(&[(".tencentcloud/credentials", &profile_text("AKIDhome", "k3"))]);
    for name in [
        "TENCENTCLOUD_SECRET_ID",
        "TENCENTCLOUD_SECRET_KEY",
        "TENCENTCLOUD_SESSION_TOKEN",
        "CREDENTIALS_DIRECTORY",
    ] {
        let env = Environment::from_os_pairs([
            (OsString::from("HOME"), OsString::from(home.path())),
            (
                OsString::from(name),
                OsString::from_vec(b"AKID\xffsecret-bytes".to_vec()),
            ),
        ])
        .with_system_profile("/nonexistent/tencentcloud/credentials");
        assert_eq!(env.get(name), None);
        let error = resolve(&CredentialSettings::Chain, &env).unwrap_err();
        assert_eq!(error.code(), "CredentialError.Invalid", "{name}: {error}");
        let message = error.to_string();
        assert!(
            message.contains(name) && message.contains("not UTF-8"),
            "{message}"
        );
        assert!(!message.contains("secret-bytes"), "{message}");
    }
    // Other variables that are not UTF-8 are still just left out.
    let env = Environment::from_os_pairs([
        (OsString::from("HOME"), OsString::from(home.path())),
        (OsString::from("LANG"), OsString::from_vec(b"\xff".to_vec())),
    ]);
    let (creds, _) = static_creds(resolve(&CredentialSettings::Chain, &env).unwrap());
    assert_eq!(creds.secret_id, "AKIDhome");
}

/// Paths that come from the environment are shown escaped in credential errors.
#[test]
fn paths_from_the_environment_are_shown_escaped() {
    let home = files(&[(
        ".tencentcloud/credentials",
        "[default]\nsecret_id = AKIDx\n",
    )]);
    let odd = home.path().join("a\nerror: forged\u{2028}x");
    std::fs::create_dir_all(odd.join(".tencentcloud")).unwrap();
    std::fs::write(
        odd.join(".tencentcloud/credentials"),
        "[default]\nsecret_id = AKIDx\n",
    )
    .unwrap();
    let error = resolve(
        &CredentialSettings::Chain,
        &env(&[("HOME", odd.to_str().unwrap())]),
    )
    .unwrap_err();
    let message = error.to_string();
    assert!(
        !message.contains('\n') && !message.contains('\u{2028}'),
        "{message}"
    );
    assert!(
        message.contains("\\u{a}error: forged\\u{2028}x"),
        "{message}"
    );
}
