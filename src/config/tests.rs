//! Unit tests of the config check, against fixture files and inline TOML.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;

use super::*;
use crate::credentials::Environment;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/config")
        .join(name)
}

fn env() -> Environment {
    Environment::from_pairs([("HOME", "/home/op")])
}

fn parse(text: &str) -> Result<Settings, ConfigErrors> {
    Settings::from_toml_str_with(text, Path::new("/etc/cwp-portwatch/config.toml"), &env())
}

fn problems(text: &str) -> Vec<Problem> {
    parse(text).expect_err("should be invalid").problems
}

/// The problem on `line`, which must exist and contain every one of `hints`.
fn assert_problem(problems: &[Problem], line: usize, hints: &[&str]) {
    let problem = problems
        .iter()
        .find(|p| p.line == Some(line))
        .unwrap_or_else(|| panic!("no problem on line {line}: {problems:#?}"));
    for hint in hints {
        assert!(
            problem.message.contains(hint),
            "line {line}: {:?} lacks {hint:?}",
            problem.message
        );
    }
}

#[test]
fn valid_config_with_every_key() {
    let path = fixture("good-full.toml");
    let settings =
        Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
            .unwrap();
    let folder = path.parent().unwrap();
    assert_eq!(settings.config_path, path);
    assert_eq!(settings.watchlist_path, Some(folder.join("agents.toml")));
    assert_eq!(settings.state_dir, PathBuf::from("/srv/portwatch/state"));
    assert_eq!(settings.api.endpoint.as_str(), "http://127.0.0.1:8080/");
    assert_eq!(settings.api.region.as_deref(), Some("ap-guangzhou"));
    assert_eq!(settings.api.requests_per_second, 15);
    assert_eq!(settings.api.max_in_flight, 8);
    assert_eq!(settings.api.timeout, Duration::from_millis(2500));
    assert_eq!(
        settings.credentials,
        CredentialSettings::File {
            secret_id_file: folder.join("secrets/secret_id"),
            secret_key_file: PathBuf::from("/run/keys/secret_key"),
        }
    );
    assert_eq!(
        settings.poll,
        PollSettings {
            interval: Duration::from_secs(120),
            collecting_interval: Duration::from_secs(1),
            offline_interval: Duration::from_secs(45),
        }
    );
    assert_eq!(settings.log.format, LogFormat::Json);
    assert_eq!(settings.log.level, "debug");
}

#[test]
fn example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/config.example.toml");
    let settings =
        Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
            .unwrap();
    assert_eq!(
        settings.api.endpoint.as_str(),
        "https://yunjing.tencentcloudapi.com/"
    );
}

#[test]
fn defaults() {
    let settings = Settings::load(&fixture("good-minimal.toml")).unwrap();
    assert_eq!(
        settings.watchlist_path,
        Some(PathBuf::from("/etc/cwp-portwatch/watchlist.toml"))
    );
    assert_eq!(
        settings.api,
        ApiSettings {
            service: crate::api::ApiService::Yunjing,
            endpoint_set: false,
            endpoint: Url::parse(DEFAULT_ENDPOINT).unwrap(),
            region: None,
            requests_per_second: 20,
            max_in_flight: 32,
            timeout: Duration::from_secs(10),
            action_rates: vec![],
            action_in_flight: vec![],
            sts_endpoint: Url::parse("https://sts.tencentcloudapi.com").unwrap(),
            ca_file: None,
        }
    );
    assert_eq!(
        settings.inventory,
        crate::config::InventorySettings::default()
    );
    assert!(!settings.inventory.enabled);
    assert_eq!(settings.credentials, CredentialSettings::Chain);
    assert_eq!(
        settings.poll,
        PollSettings {
            interval: Duration::from_secs(60),
            collecting_interval: Duration::from_secs(5),
            offline_interval: Duration::from_secs(30),
        }
    );
    assert_eq!(
        settings.log,
        LogSettings {
            format: LogFormat::Auto,
            level: "info".to_owned()
        }
    );
}

#[test]
fn relative_paths_resolve_against_the_config_folder() {
    let settings = parse("watchlist = \"w.toml\"\nstate_dir = \"../state\"").unwrap();
    assert_eq!(
        settings.watchlist_path,
        Some(PathBuf::from("/etc/cwp-portwatch/w.toml"))
    );
    assert_eq!(
        settings.state_dir,
        PathBuf::from("/etc/cwp-portwatch/../state")
    );
    let settings = parse("watchlist = \"/abs/w.toml\"").unwrap();
    assert_eq!(settings.watchlist_path, Some(PathBuf::from("/abs/w.toml")));
}

#[test]
fn state_dir_default_order() {
    let dir =
        |pairs: &[(&str, &str)]| default_state_dir(&Environment::from_pairs(pairs.iter().copied()));
    assert_eq!(
        dir(&[
            ("STATE_DIRECTORY", "/var/lib/a:/var/lib/b"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h")
        ]),
        PathBuf::from("/var/lib/a")
    );
    assert_eq!(
        dir(&[("XDG_STATE_HOME", "/x"), ("HOME", "/h")]),
        PathBuf::from("/x/cwp-portwatch")
    );
    assert_eq!(
        dir(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")]),
        PathBuf::from("/h/.local/state/cwp-portwatch")
    );
    assert_eq!(dir(&[]), PathBuf::from(FALLBACK_STATE_DIR));
    let settings = parse("watchlist = \"w.toml\"").unwrap();
    assert_eq!(
        settings.state_dir,
        PathBuf::from("/home/op/.local/state/cwp-portwatch")
    );
}

#[test]
fn every_rule_violated_is_reported_with_its_line() {
    let path = fixture("bad-values.toml");
    let errors =
        Settings::from_toml_str_with(&std::fs::read_to_string(&path).unwrap(), &path, &env())
            .unwrap_err();
    println!("{errors}");
    let p = &errors.problems;
    assert_eq!(errors.code(), "ConfigError.Invalid");
    assert_problem(p, 2, &["`watchlist` is empty", "watchlist = "]);
    assert_problem(p, 3, &["`~` is not expanded", "full path"]);
    assert_problem(p, 6, &["not loopback", "use https://"]);
    assert_problem(p, 7, &["not a region name", "ap-guangzhou"]);
    assert_problem(
        p,
        8,
        &[
            "= 50 is out of range",
            "from 1 to 20",
            "documented limit is 20",
        ],
    );
    assert_problem(p, 9, &["= 0 is out of range", "from 1 to 256"]);
    assert_problem(p, 10, &["greater than zero", "timeout = \"10s\""]);
    assert_problem(p, 13, &["needs `secret_key_file`"]);
    assert_problem(p, 15, &["`role` applies only to source = \"cvm-role\""]);
    assert_problem(p, 18, &["\"soon\" is not a duration", "interval = \"1m\""]);
    assert_problem(p, 19, &["has no unit", "collecting_interval = \"5s\""]);
    assert_problem(p, 20, &["\"-1s\" is not a duration"]);
    assert_problem(p, 23, &["\"xml\" is not a log format", "\"journald\""]);
    assert_problem(p, 24, &["\"verbose\" is not a log level", "\"warn\""]);
    assert_eq!(p.len(), 14, "{errors}");
    // Display: one problem per line, file:line:column: message, in file order.
    let text = errors.to_string();
    assert_eq!(text.lines().count(), 14);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("{}:2:13: ", path.display())),
        "{first}"
    );
    assert!(text.lines().nth(13).unwrap().contains(":24:"), "{text}");
}

