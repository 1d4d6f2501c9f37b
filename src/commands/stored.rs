//! What `status` and `ports` show: which accounts (`--account`), and which agents of each —
//! the listed ones in watchlist order, then the discovered ones its files still hold. Pure;
//! the commands read the files.
//!
//! Why discovered agents come from the files: `status` and `ports` call no API, and the
//! daemon keeps a discovered agent's status (`state.NAME.json`) and inventory
//! (`inventory.NAME.json`) under its Uuid like a listed one's. Without discovery the daemon
//! forgets unlisted entries at its next start, so they are not shown then either; and an
//! agent whose machine left discovery (its discovery file says when) is kept in those files
//! for `forget_after` but no longer watched, so it is not shown: what is printed is what the
//! daemon watches.

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use crate::agent_uuid::AgentUuid;
use crate::config::accounts::AccountPlan;
use crate::discovery::remembered::DiscoveryFile;
use crate::escape::Escaped;
use crate::inventory::store::InventoryMap;
use crate::watchlist::Agent;

/// One agent as the commands show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShownAgent {
    /// Its Uuid.
    pub uuid: AgentUuid,
    /// Its watchlist name, else the name stored with its inventory (discovery's machine
    /// name), else empty.
    pub name: String,
}

/// The accounts `wanted` selects: every one, or the one named. An unknown name is the
/// message to print (it lists the configured names).
pub fn select<T>(
    accounts: Vec<(AccountPlan, T)>,
    wanted: Option<&str>,
) -> Result<Vec<(AccountPlan, T)>, String> {
    let Some(wanted) = wanted else {
        return Ok(accounts);
    };
    if accounts.iter().any(|(plan, _)| plan.name == wanted) {
        return Ok(accounts
            .into_iter()
            .filter(|(plan, _)| plan.name == wanted)
            .collect());
    }
    let names: Vec<&str> = accounts
        .iter()
        .map(|(plan, _)| plan.name.as_str())
        .collect();
    Err(format!(
        "no account is named {}; the configured accounts are: {}",
        Escaped(wanted),
        names.join(", ")
    ))
}

/// `listed` in watchlist order, then (only when `discovering`) every Uuid of `held` that is
/// not listed, in Uuid order. Names as [`ShownAgent::name`] says, from `stored`.
pub fn agents(
    listed: &[Agent],
    discovering: bool,
    held: impl IntoIterator<Item = AgentUuid>,
    stored: &InventoryMap,
) -> Vec<ShownAgent> {
    let stored_name = |uuid: &AgentUuid| {
        stored
            .get(&*uuid.text())
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    let mut shown: Vec<ShownAgent> = listed
        .iter()
        .map(|a| ShownAgent {
            uuid: a.uuid,
            name: a.name.clone().unwrap_or_else(|| stored_name(&a.uuid)),
        })
        .collect();
    if discovering {
        let listed: BTreeSet<AgentUuid> = listed.iter().map(|a| a.uuid).collect();
        let discovered: BTreeSet<AgentUuid> =
            held.into_iter().filter(|u| !listed.contains(u)).collect();
        shown.extend(discovered.into_iter().map(|uuid| ShownAgent {
            name: stored_name(&uuid),
            uuid,
        }));
    }
    shown
}

/// The agents whose machines left `account`'s discovery (kept, not watched). Read only: a
/// missing or unreadable file (the daemon sets a damaged one aside, not this command) hides
/// nothing.
pub fn left_discovery(state_dir: &Path, account: &str) -> HashSet<AgentUuid> {
    DiscoveryFile::for_account(state_dir, account)
        .load()
        .map(|m| {
            m.members()
                .iter()
                .filter(|(_, member)| member.left_at.is_some())
                .map(|(uuid, _)| *uuid)
                .collect()
        })
        .unwrap_or_default()
}

/// The Uuids an inventory holds (a key that is not a Uuid cannot be an agent and is skipped).
pub fn inventory_uuids(stored: &InventoryMap) -> impl Iterator<Item = AgentUuid> + '_ {
    stored.keys().filter_map(|k| AgentUuid::parse(k).ok())
}

/// Does `agent` match `wanted`, a Uuid in any case or a name?
pub fn matches(agent: &ShownAgent, wanted: &str) -> bool {
    agent.uuid.text().eq_ignore_ascii_case(wanted)
        || (!agent.name.is_empty() && agent.name == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::store::StoredAgent;

    fn uuid(n: u128) -> AgentUuid {
        AgentUuid::from_value(n)
    }

    fn plans(names: &[&str]) -> Vec<(AccountPlan, ())> {
        let settings = crate::config::Settings::from_toml_str(
            "[[account]]\nname = \"x\"\nwatchlist = \"x.toml\"\n",
            std::path::Path::new("/c/config.toml"),
        )
        .unwrap();
        names
            .iter()
            .map(|n| {
                (
                    AccountPlan {
                        name: (*n).to_owned(),
                        settings: settings.clone(),
                    },
                    (),
                )
            })
            .collect()
    }

    #[test]
    fn select_keeps_every_account_or_the_one_named_and_lists_names_otherwise() {
        let names =
            |v: Vec<(AccountPlan, ())>| v.into_iter().map(|(p, ())| p.name).collect::<Vec<_>>();
        assert_eq!(
            names(select(plans(&["default", "prod"]), None).unwrap()),
            ["default", "prod"]
        );
        assert_eq!(
            names(select(plans(&["default", "prod"]), Some("prod")).unwrap()),
            ["prod"]
        );
        let error = select(plans(&["default", "prod"]), Some("prdo\u{1b}")).unwrap_err();
        assert!(error.contains("default, prod"), "{error}");
        assert!(!error.contains('\u{1b}'), "{error:?}");
    }

    #[test]
    fn discovered_agents_follow_the_listed_ones_only_while_discovering() {
        let listed = vec![
            Agent {
                uuid: uuid(9),
                name: Some("listed".into()),
                facts: None,
            },
            Agent {
                uuid: uuid(5),
                name: None,
                facts: None,
            },
        ];
        let mut stored = InventoryMap::new();
        for (n, name) in [(5, "found-as-5"), (7, "machine-7")] {
            stored.insert(
                uuid(n).text().as_str().to_owned(),
                StoredAgent {
                    name: name.into(),
                    ..Default::default()
                },
            );
        }
        let held = [uuid(7), uuid(9), uuid(3)];
        let shown = agents(&listed, true, held, &stored);
        let got: Vec<(u128, &str)> = shown
            .iter()
            .map(|a| (a.uuid.value(), a.name.as_str()))
            .collect();
        assert_eq!(
            got,
            [(9, "listed"), (5, "found-as-5"), (3, ""), (7, "machine-7")]
        );
        assert!(matches(&shown[3], "machine-7"));
        assert!(matches(
            &shown[3],
            &uuid(7).text().as_str().to_ascii_uppercase()
        ));
        assert!(!matches(&shown[2], ""), "an empty name matches nothing");
        // Without discovery the daemon forgets unlisted entries: not shown.
        assert_eq!(agents(&listed, false, held, &stored).len(), 2);
    }
}
