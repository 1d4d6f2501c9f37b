//! `cwp-portwatch`: parses the command line, runs the command, maps errors to exit codes
//! (0 ok, 1 failure or invalid input, 2 usage error — clap's own).

use std::process::ExitCode;

use clap::Parser;
use cwp_portwatch::cli::{Cli, Command};
use cwp_portwatch::{check, daemon, demo, simulator};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        match cli.command {
            Command::Run(c) => daemon::run(&c.config).await.map_err(Into::into),
            Command::Once { config, format } => daemon::once(&config.config, format)
                .await
                .map_err(Into::into),
            Command::Status { config, format } => {
                daemon::status(&config.config, format).map_err(Into::into)
            }
            Command::Check(c) => Ok(check::run(&c.config)),
            Command::Simulate(args) => {
                // One structured line per request on stderr: text on a terminal, JSON lines
                // otherwise (stdout carries the address and credentials for scripts).
                cwp_portwatch::logging::init(cwp_portwatch::config::LogFormat::Auto, "info")?;
                let shutdown = tokio_util::sync::CancellationToken::new();
                let s = shutdown.clone();
                tokio::spawn(async move {
                    daemon::stop_signal().await;
                    s.cancel();
                });
                simulator::cli::run(args, shutdown).await?;
                Ok(ExitCode::SUCCESS)
            }
            Command::Demo => demo::run().await.map_err(Into::into),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}
