//! `cwp-portwatch check`: validate config, watchlist and credential sources without calling
//! the API. Prints every problem found (exit 1), or a summary (exit 0). Never prints a secret.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{ConfigErrors, Settings};
use crate::credentials::{Environment, Resolved, resolve};
use crate::watchlist::Watchlist;

/// Runs the check and prints its findings.
pub fn run(config: &Path) -> ExitCode {
    match check(config, &Environment::from_process()) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(problems) => {
            eprintln!("{problems}");
            eprintln!("{} problem(s) found", problems.len());
            ExitCode::FAILURE
        }
    }
}

/// A list of problems, one per line, `file:line:column: message`.
#[derive(Debug)]
pub struct Problems(Vec<String>);

impl Problems {
    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// None at all?
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Display for Problems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.join("\n"))
    }
}

fn lines(e: &ConfigErrors) -> Vec<String> {
    e.to_string().lines().map(str::to_string).collect()
}

/// Checks everything; returns the summary text or every problem.
pub fn check(config: &Path, env: &Environment) -> Result<String, Problems> {
    let settings = Settings::load(config).map_err(|mut e| {
        crate::daemon::add_watchlist_problems(config, &mut e);
        Problems(lines(&e))
    })?;
    let mut problems = Vec::new();
    let watchlist = match Watchlist::load(&settings.watchlist_path) {
        Ok(w) => Some(w),
        Err(e) => {
            problems.extend(lines(&e));
            None
        }
    };
    let credentials = match resolve(&settings.credentials, env) {
        Ok(Resolved::Static(_, source)) => source.to_string(),
        Ok(Resolved::CvmRole {
            metadata_endpoint, ..
        }) => {
            format!("CVM instance role via {metadata_endpoint} (not contacted by check)")
        }
        Err(e) => {
            problems.push(format!("credentials: {e}"));
            String::new()
        }
    };
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let agents = watchlist.map_or(0, |w| w.agents.len());
    Ok(format!(
        "config      {}\nwatchlist   {} ({agents} agents{})\nendpoint    {}\nrate        {} requests/s, {} in flight, timeout {}\nintervals   settled {}, collecting {}, offline {}\nstate       {}\ncredentials {credentials}\nOK",
        settings.config_path.display(),
        settings.watchlist_path.display(),
        if agents == 0 {
            "; the daemon will idle"
        } else {
            ""
        },
        settings.api.endpoint,
        settings.api.requests_per_second,
        settings.api.max_in_flight,
        humantime::format_duration(settings.api.timeout),
        humantime::format_duration(settings.poll.interval),
        humantime::format_duration(settings.poll.collecting_interval),
        humantime::format_duration(settings.poll.offline_interval),
        settings.state_dir.display(),
    ))
}
