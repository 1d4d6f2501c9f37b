//! The changes between two evaluations: exact sequences, on real policies.

use super::*;
use crate::policy::{Change, ClearReason, changes};

/// The changes from evaluating `ports_old` under `old` to `ports_new` under `new`, the way the
/// wiring computes them: `still_open` from the new snapshot, `still_required` from the new
/// policy.
fn diff<'a>(
    old_findings: &'a Findings,
    new_findings: &'a Findings,
    new: &Policy,
    host: &TestHost,
    ports_new: &[(u16, &str)],
) -> Vec<Change<'a>> {
    changes(
        old_findings,
        new_findings,
        |port, process| {
            ports_new
                .iter()
                .any(|&(p, name)| p == port && name == process)
        },
        |rule, spec| new.requires(&host.host(), rule, spec),
    )
}

const WEB: &str = r#"
[[rule]]
name = "web"
hosts = { tags = ["web"] }
allow = ["443/nginx"]
require = ["443/nginx"]
"#;

#[test]
fn a_port_closing_clears_closed() {
    let policy = policy(WEB);
    let host = TestHost::named("web-01").tags(&["web"]);
    let before = [(443, "nginx"), (6379, "redis-server")];
    let after = [(443, "nginx")];
    let old = eval(&policy, &host, &before);
    let new = eval(&policy, &host, &after);
    let flagged = unexpected(6379, "redis-server", "web", Severity::Warning);
    assert_eq!(old, findings([flagged.clone()]));
    assert_eq!(
        diff(&old, &new, &policy, &host, &after),
        vec![Change::Cleared(&flagged, ClearReason::Closed)]
    );
}

#[test]
fn a_reload_that_allows_a_flagged_port_clears_it_allowed() {
    let old_policy = policy(WEB);
    let new_policy = policy(&WEB.replace(
        "[\"443/nginx\"]\nrequire",
        "[\"443/nginx\", \"6379/redis*\"]\nrequire",
    ));
    let host = TestHost::named("web-01").tags(&["web"]);
    let ports = [(443, "nginx"), (6379, "redis-server")];
    let old = eval(&old_policy, &host, &ports);
    let new = eval(&new_policy, &host, &ports);
    assert_eq!(new, Findings::default());
    let flagged = unexpected(6379, "redis-server", "web", Severity::Warning);
    assert_eq!(
        diff(&old, &new, &new_policy, &host, &ports),
        vec![Change::Cleared(&flagged, ClearReason::Allowed)]
    );
}

#[test]
fn a_reload_that_tightens_raises() {
    let old_policy = policy(&WEB.replace(
        "[\"443/nginx\"]\nrequire",
        "[\"443/nginx\", \"22/sshd\"]\nrequire",
    ));
    let new_policy = policy(&format!("{WEB}severity = \"critical\"\n"));
    let host = TestHost::named("web-01").tags(&["web"]);
    let ports = [(443, "nginx"), (22, "sshd")];
    let old = eval(&old_policy, &host, &ports);
    assert_eq!(old, Findings::default());
    let new = eval(&new_policy, &host, &ports);
    let flagged = unexpected(22, "sshd", "web", Severity::Critical);
    assert_eq!(
        diff(&old, &new, &new_policy, &host, &ports),
        vec![Change::Raised(&flagged)]
    );
}

#[test]
fn a_required_port_opening_later_clears_opened() {
    let policy = policy(WEB);
    let host = TestHost::named("web-01").tags(&["web"]);
    let before: [(u16, &str); 0] = [];
    let after = [(443, "nginx")];
    let old = eval(&policy, &host, &before);
    let gone = missing("web", "443/nginx", 443, "nginx", Severity::Warning);
    assert_eq!(old, findings([gone.clone()]));
    let new = eval(&policy, &host, &after);
    assert_eq!(
        diff(&old, &new, &policy, &host, &after),
        vec![Change::Cleared(&gone, ClearReason::Opened)]
    );
}

