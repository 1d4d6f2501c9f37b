//! `cwp-portwatch run`'s entry: the config decides whether this process is one daemon
//! ([`super::run`]) or a candidate of an etcd election that polls only while it leads
//! (`super::ha_run`, `[ha]`, feature `ha`). Both run the same term, `run::lead`; keeping the
//! choice here keeps `run` free of `ha_run`, which builds on it.

use std::path::Path;
use std::process::ExitCode;

use super::CommandError;
use super::run;

/// Runs the daemon until SIGTERM/SIGINT (or an engine's death, or, with `[ha]`, the loss of
/// the leadership: exit 75).
pub async fn run(config: &Path) -> Result<ExitCode, CommandError> {
    let (settings, plans) = run::load(config)?;
    #[cfg(feature = "ha")]
    if let Some(ha) = super::ha_run::settings_of(&settings) {
        return super::ha_run::run(settings, plans, ha).await;
    }
    run::single(settings, plans).await
}
