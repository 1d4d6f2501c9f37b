//! Which discovered machines are watched from pass to pass, pure: the rule that keeps a
//! flapping `DescribeMachines` from re-sending everything (issue 20).
//!
//! One listing that misses a machine says little (an eventually consistent API, a machine
//! briefly filtered out): acted on at once, it stopped the agent and wiped its status and
//! inventory, and the next listing brought it back as new: `UNKNOWN → …` and a baseline
//! again, every other pass. The rule (product.md, "Several accounts"):
//! - a machine's agent leaves only after it is missing from `remove_after` complete passes in
//!   a row; until then it stays watched under its last name;
//! - what is known of an agent that left (its last status and inventory) is kept for
//!   `forget_after` from when it left, so a machine that comes back within that time repeats
//!   no event; after that it is forgotten;
//! - only complete passes count (a failed pass changes nothing: see [`super::paging`]).
//!
//! [`Membership`] holds, per Uuid ever found and not forgotten, its last name and host facts
//! (tags, region, WAN: an agent in its grace passes keeps them), how many passes in a row
//! missed it, and when it left. It is saved with the daemon's state
//! ([`super::remembered`]) so a restart neither resets the count nor forgets who left.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use super::merge::Discovered;
use crate::agent_uuid::AgentUuid;
use crate::watchlist::{Agent, Facts};

/// At most this many machines remembered: every machine discovery can list
/// ([`super::MAX_MACHINES`]) plus as many that left. Beyond it the ones that left longest ago
/// are forgotten first, so churn (machines replaced every day) cannot grow it without bound.
pub const MAX_REMEMBERED: usize = 2 * super::MAX_MACHINES as usize;

/// What is remembered of one machine.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// `MachineName` when last listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Complete passes in a row that did not list it (0: listed by the last one).
    #[serde(default)]
    pub missing: u32,
    /// When its agent left (Unix seconds): `missing` reached `remove_after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub left_at: Option<i64>,
    /// Its host facts when last listed (`Tag` names, region, WAN), so that in its grace
    /// passes, and after a restart, the policy selects it as before. Absent in files written
    /// before issue 22: none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "stored_facts"
    )]
    pub facts: Option<Arc<Facts>>,
}

/// [`Member::facts`] in the discovery file: `{"tags": [...], "region": "...", "wan": true}`,
/// each key left out when empty; read back only within the bounds a listing keeps
/// ([`crate::api::machines::machine_tags`]), else the file is damaged.
mod stored_facts {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use crate::api::machines::{machine_tags, usable_region};
    use crate::watchlist::Facts;

    #[derive(Serialize)]
    struct Out<'a> {
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        tags: &'a [Box<str>],
        #[serde(skip_serializing_if = "Option::is_none")]
        region: Option<&'a str>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        wan: bool,
    }

    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct In {
        #[serde(default)]
        tags: Vec<String>,
        #[serde(default)]
        region: Option<String>,
        #[serde(default)]
        wan: bool,
    }

    pub fn serialize<S: Serializer>(facts: &Option<Arc<Facts>>, s: S) -> Result<S::Ok, S::Error> {
        match facts {
            Some(f) => Out {
                tags: f.tags(),
                region: f.region(),
                wan: f.wan(),
            }
            .serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<Facts>>, D::Error> {
        use serde::de::Error;
        let Some(stored) = Option::<In>::deserialize(d)? else {
            return Ok(None);
        };
        if machine_tags(stored.tags.iter().map(String::as_str)).len() != stored.tags.len() {
            return Err(D::Error::custom(
                "facts: tags over the bounds of a listing, repeated or not printable",
            ));
        }
        if let Some(region) = &stored.region
            && !usable_region(region)
        {
            return Err(D::Error::custom("facts: a region that is not a region id"));
        }
        Ok(Facts::new(stored.tags, stored.region.map(Into::into), stored.wan).shared())
    }
}

/// What one complete pass means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The agents to watch: those listed, in the order found, then those missing from fewer
    /// than `remove_after` passes in a row (by Uuid), under their last names.
    pub watch: Discovered,
    /// Agents that left at this pass (their state is kept, not forgotten).
    pub left: usize,
    /// Agents forgotten at this pass (gone for `forget_after`, or over [`MAX_REMEMBERED`]).
    pub forgotten: usize,
    /// Something remembered changed (to be saved).
    pub changed: bool,
}