#[test]
fn a_reload_that_drops_a_requirement_clears_it_allowed() {
    let old_policy = policy(WEB);
    let new_policy = policy(&WEB.replace("require = [\"443/nginx\"]\n", ""));
    let host = TestHost::named("web-01").tags(&["web"]);
    let ports = [(8443, "nginx")];
    let old = eval(&old_policy, &host, &ports);
    let new = eval(&new_policy, &host, &ports);
    let gone = missing("web", "443/nginx", 443, "nginx", Severity::Warning);
    let flagged = unexpected(8443, "nginx", "web", Severity::Warning);
    assert_eq!(old, findings([flagged.clone(), gone.clone()]));
    assert_eq!(new, findings([flagged]));
    assert_eq!(
        diff(&old, &new, &new_policy, &host, &ports),
        vec![Change::Cleared(&gone, ClearReason::Allowed)]
    );
    // The host no longer selected (its tag removed) is "no longer required" too.
    let untagged = TestHost::named("web-01");
    let new = eval(&old_policy, &untagged, &ports);
    assert_eq!(new, Findings::default());
    let flagged = unexpected(8443, "nginx", "web", Severity::Warning);
    assert_eq!(
        diff(&old, &new, &old_policy, &untagged, &ports),
        vec![
            Change::Cleared(&flagged, ClearReason::Allowed),
            Change::Cleared(&gone, ClearReason::Allowed),
        ]
    );
}

#[test]
fn a_reload_that_only_changes_severity_or_rule_changes_nothing() {
    let old_policy = policy(WEB);
    let new_policy = policy(
        &WEB.replace("name = \"web\"", "name = \"web tier\"")
            .replace(
                "require = [\"443/nginx\"]\n",
                "require = [\"443/nginx\"]\nseverity = \"critical\"\n",
            ),
    );
    let host = TestHost::named("web-01").tags(&["web"]);
    let ports = [(443, "nginx"), (22, "sshd")];
    let old = eval(&old_policy, &host, &ports);
    let new = eval(&new_policy, &host, &ports);
    assert_eq!(
        old,
        findings([unexpected(22, "sshd", "web", Severity::Warning)])
    );
    assert_eq!(
        new,
        findings([unexpected(22, "sshd", "web tier", Severity::Critical)])
    );
    assert_eq!(diff(&old, &new, &new_policy, &host, &ports), vec![]);

    // A Missing is identified by its rule: a renamed rule clears and raises it.
    let none: [(u16, &str); 0] = [];
    let old = eval(&old_policy, &host, &none);
    let new = eval(&new_policy, &host, &none);
    let before = missing("web", "443/nginx", 443, "nginx", Severity::Warning);
    let after = missing("web tier", "443/nginx", 443, "nginx", Severity::Critical);
    assert_eq!(
        diff(&old, &new, &new_policy, &host, &none),
        vec![
            Change::Cleared(&before, ClearReason::Allowed),
            Change::Raised(&after)
        ]
    );
}

#[test]
fn cleared_come_first_then_raised_each_in_finding_order() {
    let a = unexpected(22, "sshd", "r", Severity::Warning);
    let b = unexpected(3306, "mysqld", "r", Severity::Warning);
    let c = unexpected(80, "httpd", "r", Severity::Warning);
    let d = missing("r", "443/nginx", 443, "nginx", Severity::Warning);
    let e = missing("a", "22", 22, "", Severity::Warning);
    let old = findings([d.clone(), b.clone(), a.clone()]);
    let new = findings([e.clone(), c.clone()]);
    assert_eq!(
        changes(&old, &new, |port, _| port == 3306, |_, _| true),
        vec![
            Change::Cleared(&a, ClearReason::Closed),
            Change::Cleared(&b, ClearReason::Allowed),
            Change::Cleared(&d, ClearReason::Opened),
            Change::Raised(&c),
            Change::Raised(&e),
        ]
    );
    // Nothing changes between equal sets, or sets equal but for rule and severity.
    assert_eq!(changes(&old, &old, |_, _| true, |_, _| true), vec![]);
    let moved = findings([
        unexpected(22, "sshd", "s", Severity::Critical),
        unexpected(3306, "mysqld", "s", Severity::Info),
        d.clone(),
    ]);
    assert_eq!(changes(&old, &moved, |_, _| true, |_, _| true), vec![]);
}
