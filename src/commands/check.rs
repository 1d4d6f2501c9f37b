//! `cwp-portwatch check`: validate config, watchlist, credential sources and `state_dir`
//! without calling the API. Prints every problem found (exit 1), or a summary (exit 0). Never
//! prints a secret. Whatever `run` would refuse at start, `check` refuses too: `state_dir` is
//! probed as `run` probes it ([`crate::state::prepare_dir`]; a missing folder is created,
//! mode 0700, as `run` would create it).

use std::path::Path;
use std::process::ExitCode;

use crate::config::{ConfigErrors, Settings};
use crate::credentials::{Environment, Resolved, resolve};
use crate::state;
use crate::watchlist::Watchlist;

use super::{CommandError, output, startup};

/// Runs the check and prints its findings. The exit code is the check's verdict, also when
/// the reader of stdout has gone away (`check | head -1`); only a stdout that cannot be written is an error; the problems found are the output.
pub fn run(config: &Path) -> Result<ExitCode, CommandError> {
    match check(config, &Environment::from_process()) {
        Ok(summary) => {
            output::stdout(|out| writeln!(out, "{summary}")).map_err(CommandError::Output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(problems) => {
            output::stderr_line(format_args!(
                "{problems}\n{} problem(s) found",
                problems.len()
            ));
            Ok(ExitCode::FAILURE)
        }
    }
}

/// A list of problems, one per line, `file:line:column: message`.
#[derive(Debug)]
pub struct Problems(Vec<String>);

impl Problems {
    /// How many problems (the count `check` prints last).
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// True when the check found nothing to fix.
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
        startup::add_watchlist_problems(config, &mut e);
        Problems(lines(&e))
    })?;
    let mut problems = Vec::new();
    let watchlist = match settings.watchlist_path.as_deref().map(Watchlist::load) {
        Some(Ok(w)) => Some(w),
        Some(Err(e)) => {
            problems.extend(lines(&e));
            None
        }
        None => None,
    };
    let credentials = match resolve(&settings.credentials, env) {
        Ok(Resolved::Static(_, source)) => source.to_string(),
        Ok(Resolved::CvmRole {
            metadata_endpoint, ..
        }) => {
            format!("CVM instance role via {metadata_endpoint} (not contacted by check)")
        }
        Ok(Resolved::AssumeRole { base, request, .. }) => {
            let base = match *base {
                Resolved::Static(_, source) => source.to_string(),
                _ => "the CVM instance role".to_owned(),
            };
            format!(
                "STS AssumeRole of {} as {} for {} via {} (not contacted by check), base \
                 credentials from {base}",
                request.role_arn,
                request.role_session_name,
                humantime::format_duration(request.duration),
                settings.api.sts_endpoint,
            )
        }
        Err(e) => {
            problems.push(format!("credentials: {e}"));
            String::new()
        }
    };
    // What `run` refuses at start: a `state_dir` it could not persist to, or that other users
    // could write. Probing it creates it (mode 0700) when missing, as `run` would.
    if let Err(e) = state::prepare_dir(&settings.state_dir) {
        problems.push(e.to_string());
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let agents = watchlist.map_or(0, |w| w.agents.len());
    let inventory = inventory_line(&settings);
    let discovery = &settings.discovery;
    let watchlist = match &settings.watchlist_path {
        Some(path) => format!(
            "{} ({agents} agents{})",
            state::shown(path),
            if agents == 0 && !discovery.enabled {
                "; the daemon will idle"
            } else {
                ""
            }
        ),
        None => "none (discovery only)".to_owned(),
    };
    let discovery = if discovery.enabled {
        let types: Vec<&str> = discovery.machine_types.iter().map(|t| t.as_str()).collect();
        format!(
            "{} in {}, every {} (DescribeMachines is not called by check)",
            types.join("+"),
            discovery.regions.join(", "),
            humantime::format_duration(discovery.refresh)
        )
    } else {
        "off".to_owned()
    };
    Ok(format!(
        "config      {}\nwatchlist   {watchlist}\ndiscovery   {discovery}\nendpoint    {}\nrate        {} requests/s, {} in flight, timeout {}\nintervals   settled {}, collecting {}, offline {}\ninventory   {inventory}\nstate       {}\ncredentials {credentials}\nOK",
        state::shown(&settings.config_path),
        settings.api.endpoint,
        settings.api.requests_per_second,
        settings.api.max_in_flight,
        humantime::format_duration(settings.api.timeout),
        humantime::format_duration(settings.poll.interval),
        humantime::format_duration(settings.poll.collecting_interval),
        humantime::format_duration(settings.poll.offline_interval),
        state::shown(&settings.state_dir),
    ))
}

/// `[inventory]` and the per-action rates, for the summary.
fn inventory_line(settings: &crate::config::Settings) -> String {
    let i = &settings.inventory;
    let mut line = if !i.enabled {
        "off (status only)".to_owned()
    } else {
        let rescan = if i.rescan_interval.is_zero() {
            "no rescans".to_owned()
        } else {
            format!(
                "rescan every {}",
                humantime::format_duration(i.rescan_interval)
            )
        };
        format!(
            "on: {rescan}, create_missing {}, baseline {}",
            i.create_missing,
            match i.baseline {
                crate::inventory::Baseline::Summary => "summary",
                crate::inventory::Baseline::Ports => "ports",
            }
        )
    };
    for (action, rate) in &settings.api.action_rates {
        line.push_str(&format!("; {action} {rate} requests/s"));
    }
    line
}
