//! The `cwp` API's `DescribeAssetPortInfoList` (service `cwp`, version `2018-02-28`): the
//! listening ports of the machines, with what yunjing's `DescribeOpenPorts` cannot say
//! (protocol, bind address, user, process path, first seen). The `cwp` API has no collection
//! tasks: it serves each agent's `ports` entry in force now (a test's `set_ports` first), also
//! while the agent is offline (the asset list keeps the last report, as the real one does).
//!
//! Parameters: `Quuid` (optional; without it, every machine's ports; an unknown one lists
//! nothing, as a filter would), `Limit` 0..=100 (default 10), `Offset` ≥ 0, `Filters` (at
//! most 5 of `{Name, Values, ExactMatch}`, at most 5 string values each, ANDed, values ORed;
//! names `Port`, `IP`, `MachineName`, `InstanceID`, `ProcessName`, `Pid`, `User`, `Group`,
//! `Ppid`, `Proto`, `OsType`, `RunTimeStart`, `RunTimeEnd`, `Os`), `Order` (`ASC` | `DESC`,
//! any case) and `By` (`FirstTime` | `StartTime`). A `Limit` over 100, a negative `Offset`, an
//! unknown filter, `Order` or `By` answer `InvalidParameter`; a value of the wrong JSON type
//! `InvalidParameterValue`.
//!
//! Matching: `Port`, `Pid`, `Ppid`, `Proto`, `InstanceID`, `OsType` and `Os` exactly (`Proto`
//! and the OS ones in any case; `Proto` `""` matches an unknown protocol); `IP` (the machine's
//! private or WAN address), `MachineName`, `ProcessName`, `User` and `Group` as a substring
//! unless `ExactMatch` is `true`; `RunTimeStart` / `RunTimeEnd` bound `StartTime`
//! (`YYYY-MM-DD HH:MM:SS`) from below / above. Without `By` the rows come in the scenario's
//! order; with it, sorted by that time (`Order` `ASC` by default), ties in scenario order.
//!
//! Rows (`AssetPortBaseInfo`, fields in the SDK's order): `Port`, `Pid` and `Ppid` are strings,
//! `IsNew` is 1 for a port first seen after the simulator's start. Hostile answers: the
//! run-time [`AssetPortFaults`] for the asked `Quuid` (or every answer) while they lie, else,
//! for a request naming an agent's `Quuid`, that agent's scenario switch `cwp_faults` once in
//! force (a request without `Quuid` lists every machine honestly).

use std::borrow::Cow;
use std::time::Duration;

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::actions::{MAX_LIMIT, Params, params};
use super::faults::AssetPortFaults;
use super::inventory;
use super::lock::lock;
use super::scenario::{CwpPortFacts, OpenPortSpec};
use super::shared::Shared;
use super::wire::Answer;

/// The action.
pub const DESCRIBE_ASSET_PORTS_ACTION: &str = "DescribeAssetPortInfoList";
const DEFAULT_LIMIT: i64 = 10;
const MAX_FILTERS: usize = 5;

/// `InvalidParameter` with a message saying which parameter and why.
pub(crate) fn invalid(name: &str, why: impl std::fmt::Display) -> Answer {
    Answer::error(
        "InvalidParameter",
        format!("The parameter `{name}` is invalid: {why}."),
    )
}

/// An integer parameter of a `cwp` action within `range` (`InvalidParameter` outside it,
/// `InvalidParameterValue` when not an integer).
pub(crate) fn cwp_int(
    params: &Params,
    name: &str,
    range: std::ops::RangeInclusive<i64>,
) -> Result<Option<i64>, Answer> {
    match params.get(name) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if range.contains(&n) => Ok(Some(n)),
            Some(n) => Err(invalid(
                name,
                format_args!("`{n}` is out of range {}..={}", range.start(), range.end()),
            )),
            None => Err(Answer::error(
                "InvalidParameterValue",
                format!("The value of parameter `{name}` must be an integer."),
            )),
        },
    }
}

/// A string parameter, if present (`InvalidParameterValue` when not a string).
pub(crate) fn cwp_str<'a>(params: &'a Params, name: &str) -> Result<Option<&'a str>, Answer> {
    match params.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Answer::error(
            "InvalidParameterValue",
            format!("The value of parameter `{name}` must be a string."),
        )),
    }
}

/// One `{Name, Values, ExactMatch}` of a `cwp` action.
pub(crate) struct CwpFilter {
    pub(crate) name: String,
    pub(crate) values: Vec<String>,
    pub(crate) exact: bool,
}

