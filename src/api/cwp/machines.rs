//! `cwp` `DescribeMachines`: one page of the account's machines in one region, checked.
//!
//! Request ([`MachinesQuery`]): `MachineType` (`CVM` | `BM` | `ECM` | `LH` | `Other`) and
//! `MachineRegion` (e.g. `ap-guangzhou`; `ap-others` for hosts outside Tencent Cloud), both
//! required by the API; `Limit` 1..=100, `Offset`, and `Filters` `[{Name, Values,
//! ExactMatch}]` of the names the API documents ([`FilterName`]); each takes one value, except
//! `Quuid`, which takes up to 100.
//!
//! Answer: `TotalCount` and `Machines[]` (`Machine`, tencentcloud-sdk-python
//! `cwp/v20180228/models.py`). What decides something must be valid, or the page is refused:
//! - `Quuid`: the machine's id, the key of its port listing: present and a [`Quuid`], and
//!   each once per page;
//! - `Uuid`: the agent's id, matched against the watchlist: empty (the agent has been
//!   offline for long), absent or `null` is `None`; otherwise an agent Uuid;
//! - `AgentStatus`: the agent's status (`ONLINE`, `OFFLINE`, `UNINSTALLED`, … passed through
//!   as sent): 1 to 64 bytes of `A-Z a-z 0-9 _ . -`.
//!
//! What only labels or selects hosts is dropped when malformed, never an error: `MachineName`,
//! `MachineIp`, `MachineWanIp` (kept when an IP address), `MachineStatus`, `InstanceId`, and
//! the policy's host facts (`Tag[].Name`, WAN IP, `RegionInfo.Region`, bounded as yunjing's
//! [`crate::api::machines`] reads them).

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value, json};

use super::answer::{self, BadAnswer};
use super::fields::{Problem, Quuid, checked_text};
use super::{CwpClient, MAX_LIMIT, RequestError};
use crate::agent_uuid::AgentUuid;
use crate::api::error::ApiError;
use crate::api::machines::{object_facts, usable_region};
use crate::api::response::{Answer, MAX_STATUS_BYTES};
use crate::watchlist::{Facts, MAX_NAME_CHARS};

/// The action.
pub const DESCRIBE_MACHINES: &str = "DescribeMachines";
/// `MachineRegion` of machines outside Tencent Cloud.
pub const OTHERS_REGION: &str = "ap-others";
/// Most values of a `Quuid` filter (the API's documented maximum).
pub const MAX_QUUID_FILTER_VALUES: usize = 100;
/// Longest filter value sent.
pub const MAX_FILTER_VALUE_BYTES: usize = 256;
/// Longest `InstanceId` kept (`ins-xxxxxxxx` is 12).
pub const MAX_INSTANCE_ID_BYTES: usize = 64;

/// `MachineType`: the zone a machine belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MachineType {
    /// Cloud Virtual Machine.
    Cvm,
    /// Bare metal.
    Bm,
    /// Edge Computing Machine.
    Ecm,
    /// Lighthouse.
    Lh,
    /// Hybrid cloud (hosts outside Tencent Cloud).
    Other,
}

impl MachineType {
    /// Every type, for listing them all.
    pub const ALL: [MachineType; 5] = [
        MachineType::Cvm,
        MachineType::Bm,
        MachineType::Ecm,
        MachineType::Lh,
        MachineType::Other,
    ];

    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Cvm => "CVM",
            MachineType::Bm => "BM",
            MachineType::Ecm => "ECM",
            MachineType::Lh => "LH",
            MachineType::Other => "Other",
        }
    }
}

/// A `DescribeMachines` filter name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterName {
    /// `Ips`.
    Ips,
    /// `Names`.
    Names,
    /// `InstanceIds`.
    InstanceIds,
    /// `Version`: `PRO_VERSION`, `BASIC_VERSION`, `Flagship`, `ProtectedMachines`.
    Version,
    /// `Risk`: `yes`.
    Risk,
    /// `Os`.
    Os,
    /// `Quuid`: up to [`MAX_QUUID_FILTER_VALUES`] values.
    Quuid,
    /// `AddedOnTheFifteen`: `1`.
    AddedOnTheFifteen,
    /// `TagId`.
    TagId,
    /// `AgentStatus`: `ALL`, `ONLINE`, `OFFLINE`, `UNINSTALLED`.
    AgentStatus,
    /// `MachineStatus`: `ALL`, `RUNNING`, `STOPPED`, `EXPIRED`.
    MachineStatus,
}

