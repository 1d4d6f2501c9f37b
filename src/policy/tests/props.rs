//! Property tests: no input makes the parser panic; evaluation is independent of rule order
//! and agrees with a one-rule-at-a-time model; `changes` turns old findings into new ones.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::*;
use crate::policy::spec::{Glob, split_spec};
use crate::policy::{Change, DEFAULT_RULE, changes};

/// A rule as generated: what the model evaluates and what is written into the file.
#[derive(Debug, Clone)]
struct GenRule {
    name: String,
    severity: Severity,
    tags: Option<Vec<&'static str>>,
    names: Option<Vec<&'static str>>,
    accounts: Option<Vec<&'static str>>,
    wan: Option<bool>,
    allow: Vec<&'static str>,
    require: Vec<&'static str>,
}

const SPECS: &[&str] = &[
    "22/sshd",
    "80",
    "443/nginx",
    "8000-8099/python*",
    "0-1023",
    "3306/mysql?",
    "9100/*exporter",
    "1000-1000/x",
    "5000-65535/*",
];
const TAGS: &[&str] = &["web", "db", "edge"];
const NAMES: &[&str] = &["web-*", "db-?1", "*", "x"];
const ACCOUNTS: &[&str] = &["default", "prod"];
const SEVERITIES: &[Severity] = &[
    Severity::Info,
    Severity::Notice,
    Severity::Warning,
    Severity::Critical,
];

fn subset(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<&'static str>> {
    proptest::sample::subsequence(pool.to_vec(), 1..=pool.len().min(3))
}

fn gen_rule(index: usize) -> impl Strategy<Value = GenRule> {
    (
        proptest::sample::select(SEVERITIES.to_vec()),
        proptest::option::of(subset(TAGS)),
        proptest::option::of(subset(NAMES)),
        proptest::option::of(subset(ACCOUNTS)),
        proptest::option::of(any::<bool>()),
        proptest::sample::subsequence(SPECS.to_vec(), 0..4),
        proptest::sample::subsequence(SPECS.to_vec(), 0..2),
        // Names whose order differs from the index order, so the tie-break is exercised.
        proptest::sample::select(vec!["alpha", "omega", "mid", "Zed", "ä"]),
    )
        .prop_map(
            move |(severity, tags, names, accounts, wan, allow, require, stem)| GenRule {
                name: format!("{stem} {index}"),
                severity,
                tags,
                names,
                accounts,
                wan,
                allow,
                require,
            },
        )
}

fn gen_rules() -> impl Strategy<Value = Vec<GenRule>> {
    (0usize..7).prop_flat_map(|n| (0..n).map(gen_rule).collect::<Vec<_>>())
}

