//! Evaluation: (host facts, open ports, compiled rules) → findings. The rules are compiled
//! once per load into rank order (highest severity first, then by name), an index of the rules
//! selecting by tag (a host is matched only against the rules without `tags` and those naming
//! one of its tags), and two port indexes (allow and require entries of every rule, looked up
//! by port number), so one evaluation costs the selectors that can apply and one index lookup
//! per port, and allocates nothing per port but the findings it returns.
//!
//! Independence of rule order holds by construction: nothing depends on the file's order of
//! rules, only on the rank, which is a total order (names are unique).

use std::collections::BTreeSet;

use super::select::Selector;
use super::spec::PortSpec;
use super::{DefaultAction, Finding, Findings, Host, PortFacts, Severity};

/// The rule name of findings made by `default = "alert"` (a rule may not take it).
pub const DEFAULT_RULE: &str = "default";

/// One compiled rule.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Rule {
    pub(crate) name: Box<str>,
    pub(crate) severity: Severity,
    pub(crate) hosts: Selector,
    /// `allow` entries, in file order within the rule.
    pub(crate) allow: Vec<PortSpec>,
    /// `require` entries, in file order within the rule.
    pub(crate) require: Vec<PortSpec>,
    /// The id of `require[0]` in the require index (ids are dense over all rules).
    pub(crate) require_base: u32,
}

/// A rule as read from the file, before ranking.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ParsedRule {
    pub(crate) name: Box<str>,
    pub(crate) severity: Severity,
    pub(crate) hosts: Selector,
    pub(crate) allow: Vec<PortSpec>,
    pub(crate) require: Vec<PortSpec>,
}

/// One entry of a [`PortIndex`]: where the spec is, and its port range (kept here so that a
/// lookup touches 12-byte entries, not the specs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    low: u16,
    high: u16,
    /// Rank of the rule the entry belongs to.
    rule: u32,
    /// Index into that rule's `allow` or `require`.
    k: u32,
}

/// Entries of every rule by port: single ports sorted by port (binary search), ranges sorted
/// by their low end with the running maximum of their high ends (so a lookup walks back only
/// over ranges that can still reach the port).
#[derive(Debug, Clone, PartialEq, Default)]
struct PortIndex {
    singles: Vec<Entry>,
    ranges: Vec<Entry>,
    /// `reach[i]` = max(high) of `ranges[..=i]`.
    reach: Vec<u16>,
}

impl PortIndex {
    fn new(mut entries: Vec<Entry>) -> PortIndex {
        // Deterministic whatever the file order of rules: by port, then rank, then id/entry.
        entries.sort_unstable_by_key(|e| (e.low, e.rule, e.k));
        let (singles, ranges): (Vec<Entry>, Vec<Entry>) = entries
            .into_iter()
            .partition(|entry| entry.low == entry.high);
        let mut reach = Vec::with_capacity(ranges.len());
        let mut max = 0u16;
        for entry in &ranges {
            max = max.max(entry.high);
            reach.push(max);
        }
        let mut singles = singles;
        singles.shrink_to_fit();
        PortIndex {
            singles,
            ranges,
            reach,
        }
    }

    /// Every entry whose port range holds `port` (the caller checks the rest of the spec).
    fn at(&self, port: u16) -> impl Iterator<Item = &Entry> {
        let start = self.singles.partition_point(|e| e.low < port);
        let singles = self.singles[start..]
            .iter()
            .take_while(move |e| e.low == port);
        let end = self.ranges.partition_point(|e| e.low <= port);
        let ranges = self.ranges[..end]
            .iter()
            .zip(&self.reach[..end])
            .rev()
            .take_while(move |(_, reach)| **reach >= port)
            .filter(move |(e, _)| e.high >= port)
            .map(|(e, _)| e);
        singles.chain(ranges)
    }
}

