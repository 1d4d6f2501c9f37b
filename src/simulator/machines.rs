//! `DescribeMachines`: the machines of the scenario, for agent discovery. Every `[[agent]]` is a
//! machine with its Uuid (`MachineStatus` `ONLINE`, or `OFFLINE` with `online = false`); every
//! `[[machine]]` is one whose agent has been offline so long that the API answers an empty
//! `Uuid` (status `OFFLINE`). All are `BASIC_VERSION`.
//!
//! Parameters: `MachineType` (`CVM` | `BM`) and `MachineRegion` are required
//! (`MissingParameter`; another type is `InvalidParameterValue`); `Limit` 0..=100 (default 10)
//! and `Offset` ≥ 0 as `DescribeOpenPorts`; `Filters` `Keywords` (a substring of the name or
//! address, case-insensitive), `Status` (`ONLINE` | `OFFLINE` | `UNINSTALLED`) and `Version`
//! (`PRO_VERSION` | `BASIC_VERSION`), one value each (`InvalidParameter.InvalidFormat`
//! otherwise).
//!
//! Test hooks ([`MachineHooks`], from `RunningSimulator::machine_hooks`): hide an agent's
//! machine (it is not listed until shown again: discovery sees it go and come back), make it
//! flap (listed by every other listing, as an API answering `[A, B]` then `[B]`), and make
//! every `DescribeMachines` answer `InternalError` (a failing discovery).

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use serde_json::{Map, Value, json};

use super::actions::{MAX_LIMIT, int_param, params};
use super::scenario::Placement;
use super::server::Shared;
use super::wire::Answer;

/// The action.
pub const DESCRIBE_MACHINES_ACTION: &str = "DescribeMachines";
const DEFAULT_LIMIT: i64 = 10;
const MAX_FILTERS: usize = 5;

/// Run-time changes to what `DescribeMachines` answers, for tests.
#[derive(Debug, Default)]
pub struct MachineHooks {
    hidden: Mutex<HashSet<String>>,
    flapping: Mutex<HashSet<String>>,
    /// Listings begun (requests at `Offset` 0, any type and region).
    listings: AtomicU64,
    failing: AtomicBool,
}

impl MachineHooks {
    /// Stops listing the machine of agent `uuid` (as if it were deleted).
    pub fn hide(&self, uuid: &str) {
        super::server::lock(&self.flapping).remove(uuid);
        super::server::lock(&self.hidden).insert(uuid.to_owned());
    }

    /// Lists the machine of agent `uuid` again.
    pub fn show(&self, uuid: &str) {
        super::server::lock(&self.flapping).remove(uuid);
        super::server::lock(&self.hidden).remove(uuid);
    }

    /// Makes the machine of agent `uuid` flap: listed by the first listing after this call
    /// (a request at `Offset` 0) and every other one after it, missing from the others; the
    /// pages of one listing agree. [`MachineHooks::show`] or [`MachineHooks::hide`] ends it.
    pub fn flap(&self, uuid: &str) {
        let mut flapping = super::server::lock(&self.flapping);
        if flapping.is_empty() {
            // The next listing is an even one: the machine is in it.
            self.listings.store(0, Ordering::Relaxed);
        }
        flapping.insert(uuid.to_owned());
    }

    /// Machines hidden from a request at `offset`: the hidden ones, and the flapping ones
    /// in every other listing.
    fn hidden_now(&self, offset: i64) -> HashSet<String> {
        let mut hidden = super::server::lock(&self.hidden).clone();
        let listing = if offset == 0 {
            self.listings.fetch_add(1, Ordering::Relaxed)
        } else {
            self.listings.load(Ordering::Relaxed).saturating_sub(1)
        };
        if listing % 2 == 1 {
            hidden.extend(super::server::lock(&self.flapping).iter().cloned());
        }
        hidden
    }

    /// `true`: every `DescribeMachines` answers `InternalError` until set back to `false`.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Relaxed);
    }
}

/// One machine as listed, before paging.
struct Listed<'a> {
    name: String,
    ip: String,
    /// `MachineWanIp` ("" when none) and the `Tag` names.
    wan_ip: &'a str,
    tags: &'a [String],
    uuid: &'a str,
    online: bool,
    placement: &'a Placement,
    /// Position among all machines, for a stable `Quuid`.
    position: usize,
}

/// What the filters ask for.
#[derive(Default)]
struct Wanted {
    keywords: Option<String>,
    status: Option<String>,
    version: Option<String>,
}

fn filters(params: &super::actions::Params) -> Result<Wanted, Answer> {
    let bad = |why: String| {
        Answer::error(
            "InvalidParameter.InvalidFormat",
            format!("The parameter `Filters` is invalid: {why}."),
        )
    };
    let mut wanted = Wanted::default();
    let Some(list) = params.get("Filters") else {
        return Ok(wanted);
    };
    let Some(list) = list.as_array().filter(|l| l.len() <= MAX_FILTERS) else {
        return Err(bad(
            "it must be a list of at most 5 {Name, Values}".to_owned()
        ));
    };
    for f in list {
        let name = f.get("Name").and_then(Value::as_str).unwrap_or("");
        let value = match f.get("Values").and_then(Value::as_array).map(Vec::as_slice) {
            Some([Value::String(v)]) => v.clone(),
            _ => {
                return Err(bad(format!(
                    "filter `{name}` takes exactly one string value"
                )));
            }
        };
        let allowed: &[&str] = match name {
            "Keywords" => &[],
            "Status" => &["ONLINE", "OFFLINE", "UNINSTALLED"],
            "Version" => &["PRO_VERSION", "BASIC_VERSION"],
            _ => return Err(bad(format!("unknown filter `{name}`"))),
        };
        if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
            return Err(Answer::error(
                "InvalidParameterValue",
                format!("Filter `{name}` takes one of {}.", allowed.join(", ")),
            ));
        }
        let slot = match name {
            "Keywords" => &mut wanted.keywords,
            "Status" => &mut wanted.status,
            _ => &mut wanted.version,
        };
        *slot = Some(value);
    }
    Ok(wanted)
}

