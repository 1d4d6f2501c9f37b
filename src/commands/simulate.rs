//! `cwp-portwatch simulate`: the CWP API simulator, served on the given address until
//! SIGTERM/SIGINT.
//!
//! Stdout is for scripts: first line `listening on http://ADDR` (they read the port from it),
//! then the test credentials (the simulator's own documented values, not secrets) and the
//! scenario's agents; at the stop one line of counts. A script that reads the first line and
//! closes its end of the pipe still has a simulator to talk to: the serving goes on, and the
//! lines nobody reads are dropped. Stderr carries one structured line per request.

use std::process::ExitCode;

use crate::config::LogFormat;
use crate::logging;
use crate::shutdown::{self, Shutdown};
use cwp_simulator::cli::SimulateArgs;
use cwp_simulator::{RunningSimulator, SimulatorError};

use super::output;

/// Errors of `simulate`.
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// Bad options, an unreadable scenario, an address in use.
    #[error(transparent)]
    Simulator(#[from] SimulatorError),
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] logging::LoggingError),
    /// Stdout failed for another reason than its reader going away.
    #[error("cannot write to stdout")]
    Output(#[source] std::io::Error),
}

/// Serves until stopped.
pub async fn run(args: SimulateArgs) -> Result<ExitCode, SimulateError> {
    // Text on a terminal, JSON lines otherwise.
    logging::init(LogFormat::Auto, "info")?;
    let opts = args.options()?;
    let secret_id = opts.scenario.secret_id.clone();
    let secret_key = opts.scenario.secret_key.clone();
    let agents: Vec<String> = opts
        .scenario
        .agents
        .iter()
        .map(|a| a.uuid.clone())
        .collect();
    // Only the SecretIds of further accounts: their keys are the scenario author's, not the
    // documented test key printed above.
    let further_ids: Vec<String> = opts
        .scenario
        .extra_credentials
        .iter()
        .map(|c| c.secret_id.clone())
        .collect();
    let limiter = opts.limiter;
    let shutdown = Shutdown::new();
    shutdown.cancel_on_stop_signals();
    let sim = RunningSimulator::start(opts, args.listen)
        .await
        .map_err(|source| SimulatorError::Bind {
            addr: args.listen,
            source,
        })?;
    output::stdout(|out| {
        writeln!(out, "listening on {}", sim.endpoint())?;
        writeln!(out, "SecretId:  {secret_id}")?;
        writeln!(out, "SecretKey: {secret_key}")?;
        for id in &further_ids {
            writeln!(
                out,
                "SecretId:  {} (its key is in the scenario)",
                crate::escape::escape(id)
            )?;
        }
        writeln!(out, "rate limit: {limiter:?} per action and SecretId")?;
        writeln!(out, "agents ({}):", agents.len())?;
        for uuid in &agents {
            writeln!(out, "  {uuid}")?;
        }
        Ok(())
    })
    .map_err(SimulateError::Output)?;
    shutdown.cancelled().await;
    shutdown.finish(shutdown::GRACE).await;
    let stats = sim.stats();
    sim.shutdown().await;
    // One line a script can read: the simulator's own view of the rate limit.
    output::stdout(|out| {
        writeln!(
            out,
            "stopped after {} requests ({} ok, {} throttled, max_in_window={}, \
             max_arrivals_in_window={})",
            stats.requests,
            stats.ok,
            stats.throttled,
            stats.max_in_window,
            // What the clients sent, before any limiter: the measure of their own pacing.
            stats
                .per_action
                .values()
                .map(|a| a.max_arrivals_in_window)
                .max()
                .unwrap_or(0)
        )
    })
    .map_err(SimulateError::Output)?;
    Ok(ExitCode::SUCCESS)
}
