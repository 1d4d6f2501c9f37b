//! An agent's host facts for the expected-ports policy ([`Facts`]): tags, region, WAN IP.

use std::sync::Arc;

/// An agent's host facts for the expected-ports policy: its tags (watchlist `tags`,
/// discovered `Tag` names), its region and whether it has a WAN IP (both from discovery).
/// Tags are kept sorted and each once, so equal sets compare (and hash) equal whatever order
/// they were written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Facts {
    pub(super) tags: Box<[Box<str>]>,
    region: Option<Box<str>>,
    wan: bool,
}

impl Facts {
    /// Facts of these tags (sorted here, duplicates folded), region and WAN flag. Bounds are
    /// the callers' (the watchlist and the API parser check them).
    pub fn new<T: Into<Box<str>>>(
        tags: impl IntoIterator<Item = T>,
        region: Option<Box<str>>,
        wan: bool,
    ) -> Facts {
        let mut tags: Vec<Box<str>> = tags.into_iter().map(Into::into).collect();
        tags.sort_unstable();
        tags.dedup();
        Facts {
            tags: tags.into_boxed_slice(),
            region: region.filter(|r| !r.is_empty()),
            wan,
        }
    }

    /// Tags, sorted, each once.
    pub fn tags(&self) -> &[Box<str>] {
        &self.tags
    }

    /// The machine's region, when discovery said.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }

    /// The machine has a WAN IP (discovery's `MachineWanIp`).
    pub fn wan(&self) -> bool {
        self.wan
    }

    /// These facts with `region` when they name none (a discovered machine's region is the
    /// one its listing asked for when its row does not say).
    pub fn or_region(mut self, region: &str) -> Facts {
        if self.region.is_none() && !region.is_empty() {
            self.region = Some(region.into());
        }
        self
    }

    /// No tag, no region, no WAN IP.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty() && self.region.is_none() && !self.wan
    }

    /// As an [`Agent::facts`](super::Agent::facts): `None` when empty.
    pub fn shared(self) -> Option<Arc<Facts>> {
        (!self.is_empty()).then(|| Arc::new(self))
    }

    /// A listed agent's facts with a discovered machine's: the union of the tags, region and
    /// WAN flag from discovery (the watchlist has neither). `None` when both are.
    pub fn merged(listed: Option<&Arc<Facts>>, found: Option<&Arc<Facts>>) -> Option<Arc<Facts>> {
        match (listed, found) {
            (None, None) => None,
            (Some(one), None) | (None, Some(one)) => Some(Arc::clone(one)),
            (Some(listed), Some(found)) => {
                if listed.tags.iter().all(|t| found.tags.contains(t)) {
                    return Some(Arc::clone(found));
                }
                let tags = listed.tags.iter().chain(found.tags.iter()).cloned();
                Facts::new(tags, found.region.clone(), found.wan).shared()
            }
        }
    }
}
