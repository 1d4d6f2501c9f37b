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
        .tags(&["edge", "other"])
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

#[test]
fn hosts_no_rule_selects_follow_the_default() {
    let rules = r#"
[[rule]]
name = "web"
hosts = { tags = ["web"] }
allow = ["443/nginx"]
severity = "critical"
"#;
    let other = TestHost::named("db-01").tags(&["db"]);
    let ports = [(22, "sshd"), (5432, "postgres")];
    // Absent or "allow": nothing at all.
    assert_eq!(eval(&policy(rules), &other, &ports), Findings::default());
    let allow = policy(&format!("default = \"allow\"\n{rules}"));
    assert_eq!(eval(&allow, &other, &ports), Findings::default());
    // "alert": every port, under rule "default", severity warning.
    let alert = policy(&format!("default = \"alert\"\n{rules}"));
    assert_eq!(
        eval(&alert, &other, &ports),
        findings([
            unexpected(22, "sshd", "default", Severity::Warning),
            unexpected(5432, "postgres", "default", Severity::Warning),
        ])
    );
    // A host some rule selects is judged by its rules only, whatever the default.
    let web = TestHost::named("web-01").tags(&["web"]);
    assert_eq!(
        eval(&alert, &web, &[(443, "nginx"), (22, "sshd")]),
        findings([unexpected(22, "sshd", "web", Severity::Critical)])
    );
    // No port, no finding.
    assert_eq!(eval(&alert, &other, &[]), Findings::default());
}

#[test]
fn a_rule_without_hosts_or_with_empty_hosts_selects_every_host() {
    for hosts in ["", "hosts = {}\n"] {
        let policy = policy(&format!(
            "default = \"alert\"\n[[rule]]\nname = \"all\"\n{hosts}allow = [\"22/sshd\"]\n"
        ));
        let host = TestHost::named("").account("prod");
        assert_eq!(
            eval(&policy, &host, &[(22, "sshd"), (80, "httpd")]),
            findings([unexpected(80, "httpd", "all", Severity::Warning)]),
            "{hosts:?}"
        );
    }
}

#[test]
fn an_unexpected_port_is_reported_once_under_the_highest_severity_then_the_least_name() {
    let policy = policy(
        r#"
[[rule]]
name = "b notice"
severity = "notice"
allow = ["1"]
[[rule]]
name = "z critical"
severity = "critical"
allow = ["2"]
[[rule]]
name = "a critical"
severity = "critical"
hosts = { tags = ["a"] }
allow = ["3"]
[[rule]]
name = "info"
severity = "info"
allow = ["4"]
"#,
    );
    let ports = [(1, "p"), (2, "p"), (3, "p"), (4, "p"), (5, "p"), (5, "q")];
    // Selected by all four: ties between the two critical rules go to the least name.
    let tagged = TestHost::named("h").tags(&["a"]);
    assert_eq!(
        eval(&policy, &tagged, &ports),
        findings([
            unexpected(5, "p", "a critical", Severity::Critical),
            unexpected(5, "q", "a critical", Severity::Critical),
        ])
    );
    // Without the tag, "a critical" does not select it: port 3 is unexpected too.
    let untagged = TestHost::named("h");
    assert_eq!(
        eval(&policy, &untagged, &ports),
        findings([
            unexpected(3, "p", "z critical", Severity::Critical),
            unexpected(5, "p", "z critical", Severity::Critical),
            unexpected(5, "q", "z critical", Severity::Critical),
        ])
    );
}

#[test]
fn each_requiring_rule_has_its_own_missing_finding_on_selected_hosts_only() {
    let policy = policy(
        r#"
[[rule]]
name = "web"
hosts = { tags = ["web"] }
allow = ["0-65535"]
require = ["443/nginx", "8000-8099/python*"]
[[rule]]
name = "tls"
severity = "critical"
allow = ["0-65535"]
require = ["443/nginx"]
"#,
    );
    let web = TestHost::named("web-01").tags(&["web"]);
    assert_eq!(
        eval(&policy, &web, &[(8099, "python3")]),
        findings([
            missing("tls", "443/nginx", 443, "nginx", Severity::Critical),
            missing("web", "443/nginx", 443, "nginx", Severity::Warning),
        ])
    );
    // A range entry is met by any port in it; the glob by the whole name only.
    assert_eq!(
        eval(
            &policy,
            &web,
            &[(443, "nginx"), (8100, "python3"), (8000, "xpython")]
        ),
        findings([missing(
            "web",
            "8000-8099/python*",
            8000,
            "python*",
            Severity::Warning
        )])
    );
    // "web" does not select this one: only "tls" requires.
    let other = TestHost::named("db-01");
    assert_eq!(
        eval(&policy, &other, &[]),
        findings([missing(
            "tls",
            "443/nginx",
            443,
            "nginx",
            Severity::Critical
        )])
    );
    assert!(policy.requires(&web.host(), "web", "443/nginx"));
    assert!(!policy.requires(&other.host(), "web", "443/nginx"));
    assert!(!policy.requires(&web.host(), "web", "444/nginx"));
    assert!(!policy.requires(&web.host(), "nope", "443/nginx"));
}

#[test]
fn host_keys_edge_cases() {
    let policy = policy(
        r#"
[[rule]]
name = "exact uuid"
hosts = { uuids = ["6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"] }
allow = ["1"]
[[rule]]
name = "region"
hosts = { regions = ["ap-guangzhou"] }
allow = ["2"]
[[rule]]
name = "no wan"
hosts = { wan = false }
allow = ["3"]
[[rule]]
name = "names"
hosts = { names = ["db-??", "cache"] }
allow = ["4"]
"#,
    );
    let allowed = |host: &TestHost, port: u16| {
        policy
            .allowing_rule(&host.host(), &super::port(port, "p"))
            .map(str::to_owned)
    };
    let host = TestHost::named("db-1").wan(true);
    // The Uuid written in upper case selects the lower-case host Uuid.
    assert_eq!(allowed(&host, 1).as_deref(), Some("exact uuid"));
    // An unknown region ("") is in no list.
    assert_eq!(allowed(&host, 2), None);
    assert_eq!(
        allowed(&host.clone().region("ap-guangzhou"), 2).as_deref(),
        Some("region")
    );
    assert_eq!(allowed(&host, 3), None);
    assert_eq!(
        allowed(&host.clone().wan(false), 3).as_deref(),
        Some("no wan")
    );
    // `??` is exactly two characters; an exact entry is exact.
    assert_eq!(allowed(&host, 4), None);
    assert_eq!(
        allowed(&TestHost::named("db-12"), 4).as_deref(),
        Some("names")
    );
    assert_eq!(
        allowed(&TestHost::named("cache"), 4).as_deref(),
        Some("names")
    );
    assert_eq!(allowed(&TestHost::named("cache-1"), 4), None);
}
