//! The `cwp` API's `DescribeMachines` (service `cwp`, version `2018-02-28`): the scenario's
//! machines with their `Quuid` and `AgentStatus`, for agent discovery and for matching a
//! watchlist's Uuids to Quuids. Every `[[agent]]` is a machine with its Uuid, its `quuid`
//! and its `agent_status` timeline (`MachineStatus` says the same); every `[[machine]]` one
//! whose agent has been offline so long that its `Uuid` is empty (`OFFLINE`). All run Linux,
//! are `RUNNING` and `BASIC_VERSION`, in project 0.
//!
//! Parameters: `MachineType` (`CVM` | `BM` | `ECM` | `LH` | `Other`) and `MachineRegion` are
//! required (`MissingParameter`; another type is `InvalidParameterValue`); `Limit` 0..=100
//! (default 10) and `Offset` ≥ 0 (`InvalidParameter` outside); `ProjectIds` (a list of
//! numbers: every machine is in project 0) and `MachineAppId` (ignored); `Filters` (at most 5
//! `{Name, Values, ExactMatch}`): `Quuid`, `Ips`, `Names` and `InstanceIds` take up to 100
//! values (ORed), the others one: `Version`, `Risk`, `Os`, `AddedOnTheFifteen`, `TagId`,
//! `AgentStatus` (`ALL` or a status), `MachineStatus` (`ALL` | `RUNNING` | `STOPPED` |
//! `EXPIRED`). `Names` matches a substring of the name and `Ips` of the private or WAN address
//! unless `ExactMatch` is `true`; the rest match exactly. An unknown filter is
//! `InvalidParameter`.
//!
//! Test hooks: [`RunningSimulator::cwp_machine_hooks`](super::RunningSimulator::cwp_machine_hooks)
//! (hide, flap, fail), separate from yunjing's; an agent's scenario `cwp_faults` with
//! `machine_missing_quuid` drops `Quuid` from its row.

use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::actions::{MAX_LIMIT, params};
use super::cwp_ports::{CwpFilter, MACHINE_OS, cwp_filters, cwp_int, cwp_str};
use super::scenario::Placement;
use super::shared::Shared;
use super::wire::Answer;

const DEFAULT_LIMIT: i64 = 10;
const MACHINE_TYPES: &[&str] = &["CVM", "BM", "ECM", "LH", "Other"];
const MACHINE_FILTERS: &[&str] = &[
    "Ips",
    "Names",
    "InstanceIds",
    "Version",
    "Risk",
    "Os",
    "Quuid",
    "AddedOnTheFifteen",
    "TagId",
    "AgentStatus",
    "MachineStatus",
];
/// The most values of `Quuid`, `Ips`, `Names` and `InstanceIds`.
const MAX_LIST_VALUES: usize = 100;

/// One machine as listed, before paging.
struct Listed<'a> {
    /// The agent's index, `None` for a `[[machine]]`.
    agent: Option<usize>,
    name: String,
    ip: String,
    wan_ip: String,
    uuid: &'a str,
    quuid: String,
    agent_status: String,
    instance_id: String,
    tags: Vec<Value>,
    placement: &'a Placement,
    missing_quuid: bool,
}

impl Shared {
    /// `DescribeMachines` of the `cwp` API: one page of the machines of a type and region.
    pub(crate) fn cwp_describe_machines(&self, body: &[u8], now: Instant) -> Answer {
        match self.try_cwp_describe_machines(body, now) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_cwp_describe_machines(&self, body: &[u8], now: Instant) -> Result<Answer, Answer> {
        let params = params(
            body,
            &[
                "MachineType",
                "MachineRegion",
                "Limit",
                "Offset",
                "Filters",
                "ProjectIds",
                "MachineAppId",
            ],
        )?;
        if self.cwp_machine_hooks.is_failing() {
            return Err(Answer::error(
                "InternalError",
                "An internal error occurred (injected by a test).",
            ));
        }
        let required = |name: &str| {
            cwp_str(&params, name)?.ok_or_else(|| {
                Answer::error(
                    "MissingParameter",
                    format!("The request is missing a required parameter `{name}`."),
                )
            })
        };
        let machine_type = required("MachineType")?;
        let region = required("MachineRegion")?;
        if !MACHINE_TYPES.contains(&machine_type) {
            return Err(Answer::error(
                "InvalidParameterValue",
                format!("MachineType is one of {}.", MACHINE_TYPES.join(", ")),
            ));
        }
        let limit = cwp_int(&params, "Limit", 0..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let offset = cwp_int(&params, "Offset", 0..=i64::MAX)?.unwrap_or(0);
        let in_project_0 = match params.get("ProjectIds") {
            None => true,
            Some(Value::Array(ids)) if ids.iter().all(|i| i.as_u64().is_some()) => {
                ids.is_empty() || ids.iter().any(|i| i.as_u64() == Some(0))
            }
            Some(_) => {
                return Err(Answer::error(
                    "InvalidParameterValue",
                    "The value of parameter `ProjectIds` must be a list of non-negative integers.",
                ));
            }
        };
        cwp_int(&params, "MachineAppId", 0..=i64::MAX)?;
        let filters = cwp_filters(&params, MACHINE_FILTERS, |name| match name {
            "Quuid" | "Ips" | "Names" | "InstanceIds" => MAX_LIST_VALUES,
            _ => 1,
        })?;
        for f in &filters {
            if f.name == "MachineStatus"
                && !matches!(
                    f.values[0].as_str(),
                    "ALL" | "RUNNING" | "STOPPED" | "EXPIRED"
                )
            {
                return Err(Answer::error(
                    "InvalidParameterValue",
                    "Filter `MachineStatus` takes one of ALL, RUNNING, STOPPED, EXPIRED.",
                ));
            }
        }
        let t = self.since_start(now);
        let hidden = self.cwp_machine_hooks.hidden_now(offset);
        let agents = self
            .scenario
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !hidden.contains(&a.uuid))
            .map(|(i, a)| Listed {
                agent: Some(i),
                name: self.machine_name(i),
                ip: self.machine_ip(i),
                wan_ip: a.machine_wan_ip.clone().unwrap_or_default(),
                uuid: &a.uuid,
                quuid: a.quuid.clone(),
                agent_status: a.agent_status_at(t).to_owned(),
                instance_id: self.instance_id(i),
                tags: self.cwp_tags(i),
                placement: &a.placement,
                missing_quuid: a.cwp_faults_at(t).is_some_and(|f| f.machine_missing_quuid),
            });
        let others = self.scenario.machines.iter().enumerate().map(|(i, m)| {
            // Numbered after the agents, as yunjing's listing numbers them.
            let n = (self.scenario.agents.len() + i) as u64 + 1;
            Listed {
                agent: None,
                name: m.machine_name.clone(),
                ip: m.machine_ip.clone(),
                wan_ip: String::new(),
                uuid: "",
                quuid: format!("{:08x}-0000-4000-a000-{n:012x}", n >> 16),
                agent_status: "OFFLINE".to_owned(),
                instance_id: format!("ins-m{n:07x}"),
                tags: Vec::new(),
                placement: &m.placement,
                missing_quuid: false,
            }
        });
        let matching: Vec<Listed<'_>> = agents
            .chain(others)
            .filter(|m| m.placement.machine_type == machine_type && m.placement.region == region)
            .filter(|_| in_project_0)
            .filter(|m| filters.iter().all(|f| machine_passes(f, m)))
            .collect();
        let total = matching.len();
        let page: Vec<Value> = matching
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|m| Value::Object(self.cwp_machine_row(m)))
            .collect();
        let mut fields = Map::new();
        fields.insert("Machines".to_owned(), Value::Array(page));
        fields.insert("TotalCount".to_owned(), json!(total));
        Ok(Answer::Fields(fields))
    }

