//! The expected-ports policy through the real binary against the simulator: findings at the
//! baseline, SIGHUP reloads that allow a flagged port (cleared `allowed`), refuse a policy with
//! a mistake (`config_rejected` at file:line:col, the running one stays) and tighten it
//! (raised), none of them making an API request; a restart on the same state folder that
//! repeats no finding; and `policy test` / `ports --unexpected` reading what the daemon stored.

use std::time::Duration;

use cwp_simulator::{OpenPortSpec, RunningSimulator};
use serde_json::Value;

use crate::support::app::{App, Running, agents, daemon_config, run_within};
use crate::support::*;

fn spec(port: u16, process: &str, pid: u32) -> OpenPortSpec {
    OpenPortSpec {
        port,
        process: process.into(),
        pid,
    }
}

/// Web hosts: ssh and nginx allowed, nginx required, critical.
const WEB: &str = r#"[[rule]]
name = "web tier"
hosts = { names = ["web-*"] }
allow = ["22/sshd", "443/nginx"]
require = ["443/nginx"]
severity = "critical"
"#;

/// `DescribeOpenPorts` requests the simulator has received.
fn port_requests(sim: &RunningSimulator) -> u64 {
    sim.stats()
        .per_action
        .get("DescribeOpenPorts")
        .map_or(0, |s| s.arrived)
}

/// The finding events so far, as "event port process rule severity [reason]", in order.
fn findings(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("port_unexpected") || n.starts_with("port_missing"))
        })
        .map(|e| {
            let what = match e["spec"].as_str() {
                Some(spec) => spec.to_owned(),
                None => format!("{} {}", e["port"], e["process_name"].as_str().unwrap_or("")),
            };
            format!(
                "{} {} {} {} {}{}",
                e["agent_name"].as_str().unwrap_or(""),
                e["event"].as_str().unwrap(),
                what,
                e["rule"].as_str().unwrap_or(""),
                e["severity"].as_str().unwrap_or(""),
                e["reason"]
                    .as_str()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default()
            )
        })
        .collect()
}

async fn wait_findings(daemon: &mut Running, what: &str, n: usize) {
    daemon
        .wait_for(what, Duration::from_secs(20), |events| {
            findings(events).len() >= n
        })
        .await;
}

/// SIGHUP and wait for the reload's end: a `watchlist_loaded` or a `config_rejected` more.
async fn reload(daemon: &mut Running) {
    let before = daemon.named("watchlist_loaded").len() + daemon.named("config_rejected").len();
    daemon.signal(libc::SIGHUP);
    daemon
        .wait_for("the reload", Duration::from_secs(20), |events| {
            events
                .iter()
                .filter(|e| e["event"] == "watchlist_loaded" || e["event"] == "config_rejected")
                .count()
                > before
        })
        .await;
}