/// A fixed set of small integers (rule ranks, requirement ids).
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: usize) -> Bits {
        Bits(vec![0; len.div_ceil(64)])
    }
    fn set(&mut self, i: u32) {
        if let Some(word) = self.0.get_mut(i as usize / 64) {
            *word |= 1 << (i % 64);
        }
    }
    fn get(&self, i: u32) -> bool {
        self.0
            .get(i as usize / 64)
            .is_some_and(|word| word & (1 << (i % 64)) != 0)
    }
    /// The members in increasing order.
    fn ones(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &word)| {
            let mut word = word;
            std::iter::from_fn(move || {
                (word != 0).then(|| {
                    let bit = word.trailing_zeros();
                    word &= word - 1;
                    (w * 64) as u32 + bit
                })
            })
        })
    }
}

/// The rules in rank order with their indexes.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Compiled {
    pub(crate) default: DefaultAction,
    /// Rank order: severity descending, then name ascending.
    pub(crate) rules: Vec<Rule>,
    /// Rules whose `hosts` has `tags`, by tag (sorted): such a rule can select a host only
    /// through one of the host's tags, so a host is matched against these rules only.
    by_tag: Vec<(Box<str>, Vec<u32>)>,
    /// Ranks of the rules without `tags`: matched against every host.
    untagged: Vec<u32>,
    /// Ranks sorted by rule name, for [`Compiled::rule_named`].
    by_name: Vec<u32>,
    allow: PortIndex,
    require: PortIndex,
    require_count: u32,
}

impl Compiled {
    /// Ranks the rules and builds the indexes.
    pub(crate) fn new(default: DefaultAction, mut parsed: Vec<ParsedRule>) -> Compiled {
        parsed.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut rules = Vec::with_capacity(parsed.len());
        let mut allow = Vec::new();
        let mut require = Vec::new();
        let mut next_id = 0u32;
        for (rank, rule) in parsed.into_iter().enumerate() {
            let rank = rank as u32;
            let entry = |(k, spec): (usize, &PortSpec)| Entry {
                low: spec.low,
                high: spec.high,
                rule: rank,
                k: k as u32,
            };
            allow.extend(rule.allow.iter().enumerate().map(entry));
            require.extend(rule.require.iter().enumerate().map(entry));
            let require_base = next_id;
            // ≤ MAX_PORT_ENTRIES in all, so no overflow.
            next_id += rule.require.len() as u32;
            rules.push(Rule {
                name: rule.name,
                severity: rule.severity,
                hosts: rule.hosts,
                allow: rule.allow,
                require: rule.require,
                require_base,
            });
        }
        let mut by_tag: std::collections::BTreeMap<&str, Vec<u32>> = Default::default();
        let mut untagged = Vec::new();
        for (rank, rule) in rules.iter().enumerate() {
            match &rule.hosts.tags {
                Some(tags) => {
                    for tag in tags.iter() {
                        by_tag.entry(tag).or_default().push(rank as u32);
                    }
                }
                None => untagged.push(rank as u32),
            }
        }
        let by_tag = by_tag
            .into_iter()
            .map(|(tag, ranks)| (Box::from(tag), ranks))
            .collect();
        let mut by_name: Vec<u32> = (0..rules.len() as u32).collect();
        by_name.sort_by(|&a, &b| rules[a as usize].name.cmp(&rules[b as usize].name));
        Compiled {
            default,
            rules,
            by_tag,
            untagged,
            by_name,
            allow: PortIndex::new(allow),
            require: PortIndex::new(require),
            require_count: next_id,
        }
    }

    /// The rule called `name`, if any.
    pub(crate) fn rule_named(&self, name: &str) -> Option<&Rule> {
        let at = self
            .by_name
            .binary_search_by(|&rank| (*self.rules[rank as usize].name).cmp(name))
            .ok()?;
        Some(&self.rules[self.by_name[at] as usize])
    }

