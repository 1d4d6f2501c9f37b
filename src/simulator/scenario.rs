//! Scenario files: which agents the simulator knows, with which credentials, and what each agent
//! answers over time: the status timeline, the `ports` timeline and `collect_time` of the
//! open-port inventory, and the machine's name and address. Raw serde structs (with spans) are
//! parsed first, then validated into [`Scenario`], so that every error can point at a line and column (placed by
//! [`crate::problems::LineIndex`]) and say what to write. Agent Uuids follow the watchlist's rule
//! ([`crate::agent_uuid::is_valid`]).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::io::Read;
use std::ops::Range;
use std::path::Path;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::error::ScenarioError;
use super::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY};
use crate::problems::{LineIndex, MAX_FILE_BYTES};

/// The error code answered for a known agent before the first entry of its timeline (and for an
/// agent with an empty timeline): no open-port task exists yet, as for a real agent nobody has
/// created a task for.
pub const BEFORE_TIMELINE_ERROR: &str = "FailedOperation.OpenPortTaskNotFound";

static BEFORE_TIMELINE: LazyLock<ScriptedAnswer> =
    LazyLock::new(|| ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.to_owned()));

/// Everything the simulator answers from: credentials and per-agent timelines.
#[derive(Clone)]
pub struct Scenario {
    /// The SecretId the simulator accepts.
    pub secret_id: String,
    /// The SecretKey signatures must be made with.
    pub secret_key: String,
    /// Known agents; any other well-formed Uuid answers `ResourceNotFound`.
    pub agents: Vec<ScenarioAgent>,
    /// Further SecretIds the simulator accepts (`[[credential]]`), each a sub-account with its
    /// own rate windows; every one sees every agent.
    pub extra_credentials: Vec<ScenarioCredential>,
    /// Machines without a CWP agent (`[[machine]]`): `DescribeMachines` lists them with an
    /// empty `Uuid`, as the real API does for agents long offline.
    pub machines: Vec<ScenarioMachine>,
    /// Uuid → index in `agents`, for [`Scenario::answer_at`]; built on its first call.
    index: AgentIndex,
}

impl PartialEq for Scenario {
    fn eq(&self, other: &Self) -> bool {
        // The index is a cache of `agents`.
        self.secret_id == other.secret_id
            && self.secret_key == other.secret_key
            && self.agents == other.agents
            && self.extra_credentials == other.extra_credentials
            && self.machines == other.machines
    }
}

impl Eq for Scenario {}

/// A lazily built uuid → index map over `Scenario::agents`. Built on the first lookup, not by
/// the parser: the server keeps its own index, so a simulator that never calls
/// [`Scenario::answer_at`] pays no memory for this one.
#[derive(Clone, Default)]
struct AgentIndex(OnceLock<HashMap<String, usize>>);

// By hand so that the key never reaches a log, even though the default one is a documented test
// value: a scenario may carry a real-looking key.
impl std::fmt::Debug for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scenario")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .field("agents", &self.agents)
            .field("extra_credentials", &self.extra_credentials)
            .field("machines", &self.machines)
            .finish_non_exhaustive()
    }
}

/// One agent and what it answers over time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioAgent {
    /// The agent Uuid (8-4-4-4-12 hex), matched exactly.
    pub uuid: String,
    /// Entries sorted by `at`; the last one at or before "now" holds.
    pub timeline: Vec<TimelineEntry>,
    /// How long a task created with `CreateOpenPortTask` stays `COLLECTING`
    /// ([`DEFAULT_COLLECT_TIME`] unless the scenario says).
    pub collect_time: Duration,
    /// The agent's open ports over time, sorted by `at`; `DescribeOpenPorts` serves the entry in
    /// force when the agent's latest task completed (see `inventory.rs`).
    pub ports: Vec<PortsEntry>,
    /// `MachineName` in `DescribeOpenPorts` rows; `None`: `sim-` and the Uuid's first 8 digits.
    pub machine_name: Option<String>,
    /// `MachineIp` in `DescribeOpenPorts` rows; `None`: an address in 10.0.0.0/8 made from the
    /// agent's position in the scenario.
    pub machine_ip: Option<String>,
    /// `MachineType` and `MachineRegion` for `DescribeMachines`.
    pub placement: Placement,
    /// `MachineStatus` `ONLINE` (default) or `OFFLINE` in `DescribeMachines`.
    pub online: bool,
    /// `Tag[].Name` in `DescribeMachines` (scenario key `tags`): at most [`MAX_TAGS`], each
    /// a name of at most 64 characters.
    pub tags: Vec<String>,
    /// `MachineWanIp` in `DescribeMachines` (scenario key `machine_wan_ip`); `None`: "".
    pub machine_wan_ip: Option<String>,
}

