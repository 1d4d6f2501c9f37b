//! `cwp-portwatch ports`: the stored open-port inventory of the watched agents, read from
//! `state_dir/inventory.json`; no API call, no credentials needed. One line per open port,
//! text or JSON lines, filtered by agent (Uuid or name) and port.
//!
//! The file is hostile like the state file: every value printed for people is escaped
//! ([`crate::escape`]), and JSON lines escape control characters too.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Format;
use crate::escape::{self, Escaped};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::watchlist::Watchlist;

use super::{CommandError, output, startup};

/// Which ports to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// An agent's Uuid (any case) or watchlist name.
    pub agent: Option<String>,
    /// One port.
    pub port: Option<u16>,
}

/// Prints the stored inventory. Exit 1 when `--agent` names no watched agent.
pub fn run(config: &Path, filter: &Filter, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, watchlist) = startup::load(config)?;
    let file = InventoryFile::in_dir(&settings.state_dir);
    let stored = file.load()?;
    if let Some(agent) = &filter.agent
        && !watchlist.agents.iter().any(|a| matches(a, agent))
    {
        output::stderr_line(format_args!(
            "no watched agent has the Uuid or name {}; `cwp-portwatch status` lists them",
            Escaped(agent)
        ));
        return Ok(ExitCode::FAILURE);
    }
    if !file.path().exists() {
        output::stderr_line(format_args!(
            "no inventory at {} yet (the daemon writes it when [inventory] enabled = true)",
            Escaped(file.path().display())
        ));
    }
    output::stdout(|out| print_ports(out, &watchlist, &stored, filter, format))
        .map_err(CommandError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn matches(agent: &crate::watchlist::Agent, wanted: &str) -> bool {
    agent.uuid.text().eq_ignore_ascii_case(wanted) || agent.name.as_deref() == Some(wanted)
}

/// One line per stored port of each watched agent that passes `filter`, in watchlist order
/// and then by port.
pub fn print_ports(
    out: &mut dyn Write,
    watchlist: &Watchlist,
    stored: &InventoryMap,
    filter: &Filter,
    format: Format,
) -> io::Result<()> {
    for agent in &watchlist.agents {
        if filter.agent.as_deref().is_some_and(|w| !matches(agent, w)) {
            continue;
        }
        let Some(entry) = stored.get(&*agent.uuid.text()) else {
            continue;
        };
        let Some(snapshot) = &entry.snapshot else {
            continue;
        };
        let name = agent.name.as_deref().unwrap_or(&entry.name);
        for p in &snapshot.ports {
            if filter.port.is_some_and(|want| want != p.port) {
                continue;
            }
            match format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    escape::json_line(&serde_json::json!({
                        "uuid": agent.uuid, "agent_name": name, "port": p.port,
                        "process_name": &*p.process, "pid": p.pid,
                        "machine_ip": snapshot.machine_ip, "machine_name": snapshot.machine_name,
                        "fetched_at": entry.fetched_at,
                    }))
                )?,
                Format::Text => writeln!(
                    out,
                    "{:<36}  {:<16}  {:>5}  {:<16}  {:>7}  {}",
                    Escaped(&agent.uuid),
                    Escaped(name),
                    p.port,
                    Escaped(&*p.process),
                    p.pid,
                    Escaped(&snapshot.machine_ip)
                )?,
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
        let mut out = Vec::new();
        print_ports(&mut out, &w, &m, &filter, format).unwrap();
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
                agent: Some("db-01".into()),
                port: None,
            },
            Format::Text,
        );
        assert_eq!(db.lines().count(), 2);
        assert!(db.lines().all(|l| l.starts_with(A)));
        let by_uuid = printed(
            Filter {
                agent: Some(B.to_uppercase()),
                port: Some(22),
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
                agent: None,
                port: Some(3306),
            },
            Format::Json,
        );
        assert_eq!(json.lines().count(), 1);
        assert!(!json.contains('\u{1b}'));
        let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        assert_eq!(v["process_name"], "my\u{1b}[2Jsql");
    }
}
