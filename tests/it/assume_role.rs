//! `source = "assume-role"` against the real simulator (its `AssumeRole` is served on the same
//! listener): temporary credentials that poll with their token, renewal before expiry with
//! short granted durations (`cap_assume_role_duration`), renewal on request after
//! `revoke_temporary_credentials`, the daemon end to end at `trace` without any secret in its
//! output, `check` naming a bad `role_arn` at line:column; STS's failed answers never
//! printed (only their status and code), a clock 15 minutes off learned from STS, and a
//! start that fails retried while the daemon stays up.

use std::sync::Arc;
use std::time::Duration;

use cwp_portwatch::api::{Client, ClientOptions};
use cwp_portwatch::credentials::Credentials;
use cwp_portwatch::credentials::assume_role::{
    AssumeRole, BaseCredentials, RoleRequest, StsOptions, run_renewer,
};
use cwp_simulator::{
    ASSUME_ROLE_ACTION, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, RunningSimulator, SimulatorOptions,
    StsFailure,
};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::support::app::{App, NotifySocket, agents, has_line, run_within};
use crate::support::*;

const ROLE_ARN: &str = "qcs::cam::uin/100000000001:roleName/cwp-reader";
const STATUS_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Generous: these waits end as soon as what they wait for happens.
const WAIT: Duration = Duration::from_secs(30);

fn role(sim: &RunningSimulator, base: Credentials) -> AssumeRole {
    AssumeRole::new(
        RoleRequest {
            role_arn: ROLE_ARN.to_owned(),
            role_session_name: "cwp-test".to_owned(),
            duration: Duration::from_secs(7_200),
        },
        StsOptions {
            endpoint: sim.endpoint().parse().unwrap(),
            region: None,
            timeout: Duration::from_secs(5),
        },
        BaseCredentials::Fixed(base),
    )
    .unwrap()
}

fn client(sim: &RunningSimulator, credentials: Credentials) -> Client {
    Client::new(
        ClientOptions {
            endpoint: sim.endpoint().parse().unwrap(),
            region: None,
            timeout: Duration::from_secs(5),
            max_idle_connections: 4,
        },
        credentials,
    )
    .unwrap()
}

/// Requests of `action` the simulator accepted as the role (temporary credentials).
fn accepted_as_role(sim: &RunningSimulator, action: &str) -> u64 {
    sim.stats()
        .per_account
        .get(&format!("role:{ROLE_ARN}"))
        .and_then(|actions| actions.get(action))
        .map_or(0, |a| a.accepted)
}

/// `AssumeRole` calls the simulator accepted (signed by the base credentials).
fn assumed(sim: &RunningSimulator) -> u64 {
    sim.stats()
        .per_action
        .get(ASSUME_ROLE_ACTION)
        .map_or(0, |a| a.accepted)
}

