//! Reading a scenario file: the raw serde structs (with spans), then the checks that turn them
//! into a [`Scenario`] or a [`ScenarioError`] pointing at `file:line:column` and saying what to
//! write. The model it fills is `scenario.rs`.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ops::Range;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::*;
use crate::error::ScenarioError;
use cwp_text::LineIndex;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    secret_id: Option<Spanned<String>>,
    secret_key: Option<Spanned<String>>,
    #[serde(default)]
    agent: Vec<Spanned<RawAgent>>,
    #[serde(default)]
    credential: Vec<Spanned<RawCredential>>,
    #[serde(default)]
    machine: Vec<Spanned<RawMachine>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    secret_id: Spanned<String>,
    secret_key: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMachine {
    machine_name: Spanned<String>,
    machine_ip: Option<Spanned<String>>,
    machine_type: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    uuid: Spanned<String>,
    timeline: Spanned<Vec<Spanned<RawEntry>>>,
    collect_time: Option<Spanned<String>>,
    ports: Option<Spanned<Vec<Spanned<RawPortsEntry>>>>,
    machine_name: Option<Spanned<String>>,
    machine_ip: Option<Spanned<String>>,
    machine_type: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    online: Option<bool>,
    tags: Option<Spanned<Vec<Spanned<String>>>>,
    machine_wan_ip: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPortsEntry {
    at: Spanned<String>,
    open: Spanned<Vec<Spanned<RawOpenPort>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenPort {
    port: Spanned<i64>,
    process: Spanned<String>,
    pid: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    at: Spanned<String>,
    status: Option<Spanned<String>>,
    error: Option<Spanned<String>>,
}

pub(super) fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
    let lines = LineIndex::new(text);
    let invalid = |span: Range<usize>, message: String| {
        let (line, column) = lines.line_col(span.start);
        ScenarioError::Invalid {
            origin: origin.to_owned(),
            line,
            column,
            message,
        }
    };
    let raw: RawScenario = toml::from_str(text)
        .map_err(|e| invalid(e.span().unwrap_or(0..0), e.message().trim_end().to_owned()))?;

    let (secret_id, secret_key) = match (raw.secret_id, raw.secret_key) {
        (None, None) => (DEFAULT_SECRET_ID.to_owned(), DEFAULT_SECRET_KEY.to_owned()),
        (Some(id), Some(key)) => {
            check_secret_id(&id).map_err(|m| invalid(id.span(), m))?;
            if key.get_ref().is_empty() {
                return Err(invalid(
                    key.span(),
                    "secret_key must not be empty: write secret_key = \"...\" or remove both \
                     secret_id and secret_key to use the default test credentials"
                        .to_owned(),
                ));
            }
            (id.into_inner(), key.into_inner())
        }
        (Some(one), None) | (None, Some(one)) => {
            return Err(invalid(
                one.span(),
                "set both secret_id and secret_key, or neither (then the documented test \
                 credentials are used)"
                    .to_owned(),
            ));
        }
    };

    let mut agents: Vec<ScenarioAgent> = Vec::with_capacity(raw.agent.len());
    // Uuid → byte offset of its first `uuid` value, to report duplicates in O(1) each.
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(raw.agent.len());
    for raw_agent in raw.agent {
        let raw_agent = raw_agent.into_inner();
        let uuid_span = raw_agent.uuid.span();
        let uuid = raw_agent.uuid.into_inner();
        if !is_agent_uuid(&uuid) {
            return Err(invalid(
                uuid_span,
                format!(
                    "uuid {uuid:?} is not an agent Uuid: write 8-4-4-4-12 hex digits, \
                     e.g. uuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\""
                ),
            ));
        }
        match seen.entry(uuid.clone()) {
            Entry::Occupied(first) => {
                let (first_line, _) = lines.line_col(*first.get());
                return Err(invalid(
                    uuid_span,
                    format!(
                        "uuid {uuid:?} is already used on line {first_line}: \
                         give each agent one [[agent]] table"
                    ),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert(uuid_span.start);
            }
        }

        let mut timeline: Vec<(Range<usize>, TimelineEntry)> = Vec::new();
        for raw_entry in raw_agent.timeline.into_inner() {
            let entry_span = raw_entry.span();
            let raw_entry = raw_entry.into_inner();
            let at = humantime::parse_duration(raw_entry.at.get_ref().trim()).map_err(|e| {
                invalid(
                    raw_entry.at.span(),
                    format!(
                        "at = {:?} is not a duration ({e}): write e.g. \"0s\", \"20s\", \"1m30s\"",
                        raw_entry.at.get_ref()
                    ),
                )
            })?;
            let answer = match (raw_entry.status, raw_entry.error) {
                (Some(status), None) => {
                    if status.get_ref().trim().is_empty() {
                        return Err(invalid(
                            status.span(),
                            "status must not be empty: write e.g. status = \"COMPLETE\"".to_owned(),
                        ));
                    }
                    ScriptedAnswer::Status(status.into_inner())
                }
                (None, Some(error)) => {
                    if error.get_ref().trim().is_empty() || error.get_ref().contains(' ') {
                        return Err(invalid(
                            error.span(),
                            "error must be an API error code: write e.g. \
                             error = \"FailedOperation.AgentOffline\""
                                .to_owned(),
                        ));
                    }
                    ScriptedAnswer::Error(error.into_inner())
                }
                (Some(_), Some(error)) => {
                    return Err(invalid(
                        error.span(),
                        "an entry has both status and error: keep exactly one of them".to_owned(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        entry_span,
                        "an entry needs status = \"COMPLETE\" (or another status) or \
                         error = \"FailedOperation.AgentOffline\" (or another error code)"
                            .to_owned(),
                    ));
                }
            };
            if let Some((first_span, _)) = timeline.iter().find(|(_, e)| e.at == at) {
                let (first_line, _) = lines.line_col(first_span.start);
                return Err(invalid(
                    entry_span,
                    format!(
                        "two entries at {} (the other on line {first_line}): \
                         give each entry of a timeline its own `at`",
                        humantime::format_duration(at)
                    ),
                ));
            }
            timeline.push((entry_span, TimelineEntry { at, answer }));
        }
        timeline.sort_by_key(|(_, e)| e.at);
        let mut agent = ScenarioAgent::new(uuid, timeline.into_iter().map(|(_, e)| e).collect());
        if let Some(collect_time) = raw_agent.collect_time {
            agent.collect_time =
                parse_collect_time(&collect_time).map_err(|m| invalid(collect_time.span(), m))?;
        }
        if let Some(ports) = raw_agent.ports {
            agent.ports = parse_ports(ports, &lines, &invalid)?;
        }
        if let Some(name) = raw_agent.machine_name {
            check_text("machine_name", &name, 128).map_err(|m| invalid(name.span(), m))?;
            agent.machine_name = Some(name.into_inner());
        }
        if let Some(ip) = raw_agent.machine_ip {
            check_ip(&ip).map_err(|m| invalid(ip.span(), m))?;
            agent.machine_ip = Some(ip.into_inner());
        }
        agent.placement = parse_placement(raw_agent.machine_type, raw_agent.region, &invalid)?;
        agent.online = raw_agent.online.unwrap_or(true);
        if let Some(tags) = raw_agent.tags {
            if tags.get_ref().len() > MAX_TAGS {
                return Err(invalid(
                    tags.span(),
                    format!(
                        "tags has {} entries: write at most {MAX_TAGS}",
                        tags.get_ref().len()
                    ),
                ));
            }
            for tag in tags.into_inner() {
                check_text("tags", &tag, 64).map_err(|m| invalid(tag.span(), m))?;
                agent.tags.push(tag.into_inner());
            }
        }
        if let Some(ip) = raw_agent.machine_wan_ip {
            check_ip(&ip)
                .map_err(|m| invalid(ip.span(), m.replace("machine_ip", "machine_wan_ip")))?;
            agent.machine_wan_ip = Some(ip.into_inner());
        }
        agents.push(agent);
    }

    let raw_credentials = raw.credential;
    let raw_machines = raw.machine;
    for (what, len, beyond) in [
        (
            "credential",
            raw_credentials.len(),
            raw_credentials.get(MAX_MACHINES).map(Spanned::span),
        ),
        (
            "machine",
            raw_machines.len(),
            raw_machines.get(MAX_MACHINES).map(Spanned::span),
        ),
    ] {
        if let Some(span) = beyond {
            return Err(invalid(
                span,
                format!("{len} [[{what}]] tables; write at most {MAX_MACHINES}"),
            ));
        }
    }
    let mut extra_credentials: Vec<ScenarioCredential> = Vec::with_capacity(raw_credentials.len());
    let mut ids: HashMap<String, usize> = HashMap::from([(secret_id.clone(), 0)]);
    for raw_credential in raw_credentials {
        let raw_credential = raw_credential.into_inner();
        let (id, key) = (raw_credential.secret_id, raw_credential.secret_key);
        check_secret_id(&id).map_err(|m| invalid(id.span(), m))?;
        if key.get_ref().is_empty() {
            return Err(invalid(
                key.span(),
                "secret_key must not be empty".to_owned(),
            ));
        }
        match ids.entry(id.get_ref().clone()) {
            Entry::Occupied(_) => {
                return Err(invalid(
                    id.span(),
                    format!(
                        "secret_id {} is already used: give each SecretId one key",
                        cwp_text::shown(id.get_ref())
                    ),
                ));
            }
            Entry::Vacant(slot) => {
                slot.insert(id.span().start);
            }
        }
        extra_credentials.push(ScenarioCredential {
            secret_id: id.into_inner(),
            secret_key: key.into_inner(),
        });
    }
    let mut machines = Vec::with_capacity(raw_machines.len());
    for raw_machine in raw_machines {
        let raw_machine = raw_machine.into_inner();
        let name = raw_machine.machine_name;
        check_text("machine_name", &name, 128).map_err(|m| invalid(name.span(), m))?;
        let machine_ip = match raw_machine.machine_ip {
            Some(ip) => {
                check_ip(&ip).map_err(|m| invalid(ip.span(), m))?;
                ip.into_inner()
            }
            None => String::new(),
        };
        machines.push(ScenarioMachine {
            machine_name: name.into_inner(),
            machine_ip,
            placement: parse_placement(raw_machine.machine_type, raw_machine.region, &invalid)?,
        });
    }

    Ok(Scenario {
        secret_id,
        secret_key,
        agents,
        extra_credentials,
        machines,
        index: AgentIndex::default(),
    })
}

/// A SecretId as the `Authorization` header can carry it.
fn check_secret_id(id: &Spanned<String>) -> Result<(), String> {
    if id.get_ref().trim().is_empty() || id.get_ref().contains(['/', ',', ' ']) {
        return Err(
            "secret_id must be a non-empty SecretId without `/`, `,` or spaces, \
                    e.g. secret_id = \"AKIDexample\""
                .to_owned(),
        );
    }
    Ok(())
}

fn check_ip(ip: &Spanned<String>) -> Result<(), String> {
    match ip.get_ref().parse::<std::net::IpAddr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "machine_ip = {} is not an IP address: write e.g. machine_ip = \"10.0.0.12\"",
            cwp_text::shown(ip.get_ref())
        )),
    }
}

/// `machine_type` (`CVM` or `BM`, default `CVM`) and `region` (lower-case letters, digits and
/// `-`, default `ap-guangzhou`).
fn parse_placement(
    machine_type: Option<Spanned<String>>,
    region: Option<Spanned<String>>,
    invalid: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Placement, ScenarioError> {
    let mut placement = Placement::default();
    if let Some(t) = machine_type {
        if !matches!(t.get_ref().as_str(), "CVM" | "BM") {
            return Err(invalid(
                t.span(),
                format!(
                    "machine_type = {} is not a machine type: write \"CVM\" or \"BM\"",
                    cwp_text::shown(t.get_ref())
                ),
            ));
        }
        placement.machine_type = t.into_inner();
    }
    if let Some(r) = region {
        let ok = !r.get_ref().is_empty()
            && r.get_ref().len() <= 64
            && r.get_ref()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !ok {
            return Err(invalid(
                r.span(),
                format!(
                    "region = {} is not a region: write e.g. region = \"ap-shanghai\"",
                    cwp_text::shown(r.get_ref())
                ),
            ));
        }
        placement.region = r.into_inner();
    }
    Ok(placement)
}

/// A duration value of the scenario: `humantime`, with a message saying what to write.
fn parse_duration(key: &str, value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        format!(
            "{key} = {} is not a duration ({e}): write e.g. \"0s\", \"20s\", \"1m30s\"",
            cwp_text::shown(value)
        )
    })
}

