//! Host selectors: a rule's `hosts = { names, uuids, accounts, tags, regions, wan }`, compiled
//! for matching many hosts. Every key given must match (AND); within a list any entry may
//! (OR); a selector with no key selects every host. Exact names and Uuids go to sorted lists
//! searched in O(log n), globs are tried one by one.

use super::Host;
use super::spec::Glob;

/// Exact strings and globs of one list key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct NameSet {
    /// Entries without a wildcard, sorted, no duplicates.
    exact: Vec<Box<str>>,
    /// Entries with a wildcard, in file order.
    globs: Vec<Glob>,
}

impl NameSet {
    /// A set of the given globs.
    pub(crate) fn new(globs: impl IntoIterator<Item = Glob>) -> NameSet {
        let mut set = NameSet::default();
        for glob in globs {
            match glob {
                Glob::Exact(text) => set.exact.push(text),
                other => set.globs.push(other),
            }
        }
        set.exact.sort_unstable();
        set.exact.dedup();
        set
    }

    /// Whether `text` is in the set or matches one of its globs.
    pub(crate) fn matches(&self, text: &str) -> bool {
        self.exact
            .binary_search_by(|entry| (**entry).cmp(text))
            .is_ok()
            || self.globs.iter().any(|glob| glob.matches(text))
    }
}

/// Exact strings (accounts, tags, regions), sorted.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct ExactSet(Vec<Box<str>>);

impl ExactSet {
    pub(crate) fn new(items: impl IntoIterator<Item = Box<str>>) -> ExactSet {
        let mut items: Vec<Box<str>> = items.into_iter().collect();
        items.sort_unstable();
        items.dedup();
        ExactSet(items)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|item| &**item)
    }

    pub(crate) fn contains(&self, text: &str) -> bool {
        self.0.binary_search_by(|entry| (**entry).cmp(text)).is_ok()
    }
}

/// A compiled `hosts` table. `None` keys do not filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Selector {
    pub(crate) names: Option<NameSet>,
    /// Lower case (host Uuids are).
    pub(crate) uuids: Option<NameSet>,
    pub(crate) accounts: Option<ExactSet>,
    pub(crate) tags: Option<ExactSet>,
    pub(crate) regions: Option<ExactSet>,
    pub(crate) wan: Option<bool>,
}

impl Selector {
    /// Whether the selector selects `host`. The cheapest keys are tried first.
    pub(crate) fn selects(&self, host: &Host<'_>) -> bool {
        self.wan.is_none_or(|wan| wan == host.wan)
            && self
                .accounts
                .as_ref()
                .is_none_or(|a| a.contains(host.account))
            && self
                .regions
                .as_ref()
                .is_none_or(|r| r.contains(host.region))
            && self
                .tags
                .as_ref()
                .is_none_or(|t| host.tags.iter().any(|tag| t.contains(tag)))
            && self.uuids.as_ref().is_none_or(|u| u.matches(host.uuid))
            && self.names.as_ref().is_none_or(|n| n.matches(host.name))
    }
}
