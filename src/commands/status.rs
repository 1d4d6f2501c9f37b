//! `cwp-portwatch status`: the persisted last-known status of every agent of every account
//! (or of `--account NAME`), read from each account's state file; no API call, no
//! credentials needed. Listed agents first, in watchlist order, then the discovered ones the
//! state file holds ([`super::stored`]); every line says its account.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Format;
use crate::escape::{self, Escaped};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::state::StateFile;
use crate::tracker::KnownMap;

use super::stored::{self, ShownAgent};
use super::{CommandError, output, startup};

/// Prints one line per agent, account by account (each from its own state file). Exit 1
/// when `account` names no configured account.
pub fn run(config: &Path, account: Option<&str>, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, plans) = startup::load_accounts(config)?;
    let plans = match stored::select(plans, account) {
        Ok(plans) => plans,
        Err(message) => {
            output::stderr_line(message);
            return Ok(ExitCode::FAILURE);
        }
    };
    for (plan, watchlist) in &plans {
        let state = StateFile::for_account(&settings.state_dir, &plan.name);
        // Loaded first: when the path cannot be read at all (`state_dir` is a file, say), the
        // error alone is the answer, not a "no state file yet" note before it.
        let known = state.load()?;
        if !state.path().exists() {
            output::stderr_line(format_args!(
                "no state file at {} yet: every agent is UNKNOWN (the daemon writes it; check state_dir)",
                Escaped(state.path().display())
            ));
        }
        let discovering = plan.settings.discovery.enabled;
        // Discovered agents' names are kept with their inventory only; a file that cannot
        // be read costs the names, not the statuses (`ports` reports it).
        let names = if discovering {
            InventoryFile::for_account(&settings.state_dir, &plan.name)
                .load()
                .unwrap_or_default()
        } else {
            InventoryMap::new()
        };
        let left = stored::left_discovery(&settings.state_dir, &plan.name);
        let agents = stored::agents(
            &watchlist.agents,
            discovering,
            known.keys().copied().filter(|u| !left.contains(u)),
            &names,
        );
        output::stdout(|out| print_statuses(out, &agents, &known, format, &plan.name))
            .map_err(CommandError::Output)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_statuses(
    out: &mut dyn Write,
    agents: &[ShownAgent],
    known: &KnownMap,
    format: Format,
    account: &str,
) -> io::Result<()> {
    for agent in agents {
        let k = known.get(&agent.uuid);
        let status = k.map_or(crate::status::UNKNOWN, |k| &*k.status);
        match format {
            Format::Json => {
                let line = serde_json::json!({
                    "account": account, "uuid": agent.uuid, "agent_name": agent.name,
                    "status": status, "seen_at": k.map(|k| k.seen_at),
                    "request_id": k.map(|k| &k.request_id),
                });
                writeln!(out, "{}", escape::json_line(&line))?
            }
            // The state file is hostile: a status or RequestId with `\n` or ESC is shown
            // escaped, one agent per line.
            Format::Text => writeln!(
                out,
                "{:<12}  {:<36}  {:<16}  {:<14}  {}",
                Escaped(account),
                Escaped(&*agent.uuid.text()),
                Escaped(&agent.name),
                Escaped(status),
                Escaped(&*k.map(|k| k.request_id.as_text()).unwrap_or_default())
            )?,
        }
    }
    Ok(())
}
