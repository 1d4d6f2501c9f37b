//! Scenario files: which agents the simulator knows, with which credentials, and what each agent
//! answers over time: the status timeline, the `ports` timeline and `collect_time` of the
//! open-port inventory, and the machine's name and address. Raw serde structs (with spans) are
//! parsed first, then validated into [`Scenario`], so that every error can point at a line and column (placed by
//! [`cwp_text::LineIndex`]) and say what to write. Agent Uuids follow the watchlist's rule
//! ([`is_agent_uuid`], the daemon's `agent_uuid::is_valid`: a test there holds the two
//! together).
//!
//! This file is the model and its lookups; reading a file into it is `scenario/parse.rs`, the
//! unit tests are `scenario/tests.rs`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use super::error::ScenarioError;
use cwp_text::MAX_FILE_BYTES;

mod parse;
#[cfg(test)]
mod tests;

use parse::parse;

/// The simulator's default SecretId: a documented test value, not a secret.
pub const DEFAULT_SECRET_ID: &str = "AKIDcwpportwatchSIMULATOR000000000000";
/// The simulator's default SecretKey: a documented test value, not a secret.
pub const DEFAULT_SECRET_KEY: &str = "cwpportwatchSimulatorSecretKey00";

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
    /// `Tag[].Name` in `DescribeMachines` (scenario key `tags`): at most `MAX_TAGS` (16), each
    /// a name of at most 64 characters.
    pub tags: Vec<String>,
    /// `MachineWanIp` in `DescribeMachines` (scenario key `machine_wan_ip`); `None`: "".
    pub machine_wan_ip: Option<String>,
    /// `Quuid`, the machine's own id, in the `cwp` API's answers (scenario key `quuid`);
    /// default [`default_quuid`] of the Uuid.
    pub quuid: String,
    /// The `cwp` API's `AgentStatus` over time (scenario key `agent_status`), sorted by `at`;
    /// before the first entry, and without entries: `ONLINE` (`OFFLINE` with `online = false`).
    pub agent_status: Vec<AgentStatusEntry>,
    /// Hostile `cwp` answers about this agent (scenario key `cwp_faults`), from a time on.
    pub cwp_faults: Option<CwpFaults>,
}

/// From `at` (counted from the simulator's start) on, the `cwp` API reports the agent with
/// this `AgentStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentStatusEntry {
    /// When this entry starts to hold.
    pub at: Duration,
    /// `ONLINE`, `OFFLINE`, `UNINSTALLED` or any other string (passed through).
    pub status: String,
}

/// The facts of one open port that only the `cwp` API's `DescribeAssetPortInfoList` answers.
/// A scenario's `ports` entries carry one per open port (same position as in `open`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CwpPortFacts {
    /// `Proto`: `tcp` (default), `udp`, or any string.
    pub proto: String,
    /// `BindIp`: default `0.0.0.0` (`::` for a port listed a second time with the same process
    /// and protocol in one entry: IPv4 and IPv6).
    pub bind_ip: String,
    /// `User` (and `GroupName`): default `root`.
    pub user: String,
    /// `ProcessPath`: default `/usr/bin/` and the process name (the name itself when it is a
    /// path).
    pub process_path: String,
    /// `FirstTime` (and `StartTime`), in seconds from the simulator's start, negative before
    /// it: the scenario's `first_seen`, else the `at` of the entry since which the port (same
    /// protocol, address, port and process) has been open without a break.
    pub first_seen: i64,
}

impl CwpPortFacts {
    /// The defaults for `open` (see the fields), first seen at `first_seen`.
    pub fn defaults(open: &OpenPortSpec, first_seen: i64) -> CwpPortFacts {
        CwpPortFacts {
            proto: "tcp".to_owned(),
            bind_ip: "0.0.0.0".to_owned(),
            user: "root".to_owned(),
            process_path: default_process_path(&open.process),
            first_seen,
        }
    }
}

/// `/usr/bin/NAME`, or the name when it is a path already.
pub(crate) fn default_process_path(process: &str) -> String {
    if process.starts_with('/') {
        process.to_owned()
    } else {
        format!("/usr/bin/{process}")
    }
}

