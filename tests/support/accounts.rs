//! Three accounts against one simulator (the default one, `alpha` and `beta`, each with its
//! own SecretId): shared by `tests/it/accounts.rs` and the real-clock rate test.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use cwp_simulator::{ActionStats, RunningSimulator};
use serde_json::Value;

use super::app::{App, agents};
use super::*;

pub const STATUS_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Generous: these waits end as soon as what they wait for happens.
pub const WAIT: Duration = Duration::from_secs(30);
pub const ALPHA_ID: &str = "AKIDcwpportwatchALPHA000000000000000";
pub const ALPHA_KEY: &str = "alphaSimulatorKey000000000000000";
pub const BETA_ID: &str = "AKIDcwpportwatchBETA0000000000000000";
pub const BETA_KEY: &str = "betaSimulatorKey0000000000000000";
/// Agents per account: far more than 20 requests/s at the test's 300 ms interval, so each
/// account's limiter is what decides its rate.
pub const PER_ACCOUNT: usize = 60;

/// `n` agents per account, the simulator knowing the two extra SecretIds.
pub async fn simulator() -> RunningSimulator {
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
pub fn watchlist(agents: &[(String, String)]) -> String {
    agents
        .iter()
        .map(|(u, n)| format!("[[agent]]\nuuid = \"{u}\"\nname = \"{n}\"\n"))
        .collect()
}

/// The default account (the environment's credentials, `watchlist.toml`) plus `alpha` and
/// `beta`, each with its own key files; `beta_key` is what beta's key file holds.
pub fn three_accounts(app: &App, sim: &RunningSimulator, beta_key: &str) {
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
pub fn polls_of(sim: &RunningSimulator, secret_id: &str) -> ActionStats {
    sim.stats()
        .per_account
        .get(secret_id)
        .and_then(|actions| actions.get(STATUS_ACTION))
        .cloned()
        .unwrap_or_default()
}

pub async fn until(sim: &RunningSimulator, what: &str, holds: impl Fn(&RunningSimulator) -> bool) {
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
pub fn changes_of<'e>(events: &'e [Value], account: &str) -> Vec<&'e Value> {
    events
        .iter()
        .filter(|e| e["event"] == "status_changed" && e["account"] == account)
        .collect()
}

pub fn every_agent_changed(events: &[Value], account: &str) -> bool {
    changes_of(events, account).len() == PER_ACCOUNT
}