fn quoted(list: &[&str]) -> String {
    let items: Vec<String> = list.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn render(alert: bool, rules: &[GenRule]) -> String {
    let mut text = format!("default = \"{}\"\n", if alert { "alert" } else { "allow" });
    for rule in rules {
        text.push_str(&format!(
            "[[rule]]\nname = {:?}\nseverity = \"{}\"\n",
            rule.name,
            rule.severity.as_str()
        ));
        let mut hosts = Vec::new();
        if let Some(tags) = &rule.tags {
            hosts.push(format!("tags = {}", quoted(tags)));
        }
        if let Some(names) = &rule.names {
            hosts.push(format!("names = {}", quoted(names)));
        }
        if let Some(accounts) = &rule.accounts {
            hosts.push(format!("accounts = {}", quoted(accounts)));
        }
        if let Some(wan) = rule.wan {
            hosts.push(format!("wan = {wan}"));
        }
        text.push_str(&format!("hosts = {{ {} }}\n", hosts.join(", ")));
        if !rule.allow.is_empty() {
            text.push_str(&format!("allow = {}\n", quoted(&rule.allow)));
        }
        if !rule.require.is_empty() {
            text.push_str(&format!("require = {}\n", quoted(&rule.require)));
        }
    }
    text
}

fn spec_matches(spec: &str, port: u16, process: &str) -> bool {
    let (low, high, glob) = split_spec(spec).unwrap();
    low <= port && port <= high && glob.is_none_or(|g| Glob::new(g).matches(process))
}

/// The policy's meaning, one rule at a time, straight from the generated rules.
fn model(alert: bool, rules: &[GenRule], host: &TestHost, ports: &[(u16, &str)]) -> Findings {
    let selected: Vec<&GenRule> = rules.iter().filter(|r| selects(r, host)).collect();
    let mut out = BTreeSet::new();
    // The reporting rule: highest severity, then the least name.
    let top = selected
        .iter()
        .min_by(|a, b| b.severity.cmp(&a.severity).then(a.name.cmp(&b.name)));
    for &(port, process) in ports {
        let expected = selected
            .iter()
            .any(|r| r.allow.iter().any(|s| spec_matches(s, port, process)));
        match top {
            Some(rule) if !expected => {
                out.insert(unexpected(port, process, &rule.name, rule.severity));
            }
            None if alert => {
                out.insert(unexpected(port, process, DEFAULT_RULE, Severity::Warning));
            }
            _ => {}
        }
    }
    for rule in &selected {
        for spec in &rule.require {
            if !ports.iter().any(|&(p, name)| spec_matches(spec, p, name)) {
                let (low, _, glob) = split_spec(spec).unwrap();
                out.insert(missing(
                    &rule.name,
                    spec,
                    low,
                    glob.unwrap_or(""),
                    rule.severity,
                ));
            }
        }
    }
    Findings(out)
}

/// Whether `rule` selects `host`: every key given matches, any entry of a list may.
fn selects(rule: &GenRule, host: &TestHost) -> bool {
    rule.tags
        .as_ref()
        .is_none_or(|t| t.iter().any(|t| host.tags.iter().any(|h| **h == **t)))
        && rule
            .names
            .as_ref()
            .is_none_or(|n| n.iter().any(|g| Glob::new(g).matches(&host.name)))
        && rule
            .accounts
            .as_ref()
            .is_none_or(|a| a.contains(&&*host.account))
        && rule.wan.is_none_or(|w| w == host.wan)
}

fn gen_host() -> impl Strategy<Value = TestHost> {
    (
        proptest::sample::select(vec!["web-01", "db-11", "db-01", "x", ""]),
        proptest::sample::subsequence(TAGS.to_vec(), 0..=3),
        proptest::sample::select(ACCOUNTS.to_vec()),
        any::<bool>(),
    )
        .prop_map(|(name, tags, account, wan)| {
            TestHost::named(name).tags(&tags).account(account).wan(wan)
        })
}

fn gen_ports() -> impl Strategy<Value = Vec<(u16, &'static str)>> {
    proptest::collection::vec(
        (
            proptest::sample::select(vec![0u16, 22, 80, 443, 1000, 3306, 5000, 8050, 9100, 65535]),
            proptest::sample::select(vec![
                "sshd",
                "nginx",
                "python3",
                "mysqld",
                "mysql8",
                "node_exporter",
                "x",
                "",
            ]),
        ),
        0..8,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn evaluation_is_independent_of_rule_order_and_matches_the_model(
        (rules, shuffled) in gen_rules().prop_flat_map(|rules| {
            let shuffled = Just(rules.clone()).prop_shuffle();
            (Just(rules), shuffled)
        }),
        alert in any::<bool>(),
        hosts in proptest::collection::vec(gen_host(), 1..4),
        ports in gen_ports(),
    ) {
        let policy = policy(&render(alert, &rules));
        let reordered = policy_text_of(alert, &shuffled);
        // The compiled policies are equal, not only their answers.
        prop_assert_eq!(&policy, &reordered);
        for host in &hosts {
            let found = eval(&policy, host, &ports);
            prop_assert_eq!(&found, &eval(&reordered, host, &ports));
            prop_assert_eq!(&found, &model(alert, &rules, host, &ports));
            // `allowing_rule` (no index) agrees on which ports are expected.
            for &(p, name) in &ports {
                let allowed = policy.allowing_rule(&host.host(), &port(p, name)).is_some();
                let flagged = found.iter().any(|f| matches!(f,
                    Finding::Unexpected { port, process, .. } if *port == p && **process == *name));
                if rules.iter().any(|rule| selects(rule, host)) {
                    prop_assert_eq!(allowed, !flagged, "port {} {}", p, name);
                }
            }
        }
    }

    #[test]
    fn changes_turn_the_old_findings_into_the_new_ones(
        rules_old in gen_rules(),
        rules_new in gen_rules(),
        host in gen_host(),
        ports_old in gen_ports(),
        ports_new in gen_ports(),
        alert in any::<bool>(),
    ) {
        let old_policy = policy(&render(alert, &rules_old));
        let new_policy = policy(&render(!alert, &rules_new));
        let old = eval(&old_policy, &host, &ports_old);
        let new = eval(&new_policy, &host, &ports_new);
        let applied = changes(
            &old,
            &new,
            |p, name| ports_new.iter().any(|&(q, n)| p == q && n == name),
            |rule, spec| new_policy.requires(&host.host(), rule, spec),
        );
        let identity = |f: &Finding| match f {
            Finding::Unexpected { port, process, .. } => (0, port.to_string(), process.to_string()),
            Finding::Missing { rule, spec, .. } => (1, rule.to_string(), spec.to_string()),
        };
        let mut state: BTreeSet<_> = old.iter().map(identity).collect();
        let mut raised = false;
        for change in &applied {
            match change {
                Change::Cleared(f, _) => {
                    prop_assert!(!raised, "a clear after a raise");
                    prop_assert!(state.remove(&identity(f)), "cleared twice or never raised");
                }
                Change::Raised(f) => {
                    raised = true;
                    prop_assert!(state.insert(identity(f)), "raised twice");
                }
            }
        }
        prop_assert_eq!(state, new.iter().map(identity).collect::<BTreeSet<_>>());
    }

    #[test]
    fn no_text_makes_the_parser_panic(text in "[\\PC\n\"'\\[\\]{}=,.#a-z0-9*?/ -]{0,300}") {
        let _ = Policy::from_toml_str(&text, Path::new("p.toml"), Capabilities::YUNJING);
    }

    #[test]
    fn no_bytes_make_loading_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(text) = crate::problems::text_from_bytes(bytes, Path::new("p.toml")) {
            let _ = Policy::from_toml_str(&text, Path::new("p.toml"), Capabilities::YUNJING);
        }
    }

    /// Plausible fragments in any order: reaches far deeper into the checks than random text.
    #[test]
    fn no_arrangement_of_policy_fragments_makes_the_parser_panic(
        fragments in proptest::collection::vec(proptest::sample::select(FRAGMENTS.to_vec()), 0..24),
        caps in any::<(bool, bool, bool)>(),
    ) {
        let text: String = fragments.concat();
        let caps = Capabilities { proto: caps.0, bind: caps.1, user: caps.2 };
        if let Ok(policy) = Policy::from_toml_str(&text, Path::new("p.toml"), caps) {
            let host = TestHost::named("web-01").tags(&["web"]);
            let _ = eval(&policy, &host, &[(22, "sshd"), (0, ""), (65535, "é")]);
        }
    }
}

/// The policy of `rules` in that file order.
fn policy_text_of(alert: bool, rules: &[GenRule]) -> Policy {
    policy(&render(alert, rules))
}

const FRAGMENTS: &[&str] = &[
    "[[rule]]\n",
    "[rule]\n",
    "name = \"a\"\n",
    "name = \"b\"\n",
    "name = \"default\"\n",
    "name = 5\n",
    "default = \"alert\"\n",
    "default = \"deny\"\n",
    "severity = \"critical\"\n",
    "severity = \"loud\"\n",
    "hosts = { tags = [\"web\"] }\n",
    "hosts = { names = [\"web-*\", \"\"], wan = 1 }\n",
    "hosts = { uuids = [\"6B6CD843-*\", \"zz\"], accounts = [\"Bad!\"] }\n",
    "hosts = { regions = [], nope = 1 }\n",
    "hosts = []\n",
    "allow = [\"22/sshd\", \"5-3\", \"65536\", \"22/\", \"*\", \"0-65535/?*\"]\n",
    "allow = [{ port = 5432, bind = \"loopback\", proto = \"sctp\", user = \"\" }]\n",
    "allow = [{ port = -1 }, { port = \"1-2\", process = \" x\" }, { process = \"y\" }, 3]\n",
    "allow = [{ port = 99999999999999999999999 }]\n",
    "require = [\"443/nginx\", \"443/nginx\"]\n",
    "require = []\n",
    "[rule.hosts]\n",
    "tags = [\"db\"]\n",
    "\"\" = 1\n",
    "name = \"\u{202e}x\"\n",
    "x = 1970-01-01\n",
    "# comment\n",
    "]]\n",
];