/// The most `tags` of one scenario agent.
pub const MAX_TAGS: usize = 16;

impl ScenarioAgent {
    /// An agent with this status timeline, the default `collect_time`, no ports and default
    /// machine name and address.
    pub fn new(uuid: impl Into<String>, timeline: Vec<TimelineEntry>) -> ScenarioAgent {
        ScenarioAgent {
            uuid: uuid.into(),
            timeline,
            collect_time: DEFAULT_COLLECT_TIME,
            ports: Vec::new(),
            machine_name: None,
            machine_ip: None,
            placement: Placement::default(),
            online: true,
            tags: Vec::new(),
            machine_wan_ip: None,
        }
    }
}

/// How long a created task collects when the scenario does not say: the spec's default.
pub const DEFAULT_COLLECT_TIME: Duration = Duration::from_secs(5);
/// The longest `collect_time` a scenario may set: longer is surely a typo, and keeps every
/// `created + collect_time` far from overflowing.
pub const MAX_COLLECT_TIME: Duration = Duration::from_secs(24 * 3600);
/// The most entries of one agent's `ports` timeline.
pub const MAX_PORTS_ENTRIES: usize = 10_000;
/// The most open ports in one `ports` entry: far above any real host (the daemon's tests page a
/// 10,000-port inventory), and a bound on what one entry costs.
pub const MAX_OPEN_PORTS: usize = 20_000;
/// The longest process name, in characters (Linux's is 15; a full path may be given).
pub const MAX_PROCESS_CHARS: usize = 256;

/// From `at` on (counted from the simulator's start), the agent has these ports open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsEntry {
    /// When this set starts to be the open one.
    pub at: Duration,
    /// The open ports, in the order `DescribeOpenPorts` pages them. The same (`port`,
    /// `process`) may appear twice (a process listening on IPv4 and IPv6).
    pub open: Vec<OpenPortSpec>,
}

/// One open port as a scenario writes it; a `DescribeOpenPorts` row is made from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OpenPortSpec {
    /// `Port`.
    pub port: u16,
    /// `ProcessName`.
    pub process: String,
    /// `Pid`.
    pub pid: u32,
}

/// From `at` (counted from the simulator's start) on, the agent answers `answer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimelineEntry {
    /// When this entry starts to hold.
    pub at: Duration,
    /// What `DescribeOpenPortTaskStatus` answers.
    pub answer: ScriptedAnswer,
}

/// A scripted answer of `DescribeOpenPortTaskStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptedAnswer {
    /// A success answer with this `Status` string.
    Status(String),
    /// An API error with this code (e.g. `FailedOperation.AgentOffline`).
    Error(String),
}

impl Default for Scenario {
    /// No agents, default credentials.
    fn default() -> Self {
        Scenario {
            secret_id: DEFAULT_SECRET_ID.to_owned(),
            secret_key: DEFAULT_SECRET_KEY.to_owned(),
            agents: Vec::new(),
            extra_credentials: Vec::new(),
            machines: Vec::new(),
            index: AgentIndex::default(),
        }
    }
}

/// A further SecretId/SecretKey pair of a scenario.
#[derive(Clone, PartialEq, Eq)]
pub struct ScenarioCredential {
    /// The SecretId.
    pub secret_id: String,
    /// The SecretKey.
    pub secret_key: String,
}

// By hand: the key never reaches a log.
impl std::fmt::Debug for ScenarioCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScenarioCredential")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

/// Where a machine runs, for `DescribeMachines` (`MachineType`, `MachineRegion`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// `CVM` or `BM`.
    pub machine_type: String,
    /// E.g. `ap-guangzhou`.
    pub region: String,
}

impl Default for Placement {
    /// A CVM in `ap-guangzhou`.
    fn default() -> Self {
        Placement {
            machine_type: "CVM".to_owned(),
            region: DEFAULT_REGION.to_owned(),
        }
    }
}

/// The region of a machine whose scenario entry names none.
pub const DEFAULT_REGION: &str = "ap-guangzhou";
/// The most `[[machine]]` and `[[credential]]` entries each.
pub const MAX_MACHINES: usize = 100_000;

