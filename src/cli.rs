//! The command line, parsed by clap. Each command's work lives in its own module under
//! [`crate::commands`]; `main` only dispatches and maps their errors to exit codes.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::DEFAULT_CONFIG_PATH;
use crate::simulator::cli::SimulateArgs;

/// Watch Tencent Cloud CWP agents' open-port task status and log every change.
#[derive(Debug, Parser)]
#[command(name = "cwp-portwatch", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the config file is.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// Config file.
    #[arg(long, env = "CWP_PORTWATCH_CONFIG", default_value = DEFAULT_CONFIG_PATH)]
    pub config: PathBuf,
}

/// Output format of `once` and `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    /// One aligned line per agent.
    #[default]
    Text,
    /// One JSON object per agent and line.
    Json,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground until SIGTERM/SIGINT (SIGHUP reloads).
    Run(ConfigArg),
    /// Validate config, watchlist and credential sources without calling the API.
    Check(ConfigArg),
    /// Poll every watched agent once, print one line per agent.
    Once {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Print the persisted last-known status of every agent, without calling the API.
    Status {
        /// Config.
        #[command(flatten)]
        config: ConfigArg,
        /// Output format.
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Serve the built-in CWP API simulator until stopped.
    Simulate(SimulateArgs),
    /// Run the daemon against the bundled simulator scenario for half a minute.
    Demo,
}