#[test]
fn missing_watchlist_is_a_problem_without_a_line() {
    let problems = problems("[log]\nlevel = \"info\"\n");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, None);
    assert!(
        problems[0]
            .message
            .contains("add watchlist = \"watchlist.toml\"")
    );
    assert!(
        problems[0]
            .to_string()
            .starts_with("/etc/cwp-portwatch/config.toml: `watchlist` is missing")
    );
}

#[test]
fn unknown_key_names_its_line_and_the_allowed_keys() {
    let path = fixture("bad-unknown-key.toml");
    let errors = Settings::load(&path).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Syntax");
    assert_eq!(errors.problems.len(), 1);
    let problem = &errors.problems[0];
    assert_eq!((problem.line, problem.column), (Some(5), Some(1)));
    for key in [
        "requests_per_sec",
        "endpoint",
        "region",
        "requests_per_second",
        "max_in_flight",
        "timeout",
    ] {
        assert!(
            problem.message.contains(key),
            "{} lacks {key}",
            problem.message
        );
    }
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}:5:1: unknown field", path.display()))
    );
    let errors = parse("watchlist = \"w\"\nwatchlst = \"w\"\n").unwrap_err();
    assert_eq!(errors.problems[0].line, Some(2));
    assert!(errors.problems[0].message.contains("`state_dir`"));
}

#[test]
fn wrong_types_and_syntax_errors_have_a_place() {
    let errors = parse("watchlist = \"w\"\n[api]\nrequests_per_second = \"20\"\n").unwrap_err();
    assert_eq!(errors.problems[0].line, Some(3));
    assert_eq!(errors.code(), "ConfigError.Syntax");
    let errors = parse("watchlist = \"w\"\n\n[poll\ninterval = \"5s\"\n").unwrap_err();
    assert_eq!(errors.problems[0].line, Some(3));
    let errors = parse("watchlist = \"w\"\napi = 5\n").unwrap_err();
    assert!(
        errors.problems[0].message.contains("[api] table"),
        "{errors}"
    );
    assert!(
        !errors.problems[0].message.contains("whole number"),
        "a table is not a number: {errors}"
    );
}

#[test]
fn durations() {
    let poll = |value: &str| parse(&format!("watchlist = \"w\"\n[poll]\ninterval = {value}\n"));
    assert_eq!(
        poll("\"250ms\"").unwrap().poll.interval,
        Duration::from_millis(250)
    );
    assert_eq!(
        poll("\"2m\"").unwrap().poll.interval,
        Duration::from_secs(120)
    );
    assert_eq!(
        poll("\"1h 30m\"").unwrap().poll.interval,
        Duration::from_secs(5400)
    );
    for bad in [
        "\"\"",
        "\"0\"",
        "\"0ms\"",
        "\"5\"",
        "\"5 parsecs\"",
        "2.5",
        "60",
        "-1",
    ] {
        let problems = poll(bad).unwrap_err().problems;
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(problems[0].line, Some(3), "{bad}");
        assert!(
            problems[0].message.contains("interval = \""),
            "{bad}: {}",
            problems[0].message
        );
    }
}

#[test]
fn endpoints() {
    let api = |value: &str| parse(&format!("watchlist = \"w\"\n[api]\nendpoint = {value:?}\n"));
    for ok in [
        "https://yunjing.tencentcloudapi.com",
        "https://yunjing.ap-guangzhou.tencentcloudapi.com/",
        "http://127.0.0.1:9000",
        "http://127.8.9.10",
        "http://[::1]:8080/",
        "http://localhost:1234",
        "http://LOCALHOST",
    ] {
        assert!(api(ok).is_ok(), "{ok}: {:?}", api(ok));
    }
    for (bad, hint) in [
        ("http://10.0.0.1", "use https://"),
        ("http://localhost.example.com", "use https://"),
        ("http://128.0.0.1", "use https://"),
        ("ftp://example.com", "not supported"),
        ("yunjing.tencentcloudapi.com", "is not a URL"),
        (
            "https://yunjing.tencentcloudapi.com/v1",
            "always served at `/`",
        ),
        (
            "https://yunjing.tencentcloudapi.com/?a=b",
            "without user, query or fragment",
        ),
        ("", "`endpoint` is empty"),
    ] {
        let problems = api(bad).unwrap_err().problems;
        assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
        assert_eq!(problems[0].line, Some(3));
        assert!(
            problems[0].message.contains(hint),
            "{bad}: {}",
            problems[0].message
        );
    }
}

#[test]
fn region_empty_means_unset() {
    let settings = parse("watchlist = \"w\"\n[api]\nregion = \"\"\n").unwrap();
    assert_eq!(settings.api.region, None);
}

