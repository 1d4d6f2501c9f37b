//! Several accounts (`[[account]]`) in one daemon against the real simulator, which keeps one
//! rate window per SecretId (`SimStats::per_account`): each account polls under its own
//! quota, one account's refused credentials leave the others polling, every event says which
//! account it is about, a restart repeats no transition for any account (one state file
//! each), `check` names account-level problems at line:column, and an account whose start
//! fails is retried on its own while the others poll.

use cwp_simulator::{DEFAULT_SECRET_ID, StsFailure};
use serde_json::Value;

use crate::support::accounts::*;
use crate::support::app::{App, Finished, agents, run_within};
use crate::support::*;

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
    // Together they went well past one account's quota in one and the same second: the
    // accounts do not share a limiter. Counted from the simulator's arrival log (every
    // account's status polls), so one limiter shared by the three (at most 20 arrivals a
    // second, give or take a jittered one) fails it; the sum of each account's own busiest
    // window, checked before, could pass with one shared limiter (its windows need not
    // overlap). (That none of them exceeds 20 in any window is a real-clock measurement:
    // `tests/rate`.)
    let base = tokio::time::Instant::now();
    let mut arrivals: Vec<tokio::time::Instant> = sim
        .stats()
        .log
        .iter()
        .filter(|r| r.action == STATUS_ACTION)
        .map(|r| base + r.at)
        .collect();
    arrivals.sort_unstable();
    let together = cwp_portwatch::pacing::max_in_any_window(&arrivals);
    assert!(
        together > 30,
        "at most {together} polls of all accounts in one second: one shared quota?"
    );
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

#[tokio::test]
async fn an_agent_given_to_an_account_polls_with_its_credentials() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    // The default watchlist gives its first agent to alpha.
    let mut listed = agents(0..PER_ACCOUNT, "default-agent");
    listed[0].1 = "moved-agent".to_owned();
    let mut text = watchlist(&listed);
    text = text.replacen(
        "name = \"moved-agent\"\n",
        "name = \"moved-agent\"\naccount = \"alpha\"\n",
        1,
    );
    app.write("watchlist.toml", &text);
    let mut d = app.daemon(&[]);
    d.wait_for("the moved agent answered", WAIT, |e| {
        e.iter()
            .any(|v| v["event"] == "status_changed" && v["agent_name"] == "moved-agent")
    })
    .await;
    let out = d.stop().await;
    let moved: Vec<&Value> = out
        .events
        .iter()
        .filter(|v| v["event"] == "status_changed" && v["agent_name"] == "moved-agent")
        .collect();
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0]["account"], "alpha");
    // Its account's engine (signing as alpha) polled it, not the default one's.
    d_changes_check(&out);
    sim.shutdown().await;
}

/// Alpha's engine has its own agents and the moved one; the default one the rest.
fn d_changes_check(out: &Finished) {
    assert!(out.events.iter().any(|v| v["event"] == "status_changed"));
    let default = changes_of(&out.events, "default");
    assert!(
        default.iter().all(|v| v["agent_name"] != "moved-agent"),
        "{default:?}"
    );
}

#[tokio::test]
async fn check_names_an_unknown_account_in_a_watchlist_at_line_and_column() {
    let app = App::new();
    app.write(
        "watchlist.toml",
        format!("[[agent]]\nuuid = \"{}\"\naccount = \"prdo\"\n", uuid(0)),
    );
    app.write("b.toml", "");
    app.write(
        "config.toml",
        // `prod` with a key of its own (one shared with `default` would be refused first).
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n\
         [[account]]\nname = \"prod\"\nwatchlist = \"b.toml\"\n\
         [account.credentials]\nsource = \"cvm-role\"\n",
    );
    let out = check(&app);
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    let expected = format!(
        "{}:3:11: `account` = \"prdo\" is not a configured account (configured: default, prod)",
        app.path().join("watchlist.toml").display()
    );
    assert!(out.stderr.contains(&expected), "{}", out.stderr);
}

