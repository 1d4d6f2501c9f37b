//! The handlers of the actions the simulator implements, each after the request passed every
//! check of `routes.rs`: parameters first (with the API's error codes), then the answer from
//! the scenario and the agents' created tasks (rules in `inventory.rs`).
//!
//! - `DescribeOpenPortTaskStatus {Uuid}` → `Status`.
//! - `CreateOpenPortTask {Uuid}` → nothing but `RequestId`; refused with
//!   `FailedOperation.CreateOpenPortTask` while a task runs or the agent is offline.
//! - `DescribeOpenPorts {Uuid | Port, Limit, Offset, Filters}` → `TotalCount`, `OpenPorts[]`.
//!   `Limit` defaults to 10 and may be 0..=100 (0: no rows, only `TotalCount`); more, or a
//!   negative `Offset`, is `InvalidParameter.InvalidFormat`; neither `Uuid` nor `Port` is
//!   `MissingParameter`. `Filters`: at most 5 of `{Name, Values}` (`Port`, `ProcessName`,
//!   `MachineIp`; at most 5 string values each), ANDed, values ORed.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::inventory::{self, CreatedTask};
use super::lock::lock;
use super::scenario::{OpenPortSpec, ScenarioAgent, ScriptedAnswer, is_agent_uuid};
use super::shared::Shared;
use super::wire::{self, Answer};

/// The most `Limit` a `DescribeOpenPorts` page may ask for.
pub const MAX_LIMIT: i64 = 100;
/// `Limit` when the request has none (as the real API).
const DEFAULT_LIMIT: i64 = 10;
/// The most `Filters`, and the most values of one filter (as the real API documents).
const MAX_FILTERS: usize = 5;

pub(crate) type Params = Map<String, Value>;

/// A JSON object body with no parameter outside `allowed`.
pub(crate) fn params(body: &[u8], allowed: &[&str]) -> Result<Params, Answer> {
    let params = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(Answer::error(
                "InvalidParameter",
                "The request body is not a JSON object.",
            ));
        }
    };
    if let Some(unknown) = params.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(Answer::error(
            "UnknownParameter",
            format!("The parameter `{unknown}` is not recognized."),
        ));
    }
    Ok(params)
}

/// The `Uuid` parameter, if present: a string in the agent Uuid format.
fn uuid_param(params: &Params) -> Result<Option<&str>, Answer> {
    match params.get("Uuid") {
        None => Ok(None),
        Some(Value::String(u)) if is_agent_uuid(u) => Ok(Some(u)),
        Some(Value::String(u)) => Err(Answer::error(
            "InvalidParameter.InvalidFormat",
            format!("The parameter `Uuid` value `{u}` has an invalid format."),
        )),
        Some(_) => Err(Answer::error(
            "InvalidParameterValue",
            "The value of parameter `Uuid` must be a string.",
        )),
    }
}

/// An integer parameter, if present, within `range` (`InvalidParameter.InvalidFormat`
/// outside it).
pub(crate) fn int_param(
    params: &Params,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, Answer> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            Some(n) => Err(Answer::error(
                "InvalidParameter.InvalidFormat",
                format!(
                    "The parameter `{name}` value `{n}` is out of range {}..={}.",
                    range.start(),
                    range.end()
                ),
            )),
            None => Err(Answer::error(
                "InvalidParameterValue",
                format!("The value of parameter `{name}` must be an integer."),
            )),
        },
    }
}

/// One `DescribeOpenPorts` filter: the field it looks at and the values it accepts.
struct Filter {
    field: &'static str,
    values: Vec<String>,
}

