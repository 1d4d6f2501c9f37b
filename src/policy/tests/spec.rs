//! Globs, port ranges and the table form's matching: the edge cases.

use super::*;
use crate::policy::spec::{BindScope, Glob, Proto, glob_problem, parse_ports, split_spec};

#[test]
fn globs_are_anchored_case_sensitive_and_count_characters() {
    let cases: &[(&str, &str, bool)] = &[
        ("nginx", "nginx", true),
        ("nginx", "nginx2", false),
        ("nginx", "Nginx", false),
        ("ngin", "nginx", false),
        ("*gin*", "nginx", true),
        ("python*", "python3.12", true),
        ("python*", "python", true),
        ("python*", "Python3", false),
        ("python*", "xpython3", false),
        ("web-*", "my-web-01", false),
        ("*", "", true),
        ("*", "anything at all", true),
        ("?", "", false),
        ("?", "a", true),
        ("?", "ab", false),
        ("?", "é", true),   // one character, two bytes
        ("??", "é", false), // not one per byte
        ("a?c", "a€c", true),
        ("java*", "java", true),
        ("*d", "sshd", true),
        ("*a", "aaa", true),
        ("a*a", "a", false),
        ("a*b*c", "aXXbYYc", true),
        ("a*b*c", "aXXbYY", false),
        ("a**b", "ab", true),
        ("*?*", "", false),
        ("*?*", "x", true),
        ("my app", "my app", true),
        ("my*app", "my big app", true),
        ("postgres: *", "postgres: writer", true),
        ("日本*", "日本語", true),
        ("*語", "日本語", true),
        ("?本?", "日本語", true),
    ];
    for &(glob, text, expected) in cases {
        assert_eq!(
            Glob::new(glob).matches(text),
            expected,
            "{glob:?} vs {text:?}"
        );
    }
    // The special shapes compile to their fast variants.
    assert_eq!(Glob::new("nginx"), Glob::Exact("nginx".into()));
    assert_eq!(Glob::new("web-*"), Glob::Prefix("web-".into()));
    assert_eq!(Glob::new("*"), Glob::Any);
    assert!(matches!(Glob::new("*-01"), Glob::Pattern(_)));
}

#[test]
fn glob_texts_that_cannot_be_meant_are_refused() {
    assert!(glob_problem("process", "").unwrap().contains("is empty"));
    assert!(
        glob_problem("process", " sshd")
            .unwrap()
            .contains("white space")
    );
    assert!(
        glob_problem("process", "sshd\t")
            .unwrap()
            .contains("white space")
    );
    assert!(
        glob_problem("process", &"x".repeat(257))
            .unwrap()
            .contains("at most 256")
    );
    assert_eq!(glob_problem("process", &"é".repeat(256)), None);
    assert_eq!(glob_problem("process", "my app"), None);
}

#[test]
fn port_ranges_edges() {
    assert_eq!(parse_ports("0"), Ok((0, 0)));
    assert_eq!(parse_ports("65535"), Ok((65535, 65535)));
    assert_eq!(parse_ports("0-65535"), Ok((0, 65535)));
    assert_eq!(parse_ports("1-1"), Ok((1, 1)));
    assert_eq!(parse_ports("0022"), Ok((22, 22)));
    assert!(
        parse_ports("5-3")
            .unwrap_err()
            .contains("runs backwards (5 > 3)")
    );
    for bad in ["65536", "99999999999999999999", "70000-70001", "1-65536"] {
        assert!(
            parse_ports(bad).unwrap_err().contains("out of range"),
            "{bad}"
        );
    }
    for bad in [
        "", "-", "-5", "5-", "+5", " 5", "5 ", "1 - 2", "1--2", "0x50", "٣", "22a", "*",
    ] {
        assert!(
            parse_ports(bad)
                .unwrap_err()
                .contains("is not a port or port range"),
            "{bad:?}"
        );
    }
    assert_eq!(split_spec("443/nginx"), Ok((443, 443, Some("nginx"))));
    assert_eq!(split_spec("443"), Ok((443, 443, None)));
    assert_eq!(split_spec("22/"), Ok((22, 22, Some(""))));
    assert_eq!(split_spec("80/a/b"), Ok((80, 80, Some("a/b"))));
    assert_eq!(
        split_spec("8000-8099/python*"),
        Ok((8000, 8099, Some("python*")))
    );
    assert!(split_spec("/nginx").is_err());
}