#[tokio::test]
async fn assumed_credentials_poll_with_their_token() {
    let agent = uuid(0);
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let fresh = role(&sim, creds(DEFAULT_SECRET_KEY)).fetch().await.unwrap();
    assert_ne!(fresh.credentials.secret_id, DEFAULT_SECRET_ID);
    assert!(fresh.credentials.token.is_some());
    assert!(fresh.expires_at > 0);
    assert!(!fresh.request_id.is_empty());

    let status = client(&sim, fresh.credentials.clone())
        .describe_open_port_task_status(&agent)
        .await
        .unwrap();
    assert_eq!(status.status, "COMPLETE");
    assert_eq!(accepted_as_role(&sim, STATUS_ACTION), 1);

    // The same key without its token is refused: the success above sent the token.
    let without_token = Credentials {
        token: None,
        ..fresh.credentials
    };
    let error = client(&sim, without_token)
        .describe_open_port_task_status(&agent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "AuthFailure.TokenFailure", "{error}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_refused_base_credential_is_a_refusal_with_its_code_and_no_secret() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let error = role(&sim, creds("wrongBaseKeyNEVERshow"))
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(error.code(), "AssumeRoleError.Refused", "{error}");
    assert_eq!(error.api_code(), Some("AuthFailure.SignatureFailure"));
    let text = format!("{error} {error:?}");
    assert!(text.contains(ROLE_ARN), "{text}");
    assert!(!text.contains("wrongBaseKeyNEVERshow"), "{text}");
    sim.shutdown().await;
}

/// Starts the renewer for credentials already in use until `in_use_until`; each new set goes
/// to `client` and to the channel.
fn spawn_renewer(
    role: AssumeRole,
    in_use_until: i64,
    client: &Client,
) -> (
    mpsc::UnboundedReceiver<String>,
    Arc<Notify>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refresh_now = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let updated = client.clone();
    let task = tokio::spawn(run_renewer(
        role,
        Some(in_use_until),
        move |c: Credentials| {
            let id = c.secret_id.clone();
            updated.set_credentials(c);
            let _ = tx.send(id);
        },
        refresh_now.clone(),
        shutdown.clone(),
    ));
    (rx, refresh_now, shutdown, task)
}

#[tokio::test]
async fn short_lived_credentials_are_renewed_before_they_expire() {
    let agent = uuid(0);
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    // Granted 6 s whatever is asked: renewed at half their life, 3 s before expiry.
    sim.cap_assume_role_duration(Some(Duration::from_secs(6)));
    let role = role(&sim, creds(DEFAULT_SECRET_KEY));
    let first = role.fetch().await.unwrap();
    let polling = client(&sim, first.credentials.clone());
    let (mut renewed, _refresh, shutdown, task) = spawn_renewer(role, first.expires_at, &polling);

    // Poll all along, through two renewals: each set must be replaced before it expires.
    let mut ids = vec![first.credentials.secret_id.clone()];
    let mut failures = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while ids.len() < 3 {
        tokio::select! {
            id = renewed.recv() => ids.push(id.expect("renewer alive")),
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if let Err(e) = polling.describe_open_port_task_status(&agent).await {
                    failures.push(e.to_string());
                }
            }
            _ = tokio::time::sleep_until(deadline) => panic!("renewed only {ids:?}"),
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
    ids.dedup();
    assert_eq!(ids.len(), 3, "each renewal is a new set: {ids:?}");
    assert!(accepted_as_role(&sim, STATUS_ACTION) > 0);
    shutdown.cancel();
    task.await.unwrap();
    sim.shutdown().await;
}

#[tokio::test]
async fn revoked_credentials_are_renewed_when_asked() {
    let agent = uuid(0);
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let role = role(&sim, creds(DEFAULT_SECRET_KEY));
    let first = role.fetch().await.unwrap();
    let polling = client(&sim, first.credentials.clone());
    // Two hours of validity: nothing renews before the request below.
    let (mut renewed, refresh, shutdown, task) = spawn_renewer(role, first.expires_at, &polling);

    sim.revoke_temporary_credentials();
    let error = polling
        .describe_open_port_task_status(&agent)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "AuthFailure.SecretIdNotFound", "{error}");
    refresh.notify_one();
    let id = tokio::time::timeout(WAIT, renewed.recv())
        .await
        .expect("renewed on request")
        .unwrap();
    assert_ne!(id, first.credentials.secret_id);
    let status = polling
        .describe_open_port_task_status(&agent)
        .await
        .unwrap();
    assert_eq!(status.status, "COMPLETE");
    shutdown.cancel();
    task.await.unwrap();
    sim.shutdown().await;
}

/// A daemon config for `sim` with `source = "assume-role"` on the environment's credentials,
/// logging everything (`trace`) as JSON.
fn assume_role_config(sim: &RunningSimulator) -> String {
    format!(
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"{e}\"\n\
         sts_endpoint = \"{e}\"\ntimeout = \"2s\"\n[credentials]\nsource = \"assume-role\"\n\
         base = \"env\"\nrole_arn = \"{ROLE_ARN}\"\nrole_session_name = \"cwp-test\"\n\
         duration = \"1h\"\n[poll]\ninterval = \"300ms\"\ncollecting_interval = \"200ms\"\n\
         offline_interval = \"300ms\"\n[log]\nformat = \"json\"\nlevel = \"trace\"\n",
        e = sim.endpoint()
    )
}

/// Waits until `holds` over the simulator's stats, or panics after [`WAIT`].
async fn until(sim: &RunningSimulator, what: &str, holds: impl Fn(&RunningSimulator) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !holds(sim) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The daemon's whole output, checked for every secret: the base key and `secrets`.
fn assert_no_secret(out: &crate::support::app::Finished, secrets: &[String]) {
    let text = format!("{}{}", out.stdout, out.stderr);
    // The debug lines that name the temporary credentials are there, without their secrets.
    assert!(text.contains("credentials assumed"), "debug lines are on");
    assert!(!text.contains(DEFAULT_SECRET_KEY), "base key in the output");
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "a temporary secret in the output"
        );
    }
}

