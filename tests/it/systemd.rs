//! The shipped unit file and journal catalog, checked by systemd's own tools (systemd 252):
//! `systemd-analyze verify`, `systemd-analyze security --offline=yes` and
//! `journalctl --update-catalog` into a temporary root. The tools must be installed (Debian:
//! `apt-get install systemd`); a missing tool fails the test rather than skipping it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cwp_portwatch::events::message_id;

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cwp-portwatch.service");
const CATALOG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/cwp-portwatch.catalog");
const EXEC_START: &str =
    "ExecStart=/usr/bin/cwp-portwatch run --config /etc/cwp-portwatch/config.toml";
/// The exposure the unit scores now (`systemd-analyze security`, scale 0–10), pinned: a
/// change that worsens it fails the test and must raise this on purpose. (Adding a
/// listener, e.g. for metrics, may change it: then change it here, in one place.)
const EXPOSURE: f64 = 1.1;
/// Rounding slack of the printed score, far below one setting's weight.
const EXPOSURE_EPSILON: f64 = 0.05;

/// The full path of a systemd tool; panics (fails the test) when it is not installed.
fn tool(name: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/bin", "/bin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not installed: these tests need systemd's tools \
                 (Debian/Ubuntu: apt-get install -y systemd)"
            )
        })
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).expect("systemd/cwp-portwatch.service is readable")
}

/// A copy of the unit, named `cwp-portwatch.service`, whose `ExecStart=` runs the binary just
/// built (`verify` wants the binary to exist).
fn unit_with_built_binary(dir: &Path) -> PathBuf {
    let unit = unit_text();
    assert!(
        unit.lines().any(|l| l == EXEC_START),
        "the unit must say `{EXEC_START}`"
    );
    let built = env!("CARGO_BIN_EXE_cwp-portwatch");
    let path = dir.join("cwp-portwatch.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/bin/cwp-portwatch ",
            &format!("ExecStart={built} "),
        ),
    )
    .unwrap();
    path
}

/// `systemd-analyze verify`: exit 0 and no complaint about the unit. verify exits 0 even for
/// unknown keys ("Unknown key … ignoring") and unparsable values, so stderr is checked too.
fn verify(unit: &Path) -> Result<(), String> {
    let out = run(Command::new(tool("systemd-analyze"))
        .args(["verify", "--man=no"])
        .arg(unit)
        .env("SYSTEMD_LOG_LEVEL", "notice"));
    let stderr = text(&out.stderr);
    let name = unit.file_name().unwrap().to_string_lossy().into_owned();
    let complaints: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains(&name) || l.contains("ignoring"))
        .collect();
    if out.status.success() && complaints.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "systemd-analyze verify {}: {}\nstdout:\n{}\nstderr:\n{stderr}",
            unit.display(),
            out.status,
            text(&out.stdout)
        ))
    }
}

#[test]
fn unit_passes_systemd_analyze_verify() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_built_binary(dir.path());
    if let Err(e) = verify(&unit) {
        panic!("{e}");
    }
}

#[test]
fn verify_check_catches_unknown_keys_and_bad_values() {
    // The check above must not pass a unit just because verify exited 0.
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_built_binary(dir.path());
    let good = std::fs::read_to_string(&unit).unwrap();
    for (from, to) in [
        ("ProtectSystem=strict", "ProtectSystm=strict"),
        // Not `notify-reload`: valid from systemd 253. No systemd knows this one.
        ("Type=notify\n", "Type=notify-when-it-pleases\n"),
    ] {
        assert!(good.contains(from));
        std::fs::write(&unit, good.replace(from, to)).unwrap();
        assert!(verify(&unit).is_err(), "verify accepted `{to}`");
    }
}

#[test]
fn unit_has_the_service_settings() {
    let unit = unit_text();
    let lines: BTreeSet<&str> = unit.lines().map(str::trim).collect();
    for want in [
        "Type=notify",
        EXEC_START,
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "RestartSec=5s",
        "WatchdogSec=30s",
        "TimeoutStopSec=20s",
        "DynamicUser=yes",
        "ConfigurationDirectory=cwp-portwatch",
        "StateDirectory=cwp-portwatch",
        "LoadCredential=secret_id:/etc/cwp-portwatch/secret_id",
        "LoadCredential=secret_key:/etc/cwp-portwatch/secret_key",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "WantedBy=multi-user.target",
    ] {
        assert!(lines.contains(want), "the unit lacks `{want}`");
    }
}