#[test]
fn string_entries_in_the_file_take_the_same_edges() {
    let allow = |entries: &str| format!("[[rule]]\nname = \"r\"\nallow = [{entries}]\n");
    policy(&allow(
        r#""0", "65535", "1-1", "0-65535/*", "8080/my app", "9000/日本語*""#,
    ));
    let found = problems(&allow(r#""5-3", "65536", "22/", "22/ sshd", "", "x/y""#));
    let expected = [
        "policy.toml:3:10: `allow`: the port range \"5-3\" runs backwards",
        "policy.toml:3:17: `allow`: port \"65536\" is out of range",
        "policy.toml:3:26: `process` is empty",
        "policy.toml:3:33: `process` = \" sshd\" begins or ends with white space",
        "policy.toml:3:45: `allow`: \"\" is not a port or port range",
        "policy.toml:3:49: `allow`: \"x\" is not a port or port range",
    ];
    assert_eq!(found.len(), expected.len(), "{found:#?}");
    for (found, expected) in found.iter().zip(expected) {
        assert!(
            found.starts_with(expected),
            "{found:?} does not start with {expected:?}"
        );
    }
}

#[test]
fn bind_scopes() {
    let loopback = ["127.0.0.1", "127.255.3.4", "::1", "::ffff:127.0.0.1"];
    let private = [
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "100.64.0.1",
        "100.127.255.255",
        "169.254.1.1",
        "fe80::1",
        "fd00::1",
        "fc00::1",
        "::ffff:10.1.2.3",
    ];
    let public = [
        "0.0.0.0",
        "::",
        "8.8.8.8",
        "172.32.0.1",
        "172.15.255.255",
        "100.128.0.1",
        "100.63.255.255",
        "2001:db8::1",
        "fec0::1",
        "192.169.0.1",
    ];
    // Addresses as the `cwp` checks let them through (brackets, spaces, zone ids and
    // garbage are refused there, before any policy sees them).
    for ip in loopback {
        assert!(BindScope::Loopback.admits(Some(bind(ip))), "{ip}");
        assert!(BindScope::Private.admits(Some(bind(ip))), "{ip}");
    }
    for ip in private {
        assert!(!BindScope::Loopback.admits(Some(bind(ip))), "{ip}");
        assert!(BindScope::Private.admits(Some(bind(ip))), "{ip}");
    }
    for ip in public {
        assert!(!BindScope::Loopback.admits(Some(bind(ip))), "{ip}");
        assert!(!BindScope::Private.admits(Some(bind(ip))), "{ip}");
        assert!(BindScope::Any.admits(Some(bind(ip))), "{ip}");
    }
    // A backend that did not say: only `any` admits it.
    assert!(!BindScope::Loopback.admits(None));
    assert!(!BindScope::Private.admits(None));
    assert!(BindScope::Any.admits(None));
}

#[test]
fn table_entries_match_proto_bind_and_user_with_a_backend_that_reports_them() {
    let cwp = Capabilities {
        proto: true,
        bind: true,
        user: true,
    };
    let text = r#"[[rule]]
name = "db"
allow = [
  { port = 5432, process = "postgres", proto = "tcp", bind = "loopback", user = "postgres" },
  { port = "8000-8001", proto = "udp" },
  { port = 0x50 },
]
"#;
    let policy = Policy::from_toml_str(text, Path::new("policy.toml"), cwp).unwrap();
    let host = TestHost::named("db-01");
    let facts = |port: u16, process: &'static str, proto, bind_ip, user| PortFacts {
        port,
        process,
        proto,
        bind_ip,
        user,
    };
    let ok = facts(
        5432,
        "postgres",
        Some("tcp"),
        Some(bind("127.0.0.1")),
        Some("postgres"),
    );
    let flagged = |p: PortFacts<'_>| policy.evaluate(&host.host(), [p]) != Findings::default();
    assert!(!flagged(ok));
    assert!(!flagged(PortFacts {
        proto: Some("TCP6"),
        bind_ip: Some(bind("::1")),
        ..ok
    }));
    assert!(flagged(PortFacts {
        proto: Some("udp"),
        ..ok
    }));
    assert!(flagged(PortFacts { proto: None, ..ok }));
    assert!(flagged(PortFacts {
        bind_ip: Some(bind("10.0.0.5")),
        ..ok
    }));
    assert!(flagged(PortFacts {
        bind_ip: None,
        ..ok
    }));
    assert!(flagged(PortFacts {
        user: Some("root"),
        ..ok
    }));
    assert!(flagged(PortFacts { user: None, ..ok }));
    assert!(flagged(PortFacts {
        process: "postgres2",
        ..ok
    }));
    assert!(!flagged(facts(8001, "dnsmasq", Some("udp"), None, None)));
    assert!(flagged(facts(8001, "dnsmasq", Some("tcp"), None, None)));
    assert!(flagged(facts(8002, "dnsmasq", Some("udp"), None, None)));
    // `port = 0x50` is port 80, any process.
    assert!(!flagged(facts(80, "anything", None, None, None)));
    assert_eq!(Proto::Tcp.as_str(), "tcp");
}

fn bind(text: &str) -> crate::api::cwp::BindIp {
    crate::api::cwp::BindIp::parse(text).unwrap()
}