#[tokio::test]
async fn the_daemon_polls_as_the_role_renews_and_never_prints_a_secret() {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    // Granted 6 s: renewed every 3 s.
    sim.cap_assume_role_duration(Some(Duration::from_secs(6)));
    let app = App::new();
    app.write_watchlist(&agents(0..2, "web"));
    app.write("config.toml", assume_role_config(&sim));
    let mut d = app.daemon(&[]);
    d.wait_for("both agents answered", WAIT, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 2
    })
    .await;
    // Start-up, then two renewals, polling as the role all along.
    until(&sim, "two renewals", |sim| assumed(sim) >= 3).await;
    let polled = accepted_as_role(&sim, STATUS_ACTION);
    until(&sim, "polling after the renewals", |sim| {
        accepted_as_role(sim, STATUS_ACTION) > polled + 4
    })
    .await;
    let secrets = sim.temporary_secrets();
    assert!(secrets.len() >= 6, "{}", secrets.len());
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // No request was refused: every set was replaced before it expired.
    assert!(
        !out.stderr.contains("AuthFailure"),
        "{:?}",
        out.events
            .iter()
            .filter(|e| e.to_string().contains("AuthFailure"))
            .collect::<Vec<_>>()
    );
    assert!(out.stderr.contains("AssumeRole credentials renewed"));
    assert_no_secret(&out, &secrets);
    sim.shutdown().await;
}

#[tokio::test]
async fn revoked_credentials_wake_a_renewal_in_the_daemon() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    let app = App::new();
    app.write_watchlist(&agents(0..1, "web"));
    app.write("config.toml", assume_role_config(&sim));
    let mut d = app.daemon(&[]);
    d.wait_for("the agent answered", WAIT, |e| {
        e.iter().any(|v| v["event"] == "status_changed")
    })
    .await;
    // Valid for an hour: only a wake-up renews them now.
    assert_eq!(assumed(&sim), 1);
    let mut secrets = sim.temporary_secrets();
    sim.revoke_temporary_credentials();
    d.wait_for("credentials_failed", WAIT, |e| {
        e.iter().any(|v| v["event"] == "credentials_failed")
    })
    .await;
    until(&sim, "renewal after the revocation", |sim| {
        assumed(sim) == 2
    })
    .await;
    // The credentials gate probes again within 30 s of the refusal, with the new set.
    let polled = accepted_as_role(&sim, STATUS_ACTION);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while accepted_as_role(&sim, STATUS_ACTION) <= polled {
        assert!(tokio::time::Instant::now() < deadline, "polling resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    secrets.extend(sim.temporary_secrets());
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_no_secret(&out, &secrets);
    sim.shutdown().await;
}

#[test]
fn check_names_a_bad_role_arn_at_its_line_and_column() {
    let app = App::new();
    app.write_watchlist(&agents(0..1, "web"));
    let cfg = app.write(
        "config.toml",
        "watchlist = \"watchlist.toml\"\n[credentials]\nsource = \"assume-role\"\nbase = \"env\"\n\
         role_arn = \"arn:aws:iam::1:role/x\"\nrole_session_name = \"cwp\"\n",
    );
    let mut cmd = app.command(&["check"]);
    cmd.arg("--config").arg(&cfg);
    let out = run_within(cmd, Duration::from_secs(10));
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("config.toml:5:12"), "{}", out.stderr);
    assert!(out.stderr.contains("not a CAM role ARN"), "{}", out.stderr);

    // Fixed, `check` says what it would do without contacting STS.
    app.write(
        "config.toml",
        format!(
            "watchlist = \"watchlist.toml\"\n[credentials]\nsource = \"assume-role\"\n\
             base = \"env\"\nrole_arn = \"{ROLE_ARN}\"\nrole_session_name = \"cwp\"\n"
        ),
    );
    let mut cmd = app.command(&["check"]);
    cmd.arg("--config").arg(&cfg);
    let out = run_within(cmd, Duration::from_secs(10));
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(ROLE_ARN), "{}", out.stdout);
    assert!(
        out.stdout.contains("not contacted by check"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains(DEFAULT_SECRET_KEY));
}

/// What a credentials endpoint's failed answer may carry: never to be printed.
const MARKER: &str = "TmpSecretKeyMARKERneverPRINTED";

/// An STS answer that holds the temporary secrets' marker, answered `status`.
fn marked_failure(status: u16, times: u32) -> StsFailure {
    StsFailure {
        secret_id: None,
        times,
        status,
        body: format!(
            r#"{{"Response":{{"Credentials":{{"TmpSecretId":"AKIDm","TmpSecretKey":"{MARKER}","Token":"{MARKER}"}},"Error":{{"Code":"InternalError","Message":"{MARKER}"}},"RequestId":"r-sts"}}}}"#
        ),
    }
}