fn parse_collect_time(value: &Spanned<String>) -> Result<Duration, String> {
    let d = parse_duration("collect_time", value.get_ref())?;
    if d > MAX_COLLECT_TIME {
        return Err(format!(
            "collect_time = {} is longer than a day: write e.g. collect_time = \"5s\"",
            cwp_text::shown(value.get_ref())
        ));
    }
    Ok(d)
}

/// A free-text value: non-empty, bounded, none of the characters that garble output.
fn check_text(key: &str, value: &Spanned<String>, max_chars: usize) -> Result<(), String> {
    if value.get_ref().trim().is_empty() {
        return Err(format!("{key} must not be empty"));
    }
    match cwp_text::text_problem(key, value.get_ref(), max_chars) {
        Some(problem) => Err(problem),
        None => Ok(()),
    }
}

/// An agent's `ports` timeline: bounded, ports in 0..=65535, process names checked like every
/// free text, `pid` a `u32`, one entry per `at`; sorted by `at`.
fn parse_ports(
    raw: Spanned<Vec<Spanned<RawPortsEntry>>>,
    lines: &LineIndex<'_>,
    invalid: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Vec<PortsEntry>, ScenarioError> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.len() > MAX_PORTS_ENTRIES {
        return Err(invalid(
            span,
            format!(
                "ports has {} entries; write at most {MAX_PORTS_ENTRIES}",
                raw.len()
            ),
        ));
    }
    let mut entries: Vec<(Range<usize>, PortsEntry)> = Vec::with_capacity(raw.len());
    for raw_entry in raw {
        let entry_span = raw_entry.span();
        let raw_entry = raw_entry.into_inner();
        let at = parse_duration("at", raw_entry.at.get_ref())
            .map_err(|m| invalid(raw_entry.at.span(), m))?;
        if let Some((first_span, _)) = entries.iter().find(|(_, e)| e.at == at) {
            let (first_line, _) = lines.line_col(first_span.start);
            return Err(invalid(
                entry_span,
                format!(
                    "two ports entries at {} (the other on line {first_line}): \
                     give each entry of a ports timeline its own `at`",
                    humantime::format_duration(at)
                ),
            ));
        }
        let open_span = raw_entry.open.span();
        let raw_open = raw_entry.open.into_inner();
        if raw_open.len() > MAX_OPEN_PORTS {
            return Err(invalid(
                open_span,
                format!(
                    "open lists {} ports; write at most {MAX_OPEN_PORTS}",
                    raw_open.len()
                ),
            ));
        }
        let mut open = Vec::with_capacity(raw_open.len());
        for raw_port in raw_open {
            let raw_port = raw_port.into_inner();
            let port = u16::try_from(*raw_port.port.get_ref()).map_err(|_| {
                invalid(
                    raw_port.port.span(),
                    format!(
                        "port = {} is not a TCP/UDP port: write a number from 0 to 65535",
                        raw_port.port.get_ref()
                    ),
                )
            })?;
            let pid = u32::try_from(*raw_port.pid.get_ref()).map_err(|_| {
                invalid(
                    raw_port.pid.span(),
                    format!(
                        "pid = {} is not a process id: write a number from 0 to {}",
                        raw_port.pid.get_ref(),
                        u32::MAX
                    ),
                )
            })?;
            check_text("process", &raw_port.process, MAX_PROCESS_CHARS)
                .map_err(|m| invalid(raw_port.process.span(), m))?;
            open.push(OpenPortSpec {
                port,
                process: raw_port.process.into_inner(),
                pid,
            });
        }
        entries.push((entry_span, PortsEntry { at, open }));
    }
    entries.sort_by_key(|(_, e)| e.at);
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}
