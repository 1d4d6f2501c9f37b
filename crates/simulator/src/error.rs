//! Errors of the simulator and of scenario files, each with a stable `code()` string that logs
//! and tests can match on (messages may change, codes do not).

use std::net::SocketAddr;
use std::path::PathBuf;

/// A scenario file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read at all.
    #[error("cannot read scenario file {}: {source}", path.display())]
    Read {
        /// The file asked for.
        path: PathBuf,
        /// Why reading failed.
        #[source]
        source: std::io::Error,
    },
    /// The text is not a valid scenario; `origin:line:column` points at the offending spot and the
    /// message says what to write instead.
    #[error("{origin}:{line}:{column}: {message}")]
    Invalid {
        /// The file path, or `scenario` for text that did not come from a file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        column: usize,
        /// What is wrong and what to write instead.
        message: String,
    },
}

impl ScenarioError {
    /// Stable machine-readable kind.
    pub fn code(&self) -> &'static str {
        match self {
            ScenarioError::Read { .. } => "scenario_unreadable",
            ScenarioError::Invalid { .. } => "scenario_invalid",
        }
    }
}

/// Why the simulator could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimulatorError {
    /// The scenario given on the command line is unusable.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// The listen address could not be bound (in use, not local, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A command-line value that parsed but makes no sense (e.g. a rate of 0).
    #[error("invalid simulator option: {0}")]
    InvalidOption(String),
}

impl SimulatorError {
    /// Stable machine-readable kind.
    pub fn code(&self) -> &'static str {
        match self {
            SimulatorError::Scenario(e) => e.code(),
            SimulatorError::Bind { .. } => "simulator_bind_failed",
            SimulatorError::InvalidOption(_) => "simulator_invalid_option",
        }
    }
}
