//! `cwp-portwatch`: parses the command line, runs the command, maps errors to exit codes
//! (0 ok, 1 failure or invalid input, 2 usage error — clap's own).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use cwp_portwatch::cli::{Cli, Command, PolicyCommand};
use cwp_portwatch::commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` and `once` are one dispatcher loop that polls its own requests: one thread
    // (blocking work such as state writes goes to tokio's blocking pool) means no cross-thread
    // wake-ups per poll (issue 13). `simulate` and `demo` serve many connections: two workers.
    let single = matches!(cli.command, Command::Run(_) | Command::Once { .. });
    let mut builder = if single {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            report(&anyhow::Error::new(e).context("cannot start the async runtime"));
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(async move {
        Ok(match cli.command {
            Command::Run(c) => commands::daemon::run(&c.config).await?,
            Command::Once { config, format } => commands::once::run(&config.config, format).await?,
            Command::Status {
                config,
                account,
                format,
            } => commands::status::run(&config.config, account.as_deref(), format)?,
            Command::Ports {
                config,
                account,
                agent,
                port,
                unexpected,
                format,
            } => commands::ports::run(
                &config.config,
                &commands::ports::Filter {
                    account,
                    agent,
                    port,
                    unexpected,
                },
                format,
            )?,
            Command::Policy(PolicyCommand::Test { config, format }) => {
                commands::policy::test(&config.config, format)?
            }
            Command::Check(c) => commands::check::run(&c.config.config, c.probe)?,
            Command::Simulate(args) => commands::simulate::run(args).await?,
            Command::Demo => commands::demo::run().await?,
            Command::Generate(args) => {
                cwp_portwatch::cli::generate(&args)?;
                ExitCode::SUCCESS
            }
        })
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e);
            ExitCode::FAILURE
        }
    }
}

/// `error: …` and then each cause the lines above have not already said: several error types
/// quote their source in their own message (`{path}: {source}`), and repeating it as a
/// `caused by:` line only makes an operator read it twice. Stderr failures are ignored: there
/// is nowhere else to report them.
///
/// Messages may quote a path, a file's contents or an API message: every control character
/// but a line break (a list of problems is one per line) is escaped, so no ESC reaches the
/// terminal.
fn report(e: &anyhow::Error) {
    let mut said = e.to_string();
    let mut text = format!("error: {said}\n");
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !said.contains(&cause) {
            text.push_str(&format!("  caused by: {cause}\n"));
            said.push('\n');
            said.push_str(&cause);
        }
    }
    let text = cwp_portwatch::escape::escape_keeping_lines(&text);
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}