/// A machine without a CWP agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioMachine {
    /// `MachineName`.
    pub machine_name: String,
    /// `MachineIp` (empty when not given).
    pub machine_ip: String,
    /// Type and region.
    pub placement: Placement,
}

impl Scenario {
    /// Parses and validates scenario TOML. Errors carry `scenario:line:column`.
    pub fn from_toml_str(text: &str) -> Result<Scenario, ScenarioError> {
        parse(text, "scenario")
    }

    /// Reads and parses a scenario file. Errors carry `path:line:column`. A file larger than
    /// the config files' limit is refused before it is read whole: a wrong path such as
    /// `/dev/zero` must fail, not fill memory.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let read_error = |source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        };
        let mut text = String::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(MAX_FILE_BYTES + 1).read_to_string(&mut text))
            .map_err(read_error)?;
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(read_error(std::io::Error::other(format!(
                "larger than {} MiB, so not a scenario file",
                MAX_FILE_BYTES >> 20
            ))));
        }
        parse(&text, &path.display().to_string())
    }

    /// What agent `uuid` answers at `since_start`: the last entry at or before it.
    ///
    /// `None` when the Uuid is not in the scenario (the server answers `ResourceNotFound`).
    /// Before the agent's first entry, and for an empty timeline, the answer is the error
    /// [`BEFORE_TIMELINE_ERROR`] (no task yet). Works on unsorted timelines too (the fields are
    /// public, so a hand-built scenario may not be sorted): the greatest `at` not after
    /// `since_start` wins, and among equal ones the later entry.
    ///
    /// O(1): a uuid → index map is built on the first call. It is checked against `agents`
    /// (its length, and the uuid it finds), and scanning takes over if they disagree; after
    /// changing a uuid of `agents` in place, call [`Scenario::reindex`].
    pub fn answer_at(&self, uuid: &str, since_start: Duration) -> Option<&ScriptedAnswer> {
        Some(self.agent(uuid)?.answer_at(since_start))
    }

    /// Drops the uuid index, so that the next [`Scenario::answer_at`] rebuilds it from `agents`.
    pub fn reindex(&mut self) {
        self.index = AgentIndex::default();
    }

    fn agent(&self, uuid: &str) -> Option<&ScenarioAgent> {
        let index = self.index.0.get_or_init(|| {
            let mut index = HashMap::with_capacity(self.agents.len());
            for (i, agent) in self.agents.iter().enumerate() {
                // The first of duplicate uuids wins, as with a scan.
                index.entry(agent.uuid.clone()).or_insert(i);
            }
            index
        });
        if index.len() == self.agents.len() {
            match index.get(uuid).and_then(|&i| self.agents.get(i)) {
                Some(agent) if agent.uuid == uuid => return Some(agent),
                Some(_) => {} // stale: `agents` changed since the index was built
                None => return None,
            }
        }
        // `agents` changed after the index was built, or has duplicate uuids (only possible
        // when built by hand): scan.
        self.agents.iter().find(|a| a.uuid == uuid)
    }
}

impl ScenarioAgent {
    /// See [`Scenario::answer_at`].
    pub fn answer_at(&self, since_start: Duration) -> &ScriptedAnswer {
        let mut best: Option<&TimelineEntry> = None;
        for entry in &self.timeline {
            if entry.at <= since_start && best.is_none_or(|b| entry.at >= b.at) {
                best = Some(entry);
            }
        }
        best.map_or(&*BEFORE_TIMELINE, |e| &e.answer)
    }
}

/// The agent Uuid rule, shared with the watchlist (see [`crate::agent_uuid`]). The scenario
/// keeps each Uuid as written, since the simulator matches request Uuids exactly.
pub use crate::agent_uuid::is_valid as is_agent_uuid;

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

fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
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
                        crate::problems::shown(id.get_ref())
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
            crate::problems::shown(ip.get_ref())
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
                    crate::problems::shown(t.get_ref())
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
                    crate::problems::shown(r.get_ref())
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
            crate::problems::shown(value)
        )
    })
}

fn parse_collect_time(value: &Spanned<String>) -> Result<Duration, String> {
    let d = parse_duration("collect_time", value.get_ref())?;
    if d > MAX_COLLECT_TIME {
        return Err(format!(
            "collect_time = {} is longer than a day: write e.g. collect_time = \"5s\"",
            crate::problems::shown(value.get_ref())
        ));
    }
    Ok(d)
}