/// `Filters`: at most 5, each with a name from `known` and at most `max_values(name)` string
/// values (at least one).
pub(crate) fn cwp_filters(
    params: &Params,
    known: &[&str],
    max_values: impl Fn(&str) -> usize,
) -> Result<Vec<CwpFilter>, Answer> {
    let Some(list) = params.get("Filters") else {
        return Ok(Vec::new());
    };
    let Some(list) = list.as_array() else {
        return Err(invalid("Filters", "it must be a list of {Name, Values}"));
    };
    if list.len() > MAX_FILTERS {
        return Err(invalid("Filters", "at most 5 filters"));
    }
    list.iter()
        .map(|f| {
            let name = match f.get("Name").and_then(Value::as_str) {
                Some(n) if known.contains(&n) => n,
                Some(n) => {
                    return Err(invalid(
                        "Filters",
                        format_args!(
                            "unknown Name {}; known: {}",
                            serde_json::Value::from(n),
                            known.join(", ")
                        ),
                    ));
                }
                None => return Err(invalid("Filters", "every filter needs a string Name")),
            };
            let max = max_values(name);
            let values = f
                .get("Values")
                .and_then(Value::as_array)
                .filter(|v| !v.is_empty() && v.len() <= max)
                .and_then(|v| {
                    v.iter()
                        .map(|s| s.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                })
                .ok_or_else(|| {
                    invalid(
                        "Filters",
                        format_args!("Values of `{name}` must be a list of 1 to {max} strings"),
                    )
                })?;
            let exact = match f.get("ExactMatch") {
                None | Some(Value::Null) => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(invalid("Filters", "ExactMatch must be true or false")),
            };
            Ok(CwpFilter {
                name: name.to_owned(),
                values,
                exact,
            })
        })
        .collect()
}

impl CwpFilter {
    /// Whether `value` passes: exactly (ignoring case when `any_case`), or as a substring
    /// unless `ExactMatch` when `fuzzy`.
    pub(crate) fn passes(&self, value: &str, fuzzy: bool, any_case: bool) -> bool {
        self.values.iter().any(|v| {
            if fuzzy && !self.exact {
                value.contains(v.as_str())
            } else if any_case {
                value.eq_ignore_ascii_case(v)
            } else {
                value == v
            }
        })
    }
}

const PORT_FILTERS: &[&str] = &[
    "Port",
    "IP",
    "MachineName",
    "InstanceID",
    "ProcessName",
    "Pid",
    "User",
    "Group",
    "Ppid",
    "Proto",
    "OsType",
    "RunTimeStart",
    "RunTimeEnd",
    "Os",
];

/// The parent process every simulated port has.
const PPID: &str = "1";
const PARENT_PROCESS: &str = "systemd";
/// `OsInfo` and `MachineOs` of every simulated machine.
pub(crate) const MACHINE_OS: &str = "linux";

/// One port as served, before paging: which agent, its position, and its facts.
struct Listed<'a> {
    agent: usize,
    open: Cow<'a, OpenPortSpec>,
    cwp: Cow<'a, CwpPortFacts>,
    /// When the set was reported (`UpdateTime`), seconds from the start.
    updated: i64,
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

impl Shared {
    /// `DescribeAssetPortInfoList`: one page of the ports of one machine (or of every machine).
    pub(crate) fn describe_asset_ports(&self, body: &[u8], now: Instant) -> Answer {
        match self.try_describe_asset_ports(body, now) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_describe_asset_ports(&self, body: &[u8], now: Instant) -> Result<Answer, Answer> {
        let params = params(
            body,
            &["Quuid", "Filters", "Limit", "Offset", "Order", "By"],
        )?;
        let quuid = cwp_str(&params, "Quuid")?;
        let limit = cwp_int(&params, "Limit", 0..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let offset = cwp_int(&params, "Offset", 0..=i64::MAX)?.unwrap_or(0);
        let filters = cwp_filters(&params, PORT_FILTERS, |_| MAX_FILTERS)?;
        for f in &filters {
            check_filter_values(f)?;
        }
        let descending = match cwp_str(&params, "Order")? {
            None => false,
            Some(o) if o.eq_ignore_ascii_case("ASC") => false,
            Some(o) if o.eq_ignore_ascii_case("DESC") => true,
            Some(_) => return Err(invalid("Order", "write ASC or DESC")),
        };
        let sort = match cwp_str(&params, "By")? {
            None => false,
            Some("FirstTime" | "StartTime") => true,
            Some(_) => return Err(invalid("By", "write FirstTime or StartTime")),
        };
        let t = self.since_start(now);
        let index = quuid.and_then(|q| self.quuids.get(q).copied());
        let indices: Vec<usize> = match (quuid, index) {
            (Some(_), Some(i)) => vec![i],
            (Some(_), None) => Vec::new(),
            (None, _) => (0..self.scenario.agents.len()).collect(),
        };
        let mut matching: Vec<Listed<'_>> = Vec::new();
        for i in indices {
            for listed in self.asset_ports(i, t) {
                if filters.iter().all(|f| self.port_passes(f, &listed)) {
                    matching.push(listed);
                }
            }
        }
        if sort {
            // Stable: ties keep the scenario's order.
            matching.sort_by(|a, b| {
                let order = a.cwp.first_seen.cmp(&b.cwp.first_seen);
                if descending { order.reverse() } else { order }
            });
        }
        if let Some(i) = index {
            // The page is answered: a pending change takes effect for the next one.
            if let Some(o) = lock(&self.port_overrides).get_mut(&i) {
                o.promote(t);
            }
        }

        let faults = self.asset_port_lies(quuid, index, t);
        if faults.empty_answers > 0 {
            matching.clear();
        }
        if faults.duplicate_rows && !matching.is_empty() {
            let first = Listed {
                agent: matching[0].agent,
                open: matching[0].open.clone(),
                cwp: matching[0].cwp.clone(),
                updated: matching[0].updated,
            };
            matching.insert(1, first);
        }
        let offset = if faults.ignore_offset { 0 } else { offset };
        let total = i64::try_from(matching.len()).unwrap_or(i64::MAX);
        let mut page: Vec<Value> = matching
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|l| Value::Object(self.asset_port_row(l)))
            .collect();
        if let Some(Value::Object(first)) = page.first_mut() {
            if let Some(p) = &faults.first_port {
                first.insert("Port".to_owned(), json!(p));
            }
            if let Some(ip) = &faults.first_bind_ip {
                first.insert("BindIp".to_owned(), json!(ip));
            }
            if let Some(field) = &faults.missing_field {
                first.remove(field);
            }
        }
        let mut fields = Map::new();
        fields.insert(
            "Total".to_owned(),
            json!(total.saturating_add(faults.total_offset)),
        );
        fields.insert("Ports".to_owned(), Value::Array(page));
        Ok(Answer::Fields(fields))
    }

    /// The lies of this answer: the run-time ones when they apply (an `empty_answers` one is
    /// counted down), else the agent's scenario switch once in force, else none.
    fn asset_port_lies(
        &self,
        quuid: Option<&str>,
        index: Option<usize>,
        t: Duration,
    ) -> AssetPortFaults {
        {
            let mut set = lock(&self.asset_port_faults);
            if set.applies_to(quuid) && !set.is_honest() {
                let now = set.clone();
                if set.empty_answers > 0 {
                    set.empty_answers -= 1;
                }
                return now;
            }
        }
        index
            .and_then(|i| self.scenario.agents[i].cwp_faults_at(t))
            .map(|f| f.ports.clone())
            .unwrap_or_default()
    }

    /// The ports the `cwp` API lists for agent `index` at `t`: a test's override, else the
    /// scenario's entry in force.
    fn asset_ports(&self, index: usize, t: Duration) -> Vec<Listed<'_>> {
        if let Some(o) = lock(&self.port_overrides).get(&index)
            && let Some(now) = &o.now
        {
            let since = secs(o.since);
            let facts = o.now_cwp.as_deref().unwrap_or_default();
            return now
                .iter()
                .enumerate()
                .map(|(i, open)| Listed {
                    agent: index,
                    open: Cow::Owned(open.clone()),
                    cwp: Cow::Owned(
                        facts
                            .get(i)
                            .cloned()
                            .unwrap_or_else(|| CwpPortFacts::defaults(open, since)),
                    ),
                    updated: since,
                })
                .collect();
        }
        let agent = &self.scenario.agents[index];
        let Some(entry) = inventory::entry_at(agent, t) else {
            return Vec::new();
        };
        let at = secs(entry.at);
        entry
            .open
            .iter()
            .enumerate()
            .map(|(i, open)| Listed {
                agent: index,
                open: Cow::Borrowed(open),
                cwp: match entry.cwp.get(i) {
                    Some(facts) => Cow::Borrowed(facts),
                    None => Cow::Owned(CwpPortFacts::defaults(open, at)),
                },
                updated: at,
            })
            .collect()
    }

    /// Whether a listed port passes one filter (see the module docs).
    fn port_passes(&self, f: &CwpFilter, l: &Listed<'_>) -> bool {
        let agent = &self.scenario.agents[l.agent];
        match f.name.as_str() {
            "Port" => f.passes(&l.open.port.to_string(), false, false),
            "Pid" => f.passes(&l.open.pid.to_string(), false, false),
            "Ppid" => f.passes(PPID, false, false),
            "Proto" => f.passes(&l.cwp.proto, false, true),
            "InstanceID" => f.passes(&self.instance_id(l.agent), false, false),
            "OsType" | "Os" => f.passes(MACHINE_OS, false, true),
            "IP" => {
                f.passes(&self.machine_ip(l.agent), true, false)
                    || agent
                        .machine_wan_ip
                        .as_deref()
                        .is_some_and(|w| f.passes(w, true, false))
            }
            "MachineName" => f.passes(&self.machine_name(l.agent), true, false),
            "ProcessName" => f.passes(&l.open.process, true, false),
            "User" | "Group" => f.passes(&l.cwp.user, true, false),
            "RunTimeStart" | "RunTimeEnd" => {
                let started = self.wall_secs_beijing(l.cwp.first_seen);
                f.values.iter().any(|v| {
                    if f.name == "RunTimeStart" {
                        started.as_str() >= v.as_str()
                    } else {
                        started.as_str() <= v.as_str()
                    }
                })
            }
            _ => false,
        }
    }

    /// One `AssetPortBaseInfo`, fields in the SDK's order.
    fn asset_port_row(&self, l: &Listed<'_>) -> Map<String, Value> {
        let agent = &self.scenario.agents[l.agent];
        let ip = self.machine_ip(l.agent);
        let wan_ip = agent.machine_wan_ip.clone().unwrap_or_default();
        let name = self.machine_name(l.agent);
        let first = self.wall_secs_beijing(l.cwp.first_seen);
        let value = json!({
            "MachineIp": ip,
            "MachineWanIp": wan_ip,
            "Quuid": agent.quuid,
            "Uuid": agent.uuid,
            "OsInfo": MACHINE_OS,
            "ProjectId": 0,
            "Tag": self.cwp_tags(l.agent),
            "ProcessName": l.open.process,
            "ProcessVersion": "",
            "ProcessPath": l.cwp.process_path,
            "Pid": l.open.pid.to_string(),
            "User": l.cwp.user,
            "StartTime": first,
            "Param": "",
            "Teletype": "",
            "Port": l.open.port.to_string(),
            "GroupName": l.cwp.user,
            "Md5": "",
            "Ppid": PPID,
            "ParentProcessName": PARENT_PROCESS,
            "Proto": l.cwp.proto,
            "BindIp": l.cwp.bind_ip,
            "MachineName": name,
            "UpdateTime": self.wall_secs_beijing(l.updated),
            "FirstTime": first,
            "IsNew": i32::from(l.cwp.first_seen > 0),
            "MachineExtraInfo": self.machine_extra_info(l.agent),
        });
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    /// `MachineName`: the scenario's, else `sim-` and the Uuid's first 8 digits.
    pub(crate) fn machine_name(&self, index: usize) -> String {
        let agent = &self.scenario.agents[index];
        agent
            .machine_name
            .clone()
            .unwrap_or_else(|| format!("sim-{}", &agent.uuid[..8.min(agent.uuid.len())]))
    }

    /// `InstanceId`: `ins-` and the Uuid's first 8 digits, lower case.
    pub(crate) fn instance_id(&self, index: usize) -> String {
        let uuid = &self.scenario.agents[index].uuid;
        format!("ins-{}", uuid[..8.min(uuid.len())].to_ascii_lowercase())
    }

    /// The agent's `Tag` list, with one `TagId` per tag name across the scenario.
    pub(crate) fn cwp_tags(&self, index: usize) -> Vec<Value> {
        self.scenario.agents[index]
            .tags
            .iter()
            .map(|name| {
                let id = self.tag_ids.get(name).copied().unwrap_or(0);
                json!({ "Rid": id, "Name": name, "TagId": id })
            })
            .collect()
    }

    /// `MachineExtraInfo` of an agent's machine.
    pub(crate) fn machine_extra_info(&self, index: usize) -> Value {
        let agent = &self.scenario.agents[index];
        json!({
            "WanIP": agent.machine_wan_ip.clone().unwrap_or_default(),
            "PrivateIP": self.machine_ip(index),
            "NetworkType": 1,
            "NetworkName": "vpc-simulator",
            "InstanceID": self.instance_id(index),
            "HostName": self.machine_name(index),
        })
    }
}

/// Values a filter must be able to compare: numbers for `Port`, `Pid`, `Ppid`, times for
/// `RunTimeStart` / `RunTimeEnd` (`InvalidParameterValue` otherwise).
fn check_filter_values(f: &CwpFilter) -> Result<(), Answer> {
    let bad = |v: &str, what: &str| {
        Answer::error(
            "InvalidParameterValue",
            format!(
                "Filter `{}` value {} is not {what}.",
                f.name,
                serde_json::Value::from(v)
            ),
        )
    };
    for v in &f.values {
        match f.name.as_str() {
            "Port" | "Pid" | "Ppid" if v.parse::<u64>().is_err() => {
                return Err(bad(v, "a whole number"));
            }
            "RunTimeStart" | "RunTimeEnd" if !is_wall_time(v) => {
                return Err(bad(v, "a time YYYY-MM-DD HH:MM:SS"));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_wall_time(v: &str) -> bool {
    v.len() == 19
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            10 => b == b' ',
            13 | 16 => b == b':',
            _ => b.is_ascii_digit(),
        })
}
