//! `cwp-portwatch check`: validate config, watchlist, the policy file, credential sources and
//! `state_dir` without calling the API. Prints every problem found (exit 1), or a summary (exit 0). Never
//! prints a secret. Whatever `run` would refuse at start, `check` refuses too: `state_dir` is
//! probed as `run` probes it ([`crate::state::prepare_dir`]; a missing folder is created,
//! mode 0700, as `run` would create it).
//!
//! `check --probe` goes one step further for the `[[sink]]` blocks ([`probe`]): after a clean
//! check it reads each sink's files, resolves its host and connects (TLS included), sending
//! nothing, and prints one line per sink; any failure exits 1.

pub mod probe;

use std::path::Path;
use std::process::ExitCode;

use crate::config::{ConfigErrors, Settings};
use crate::credentials::{Environment, Resolved, resolve};
use crate::policy::{Capabilities, Policy};
use crate::state;
use crate::watchlist::Watchlist;

use super::{CommandError, output, startup};

/// Runs the check and prints its findings. The exit code is the check's verdict, also when
/// the reader of stdout has gone away (`check | head -1`); only a stdout that cannot be written is an error; the problems found are the output.
pub fn run(config: &Path, probe: bool) -> Result<ExitCode, CommandError> {
    let env = Environment::from_process();
    match check(config, &env) {
        Ok(summary) => {
            output::stdout(|out| writeln!(out, "{summary}")).map_err(CommandError::Output)?;
            if probe {
                return run_probe(config, &env);
            }
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

/// `--probe`, after a clean check: one line per sink on stdout, `ok` or `FAILED`; exit 1
/// when any failed.
fn run_probe(config: &Path, env: &Environment) -> Result<ExitCode, CommandError> {
    // Read again: `check` returns its summary only, and the file was fine a moment ago.
    let settings = match Settings::load(config) {
        Ok(settings) => settings,
        Err(problems) => {
            output::stderr_line(format_args!("{problems}"));
            return Ok(ExitCode::FAILURE);
        }
    };
    let results = probe::probe_sinks(&settings.sinks, settings.api.ca_file.as_ref(), env);
    let failed = results
        .iter()
        .filter(|(_, outcome)| outcome.is_err())
        .count();
    output::stdout(|out| {
        if results.is_empty() {
            writeln!(out, "probe       no [[sink]] to probe")?;
        }
        for (sink, outcome) in &results {
            match outcome {
                Ok(done) => writeln!(out, "probe       sink {sink}: ok: {done}")?,
                Err(why) => writeln!(out, "probe       sink {sink}: FAILED: {why}")?,
            }
        }
        Ok(())
    })
    .map_err(CommandError::Output)?;
    if failed > 0 {
        output::stderr_line(format_args!("{failed} sink(s) failed the probe"));
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The `[[sink]]` blocks for the summary, one line each (no URL: for robots it is the key).
fn sink_lines(sinks: &[crate::delivery::SinkSettings]) -> String {
    use crate::delivery::UrlSource;
    sinks
        .iter()
        .map(|sink| {
            let url = match &sink.url {
                UrlSource::Inline(url) => format!(
                    "url {}://{}",
                    url.scheme(),
                    crate::escape::escape(
                        &url[url::Position::BeforeHost..url::Position::AfterPort]
                    )
                ),
                UrlSource::File(path) => format!("url_file {}", state::shown(path)),
            };
            let events: Vec<String> = sink.events.iter().map(|e| e.as_written()).collect();
            format!(
                "sink        {} ({}): {url}, events {}, min_severity {}, {}/min, max_age {}, \
                 outbox {}\n",
                sink.name,
                sink.kind.as_str(),
                events.join(" "),
                sink.min_severity.as_str(),
                sink.per_minute,
                humantime::format_duration(sink.max_age),
                sink.outbox_limit,
            )
        })
        .collect()
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

/// Where `credentials` come from, as the summary says it; the problem when they cannot be
/// resolved. Nothing is contacted and no secret is shown.
fn describe_credentials(
    credentials: &crate::config::CredentialSettings,
    env: &Environment,
    sts_endpoint: &reqwest::Url,
) -> Result<String, String> {
    let described = match resolve(credentials, env) {
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
                sts_endpoint,
            )
        }
        Err(e) => return Err(format!("credentials: {e}")),
    };
    Ok(described)
}

/// Checks everything; returns the summary text or every problem.
pub fn check(config: &Path, env: &Environment) -> Result<String, Problems> {
    let settings = Settings::load(config).map_err(|mut e| {
        startup::add_watchlist_problems(config, &mut e);
        add_policy_problems(config, &mut e);
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
    // The policy file, for the port data of every account's backend.
    let policy = match settings.policy.file.as_deref() {
        Some(path) => match super::policy::check_policy(path, &settings) {
            Ok(policy) => policy_summary(path, &policy),
            Err(e) => {
                problems.extend(lines(&e));
                String::new()
            }
        },
        None => "none".to_owned(),
    };
    // Without a default account (only [[account]] blocks) the top-level chain is never used:
    // an empty environment is then no problem.
    let credentials = if settings.has_default_account() {
        describe_credentials(&settings.credentials, env, &settings.api.sts_endpoint).unwrap_or_else(
            |e| {
                problems.push(e);
                String::new()
            },
        )
    } else {
        "none at the top level (each [[account]] has its own)".to_owned()
    };
    // Each `[[account]]`: its watchlist and credentials, checked as the top-level ones are.
    let mut account_lines = Vec::new();
    for account in &settings.accounts {
        let agents = match account.watchlist_path.as_deref().map(Watchlist::load) {
            Some(Ok(w)) => w.agents.len(),
            Some(Err(e)) => {
                problems.extend(lines(&e));
                0
            }
            None => 0,
        };
        match describe_credentials(&account.credentials, env, &settings.api.sts_endpoint) {
            Ok(credentials) => account_lines.push(format!(
                "account     {}: service {}, {}, discovery {}, region {}, credentials \
                 {credentials}",
                account.name,
                account.service.unwrap_or(settings.api.service),
                watchlist_summary(
                    account.watchlist_path.as_deref(),
                    agents,
                    &account.discovery
                ),
                discovery_summary(&account.discovery),
                account
                    .region
                    .as_deref()
                    .or(settings.api.region.as_deref())
                    .unwrap_or("none"),
            )),
            Err(e) => problems.push(format!("account {}: {e}", account.name)),
        }
    }
    // What `run` refuses at start: a `state_dir` it could not persist to, or that other users
    // could write. Probing it creates it (mode 0700) when missing, as `run` would.
    if let Err(e) = state::prepare_dir(&settings.state_dir) {
        problems.push(e.to_string());
    }
    // `account = "…"` in watchlists, checked against the configured accounts (only when each
    // file is fine on its own, so no problem is listed twice).
    if problems.is_empty()
        && let Err(e) = startup::load_accounts(config)
    {
        problems.extend(lines(&e));
    }
    if !problems.is_empty() {
        return Err(Problems(problems));
    }
    let agents = watchlist.map_or(0, |w| w.agents.len());
    let inventory = inventory_line(&settings);
    let watchlist = if settings.has_default_account() {
        watchlist_summary(
            settings.watchlist_path.as_deref(),
            agents,
            &settings.discovery,
        )
    } else {
        "none: no default account, only [[account]] blocks".to_owned()
    };
    let discovery = discovery_summary(&settings.discovery);
    // One line per account when there are several (the default one's from the top level).
    if settings.several_accounts() && settings.has_default_account() {
        account_lines.insert(
            0,
            format!(
                "account     {}: service {}, {watchlist}, discovery {discovery}, region {}, \
                 credentials {credentials}",
                crate::config::DEFAULT_ACCOUNT,
                settings.api.service,
                settings.api.region.as_deref().unwrap_or("none"),
            ),
        );
    }
    let accounts: String = account_lines.iter().map(|l| format!("{l}\n")).collect();
    let mut sinks = sink_lines(&settings.sinks);
    if let Some(ha) = &settings.ha {
        sinks.push_str(&format!("ha          {}\n", ha.summary()));
    }
    Ok(format!(
        "config      {}\nwatchlist   {watchlist}\ndiscovery   {discovery}\nendpoint    {} (service {})\nrate        {} requests/s, {} in flight per action, timeout {}\nintervals   settled {}, collecting {}, offline {}\ninventory   {inventory}\npolicy      {policy}\nstate       {}\ncredentials {credentials}\n{accounts}{sinks}OK",
        state::shown(&settings.config_path),
        settings.api.endpoint,
        settings.api.service,
        settings.api.requests_per_second,
        settings.api.max_in_flight,
        humantime::format_duration(settings.api.timeout),
        humantime::format_duration(settings.poll.interval),
        humantime::format_duration(settings.poll.collecting_interval),
        humantime::format_duration(settings.poll.offline_interval),
        state::shown(&settings.state_dir),
    ))
}

/// A watchlist for the summary: its path and size, or that discovery alone finds the agents.
fn watchlist_summary(
    path: Option<&Path>,
    agents: usize,
    discovery: &crate::discovery::DiscoverySettings,
) -> String {
    match path {
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
    }
}

/// With a config that has problems, the policy file's problems too (when the config names one
/// that exists), so one `check` lists everything, as it does for the watchlist.
fn add_policy_problems(config: &Path, problems: &mut ConfigErrors) {
    let Ok(text) = crate::problems::read_text(config, "") else {
        return;
    };
    let Ok(table) = text.parse::<toml::Table>() else {
        return;
    };
    let Some(name) = table
        .get("policy")
        .and_then(|p| p.get("file"))
        .and_then(|v| v.as_str())
    else {
        return;
    };
    let path = config.parent().unwrap_or(Path::new(".")).join(name);
    if path.is_file()
        && let Err(more) = Policy::load(&path, Capabilities::YUNJING)
    {
        problems.merge(more);
    }
}

/// `[policy]` for the summary.
fn policy_summary(path: &Path, policy: &Policy) -> String {
    format!(
        "{} ({} rules, default {})",
        state::shown(path),
        policy.rule_count(),
        match policy.default_action() {
            crate::policy::DefaultAction::Allow => "allow",
            crate::policy::DefaultAction::Alert => "alert",
        }
    )
}

/// `[discovery]` for the summary.
fn discovery_summary(discovery: &crate::discovery::DiscoverySettings) -> String {
    if discovery.enabled {
        let types: Vec<&str> = discovery.machine_types.iter().map(|t| t.as_str()).collect();
        format!(
            "{} in {}, every {} (DescribeMachines is not called by check)",
            types.join("+"),
            discovery.regions.join(", "),
            humantime::format_duration(discovery.refresh)
        )
    } else {
        "off".to_owned()
    }
}

/// `[inventory]` and the per-action rates and in-flight budgets, for the summary.
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
    for (action, in_flight) in &settings.api.action_in_flight {
        line.push_str(&format!("; {action} {in_flight} in flight"));
    }
    line
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    /// A config in a fresh folder with file credentials, a watchlist and `sinks`.
    fn config(dir: &Path, sinks: &str) -> std::path::PathBuf {
        std::fs::write(
            dir.join("secret_id"),
            "AKIDcwpportwatchtest0000000000000000",
        )
        .unwrap();
        std::fs::write(dir.join("secret_key"), "cwpportwatchtestkey0000000000000").unwrap();
        std::fs::write(
            dir.join("w.toml"),
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n",
        )
        .unwrap();
        let path = dir.join("config.toml");
        std::fs::write(
            &path,
            format!(
                "watchlist = \"w.toml\"\nstate_dir = \"state\"\n[credentials]\nsource = \
                 \"file\"\nsecret_id_file = \"secret_id\"\nsecret_key_file = \"secret_key\"\n\
                 {sinks}"
            ),
        )
        .unwrap();
        path
    }

    fn sink(name: &str, port: u16) -> String {
        format!(
            "[[sink]]\nname = \"{name}\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/\"\n"
        )
    }

    #[test]
    fn probe_failures_decide_the_exit_code_and_only_with_probe() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let up = listener.local_addr().unwrap().port();
        let down = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let both = config(
            dir.path(),
            &format!("{}{}", sink("up", up), sink("down", down)),
        );
        assert_eq!(run(&both, true).unwrap(), ExitCode::FAILURE);
        assert_eq!(run(&both, false).unwrap(), ExitCode::SUCCESS);
        let dir = tempfile::tempdir().unwrap();
        let live = config(dir.path(), &sink("up", up));
        assert_eq!(run(&live, true).unwrap(), ExitCode::SUCCESS);
        // No sink: nothing to probe, nothing failed.
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            run(&config(dir.path(), ""), true).unwrap(),
            ExitCode::SUCCESS
        );
        // A config with problems is not probed: the check's verdict stands.
        let dir = tempfile::tempdir().unwrap();
        let bad = config(dir.path(), "[[sink]]\nname = \"x\"\nkind = \"pager\"\n");
        assert_eq!(run(&bad, true).unwrap(), ExitCode::FAILURE);
    }

    #[test]
    fn the_summary_lists_sinks_without_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = config(
            dir.path(),
            "[[sink]]\nname = \"robot\"\nkind = \"wecom\"\nurl_file = \"%d/wecom_url\"\n\
             [[sink]]\nname = \"am\"\nkind = \"alertmanager\"\nurl = \"https://am.example:9093/prefix\"\n",
        );
        let summary = check(&path, &Environment::from_pairs([("HOME", "/nowhere")])).unwrap();
        assert!(
            summary.contains("sink        robot (wecom): url_file %d/wecom_url, events port_unexpected port_missing, min_severity warning, 20/min"),
            "{summary}"
        );
        assert!(
            summary.contains("sink        am (alertmanager): url https://am.example:9093, "),
            "{summary}"
        );
        assert!(!summary.contains("prefix"), "{summary}");
    }
}