    /// See [`super::Policy::evaluate`].
    pub(crate) fn evaluate<'p>(
        &self,
        host: &Host<'_>,
        ports: impl IntoIterator<Item = PortFacts<'p>>,
    ) -> Findings {
        let mut findings = BTreeSet::new();
        let selected = self.selecting(host);
        let Some(first) = selected
            .ones()
            .next()
            .map(|rank| &self.rules[rank as usize])
        else {
            // No rule selects the host: the file's default decides, for every port.
            if self.default == DefaultAction::Alert {
                for port in ports {
                    findings.insert(Finding::Unexpected {
                        port: port.port,
                        process: port.process.into(),
                        rule: DEFAULT_RULE.into(),
                        severity: Severity::Warning,
                    });
                }
            }
            return Findings(findings);
        };
        let mut satisfied = Bits::new(self.require_count as usize);
        for port in ports {
            let expected = self.allow.at(port.port).any(|entry| {
                selected.get(entry.rule) && self.spec(entry, false).matches_beyond_port(&port)
            });
            if !expected {
                findings.insert(Finding::Unexpected {
                    port: port.port,
                    process: port.process.into(),
                    rule: first.name.clone(),
                    severity: first.severity,
                });
            }
            if self.require_count > 0 {
                for entry in self.require.at(port.port) {
                    if selected.get(entry.rule) && self.spec(entry, true).matches_beyond_port(&port)
                    {
                        satisfied.set(self.rules[entry.rule as usize].require_base + entry.k);
                    }
                }
            }
        }
        for rank in selected.ones() {
            let rule = &self.rules[rank as usize];
            for (k, spec) in rule.require.iter().enumerate() {
                if !satisfied.get(rule.require_base + k as u32) {
                    findings.insert(missing(rule, spec));
                }
            }
        }
        Findings(findings)
    }

    /// The ranks of the rules that select `host`: those without `tags`, and those with one of
    /// the host's tags (each checked on all its keys).
    fn selecting(&self, host: &Host<'_>) -> Bits {
        let mut selected = Bits::new(self.rules.len());
        for &rank in &self.untagged {
            if self.rules[rank as usize].hosts.selects(host) {
                selected.set(rank);
            }
        }
        for tag in host.tags {
            let Ok(at) = self.by_tag.binary_search_by(|(t, _)| (**t).cmp(&**tag)) else {
                continue;
            };
            for &rank in &self.by_tag[at].1 {
                if !selected.get(rank) && self.rules[rank as usize].hosts.selects(host) {
                    selected.set(rank);
                }
            }
        }
        selected
    }

    /// The spec an index entry stands for.
    fn spec(&self, entry: &Entry, require: bool) -> &PortSpec {
        let rule = &self.rules[entry.rule as usize];
        let list = if require { &rule.require } else { &rule.allow };
        &list[entry.k as usize]
    }

    /// See [`super::Policy::requires`].
    pub(crate) fn requires(&self, host: &Host<'_>, rule: &str, spec: &str) -> bool {
        self.rule_named(rule).is_some_and(|rule| {
            rule.require.iter().any(|s| *s.text == *spec) && rule.hosts.selects(host)
        })
    }

    /// See [`super::Policy::allowing_rule`]: one rule after another, no index.
    pub(crate) fn allowing_rule(&self, host: &Host<'_>, port: &PortFacts<'_>) -> Option<&str> {
        self.rules
            .iter()
            .filter(|rule| rule.hosts.selects(host))
            .find(|rule| rule.allow.iter().any(|spec| spec.matches(port)))
            .map(|rule| &*rule.name)
    }
}

/// The `Missing` finding of `spec` required by `rule`.
fn missing(rule: &Rule, spec: &PortSpec) -> Finding {
    Finding::Missing {
        rule: rule.name.clone(),
        spec: spec.text.clone(),
        port: spec.low,
        process: spec.process_text.clone(),
        severity: rule.severity,
    }
}
