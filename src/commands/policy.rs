//! The expected-ports policy at the commands' edge: where the policy file is (`[policy] file`),
//! loading it for the daemon (at start and on SIGHUP), and `cwp-portwatch policy test`, which
//! evaluates every account's STORED inventory against the file (no API call, no credentials)
//! and prints every finding; exit 0 when none, 1 when any (CI of a policy repository), 2 when
//! the config, the watchlist, the policy or an inventory file cannot be used. `ports
//! --unexpected` filters its listing with the same evaluation ([`unexpected_ports`]).
//!
//! Exit 2 for a bad input (where the other commands say 1): a CI job must tell "the policy
//! finds something" from "the policy could not be evaluated", as `diff` and `grep` do.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use crate::agent_uuid::AgentUuid;
use crate::cli::Format;
use crate::config::{ConfigErrors, Settings};
use crate::discovery::remembered::DiscoveryFile;
use crate::escape::{self, Escaped};
use crate::inventory::store::{InventoryFile, InventoryMap};
use crate::policy::{Finding, Findings, Host, Policy};
use crate::watchlist::{Agent, Facts};

use super::stored::{self, ShownAgent};
use super::{CommandError, output, startup};

/// `policy test`'s exit status when the config, watchlist, policy or inventory cannot be used.
pub const EXIT_BAD_INPUT: u8 = 2;

/// The policy file the config names (`[policy] file`), if any.
pub fn policy_path(settings: &Settings) -> Option<&Path> {
    settings.policy.file.as_deref()
}

/// The policy the config names, read and checked against what every account's backend
/// reports ([`crate::config::Settings::policy_capabilities`]: the table keys `proto`, `bind` and `user` only
/// when every account is a `cwp` one; a refusal then names the yunjing accounts).
/// `None` without `[policy] file`.
pub fn load_policy(settings: &Settings) -> Result<Option<Arc<Policy>>, ConfigErrors> {
    let Some(path) = policy_path(settings) else {
        return Ok(None);
    };
    check_policy(path, settings).map(|p| Some(Arc::new(p)))
}

/// [`Policy::load`] with the capabilities of `settings`' accounts; a key refused because
/// some accounts are yunjing ones names them.
pub fn check_policy(path: &Path, settings: &Settings) -> Result<Policy, ConfigErrors> {
    let caps = settings.policy_capabilities();
    Policy::load(path, caps).map_err(|mut errors| {
        let yunjing: Vec<String> = settings
            .account_plans()
            .into_iter()
            .filter(|plan| plan.settings.api.service == crate::api::ApiService::Yunjing)
            .map(|plan| plan.name)
            .collect();
        let mixed = yunjing.len() < settings.account_plans().len();
        if mixed {
            for problem in &mut errors.problems {
                if problem.message.contains("cannot be checked") {
                    problem.message.push_str(&format!(
                        " (one policy serves every account, and these use yunjing: {})",
                        yunjing.join(", ")
                    ));
                }
            }
        }
        errors
    })
}

