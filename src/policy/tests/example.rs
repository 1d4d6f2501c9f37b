//! `config/policy.example.toml`, the worked example of the docs: it parses as shipped and
//! yields the findings its comments promise.

use super::*;

const EXAMPLE: &str = include_str!("../../../config/policy.example.toml");

#[test]
fn the_example_policy_flags_what_its_comments_say() {
    let policy = policy(EXAMPLE);
    assert_eq!(policy.rule_count(), 4);
    assert_eq!(policy.default_action(), crate::policy::DefaultAction::Alert);

    // A bastion with sshd: nothing; without it: sshd is missing.
    let bastion = TestHost::named("bastion-01").tags(&["bastion"]);
    assert_eq!(
        eval(&policy, &bastion, &[(22, "sshd")]),
        Findings::default()
    );
    assert_eq!(
        eval(&policy, &bastion, &[(9100, "node_exporter")]),
        findings([missing(
            "bastion ssh",
            "22/sshd",
            22,
            "sshd",
            Severity::Critical
        )])
    );

    // A web host: sshd is not allowed there; python on 8080 is; a web host named otherwise
    // is not selected by "web tier" and falls to the default (alert).
    let web = TestHost::named("web-01").tags(&["web"]);
    assert_eq!(
        eval(
            &policy,
            &web,
            &[(443, "nginx"), (8080, "python3.12"), (22, "sshd")]
        ),
        findings([unexpected(22, "sshd", "web tier", Severity::Warning)])
    );
    let stray = TestHost::named("frontend-01").tags(&["web"]);
    assert_eq!(
        eval(&policy, &stray, &[(443, "nginx")]),
        findings([unexpected(443, "nginx", "default", Severity::Warning)])
    );

    // A database host with redis: unexpected at the rule's severity; postgres on 5432 is
    // expected (with yunjing, wherever it is bound).
    let db = TestHost::named("db-01").tags(&["db"]);
    assert_eq!(
        eval(&policy, &db, &[(5432, "postgres"), (6379, "redis-server")]),
        findings([unexpected(
            6379,
            "redis-server",
            "databases",
            Severity::Critical
        )])
    );

    // A host both bastion and web: ssh is allowed (by "bastion ssh"); an unexpected port is
    // reported under the selecting rule of highest severity, "bastion ssh" (critical).
    let both = TestHost::named("web-02").tags(&["web", "bastion"]);
    assert_eq!(
        eval(
            &policy,
            &both,
            &[(22, "sshd"), (443, "nginx"), (3306, "mysqld")]
        ),
        findings([unexpected(
            3306,
            "mysqld",
            "bastion ssh",
            Severity::Critical
        )])
    );

    // Staging: anything goes.
    let staging = TestHost::named("build-01").account("staging");
    assert_eq!(
        eval(&policy, &staging, &[(1, "x"), (65535, "y")]),
        Findings::default()
    );
}

#[test]
fn the_examples_loopback_entry_needs_the_cwp_backend() {
    let commented = "# allow = [{ port = 5432, process = \"postgres\", bind = \"loopback\" }, \"9100/node_exporter\"]";
    assert!(
        EXAMPLE.contains(commented),
        "the example lost its cwp entry"
    );
    let uncommented = EXAMPLE
        .replace("allow = [\"5432/postgres\", \"9100/node_exporter\"]\n", "")
        .replace(commented, &commented[2..]);
    let line = uncommented
        .lines()
        .position(|l| l.starts_with("allow = [{ port = 5432"))
        .expect("entry present")
        + 1;
    let found = problems(&uncommented);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(&format!(
            "policy.toml:{line}:47: `bind` cannot be checked: the yunjing backend"
        )),
        "{found:#?}"
    );
    // With a backend that reports bind addresses, postgres on a public address is flagged.
    let cwp = Capabilities {
        proto: true,
        bind: true,
        user: true,
    };
    let policy = Policy::from_toml_str(&uncommented, Path::new("policy.toml"), cwp).unwrap();
    let db = TestHost::named("db-01").tags(&["db"]);
    let at = |bind_ip: &'static str| PortFacts {
        bind_ip: Some(crate::api::cwp::BindIp::parse(bind_ip).unwrap()),
        ..port(5432, "postgres")
    };
    assert_eq!(
        policy.evaluate(&db.host(), [at("127.0.0.1")]),
        Findings::default()
    );
    assert_eq!(
        policy.evaluate(&db.host(), [at("0.0.0.0")]),
        findings([unexpected(
            5432,
            "postgres",
            "databases",
            Severity::Critical
        )])
    );
}
