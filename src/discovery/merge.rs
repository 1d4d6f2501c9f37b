//! What discovery found, merged with the listed agents, and whether it changed: pure.
//!
//! Listed agents always stay (discovery adds to a watchlist, never removes from it), and a
//! listed name wins over the machine's name; a listed agent without a name takes the
//! machine's. Host facts: a listed agent's tags are the union of its listed tags and its
//! machine's; region and WAN come from the machine ([`Facts::merged`]). Machines are kept in the order found, each Uuid once (the first row wins: the
//! same agent may show under two filters or regions).

use std::collections::{HashMap, HashSet};

use crate::api::machines::MachineRow;
use crate::watchlist::{Agent, Facts};

/// One pass's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Every machine with a Uuid, each once, in the order found.
    pub agents: Vec<Agent>,
    /// Machines without a `Uuid` (long offline): counted, not watched.
    pub skipped: usize,
    seen: HashSet<u128>,
}

impl Discovered {
    /// A result of these agents (each Uuid once: later repeats are dropped) and this many
    /// skipped machines.
    pub fn from_agents(agents: Vec<Agent>, skipped: usize) -> Self {
        let mut d = Discovered {
            skipped,
            ..Discovered::default()
        };
        for agent in agents {
            if d.seen.insert(agent.uuid.value()) {
                d.agents.push(agent);
            }
        }
        d
    }

    /// Adds rows of one listing.
    pub fn add(&mut self, rows: Vec<MachineRow>) {
        for row in rows {
            match row.uuid {
                None => self.skipped += 1,
                Some(uuid) => {
                    if self.seen.insert(uuid.value()) {
                        self.agents.push(Agent {
                            uuid,
                            name: row.name,
                            facts: row.facts.shared(),
                        });
                    }
                }
            }
        }
    }
}

/// The listed agents in their order, then the discovered ones not listed.
pub fn merge(listed: &[Agent], discovered: &[Agent]) -> Vec<Agent> {
    let found: HashMap<u128, &Agent> = discovered.iter().map(|a| (a.uuid.value(), a)).collect();
    let mut merged: Vec<Agent> = listed
        .iter()
        .map(|a| {
            let found = found.get(&a.uuid.value());
            Agent {
                uuid: a.uuid,
                name: a
                    .name
                    .clone()
                    .or_else(|| found.and_then(|d| d.name.clone())),
                facts: Facts::merged(a.facts.as_ref(), found.and_then(|d| d.facts.as_ref())),
            }
        })
        .collect();
    let listed: HashSet<u128> = listed.iter().map(|a| a.uuid.value()).collect();
    merged.extend(
        discovered
            .iter()
            .filter(|a| !listed.contains(&a.uuid.value()))
            .cloned(),
    );
    merged
}