#[test]
fn credential_sections() {
    let creds = |body: &str| parse(&format!("watchlist = \"w\"\n[credentials]\n{body}\n"));
    assert_eq!(
        creds("source = \"env\"").unwrap().credentials,
        CredentialSettings::Env
    );
    assert_eq!(
        creds("source = \"systemd\"").unwrap().credentials,
        CredentialSettings::Systemd
    );
    assert_eq!(
        creds("source = \"profile\"").unwrap().credentials,
        CredentialSettings::Profile {
            path: None,
            profile: "default".to_owned()
        }
    );
    assert_eq!(
        creds("source = \"profile\"\nprofile_path = \"creds.ini\"\nprofile = \"prod\"")
            .unwrap()
            .credentials,
        CredentialSettings::Profile {
            path: Some(PathBuf::from("/etc/cwp-portwatch/creds.ini")),
            profile: "prod".to_owned()
        }
    );
    assert_eq!(
        creds("source = \"cvm-role\"").unwrap().credentials,
        CredentialSettings::CvmRole {
            role: None,
            metadata_endpoint: Url::parse(DEFAULT_METADATA_ENDPOINT).unwrap()
        }
    );
    assert_eq!(
        creds("source = \"cvm-role\"\nrole = \"Poller\"\nmetadata_endpoint = \"http://127.0.0.1:9/meta\"")
            .unwrap()
            .credentials,
        CredentialSettings::CvmRole {
            role: Some("Poller".to_owned()),
            metadata_endpoint: Url::parse("http://127.0.0.1:9/meta/").unwrap()
        }
    );

    let problems = creds("").unwrap_err().problems;
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(2), "{problems:?}");
    assert!(problems[0].message.contains("has no `source`"));
    assert!(problems[0].message.contains("remove the section"));

    let problems = creds("source = \"vault\"").unwrap_err().problems;
    assert_problem(&problems, 3, &["not a credential source", "\"cvm-role\""]);

    let problems = creds("source = \"file\"").unwrap_err().problems;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_problem(&problems, 3, &["needs `secret_id_file`"]);
    assert!(problems[1].message.contains("needs `secret_key_file`"));

    let problems = creds("source = \"env\"\nprofile = \"x\"\nsecret_id_file = \"f\"")
        .unwrap_err()
        .problems;
    assert_problem(
        &problems,
        4,
        &["`profile` applies only to source = \"profile\""],
    );
    assert_problem(
        &problems,
        5,
        &["`secret_id_file` applies only to source = \"file\""],
    );

    let problems = creds("source = \"profile\"\nprofile = \"\"")
        .unwrap_err()
        .problems;
    assert_problem(&problems, 4, &["`profile` is empty"]);

    let problems = creds("source = \"cvm-role\"\nrole = \" \"")
        .unwrap_err()
        .problems;
    assert_problem(&problems, 4, &["`role` is empty"]);

    let problems = creds("source = \"env\"\nsecret = \"x\"")
        .unwrap_err()
        .problems;
    assert_problem(&problems, 4, &["unknown field `secret`", "secret_key_file"]);
}

#[test]
fn missing_file_says_how_to_fix_it() {
    let errors = Settings::load(Path::new("/nonexistent/cwp/config.toml")).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.NotFound");
    let text = errors.to_string();
    assert!(text.starts_with("/nonexistent/cwp/config.toml: cannot read /nonexistent/cwp/config.toml: no such file; create it or pass --config"), "{text}");
}

#[test]
fn a_directory_is_unreadable_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let errors = Settings::load(dir.path()).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Unreadable");
}

#[test]
fn non_utf8_bytes_are_placed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, b"watchlist = \"w\"\n# caf\xc3\xa9 \xff\xfe\n").unwrap();
    let errors = Settings::load(&path).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Unreadable");
    let problem = &errors.problems[0];
    assert_eq!((problem.line, problem.column), (Some(2), Some(8)));
    assert!(problem.message.contains("not valid UTF-8"));
    assert!(problem.message.contains("0xff"));
}

/// A deterministic pseudo-random byte stream (xorshift), so no `rand` dependency is needed.
fn garbage(len: usize, printable: bool) -> Vec<u8> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = (state >> 24) as u8;
            if printable { b' ' + byte % 95 } else { byte }
        })
        .collect()
}

#[test]
fn megabytes_of_garbage_give_one_problem_fast() {
    let dir = tempfile::tempdir().unwrap();
    for printable in [false, true] {
        let path = dir.path().join("garbage.toml");
        std::fs::write(&path, garbage(3 << 20, printable)).unwrap();
        let started = std::time::Instant::now();
        let errors = Settings::load(&path).unwrap_err();
        println!(
            "3 MB of garbage (printable: {printable}) rejected in {:?}",
            started.elapsed()
        );
        assert_eq!(errors.problems.len(), 1, "{errors}");
        assert!(errors.problems[0].line.is_some());
    }
    // Valid TOML but a huge wrong value: still one problem.
    let huge = format!(
        "watchlist = \"w\"\n[log]\nlevel = \"{}\"\n",
        "x".repeat(3 << 20)
    );
    let errors = parse(&huge).unwrap_err();
    assert_eq!(errors.problems.len(), 1);
    assert!(
        errors.problems[0].message.len() < 300,
        "long values are cut short"
    );
}

#[test]
fn merged_errors_take_the_most_fundamental_code() {
    let mut errors = parse("watchlist = \"\"").unwrap_err();
    errors.merge(Settings::load(Path::new("/nonexistent/x.toml")).unwrap_err());
    assert_eq!(errors.problems.len(), 2);
    assert_eq!(errors.code(), "ConfigError.NotFound");
}

/// Issue 8 #4: a duration too large for the engine's instants (`"18446744073709551615s"`)
/// passed the check and made `run` panic. Every duration now has a range, checked here with
/// its file:line:column and the allowed range in the message; both ends are accepted.
#[test]
fn durations_out_of_range_are_rejected_with_the_allowed_range() {
    let cases = [
        ("api", "timeout", "100ms", "5m"),
        ("poll", "interval", "100ms", "24h"),
        ("poll", "collecting_interval", "100ms", "24h"),
        ("poll", "offline_interval", "100ms", "24h"),
    ];
    for (section, key, min, max) in cases {
        let text = |value: &str| format!("watchlist = \"w\"\n[{section}]\n{key} = \"{value}\"\n");
        for ok in [min, max] {
            assert!(
                parse(&text(ok)).is_ok(),
                "{key} = {ok}: {:?}",
                parse(&text(ok))
            );
        }
        for bad in [
            "18446744073709551615s",
            "584542046090years",
            "1000000h",
            "25h",
            "5m 1ms",
            "99ms",
            "1ns",
        ] {
            if key != "timeout" && bad == "5m 1ms" {
                continue;
            }
            let problems = parse(&text(bad)).unwrap_err().problems;
            assert_eq!(problems.len(), 1, "{key} = {bad}: {problems:?}");
            let problem = &problems[0];
            assert_eq!(
                (problem.line, problem.column),
                (Some(3), Some(key.len() + 4)),
                "{key} = {bad}: {problem}"
            );
            for needle in [
                format!("`{key}` = \"{bad}\" is out of range"),
                format!("from {min} to {max}"),
            ] {
                assert!(
                    problem.message.contains(&needle),
                    "{problem} lacks {needle}"
                );
            }
        }
    }
    // Zero keeps its own wording, and names the range too.
    let problems = problems("watchlist = \"w\"\n[poll]\ninterval = \"0s\"\n");
    assert!(
        problems[0].message.contains("greater than zero"),
        "{problems:?}"
    );
    assert!(
        problems[0].message.contains("from 100ms to 24h"),
        "{problems:?}"
    );
}

