//! One module per command of the binary, each with a `run` that `main` dispatches to.
//!
//! - [`daemon`]: `run`'s entry, which picks [`run`], the daemon (sd_notify, SIGHUP reload,
//!   graceful stop), or with `[ha]` (feature `ha`) `ha_run`, which makes it one candidate of an
//!   etcd election, polling only while it leads.
//! - [`once`]: every agent polled once, one line each.
//! - [`status`]: the persisted statuses, no API call.
//! - [`ports`]: the stored open-port inventory, no API call.
//! - [`policy`]: the expected-ports policy file for the daemon, and `policy test` (the stored
//!   inventory against it, no API call).
//! - [`stored`]: which accounts and agents `status` and `ports` show.
//! - [`check`]: config, watchlist and credential sources validated, no API call.
//! - [`simulate`]: the CWP API simulator served until stopped.
//! - [`demo`]: the simulator and the real engine together, for a newcomer.
//!
//! What the commands share lives beside them: [`startup`] (config → logging → credentials →
//! client → engine, the one way every polling command starts), [`reload`] (what a SIGHUP may
//! change in a running daemon), [`output`] (stdout whose reader may go away). Stopping is
//! [`crate::shutdown`]. The decisions themselves live in [`crate::engine`] and below; this
//! layer is wiring.

mod account_run;
pub mod check;
pub mod daemon;
pub mod demo;
mod discovering;
#[cfg(feature = "ha")]
mod ha_run;
pub mod once;
pub mod output;
pub mod policy;
pub mod ports;
pub mod reload;
pub mod run;
pub mod simulate;
pub mod startup;
pub mod status;
pub mod stored;

use crate::api::client::ClientBuildError;
use crate::config::ConfigErrors;
use crate::credentials::CredentialError;
use crate::credentials::assume_role::AssumeRoleError;
use crate::credentials::cvm_role::CvmRoleError;
use crate::logging::LoggingError;
use crate::state::StateError;

/// Why `run`, `once` or `status` could not do their work. Each variant either is its cause
/// (`transparent`: `main` prints the cause chain, and a wrapper repeating its source's text
/// printed every start-up error twice) or adds what the cause cannot know.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Config or watchlist invalid (every problem, one per line).
    #[error(transparent)]
    Config(#[from] ConfigErrors),
    /// No usable credentials.
    #[error(transparent)]
    Credentials(#[from] CredentialError),
    /// The configured CVM instance role's credentials could not be fetched.
    #[error(transparent)]
    CvmRole(CvmRoleError),
    /// Nothing else in the credential chain had credentials, and the CVM instance role, its
    /// last source, failed too: on a machine that is no CVM the cause alone would mislead.
    #[error(
        "no credentials in $CREDENTIALS_DIRECTORY, the environment or a profile file, so the CVM \
         instance role was tried; set TENCENTCLOUD_SECRET_ID/TENCENTCLOUD_SECRET_KEY or \
         [credentials] in the config when this is not a CVM"
    )]
    CvmRoleFallback(#[source] CvmRoleError),
    /// `source = "assume-role"`: STS (or the base source) gave no credentials at start-up.
    #[error(transparent)]
    AssumeRole(AssumeRoleError),
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// Logging could not be set up.
    #[error(transparent)]
    Logging(#[from] LoggingError),
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] std::io::Error),
    /// Stdout failed for another reason than its reader going away (a full disk, say).
    #[error("cannot write to stdout")]
    Output(#[source] std::io::Error),
    /// The `[metrics]` listener could not be set up.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    /// The engine task died.
    #[error("the polling engine failed: {0}")]
    Engine(String),
    /// `once` could not discover the agents (`[discovery]`).
    #[error("cannot discover agents: {0}")]
    Discovery(#[from] crate::discovery::DiscoveryError),
    /// Alert delivery (`[[sink]]`) could not start.
    #[error(transparent)]
    Delivery(#[from] crate::delivery::DeliveryError),
}

impl CommandError {
    /// Stable machine-readable code, for `error_code` log fields and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Config(e) => e.code(),
            CommandError::Credentials(e) => e.code(),
            CommandError::CvmRole(e) | CommandError::CvmRoleFallback(e) => e.code(),
            CommandError::AssumeRole(e) => e.code(),
            CommandError::Client(e) => e.code(),
            CommandError::Logging(e) => e.code(),
            CommandError::State(e) => e.code(),
            CommandError::Metrics(e) => e.code(),
            CommandError::Signals(_) => "CommandError.Signals",
            CommandError::Output(_) => "CommandError.Output",
            CommandError::Engine(_) => "CommandError.Engine",
            CommandError::Discovery(_) => "CommandError.Discovery",
            CommandError::Delivery(e) => e.code(),
        }
    }
}
