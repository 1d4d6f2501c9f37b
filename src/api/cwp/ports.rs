//! `DescribeAssetPortInfoList`: one page of one machine's listening ports, every row checked
//! before it can become a port event.
//!
//! Request: `{Quuid, Limit (1..=100), Offset}` ([`PortsQuery`]). Answer: `Total` and
//! `Ports[]` (`AssetPortBaseInfo`, tencentcloud-sdk-python `cwp/v20180228/models.py`), whose
//! `Port` and `Pid` are **strings**.
//!
//! A row ([`AssetPort`]) keeps the port's identity — (`Proto`, `BindIp`, `Port`,
//! `ProcessName`), [`AssetPort::key`] — and what is reported about it: `Pid`, `User`,
//! `ProcessPath`, `FirstTime`. What a field may be is in [`super::fields`]; the rules here:
//! - identity fields must be present (`ProcessName` and `Proto` may be empty strings: a port
//!   whose process or protocol CWP did not learn), and valid;
//! - reported fields may be absent, `null` or empty (unknown), but never invalid;
//! - `Quuid` must be there and name the machine asked for;
//! - the page holds at most `Limit` rows and none past the `Total` it states;
//! - no row comes twice in one page (every field equal): a second row with the same identity
//!   and another `Pid` is kept (a listener per worker with `SO_REUSEPORT`, as nginx runs), and
//!   folds into one port in the snapshot ([`super::listing::port_set`]).
//!
//! Row labels (`MachineIp`, `MachineName`) only label events: the first valid ones are kept,
//! a bad one is dropped, never an error.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::answer::{self, BadAnswer};
use super::fields::{
    BindIp, FirstSeen, MAX_PATH_BYTES, MAX_USER_BYTES, Problem, Proto, Quuid, checked_text,
    parse_pid, parse_port,
};
use super::{CwpClient, MAX_LIMIT, RequestError};
use crate::api::error::ApiError;
use crate::api::response::Answer;
use crate::inventory::{MAX_MACHINE_BYTES, MAX_PROCESS_BYTES};

/// The action.
pub const DESCRIBE_ASSET_PORT_INFO_LIST: &str = "DescribeAssetPortInfoList";

/// One page asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsQuery {
    quuid: Quuid,
    offset: u64,
    limit: u64,
}

impl PortsQuery {
    /// The page of `limit` (1..=[`MAX_LIMIT`]) rows at `offset` of `quuid`'s ports.
    pub fn new(quuid: Quuid, offset: u64, limit: u64) -> Result<PortsQuery, RequestError> {
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(RequestError::Limit { limit });
        }
        Ok(PortsQuery {
            quuid,
            offset,
            limit,
        })
    }

    /// The machine.
    pub fn quuid(&self) -> &Quuid {
        &self.quuid
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
        json!({ "Quuid": self.quuid.as_str(), "Limit": self.limit, "Offset": self.offset })
    }
}

/// One listening port as the API listed it and the checks let through. Ordered by identity
/// first, so a sorted list groups one port's rows.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct AssetPort {
    /// `Proto`, lower case; empty when unknown. Identity.
    pub proto: Proto,
    /// `BindIp`. Identity.
    pub bind_ip: BindIp,
    /// `Port`, 1..=65535. Identity.
    pub port: u16,
    /// `ProcessName`, at most [`MAX_PROCESS_BYTES`], no control character; may be empty.
    /// Identity.
    pub process: Box<str>,
    /// `Pid`; `None` when unknown. A new one alone is no event.
    pub pid: Option<u32>,
    /// `User` the process runs as; empty when unknown.
    pub user: Box<str>,
    /// `ProcessPath`; empty when unknown.
    pub process_path: Box<str>,
    /// `FirstTime`: when CWP first saw the port.
    pub first_seen: Option<FirstSeen>,
}

/// A port's identity, borrowed: (`Proto`, `BindIp`, `Port`, `ProcessName`).
pub type PortKeyRef<'a> = (&'a str, BindIp, u16, &'a str);

impl AssetPort {
    /// The identity diffs compare.
    pub fn key(&self) -> PortKeyRef<'_> {
        (self.proto.as_str(), self.bind_ip, self.port, &self.process)
    }

    /// The identity, owned (kept for a close awaiting confirmation).
    pub fn owned_key(&self) -> AssetPortKey {
        AssetPortKey {
            proto: self.proto.clone(),
            bind_ip: self.bind_ip,
            port: self.port,
            process: self.process.clone(),
        }
    }
}

/// A port's identity, owned.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(deny_unknown_fields)]
pub struct AssetPortKey {
    /// `Proto`.
    pub proto: Proto,
    /// `BindIp`.
    pub bind_ip: BindIp,
    /// `Port`.
    pub port: u16,
    /// `ProcessName`.
    pub process: Box<str>,
}

impl AssetPortKey {
    /// As [`AssetPort::key`] borrows it.
    pub fn key(&self) -> PortKeyRef<'_> {
        (self.proto.as_str(), self.bind_ip, self.port, &self.process)
    }
}

/// One page, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortsPage {
    /// `Total`: rows over all pages.
    pub total: u64,
    /// `Ports`, in answer order.
    pub rows: Vec<AssetPort>,
    /// `MachineIp` of the rows (the first valid one); empty when none.
    pub machine_ip: String,
    /// `MachineName` of the rows (the first valid one); empty when none.
    pub machine_name: String,
    /// `RequestId`.
    pub request_id: String,
}