impl FilterName {
    /// As the API writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            FilterName::Ips => "Ips",
            FilterName::Names => "Names",
            FilterName::InstanceIds => "InstanceIds",
            FilterName::Version => "Version",
            FilterName::Risk => "Risk",
            FilterName::Os => "Os",
            FilterName::Quuid => "Quuid",
            FilterName::AddedOnTheFifteen => "AddedOnTheFifteen",
            FilterName::TagId => "TagId",
            FilterName::AgentStatus => "AgentStatus",
            FilterName::MachineStatus => "MachineStatus",
        }
    }

    /// Values one filter of this name may carry.
    pub fn max_values(self) -> usize {
        match self {
            FilterName::Quuid => MAX_QUUID_FILTER_VALUES,
            _ => 1,
        }
    }
}

/// One filter, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    name: FilterName,
    values: Vec<String>,
    exact_match: Option<bool>,
}

impl Filter {
    /// A filter of `name` with `values` (1 to [`FilterName::max_values`], each 1 to
    /// [`MAX_FILTER_VALUE_BYTES`] bytes without a control character); `exact_match` sent
    /// when given.
    pub fn new(
        name: FilterName,
        values: Vec<String>,
        exact_match: Option<bool>,
    ) -> Result<Filter, RequestError> {
        if values.is_empty() || values.len() > name.max_values() {
            return Err(RequestError::FilterValues {
                name: name.as_str(),
                count: values.len(),
                max: name.max_values(),
            });
        }
        if values
            .iter()
            .any(|v| v.is_empty() || checked_text(v, MAX_FILTER_VALUE_BYTES).is_err())
        {
            return Err(RequestError::FilterValue {
                name: name.as_str(),
            });
        }
        Ok(Filter {
            name,
            values,
            exact_match,
        })
    }

    fn params(&self) -> Value {
        let mut filter = json!({ "Name": self.name.as_str(), "Values": self.values });
        if let Some(exact) = self.exact_match {
            filter["ExactMatch"] = Value::Bool(exact);
        }
        filter
    }
}

/// One page asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinesQuery {
    machine_type: MachineType,
    region: String,
    offset: u64,
    limit: u64,
    filters: Vec<Filter>,
}

impl MachinesQuery {
    /// The page of `limit` (1..=[`MAX_LIMIT`]) machines at `offset` of `machine_type` in
    /// `region` (a region id, or [`OTHERS_REGION`]).
    pub fn new(
        machine_type: MachineType,
        region: &str,
        offset: u64,
        limit: u64,
    ) -> Result<MachinesQuery, RequestError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(RequestError::Limit { limit });
        }
        if !usable_region(region) {
            return Err(RequestError::Region);
        }
        Ok(MachinesQuery {
            machine_type,
            region: region.to_owned(),
            offset,
            limit,
            filters: Vec::new(),
        })
    }

    /// With one more filter (the API ANDs them).
    pub fn filter(mut self, filter: Filter) -> MachinesQuery {
        self.filters.push(filter);
        self
    }

    /// The same query at another offset (the next page).
    pub fn at(&self, offset: u64) -> MachinesQuery {
        MachinesQuery {
            offset,
            ..self.clone()
        }
    }

    /// `Offset`.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// `Limit`.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The request body.
    pub fn params(&self) -> Value {
        let mut params = json!({
            "MachineType": self.machine_type.as_str(),
            "MachineRegion": self.region,
            "Limit": self.limit,
            "Offset": self.offset,
        });
        if !self.filters.is_empty() {
            params["Filters"] = self.filters.iter().map(Filter::params).collect();
        }
        params
    }
}

/// One machine, checked (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    /// `Quuid`: the key of its port listing.
    pub quuid: Quuid,
    /// `Uuid`: the agent; `None` when the API gave none.
    pub uuid: Option<AgentUuid>,
    /// `AgentStatus`, as sent.
    pub agent_status: Box<str>,
    /// `MachineStatus`, when a status word.
    pub machine_status: Option<Box<str>>,
    /// `MachineName`, when a printable label of at most [`MAX_NAME_CHARS`] characters.
    pub name: Option<Box<str>>,
    /// `MachineIp`, when an IP address.
    pub machine_ip: Option<IpAddr>,
    /// `MachineWanIp`, when an IP address.
    pub wan_ip: Option<IpAddr>,
    /// `InstanceId`, when a printable id.
    pub instance_id: Option<Box<str>>,
    /// Tags, region, WAN flag: for the policy's host selection.
    pub facts: Facts,
}