    /// A `Machine` as the `cwp` API shapes it, fields in the SDK's order (what the simulator
    /// has no notion of is zero or empty).
    fn cwp_machine_row(&self, m: &Listed<'_>) -> Map<String, Value> {
        let region_code = m
            .placement
            .region
            .rsplit('-')
            .next()
            .unwrap_or_default()
            .to_owned();
        let extra = match m.agent {
            Some(i) => self.machine_extra_info(i),
            None => json!({
                "WanIP": "", "PrivateIP": m.ip, "NetworkType": 1,
                "NetworkName": "vpc-simulator", "InstanceID": m.instance_id, "HostName": m.name,
            }),
        };
        let value = json!({
            "MachineName": m.name,
            "MachineOs": MACHINE_OS,
            "MachineStatus": m.agent_status,
            "AgentStatus": m.agent_status,
            "InstanceStatus": "RUNNING",
            "Uuid": m.uuid,
            "Quuid": m.quuid,
            "VulNum": 0,
            "MachineIp": m.ip,
            "IsProVersion": false,
            "MachineWanIp": m.wan_ip,
            "PayMode": "POSTPAY",
            "MalwareNum": 0,
            "Tag": m.tags,
            "BaselineNum": 0,
            "CyberAttackNum": 0,
            "SecurityStatus": "SAFE",
            "InvasionNum": 0,
            "RegionInfo": {
                "Region": m.placement.region,
                "RegionName": m.placement.region,
                "RegionId": 1,
                "RegionCode": region_code,
                "RegionNameEn": m.placement.region,
            },
            "InstanceState": "",
            "LicenseStatus": 0,
            "ProjectId": 0,
            "HasAssetScan": 1,
            "MachineType": m.placement.machine_type,
            "KernelVersion": "",
            "ProtectType": "BASIC_VERSION",
            "CloudTags": [],
            "IsAddedOnTheFifteen": 0,
            "IpList": m.ip,
            "VpcId": "vpc-simulator",
            "MachineExtraInfo": extra,
            "InstanceId": m.instance_id,
            "Remark": "",
            "AgentVersion": "",
            "AppId": 0,
            "CSIPProtectType": "",
        });
        let mut row = match value {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        if m.missing_quuid {
            row.remove("Quuid");
        }
        row
    }
}

/// Whether a machine passes one filter (see the module docs).
fn machine_passes(f: &CwpFilter, m: &Listed<'_>) -> bool {
    let one = f.values[0].as_str();
    match f.name.as_str() {
        "Quuid" => f.passes(&m.quuid, false, false),
        "InstanceIds" => f.passes(&m.instance_id, false, false),
        "Names" => f.passes(&m.name, true, false),
        "Ips" => {
            f.passes(&m.ip, true, false)
                || (!m.wan_ip.is_empty() && f.passes(&m.wan_ip, true, false))
        }
        "Version" => one == "BASIC_VERSION",
        "Risk" | "AddedOnTheFifteen" => false,
        "Os" => one.eq_ignore_ascii_case(MACHINE_OS),
        "TagId" => m
            .tags
            .iter()
            .any(|t| t["TagId"].as_u64().is_some_and(|id| one.parse() == Ok(id))),
        "AgentStatus" => one == "ALL" || one == m.agent_status,
        "MachineStatus" => matches!(one, "ALL" | "RUNNING"),
        _ => false,
    }
}
