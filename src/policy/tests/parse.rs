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

#[test]
fn every_mistake_is_reported_in_one_pass_at_its_place() {
    let text = r#"default = "deny"
colour = "red"
[[rule]]
name = "web"
severity = "loud"
hosts = { tags = [], names = ["web-*", " web"], wan = "yes", uuids = ["nope"], accounts = ["Prod!"], zone = "a" }
allow = ["22/sshd", "22/sshd", "5-3", 443, { port = 99999, process = "" }, { process = "x" }, { port = 1, colour = "red" }]
require = []
when = "always"
[[rule]]
name = "web"
allow = "22"
[[rule]]
severity = "info"
[[rule]]
name = "default"
[[rule]]
name = "bad\u0007name"
"#;
    let found = problems(text);
    let expected = [
        "policy.toml:1:11: `default` = \"deny\" is not a default",
        "policy.toml:2:1: unknown key \"colour\" at the top of the policy file",
        "policy.toml:5:12: `severity` = \"loud\" is not a severity",
        "policy.toml:6:18: `tags` is empty: an empty list selects no host",
        "policy.toml:6:40: `names` = \" web\" begins or ends with white space",
        "policy.toml:6:55: `wan` must be true (hosts with a WAN IP) or false",
        "policy.toml:6:71: \"nope\" is not an agent Uuid",
        "policy.toml:6:92: \"Prod!\" is not an account name",
        "policy.toml:6:102: unknown key \"zone\" in `hosts`",
        "policy.toml:7:21: \"22/sshd\" is listed twice in `allow` (first on line 7)",
        "policy.toml:7:32: `allow`: the port range \"5-3\" runs backwards",
        "policy.toml:7:39: `allow` must be a list of \"PORT[-PORT][/PROCESS]\" strings",
        "policy.toml:7:53: port 99999 is out of range",
        "policy.toml:7:70: `process` is empty",
        "policy.toml:7:76: this `allow` entry has no `port`",
        "policy.toml:7:107: unknown key \"colour\" in an `allow` entry",
        "policy.toml:8:11: `require` is empty",
        "policy.toml:9:1: unknown key \"when\" in a [[rule]]",
        "policy.toml:11:8: duplicate rule name \"web\": already the name of the rule on line 4",
        "policy.toml:12:9: `allow` must be a list of port entries",
        "policy.toml:13:1: this [[rule]] has no `name`",
        "policy.toml:16:8: `name` = \"default\" is taken",
        "policy.toml:18:8: `name` = \"bad\\u{7}name\" contains U+0007 (a control character)",
    ];
    for (found, expected) in found.iter().zip(&expected) {
        assert!(
            found.starts_with(expected),
            "{found:?}\n  does not start with\n{expected:?}"
        );
    }
    assert_eq!(found.len(), expected.len(), "{found:#?}");
}