/// One page, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinesPage {
    /// `TotalCount`: machines over all pages.
    pub total: u64,
    /// `Machines`, in answer order.
    pub machines: Vec<Machine>,
    /// `RequestId`.
    pub request_id: String,
}

/// Reads one page of `query` from a successful answer.
pub fn parse_page(answer: &Answer, query: &MachinesQuery) -> Result<MachinesPage, ApiError> {
    read_page(&answer.fields, query)
        .map(|(total, machines)| MachinesPage {
            total,
            machines,
            request_id: answer.request_id.clone(),
        })
        .map_err(|bad| bad.into_api(&answer.request_id))
}

/// The checks of [`parse_page`], on the `Response` object: `TotalCount` and the machines.
pub fn read_page(
    fields: &Map<String, Value>,
    query: &MachinesQuery,
) -> Result<(u64, Vec<Machine>), BadAnswer> {
    let total = answer::req_count(fields, "TotalCount")?;
    let list = answer::rows(fields, "Machines", query.limit, query.offset, total)?;
    let mut machines = Vec::with_capacity(list.len());
    let mut seen: HashMap<&str, usize> = HashMap::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let row = answer::row("Machines", i, value)?;
        let machine = read_row(row, i)?;
        // Keyed by the row's own text (checked by `read_row`), not the machine's copy.
        let quuid = row.get("Quuid").and_then(Value::as_str).unwrap_or_default();
        if let Some(first) = seen.insert(quuid, i) {
            return Err(BadAnswer::field(
                format!("Machines[{i}].Quuid"),
                Problem::Repeated { first },
            ));
        }
        machines.push(machine);
    }
    Ok((total, machines))
}

fn is_status_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// A status word: 1 to [`MAX_STATUS_BYTES`] of `A-Z a-z 0-9 _ . -`.
fn status_word(text: &str) -> Result<&str, Problem> {
    if text.is_empty() {
        return Err(Problem::Empty);
    }
    if text.len() > MAX_STATUS_BYTES {
        return Err(Problem::TooLong {
            len: text.len(),
            max: MAX_STATUS_BYTES,
        });
    }
    match text.bytes().position(|b| !is_status_byte(b)) {
        Some(at) => Err(Problem::BadCharacter { at }),
        None => Ok(text),
    }
}

fn read_row(row: &Map<String, Value>, i: usize) -> Result<Machine, BadAnswer> {
    let path = |name: &'static str| move || format!("Machines[{i}].{name}");
    let quuid = answer::req_str(row, "Quuid", path("Quuid"))?;
    let quuid = Quuid::parse(quuid).map_err(|p| BadAnswer::field(path("Quuid")(), p))?;
    let uuid = match answer::opt_str(row, "Uuid", path("Uuid"))? {
        None | Some("") => None,
        Some(text) => Some(
            AgentUuid::parse(text).map_err(|_| BadAnswer::field(path("Uuid")(), Problem::Uuid))?,
        ),
    };
    let agent_status = answer::req_str(row, "AgentStatus", path("AgentStatus"))?;
    let agent_status =
        status_word(agent_status).map_err(|p| BadAnswer::field(path("AgentStatus")(), p))?;
    // Labels: a bad one is dropped.
    let label = |name: &str| row.get(name).and_then(Value::as_str);
    let machine_status = label("MachineStatus")
        .filter(|s| status_word(s).is_ok())
        .map(Into::into);
    let name = label("MachineName")
        .filter(|n| !n.trim().is_empty())
        .filter(|n| crate::problems::text_problem("MachineName", n, MAX_NAME_CHARS).is_none())
        .map(Into::into);
    let ip = |name: &str| label(name).and_then(|ip| ip.parse::<IpAddr>().ok());
    let instance_id = label("InstanceId")
        .filter(|id| !id.is_empty())
        .filter(|id| status_word(id).is_ok() && id.len() <= MAX_INSTANCE_ID_BYTES)
        .map(Into::into);
    Ok(Machine {
        quuid,
        uuid,
        agent_status: agent_status.into(),
        machine_status,
        name,
        machine_ip: ip("MachineIp"),
        wan_ip: ip("MachineWanIp"),
        instance_id,
        facts: object_facts(row),
    })
}

impl CwpClient {
    /// `DescribeMachines`: one page.
    pub async fn describe_machines(&self, query: &MachinesQuery) -> Result<MachinesPage, ApiError> {
        let answer = self
            .client()
            .call(DESCRIBE_MACHINES, &query.params())
            .await?;
        parse_page(&answer, query)
    }
}
