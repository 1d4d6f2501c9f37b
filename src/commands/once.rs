//! `cwp-portwatch once`: every watched agent polled once through the same limiter as the
//! daemon, one line per agent on stdout; exit 1 when any poll failed. With `[discovery]`,
//! one discovery pass first (its failure is the command's: exit 1).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::Format;
use crate::discovery::{self, Discovery};
use crate::engine::EngineReport;
use crate::escape::{self, Escaped};
use crate::events::{Event, EventSink, TracingSink};
use crate::shutdown::{self, Shutdown};

use super::{CommandError, output, startup};

/// Polls, prints, and says by the exit code whether every poll answered.
pub async fn run(config: &Path, format: Format) -> Result<ExitCode, CommandError> {
    let (settings, mut watchlist) = startup::load_and_log(config)?;
    let shutdown = Shutdown::new();
    // `once` prints each agent's status on stdout; a `status_changed` from UNKNOWN for every
    // agent on every run would only mislead journal alerting. Failures are still logged.
    let sink: Arc<dyn EventSink> = Arc::new(WithoutStatusChanges(TracingSink));
    let engine = async {
        let env = crate::credentials::Environment::from_process();
        let connected = startup::connect(&settings, &env, &shutdown).await?;
        // With [discovery], one pass first: `once` polls what `run` would watch.
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
        let engine = startup::engine_for(
            connected,
            &settings,
            &agents,
            sink,
            Default::default(),
            true,
        );
        Ok::<_, CommandError>(engine)
    }
    .await;
    let engine = match engine {
        // The per-action rate of `[api.actions.DescribeOpenPortTaskStatus]` holds here too;
        // `once` keeps no inventory (it would report every port as new).
        Ok(engine) => {
            let mut options =
                crate::engine::InventoryOptions::from_settings(&settings.api, &settings.inventory);
            options.enabled = false;
            engine.with_inventory(options, Default::default(), None)
        }
        Err(e) => {
            shutdown.finish(shutdown::GRACE).await;
            return Err(e);
        }
    };
    drop(watchlist);
    shutdown.cancel_on_stop_signals();
    let (_, report) = engine.run(shutdown.token()).await;
    shutdown.finish(shutdown::GRACE).await;
    // The exit code says how the polls went, whether or not anyone read all of the lines.
    output::stdout(|out| print_report(out, &report, format)).map_err(CommandError::Output)?;
    let failed = report
        .agents
        .iter()
        .any(|a| a.last_error.is_some() || a.status == crate::status::UNKNOWN);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn print_report(out: &mut dyn Write, report: &EngineReport, format: Format) -> io::Result<()> {
    for a in &report.agents {
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                escape::json_line(&serde_json::json!({
                    "uuid": a.uuid, "agent_name": a.name, "status": a.status,
                    "request_id": a.request_id, "error": a.last_error,
                }))
            )?,
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