#[test]
fn unit_exposure_is_pinned() {
    // --threshold is on the 0–100 scale, whole numbers: the assertion below is the tight one.
    let threshold = ((EXPOSURE + EXPOSURE_EPSILON) * 10.0).ceil() as u32;
    let out = run(Command::new(tool("systemd-analyze")).args([
        "security",
        "--offline=yes",
        &format!("--threshold={threshold}"),
        "--no-pager",
        UNIT,
    ]));
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    let score = stdout
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for cwp-portwatch.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok());
    println!("systemd-analyze security: exposure {score:?}");
    assert!(
        out.status.success(),
        "systemd-analyze security --offline=yes --threshold={threshold} failed ({}), exposure {score:?}:\n{stdout}\n{stderr}",
        out.status
    );
    let score = score.unwrap_or_else(|| panic!("no overall exposure in:\n{stdout}\n{stderr}"));
    assert!(
        (score - EXPOSURE).abs() <= EXPOSURE_EPSILON,
        "exposure {score}, pinned at {EXPOSURE}: a worse score is a regression; a better one \
         should be pinned (update EXPOSURE)"
    );
}

/// The catalog's entries: id → (headers, body).
fn catalog_entries() -> BTreeMap<String, (Vec<String>, String)> {
    let text = std::fs::read_to_string(CATALOG).expect("systemd/cwp-portwatch.catalog is readable");
    let mut entries = BTreeMap::new();
    let mut current: Option<(String, Vec<String>, String, bool)> = None;
    for line in text.lines() {
        if let Some(id) = line.strip_prefix("-- ") {
            if let Some((id, headers, body, _)) = current.take() {
                assert!(
                    entries.insert(id.clone(), (headers, body)).is_none(),
                    "{id} twice"
                );
            }
            current = Some((id.trim().to_string(), Vec::new(), String::new(), true));
        } else if let Some((_, headers, body, in_headers)) = current.as_mut() {
            if *in_headers && line.is_empty() {
                *in_headers = false;
            } else if *in_headers {
                headers.push(line.to_string());
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
    }
    if let Some((id, headers, body, _)) = current {
        assert!(
            entries.insert(id.clone(), (headers, body)).is_none(),
            "{id} twice"
        );
    }
    entries
}

/// The journal fields each event carries (docs/events.md), plus the ones every entry has.
fn fields_of(id: &str) -> &'static [&'static str] {
    use message_id::*;
    match id {
        STATUS_CHANGED => &[
            "UUID",
            "AGENT_NAME",
            "FROM_STATUS",
            "TO_STATUS",
            "REQUEST_ID",
            "ERROR_CODE",
        ],
        POLL_FAILED => &[
            "UUID",
            "AGENT_NAME",
            "ERROR_CODE",
            "ERROR_MESSAGE",
            "REQUEST_ID",
            "CONSECUTIVE_FAILURES",
        ],
        POLL_RECOVERED => &["UUID", "AGENT_NAME", "FAILED_POLLS"],
        RATE_LIMITED => &["ERROR_CODE", "REQUESTS_PER_SECOND"],
        CLOCK_SKEW => &["SKEW_SECONDS"],
        CREDENTIALS_FAILED => &["ERROR_CODE", "ERROR_MESSAGE", "SOURCE"],
        WATCHLIST_LOADED => &["AGENTS", "ADDED", "REMOVED", "SOURCE", "SKIPPED"],
        DISCOVERY_FAILED => &["ERROR_CODE", "ERROR_MESSAGE", "RETRY_IN_SECONDS"],
        ACCOUNT_FAILED => &[
            "ACCOUNT",
            "ERROR_CODE",
            "ERROR_MESSAGE",
            "ATTEMPT",
            "RETRY_IN_SECONDS",
        ],
        CONFIG_REJECTED => &["ERROR_MESSAGE"],
        STATE_DAMAGED => &["PATH", "ERROR_MESSAGE", "MOVED_TO"],
        DAEMON_STARTED | DAEMON_STOPPING => &["VERSION", "AGENTS"],
        PORT_OPENED => &[
            "UUID",
            "AGENT_NAME",
            "PORT",
            "PROCESS_NAME",
            "PID",
            "MACHINE_IP",
            "MACHINE_NAME",
            "REQUEST_ID",
            "BASELINE",
        ],
        PORT_CLOSED => &[
            "UUID",
            "AGENT_NAME",
            "PORT",
            "PROCESS_NAME",
            "PID",
            "MACHINE_IP",
            "MACHINE_NAME",
            "REQUEST_ID",
        ],
        INVENTORY_BASELINE => &["UUID", "AGENT_NAME", "PORTS", "REQUEST_ID"],
        INVENTORY_FAILED => &["UUID", "AGENT_NAME", "ERROR_CODE", "ERROR_MESSAGE"],
        SCAN_REQUESTED => &["UUID", "AGENT_NAME", "REASON", "REQUEST_ID"],
        PORT_UNEXPECTED | PORT_UNEXPECTED_CLEARED | PORT_MISSING | PORT_MISSING_CLEARED => &[
            "UUID",
            "AGENT_NAME",
            "PORT",
            "PROCESS_NAME",
            "PID",
            "MACHINE_IP",
            "MACHINE_NAME",
            "REQUEST_ID",
            "RULE",
            "SEVERITY",
            "REASON",
            "SPEC",
        ],
        DELIVERY_FAILED => &["SINK", "ERROR_MESSAGE", "EVENTS"],
        LEADER_ELECTED => &["NAME", "ELECTION"],
        LEADERSHIP_LOST => &["NAME", "HOLDER", "REASON"],
        other => panic!("unknown MESSAGE_ID {other}"),
    }
}

/// `@FIELD@` references in a catalog text.
fn references(text: &str) -> Vec<String> {
    text.split('@')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

#[test]
fn catalog_has_one_well_formed_entry_per_message_id() {
    let entries = catalog_entries();
    let ids: BTreeSet<&str> = entries.keys().map(String::as_str).collect();
    let all: BTreeSet<&str> = message_id::ALL.into_iter().collect();
    assert_eq!(ids, all, "catalog ids differ from events::message_id::ALL");
    for (id, (headers, body)) in &entries {
        let subject = headers
            .iter()
            .find_map(|h| h.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("{id}: no Subject:"));
        assert!(
            headers.iter().any(|h| h == "Defined-By: cwp-portwatch"),
            "{id}: no `Defined-By: cwp-portwatch`"
        );
        assert!(body.trim().len() > 40, "{id}: no explanation");
        let known = fields_of(id);
        for field in references(subject).iter().chain(&references(body)) {
            assert!(
                known.contains(&field.as_str()),
                "{id}: @{field}@ is not a field of this event ({known:?})"
            );
        }
        // config_rejected's only field is a multi-line list of problems: body, not subject.
        assert!(
            id == message_id::CONFIG_REJECTED || !references(subject).is_empty(),
            "{id}: the subject should use the entry's fields"
        );
    }
}

#[test]
fn catalog_compiles_with_journalctl_update_catalog() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/catalog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(CATALOG, dir.join("cwp-portwatch.catalog")).unwrap();
    let journalctl = tool("journalctl");

    let out = run(Command::new(&journalctl)
        .arg(format!("--root={}", root.path().display()))
        .arg("--update-catalog"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "journalctl --update-catalog: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        root.path()
            .join("var/lib/systemd/catalog/database")
            .is_file(),
        "no compiled catalog database"
    );

    let out = run(Command::new(&journalctl)
        .arg(format!("--root={}", root.path().display()))
        .args(["--no-pager", "--list-catalog"]));
    let listed = text(&out.stdout);
    assert!(out.status.success(), "{}\n{listed}", text(&out.stderr));
    for id in message_id::ALL {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(&format!("{id} cwp-portwatch: "))),
            "{id} is not in the compiled catalog:\n{listed}"
        );
    }

    // What `journalctl -x` shows for a status change, fields still as placeholders.
    let out = run(Command::new(&journalctl)
        .arg(format!("--root={}", root.path().display()))
        .args(["--no-pager", "--dump-catalog", message_id::STATUS_CHANGED]));
    let dumped = text(&out.stdout);
    assert!(
        dumped.contains("Subject: CWP agent @AGENT_NAME@ (@UUID@): @FROM_STATUS@ → @TO_STATUS@"),
        "{dumped}"
    );
}
