//! Host selection and evaluation.

use super::*;

#[test]
fn a_port_no_selecting_rule_allows_is_unexpected_under_that_rule() {
    let policy = policy(
        r#"
[[rule]]
name = "web tier"
hosts = { tags = ["web"] }
allow = ["22/sshd", "8000-8099/python*"]
severity = "critical"
"#,
    );
    let web = TestHost::named("web-01").tags(&["web"]);
    assert_eq!(
        eval(
            &policy,
            &web,
            &[(22, "sshd"), (8080, "python3"), (3306, "mysqld")]
        ),
        findings([unexpected(3306, "mysqld", "web tier", Severity::Critical)])
    );
}

#[test]
fn every_given_host_key_must_match() {
    let policy = policy(
        r#"
[[rule]]
name = "prod web"
hosts = { names = ["web-*"], accounts = ["prod"], tags = ["web", "edge"], regions = ["ap-guangzhou"], wan = true, uuids = ["6B6CD843-*"] }
allow = ["443/nginx"]
"#,
    );
    let host = TestHost::named("web-01")
        .account("prod")
        .tags(&["edge"])
        .region("ap-guangzhou")
        .wan(true)
        .uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1");
    let ports = [(443, "nginx"), (22, "sshd")];
    let flagged = findings([unexpected(22, "sshd", "prod web", Severity::Warning)]);
    assert_eq!(eval(&policy, &host, &ports), flagged);
    // Each key failing on its own unselects the host: the default (allow) applies.
    let none = Findings::default();
    assert_eq!(
        eval(
            &policy,
            &TestHost {
                name: "db-01".into(),
                ..host.clone()
            },
            &ports
        ),
        none
    );
    assert_eq!(eval(&policy, &host.clone().account("test"), &ports), none);
    assert_eq!(eval(&policy, &host.clone().tags(&["db"]), &ports), none);
    assert_eq!(
        eval(&policy, &host.clone().region("ap-beijing"), &ports),
        none
    );
    assert_eq!(eval(&policy, &host.clone().wan(false), &ports), none);
    assert_eq!(
        eval(
            &policy,
            &host.clone().uuid("0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
            &ports
        ),
        none
    );
}

#[test]
fn a_required_port_that_is_not_open_is_missing() {
    let policy = policy(
        r#"
[[rule]]
name = "web"
allow = ["443/nginx", "80"]
require = ["443/nginx", "80"]
severity = "notice"
"#,
    );
    let host = TestHost::named("web-01");
    assert_eq!(
        eval(&policy, &host, &[(443, "apache2"), (80, "apache2")]),
        findings([
            unexpected(443, "apache2", "web", Severity::Notice),
            missing("web", "443/nginx", 443, "nginx", Severity::Notice),
        ])
    );
}