impl Shared {
    /// `DescribeMachines`: one page of the scenario's machines of a type and region.
    pub(super) fn describe_machines(&self, body: &[u8]) -> Answer {
        match self.try_describe_machines(body) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_describe_machines(&self, body: &[u8]) -> Result<Answer, Answer> {
        let params = params(
            body,
            &["MachineType", "MachineRegion", "Limit", "Offset", "Filters"],
        )?;
        if self.machine_hooks.failing.load(Ordering::Relaxed) {
            return Err(Answer::error(
                "InternalError",
                "An internal error occurred (injected by a test).",
            ));
        }
        let required = |name: &str| match params.get(name) {
            None => Err(Answer::error(
                "MissingParameter",
                format!("The request is missing a required parameter `{name}`."),
            )),
            Some(Value::String(s)) => Ok(s.as_str()),
            Some(_) => Err(Answer::error(
                "InvalidParameterValue",
                format!("The value of parameter `{name}` must be a string."),
            )),
        };
        let machine_type = required("MachineType")?;
        let region = required("MachineRegion")?;
        if !matches!(machine_type, "CVM" | "BM") {
            return Err(Answer::error(
                "InvalidParameterValue",
                "MachineType is CVM or BM.",
            ));
        }
        let limit = int_param(&params, "Limit", 0..=MAX_LIMIT)?.unwrap_or(DEFAULT_LIMIT);
        let offset = int_param(&params, "Offset", 0..=i64::MAX)?.unwrap_or(0);
        let wanted = filters(&params)?;
        let hidden = self.machine_hooks.hidden_now(offset);

        let agents = self
            .scenario
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !hidden.contains(&a.uuid))
            .map(|(i, a)| Listed {
                name: a
                    .machine_name
                    .clone()
                    .unwrap_or_else(|| format!("sim-{}", &a.uuid[..8.min(a.uuid.len())])),
                ip: self.machine_ip(i),
                wan_ip: a.machine_wan_ip.as_deref().unwrap_or(""),
                tags: &a.tags,
                uuid: &a.uuid,
                online: a.online,
                placement: &a.placement,
                position: i,
            });
        let others = self
            .scenario
            .machines
            .iter()
            .enumerate()
            .map(|(i, m)| Listed {
                name: m.machine_name.clone(),
                ip: m.machine_ip.clone(),
                wan_ip: "",
                tags: &[],
                uuid: "",
                online: false,
                placement: &m.placement,
                position: self.scenario.agents.len() + i,
            });
        let keywords = wanted.keywords.as_deref().map(str::to_lowercase);
        let version_ok = wanted
            .version
            .as_deref()
            .is_none_or(|v| v == "BASIC_VERSION");
        let matching: Vec<Listed<'_>> = agents
            .chain(others)
            .filter(|m| m.placement.machine_type == machine_type && m.placement.region == region)
            .filter(|m| match wanted.status.as_deref() {
                None => true,
                Some("ONLINE") => m.online,
                Some("OFFLINE") => !m.online,
                Some(_) => false, // UNINSTALLED: no such machine in a scenario
            })
            // Every simulated machine runs the basic version.
            .filter(|_| version_ok)
            .filter(|m| {
                keywords.as_deref().is_none_or(|k| {
                    m.name.to_lowercase().contains(k) || m.ip.to_lowercase().contains(k)
                })
            })
            .collect();
        let total = matching.len();
        let page: Vec<Value> = matching
            .iter()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
            .take(usize::try_from(limit).unwrap_or(0))
            .map(|m| Value::Object(machine_row(m)))
            .collect();
        let mut fields = Map::new();
        fields.insert("TotalCount".to_owned(), json!(total));
        fields.insert("Machines".to_owned(), Value::Array(page));
        Ok(Answer::Fields(fields))
    }
}

/// A `Machine` as the API shapes it (fields the simulator has no notion of are zero/empty).
fn machine_row(m: &Listed<'_>) -> Map<String, Value> {
    let n = m.position as u64 + 1;
    let quuid = format!("{:08x}-0000-4000-a000-{n:012x}", n >> 16);
    let region_code = m
        .placement
        .region
        .rsplit('-')
        .next()
        .unwrap_or_default()
        .to_owned();
    let value = json!({
        "MachineName": m.name,
        "MachineOs": "linux",
        "MachineStatus": if m.online { "ONLINE" } else { "OFFLINE" },
        "Uuid": m.uuid,
        "Quuid": quuid,
        "VulNum": 0,
        "MachineIp": m.ip,
        "IsProVersion": false,
        "MachineWanIp": m.wan_ip,
        "PayMode": "POSTPAY",
        "MalwareNum": 0,
        // The API's `Tag` entries: `Rid` and `TagId` numbered by position (the simulator has
        // no tag objects of its own).
        "Tag": m.tags.iter().enumerate().map(|(i, name)| json!({
            "Rid": i + 1, "Name": name, "TagId": i + 1,
        })).collect::<Vec<_>>(),
        "BaselineNum": 0,
        "CyberAttackNum": 0,
        "SecurityStatus": "SAFE",
        "InvasionNum": 0,
        "RegionInfo": {
            "Region": m.placement.region,
            "RegionName": m.placement.region,
            "RegionId": 1,
            "RegionCode": region_code,
        },
    });
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