/// Issue 8 #12, the class: every string setting that reaches a log line, a message, a header
/// or a URL is bounded and free of control characters, line/paragraph separators and
/// bidirectional controls, refused at its line:column with the character named.
#[test]
fn string_settings_are_bounded_and_free_of_controls_separators_and_bidi() {
    let creds = |body: &str| parse(&format!("watchlist = \"w\"\n[credentials]\n{body}\n"));
    let assert_refused = |text: &str, line: usize, column: usize, hints: &[&str]| {
        let problems = parse(text).expect_err(text).problems;
        assert_eq!(problems.len(), 1, "{text}: {problems:#?}");
        assert_eq!(
            (problems[0].line, problems[0].column),
            (Some(line), Some(column)),
            "{text}: {}",
            problems[0]
        );
        for hint in hints {
            assert!(
                problems[0].message.contains(hint),
                "{text}: {} lacks {hint}",
                problems[0]
            );
        }
    };

    // Paths: every path key, through the same rule.
    assert_refused(
        "watchlist = \"w\\u202Etxt.toml\"\n",
        1,
        13,
        &["U+202E", "bidirectional"],
    );
    assert_refused(
        "watchlist = \"w\"\nstate_dir = \"/var/lib/x\\ny\"\n",
        2,
        13,
        &["U+000A", "control character"],
    );
    assert_refused(
        &format!("watchlist = \"{}\"\n", "d/".repeat(2049)),
        1,
        13,
        &["`watchlist` is 4098 characters long", "at most 4096"],
    );
    assert_refused(
        "watchlist = \"w\"\n[credentials]\nsource = \"file\"\nsecret_id_file = \"a\\u2028b\"\nsecret_key_file = \"k\"\n",
        4,
        18,
        &["U+2028", "line separator"],
    );
    assert_refused(
        "watchlist = \"w\"\n[credentials]\nsource = \"profile\"\nprofile_path = \"c\\u0085\"\n",
        4,
        16,
        &["U+0085", "control character"],
    );

    // The profile (section) name.
    assert!(creds("source = \"profile\"\nprofile = \"prod-2 (cn)\"").is_ok());
    assert_refused(
        "watchlist = \"w\"\n[credentials]\nsource = \"profile\"\nprofile = \"prod\\u2029\"\n",
        4,
        11,
        &["U+2029", "paragraph separator"],
    );
    assert_refused(
        &format!(
            "watchlist = \"w\"\n[credentials]\nsource = \"profile\"\nprofile = \"{}\"\n",
            "p".repeat(257)
        ),
        4,
        11,
        &["`profile` is 257 characters long", "at most 256"],
    );

    // The CAM role name goes into the metadata URL's path: CAM's own alphabet, 1 to 128.
    for ok in ["CwpPortwatchRole", "a+b=c,d.e@f_g-h", &"r".repeat(128)] {
        let settings = creds(&format!("source = \"cvm-role\"\nrole = \"{ok}\""));
        assert!(settings.is_ok(), "{ok}: {settings:?}");
    }
    for bad in [
        "../admin", "a/b", "a b", "a?b", "a#b", "a%2Fb", "r\\u202E", "é",
    ] {
        assert_refused(
            &format!("watchlist = \"w\"\n[credentials]\nsource = \"cvm-role\"\nrole = \"{bad}\"\n"),
            4,
            8,
            &[
                "is not a CAM role name",
                "1 to 128",
                "role = \"CwpPortwatchRole\"",
            ],
        );
    }
    assert_refused(
        &format!(
            "watchlist = \"w\"\n[credentials]\nsource = \"cvm-role\"\nrole = \"{}\"\n",
            "r".repeat(129)
        ),
        4,
        8,
        &["is not a CAM role name", "1 to 128"],
    );

    // The region is sent as a header: a region name, at most 64 characters.
    assert_refused(
        &format!(
            "watchlist = \"w\"\n[api]\nregion = \"ap-{}\"\n",
            "x".repeat(62)
        ),
        3,
        10,
        &["not a region name", "ap-guangzhou"],
    );

    // Endpoints: the URL parser silently drops tabs and newlines, so the text is checked first.
    assert_refused(
        "watchlist = \"w\"\n[api]\nendpoint = \"http://127.0.0.1\\t:9\"\n",
        3,
        12,
        &["U+0009", "control character"],
    );
    assert_refused(
        "watchlist = \"w\"\n[credentials]\nsource = \"cvm-role\"\nmetadata_endpoint = \"http://127.0.0.1/\\u202E/\"\n",
        4,
        21,
        &["U+202E", "bidirectional"],
    );
}

/// The parser's own messages quote the file's text (an unknown key): that text is shown with
/// forbidden characters escaped and cut short, so a 3 MB key is not echoed and a bidi control
/// in one cannot disguise the report.
#[test]
fn parser_messages_quote_the_file_escaped_and_cut_short() {
    let errors = parse("watchlist = \"w\"\n\"a\\u202Eb\\u2028c\" = 1\n").unwrap_err();
    let message = &errors.problems[0].message;
    assert!(
        !message.contains('\u{202e}') && !message.contains('\u{2028}'),
        "{message:?}"
    );
    assert!(message.contains("a\\u{202e}b\\u{2028}c"), "{message}");
    assert!(message.contains("expected one of `watchlist`"), "{message}");

    let errors = parse(&format!(
        "watchlist = \"w\"\n\"{}\" = 1\n",
        "k".repeat(3 << 20)
    ))
    .unwrap_err();
    let message = &errors.problems[0].message;
    assert!(message.len() < 400, "{} bytes", message.len());
    assert!(message.contains("unknown field `kkkk"), "{message}");
    assert!(message.contains("expected one of `watchlist`"), "{message}");
}

