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

/// Prints one line per watched agent, in watchlist order.
pub fn run(config: &Path, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, watchlist) = startup::load(config)?;
    let state = StateFile::in_dir(&settings.state_dir);
    // Loaded first: when the path cannot be read at all (`state_dir` is a file, say), the error
    // alone is the answer, not a "no state file yet" note before it.
    let known = state.load()?;
    if !state.path().exists() {
        output::stderr_line(format_args!(
            "no state file at {} yet: every agent is UNKNOWN (the daemon writes it; check state_dir)",
            Escaped(state.path().display())
        ));
    }
    output::stdout(|out| print_statuses(out, &watchlist, &known, format))
        .map_err(CommandError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn print_statuses(
    out: &mut dyn Write,
    watchlist: &Watchlist,
    known: &KnownMap,
    format: Format,
) -> io::Result<()> {
    for agent in &watchlist.agents {
        let k = known.get(agent.uuid.as_str());
        let status = k.map_or(crate::status::UNKNOWN, |k| &*k.status);
        let name = agent.name.as_deref().unwrap_or("");
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                escape::json_line(&serde_json::json!({
                    "uuid": agent.uuid, "agent_name": name, "status": status,
                    "seen_at": k.map(|k| k.seen_at), "request_id": k.map(|k| &k.request_id),
                }))
            )?,
            // The state file is hostile: a status or RequestId with `\n` or ESC is shown
            // escaped, one agent per line.
            Format::Text => writeln!(
                out,
                "{:<36}  {:<16}  {:<14}  {}",
                Escaped(&agent.uuid),
                Escaped(name),
                Escaped(status),
                Escaped(k.map(|k| k.request_id.as_str()).unwrap_or(""))
            )?,
        }
    }
    Ok(())
}