#[test]
fn syntax_errors_are_placed() {
    let found = problems("[[rule]]\nname = \"a\"\nallow = [\"22\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(found[0].starts_with("policy.toml:3:"), "{found:#?}");
    let found = problems("[[rule]]\nname = \"a\"\nname = \"b\"\n");
    assert!(
        found[0].starts_with("policy.toml:3:1: duplicate key"),
        "{found:#?}"
    );
    // A `[rule]` table instead of `[[rule]]`.
    let found = problems("[rule]\nname = \"a\"\n");
    assert!(
        found[0].starts_with("policy.toml:1:1: `rule` must be a list of [[rule]] tables"),
        "{found:#?}"
    );
    let found = problems("rule = [1]\n");
    assert!(
        found[0].starts_with("policy.toml:1:9: `rule` must be a [[rule]] table"),
        "{found:#?}"
    );
}

#[test]
fn rules_may_be_written_as_inline_tables_and_hosts_as_a_subtable() {
    let policy = policy("rule = [{ name = \"a\", allow = [\"22\"] }]\n");
    assert_eq!(policy.rule_count(), 1);
    let policy = policy_of("[[rule]]\nname = \"a\"\n[rule.hosts]\ntags = [\"web\"]\n");
    assert_eq!(policy.rule_count(), 1);
}

fn policy_of(text: &str) -> Policy {
    policy(text)
}

#[test]
fn sizes_are_bounded() {
    // Rules.
    let rules = "[[rule]]\nname = \"r\"\n".repeat(crate::policy::MAX_RULES + 1);
    let found = problems(&rules);
    assert_eq!(found.len(), 1, "{:#?}", &found[..3.min(found.len())]);
    assert!(
        found[0].contains("has 10001 rules; a policy may have at most 10000"),
        "{found:#?}"
    );
    // Entries of one list.
    let many: Vec<String> = (0..=crate::policy::MAX_LIST_ENTRIES)
        .map(|i| format!("\"{}\"", i % 65536))
        .collect();
    let found = problems(&format!(
        "[[rule]]\nname = \"r\"\nallow = [{}]\n",
        many.join(",")
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].starts_with(
            "policy.toml:3:9: `allow` has 10001 entries; a list may have at most 10000"
        ),
        "{found:#?}"
    );
    // Entries of the whole file.
    let ports: Vec<String> = (0..10_000).map(|i| format!("\"{i}\"")).collect();
    let rule = |i: usize| format!("[[rule]]\nname = \"r{i}\"\nallow = [{}]\n", ports.join(","));
    let text: String = (0..11).map(rule).collect();
    let found = problems(&text);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].contains("more than 100000 `allow` and `require` entries"),
        "{found:#?}"
    );
    // Names and globs.
    let long = "n".repeat(crate::policy::MAX_RULE_NAME_CHARS + 1);
    let found = problems(&format!("[[rule]]\nname = \"{long}\"\n"));
    assert!(
        found[0].contains("is 129 characters long; write at most 128"),
        "{found:#?}"
    );
    let glob = "p".repeat(crate::policy::MAX_GLOB_CHARS + 1);
    let found = problems(&format!("[[rule]]\nname = \"r\"\nallow = [\"1/{glob}\"]\n"));
    assert!(
        found[0].contains("`process` is 257 characters long; write at most 256"),
        "{found:#?}"
    );
    // The text.
    let big = format!("# {}\n", "x".repeat(crate::policy::MAX_POLICY_BYTES));
    let found = problems(&big);
    assert_eq!(found.len(), 1);
    assert!(
        found[0].starts_with("policy.toml: the policy file is 8388611 bytes"),
        "{found:#?}"
    );
}

#[test]
fn control_and_bidi_characters_are_refused_in_every_name() {
    for (place, line) in [
        // TOML escapes: the raw characters are TOML syntax errors already.
        (r#"name = "a\u202eb""#, 2),
        (
            r#"name = "r"
hosts = { tags = ["we\u0000b"] }"#,
            3,
        ),
        (
            r#"name = "r"
hosts = { regions = ["ap\u2028"] }"#,
            3,
        ),
        (
            r#"name = "r"
hosts = { names = ["web\u001b[31m"] }"#,
            3,
        ),
        (
            r#"name = "r"
allow = ["22/ss\u007fhd"]"#,
            3,
        ),
        (
            r#"name = "r"
allow = [{ port = 1, user = "\u0085" }]"#,
            3,
        ),
    ] {
        let text = format!("[[rule]]\n{place}\n");
        let found = problems_with(
            &text,
            Capabilities {
                proto: true,
                bind: true,
                user: true,
            },
        );
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(&format!("policy.toml:{line}:")),
            "{found:#?}"
        );
        assert!(found[0].contains(" contains U+"), "{found:#?}");
    }
}

#[test]
fn load_reads_the_file_and_reports_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.toml");
    let caps = Capabilities::YUNJING;
    let errors = Policy::load(&path, caps).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.NotFound");
    assert!(errors.to_string().contains("[policy]"), "{errors}");
    std::fs::write(&path, "[[rule]]\nname = \"a\"\nallow = [\"x\"]\n").unwrap();
    let errors = Policy::load(&path, caps).unwrap_err();
    assert_eq!(errors.code(), "ConfigError.Invalid");
    assert!(
        errors
            .to_string()
            .starts_with(&format!("{}:3:10:", path.display())),
        "{errors}"
    );
    std::fs::write(&path, "[[rule]]\nname = \"a\"\nallow = [\"22\"]\n").unwrap();
    assert_eq!(Policy::load(&path, caps).unwrap().rule_count(), 1);
}

#[test]
fn deeply_nested_values_are_refused_not_a_stack_overflow() {
    for depth in [1_000, 100_000] {
        let text = format!("default = {}{}\n", "[".repeat(depth), "]".repeat(depth));
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{depth}: {found:#?}");
        assert!(found[0].starts_with("policy.toml:1:"), "{found:#?}");
        assert!(found[0].contains("max recursion depth"), "{found:#?}");
        let text = format!("x = {}1{}\n", "{ a = ".repeat(depth), " }".repeat(depth));
        assert_eq!(problems(&text).len(), 1, "{depth}");
    }
}