/// The rule's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// Complete passes in a row a machine must be missing from before its agent leaves
    /// (at least 1).
    pub remove_after: u32,
    /// How long what is known of an agent that left is kept.
    pub forget_after: Duration,
}

/// Every machine discovery found and has not forgotten, by Uuid.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    members: HashMap<AgentUuid, Member>,
}

impl Membership {
    /// Remembered machines as saved (see [`Membership::members`]).
    pub fn from_members(members: HashMap<AgentUuid, Member>) -> Self {
        Membership { members }
    }

    /// At start: forgets the machines still counted as present (not left) whose agent has no
    /// persisted status (`has_state` false). Their grace passes would poll an agent that is
    /// new in all but name (a file left from a run before discovery was turned off and on
    /// again): without a status its first answer is an event anyway, so it is found again
    /// first, as any new machine. Those that left stay remembered until `forget_after`.
    pub fn keep_present_with_state(&mut self, has_state: impl Fn(&AgentUuid) -> bool) {
        self.members
            .retain(|uuid, m| m.left_at.is_some() || has_state(uuid));
    }

    /// What is remembered, by Uuid.
    pub fn members(&self) -> &HashMap<AgentUuid, Member> {
        &self.members
    }

    /// Every Uuid remembered: watched, in its grace passes, or left and kept. What is known
    /// of any other agent not watched may be forgotten.
    pub fn uuids(&self) -> HashSet<AgentUuid> {
        self.members.keys().copied().collect()
    }

    /// Applies one complete pass, found at `now` (Unix seconds).
    pub fn pass(&mut self, found: &Discovered, now: i64, rule: Rule) -> Outcome {
        let remove_after = rule.remove_after.max(1);
        let forget_secs = i128::from(rule.forget_after.as_secs());
        let mut changed = false;
        let listed: HashSet<AgentUuid> = found.agents.iter().map(|a| a.uuid).collect();
        for agent in &found.agents {
            let member = Member {
                name: agent.name.clone(),
                missing: 0,
                left_at: None,
                facts: agent.facts.clone(),
            };
            if self.members.get(&agent.uuid) != Some(&member) {
                self.members.insert(agent.uuid, member);
                changed = true;
            }
        }
        let (mut left, mut forgotten) = (0, 0);
        let mut grace = Vec::new();
        self.members.retain(|uuid, m| {
            if listed.contains(uuid) {
                return true;
            }
            match m.left_at {
                None => {
                    m.missing = m.missing.saturating_add(1);
                    changed = true;
                    if m.missing >= remove_after {
                        m.left_at = Some(now);
                        left += 1;
                    } else {
                        grace.push(Agent {
                            uuid: *uuid,
                            name: m.name.clone(),
                            facts: m.facts.clone(),
                        });
                    }
                    true
                }
                Some(at) => {
                    // A wall clock set back: counted from now, so never kept for longer than
                    // forget_after from here.
                    let at = if at > now {
                        m.left_at = Some(now);
                        changed = true;
                        now
                    } else {
                        at
                    };
                    // In i128: no overflow for any two Unix times.
                    let keep = i128::from(now) - i128::from(at) < forget_secs;
                    if !keep {
                        forgotten += 1;
                        changed = true;
                    }
                    keep
                }
            }
        });
        forgotten += self.bound();
        grace.sort_by_key(|a| a.uuid);
        let mut agents = found.agents.clone();
        agents.extend(grace);
        Outcome {
            watch: Discovered::from_agents(agents, found.skipped),
            left,
            forgotten,
            changed: changed || forgotten > 0,
        }
    }

