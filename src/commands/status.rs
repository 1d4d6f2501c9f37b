//! `cwp-portwatch status`: the persisted last-known status of every watched agent, read from
//! the state file; no API call, no credentials needed.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use crate::cli::Format;
use crate::escape::{self, Escaped};
use crate::state::StateFile;
use crate::tracker::KnownMap;
use crate::watchlist::Watchlist;

use super::{CommandError, output, startup};

/// Prints one line per watched agent, in watchlist order; with several accounts, account by
/// account (each from its own state file), each line saying which.
pub fn run(config: &Path, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, plans) = startup::load_accounts(config)?;
    let several = settings.several_accounts();
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
        let account = several.then_some(plan.name.as_str());
        output::stdout(|out| print_statuses(out, watchlist, &known, format, account))
            .map_err(CommandError::Output)?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_statuses(
    out: &mut dyn Write,
    watchlist: &Watchlist,
    known: &KnownMap,
    format: Format,
    account: Option<&str>,
) -> io::Result<()> {
    for agent in &watchlist.agents {
        let k = known.get(&agent.uuid);
        let status = k.map_or(crate::status::UNKNOWN, |k| &*k.status);
        let name = agent.name.as_deref().unwrap_or("");
        if let (Format::Text, Some(account)) = (format, account) {
            write!(out, "{:<12}  ", Escaped(account))?;
        }
        match format {
            Format::Json => {
                let mut line = serde_json::json!({
                    "uuid": agent.uuid, "agent_name": name, "status": status,
                    "seen_at": k.map(|k| k.seen_at), "request_id": k.map(|k| &k.request_id),
                });
                if let Some(account) = account {
                    line["account"] = account.into();
                }
                writeln!(out, "{}", escape::json_line(&line))?
            }
            // The state file is hostile: a status or RequestId with `\n` or ESC is shown
            // escaped, one agent per line.
            Format::Text => writeln!(
                out,
                "{:<36}  {:<16}  {:<14}  {}",
                Escaped(&*agent.uuid.text()),
                Escaped(name),
                Escaped(status),
                Escaped(&*k.map(|k| k.request_id.as_text()).unwrap_or_default())
            )?,
        }
    }
    Ok(())
}
