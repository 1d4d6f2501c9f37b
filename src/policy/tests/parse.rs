//! The file format: what is accepted, and every problem at file:line:col.

use super::*;
use crate::policy::DefaultAction;

#[test]
fn the_spec_example_parses() {
    let policy = policy(
        r#"
default = "allow"
[[rule]]
name = "web tier"
hosts = { names = ["web-*"], accounts = ["prod"], tags = ["web"] }
allow = ["22/sshd", "80/nginx", "443/nginx", "8000-8099/python*"]
require = ["443/nginx"]
severity = "warning"
"#,
    );
    assert_eq!(policy.rule_count(), 1);
    assert_eq!(policy.default_action(), DefaultAction::Allow);
}

#[test]
fn an_empty_file_allows_everything() {
    let policy = policy("");
    assert_eq!(policy.rule_count(), 0);
    assert_eq!(policy.default_action(), DefaultAction::Allow);
}

#[test]
fn table_fields_yunjing_does_not_report_are_refused_at_their_place() {
    let text = r#"[[rule]]
name = "db"
allow = [{ port = 5432, process = "postgres", bind = "loopback" }]
require = [{ port = "5432", proto = "tcp", user = "postgres" }]
"#;
    let found = problems(text);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(
        found[0].starts_with(
            "policy.toml:3:47: `bind` cannot be checked: the yunjing backend does not report"
        ),
        "{found:#?}"
    );
    assert!(
        found[1].starts_with("policy.toml:4:29: `proto` cannot be checked"),
        "{found:#?}"
    );
    assert!(
        found[2].starts_with("policy.toml:4:44: `user` cannot be checked"),
        "{found:#?}"
    );
    // The cwp backend's capabilities accept them.
    let all = Capabilities {
        proto: true,
        bind: true,
        user: true,
    };
    assert!(Policy::from_toml_str(text, Path::new("policy.toml"), all).is_ok());
    // And a backend that lacks only `user` refuses only `user`.
    let found = problems_with(
        text,
        Capabilities {
            proto: true,
            bind: true,
            user: false,
        },
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with("policy.toml:4:44: `user` cannot be checked"),
        "{found:#?}"
    );
}