/// Hostile `cwp` answers about one agent, from `from` on: the scenario's switch
/// (`cwp_faults = { ... }`) for tests of a client's checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwpFaults {
    /// From when (since the simulator's start) the answers lie.
    pub from: Duration,
    /// The lies of its `DescribeAssetPortInfoList` answers.
    pub ports: crate::faults::AssetPortFaults,
    /// Its `DescribeMachines` row has no `Quuid`.
    pub machine_missing_quuid: bool,
}

/// The default `Quuid` of an agent: its Uuid in lower case with every hex digit `d` replaced
/// by `f - d`, so it is stable, unique per Uuid and visibly not the Uuid.
pub fn default_quuid(uuid: &str) -> String {
    uuid.chars()
        .map(|c| match c.to_digit(16) {
            Some(d) => char::from_digit(15 - d, 16).unwrap_or(c),
            None => c,
        })
        .collect()
}

/// The most `tags` of one scenario agent.
pub const MAX_TAGS: usize = 16;

impl ScenarioAgent {
    /// An agent with this status timeline, the default `collect_time`, no ports and default
    /// machine name and address.
    pub fn new(uuid: impl Into<String>, timeline: Vec<TimelineEntry>) -> ScenarioAgent {
        let uuid = uuid.into();
        ScenarioAgent {
            uuid: uuid.clone(),
            timeline,
            collect_time: DEFAULT_COLLECT_TIME,
            ports: Vec::new(),
            machine_name: None,
            machine_ip: None,
            placement: Placement::default(),
            online: true,
            tags: Vec::new(),
            machine_wan_ip: None,
            quuid: default_quuid(&uuid),
            agent_status: Vec::new(),
            cwp_faults: None,
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

/// The longest `quuid`, `proto`, `user`, `process_path` and `agent_status` value of a scenario.
pub const MAX_QUUID_CHARS: usize = 64;
/// See [`MAX_QUUID_CHARS`].
pub const MAX_PROTO_CHARS: usize = 16;
/// See [`MAX_QUUID_CHARS`].
pub const MAX_USER_CHARS: usize = 64;
/// See [`MAX_QUUID_CHARS`].
pub const MAX_PATH_CHARS: usize = 1024;
/// See [`MAX_QUUID_CHARS`].
pub const MAX_STATUS_CHARS: usize = 32;
/// The farthest `first_seen` from the simulator's start: 100 years.
pub const MAX_FIRST_SEEN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// From `at` on (counted from the simulator's start), the agent has these ports open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsEntry {
    /// When this set starts to be the open one.
    pub at: Duration,
    /// The open ports, in the order `DescribeOpenPorts` pages them. The same (`port`,
    /// `process`) may appear twice (a process listening on IPv4 and IPv6).
    pub open: Vec<OpenPortSpec>,
    /// The `cwp` facts of `open[i]` at `cwp[i]` (the parser fills one per port; a missing one
    /// is served with [`CwpPortFacts::defaults`], first seen at `at`).
    pub cwp: Vec<CwpPortFacts>,
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
    /// The `cwp` `AgentStatus` at `since_start` (see [`ScenarioAgent::agent_status`]).
    pub fn agent_status_at(&self, since_start: Duration) -> &str {
        let mut best: Option<&AgentStatusEntry> = None;
        for entry in &self.agent_status {
            if entry.at <= since_start && best.is_none_or(|b| entry.at >= b.at) {
                best = Some(entry);
            }
        }
        match best {
            Some(e) => &e.status,
            None if self.online => "ONLINE",
            None => "OFFLINE",
        }
    }

    /// The agent's `cwp` lies in force at `since_start`.
    pub fn cwp_faults_at(&self, since_start: Duration) -> Option<&CwpFaults> {
        self.cwp_faults.as_ref().filter(|f| f.from <= since_start)
    }

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

/// The agent Uuid rule of the daemon's watchlist (its `agent_uuid::is_valid`): 8-4-4-4-12 hex
/// digits with dashes, in any case. Written out here rather than shared through a crate of
/// its own because it is eight lines; the daemon's unit test
/// `agent_uuid::tests::the_simulator_accepts_exactly_the_watchlists_uuids` fails if the two
/// ever differ. The scenario keeps each Uuid as written, since the simulator matches request
/// Uuids exactly.
pub fn is_agent_uuid(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
