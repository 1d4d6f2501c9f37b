//! `cwp-portwatch once`: every watched agent polled once through the same limiter as the
//! daemon, one line per agent on stdout; exit 1 when any poll failed. With `[discovery]`,
//! one discovery pass first (its failure is the command's: exit 1).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::account::AccountSink;
use crate::api::Client;
use crate::cli::Format;
use crate::config::Settings;
use crate::discovery::{self, Discovery};
use crate::engine::{Engine, EngineReport};
use crate::escape::{self, Escaped};
use crate::events::{Event, EventSink, TracingSink};
use crate::shutdown::{self, Shutdown};
use crate::watchlist::Watchlist;

use super::{CommandError, output, startup};

/// Polls, prints, and says by the exit code whether every poll answered. With several
/// accounts, each polls through its own engine (its own credentials and quota), all at once.
pub async fn run(config: &Path, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, plans) = startup::load_accounts(config)?;
    crate::logging::init(settings.log.format, &settings.log.level)?;
    let several = settings.several_accounts();
    let shutdown = Shutdown::new();
    // `once` prints each agent's status on stdout; a `status_changed` from UNKNOWN for every
    // agent on every run would only mislead journal alerting. Failures are still logged.
    let base: Arc<dyn EventSink> = Arc::new(WithoutStatusChanges(TracingSink));
    let mut engines = Vec::with_capacity(plans.len());
    for (plan, watchlist) in plans {
        let sink: Arc<dyn EventSink> = if several {
            Arc::new(AccountSink::new(base.clone(), &plan.name))
        } else {
            base.clone()
        };
        match engine_for(&plan.settings, watchlist, sink, &shutdown).await {
            Ok(engine) => engines.push((plan.name, engine)),
            Err(e) => {
                shutdown.finish(shutdown::GRACE).await;
                return Err(e);
            }
        }
    }
    shutdown.cancel_on_stop_signals();
    let running: Vec<_> = engines
        .into_iter()
        .map(|(name, engine)| (name, shutdown.spawn(engine.run(shutdown.token()))))
        .collect();
    let mut reports = Vec::with_capacity(running.len());
    for (name, task) in running {
        match task.await {
            Ok((_, report)) => reports.push((name, report)),
            Err(e) => {
                shutdown.finish(shutdown::GRACE).await;
                return Err(CommandError::Engine(e.to_string()));
            }
        }
    }
    shutdown.finish(shutdown::GRACE).await;
    // The exit code says how the polls went, whether or not anyone read all of the lines.
    output::stdout(|out| {
        for (name, report) in &reports {
            print_report(out, report, format, several.then_some(name.as_str()))?;
        }
        Ok(())
    })
    .map_err(CommandError::Output)?;
    let failed = reports
        .iter()
        .flat_map(|(_, r)| &r.agents)
        .any(|a| a.last_error.is_some() || a.status == crate::status::UNKNOWN);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// One account's engine for `once`: connected, with its agents (after one discovery pass
/// when its `[discovery]` is on: `once` polls what `run` would watch).
async fn engine_for(
    settings: &Settings,
    mut watchlist: Watchlist,
    sink: Arc<dyn EventSink>,
    shutdown: &Shutdown,
) -> Result<Engine<Client>, CommandError> {
    let env = crate::credentials::Environment::from_process();
    let connected = startup::connect(settings, &env, shutdown).await?;
    let agents = if settings.discovery.enabled {
        let mut discovery = Discovery::new(
            connected.client.clone(),
            settings.discovery.clone(),
            settings.api.requests_per_second,
        );
        let found = discovery.discover().await?;
        discovery::merge(&watchlist.agents, &found.agents)
    } else {
        std::mem::take(&mut watchlist.agents)
    };
    Ok(startup::engine_for(
        connected,
        settings,
        &agents,
        sink,
        Default::default(),
        true,
    ))
}

/// One line per agent; `account` (several accounts) is added to each.
fn print_report(
    out: &mut dyn Write,
    report: &EngineReport,
    format: Format,
    account: Option<&str>,
) -> io::Result<()> {
    for a in &report.agents {
        if let (Format::Text, Some(account)) = (format, account) {
            write!(out, "{:<12}  ", Escaped(account))?;
        }
        match format {
            Format::Json => {
                let mut line = serde_json::json!({
                    "uuid": a.uuid, "agent_name": a.name, "status": a.status,
                    "request_id": a.request_id, "error": a.last_error,
                });
                if let Some(account) = account {
                    line["account"] = account.into();
                }
                writeln!(out, "{}", escape::json_line(&line))?
            }
            // An API answer is hostile: its status and error message are shown escaped, one
            // agent per line.
            Format::Text => writeln!(
                out,
                "{:<36}  {:<16}  {:<14}  {}",
                Escaped(&a.uuid),
                Escaped(&a.name),
                Escaped(&a.status),
                Escaped(a.last_error.as_deref().unwrap_or(""))
            )?,
        }
    }
    Ok(())
}

/// Passes every event but `status_changed`.
struct WithoutStatusChanges<S>(S);

impl<S: EventSink> EventSink for WithoutStatusChanges<S> {
    fn emit(&self, event: &Event) {
        if !matches!(event, Event::StatusChanged { .. }) {
            self.0.emit(event);
        }
    }
}