#[test]
fn inventory_section_and_per_action_rates() {
    let s = parse(
        "watchlist = \"w.toml\"\n[api]\nrequests_per_second = 15\n\
         [api.actions.DescribeOpenPorts]\nrequests_per_second = 5\n\
         [inventory]\nenabled = true\nrescan_interval = \"12h\"\ncreate_missing = true\n\
         baseline = \"ports\"\n",
    )
    .unwrap();
    assert!(s.inventory.enabled && s.inventory.create_missing);
    assert_eq!(s.inventory.rescan_interval, Duration::from_secs(12 * 3600));
    assert_eq!(s.inventory.baseline, crate::inventory::Baseline::Ports);
    assert_eq!(s.api.rate_of("DescribeOpenPorts"), 5);
    assert_eq!(s.api.rate_of("CreateOpenPortTask"), 15);
    let s = parse("watchlist = \"w.toml\"\n[inventory]\nrescan_interval = \"0s\"\n").unwrap();
    assert_eq!(s.inventory.rescan_interval, Duration::ZERO);
    // Every problem, at its line.
    let p = problems(
        "watchlist = \"w.toml\"\n[api.actions.DescribeOpenPort]\nrequests_per_second = 5\n\
         [api.actions.CreateOpenPortTask]\nrequests_per_second = 21\n\
         [inventory]\nrescan_interval = \"5s\"\nbaseline = \"all\"\n",
    );
    assert_problem(&p, 2, &["not an action", "DescribeOpenPorts"]);
    assert_problem(&p, 5, &["requests_per_second", "1 to 20"]);
    assert_problem(&p, 7, &["rescan_interval", "out of range"]);
    assert_problem(&p, 8, &["baseline", "\"summary\""]);
    let p = problems("watchlist = \"w.toml\"\n[inventory]\nenabled = \"yes\"\n");
    assert_problem(&p, 3, &["true or false"]);
    let p = problems("watchlist = \"w.toml\"\n[inventory]\nrescan = \"1h\"\n");
    assert_problem(&p, 3, &["rescan_interval"]);
}

#[test]
fn assume_role_takes_its_keys_and_its_base_sources_keys() {
    use crate::credentials::assume_role::RoleRequest;
    let settings = parse(
        "watchlist = \"w\"\n[api]\nsts_endpoint = \"http://127.0.0.1:9\"\n[credentials]\n\
         source = \"assume-role\"\nbase = \"file\"\nsecret_id_file = \"id\"\n\
         secret_key_file = \"/k\"\nrole_arn = \"qcs::cam::uin/100000000001:roleName/cwp-reader\"\n\
         role_session_name = \"cwp-portwatch\"\nduration = \"1h\"\n",
    )
    .unwrap();
    assert_eq!(settings.api.sts_endpoint.as_str(), "http://127.0.0.1:9/");
    assert_eq!(
        settings.credentials,
        CredentialSettings::AssumeRole {
            base: Box::new(CredentialSettings::File {
                secret_id_file: PathBuf::from("/etc/cwp-portwatch/id"),
                secret_key_file: PathBuf::from("/k"),
            }),
            request: RoleRequest {
                role_arn: "qcs::cam::uin/100000000001:roleName/cwp-reader".to_owned(),
                role_session_name: "cwp-portwatch".to_owned(),
                duration: Duration::from_secs(3_600),
            },
        }
    );
    // The default duration is STS's own, 2 h.
    let settings = parse(
        "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\nbase = \"cvm-role\"\n\
         role = \"Base\"\nrole_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"s1\"\n",
    )
    .unwrap();
    match settings.credentials {
        CredentialSettings::AssumeRole { base, request } => {
            assert!(
                matches!(*base, CredentialSettings::CvmRole { role: Some(ref r), .. } if r == "Base")
            );
            assert_eq!(request.duration, Duration::from_secs(7_200));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn assume_role_problems_are_named_at_their_line_and_column() {
    let at = |text: &str, line: usize, column: usize, hints: &[&str]| {
        let problems = problems(text);
        let problem = problems
            .iter()
            .find(|p| p.line == Some(line))
            .unwrap_or_else(|| panic!("no problem on line {line}: {problems:#?}"));
        assert_eq!(problem.column, Some(column), "{problem:?}");
        for hint in hints {
            assert!(
                problem.message.contains(hint),
                "{:?} lacks {hint:?}",
                problem.message
            );
        }
    };
    let head = "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\nbase = \"env\"\n";
    at(
        &format!("{head}role_arn = \"arn:qcs:cam::1:role/x\"\nrole_session_name = \"s1\"\n"),
        5,
        12,
        &["not a CAM role ARN", "qcs::cam::uin/"],
    );
    at(
        &format!("{head}role_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"a b\"\n"),
        6,
        21,
        &["not a session name", "2 to 128"],
    );
    at(
        &format!(
            "{head}role_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"s1\"\n\
             duration = \"13h\"\n"
        ),
        7,
        12,
        &["out of range", "12h"],
    );
    at(
        &format!(
            "{head}role_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"s1\"\n\
             duration = 3600\n"
        ),
        7,
        12,
        &["has no unit"],
    );
    // Missing keys are reported at `source`.
    let problems = problems(head);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert_problem(&problems, 3, &["needs `role_arn`"]);
    assert!(problems[1].message.contains("needs `role_session_name`"));
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\n",
        3,
        10,
        &["needs `base`"],
    );
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\nbase = \"assume-role\"\n",
        4,
        8,
        &["cannot sign with credentials of another AssumeRole"],
    );
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\nbase = \"vault\"\n",
        4,
        8,
        &["not a credential source", "\"file\""],
    );
    // Keys of another source than the base, and assume-role keys without assume-role.
    at(
        &format!(
            "{head}role_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"s1\"\n\
             profile = \"p\"\n"
        ),
        7,
        11,
        &[
            "applies only to source = \"profile\"",
            "with base = \"env\"",
            "change `base`",
        ],
    );
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"env\"\nrole_arn = \"qcs::cam::uin/1:roleName/r\"\n",
        4,
        12,
        &[
            "applies only to source = \"assume-role\"",
            "but source = \"env\"",
        ],
    );
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"env\"\nduration = \"1h\"\n",
        4,
        12,
        &["applies only to source = \"assume-role\""],
    );
    // The base source's own checks still apply.
    at(
        "watchlist = \"w\"\n[credentials]\nsource = \"assume-role\"\nbase = \"file\"\n\
         role_arn = \"qcs::cam::uin/1:roleName/r\"\nrole_session_name = \"s1\"\n",
        3,
        10,
        &["needs `secret_id_file`"],
    );
    at(
        "watchlist = \"w\"\n[api]\nsts_endpoint = \"http://sts.example.com\"\n",
        3,
        16,
        &["sts_endpoint", "loopback"],
    );
}

