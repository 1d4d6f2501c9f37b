//! Several accounts (`[[account]]`) in one daemon against the real simulator, which keeps one
//! rate window per SecretId (`SimStats::per_account`): each account polls under its own
//! quota, one account's refused credentials leave the others polling, every event says which
//! account it is about, a restart repeats no transition for any account (one state file
//! each), and `check` names account-level problems at line:column.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cwp_portwatch::simulator::{ActionStats, DEFAULT_SECRET_ID, RunningSimulator};
use serde_json::Value;

use crate::support::app::{App, Finished, agents, run_within};
use crate::support::*;

const STATUS_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Generous: these waits end as soon as what they wait for happens.
const WAIT: Duration = Duration::from_secs(30);
const ALPHA_ID: &str = "AKIDcwpportwatchALPHA000000000000000";
const ALPHA_KEY: &str = "alphaSimulatorKey000000000000000";
const BETA_ID: &str = "AKIDcwpportwatchBETA0000000000000000";
const BETA_KEY: &str = "betaSimulatorKey0000000000000000";
/// Agents per account: far more than 20 requests/s at the test's 300 ms interval, so each
/// account's limiter is what decides its rate.
const PER_ACCOUNT: usize = 60;

/// `n` agents per account, the simulator knowing the two extra SecretIds.
async fn simulator() -> RunningSimulator {
    let credentials = format!(
        "[[credential]]\nsecret_id = \"{ALPHA_ID}\"\nsecret_key = \"{ALPHA_KEY}\"\n\
         [[credential]]\nsecret_id = \"{BETA_ID}\"\nsecret_key = \"{BETA_KEY}\"\n"
    );
    start_scenario(&format!(
        "{credentials}{}",
        steady(3 * PER_ACCOUNT, "COMPLETE")
    ))
    .await
}

/// The watchlist text of `agents`.
fn watchlist(agents: &[(String, String)]) -> String {
    agents
        .iter()
        .map(|(u, n)| format!("[[agent]]\nuuid = \"{u}\"\nname = \"{n}\"\n"))
        .collect()
}