// Issue 20 item 7: a non-2xx STS answer's excerpt reached the start-up error and a warn line.
#[tokio::test]
async fn an_sts_failure_shows_its_status_and_code_never_its_body() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    // A 503 from a gateway, then a 200 whose Error.Message is the secret.
    sim.fail_assume_role(marked_failure(503, 1));
    sim.fail_assume_role(marked_failure(200, 1));
    let role = role(&sim, creds(DEFAULT_SECRET_KEY));
    for (api_code, status) in [("ClientError.HttpStatus", "503"), ("InternalError", "")] {
        let error = role.fetch().await.unwrap_err();
        assert_eq!(error.code(), "AssumeRoleError.Unavailable", "{error}");
        assert_eq!(error.api_code(), Some(api_code));
        let text = format!("{error} {error:?}");
        assert!(text.contains(status), "{text}");
        assert!(text.contains("r-sts"), "the RequestId stays: {text}");
        assert!(!text.contains(MARKER), "{text}");
    }
    // STS works again: the role is assumed.
    assert!(role.fetch().await.is_ok());
    sim.shutdown().await;
}

/// A simulator whose clock is 15 minutes ahead of ours.
async fn skewed_simulator() -> RunningSimulator {
    let mut opts = SimulatorOptions::new(scenario(&steady(1, "COMPLETE")));
    opts.clock_offset_secs = 900;
    start(opts).await
}

// Issue 20 item 4: with a 15-minute clock skew, assume-role failed every start on
// `AuthFailure.SignatureExpire` (a restart loop under systemd).
#[tokio::test]
async fn a_clock_15_minutes_off_is_learned_from_sts_and_the_role_is_assumed() {
    let sim = skewed_simulator().await;
    let role = role(&sim, creds(DEFAULT_SECRET_KEY));
    let fresh = role.fetch().await.expect("assumed on the first fetch");
    assert!(fresh.credentials.token.is_some());
    let answers: Vec<String> = sim
        .stats()
        .log
        .iter()
        .filter(|r| r.action == ASSUME_ROLE_ACTION)
        .map(|r| r.answer.clone())
        .collect();
    // Refused once (what taught the offset), then signed again at once with STS's time.
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0], "AuthFailure.SignatureExpire");
    assert_ne!(answers[1], "AuthFailure.SignatureExpire");
    sim.shutdown().await;
}

#[tokio::test]
async fn the_daemon_assumes_the_role_and_polls_with_a_clock_15_minutes_off() {
    let sim = skewed_simulator().await;
    let app = App::new();
    app.write_watchlist(&agents(0..1, "web"));
    app.write("config.toml", assume_role_config(&sim));
    let mut d = app.daemon(&[]);
    d.wait_for("the agent answered", WAIT, |e| {
        e.iter().any(|v| v["event"] == "status_changed")
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(out.named("account_failed").is_empty(), "{}", out.stderr);
    assert!(accepted_as_role(&sim, STATUS_ACTION) >= 1);
    sim.shutdown().await;
}

// Issue 20 item 4: when every account fails at start, the daemon stays up, says so, keeps
// its watchdog fed, and starts the account once STS answers.
#[tokio::test]
async fn a_daemon_whose_only_account_cannot_start_stays_up_and_starts_it_later() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    sim.fail_assume_role(marked_failure(503, 2));
    let app = App::new();
    app.write_watchlist(&agents(0..1, "web"));
    app.write("config.toml", assume_role_config(&sim));
    let mut notify = NotifySocket::bind(app.path());
    let mut d = app.daemon(&[
        ("NOTIFY_SOCKET", notify.path()),
        ("WATCHDOG_USEC", "2000000"),
    ]);
    // READY=1 with the account not polling, and watchdog pings while it retries.
    let retrying = notify
        .wait_for(WAIT, |r| {
            r.iter().any(|m| has_line(m, "READY=1"))
                && r.iter()
                    .filter(|m| {
                        has_line(m, "WATCHDOG=1")
                            && m.contains(
                                "NOT POLLING: start failed with AssumeRoleError.Unavailable",
                            )
                    })
                    .count()
                    >= 2
        })
        .await;
    assert!(retrying, "{:?}", notify.received());
    d.wait_for("the agent answered after two failed starts", WAIT, |e| {
        e.iter().any(|v| v["event"] == "status_changed")
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let failed: Vec<(u64, u64)> = out
        .named("account_failed")
        .iter()
        .map(|e| {
            assert_eq!(e["account"], "default");
            (
                e["attempt"].as_u64().unwrap(),
                e["retry_in_seconds"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(failed, [(1, 2), (2, 4)]);
    assert!(!out.stderr.contains(MARKER), "{}", out.stderr);
    sim.shutdown().await;
}