#[test]
fn accounts_get_their_own_region_credentials_watchlist_and_discovery() {
    let settings = parse(
        "watchlist = \"w.toml\"\n\
         [api]\nregion = \"ap-guangzhou\"\nrequests_per_second = 15\n\
         [[account]]\nname = \"prod\"\nregion = \"ap-shanghai\"\nwatchlist = \"prod.toml\"\n\
         [account.credentials]\nsource = \"file\"\nsecret_id_file = \"/run/id\"\n\
         secret_key_file = \"/run/key\"\n\
         [[account]]\nname = \"staging_2\"\n\
         [account.discovery]\nenabled = true\nregions = [\"ap-beijing\"]\n\
         remove_after = 5\nforget_after = \"1d\"\n\
         [account.credentials]\nsource = \"cvm-role\"\nrole = \"Staging\"\n",
    )
    .unwrap();
    assert!(settings.several_accounts());
    let plans = settings.account_plans();
    let names: Vec<&str> = plans.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "prod", "staging_2"]);
    let [default, prod, staging] = &plans[..] else {
        unreachable!()
    };
    assert_eq!(default.settings.api.region.as_deref(), Some("ap-guangzhou"));
    assert_eq!(default.settings.credentials, CredentialSettings::Chain);
    assert_eq!(prod.settings.api.region.as_deref(), Some("ap-shanghai"));
    assert_eq!(
        prod.settings.watchlist_path,
        Some(PathBuf::from("/etc/cwp-portwatch/prod.toml"))
    );
    assert!(matches!(
        prod.settings.credentials,
        CredentialSettings::File { .. }
    ));
    // Shared settings reach every account.
    assert_eq!(prod.settings.api.requests_per_second, 15);
    assert_eq!(staging.settings.api.region.as_deref(), Some("ap-guangzhou"));
    assert_eq!(staging.settings.watchlist_path, None);
    assert!(staging.settings.discovery.enabled);
    assert_eq!(staging.settings.discovery.regions, ["ap-beijing"]);
    assert_eq!(staging.settings.discovery.remove_after, 5);
    assert_eq!(
        staging.settings.discovery.forget_after,
        std::time::Duration::from_secs(24 * 3600)
    );
    assert!(plans.iter().all(|p| p.settings.accounts.is_empty()));
}

#[test]
fn only_account_blocks_means_no_default_account() {
    let settings = parse("[[account]]\nname = \"a\"\nwatchlist = \"a.toml\"\n").unwrap();
    assert!(!settings.has_default_account());
    assert!(!settings.several_accounts());
    let plans = settings.account_plans();
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].name, "a");
    // "default" is free when the top level configures no account.
    let settings = parse("[[account]]\nname = \"default\"\nwatchlist = \"a.toml\"\n").unwrap();
    assert_eq!(settings.account_plans()[0].name, "default");
    // Neither accounts nor a top-level watchlist: the old message stands.
    assert!(
        problems("state_dir = \"/x\"\n")[0]
            .message
            .contains("`watchlist` is missing")
    );
}

#[test]
fn account_problems_are_named_at_their_line_and_column() {
    let text = "watchlist = \"w.toml\"\n\
                [[account]]\nname = \"prod\"\nwatchlist = \"p.toml\"\n\
                [[account]]\nname = \"prod\"\nwatchlist = \"q.toml\"\n\
                [[account]]\nname = \"default\"\nwatchlist = \"d.toml\"\n\
                [[account]]\nname = \"Bad Name\"\nwatchlist = \"b.toml\"\n\
                [[account]]\nwatchlist = \"n.toml\"\nregion = \"no region!\"\n\
                [[account]]\nname = \"nowl\"\n\
                [account.credentials]\nsource = \"nope\"\n";
    let found = problems(text);
    assert_problem(&found, 6, &["\"prod\"", "used twice", "first at line 3"]);
    assert_problem(&found, 9, &["\"default\"", "taken"]);
    assert_problem(&found, 12, &["\"Bad Name\"", "lower-case"]);
    // A block without a key to point at is placed at its `[[account]]` header.
    assert_problem(&found, 14, &["no `name`"]);
    assert_problem(&found, 16, &["`region`"]);
    assert_problem(&found, 17, &["no `watchlist`"]);
    assert_problem(&found, 20, &["source"]);
    assert_eq!(found.len(), 7, "{found:#?}");
    let dup = found.iter().find(|p| p.line == Some(6)).unwrap();
    assert_eq!(dup.column, Some(8), "{dup:?}");
}

#[test]
fn account_names_are_checked_by_rule() {
    for good in ["a", "prod", "team_1-eu", &"x".repeat(32)] {
        assert!(valid_account_name(good), "{good}");
    }
    for bad in ["", "Prod", "a b", "a.b", "ä", "a/b", &"x".repeat(33)] {
        assert!(!valid_account_name(bad), "{bad}");
    }
}

#[test]
fn metrics_are_accepted_with_one_account_and_with_several() {
    // `b` with a key of its own: two accounts on the default chain would share one.
    let several = "watchlist = \"w.toml\"\n[metrics]\nlisten = \"127.0.0.1:9187\"\n\
                   [[account]]\nname = \"b\"\nwatchlist = \"b.toml\"\n\
                   [account.credentials]\nsource = \"file\"\nsecret_id_file = \"/run/b.id\"\n\
                   secret_key_file = \"/run/b.key\"\n";
    let settings = parse(several).unwrap();
    assert!(settings.metrics.listen.is_some());
    // One account (here only an [[account]]).
    parse("[metrics]\nlisten = \"127.0.0.1:9187\"\n[[account]]\nname = \"b\"\nwatchlist = \"b.toml\"\n")
        .unwrap();
}

#[test]
fn per_action_max_in_flight_is_each_lanes_own_budget_checked_at_its_place() {
    let s = parse(
        "watchlist = \"w.toml\"\n[api]\nmax_in_flight = 16\n\
         [api.actions.DescribeOpenPorts]\nmax_in_flight = 64\nrequests_per_second = 5\n",
    )
    .unwrap();
    assert_eq!(s.api.in_flight_of("DescribeOpenPorts"), 64);
    assert_eq!(s.api.in_flight_of("DescribeOpenPortTaskStatus"), 16);
    assert_eq!(s.api.in_flight_of("CreateOpenPortTask"), 16);
    assert_eq!(s.api.rate_of("DescribeOpenPorts"), 5);
    // The connection pool keeps one idle connection per slot of every lane.
    assert_eq!(s.api.in_flight_total(), 16 + 16 + 64);
    let s = parse("watchlist = \"w.toml\"\n").unwrap();
    assert_eq!(s.api.in_flight_total(), 3 * 32);
    // Out of range: each at its line and column, with the range.
    let p = problems(
        "watchlist = \"w.toml\"\n[api.actions.DescribeOpenPorts]\nmax_in_flight = 0\n\
         [api.actions.CreateOpenPortTask]\nmax_in_flight   = 257\n",
    );
    assert_problem(&p, 3, &["max_in_flight", "1 to 256", "concurrent"]);
    assert_problem(&p, 5, &["max_in_flight", "1 to 256"]);
    let at = |line| p.iter().find(|p| p.line == Some(line)).unwrap().column;
    assert_eq!((at(3), at(5)), (Some(17), Some(19)));
    // Of the wrong type: the parser's problem, with the advice.
    let p = problems(
        "watchlist = \"w.toml\"\n[api.actions.DescribeOpenPortTaskStatus]\n\
         max_in_flight = \"8\"\n",
    );
    assert_problem(&p, 3, &["max_in_flight", "without quotes"]);
}