/// The default account (the environment's credentials, `watchlist.toml`) plus `alpha` and
/// `beta`, each with its own key files; `beta_key` is what beta's key file holds.
fn three_accounts(app: &App, sim: &RunningSimulator, beta_key: &str) {
    app.write_watchlist(&agents(0..PER_ACCOUNT, "default-agent"));
    app.write(
        "alpha.toml",
        watchlist(&agents(PER_ACCOUNT..2 * PER_ACCOUNT, "alpha-agent")),
    );
    app.write(
        "beta.toml",
        watchlist(&agents(2 * PER_ACCOUNT..3 * PER_ACCOUNT, "beta-agent")),
    );
    for (name, value) in [
        ("alpha.id", ALPHA_ID),
        ("alpha.key", ALPHA_KEY),
        ("beta.id", BETA_ID),
        ("beta.key", beta_key),
    ] {
        let path = app.write(name, value);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let dir = app.path().display();
    let mut config = crate::support::app::daemon_config(&sim.endpoint());
    for account in ["alpha", "beta"] {
        config.push_str(&format!(
            "[[account]]\nname = \"{account}\"\nwatchlist = \"{account}.toml\"\n\
             [account.credentials]\nsource = \"file\"\nsecret_id_file = \"{dir}/{account}.id\"\n\
             secret_key_file = \"{dir}/{account}.key\"\n"
        ));
    }
    app.write("config.toml", config);
}

/// `DescribeOpenPortTaskStatus` as seen from `secret_id`'s window.
fn polls_of(sim: &RunningSimulator, secret_id: &str) -> ActionStats {
    sim.stats()
        .per_account
        .get(secret_id)
        .and_then(|actions| actions.get(STATUS_ACTION))
        .cloned()
        .unwrap_or_default()
}

async fn until(sim: &RunningSimulator, what: &str, holds: impl Fn(&RunningSimulator) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !holds(sim) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: {:#?}",
            sim.stats().per_account
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `status_changed` events of `account`.
fn changes_of<'e>(events: &'e [Value], account: &str) -> Vec<&'e Value> {
    events
        .iter()
        .filter(|e| e["event"] == "status_changed" && e["account"] == account)
        .collect()
}

fn every_agent_changed(events: &[Value], account: &str) -> bool {
    changes_of(events, account).len() == PER_ACCOUNT
}

#[tokio::test]
async fn each_account_polls_under_its_own_quota_and_its_events_say_which() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    let mut d = app.daemon(&[]);
    d.wait_for("every agent of every account answered", WAIT, |e| {
        ["default", "alpha", "beta"]
            .iter()
            .all(|a| every_agent_changed(e, a))
    })
    .await;
    // More than one window's worth each: the limiters were busy, each in its own window.
    until(&sim, "each account past 2 s of polling", |sim| {
        [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID]
            .iter()
            .all(|id| polls_of(sim, id).accepted > 40)
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for id in [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID] {
        let polls = polls_of(&sim, id);
        assert!(polls.max_arrivals_in_window <= 20, "{id}: {polls:?}");
        assert_eq!(polls.throttled, 0, "{id}: {polls:?}");
    }
    // Together they went past one account's quota: the windows really are separate.
    let busiest_total: u32 = [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID]
        .iter()
        .map(|id| polls_of(&sim, id).max_arrivals_in_window)
        .sum();
    assert!(busiest_total > 20, "{busiest_total}");
    // Each account's events name it, and only its own agents.
    for (account, name) in [
        ("default", "default-agent"),
        ("alpha", "alpha-agent"),
        ("beta", "beta-agent"),
    ] {
        let changes = changes_of(&out.events, account);
        assert_eq!(changes.len(), PER_ACCOUNT, "{account}");
        assert!(changes.iter().all(|e| e["agent_name"] == name), "{account}");
    }
    assert!(
        out.named("status_changed")
            .iter()
            .all(|e| e["account"].is_string()),
        "every event carries its account"
    );
    let loaded = out.named("watchlist_loaded");
    let mut accounts: Vec<&str> = loaded
        .iter()
        .filter_map(|e| e["account"].as_str())
        .collect();
    accounts.sort_unstable();
    assert_eq!(accounts, ["alpha", "beta", "default"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn one_accounts_refused_credentials_leave_the_others_polling() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, "betaWRONGkeyNEVERshow");
    let mut d = app.daemon(&[]);
    d.wait_for("beta refused, alpha and default answered", WAIT, |e| {
        e.iter()
            .any(|v| v["event"] == "credentials_failed" && v["account"] == "beta")
            && every_agent_changed(e, "alpha")
            && every_agent_changed(e, "default")
    })
    .await;
    let before = polls_of(&sim, ALPHA_ID).accepted;
    until(&sim, "alpha keeps polling while beta is refused", |sim| {
        polls_of(sim, ALPHA_ID).accepted > before + 40
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let failed = out.named("credentials_failed");
    assert!(!failed.is_empty());
    assert!(
        failed.iter().all(|e| e["account"] == "beta"),
        "only beta's credentials failed: {failed:?}"
    );
    assert!(changes_of(&out.events, "beta").is_empty());
    for id in [DEFAULT_SECRET_ID, ALPHA_ID] {
        let polls = polls_of(&sim, id);
        assert_eq!(polls.throttled, 0, "{id}: {polls:?}");
        assert!(polls.max_arrivals_in_window <= 20, "{id}: {polls:?}");
    }
    // Beta's gate allows one probe per 30 s: a refused account does not hammer the API.
    let beta = polls_of(&sim, BETA_ID);
    assert!(beta.arrived <= 2 * 20, "{beta:?}");
    assert_eq!(beta.accepted, 0, "{beta:?}");
    assert!(!out.stderr.contains("betaWRONGkeyNEVERshow"));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_restart_repeats_no_transition_for_any_account() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    let mut d = app.daemon(&[]);
    d.wait_for("every agent of every account answered", WAIT, |e| {
        ["default", "alpha", "beta"]
            .iter()
            .all(|a| every_agent_changed(e, a))
    })
    .await;
    let first = d.stop().await;
    assert_eq!(first.code(), Some(0), "{}", first.stderr);
    // One state file per account; the default account keeps the single-account name.
    for file in ["state.json", "state.alpha.json", "state.beta.json"] {
        assert!(app.path().join("state").join(file).is_file(), "{file}");
    }
    let seen: Vec<u64> = [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID]
        .iter()
        .map(|id| polls_of(&sim, id).accepted)
        .collect();
    let d = app.daemon(&[]);
    // Every agent of every account polled again: each would have changed by now.
    until(&sim, "every account polled every agent again", |sim| {
        [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID]
            .iter()
            .zip(&seen)
            .all(|(id, before)| polls_of(sim, id).accepted >= before + 2 * PER_ACCOUNT as u64)
    })
    .await;
    let second = d.stop().await;
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert_eq!(
        second.named("status_changed"),
        Vec::<Value>::new(),
        "a restart repeats no transition"
    );
    sim.shutdown().await;
}

fn check(app: &App) -> Finished {
    run_within(app.with_config(&["check"]), WAIT)
}

#[tokio::test]
async fn check_names_account_problems_at_line_and_column() {
    let app = App::new();
    app.write_watchlist(&agents(0..1, "a"));
    app.write(
        "config.toml",
        "state_dir = \"state\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"watchlist.toml\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"watchlist.toml\"\n",
    );
    let out = check(&app);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let config = app.config();
    assert!(
        out.stderr.contains(&format!(
            "{}:6:8: account name \"prod\" is used twice (first at line 3)",
            config.display()
        )),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn check_prints_one_line_per_account() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    let out = check(&app);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    for (account, agents) in [
        ("default", PER_ACCOUNT),
        ("alpha", PER_ACCOUNT),
        ("beta", PER_ACCOUNT),
    ] {
        let line = out
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("account     {account}:")))
            .unwrap_or_else(|| panic!("no line for {account}:\n{}", out.stdout));
        assert!(line.contains(&format!("{agents} agents")), "{line}");
    }
    assert!(!out.stdout.contains(ALPHA_KEY) && !out.stdout.contains(BETA_KEY));
    sim.shutdown().await;
}