/// Whether two passes found the same agents with the same names, the same host facts and the
/// same skipped count (then nothing needs applying or reporting).
pub fn same_list(before: &Discovered, after: &Discovered) -> bool {
    if before.skipped != after.skipped || before.agents.len() != after.agents.len() {
        return false;
    }
    let agents: HashMap<u128, &Agent> = before.agents.iter().map(|a| (a.uuid.value(), a)).collect();
    after.agents.iter().all(|a| {
        agents
            .get(&a.uuid.value())
            .is_some_and(|b| b.name == a.name && b.facts == a.facts)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_uuid::AgentUuid;

    fn agent(i: u32, name: Option<&str>) -> Agent {
        Agent {
            uuid: AgentUuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap(),
            name: name.map(str::to_owned),
            facts: None,
        }
    }

    fn row(i: Option<u32>, name: &str) -> MachineRow {
        MachineRow {
            uuid: i.map(|i| agent(i, None).uuid),
            name: Some(name.to_owned()),
            quuid: None,
            facts: Facts::default(),
        }
    }

    #[test]
    fn listed_agents_stay_and_their_names_win() {
        let listed = [
            agent(1, Some("mine")),
            agent(2, None),
            agent(9, Some("only-listed")),
        ];
        let found = [
            agent(3, Some("m3")),
            agent(1, Some("m1")),
            agent(2, Some("m2")),
        ];
        let merged = merge(&listed, &found);
        assert_eq!(
            merged,
            [
                agent(1, Some("mine")),
                agent(2, Some("m2")),
                agent(9, Some("only-listed")),
                agent(3, Some("m3")),
            ]
        );
    }

    fn with_facts(mut a: Agent, tags: &[&str], region: Option<&str>, wan: bool) -> Agent {
        a.facts = Facts::new(tags.iter().copied(), region.map(Into::into), wan).shared();
        a
    }

    /// A listed agent: its name wins, its tags are the union of listed and found, region and
    /// WAN are the machine's; an agent only listed or only found keeps its own facts.
    #[test]
    fn facts_merge_as_a_union_of_tags_with_region_and_wan_from_discovery() {
        let listed = [
            with_facts(agent(1, Some("mine")), &["web", "prod"], None, false),
            with_facts(agent(2, None), &["db"], None, false),
            agent(3, None),
        ];
        let found = [
            with_facts(
                agent(1, Some("m1")),
                &["prod", "eu"],
                Some("ap-guangzhou"),
                true,
            ),
            with_facts(agent(3, Some("m3")), &["cache"], Some("ap-beijing"), false),
            with_facts(agent(4, Some("m4")), &["new"], None, true),
        ];
        let merged = merge(&listed, &found);
        assert_eq!(
            merged,
            [
                with_facts(
                    agent(1, Some("mine")),
                    &["eu", "prod", "web"],
                    Some("ap-guangzhou"),
                    true
                ),
                with_facts(agent(2, None), &["db"], None, false),
                with_facts(agent(3, Some("m3")), &["cache"], Some("ap-beijing"), false),
                with_facts(agent(4, Some("m4")), &["new"], None, true),
            ]
        );
    }

    #[test]
    fn same_list_sees_changed_facts() {
        let pass = |tags: &[&str], region: Option<&str>, wan: bool| {
            Discovered::from_agents(vec![with_facts(agent(1, Some("a")), tags, region, wan)], 0)
        };
        let base = pass(&["web"], Some("r"), false);
        assert!(same_list(&base, &pass(&["web"], Some("r"), false)));
        assert!(!same_list(&base, &pass(&["web", "prod"], Some("r"), false)));
        assert!(!same_list(&base, &pass(&["web"], Some("s"), false)));
        assert!(!same_list(&base, &pass(&["web"], Some("r"), true)));
        assert!(!same_list(&base, &pass(&[], None, false)));
    }

    #[test]
    fn rows_without_uuid_are_counted_and_duplicates_kept_once() {
        let mut d = Discovered::default();
        d.add(vec![row(Some(1), "a"), row(None, "old"), row(Some(2), "b")]);
        d.add(vec![row(Some(1), "again"), row(None, "older")]);
        assert_eq!(d.agents, [agent(1, Some("a")), agent(2, Some("b"))]);
        assert_eq!(d.skipped, 2);
    }

    #[test]
    fn same_list_sees_added_removed_renamed_and_skipped() {
        let mut a = Discovered::default();
        a.add(vec![row(Some(1), "a"), row(Some(2), "b")]);
        let mut same = Discovered::default();
        same.add(vec![row(Some(2), "b"), row(Some(1), "a")]);
        assert!(same_list(&a, &same), "order does not matter");
        let mut other = Discovered::default();
        other.add(vec![row(Some(1), "a"), row(Some(3), "b")]);
        assert!(!same_list(&a, &other));
        let mut renamed = Discovered::default();
        renamed.add(vec![row(Some(1), "a"), row(Some(2), "B")]);
        assert!(!same_list(&a, &renamed));
        let mut skipped = a.clone();
        skipped.add(vec![row(None, "x")]);
        assert!(!same_list(&a, &skipped));
    }
}