/// Issue 20 #6: two accounts on one SecretId share one quota (4 `rate_limited` in 10 s), and
/// two on one watchlist poll every agent twice. Both passed `check`; both are refused at the
/// later account's line:column, whether the config names one place twice or two places hold
/// one key, and without printing the key.
#[test]
fn accounts_may_not_share_a_secret_id_or_a_watchlist() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path();
    let id = "AKIDsharedKEYsharedKEY000000000000001";
    for (name, value) in [
        ("a.id", id),
        ("b.id", id),
        ("a.key", "k3yS3CRET"),
        ("c.id", "AKIDother0000000000000000000000000002"),
    ] {
        std::fs::write(folder.join(name), value).unwrap();
    }
    std::fs::write(folder.join("w.toml"), "").unwrap();
    std::os::unix::fs::symlink(folder.join("w.toml"), folder.join("link.toml")).unwrap();
    let config = folder.join("config.toml");
    let parse_in = |text: &str, env: &Environment| {
        Settings::from_toml_str_with(text, &config, env)
            .expect_err("should be refused")
            .problems
    };
    let file = |id: &str| {
        format!(
            "[account.credentials]\nsource = \"file\"\nsecret_id_file = \"{id}\"\n\
             secret_key_file = \"a.key\"\n"
        )
    };
    // Lines: 1 watchlist, 2 [[account]], 3 name, 4 watchlist, 5 [account.credentials], …
    // The same place as written: the default chain twice; the same file as `./a.id`.
    let text = format!(
        "watchlist = \"w.toml\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"./link.toml\"\n\
         [[account]]\nname = \"stage\"\nwatchlist = \"s.toml\"\n{}\
         [[account]]\nname = \"dev\"\nwatchlist = \"d.toml\"\n{}",
        file("a.id"),
        file("./a.id"),
    );
    let found = parse_in(&text, &env());
    // `prod` has no [account.credentials]: placed at its name.
    assert_problem(
        &found,
        3,
        &[
            "`default`",
            "`prod`",
            "default credential chain",
            "20 requests/s",
            "own sub-account key",
        ],
    );
    assert_problem(
        &found,
        4,
        &[
            "`default` (line 1)",
            "`prod`",
            "same watchlist",
            "polled twice",
        ],
    );
    assert_problem(
        &found,
        15,
        &["`stage` (line 8)", "`dev`", "secret_id_file", "a.id"],
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!(found[0].column, Some(8), "{:?}", found[0]);

    // Two places holding one key: found by reading them, shown masked.
    let env_key = Environment::from_pairs([
        ("HOME", "/home/op"),
        ("TENCENTCLOUD_SECRET_ID", id),
        ("TENCENTCLOUD_SECRET_KEY", "envS3CRET"),
    ]);
    let text = format!(
        "watchlist = \"w.toml\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"p.toml\"\n{}\
         [[account]]\nname = \"stage\"\nwatchlist = \"s.toml\"\n{}",
        file("b.id"),
        file("c.id"),
    );
    let found = parse_in(&text, &env_key);
    assert_problem(
        &found,
        5,
        &[
            "`default`",
            "`prod`",
            "the same SecretId AKID…0001 (masked)",
        ],
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    let all: String = found.iter().map(|p| p.message.clone()).collect();
    for secret in [id, "k3yS3CRET", "envS3CRET", "sharedKEY"] {
        assert!(!all.contains(secret), "{secret} printed: {all}");
    }

    // AssumeRole: one base key assuming two roles is two quotas; the same role twice is one.
    let role = |arn: &str| {
        format!(
            "[account.credentials]\nsource = \"assume-role\"\nbase = \"env\"\n\
             role_arn = \"qcs::cam::uin/100000000001:roleName/{arn}\"\n\
             role_session_name = \"cwp-portwatch\"\n"
        )
    };
    let two_roles = format!(
        "[[account]]\nname = \"prod\"\nwatchlist = \"p.toml\"\n{}\
         [[account]]\nname = \"stage\"\nwatchlist = \"s.toml\"\n{}",
        role("prod"),
        role("stage"),
    );
    Settings::from_toml_str_with(&two_roles, &config, &env_key).unwrap();
    let one_role = two_roles.replace("roleName/stage", "roleName/prod");
    let found = parse_in(&one_role, &env_key);
    assert_problem(
        &found,
        12,
        &[
            "`prod` (line 4)",
            "`stage`",
            "AssumeRole of",
            "roleName/prod",
        ],
    );
    assert_eq!(found.len(), 1, "{found:#?}");

    // Different keys, different watchlists: accepted.
    let text = format!(
        "watchlist = \"w.toml\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"p.toml\"\n{}",
        file("c.id"),
    );
    Settings::from_toml_str_with(&text, &config, &env_key).unwrap();
}

#[test]
fn ca_file_is_read_with_the_config_and_its_problems_are_placed_at_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let config = |value: &str| format!("watchlist = \"w.toml\"\n[api]\nca_file = {value}\n");
    let not_pem = dir.path().join("ca.der");
    std::fs::write(&not_pem, b"\x30\x82\x01\x0a binary").unwrap();
    let key_only = dir.path().join("key.pem");
    std::fs::write(
        &key_only,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    let cases = [
        (dir.path().join("missing.pem"), "does not exist"),
        (not_pem, "is not PEM"),
        (key_only, "holds no certificate"),
        (dir.path().to_owned(), "cannot read"),
    ];
    for (path, hint) in cases {
        let found = problems(&config(&format!("{:?}", path.to_str().unwrap())));
        assert_problem(&found, 3, &["`ca_file`", hint, path.to_str().unwrap()]);
        let problem = found.iter().find(|p| p.line == Some(3)).unwrap();
        assert_eq!(problem.column, Some(11), "{problem:?}");
    }
    assert_problem(&problems(&config("\"\"")), 3, &["`ca_file` is empty"]);
    // A good one: its certificates are in the settings.
    let good = dir.path().join("ca.pem");
    std::fs::write(
        &good,
        crate::tls::test_server::TestCa::new("proxy CA").pem(),
    )
    .unwrap();
    let settings = parse(&config(&format!("{:?}", good.to_str().unwrap()))).unwrap();
    let bundle = settings.api.ca_file.expect("ca_file read");
    assert_eq!(bundle.path(), good);
    assert_eq!(bundle.certificate_count(), 1);
    // A relative path is the config folder's, as every path of the file.
    let found = problems(&config("\"proxy-ca.pem\""));
    assert_problem(&found, 3, &["/etc/cwp-portwatch/proxy-ca.pem"]);
}

#[test]
fn policy_file_resolves_against_the_config_folder() {
    let settings = parse("watchlist = \"w.toml\"").unwrap();
    assert_eq!(settings.policy, PolicySettings { file: None });
    let settings = parse("watchlist = \"w.toml\"\n[policy]\n").unwrap();
    assert_eq!(settings.policy.file, None);
    let settings = parse("watchlist = \"w.toml\"\n[policy]\nfile = \"policy.toml\"\n").unwrap();
    assert_eq!(
        settings.policy.file,
        Some(PathBuf::from("/etc/cwp-portwatch/policy.toml"))
    );
    let found = problems("watchlist = \"w.toml\"\n[policy]\nfile = \"\"\n");
    assert_problem(&found, 3, &["`file` is empty"]);
    let found = problems("watchlist = \"w.toml\"\n[policy]\nfiles = \"p.toml\"\n");
    assert_problem(&found, 3, &["unknown field `files`", "`file`"]);
}

/// Issue 24: `service` at `[api]` and per `[[account]]`; each account's endpoint is its
/// service's default unless written; what a `cwp` account cannot do is refused at its place.
#[test]
fn service_chooses_each_accounts_backend_and_endpoint() {
    use crate::api::ApiService;
    // Default: yunjing, its endpoint.
    let s = parse("watchlist = \"w.toml\"\n").unwrap();
    assert_eq!(s.api.service, ApiService::Yunjing);
    assert!(!s.api.endpoint_set);
    // cwp at [api]: cwp's endpoint, rescans every 10 minutes unless written.
    let s = parse("watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n")
        .unwrap();
    assert_eq!(s.api.service, ApiService::Cwp);
    assert_eq!(s.api.endpoint.as_str(), "https://cwp.tencentcloudapi.com/");
    assert_eq!(
        s.inventory.rescan_for(ApiService::Cwp),
        Duration::from_secs(600)
    );
    assert_eq!(s.inventory.rescan_for(ApiService::Yunjing), Duration::ZERO);
    let s = parse(
        "watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n\
         [inventory]\nrescan_interval = \"30m\"\n",
    )
    .unwrap();
    assert_eq!(
        s.inventory.rescan_for(ApiService::Cwp),
        Duration::from_secs(1800)
    );
    // Per account: a cwp account beside the yunjing default, each with its endpoint.
    let s = parse(
        "watchlist = \"w.toml\"\n[[account]]\nname = \"live\"\nservice = \"cwp\"\n\
         region = \"ap-shanghai\"\nwatchlist = \"live.toml\"\n\
         [account.credentials]\nsource = \"profile\"\nprofile = \"live\"\n",
    )
    .unwrap();
    let plans = s.account_plans();
    assert_eq!(plans[0].settings.api.service, ApiService::Yunjing);
    assert_eq!(
        plans[0].settings.api.endpoint.as_str(),
        "https://yunjing.tencentcloudapi.com/"
    );
    assert_eq!(plans[1].settings.api.service, ApiService::Cwp);
    assert_eq!(
        plans[1].settings.api.endpoint.as_str(),
        "https://cwp.tencentcloudapi.com/"
    );
    assert_eq!(plans[1].settings.api.in_flight_total(), 2 * 32);
    // A word that is no service, at its place.
    let p = problems("watchlist = \"w.toml\"\n[api]\nservice = \"CWP\"\n");
    assert_problem(&p, 3, &["service", "\"yunjing\"", "\"cwp\""]);
    // An endpoint of the other service: at the endpoint, or at the account that differs.
    let p = problems(
        "watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n\
         endpoint = \"https://yunjing.tencentcloudapi.com\"\n",
    );
    assert_problem(&p, 5, &["yunjing's", "service = \"yunjing\""]);
    let p = problems(
        "watchlist = \"w.toml\"\n[api]\nendpoint = \"https://yunjing.tencentcloudapi.com\"\n\
         [[account]]\nname = \"live\"\nservice = \"cwp\"\nregion = \"ap-shanghai\"\n\
         watchlist = \"live.toml\"\n",
    );
    assert_problem(&p, 6, &["yunjing's", "cwp"]);
    // cwp without a region, with discovery, or with rescans off: refused at their places.
    let p = problems("watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\n");
    assert!(
        p.iter().any(|p| p.message.contains("needs its `region`")),
        "{p:#?}"
    );
    let p = problems(
        "watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n\
         [inventory]\nrescan_interval = \"0s\"\n",
    );
    assert_problem(&p, 6, &["rescan_interval", "cwp", "10m"]);
    // Discovery with cwp: fine, but not with `keywords` (no such filter) nor at 1 request/s
    // (discovery and the status listings split the action's rate).
    let s = parse(
        "[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n[discovery]\nenabled = true\n\
         regions = [\"ap-guangzhou\"]\n",
    )
    .unwrap();
    assert!(s.discovery.enabled);
    let p = problems(
        "[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\nrequests_per_second = 1\n\
         [discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\nkeywords = \"web\"\n",
    );
    assert_problem(&p, 8, &["keywords", "cwp", "Keywords filter"]);
    assert!(
        p.iter()
            .any(|p| p.line == Some(5) && p.message.contains("at least 2 requests/s")),
        "{p:#?}"
    );
    // A yunjing account is not bothered by any of it.
    parse("watchlist = \"w.toml\"\n[inventory]\nrescan_interval = \"0s\"\n").unwrap();
}

/// One key may serve a yunjing and a `cwp` account (the quota is per action, and their
/// actions differ); two accounts of one API on one key are refused as before.
#[test]
fn one_key_may_serve_one_account_of_each_api() {
    let live = "[[account]]\nname = \"live\"\nservice = \"cwp\"\n\
                region = \"ap-shanghai\"\nwatchlist = \"live.toml\"\n";
    let s = parse(&format!("watchlist = \"w.toml\"\n{live}")).unwrap();
    assert_eq!(s.account_plans().len(), 2);
    let both_cwp = format!(
        "watchlist = \"w.toml\"\n[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n{live}"
    );
    let p = problems(&both_cwp);
    assert!(
        p.iter()
            .any(|p| p.message.contains("share one 20 requests/s quota")),
        "{p:#?}"
    );
}