/// A free-text value: non-empty, bounded, none of the characters that garble output.
fn check_text(key: &str, value: &Spanned<String>, max_chars: usize) -> Result<(), String> {
    if value.get_ref().trim().is_empty() {
        return Err(format!("{key} must not be empty"));
    }
    match crate::problems::text_problem(key, value.get_ref(), max_chars) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
secret_id = "AKIDtest"
secret_key = "keytest"

[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = [
  { at = "45s", error = "FailedOperation.AgentOffline" },
  { at = "0s",  status = "COLLECTING" },
  { at = "20s", status = "COMPLETE" },
]

[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = [{ at = "5s", status = "FAILED" }]
"#;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn invalid_at(text: &str) -> (usize, usize, String) {
        match Scenario::from_toml_str(text) {
            Err(ScenarioError::Invalid {
                line,
                column,
                message,
                ..
            }) => (line, column, message),
            other => panic!("expected an Invalid error, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_spec_example_and_sorts_entries() {
        let s = Scenario::from_toml_str(GOOD).unwrap();
        assert_eq!(s.secret_id, "AKIDtest");
        assert_eq!(s.secret_key, "keytest");
        assert_eq!(s.agents.len(), 2);
        let ats: Vec<_> = s.agents[0].timeline.iter().map(|e| e.at).collect();
        assert_eq!(ats, vec![secs(0), secs(20), secs(45)]);
        assert_eq!(
            s.agents[0].timeline[2].answer,
            ScriptedAnswer::Error("FailedOperation.AgentOffline".into())
        );
    }

    #[test]
    fn credentials_default_to_the_documented_test_values() {
        let s = Scenario::from_toml_str("").unwrap();
        assert_eq!(s.secret_id, DEFAULT_SECRET_ID);
        assert_eq!(s.secret_key, DEFAULT_SECRET_KEY);
        assert!(s.agents.is_empty());
        assert!(!format!("{s:?}").contains(DEFAULT_SECRET_KEY));
    }

    #[test]
    fn answer_at_takes_the_last_entry_at_or_before_now() {
        let s = Scenario::from_toml_str(GOOD).unwrap();
        let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
        let status = |t| s.answer_at(u, t).cloned();
        assert_eq!(
            status(secs(0)),
            Some(ScriptedAnswer::Status("COLLECTING".into()))
        );
        assert_eq!(
            status(secs(19)),
            Some(ScriptedAnswer::Status("COLLECTING".into()))
        );
        assert_eq!(
            status(secs(20)),
            Some(ScriptedAnswer::Status("COMPLETE".into()))
        );
        assert_eq!(
            status(secs(3600)),
            Some(ScriptedAnswer::Error("FailedOperation.AgentOffline".into()))
        );
        assert_eq!(
            s.answer_at("00000000-0000-4000-8000-000000000009", secs(1)),
            None
        );
        // Before the first entry: no task yet.
        assert_eq!(
            s.answer_at("00000000-0000-4000-8000-000000000002", secs(4)),
            Some(&ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.into()))
        );
    }

    #[test]
    fn answer_at_copes_with_hand_built_unsorted_timelines() {
        let entry = |at, s: &str| TimelineEntry {
            at: secs(at),
            answer: ScriptedAnswer::Status(s.into()),
        };
        let s = Scenario {
            agents: vec![ScenarioAgent::new("u", vec![entry(10, "B"), entry(0, "A")])],
            ..Scenario::default()
        };
        assert_eq!(
            s.answer_at("u", secs(5)),
            Some(&ScriptedAnswer::Status("A".into()))
        );
        assert_eq!(
            s.answer_at("u", secs(10)),
            Some(&ScriptedAnswer::Status("B".into()))
        );
    }

    #[test]
    fn answer_at_index_follows_changes_to_agents() {
        let mut s = Scenario::from_toml_str(GOOD).unwrap();
        let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
        let other = "00000000-0000-4000-8000-000000000002";
        assert!(s.answer_at(u, secs(0)).is_some()); // builds the index
        let added = ScenarioAgent::new(
            "00000000-0000-4000-8000-000000000003",
            vec![TimelineEntry {
                at: secs(0),
                answer: ScriptedAnswer::Status("NEW".into()),
            }],
        );
        s.agents.insert(0, added.clone()); // every index shifts; the length differs
        assert_eq!(
            s.answer_at(&added.uuid, secs(0)),
            Some(&ScriptedAnswer::Status("NEW".into()))
        );
        assert_eq!(
            s.answer_at(other, secs(5)),
            Some(&ScriptedAnswer::Status("FAILED".into()))
        );
        s.reindex();
        s.agents.remove(0);
        s.agents[0].uuid = "00000000-0000-4000-8000-000000000004".into();
        assert_eq!(s.answer_at(u, secs(0)), None);
        assert!(
            s.answer_at("00000000-0000-4000-8000-000000000004", secs(0))
                .is_some()
        );
        // Comparisons ignore the index but not the agents: a scenario whose index is built
        // equals a fresh copy of its agents, and differs once one answer differs.
        let mut fresh = Scenario {
            agents: s.agents.clone(),
            ..Scenario::default()
        };
        fresh.secret_id.clone_from(&s.secret_id);
        fresh.secret_key.clone_from(&s.secret_key);
        assert!(fresh.index.0.get().is_none() && s.index.0.get().is_some());
        assert_eq!(fresh, s);
        fresh.agents[0].timeline[0].answer = ScriptedAnswer::Status("OTHER".into());
        assert_ne!(fresh, s);
        fresh.agents[0].timeline[0].answer = s.agents[0].timeline[0].answer.clone();
        fresh.secret_key.push('x');
        assert_ne!(fresh, s);
        // A clone carries its own index: changing the original does not stale the clone's.
        let copy = s.clone();
        s.agents.clear();
        s.reindex();
        assert_eq!(s.answer_at(u, secs(0)), None);
        assert!(
            copy.answer_at("00000000-0000-4000-8000-000000000004", secs(0))
                .is_some()
        );

        // Hand-built duplicates: the first wins, as with a scan.
        let entry = |s: &str| TimelineEntry {
            at: secs(0),
            answer: ScriptedAnswer::Status(s.into()),
        };
        let s = Scenario {
            agents: vec![
                ScenarioAgent::new("u", vec![entry("first")]),
                ScenarioAgent::new("u", vec![entry("second")]),
            ],
            ..Scenario::default()
        };
        assert_eq!(
            s.answer_at("u", secs(0)),
            Some(&ScriptedAnswer::Status("first".into()))
        );
    }

    #[test]
    fn twenty_thousand_agents_load_and_a_late_duplicate_names_the_first() {
        use std::fmt::Write;
        let count = 20_000;
        let mut text = String::with_capacity(count * 100);
        for i in 0..count {
            let _ = write!(
                text,
                "[[agent]]\nuuid = \"{i:08x}-0000-4000-8000-{i:012x}\"\n\
                 timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n\n"
            );
        }
        let s = Scenario::from_toml_str(&text).unwrap();
        assert_eq!(s.agents.len(), count);
        let last = format!("{:08x}-0000-4000-8000-{:012x}", count - 1, count - 1);
        assert_eq!(
            s.answer_at(&last, secs(1)),
            Some(&ScriptedAnswer::Status("COMPLETE".into()))
        );
        assert_eq!(s.agents[count - 1].uuid, last);
        let _ = write!(
            text,
            "[[agent]]\nuuid = \"{:08x}-0000-4000-8000-{:012x}\"\ntimeline = []\n",
            7, 7
        );
        let (line, _, msg) = invalid_at(&text);
        assert_eq!(line, count * 4 + 2);
        assert!(msg.contains("already used on line 30"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_position() {
        let (line, col, msg) = invalid_at(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [{ at = \"0s\", stauts = \"X\" }]\n",
        );
        assert_eq!(line, 3);
        assert!(col > 1, "{col}");
        assert!(msg.contains("stauts"), "{msg}");
        let (line, _, msg) = invalid_at("secret_id = \"a\"\nsecret_key = \"b\"\nagents = []\n");
        assert_eq!(line, 3);
        assert!(msg.contains("agents"), "{msg}");
    }

    #[test]
    fn bad_durations_say_what_to_write() {
        let (line, col, msg) = invalid_at(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [\n  { at = \"soon\", status = \"X\" },\n]\n",
        );
        assert_eq!((line, col), (4, 10));
        assert!(msg.contains("\"20s\""), "{msg}");
    }

    #[test]
    fn each_entry_has_exactly_one_answer() {
        let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n";
        let (line, _, msg) = invalid_at(&format!(
            "{head}timeline = [{{ at = \"0s\", status = \"A\", error = \"B\" }}]\n"
        ));
        assert_eq!(line, 3);
        assert!(msg.contains("exactly one"), "{msg}");
        let (line, _, msg) = invalid_at(&format!("{head}timeline = [{{ at = \"0s\" }}]\n"));
        assert_eq!(line, 3);
        assert!(msg.contains("status = "), "{msg}");
        let (_, _, msg) = invalid_at(&format!(
            "{head}timeline = [{{ at = \"1s\", status = \"A\" }},\n {{ at = \"1000ms\", status = \"B\" }}]\n"
        ));
        assert!(msg.contains("line 3"), "{msg}");
    }

    #[test]
    fn bad_and_duplicate_uuids_are_rejected() {
        let (line, col, msg) = invalid_at("[[agent]]\nuuid = \"web-01\"\ntimeline = []\n");
        assert_eq!((line, col), (2, 8));
        assert!(msg.contains("8-4-4-4-12"), "{msg}");
        let one = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
        let (line, _, msg) = invalid_at(&format!("{one}{one}"));
        assert_eq!(line, 5);
        assert!(msg.contains("line 2"), "{msg}");
    }

    #[test]
    fn missing_timeline_and_half_credentials_are_rejected() {
        let (line, _, msg) =
            invalid_at("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("timeline"), "{msg}");
        let (line, _, msg) = invalid_at("\nsecret_id = \"AKIDx\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("both"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_a_position() {
        let (line, _, _) = invalid_at("secret_id = \"a\"\nsecret_key = \n");
        assert_eq!(line, 2);
        let err = Scenario::from_toml_str("x = [").unwrap_err();
        assert_eq!(err.code(), "scenario_invalid");
        assert!(err.to_string().starts_with("scenario:1:"), "{err}");
    }

    #[test]
    fn uuid_format() {
        assert!(is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(is_agent_uuid("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"));
        assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd"));
        assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1-"));
        assert!(!is_agent_uuid("6b6cd843x6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(!is_agent_uuid("g b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
        assert!(!is_agent_uuid(""));
    }

    #[test]
    fn an_endless_file_is_refused_not_read_whole() {
        let path = Path::new("/dev/zero");
        if path.exists() {
            let err = Scenario::load(path).unwrap_err();
            assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
        }
    }

    const PORTS: &str = r#"
[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
collect_time = "2s"
machine_name = "db-01"
machine_ip = "192.0.2.7"
timeline = []
ports = [
  { at = "60s", open = [ { port = 22, process = "sshd", pid = 812 }, { port = 3306, process = "mysqld", pid = 1400 } ] },
  { at = "0s",  open = [ { port = 22, process = "sshd", pid = 812 } ] },
]
[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = []
"#;

    #[test]
    fn ports_collect_time_and_machine_parse_and_sort() {
        let s = Scenario::from_toml_str(PORTS).unwrap();
        let a = &s.agents[0];
        assert_eq!(a.collect_time, secs(2));
        assert_eq!(a.machine_name.as_deref(), Some("db-01"));
        assert_eq!(a.machine_ip.as_deref(), Some("192.0.2.7"));
        let ats: Vec<_> = a.ports.iter().map(|e| e.at).collect();
        assert_eq!(ats, vec![secs(0), secs(60)]);
        assert_eq!(
            a.ports[1].open[1],
            OpenPortSpec {
                port: 3306,
                process: "mysqld".into(),
                pid: 1400
            }
        );
        // Defaults.
        let b = &s.agents[1];
        assert_eq!(b.collect_time, DEFAULT_COLLECT_TIME);
        assert_eq!(b.collect_time, secs(5));
        assert!(b.ports.is_empty());
        assert_eq!(
            (b.machine_name.as_ref(), b.machine_ip.as_ref()),
            (None, None)
        );
    }

    #[test]
    fn bad_ports_say_where_and_what_to_write() {
        let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
        let case = |ports: &str| invalid_at(&format!("{head}{ports}\n"));
        let (line, col, msg) =
            case("ports = [{ at = \"0s\", open = [{ port = 65536, process = \"x\", pid = 1 }] }]");
        assert_eq!((line, col), (4, 40));
        assert!(msg.contains("0 to 65535"), "{msg}");
        let (_, _, msg) =
            case("ports = [{ at = \"0s\", open = [{ port = -1, process = \"x\", pid = 1 }] }]");
        assert!(msg.contains("port = -1"), "{msg}");
        let (line, col, msg) =
            case("ports = [{ at = \"0s\", open = [{ port = 1, process = \"x\", pid = -5 }] }]");
        assert_eq!((line, col), (4, 64));
        assert!(msg.contains("pid = -5"), "{msg}");
        let (_, col, msg) = case(
            "ports = [{ at = \"0s\", open = [{ port = 1, process = \"a\\u001b[31mb\", pid = 1 }] }]",
        );
        assert_eq!(col, 53);
        assert!(msg.contains("U+001B"), "{msg}");
        assert!(!msg.contains('\u{1b}'), "{msg}");
        let (_, _, msg) =
            case("ports = [{ at = \"0s\", open = [{ port = 1, process = \" \", pid = 1 }] }]");
        assert!(msg.contains("must not be empty"), "{msg}");
        let long = "p".repeat(MAX_PROCESS_CHARS + 1);
        let (_, _, msg) = case(&format!(
            "ports = [{{ at = \"0s\", open = [{{ port = 1, process = \"{long}\", pid = 1 }}] }}]"
        ));
        assert!(msg.contains("at most 256"), "{msg}");
        let (line, _, msg) =
            case("ports = [{ at = \"0s\", open = [] },\n { at = \"0s\", open = [] }]");
        assert_eq!(line, 5);
        assert!(msg.contains("line 4"), "{msg}");
        let (_, _, msg) = case("ports = [{ at = \"later\", open = [] }]");
        assert!(msg.contains("\"20s\""), "{msg}");
        let (_, _, msg) = case("ports = [{ at = \"0s\", open = [{ port = 1, pid = 1 }] }]");
        assert!(msg.contains("process"), "{msg}");
        let (_, _, msg) = case(
            "ports = [{ at = \"0s\", open = [{ port = 1, process = \"x\", pid = 1, proto = \"tcp\" }] }]",
        );
        assert!(msg.contains("proto"), "{msg}");
        let (line, col, msg) = case("collect_time = \"2d\"");
        assert_eq!((line, col), (4, 16));
        assert!(msg.contains("longer than a day"), "{msg}");
        let (_, _, msg) = case("machine_ip = \"10.0.0.300\"");
        assert!(msg.contains("not an IP address"), "{msg}");
        let (_, _, msg) = case("machine_name = \"a\\u202eb\"");
        assert!(msg.contains("bidirectional"), "{msg}");
    }

    #[test]
    fn port_lists_are_bounded() {
        use std::fmt::Write;
        let mut open = String::new();
        for i in 0..=MAX_OPEN_PORTS {
            let _ = write!(open, "{{port={},process=\"p\",pid=1}},", i % 65_536);
        }
        let text = format!(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\nports = [{{ at = \"0s\", open = [{open}] }}]\n"
        );
        let (line, _, msg) = invalid_at(&text);
        assert_eq!(line, 4);
        assert!(msg.contains(&format!("at most {MAX_OPEN_PORTS}")), "{msg}");
    }

    #[test]
    fn the_shipped_scenarios_parse_with_their_port_timelines() {
        let example =
            Scenario::from_toml_str(include_str!("../../config/scenario-example.toml")).unwrap();
        let inv = example
            .agents
            .iter()
            .find(|a| a.machine_name.as_deref() == Some("inv-01"))
            .unwrap();
        assert_eq!(inv.collect_time, secs(2));
        let sizes: Vec<usize> = inv.ports.iter().map(|e| e.open.len()).collect();
        assert_eq!(sizes, [5, 6]);
        let demo =
            Scenario::from_toml_str(include_str!("../../config/demo-scenario.toml")).unwrap();
        let web02 = &demo.agents[1];
        let has_8080: Vec<bool> = web02
            .ports
            .iter()
            .map(|e| e.open.iter().any(|p| p.port == 8080))
            .collect();
        // The demo's port opens, then closes.
        assert_eq!(has_8080, [false, true, false]);
    }

    #[test]
    fn accounts_and_machines_parse_with_defaults() {
        let s = Scenario::from_toml_str(
            r#"
[[credential]]
secret_id = "AKIDsecond"
secret_key = "second-key"
[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = []
machine_type = "BM"
region = "ap-shanghai"
online = false
[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = []
[[machine]]
machine_name = "legacy-01"
machine_ip = "10.9.9.9"
"#,
        )
        .unwrap();
        assert_eq!(
            s.extra_credentials,
            [ScenarioCredential {
                secret_id: "AKIDsecond".into(),
                secret_key: "second-key".into()
            }]
        );
        assert!(!format!("{s:?}").contains("second-key"));
        let a = &s.agents[0];
        assert_eq!(
            (
                a.placement.machine_type.as_str(),
                a.placement.region.as_str(),
                a.online
            ),
            ("BM", "ap-shanghai", false)
        );
        assert_eq!(s.agents[1].placement, Placement::default());
        assert!(s.agents[1].online);
        assert_eq!(
            s.machines,
            [ScenarioMachine {
                machine_name: "legacy-01".into(),
                machine_ip: "10.9.9.9".into(),
                placement: Placement {
                    machine_type: "CVM".into(),
                    region: DEFAULT_REGION.into()
                },
            }]
        );
    }

    #[test]
    fn tags_and_wan_ip_parse_and_bad_ones_say_where() {
        let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
        let s = Scenario::from_toml_str(&format!(
            "{head}tags = [\"web\", \"prod\"]\nmachine_wan_ip = \"203.0.113.9\"\n"
        ))
        .unwrap();
        assert_eq!(s.agents[0].tags, ["web", "prod"]);
        assert_eq!(s.agents[0].machine_wan_ip.as_deref(), Some("203.0.113.9"));
        let plain = Scenario::from_toml_str(head).unwrap();
        assert!(plain.agents[0].tags.is_empty() && plain.agents[0].machine_wan_ip.is_none());
        let (line, col, msg) = invalid_at(&format!("{head}tags = [\"ok\", \"\"]\n"));
        assert_eq!((line, col), (4, 15));
        assert!(msg.contains("must not be empty"), "{msg}");
        let (line, col, msg) = invalid_at(&format!("{head}tags = [\"a\\u202eb\"]\n"));
        assert_eq!((line, col), (4, 9));
        assert!(msg.contains("U+202E"), "{msg}");
        let (_, _, msg) = invalid_at(&format!("{head}tags = [\"{}\"]\n", "t".repeat(65)));
        assert!(msg.contains("at most 64"), "{msg}");
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
        let (line, col, msg) = invalid_at(&format!("{head}tags = [{}]\n", many.join(",")));
        assert_eq!((line, col), (4, 8));
        assert!(msg.contains("at most 16"), "{msg}");
        let (line, col, msg) = invalid_at(&format!("{head}machine_wan_ip = \"x.y\"\n"));
        assert_eq!((line, col), (4, 18));
        assert!(
            msg.contains("machine_wan_ip = \"x.y\" is not an IP address"),
            "{msg}"
        );
    }

    #[test]
    fn bad_accounts_and_machines_say_where() {
        let (line, col, msg) = invalid_at(
            "[[credential]]\nsecret_id = \"AKIDcwpportwatchSIMULATOR000000000000\"\nsecret_key = \"k\"\n",
        );
        assert_eq!((line, col), (2, 13));
        assert!(msg.contains("already used"), "{msg}");
        let (line, _, msg) =
            invalid_at("[[credential]]\nsecret_id = \"a b\"\nsecret_key = \"k\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("without"), "{msg}");
        let (line, _, msg) =
            invalid_at("[[credential]]\nsecret_id = \"AKIDx\"\nsecret_key = \"\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("must not be empty"), "{msg}");
        let (line, _, msg) = invalid_at("[[credential]]\nsecret_id = \"AKIDx\"\n");
        assert_eq!(line, 1);
        assert!(msg.contains("secret_key"), "{msg}");
        let (line, col, msg) =
            invalid_at("[[machine]]\nmachine_name = \"m\"\nmachine_type = \"VM\"\n");
        assert_eq!((line, col), (3, 16));
        assert!(msg.contains("\"CVM\" or \"BM\""), "{msg}");
        let (line, _, msg) =
            invalid_at("[[machine]]\nmachine_name = \"m\"\nregion = \"Ap Guangzhou\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("ap-shanghai"), "{msg}");
        let (_, _, msg) = invalid_at("[[machine]]\nmachine_name = \"\"\n");
        assert!(msg.contains("must not be empty"), "{msg}");
        let (line, _, msg) = invalid_at("[[machine]]\nmachine_name = \"m\"\nmachine_ip = \"x\"\n");
        assert_eq!(line, 3);
        assert!(msg.contains("not an IP address"), "{msg}");
        let (_, _, msg) = invalid_at(
            "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\nonline = \"yes\"\n",
        );
        assert!(msg.contains("bool"), "{msg}");
    }
}
