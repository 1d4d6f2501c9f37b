//! Reading a scenario file: the raw serde structs (with spans), then the checks that turn them
//! into a [`Scenario`] or a [`ScenarioError`] pointing at `file:line:column` and saying what to
//! write. The model it fills is `scenario.rs`.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
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
    quuid: Option<Spanned<String>>,
    agent_status: Option<Spanned<Vec<Spanned<RawStatusEntry>>>>,
    cwp_faults: Option<Spanned<RawCwpFaults>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatusEntry {
    at: Spanned<String>,
    status: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCwpFaults {
    from: Option<Spanned<String>>,
    port: Option<Spanned<String>>,
    bind_ip: Option<Spanned<String>>,
    missing: Option<Spanned<String>>,
    duplicate_rows: Option<bool>,
    total_offset: Option<i64>,
    ignore_offset: Option<bool>,
    machine_missing_quuid: Option<bool>,
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
    proto: Option<Spanned<String>>,
    bind_ip: Option<Spanned<String>>,
    user: Option<Spanned<String>>,
    process_path: Option<Spanned<String>>,
    first_seen: Option<Spanned<String>>,
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
    // Quuid → byte offset of the `uuid` of its agent.
    let mut seen_quuids: HashMap<String, usize> = HashMap::with_capacity(raw.agent.len());
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
        if let Some(quuid) = raw_agent.quuid {
            check_text("quuid", &quuid, MAX_QUUID_CHARS).map_err(|m| invalid(quuid.span(), m))?;
            agent.quuid = quuid.into_inner();
        }
        if let Some(quuid_span) = quuid_span_of(&agent, &seen_quuids) {
            let (first_line, _) = lines.line_col(quuid_span);
            return Err(invalid(
                uuid_span,
                format!(
                    "the Quuid {} of this agent is already the Quuid of the agent on line \
                     {first_line}: give each agent its own quuid = \"...\"",
                    cwp_text::shown(&agent.quuid)
                ),
            ));
        }
        seen_quuids.insert(agent.quuid.clone(), uuid_span.start);
        if let Some(statuses) = raw_agent.agent_status {
            agent.agent_status = parse_agent_status(statuses, &lines, &invalid)?;
        }
        if let Some(faults) = raw_agent.cwp_faults {
            agent.cwp_faults = Some(parse_cwp_faults(faults.into_inner(), &invalid)?);
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
    #[allow(clippy::type_complexity)]
    let mut entries: Vec<(Range<usize>, PortsEntry, Vec<(CwpPortFacts, Option<i64>)>)> =
        Vec::with_capacity(raw.len());
    for raw_entry in raw {
        let entry_span = raw_entry.span();
        let raw_entry = raw_entry.into_inner();
        let at = parse_duration("at", raw_entry.at.get_ref())
            .map_err(|m| invalid(raw_entry.at.span(), m))?;
        if let Some((first_span, _, _)) = entries.iter().find(|(_, e, _)| e.at == at) {
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
        let mut facts = Vec::with_capacity(raw_open.len());
        // (proto, port, process) already listed in this entry: a repeat binds `::` by default.
        let mut listed: HashSet<(String, u16, String)> = HashSet::new();
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
            let spec = OpenPortSpec {
                port,
                process: raw_port.process.into_inner(),
                pid,
            };
            let text = |key: &str, value: Option<Spanned<String>>, max: usize| match value {
                Some(v) => match check_text(key, &v, max) {
                    Ok(()) => Ok(Some(v.into_inner())),
                    Err(m) => Err(invalid(v.span(), m)),
                },
                None => Ok(None),
            };
            let mut cwp = CwpPortFacts::defaults(&spec, 0);
            if let Some(proto) = text("proto", raw_port.proto, MAX_PROTO_CHARS)? {
                cwp.proto = proto;
            }
            let key = (cwp.proto.clone(), spec.port, spec.process.clone());
            match raw_port.bind_ip {
                Some(ip) => {
                    check_ip(&ip)
                        .map_err(|m| invalid(ip.span(), m.replace("machine_ip", "bind_ip")))?;
                    cwp.bind_ip = ip.into_inner();
                }
                None if listed.contains(&key) => cwp.bind_ip = "::".to_owned(),
                None => {}
            }
            listed.insert(key);
            if let Some(user) = text("user", raw_port.user, MAX_USER_CHARS)? {
                cwp.user = user;
            }
            if let Some(path) = text("process_path", raw_port.process_path, MAX_PATH_CHARS)? {
                cwp.process_path = path;
            }
            let first_seen = match raw_port.first_seen {
                Some(v) => Some(parse_first_seen(&v).map_err(|m| invalid(v.span(), m))?),
                None => None,
            };
            open.push(spec);
            facts.push((cwp, first_seen));
        }
        entries.push((
            entry_span,
            PortsEntry {
                at,
                open,
                cwp: Vec::new(),
            },
            facts,
        ));
    }
    entries.sort_by_key(|(_, e, _)| e.at);
    // `first_seen` by default: since the port (protocol, address, port, process) has been open
    // without a break, i.e. carried over from the entry before, else this entry's `at`.
    let mut before: HashMap<(String, String, u16, String), i64> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for (_, mut entry, facts) in entries {
        let at = i64::try_from(entry.at.as_secs()).unwrap_or(i64::MAX);
        let mut now: HashMap<(String, String, u16, String), i64> =
            HashMap::with_capacity(facts.len());
        for (open, (mut cwp, explicit)) in entry.open.iter().zip(facts) {
            let identity = (
                cwp.proto.clone(),
                cwp.bind_ip.clone(),
                open.port,
                open.process.clone(),
            );
            cwp.first_seen = explicit
                .or_else(|| before.get(&identity).copied())
                .unwrap_or(at);
            now.entry(identity).or_insert(cwp.first_seen);
            entry.cwp.push(cwp);
        }
        before = now;
        out.push(entry);
    }
    Ok(out)
}

/// `first_seen`: a duration from the simulator's start, `-` before it (`"-3d"`, `"90s"`), in
/// whole seconds, at most [`MAX_FIRST_SEEN`] away.
fn parse_first_seen(value: &Spanned<String>) -> Result<i64, String> {
    let text = value.get_ref().trim();
    let (sign, magnitude) = match text.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, text),
    };
    let d = parse_duration("first_seen", magnitude)
        .map_err(|m| format!("{m}; a `-` in front means before the simulator's start"))?;
    if d > MAX_FIRST_SEEN {
        return Err(format!(
            "first_seen = {} is more than 100 years away: write e.g. first_seen = \"-30d\"",
            cwp_text::shown(value.get_ref())
        ));
    }
    // At most 100 years in seconds: fits.
    Ok(sign * i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// An agent's `agent_status` timeline: one entry per `at`, each a non-empty status word;
/// sorted by `at`.
fn parse_agent_status(
    raw: Spanned<Vec<Spanned<RawStatusEntry>>>,
    lines: &LineIndex<'_>,
    invalid: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Vec<AgentStatusEntry>, ScenarioError> {
    let span = raw.span();
    let raw = raw.into_inner();
    if raw.len() > MAX_PORTS_ENTRIES {
        return Err(invalid(
            span,
            format!(
                "agent_status has {} entries; write at most {MAX_PORTS_ENTRIES}",
                raw.len()
            ),
        ));
    }
    let mut entries: Vec<(Range<usize>, AgentStatusEntry)> = Vec::with_capacity(raw.len());
    for raw_entry in raw {
        let entry_span = raw_entry.span();
        let raw_entry = raw_entry.into_inner();
        let at = parse_duration("at", raw_entry.at.get_ref())
            .map_err(|m| invalid(raw_entry.at.span(), m))?;
        let status = raw_entry.status;
        let word = status.get_ref();
        let is_word = !word.is_empty()
            && word.len() <= MAX_STATUS_CHARS
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !is_word {
            return Err(invalid(
                status.span(),
                format!(
                    "status = {} is not a status word: write e.g. status = \"ONLINE\", \
                     \"OFFLINE\" or \"UNINSTALLED\" (letters, digits, `_`, `-`, `.`, at most \
                     {MAX_STATUS_CHARS})",
                    cwp_text::shown(word)
                ),
            ));
        }
        if let Some((first_span, _)) = entries.iter().find(|(_, e)| e.at == at) {
            let (first_line, _) = lines.line_col(first_span.start);
            return Err(invalid(
                entry_span,
                format!(
                    "two agent_status entries at {} (the other on line {first_line}): \
                     give each entry its own `at`",
                    humantime::format_duration(at)
                ),
            ));
        }
        entries.push((
            entry_span,
            AgentStatusEntry {
                at,
                status: status.into_inner(),
            },
        ));
    }
    entries.sort_by_key(|(_, e)| e.at);
    Ok(entries.into_iter().map(|(_, e)| e).collect())
}

/// `cwp_faults = { from, port, bind_ip, missing, duplicate_rows, total_offset, ignore_offset,
/// machine_missing_quuid }`.
fn parse_cwp_faults(
    raw: RawCwpFaults,
    invalid: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<CwpFaults, ScenarioError> {
    let from = match raw.from {
        Some(v) => parse_duration("from", v.get_ref()).map_err(|m| invalid(v.span(), m))?,
        None => Duration::ZERO,
    };
    // The lies are free text by design (`"http"`, `"localhost"`), but bounded and printable.
    let lie = |key: &str, value: Option<Spanned<String>>| match value {
        Some(v) => match cwp_text::text_problem(key, v.get_ref(), 64) {
            Some(problem) => Err(invalid(v.span(), problem)),
            None => Ok(Some(v.into_inner())),
        },
        None => Ok(None),
    };
    let ports = crate::faults::AssetPortFaults {
        quuid: None,
        total_offset: raw.total_offset.unwrap_or(0),
        first_port: lie("port", raw.port)?,
        first_bind_ip: lie("bind_ip", raw.bind_ip)?,
        missing_field: lie("missing", raw.missing)?,
        duplicate_rows: raw.duplicate_rows.unwrap_or(false),
        ignore_offset: raw.ignore_offset.unwrap_or(false),
        empty_answers: 0,
    };
    Ok(CwpFaults {
        from,
        ports,
        machine_missing_quuid: raw.machine_missing_quuid.unwrap_or(false),
    })
}

/// Where the agent whose Quuid `agent` repeats was declared, if it does.
fn quuid_span_of(agent: &ScenarioAgent, seen: &HashMap<String, usize>) -> Option<usize> {
    seen.get(&agent.quuid).copied()
}