#[tokio::test]
async fn findings_are_reported_once_through_reloads_and_restarts_and_policy_test_reads_them() {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    sim.set_ports(
        &uuid(0),
        vec![spec(22, "sshd", 812), spec(6379, "redis-server", 4242)],
    );
    sim.set_ports(
        &uuid(1),
        vec![spec(22, "sshd", 813), spec(443, "nginx", 90)],
    );
    let app = App::for_simulator(
        &sim.endpoint(),
        &[(uuid(0), "web-0".into()), (uuid(1), "web-1".into())],
    );
    app.write(
        "config.toml",
        format!(
            "{}[inventory]\nenabled = true\n[policy]\nfile = \"policy.toml\"\n",
            daemon_config(&sim.endpoint())
        ),
    );
    app.write("policy.toml", WEB);
    let mut daemon = app.daemon(&[]);
    // At the baseline: web-0's redis and its missing nginx; web-1 is as the policy wants.
    wait_findings(&mut daemon, "the baseline's findings", 2).await;
    daemon
        .wait_for("both baselines", Duration::from_secs(20), |events| {
            events
                .iter()
                .filter(|e| e["event"] == "inventory_baseline")
                .count()
                == 2
        })
        .await;
    let fetched = port_requests(&sim);

    // A reload that allows redis: cleared (allowed), and no request for it.
    app.write(
        "policy.toml",
        WEB.replacen(r#""443/nginx"]"#, r#""443/nginx", "6379/redis-*"]"#, 1),
    );
    reload(&mut daemon).await;
    wait_findings(&mut daemon, "the clear", 3).await;

    // A policy with a mistake: refused at its line and column, the running one stays.
    app.write(
        "policy.toml",
        "[[rule]]\nname = \"web tier\"\nseverity = \"loud\"\n",
    );
    reload(&mut daemon).await;
    let rejected = daemon.named("config_rejected");
    assert_eq!(rejected.len(), 1, "{:?}", daemon.lines());
    let message = rejected[0]["error_message"].as_str().unwrap();
    assert!(message.contains("policy.toml:3:"), "{message}");

    // A reload that tightens (ssh no longer allowed): raised on both hosts.
    app.write(
        "policy.toml",
        "[[rule]]\nname = \"web tier\"\nhosts = { names = [\"web-*\"] }\n\
         allow = [\"443/nginx\", \"6379/redis-*\"]\nrequire = [\"443/nginx\"]\n\
         severity = \"critical\"\n",
    );
    reload(&mut daemon).await;
    wait_findings(&mut daemon, "the tightened policy's findings", 5).await;
    assert_eq!(
        port_requests(&sim),
        fetched,
        "a policy reload evaluates the stored inventory: no DescribeOpenPorts"
    );
    let first = daemon.stop().await;
    assert_eq!(first.code(), Some(0), "{}", first.stderr);
    let mut seen = findings(&first.events);
    // Each host's own order is fixed; the two hosts' baselines may interleave.
    seen.sort_by_key(|f| f.starts_with("web-1"));
    assert_eq!(
        seen,
        [
            "web-0 port_unexpected 6379 redis-server web tier critical",
            "web-0 port_missing 443/nginx web tier critical",
            "web-0 port_unexpected_cleared 6379 redis-server web tier critical allowed",
            "web-0 port_unexpected 22 sshd web tier critical",
            "web-1 port_unexpected 22 sshd web tier critical",
        ],
        "{}",
        first.stderr
    );
    let raised = &first.named("port_unexpected")[0];
    assert_eq!(raised["uuid"], uuid(0));
    assert_eq!(raised["pid"], 4242);
    assert_eq!(raised["level"], "error", "critical findings log at error");
    assert!(raised["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    let cleared = &first.named("port_unexpected_cleared")[0];
    assert!(
        cleared.get("request_id").is_none(),
        "a reload has no answer: {cleared}"
    );

    // Stop and start again on the same state folder: nothing is repeated.
    let mut again = app.daemon(&[]);
    let answered = sim.stats().requests;
    again
        .wait_for("polls after the restart", Duration::from_secs(20), |_| {
            sim.stats().requests >= answered + 6
        })
        .await;
    let second = again.stop().await;
    assert_eq!(second.code(), Some(0), "{}", second.stderr);
    assert_eq!(
        findings(&second.events),
        Vec::<String>::new(),
        "{}",
        second.stderr
    );
    sim.shutdown().await;

    // `policy test`: the stored inventory against the file, no API (the simulator is gone).
    let out = run_within(
        app.with_config(&["policy", "test", "--format", "json"]),
        Duration::from_secs(20),
    );
    assert_eq!(
        out.code(),
        Some(1),
        "findings: exit 1\n{}{}",
        out.stdout,
        out.stderr
    );
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut got: Vec<(String, String, u64)> = lines
        .iter()
        .map(|l| {
            (
                l["agent_name"].as_str().unwrap().to_owned(),
                l["finding"].as_str().unwrap().to_owned(),
                l["port"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("web-0".to_owned(), "missing".to_owned(), 443),
            ("web-0".to_owned(), "unexpected".to_owned(), 22),
            ("web-1".to_owned(), "unexpected".to_owned(), 22),
        ],
        "{}",
        out.stdout
    );
    // `ports --unexpected`: the ports lines of the unexpected ones only.
    let ports = run_within(
        app.with_config(&["ports", "--unexpected", "--format", "json"]),
        Duration::from_secs(20),
    );
    assert_eq!(ports.code(), Some(0), "{}", ports.stderr);
    let mut listed: Vec<(String, u64)> = ports
        .stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["agent_name"].as_str().unwrap().to_owned(),
                v["port"].as_u64().unwrap(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        [("web-0".to_owned(), 22), ("web-1".to_owned(), 22)],
        "{}",
        ports.stdout
    );
    // A policy that allows everything: exit 0, nothing printed.
    app.write(
        "policy.toml",
        "[[rule]]\nname = \"all\"\nhosts = { names = [\"*\"] }\nallow = [\"0-65535\"]\n",
    );
    let clean = run_within(
        app.with_config(&["policy", "test"]),
        Duration::from_secs(20),
    );
    assert_eq!(clean.code(), Some(0), "{}{}", clean.stdout, clean.stderr);
    assert_eq!(clean.stdout, "");
    // A policy with a mistake: exit 2, naming where.
    app.write("policy.toml", "[[rule]]\nname = 5\n");
    let bad = run_within(
        app.with_config(&["policy", "test"]),
        Duration::from_secs(20),
    );
    assert_eq!(bad.code(), Some(2), "{}{}", bad.stdout, bad.stderr);
    assert!(bad.stderr.contains("policy.toml:2:"), "{}", bad.stderr);
}

#[tokio::test]
async fn a_watchlist_reload_that_removes_an_agent_clears_its_findings() {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    for i in 0..2 {
        sim.set_ports(&uuid(i), vec![spec(6379, "redis-server", 7)]);
    }
    let app = App::for_simulator(&sim.endpoint(), &agents(0..2, "web"));
    app.write(
        "config.toml",
        format!(
            "{}[inventory]\nenabled = true\n[policy]\nfile = \"policy.toml\"\n",
            daemon_config(&sim.endpoint())
        ),
    );
    app.write("policy.toml", "default = \"alert\"\n");
    let mut daemon = app.daemon(&[]);
    wait_findings(&mut daemon, "both hosts' findings", 2).await;
    app.write_watchlist(&agents(0..1, "web"));
    reload(&mut daemon).await;
    wait_findings(&mut daemon, "the removed host's clear", 3).await;
    let out = daemon.stop().await;
    let cleared = out.named("port_unexpected_cleared");
    assert_eq!(cleared.len(), 1, "{}", out.stderr);
    assert_eq!(cleared[0]["uuid"], uuid(1));
    assert_eq!(cleared[0]["reason"], "removed");
    assert_eq!(cleared[0]["rule"], "default");
    assert_eq!(cleared[0]["severity"], "warning");
    // Taken out of the watchlist while the daemon was stopped: cleared at the start.
    app.write_watchlist(&agents(1..2, "web"));
    let mut daemon = app.daemon(&[]);
    daemon
        .wait_for("the clear at start", Duration::from_secs(20), |events| {
            events
                .iter()
                .any(|e| e["event"] == "port_unexpected_cleared")
        })
        .await;
    let out = daemon.stop().await;
    let cleared = out.named("port_unexpected_cleared");
    assert_eq!(cleared.len(), 1, "{}", out.stderr);
    assert_eq!(cleared[0]["uuid"], uuid(0));
    assert_eq!(cleared[0]["reason"], "removed");
    sim.shutdown().await;
}

#[tokio::test]
async fn policy_test_selects_hosts_by_the_watchlist_tags() {
    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    for i in 0..2 {
        sim.set_ports(
            &uuid(i),
            vec![spec(22, "sshd", 1), spec(6379, "redis-server", 2)],
        );
    }
    let app = App::for_simulator(&sim.endpoint(), &[]);
    app.write(
        "watchlist.toml",
        format!(
            "[[agent]]\nuuid = \"{}\"\nname = \"a\"\ntags = [\"web\"]\n\
             [[agent]]\nuuid = \"{}\"\nname = \"b\"\n",
            uuid(0),
            uuid(1)
        ),
    );
    let config = format!(
        "{}[inventory]\nenabled = true\n",
        daemon_config(&sim.endpoint())
    );
    app.write("config.toml", &config);
    // The daemon stores the inventory (no policy yet).
    let mut daemon = app.daemon(&[]);
    daemon
        .wait_for("both baselines", Duration::from_secs(20), |events| {
            events
                .iter()
                .filter(|e| e["event"] == "inventory_baseline")
                .count()
                == 2
        })
        .await;
    assert_eq!(daemon.stop().await.code(), Some(0));
    sim.shutdown().await;
    app.write(
        "config.toml",
        format!("{config}[policy]\nfile = \"policy.toml\"\n"),
    );
    app.write(
        "policy.toml",
        "[[rule]]\nname = \"web\"\nhosts = { tags = [\"web\"] }\nallow = [\"22/sshd\"]\n",
    );
    let out = run_within(
        app.with_config(&["policy", "test"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.code(), Some(1), "{}{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the tagged host: {}", out.stdout);
    assert!(
        lines[0].contains(&uuid(0))
            && lines[0].contains("6379")
            && lines[0].contains("redis-server"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("1 findings on 1 agents"),
        "{}",
        out.stderr
    );
}

/// A loopback port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `GET /metrics`'s body.
async fn scrape(addr: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of `series` (name and labels exactly as encoded) in a scrape.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

#[tokio::test]
async fn the_finding_gauges_agree_with_the_events_across_a_restart_and_a_reload() {
    let sim = start_scenario(&steady(1, "COMPLETE")).await;
    sim.set_ports(
        &uuid(0),
        vec![spec(22, "sshd", 1), spec(6379, "redis-server", 2)],
    );
    let app = App::for_simulator(&sim.endpoint(), &[(uuid(0), "web-0".into())]);
    let addr = format!("127.0.0.1:{}", free_port());
    app.write(
        "config.toml",
        format!(
            "{}[inventory]\nenabled = true\n[policy]\nfile = \"policy.toml\"\n\
             [metrics]\nlisten = \"{addr}\"\nper_agent = true\n",
            daemon_config(&sim.endpoint())
        ),
    );
    app.write("policy.toml", WEB);
    let critical = "cwp_portwatch_unexpected_ports{severity=\"critical\"}";
    let missing = "cwp_portwatch_missing_ports{severity=\"critical\"}";
    let per_agent = format!(
        "cwp_portwatch_agent_unexpected_ports{{uuid=\"{}\",agent_name=\"web-0\",severity=\"critical\"}}",
        uuid(0)
    );
    let mut daemon = app.daemon(&[]);
    wait_findings(&mut daemon, "the baseline's findings", 2).await;
    let text = scrape(&addr).await;
    assert_eq!(value(&text, critical), Some(1.0), "{text}");
    assert_eq!(value(&text, missing), Some(1.0), "{text}");
    assert_eq!(value(&text, &per_agent), Some(1.0), "{text}");
    assert_eq!(daemon.stop().await.code(), Some(0));

    // Restarted: no event repeats the findings, and the gauges still count them.
    let mut daemon = app.daemon(&[]);
    let answered = sim.stats().requests;
    daemon
        .wait_for("polls after the restart", Duration::from_secs(20), |_| {
            sim.stats().requests >= answered + 4
        })
        .await;
    let text = scrape(&addr).await;
    assert_eq!(value(&text, critical), Some(1.0), "{text}");
    assert_eq!(value(&text, missing), Some(1.0), "{text}");
    // Allowed by a reload: the gauge follows the clear.
    app.write(
        "policy.toml",
        WEB.replacen(r#""443/nginx"]"#, r#""443/nginx", "6379/redis-*"]"#, 1),
    );
    reload(&mut daemon).await;
    wait_findings(&mut daemon, "the clear", 1).await;
    let text = scrape(&addr).await;
    assert_eq!(value(&text, critical), Some(0.0), "{text}");
    assert_eq!(value(&text, &per_agent), None, "{text}");
    let out = daemon.stop().await;
    assert_eq!(findings(&out.events).len(), 1, "{}", out.stderr);
    sim.shutdown().await;
}