/// Reads one page of `query` from a successful answer.
pub fn parse_page(answer: &Answer, query: &PortsQuery) -> Result<PortsPage, ApiError> {
    read_page(&answer.fields, query)
        .map(|(total, rows, machine_ip, machine_name)| PortsPage {
            total,
            rows,
            machine_ip,
            machine_name,
            request_id: answer.request_id.clone(),
        })
        .map_err(|bad| bad.into_api(&answer.request_id))
}

/// `Total`, the rows, `MachineIp`, `MachineName`.
type Read = (u64, Vec<AssetPort>, String, String);

/// The checks of [`parse_page`], on the `Response` object.
pub fn read_page(fields: &Map<String, Value>, query: &PortsQuery) -> Result<Read, BadAnswer> {
    let total = answer::req_count(fields, "Total")?;
    let list = answer::rows(fields, "Ports", query.limit, query.offset, total)?;
    let mut rows = Vec::with_capacity(list.len());
    let (mut machine_ip, mut machine_name) = (String::new(), String::new());
    // Row → its first index: an exact repeat is a hostile answer.
    let mut seen: HashMap<AssetPort, usize> = HashMap::with_capacity(list.len());
    for (i, value) in list.iter().enumerate() {
        let row = answer::row("Ports", i, value)?;
        let port = read_row(row, i, &query.quuid)?;
        for (name, slot) in [
            ("MachineIp", &mut machine_ip),
            ("MachineName", &mut machine_name),
        ] {
            if slot.is_empty()
                && let Some(Value::String(label)) = row.get(name)
                && !label.trim().is_empty()
                && checked_text(label, MAX_MACHINE_BYTES).is_ok()
            {
                label.clone_into(slot);
            }
        }
        if let Some(first) = seen.get(&port) {
            return Err(BadAnswer::field(
                format!("Ports[{i}]"),
                Problem::Repeated { first: *first },
            ));
        }
        seen.insert(port.clone(), i);
        rows.push(port);
    }
    Ok((total, rows, machine_ip, machine_name))
}

/// Row `i`, checked (see the module docs).
fn read_row(row: &Map<String, Value>, i: usize, quuid: &Quuid) -> Result<AssetPort, BadAnswer> {
    let path = |name: &'static str| at(i, name);
    let bad = |name: &'static str, problem: Problem| BadAnswer::field(at(i, name)(), problem);

    let row_quuid = answer::req_str(row, "Quuid", path("Quuid"))?;
    let row_quuid = Quuid::parse(row_quuid).map_err(|p| bad("Quuid", p))?;
    if !quuid.is(row_quuid.as_str()) {
        return Err(bad("Quuid", Problem::OtherMachine));
    }
    let port = answer::req_str(row, "Port", path("Port"))?;
    let port = parse_port(port).map_err(|p| bad("Port", p.into()))?;
    let proto = answer::req_str(row, "Proto", path("Proto"))?;
    let proto = Proto::parse(proto).map_err(|p| bad("Proto", p))?;
    let bind_ip = answer::req_str(row, "BindIp", path("BindIp"))?;
    let bind_ip = BindIp::parse(bind_ip).map_err(|p| bad("BindIp", p))?;
    let process = answer::req_str(row, "ProcessName", path("ProcessName"))?;
    let process = checked_text(process, MAX_PROCESS_BYTES).map_err(|p| bad("ProcessName", p))?;

    let pid = match answer::opt_str(row, "Pid", path("Pid"))? {
        Some(pid) => parse_pid(pid).map_err(|p| bad("Pid", p))?,
        None => None,
    };
    let optional_text = |name: &'static str, max: usize| -> Result<Box<str>, BadAnswer> {
        match answer::opt_str(row, name, path(name))? {
            Some(text) => checked_text(text, max)
                .map(Into::into)
                .map_err(|p| bad(name, p)),
            None => Ok("".into()),
        }
    };
    let user = optional_text("User", MAX_USER_BYTES)?;
    let process_path = optional_text("ProcessPath", MAX_PATH_BYTES)?;
    let first_seen = match answer::opt_str(row, "FirstTime", path("FirstTime"))? {
        Some(text) => FirstSeen::parse(text).map_err(|p| bad("FirstTime", p))?,
        None => None,
    };
    Ok(AssetPort {
        proto,
        bind_ip,
        port,
        process: process.into(),
        pid,
        user,
        process_path,
        first_seen,
    })
}

/// The path of field `name` of row `i`, made only when an error needs it.
fn at(i: usize, name: &'static str) -> impl Fn() -> String {
    move || format!("Ports[{i}].{name}")
}

impl CwpClient {
    /// `DescribeAssetPortInfoList`: one page of one machine's ports, every row checked.
    pub async fn describe_asset_port_info_list(
        &self,
        query: &PortsQuery,
    ) -> Result<PortsPage, ApiError> {
        let answer = self
            .client()
            .call(DESCRIBE_ASSET_PORT_INFO_LIST, &query.params())
            .await?;
        parse_page(&answer, query)
    }
}

impl crate::inventory::Port {
    /// A `cwp` row as a stored port (a pid the API did not give is 0).
    pub fn from_asset(row: AssetPort) -> crate::inventory::Port {
        crate::inventory::Port {
            port: row.port,
            process: row.process,
            pid: row.pid.unwrap_or(0),
            cwp: Some(Box::new(crate::inventory::PortFacts {
                proto: row.proto,
                bind_ip: row.bind_ip,
                user: row.user,
                process_path: row.process_path,
                first_seen: row.first_seen,
            })),
        }
    }
}