/// The host facts of `account`'s agents by Uuid, as the daemon merges them: the watchlist's
/// tags, and with discovery the machines its file remembers (`Tag` names, region, WAN IP;
/// tags joined with the listed ones). An unreadable discovery file adds none.
pub fn known_facts(
    state_dir: &Path,
    account: &str,
    discovering: bool,
    listed: &[Agent],
) -> HashMap<AgentUuid, Arc<Facts>> {
    let discovered: Vec<Agent> = if discovering {
        DiscoveryFile::for_account(state_dir, account)
            .load()
            .map(|m| {
                m.members()
                    .iter()
                    .filter(|(_, member)| member.left_at.is_none())
                    .map(|(uuid, member)| Agent {
                        uuid: *uuid,
                        name: member.name.clone(),
                        facts: member.facts.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    crate::discovery::merge::merge(listed, &discovered)
        .into_iter()
        .filter_map(|a| Some((a.uuid, a.facts?)))
        .collect()
}

/// The findings of one stored agent under `policy`: its Uuid, name (else its snapshot's
/// machine name), account, and `facts` ([`known_facts`]).
pub fn evaluate_stored(
    policy: &Policy,
    account: &str,
    agent: &ShownAgent,
    facts: Option<&Facts>,
    stored: &InventoryMap,
) -> Option<Findings> {
    let uuid = agent.uuid.text();
    let snapshot = stored.get(&*uuid)?.snapshot.as_ref()?;
    let host = Host {
        uuid: &uuid,
        name: if agent.name.is_empty() {
            &snapshot.machine_name
        } else {
            &agent.name
        },
        account,
        tags: facts.map_or(&[], Facts::tags),
        region: facts.and_then(Facts::region).unwrap_or(""),
        wan: facts.is_some_and(Facts::wan),
    };
    Some(crate::engine::evaluate_snapshot(
        Some(policy),
        &host,
        snapshot,
    ))
}

/// Per agent shown, the (port, process) its stored inventory has unexpected under `policy`.
pub fn unexpected_ports(
    policy: &Policy,
    account: &str,
    agents: &[ShownAgent],
    facts: &HashMap<AgentUuid, Arc<Facts>>,
    stored: &InventoryMap,
) -> HashMap<String, BTreeSet<(u16, Box<str>)>> {
    agents
        .iter()
        .filter_map(|agent| {
            let facts = facts.get(&agent.uuid).map(|f| &**f);
            let findings = evaluate_stored(policy, account, agent, facts, stored)?;
            let ports = findings
                .0
                .iter()
                .filter_map(|f| match f {
                    Finding::Unexpected { port, process, .. } => Some((*port, process.clone())),
                    Finding::Missing { .. } => None,
                })
                .collect();
            Some((agent.uuid.to_string(), ports))
        })
        .collect()
}

/// `cwp-portwatch policy test`.
pub fn test(config: &Path, format: Format) -> Result<ExitCode, CommandError> {
    let bad = |message: &dyn std::fmt::Display| {
        output::stderr_line(message);
        Ok(ExitCode::from(EXIT_BAD_INPUT))
    };
    let (settings, plans) = match startup::load_accounts(config) {
        Ok(loaded) => loaded,
        Err(problems) => return bad(&problems),
    };
    let policy = match load_policy(&settings) {
        Ok(Some(policy)) => policy,
        Ok(None) => {
            return bad(&format_args!(
                "{} names no policy: add `[policy] file = \"policy.toml\"` (see \
                 config/policy.example.toml)",
                Escaped(config.display())
            ));
        }
        Err(problems) => return bad(&problems),
    };
    let mut found = 0usize;
    let mut agents_with = 0usize;
    for (plan, watchlist) in &plans {
        let file = InventoryFile::for_account(&settings.state_dir, &plan.name);
        let stored = match file.load() {
            Ok(stored) => stored,
            Err(e) => return bad(&e),
        };
        if !file.path().exists() {
            output::stderr_line(format_args!(
                "no inventory at {} yet (the daemon writes it when [inventory] enabled = true)",
                Escaped(file.path().display())
            ));
        }
        let left = stored::left_discovery(&settings.state_dir, &plan.name);
        let agents = stored::agents(
            &watchlist.agents,
            plan.settings.discovery.enabled,
            stored::inventory_uuids(&stored).filter(|u| !left.contains(u)),
            &stored,
        );
        let facts = known_facts(
            &settings.state_dir,
            &plan.name,
            plan.settings.discovery.enabled,
            &watchlist.agents,
        );
        for agent in &agents {
            let facts = facts.get(&agent.uuid).map(|f| &**f);
            let Some(findings) = evaluate_stored(&policy, &plan.name, agent, facts, &stored) else {
                continue;
            };
            if findings.0.is_empty() {
                continue;
            }
            found += findings.0.len();
            agents_with += 1;
            let pids = pids_of(&stored, agent);
            output::stdout(|out| print_findings(out, &plan.name, agent, &findings, &pids, format))
                .map_err(CommandError::Output)?;
        }
    }
    output::stderr_line(format_args!(
        "{found} findings on {agents_with} agents (policy {})",
        Escaped(policy_path(&settings).unwrap_or(Path::new("")).display())
    ));
    Ok(if found == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// (port, process) → pid of an agent's stored snapshot.
fn pids_of(stored: &InventoryMap, agent: &ShownAgent) -> HashMap<(u16, Box<str>), u32> {
    stored
        .get(&*agent.uuid.text())
        .and_then(|e| e.snapshot.as_ref())
        .map(|s| {
            s.ports
                .iter()
                .map(|p| ((p.port, p.process.clone()), p.pid))
                .collect()
        })
        .unwrap_or_default()
}

/// One line per finding: text for people (every value escaped), or JSON lines.
pub fn print_findings(
    out: &mut dyn Write,
    account: &str,
    agent: &ShownAgent,
    findings: &Findings,
    pids: &HashMap<(u16, Box<str>), u32>,
    format: Format,
) -> io::Result<()> {
    for f in &findings.0 {
        let (kind, port, process, rule, severity, spec) = match f {
            Finding::Unexpected {
                port,
                process,
                rule,
                severity,
            } => ("unexpected", *port, process, rule, severity, None),
            Finding::Missing {
                rule,
                spec,
                port,
                process,
                severity,
            } => ("missing", *port, process, rule, severity, Some(spec)),
        };
        let pid = pids
            .get(&(port, process.clone()))
            .filter(|_| spec.is_none());
        match format {
            Format::Json => writeln!(
                out,
                "{}",
                escape::json_line(&serde_json::json!({
                    "account": account, "uuid": agent.uuid, "agent_name": agent.name,
                    "finding": kind, "port": port, "process_name": &**process, "pid": pid,
                    "spec": spec.map(|s| &**s), "rule": &**rule, "severity": severity.as_str(),
                }))
            )?,
            Format::Text => writeln!(
                out,
                "{:<12}  {:<36}  {:<16}  {:<10}  {:>5}  {:<16}  {:<20}  {}",
                Escaped(account),
                Escaped(&agent.uuid),
                Escaped(&agent.name),
                kind,
                port,
                Escaped(spec.map_or(&**process, |s| &**s)),
                Escaped(&**rule),
                severity.as_str()
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_uuid::AgentUuid;
    use crate::policy::Severity;

    fn findings() -> Findings {
        Findings(
            [
                Finding::Unexpected {
                    port: 6379,
                    process: "redis\u{1b}[31m".into(),
                    rule: "web tier".into(),
                    severity: Severity::Critical,
                },
                Finding::Missing {
                    rule: "web tier".into(),
                    spec: "443/nginx".into(),
                    port: 443,
                    process: "nginx".into(),
                    severity: Severity::Warning,
                },
            ]
            .into_iter()
            .collect(),
        )
    }

    #[test]
    fn findings_print_escaped_for_people_and_as_json_lines() {
        let agent = ShownAgent {
            uuid: AgentUuid::from_value(7),
            name: "web\u{7}01".into(),
        };
        let pids: HashMap<(u16, Box<str>), u32> = [((6379, "redis\u{1b}[31m".into()), 4242)]
            .into_iter()
            .collect();
        let mut text = Vec::new();
        print_findings(&mut text, "prod", &agent, &findings(), &pids, Format::Text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("redis\\u{1b}[31m"), "{text}");
        assert!(text.lines().next().unwrap().contains("unexpected"));
        assert!(
            text.contains("443/nginx") && text.contains("critical"),
            "{text}"
        );
        let mut json = Vec::new();
        print_findings(&mut json, "prod", &agent, &findings(), &pids, Format::Json).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(json)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["finding"], "unexpected");
        assert_eq!(lines[0]["pid"], 4242);
        assert_eq!(lines[0]["process_name"], "redis\u{1b}[31m");
        assert_eq!(lines[0]["account"], "prod");
        assert_eq!(lines[1]["finding"], "missing");
        assert_eq!(lines[1]["spec"], "443/nginx");
        assert!(lines[1]["pid"].is_null());
    }
}
