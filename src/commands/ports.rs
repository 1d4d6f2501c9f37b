//! `cwp-portwatch ports`: the stored open-port inventory of every account (or of
//! `--account NAME`), read from each account's inventory file (`state_dir/inventory.json`
//! for `default`, `inventory.NAME.json` for the others); no API call, no credentials needed.
//! Listed agents first, then the discovered ones the file holds ([`super::stored`]). One
//! line per open port, text or JSON lines, each saying its account, filtered by agent (Uuid
//! or name) and port.
//!
//! The file is hostile like the state file: every value printed for people is escaped
//! ([`crate::escape`]), and JSON lines escape control characters too.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Format;
use crate::escape::{self, Escaped};
use crate::inventory::store::{InventoryFile, InventoryMap};

use super::stored::{self, ShownAgent};
use super::{CommandError, output, startup};

/// Which ports to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this account.
    pub account: Option<String>,
    /// An agent's Uuid (any case) or name.
    pub agent: Option<String>,
    /// One port.
    pub port: Option<u16>,
    /// Only ports the policy file (`[policy] file`) finds unexpected (`--unexpected`).
    pub unexpected: bool,
}

/// Prints the stored inventory. Exit 1 when `--account` names no configured account or
/// `--agent` no agent of the accounts shown.
pub fn run(config: &Path, filter: &Filter, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, plans) = startup::load_accounts(config)?;
    let plans = match stored::select(plans, filter.account.as_deref()) {
        Ok(plans) => plans,
        Err(message) => {
            output::stderr_line(message);
            return Ok(ExitCode::FAILURE);
        }
    };
    let policy = if filter.unexpected {
        match super::policy::load_policy(&settings)? {
            Some(policy) => Some(policy),
            None => {
                output::stderr_line(format_args!(
                    "--unexpected needs a policy: {} has no `[policy] file`",
                    Escaped(config.display())
                ));
                return Ok(ExitCode::FAILURE);
            }
        }
    } else {
        None
    };
    // One account's file at a time (each may be large): an `--agent` that matches nothing
    // printed nothing, so "no such agent" can still come last.
    let mut matched = false;
    for (plan, watchlist) in &plans {
        let file = InventoryFile::for_account(&settings.state_dir, &plan.name);
        let stored = file.load()?;
        if !file.path().exists() {
            output::stderr_line(format_args!(
                "no inventory at {} yet (the daemon writes it when [inventory] enabled = true)",
                Escaped(file.path().display())
            ));
        }
        let left = stored::left_discovery(&settings.state_dir, &plan.name);
        let agents = stored::agents(
            &watchlist.agents,
            plan.settings.discovery.enabled,
            stored::inventory_uuids(&stored).filter(|u| !left.contains(u)),
            &stored,
        );
        // `--unexpected`: the same evaluation as `policy test`, of the same stored ports.
        let only = policy.as_ref().map(|policy| {
            let facts = super::policy::known_facts(
                &settings.state_dir,
                &plan.name,
                plan.settings.discovery.enabled,
                &watchlist.agents,
            );
            super::policy::unexpected_ports(policy, &plan.name, &agents, &facts, &stored)
        });
        matched |= filter
            .agent
            .as_deref()
            .is_some_and(|wanted| agents.iter().any(|a| stored::matches(a, wanted)));
        output::stdout(|out| {
            print_ports(
                out,
                &plan.name,
                &agents,
                &stored,
                filter,
                only.as_ref(),
                format,
            )
        })
        .map_err(CommandError::Output)?;
    }
    if let Some(agent) = &filter.agent
        && !matched
    {
        output::stderr_line(format_args!(
            "no watched agent has the Uuid or name {}; `cwp-portwatch status` lists them",
            Escaped(agent)
        ));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Per agent (Uuid), the (port, process) to show with `--unexpected`.
pub type OnlyPorts = HashMap<String, BTreeSet<(u16, Box<str>)>>;

/// One line per stored port of each of `agents` that passes `filter` (and, when `only` is
/// given, is one of its agent's there), in their order and then by port.
pub fn print_ports(
    out: &mut dyn Write,
    account: &str,
    agents: &[ShownAgent],
    stored: &InventoryMap,
    filter: &Filter,
    only: Option<&OnlyPorts>,
    format: Format,
) -> io::Result<()> {
    for agent in agents {
        if filter
            .agent
            .as_deref()
            .is_some_and(|w| !stored::matches(agent, w))
        {
            continue;
        }
        let Some(entry) = stored.get(&*agent.uuid.text()) else {
            continue;
        };
        let Some(snapshot) = &entry.snapshot else {
            continue;
        };
        let only = only.map(|o| o.get(&*agent.uuid.text()));
        for p in &snapshot.ports {
            if filter.port.is_some_and(|want| want != p.port) {
                continue;
            }
            if let Some(only) = only
                && !only.is_some_and(|set| set.contains(&(p.port, p.process.clone())))
            {
                continue;
            }
            match format {
                Format::Json => {
                    let mut line = serde_json::json!({
                        "account": account, "uuid": agent.uuid, "agent_name": agent.name,
                        "port": p.port, "process_name": &*p.process, "pid": p.pid,
                        "machine_ip": snapshot.machine_ip, "machine_name": snapshot.machine_name,
                        "fetched_at": entry.fetched_at,
                    });
                    // The `cwp` backend's facts, as its port events carry them.
                    if let Some(c) = p.cwp.as_deref() {
                        line["proto"] = c.proto.as_str().into();
                        line["bind_ip"] = c.bind_ip.to_string().into();
                        line["user"] = (*c.user).into();
                        line["process_path"] = (*c.process_path).into();
                        if let Some(t) = &c.first_seen {
                            line["first_seen"] = t.to_string().into();
                        }
                    }
                    writeln!(out, "{}", escape::json_line(&line))?
                }
                Format::Text => {
                    // `cwp`: where it listens and as whom, after the machine's address.
                    let bound = p.cwp.as_deref().map_or(String::new(), |c| {
                        format!("  {}/{} {}", c.bind_ip, c.proto, Escaped(&*c.user))
                    });
                    writeln!(
                        out,
                        "{:<12}  {:<36}  {:<16}  {:>5}  {:<16}  {:>7}  {}{bound}",
                        Escaped(account),
                        Escaped(&agent.uuid),
                        Escaped(&agent.name),
                        p.port,
                        Escaped(&*p.process),
                        p.pid,
                        Escaped(&snapshot.machine_ip)
                    )?
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::store::StoredAgent;
    use crate::inventory::{Port, Snapshot};
    use crate::watchlist::Watchlist;

    const A: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    const B: &str = "7b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

    fn setup() -> (Watchlist, InventoryMap) {
        let w = Watchlist::from_toml_str(
            &format!("[[agent]]\nuuid = \"{A}\"\nname = \"db-01\"\n[[agent]]\nuuid = \"{B}\"\n"),
            Path::new("w.toml"),
        )
        .unwrap();
        let mut m = InventoryMap::new();
        let ports = |v: &[(u16, &str)]| {
            Snapshot::from_rows(
                v.iter()
                    .map(|(p, n)| Port {
                        port: *p,
                        process: (*n).into(),
                        pid: 9,
                        cwp: None,
                    })
                    .collect(),
                "10.0.0.1".into(),
                "m".into(),
            )
        };
        m.insert(
            A.into(),
            StoredAgent {
                snapshot: Some(ports(&[(22, "sshd"), (3306, "my\u{1b}[2Jsql")]).into()),
                ..Default::default()
            },
        );
        m.insert(
            B.into(),
            StoredAgent {
                snapshot: Some(ports(&[(22, "sshd")]).into()),
                ..Default::default()
            },
        );
        // Not watched: never printed.
        m.insert("gone".into(), StoredAgent::default());
        (w, m)
    }

    fn printed(filter: Filter, format: Format) -> String {
        let (w, m) = setup();
        let agents = stored::agents(&w.agents, false, stored::inventory_uuids(&m), &m);
        let mut out = Vec::new();
        print_ports(&mut out, "default", &agents, &m, &filter, None, format).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn filters_by_agent_name_or_uuid_and_by_port_and_escapes() {
        let all = printed(Filter::default(), Format::Text);
        assert_eq!(all.lines().count(), 3);
        assert!(!all.contains('\u{1b}'), "{all:?}");
        assert!(all.contains("my\\u{1b}[2Jsql"), "{all:?}");
        let db = printed(
            Filter {
                account: None,
                agent: Some("db-01".into()),
                port: None,
                unexpected: false,
            },
            Format::Text,
        );
        assert_eq!(db.lines().count(), 2);
        assert!(
            db.lines()
                .all(|l| l.split_whitespace().take(2).eq(["default", A]))
        );
        let by_uuid = printed(
            Filter {
                account: None,
                agent: Some(B.to_uppercase()),
                port: Some(22),
                unexpected: false,
            },
            Format::Json,
        );
        assert_eq!(by_uuid.lines().count(), 1);
        let v: serde_json::Value = serde_json::from_str(by_uuid.trim()).unwrap();
        assert_eq!(
            (v["uuid"].as_str(), v["port"].as_u64()),
            (Some(B), Some(22))
        );
        let json = printed(
            Filter {
                account: None,
                agent: None,
                port: Some(3306),
                unexpected: false,
            },
            Format::Json,
        );
        assert_eq!(json.lines().count(), 1);
        assert!(!json.contains('\u{1b}'));
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["process_name"], "my\u{1b}[2Jsql");
    }

    /// A `cwp` port shows where it listens and as whom, in both formats.
    #[test]
    fn cwp_ports_show_their_bind_address_protocol_and_user() {
        let (w, _) = setup();
        let row = crate::api::cwp::AssetPort {
            proto: crate::api::cwp::Proto::parse("tcp").unwrap(),
            bind_ip: crate::api::cwp::BindIp::parse("127.0.0.1").unwrap(),
            port: 3306,
            process: "mysqld".into(),
            pid: Some(1400),
            user: "mysql".into(),
            process_path: "/usr/sbin/mysqld".into(),
            first_seen: None,
        };
        let mut m = InventoryMap::new();
        m.insert(
            A.into(),
            StoredAgent {
                snapshot: Some(
                    Snapshot::from_rows(vec![Port::from_asset(row)], "10.0.0.1".into(), "m".into())
                        .into(),
                ),
                ..Default::default()
            },
        );
        let agents = stored::agents(&w.agents, false, stored::inventory_uuids(&m), &m);
        let print = |format| {
            let mut out = Vec::new();
            print_ports(
                &mut out,
                "default",
                &agents,
                &m,
                &Filter::default(),
                None,
                format,
            )
            .unwrap();
            String::from_utf8(out).unwrap()
        };
        let text = print(Format::Text);
        assert!(
            text.trim_end().ends_with("10.0.0.1  127.0.0.1/tcp mysql"),
            "{text}"
        );
        let json: serde_json::Value = serde_json::from_str(print(Format::Json).trim()).unwrap();
        assert_eq!(json["bind_ip"], "127.0.0.1");
        assert_eq!(json["proto"], "tcp");
        assert_eq!(json["user"], "mysql");
        assert_eq!(json["process_path"], "/usr/sbin/mysqld");
    }
}