    /// Forgets the agents that left longest ago while more than [`MAX_REMEMBERED`] are
    /// remembered; how many.
    fn bound(&mut self) -> usize {
        let over = self.members.len().saturating_sub(MAX_REMEMBERED);
        if over == 0 {
            return 0;
        }
        let mut gone: Vec<(i64, AgentUuid)> = self
            .members
            .iter()
            .filter_map(|(u, m)| m.left_at.map(|at| (at, *u)))
            .collect();
        gone.sort_unstable();
        let mut n = 0;
        for (_, uuid) in gone.into_iter().take(over) {
            self.members.remove(&uuid);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(i: u128) -> Agent {
        Agent {
            uuid: AgentUuid::from_value(i),
            name: Some(format!("m{i}")),
            facts: None,
        }
    }

    fn found(ids: &[u128]) -> Discovered {
        Discovered::from_agents(ids.iter().map(|&i| agent(i)).collect(), 0)
    }

    fn watched(o: &Outcome) -> Vec<u128> {
        o.watch.agents.iter().map(|a| a.uuid.value()).collect()
    }

    const RULE: Rule = Rule {
        remove_after: 3,
        forget_after: Duration::from_secs(100),
    };

    #[test]
    fn a_flapping_machine_is_never_removed() {
        // [A, B] / [B] every pass, the review's case: A stays watched throughout.
        let mut m = Membership::default();
        for pass in 0..12 {
            let o = if pass % 2 == 0 {
                m.pass(&found(&[1, 2]), pass, RULE)
            } else {
                m.pass(&found(&[2]), pass, RULE)
            };
            let mut w = watched(&o);
            w.sort();
            assert_eq!(w, [1, 2], "pass {pass}");
            assert_eq!(o.left, 0);
        }
    }

    #[test]
    fn a_machine_leaves_after_remove_after_passes_in_a_row_and_is_kept_for_forget_after() {
        let mut m = Membership::default();
        m.pass(&found(&[1, 2]), 0, RULE);
        // Missing twice: still watched, under its last name, after the listed ones.
        for t in 1..3 {
            let o = m.pass(&found(&[2]), t, RULE);
            assert_eq!(watched(&o), [2, 1]);
            assert_eq!(o.watch.agents[1].name.as_deref(), Some("m1"));
            assert!(o.changed);
        }
        // The third pass in a row without it: it leaves, and is remembered.
        let o = m.pass(&found(&[2]), 10, RULE);
        assert_eq!((watched(&o), o.left, o.forgotten), (vec![2], 1, 0));
        assert!(m.uuids().contains(&AgentUuid::from_value(1)));
        assert_eq!(m.members()[&AgentUuid::from_value(1)].left_at, Some(10));
        // Still remembered just before forget_after.
        let o = m.pass(&found(&[2]), 109, RULE);
        assert_eq!((o.left, o.forgotten), (0, 0));
        assert!(!o.changed, "nothing to save");
        // Back within forget_after: watched again, present.
        let o = m.pass(&found(&[2, 1]), 109, RULE);
        assert_eq!(watched(&o), [2, 1]);
        assert_eq!(m.members()[&AgentUuid::from_value(1)].left_at, None);
        // Gone again, and this time for good.
        for t in 110..113 {
            m.pass(&found(&[2]), t, RULE);
        }
        let o = m.pass(&found(&[2]), 112 + 100, RULE);
        assert_eq!(o.forgotten, 1);
        assert!(!m.uuids().contains(&AgentUuid::from_value(1)));
        assert!(o.changed);
    }

    /// An agent in its grace passes keeps the facts it was last listed with (else the policy
    /// would select it differently while it is still watched); new facts are remembered.
    #[test]
    fn grace_agents_keep_their_last_facts_and_changes_are_saved() {
        let tagged = |tags: &[&str]| {
            let mut f = found(&[1, 2]);
            f.agents[0].facts = Facts::new(tags.iter().copied(), Some("r".into()), true).shared();
            f
        };
        let mut m = Membership::default();
        m.pass(&tagged(&["web"]), 0, RULE);
        assert!(!m.pass(&tagged(&["web"]), 1, RULE).changed);
        assert!(
            m.pass(&tagged(&["web", "prod"]), 2, RULE).changed,
            "new tags"
        );
        let o = m.pass(&found(&[2]), 3, RULE);
        assert_eq!(watched(&o), [2, 1]);
        let grace = &o.watch.agents[1];
        assert_eq!(grace.tags().len(), 2);
        assert_eq!(grace.facts.as_deref().unwrap().region(), Some("r"));
        assert!(grace.facts.as_deref().unwrap().wan());
    }

    #[test]
    fn a_pass_that_lists_it_again_resets_the_count() {
        let mut m = Membership::default();
        m.pass(&found(&[1]), 0, RULE);
        m.pass(&found(&[]), 1, RULE);
        m.pass(&found(&[]), 2, RULE);
        m.pass(&found(&[1]), 3, RULE);
        // Two more misses are not three in a row.
        m.pass(&found(&[]), 4, RULE);
        let o = m.pass(&found(&[]), 5, RULE);
        assert_eq!((watched(&o), o.left), (vec![1], 0));
        let o = m.pass(&found(&[]), 6, RULE);
        assert_eq!((watched(&o), o.left), (vec![], 1));
    }

    #[test]
    fn remove_after_one_is_the_first_miss_and_renames_are_remembered() {
        let rule = Rule {
            remove_after: 1,
            ..RULE
        };
        let mut m = Membership::default();
        m.pass(&found(&[1]), 0, rule);
        let mut renamed = found(&[1]);
        renamed.agents[0].name = Some("new".into());
        assert!(m.pass(&renamed, 1, rule).changed);
        assert!(!m.pass(&renamed, 2, rule).changed, "the same pass again");
        let o = m.pass(&found(&[]), 3, rule);
        assert_eq!(o.left, 1);
        // A zero remove_after (never validated) acts as 1, not as "never watched".
        let mut m = Membership::default();
        let o = m.pass(
            &found(&[1]),
            0,
            Rule {
                remove_after: 0,
                ..RULE
            },
        );
        assert_eq!(watched(&o), [1]);
    }

    #[test]
    fn a_clock_set_back_keeps_what_left_for_forget_after_from_now() {
        let mut m = Membership::default();
        m.pass(&found(&[1]), 1_000, RULE);
        for t in 1_001..1_004 {
            m.pass(&found(&[]), t, RULE);
        }
        // The clock goes back 500 s: left_at in the future is counted from now.
        let o = m.pass(&found(&[]), 500, RULE);
        assert!(o.changed && o.forgotten == 0);
        assert_eq!(m.members()[&AgentUuid::from_value(1)].left_at, Some(500));
        assert_eq!(m.pass(&found(&[]), 600, RULE).forgotten, 1);
        // Extreme values neither overflow nor panic.
        let mut m = Membership::default();
        let forever = Rule {
            remove_after: 1,
            forget_after: Duration::MAX,
        };
        m.pass(&found(&[1]), i64::MIN, forever);
        m.pass(&found(&[]), 0, forever);
        assert_eq!(m.pass(&found(&[]), i64::MAX, forever).forgotten, 0);
        let brief = Rule {
            remove_after: 1,
            forget_after: Duration::from_secs(1),
        };
        assert_eq!(m.pass(&found(&[]), i64::MAX, brief).forgotten, 1);
    }

    #[test]
    fn at_start_only_present_machines_with_a_status_get_grace_passes() {
        let mut m = Membership::default();
        m.pass(&found(&[1, 2, 3]), 0, RULE);
        for t in 1..4 {
            m.pass(&found(&[1, 2]), t, RULE);
        }
        // 3 left; 1 has a persisted status, 2 has none (never answered, or a stale file).
        m.keep_present_with_state(|u| *u == AgentUuid::from_value(1));
        let mut kept: Vec<u128> = m.uuids().iter().map(|u| u.value()).collect();
        kept.sort();
        assert_eq!(kept, [1, 3]);
        // A first pass without 1 and 2: 1 is in its grace passes, 2 is not watched.
        let o = m.pass(&found(&[]), 5, RULE);
        assert_eq!(watched(&o), [1]);
    }

    #[test]
    fn the_memory_is_bounded_forgetting_the_longest_gone_first() {
        let mut members = HashMap::new();
        for i in 0..MAX_REMEMBERED as u128 + 2 {
            members.insert(
                AgentUuid::from_value(i),
                Member {
                    name: None,
                    missing: 3,
                    left_at: Some(i as i64),
                    facts: None,
                },
            );
        }
        let mut m = Membership::from_members(members);
        let o = m.pass(&found(&[]), 50, RULE);
        // None gone for forget_after yet: the bound forgets the two that left first.
        assert_eq!(o.forgotten, 2);
        assert_eq!(m.members().len(), MAX_REMEMBERED);
        assert!(!m.uuids().contains(&AgentUuid::from_value(0)));
        assert!(!m.uuids().contains(&AgentUuid::from_value(1)));
        assert!(m.uuids().contains(&AgentUuid::from_value(2)));
    }
}