/// stdout's JSON lines.
fn json_lines(out: &Finished) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test]
async fn once_and_status_cover_every_account() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    let once = tokio::task::spawn_blocking({
        let cmd = app.with_config(&["once", "--format", "json"]);
        move || run_within(cmd, WAIT)
    })
    .await
    .unwrap();
    assert_eq!(once.code(), Some(0), "{}", once.stderr);
    let lines = json_lines(&once);
    assert_eq!(lines.len(), 3 * PER_ACCOUNT, "{}", once.stdout);
    for account in ["default", "alpha", "beta"] {
        let of: Vec<&Value> = lines.iter().filter(|l| l["account"] == account).collect();
        assert_eq!(of.len(), PER_ACCOUNT, "{account}");
        assert!(of.iter().all(|l| l["status"] == "COMPLETE"), "{account}");
    }
    // Each account polled as itself.
    for id in [DEFAULT_SECRET_ID, ALPHA_ID, BETA_ID] {
        assert!(polls_of(&sim, id).accepted >= PER_ACCOUNT as u64, "{id}");
    }
    let status = run_within(app.with_config(&["status", "--format", "json"]), WAIT);
    assert_eq!(status.code(), Some(0), "{}", status.stderr);
    let lines = json_lines(&status);
    assert_eq!(lines.len(), 3 * PER_ACCOUNT);
    assert_eq!(
        lines.iter().filter(|l| l["account"] == "beta").count(),
        PER_ACCOUNT
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn an_account_may_assume_a_role_beside_one_with_static_keys() {
    const ROLE: &str = "qcs::cam::uin/100000000002:roleName/cwp-prod";
    let sim = simulator().await;
    let app = App::new();
    app.write_watchlist(&agents(0..3, "default-agent"));
    app.write("prod.toml", watchlist(&agents(3..6, "prod-agent")));
    let mut config = crate::support::app::daemon_config(&sim.endpoint());
    config = config.replace(
        "[api]\n",
        &format!("[api]\nsts_endpoint = \"{}\"\n", sim.endpoint()),
    );
    config.push_str(&format!(
        "[[account]]\nname = \"prod\"\nwatchlist = \"prod.toml\"\n\
         [account.credentials]\nsource = \"assume-role\"\nbase = \"env\"\n\
         role_arn = \"{ROLE}\"\nrole_session_name = \"cwp-prod\"\n"
    ));
    app.write("config.toml", config);
    let mut d = app.daemon(&[]);
    d.wait_for("both accounts' agents answered", WAIT, |e| {
        changes_of(e, "default").len() == 3 && changes_of(e, "prod").len() == 3
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    // Prod polled as the role (the simulator keys temporary credentials by role), the
    // default account with its own key.
    assert!(polls_of(&sim, &format!("role:{ROLE}")).accepted >= 3);
    assert!(polls_of(&sim, DEFAULT_SECRET_ID).accepted >= 3);
    assert!(
        changes_of(&out.events, "prod")
            .iter()
            .all(|e| e["agent_name"] == "prod-agent")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn without_a_default_account_check_needs_no_top_level_credentials() {
    let app = App::new();
    app.write_watchlist(&agents(0..2, "a"));
    for (name, value) in [("p.id", ALPHA_ID), ("p.key", ALPHA_KEY)] {
        let path = app.write(name, value);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let dir = app.path().display();
    app.write(
        "config.toml",
        format!(
            "state_dir = \"state\"\n[[account]]\nname = \"prod\"\nwatchlist = \"watchlist.toml\"\n\
             [account.credentials]\nsource = \"file\"\nsecret_id_file = \"{dir}/p.id\"\n\
             secret_key_file = \"{dir}/p.key\"\n"
        ),
    );
    // A half-set environment: the top-level chain would fail on it ("…_SECRET_KEY is
    // missing"), but no account uses that chain.
    let mut cmd = app.with_config(&["check"]);
    cmd.env_remove("TENCENTCLOUD_SECRET_KEY");
    let out = run_within(cmd, WAIT);
    assert_eq!(out.code(), Some(0), "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("account     prod: "), "{}", out.stdout);
    assert!(out.stdout.contains("(2 agents"), "{}", out.stdout);
}

/// `[metrics]` with several accounts: one listener, every account's series labelled with its
/// name, each counting only its own events (counted from the same event stream as its log).
#[tokio::test]
async fn metrics_carry_the_account_and_count_each_accounts_own_events() {
    let sim = simulator().await;
    let app = App::new();
    three_accounts(&app, &sim, BETA_KEY);
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = std::fs::read_to_string(app.path().join("config.toml")).unwrap();
    app.write(
        "config.toml",
        format!("{config}[metrics]\nlisten = \"{addr}\"\n"),
    );
    let mut d = app.daemon(&[]);
    d.wait_for("every agent of every account answered", WAIT, |e| {
        ["default", "alpha", "beta"]
            .iter()
            .all(|a| every_agent_changed(e, a))
    })
    .await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Every account's dispatcher beats: healthy (it follows all three, as the watchdog does).
    let health = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "{:?}", health.text().await);
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    for account in ["default", "alpha", "beta"] {
        let changes = sum(&format!(
            "cwp_portwatch_status_changes_total{{account=\"{account}\","
        ));
        assert_eq!(
            changes,
            changes_of(&out.events, account).len() as f64,
            "{account}:\n{text}"
        );
        let agents = sum(&format!("cwp_portwatch_agents{{account=\"{account}\","));
        assert_eq!(agents, PER_ACCOUNT as f64, "{account}:\n{text}");
        assert!(
            sum(&format!(
                "cwp_portwatch_api_requests_total{{account=\"{account}\","
            )) > 0.0,
            "{account}:\n{text}"
        );
    }
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("cwp_portwatch_agents{status=")),
        "no series without an account beside the accounts' own:\n{text}"
    );
    sim.shutdown().await;
}

/// Issue 20 #6, at reload: the same load as `check` and the start, so a config that adds an
/// account on the default chain (the default account's key) and on its watchlist is refused
/// with both problems at their line:column, and the running account keeps polling.
#[tokio::test]
async fn a_reload_that_shares_a_key_or_a_watchlist_is_refused() {
    let sim = simulator().await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..2, "a"));
    let mut d = app.daemon(&[]);
    // One account: its events carry no `account` yet.
    d.wait_for("first answers", WAIT, |e| {
        e.iter().filter(|v| v["event"] == "status_changed").count() == 2
    })
    .await;
    let config = std::fs::read_to_string(app.config()).unwrap();
    let lines = config.lines().count();
    app.write(
        "config.toml",
        format!("{config}[[account]]\nname = \"prod\"\nwatchlist = \"./watchlist.toml\"\n"),
    );
    d.signal(libc::SIGHUP);
    d.wait_for("config_rejected", WAIT, |e| {
        e.iter().any(|v| v["event"] == "config_rejected")
    })
    .await;
    let rejected = d.named("config_rejected");
    let message = rejected[0]["error_message"].as_str().unwrap();
    let at = |line: usize, column: usize| {
        format!(
            "{}:{line}:{column}: accounts `default`",
            app.config().display()
        )
    };
    assert!(
        message.contains(&format!(
            "{} and `prod` take their credentials from the default credential chain",
            at(lines + 2, 8)
        )),
        "{message}"
    );
    assert!(
        message.contains(&format!(
            "{} (line 1) and `prod` use the same watchlist",
            at(lines + 3, 13)
        )),
        "{message}"
    );
    let before = polls_of(&sim, DEFAULT_SECRET_ID).accepted;
    until(&sim, "the default account keeps polling", |sim| {
        polls_of(sim, DEFAULT_SECRET_ID).accepted >= before + 4
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    sim.shutdown().await;
}

/// What a credentials endpoint's failed answer may carry: never to be printed.
const STS_BODY_MARKER: &str = "TmpSecretKeyMARKERneverPRINTED";

// Issue 20 item 4: STS answering 503 once at start for one account made the daemon exit 1,
// and the healthy account never polled.
#[tokio::test]
async fn one_accounts_failed_start_leaves_the_others_polling_and_is_retried() {
    const ROLE: &str = "qcs::cam::uin/100000000002:roleName/cwp-second";
    let sim = simulator().await;
    // `second` assumes its role with alpha's key: its first AssumeRole gets a 503 whose body
    // holds what looks like the temporary secrets (items 4 and 7).
    sim.fail_assume_role(StsFailure {
        secret_id: Some(ALPHA_ID.to_owned()),
        times: 1,
        status: 503,
        body: format!(
            r#"{{"Response":{{"Credentials":{{"TmpSecretKey":"{STS_BODY_MARKER}","Token":"{STS_BODY_MARKER}"}},"RequestId":"r-503"}}}}"#
        ),
    });
    let app = App::new();
    app.write_watchlist(&agents(0..3, "default-agent"));
    app.write("second.toml", watchlist(&agents(3..6, "second-agent")));
    for (name, value) in [("second.id", ALPHA_ID), ("second.key", ALPHA_KEY)] {
        let path = app.write(name, value);
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let dir = app.path().display();
    let config = crate::support::app::daemon_config(&sim.endpoint())
        .replace(
            "[api]\n",
            &format!("[api]\nsts_endpoint = \"{}\"\n", sim.endpoint()),
        )
        .replace("level = \"info\"", "level = \"trace\"");
    app.write(
        "config.toml",
        format!(
            "{config}[[account]]\nname = \"second\"\nwatchlist = \"second.toml\"\n\
             [account.credentials]\nsource = \"assume-role\"\nbase = \"file\"\n\
             secret_id_file = \"{dir}/second.id\"\nsecret_key_file = \"{dir}/second.key\"\n\
             role_arn = \"{ROLE}\"\nrole_session_name = \"cwp-second\"\n"
        ),
    );
    let mut d = app.daemon(&[]);
    d.wait_for("both accounts' agents answered", WAIT, |e| {
        changes_of(e, "default").len() == 3 && changes_of(e, "second").len() == 3
    })
    .await;
    let out = d.stop().await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    let failed = out.named("account_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    let failed = &failed[0];
    assert_eq!(failed["account"], "second");
    assert_eq!(failed["error_code"], "AssumeRoleError.Unavailable");
    assert_eq!(failed["attempt"], 1);
    assert_eq!(failed["retry_in_seconds"], 2);
    assert_eq!(failed["level"], "error");
    let message = failed["error_message"].as_str().unwrap();
    assert!(
        message.contains("HTTP 503") && message.contains(ROLE),
        "{message}"
    );
    // The default account polled from the start; `second` only after its retry.
    let position = |holds: &dyn Fn(&Value) -> bool| out.events.iter().position(holds);
    let default_first = position(&|e| e["event"] == "status_changed" && e["account"] == "default");
    let second_first = position(&|e| e["event"] == "status_changed" && e["account"] == "second");
    let failed_at = position(&|e| e["event"] == "account_failed");
    assert!(failed_at < second_first, "{failed_at:?} {second_first:?}");
    assert!(
        default_first < second_first,
        "{default_first:?} {second_first:?}"
    );
    assert!(polls_of(&sim, &format!("role:{ROLE}")).accepted >= 3);
    // Not at trace level either: the body of STS's answer is never printed.
    assert!(
        out.stderr.contains("\"level\":\"trace\"") || out.stderr.contains("\"level\":\"debug\"")
    );
    assert!(!out.stderr.contains(STS_BODY_MARKER), "{}", out.stderr);
    assert!(!out.stdout.contains(STS_BODY_MARKER));
    sim.shutdown().await;
}