fn filters_param(params: &Params) -> Result<Vec<Filter>, Answer> {
    let bad = |why: &str| {
        Answer::error(
            "InvalidParameter.InvalidFormat",
            format!("The parameter `Filters` is invalid: {why}."),
        )
    };
    let Some(filters) = params.get("Filters") else {
        return Ok(Vec::new());
    };
    let Value::Array(filters) = filters else {
        return Err(bad("it must be a list of {Name, Values}"));
    };
    if filters.len() > MAX_FILTERS {
        return Err(bad("at most 5 filters"));
    }
    filters
        .iter()
        .map(|f| {
            let field = match f.get("Name").and_then(Value::as_str) {
                Some("Port") => "Port",
                Some("ProcessName") => "ProcessName",
                Some("MachineIp") => "MachineIp",
                _ => return Err(bad("Name must be Port, ProcessName or MachineIp")),
            };
            let values = f
                .get("Values")
                .and_then(Value::as_array)
                .filter(|v| v.len() <= MAX_FILTERS)
                .and_then(|v| {
                    v.iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| bad("Values must be a list of at most 5 strings"))?;
            Ok(Filter { field, values })
        })
        .collect()
}

impl Shared {
    /// The agent behind a well-formed Uuid, or `ResourceNotFound`.
    fn agent_index(&self, uuid: &str) -> Result<usize, Answer> {
        self.agents.get(uuid).copied().ok_or_else(|| {
            Answer::error(
                "ResourceNotFound",
                format!("The agent `{uuid}` does not exist."),
            )
        })
    }

    /// The Uuid every task action requires, as an agent index.
    fn required_agent(&self, body: &[u8]) -> Result<usize, Answer> {
        let params = params(body, &["Uuid"])?;
        let uuid = uuid_param(&params)?.ok_or_else(|| {
            Answer::error(
                "MissingParameter",
                "The request is missing a required parameter `Uuid`.",
            )
        })?;
        self.agent_index(uuid)
    }

    pub(crate) fn since_start(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.start)
    }

    /// `DescribeOpenPortTaskStatus`: the agent's timeline, or its created task.
    pub(crate) fn describe_status(&self, body: &[u8], now: Instant) -> Answer {
        let index = match self.required_agent(body) {
            Ok(i) => i,
            Err(answer) => return answer,
        };
        let task = lock(&self.tasks).get(&index).copied();
        let agent = &self.scenario.agents[index];
        match inventory::status_at(agent, task.as_ref(), self.since_start(now)) {
            ScriptedAnswer::Status(s) => Answer::Status(s),
            ScriptedAnswer::Error(code) => {
                let message = wire::scripted_error_message(&code);
                Answer::Error { code, message }
            }
        }
    }

    /// `CreateOpenPortTask`: starts a task unless one runs or the agent is offline or gone.
    pub(crate) fn create_task(&self, body: &[u8], now: Instant) -> Answer {
        let index = match self.required_agent(body) {
            Ok(i) => i,
            Err(answer) => return answer,
        };
        let t = self.since_start(now);
        let agent = &self.scenario.agents[index];
        let mut tasks = lock(&self.tasks);
        let previous = tasks.get(&index);
        if let Some((code, message)) = inventory::refuse_create(agent, previous, t) {
            return Answer::error(code, message);
        }
        let task = CreatedTask {
            created: t,
            completed_before: inventory::latest_completion(agent, previous, t),
        };
        tasks.insert(index, task);
        Answer::Fields(Map::new())
    }

    /// `DescribeOpenPorts`: one page of the ports of one agent (or of every agent with a port).
    pub(crate) fn describe_ports(&self, body: &[u8], now: Instant) -> Answer {
        match self.try_describe_ports(body, now) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_describe_ports(&self, body: &[u8], now: Instant) -> Result<Answer, Answer> {
        let params = params(body, &["Uuid", "Port", "Limit", "Offset", "Filters"])?;
        let uuid = uuid_param(&params)?;
        let port = int_param(&params, "Port", 0..=i64::from(u16::MAX))?;
        let limit = int_param(&params, "Limit", 0..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let offset = int_param(&params, "Offset", 0..=i64::MAX)?.unwrap_or(0);
        let filters = filters_param(&params)?;
        if uuid.is_none() && port.is_none() {
            return Err(Answer::error(
                "MissingParameter",
                "The request is missing a required parameter: one of `Uuid` or `Port`.",
            ));
        }
        let t = self.since_start(now);
        let indices: Vec<usize> = match uuid {
            Some(uuid) => vec![self.agent_index(uuid)?],
            None => (0..self.scenario.agents.len()).collect(),
        };
        // (agent, position, its set): cheap references; rows are built for the page only.
        let mut matching: Vec<(usize, usize, Arc<Served<'_>>)> = Vec::new();
        for index in indices {
            let Some(served) = self.served_ports(index, t) else {
                continue;
            };
            let served = Arc::new(served);
            let ip = self.machine_ip(index);
            for (position, open) in served.open().iter().enumerate() {
                let wanted = port.is_none_or(|p| p == i64::from(open.port))
                    && filters.iter().all(|f| f.matches(open, &ip));
                if wanted {
                    matching.push((index, position, served.clone()));
                }
            }
        }
        if let Some(uuid) = uuid {
            // The page is answered: a pending change takes effect for the next one.
            let index = self.agent_index(uuid)?;
            if let Some(o) = lock(&self.port_overrides).get_mut(&index) {
                o.promote(t);
            }
        }
        let faults = {
            let mut set = lock(&self.port_faults);
            let now = set.clone();
            if set.applies_to(uuid) && set.empty_answers > 0 {
                set.empty_answers -= 1;
            }
            now
        };
        let lies = faults.applies_to(uuid);
        if lies && faults.empty_answers > 0 {
            matching.clear();
        }
        let offset = if lies && faults.ignore_offset {
            0
        } else {
            offset
        };
        let total = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        let mut page: Vec<Value> = matching
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|(index, position, served)| Value::Object(self.row(*index, *position, served)))
            .collect();
        let mut total_count = json!(total);
        if lies {
            total_count = json!(total.saturating_add(faults.total_count_offset));
            if let Some(Value::Object(first)) = page.first_mut() {
                if let Some(p) = faults.first_port {
                    first.insert("Port".to_owned(), json!(p));
                }
                if let Some(field) = &faults.missing_field {
                    first.remove(field);
                }
            }
        }
        let mut fields = Map::new();
        fields.insert("TotalCount".to_owned(), total_count);
        fields.insert("OpenPorts".to_owned(), Value::Array(page));
        Ok(Answer::Fields(fields))
    }

    /// The ports `DescribeOpenPorts` serves for agent `index` at `t`: a test's override, else
    /// the scenario's set in force at the latest completion (`None`: nothing collected yet).
    fn served_ports(&self, index: usize, t: Duration) -> Option<Served<'_>> {
        if let Some(ports) = lock(&self.port_overrides)
            .get(&index)
            .and_then(|o| o.now.clone())
        {
            return Some(Served {
                open: PortList::Set(ports),
                since: t,
                collected: t,
            });
        }
        let agent = &self.scenario.agents[index];
        let task = lock(&self.tasks).get(&index).copied();
        let collected = inventory::latest_completion(agent, task.as_ref(), t)?;
        let (since, open) = inventory::ports_at(agent, collected)?;
        Some(Served {
            open: PortList::Scenario(open),
            since,
            collected,
        })
    }

    /// One `OpenPorts` row, fields in the real API's order.
    fn row(&self, index: usize, position: usize, served: &Served<'_>) -> Map<String, Value> {
        let agent = &self.scenario.agents[index];
        let open = &served.open()[position];
        // Unique per agent and position, like the real (opaque) row ids.
        let id = (index as u64 + 1)
            .saturating_mul(1_000_000)
            .saturating_add(position as u64 + 1);
        let machine_name = agent
            .machine_name
            .clone()
            .unwrap_or_else(|| format!("sim-{}", &agent.uuid[..8.min(agent.uuid.len())]));
        let machine_ip = self.machine_ip(index);
        let mut row = Map::new();
        row.insert("Id".to_owned(), json!(id));
        row.insert("Uuid".to_owned(), json!(agent.uuid));
        row.insert("Port".to_owned(), json!(open.port));
        row.insert("MachineIp".to_owned(), json!(machine_ip));
        row.insert("MachineName".to_owned(), json!(machine_name));
        row.insert("ProcessName".to_owned(), json!(open.process));
        row.insert("Pid".to_owned(), json!(open.pid));
        row.insert("CreateTime".to_owned(), json!(self.wall(served.since)));
        row.insert("ModifyTime".to_owned(), json!(self.wall(served.collected)));
        row
    }

    /// `MachineIp`: the scenario's, else one in 10.0.0.0/8 from the agent's position.
    pub(crate) fn machine_ip(&self, index: usize) -> String {
        let agent: &ScenarioAgent = &self.scenario.agents[index];
        agent.machine_ip.clone().unwrap_or_else(|| {
            let n = index as u32 + 1;
            format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
        })
    }

    /// `YYYY-MM-DD HH:MM:SS` (UTC) on the simulator's clock, `since_start` after its start.
    fn wall(&self, since_start: Duration) -> String {
        self.wall_secs(i64::try_from(since_start.as_secs()).unwrap_or(i64::MAX))
    }

    /// As `wall`, `offset` seconds from the start (negative: before it).
    pub(crate) fn wall_secs(&self, offset: i64) -> String {
        let secs = self.start_unix.checked_add(offset);
        let format =
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
        secs.and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
            .and_then(|t| t.format(&format).ok())
            .unwrap_or_else(|| "1970-01-01 00:00:00".to_owned())
    }

    /// As [`Shared::wall_secs`], in Beijing time (UTC+08:00, no zone written): how the `cwp`
    /// API's `FirstTime` / `StartTime` / `UpdateTime` read, as the consoles show them and as
    /// the daemon's client reads them (`docs/cwp-backend.md`).
    pub(crate) fn wall_secs_beijing(&self, offset: i64) -> String {
        self.wall_secs(offset.saturating_add(8 * 3600))
    }
}

/// A port set as served, with its times.
struct Served<'a> {
    open: PortList<'a>,
    /// Since when this set has been open (`CreateTime`).
    since: Duration,
    /// When it was collected (`ModifyTime`).
    collected: Duration,
}

impl Served<'_> {
    fn open(&self) -> &[OpenPortSpec] {
        match &self.open {
            PortList::Scenario(open) => open,
            PortList::Set(open) => open,
        }
    }
}

/// The scenario's ports (borrowed: a 10,000-port list is not copied per page) or a test's.
enum PortList<'a> {
    Scenario(&'a [OpenPortSpec]),
    Set(Arc<[OpenPortSpec]>),
}

impl Filter {
    /// Whether a port of a machine at `machine_ip` passes.
    fn matches(&self, open: &OpenPortSpec, machine_ip: &str) -> bool {
        let port;
        let value = match self.field {
            "Port" => {
                port = open.port.to_string();
                &port
            }
            "ProcessName" => &open.process,
            _ => machine_ip,
        };
        self.values.iter().any(|v| v == value)
    }
}
