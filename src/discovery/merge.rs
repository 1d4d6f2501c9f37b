//! What discovery found, merged with the listed agents, and whether it changed: pure.
//!
//! Listed agents always stay (discovery adds to a watchlist, never removes from it), and a
//! listed name wins over the machine's name; a listed agent without a name takes the
//! machine's. Machines are kept in the order found, each Uuid once (the first row wins: the
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
                            facts: None,
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

/// Whether two passes found the same agents with the same names and the same skipped count
/// (then nothing needs applying or reporting).
pub fn same_list(before: &Discovered, after: &Discovered) -> bool {
    if before.skipped != after.skipped || before.agents.len() != after.agents.len() {
        return false;
    }
    let names: HashMap<u128, &Option<String>> = before
        .agents
        .iter()
        .map(|a| (a.uuid.value(), &a.name))
        .collect();
    after
        .agents
        .iter()
        .all(|a| names.get(&a.uuid.value()) == Some(&&a.name))
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
