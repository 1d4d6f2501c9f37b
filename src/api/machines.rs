//! `DescribeMachines`: one page of the account's machines, parsed and bounded. Paging,
//! completeness and what the rows mean for the watchlist belong to [`crate::discovery`].
//!
//! Request shape (see the API reference): `MachineType` (`CVM` | `BM`) and `MachineRegion`
//! required, `Limit` 0..=100, `Offset`, and `Filters` as `[{Name, Values: [one value]}]` with
//! `Status` and `Keywords`. Answer: `TotalCount` and `Machines[]`, each with `Uuid` (empty for
//! a machine whose agent has been offline for long) and `MachineName`.
//!
//! Host facts for the expected-ports policy come from the same rows: `Tag[]` (each `{Rid,
//! Name, TagId}`: the `Name` is the tag), `MachineWanIp` (a WAN IP: non-empty) and
//! `RegionInfo.Region`. They only select hosts, so a bad one is dropped, never an error that
//! would fail the whole listing, and they are bounded ([`machine_tags`]): at most
//! [`MAX_TAGS`] tags of at most [`MAX_TAG_CHARS`] characters and [`MAX_MACHINE_TAG_BYTES`]
//! bytes in all, the first usable ones in the answer's order; a region of at most
//! [`MAX_REGION_CHARS`] lower-case letters, digits and `-`. Only the first `4 ×` [`MAX_TAGS`]
//! entries of a `Tag` list are looked at.

use serde_json::{Value, json};

use super::client::Client;
use super::error::ApiError;
use super::response::Answer;
use crate::agent_uuid::AgentUuid;
use crate::problems::text_problem;
use crate::watchlist::{Facts, MAX_NAME_CHARS, MAX_TAG_CHARS, MAX_TAGS};

/// The action.
pub const DESCRIBE_MACHINES: &str = "DescribeMachines";
/// The API's largest `Limit`.
pub const MAX_PAGE: u64 = 100;

/// What one page asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinesQuery {
    /// `MachineType`: `CVM` or `BM`.
    pub machine_type: &'static str,
    /// `MachineRegion`.
    pub region: String,
    /// `Filters` `Status` value, when filtering.
    pub status: Option<&'static str>,
    /// `Filters` `Keywords` value, when filtering.
    pub keywords: Option<String>,
    /// `Offset`.
    pub offset: u64,
    /// `Limit`, at most [`MAX_PAGE`].
    pub limit: u64,
}

impl MachinesQuery {
    /// The request parameters.
    pub fn params(&self) -> Value {
        let mut filters = Vec::new();
        if let Some(status) = self.status {
            filters.push(json!({ "Name": "Status", "Values": [status] }));
        }
        if let Some(keywords) = &self.keywords {
            filters.push(json!({ "Name": "Keywords", "Values": [keywords] }));
        }
        let mut params = json!({
            "MachineType": self.machine_type,
            "MachineRegion": self.region,
            "Limit": self.limit.min(MAX_PAGE),
            "Offset": self.offset,
        });
        if !filters.is_empty() {
            params["Filters"] = Value::Array(filters);
        }
        params
    }
}

/// One machine row as far as discovery cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineRow {
    /// The agent's Uuid, validated; `None` when the API gave an empty one.
    pub uuid: Option<AgentUuid>,
    /// `MachineName`, when it is a printable label of at most [`MAX_NAME_CHARS`]
    /// characters (another one is dropped, not an error: the name only labels events).
    pub name: Option<String>,
    /// `Quuid`, the machine's own id, when it is a printable id of at most
    /// [`MAX_QUUID_CHARS`] characters: tells rows without a `Uuid` apart while paging.
    pub quuid: Option<String>,
    /// Its tags, region and WAN flag (see the module: bounded, bad ones dropped).
    pub facts: Facts,
}

/// The most bytes of tag text kept for one machine (UTF-8, all tags together): what one
/// machine adds to the discovery file stays small (see [`crate::discovery::remembered`]).
pub const MAX_MACHINE_TAG_BYTES: usize = 256;
/// The longest region kept (`ap-guangzhou` is 12).
pub const MAX_REGION_CHARS: usize = 32;

/// Whether `name` may be a discovered tag: not blank, at most [`MAX_TAG_CHARS`] characters,
/// no control, separator or bidirectional character (as a watchlist tag).
pub fn usable_tag(name: &str) -> bool {
    !name.trim().is_empty() && text_problem("Tag", name, MAX_TAG_CHARS).is_none()
}

/// Whether `region` looks like a region id: 1 to [`MAX_REGION_CHARS`] of `a-z`, `0-9`, `-`.
pub fn usable_region(region: &str) -> bool {
    (1..=MAX_REGION_CHARS).contains(&region.len())
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The tags kept of a machine's tag names, in order: the usable ones ([`usable_tag`]), each
/// once, the first [`MAX_TAGS`] of them while their bytes stay within
/// [`MAX_MACHINE_TAG_BYTES`]; every later one is dropped (so what is kept never depends on
/// what follows it).
pub fn machine_tags<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let mut kept: Vec<&str> = Vec::new();
    let mut bytes = 0usize;
    for name in names {
        if kept.len() == MAX_TAGS {
            break;
        }
        if !usable_tag(name) || kept.contains(&name) {
            continue;
        }
        if bytes + name.len() > MAX_MACHINE_TAG_BYTES {
            break;
        }
        bytes += name.len();
        kept.push(name);
    }
    kept
}

/// A row's facts: `Tag[].Name`, `MachineWanIp`, `RegionInfo.Region`, each bounded; anything
/// malformed counts as absent. Shared with the `cwp` backend's rows ([`super::cwp::machines`]).
pub(crate) fn row_facts(machine: &Value) -> Facts {
    match machine {
        Value::Object(object) => object_facts(object),
        _ => Facts::default(),
    }
}

/// [`row_facts`] of a row already known to be an object.
pub(crate) fn object_facts(machine: &serde_json::Map<String, Value>) -> Facts {
    // At most this many entries are looked at: a Tag list of a million entries costs no more
    // than one of a hundred.
    const LOOKED_AT: usize = 4 * MAX_TAGS;
    let names = match machine.get("Tag") {
        Some(Value::Array(tags)) => tags
            .iter()
            .take(LOOKED_AT)
            .filter_map(|t| t.get("Name")?.as_str())
            .collect(),
        _ => Vec::new(),
    };
    let tags = machine_tags(names);
    let wan = machine
        .get("MachineWanIp")
        .and_then(Value::as_str)
        .is_some_and(|ip| !ip.trim().is_empty());
    let region = machine
        .get("RegionInfo")
        .and_then(|r| r.get("Region"))
        .and_then(Value::as_str)
        .filter(|r| usable_region(r))
        .map(Into::into);
    Facts::new(tags, region, wan)
}

/// The longest `Quuid` kept (a Uuid is 36 characters).
pub const MAX_QUUID_CHARS: usize = 64;

/// One page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachinesPage {
    /// `TotalCount`: every machine matching the query, over all pages.
    pub total: u64,
    /// This page's rows.
    pub rows: Vec<MachineRow>,
}

/// Reads a `DescribeMachines` answer; `limit` is what was asked (a longer page is refused).
pub fn parse_page(answer: &Answer, limit: u64) -> Result<MachinesPage, ApiError> {
    let decode = |reason: String| ApiError::Decode {
        reason,
        request_id: Some(answer.request_id.clone()),
    };
    let total = answer
        .fields
        .get("TotalCount")
        .and_then(Value::as_u64)
        .ok_or_else(|| decode("Response.TotalCount is not a whole number >= 0".to_owned()))?;
    let machines = match answer.fields.get("Machines") {
        Some(Value::Array(list)) => list.as_slice(),
        // An empty result may come without the list.
        None | Some(Value::Null) => &[],
        Some(_) => return Err(decode("Response.Machines is not a list".to_owned())),
    };
    if machines.len() as u64 > limit.min(MAX_PAGE) {
        return Err(decode(format!(
            "Response.Machines has {} rows for Limit {limit}",
            machines.len()
        )));
    }
    let mut rows = Vec::with_capacity(machines.len());
    for (i, machine) in machines.iter().enumerate() {
        let uuid = match machine.get("Uuid") {
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(AgentUuid::parse(s).map_err(|_| {
                decode(format!(
                    "Response.Machines[{i}].Uuid is not an agent Uuid ({} characters)",
                    s.chars().count()
                ))
            })?),
            // Absent or null: the machine has no agent Uuid, as an empty string.
            None | Some(Value::Null) => None,
            Some(_) => {
                return Err(decode(format!(
                    "Response.Machines[{i}].Uuid is not a string"
                )));
            }
        };
        let name = machine
            .get("MachineName")
            .and_then(Value::as_str)
            .filter(|n| !n.trim().is_empty())
            .filter(|n| text_problem("MachineName", n, MAX_NAME_CHARS).is_none())
            .map(str::to_owned);
        let quuid = machine
            .get("Quuid")
            .and_then(Value::as_str)
            .filter(|q| !q.is_empty())
            .filter(|q| text_problem("Quuid", q, MAX_QUUID_CHARS).is_none())
            .map(str::to_owned);
        let facts = row_facts(machine);
        rows.push(MachineRow {
            uuid,
            name,
            quuid,
            facts,
        });
    }
    Ok(MachinesPage { total, rows })
}

impl Client {
    /// `DescribeMachines`: one page.
    pub async fn describe_machines(&self, query: &MachinesQuery) -> Result<MachinesPage, ApiError> {
        let answer = self.call(DESCRIBE_MACHINES, &query.params()).await?;
        parse_page(&answer, query.limit)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn answer(fields: Value) -> Answer {
        let Value::Object(fields) = fields else {
            panic!("an object")
        };
        Answer {
            request_id: "r".into(),
            fields: fields.into_iter().collect::<Map<_, _>>(),
        }
    }

    #[test]
    fn the_request_has_the_api_shape() {
        let query = MachinesQuery {
            machine_type: "BM",
            region: "ap-beijing".into(),
            status: Some("ONLINE"),
            keywords: Some("web".into()),
            offset: 200,
            limit: 100,
        };
        assert_eq!(
            query.params(),
            json!({"MachineType": "BM", "MachineRegion": "ap-beijing", "Limit": 100,
                   "Offset": 200, "Filters": [{"Name": "Status", "Values": ["ONLINE"]},
                   {"Name": "Keywords", "Values": ["web"]}]})
        );
        let plain = MachinesQuery {
            status: None,
            keywords: None,
            ..query
        };
        assert!(plain.params().get("Filters").is_none());
    }

    #[test]
    fn rows_are_validated_and_empty_uuids_kept_as_none() {
        let page = parse_page(
            &answer(json!({"TotalCount": 3, "Machines": [
                {"Uuid": "6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1", "MachineName": "web-01"},
                {"Uuid": "", "MachineName": "old", "Quuid": "q-1"},
                {"Uuid": "1f0e4c2a-0000-4000-a000-000000000001", "MachineName": "bad\u{1b}[2J"},
            ]})),
            100,
        )
        .unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(
            &*page.rows[0].uuid.as_ref().unwrap().text(),
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
        );
        assert_eq!(page.rows[0].name.as_deref(), Some("web-01"));
        assert_eq!(page.rows[1].uuid, None);
        assert_eq!(
            page.rows[1].quuid.as_deref(),
            Some("q-1"),
            "its other identity"
        );
        assert_eq!(page.rows[0].quuid, None, "none given");
        assert_eq!(page.rows[2].name, None, "a name with controls is dropped");
    }

    fn tags(row: &MachineRow) -> Vec<&str> {
        row.facts.tags().iter().map(|t| &**t).collect()
    }

    #[test]
    fn tags_wan_ip_and_region_are_read() {
        let page = parse_page(
            &answer(json!({"TotalCount": 3, "Machines": [
                {"Uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1", "MachineWanIp": "203.0.113.7",
                 "RegionInfo": {"Region": "ap-guangzhou", "RegionName": "广州", "RegionId": 1},
                 "Tag": [{"Rid": 1, "Name": "web", "TagId": 11},
                         {"Rid": 2, "Name": "prod", "TagId": 12},
                         {"Rid": 3, "Name": "web", "TagId": 11}]},
                {"Uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd2", "MachineWanIp": "",
                 "Tag": [], "RegionInfo": null},
                {"Uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd3"},
            ]})),
            100,
        )
        .unwrap();
        let first = &page.rows[0].facts;
        assert_eq!(tags(&page.rows[0]), ["prod", "web"], "sorted, each once");
        assert_eq!((first.region(), first.wan()), (Some("ap-guangzhou"), true));
        for row in &page.rows[1..] {
            assert!(row.facts.is_empty(), "{row:?}");
        }
    }

    /// Facts only select hosts: whatever is wrong with them is dropped, never an error that
    /// fails the listing, and what is kept is bounded.
    #[test]
    fn hostile_facts_are_dropped_or_cut_never_an_error() {
        let machine = |facts: Value| {
            let mut m = json!({"Uuid": "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1", "MachineName": "m"});
            if let (Value::Object(m), Value::Object(f)) = (&mut m, facts) {
                m.extend(f);
            }
            let page = parse_page(&answer(json!({"TotalCount": 1, "Machines": [m]})), 100)
                .expect("facts never fail a page");
            page.rows.into_iter().next().unwrap()
        };
        // A huge Tag list: the first 16 usable names are kept, the rest never looked at.
        let huge: Vec<Value> = (0..50_000)
            .map(|i| json!({"Rid": i, "Name": format!("t{i:02}"), "TagId": i}))
            .collect();
        let row = machine(json!({"Tag": huge}));
        let want: Vec<String> = (0..MAX_TAGS).map(|i| format!("t{i:02}")).collect();
        assert_eq!(tags(&row), want);
        // Bad entries are skipped: not objects, Name not a string or missing, blank, too long,
        // controls and bidi; only 64 entries are looked at.
        let row = machine(json!({"Tag": [
            "web", 7, null, {"Rid": 1}, {"Name": 5}, {"Name": ["x"]}, {"Name": ""},
            {"Name": "   "}, {"Name": "x".repeat(MAX_TAG_CHARS + 1)}, {"Name": "a\u{1b}[2J"},
            {"Name": "a\u{202e}b"}, {"Name": "ok"}, {"Name": "é".repeat(MAX_TAG_CHARS)},
        ]}));
        assert_eq!(tags(&row), ["ok", &*"é".repeat(MAX_TAG_CHARS)]);
        let mut late = vec![json!({"Name": ""}); 64];
        late.push(json!({"Name": "late"}));
        assert!(machine(json!({"Tag": late})).facts.tags().is_empty());
        // The byte budget: 64-character tags of 2-byte letters take 128 bytes, so two fit.
        let row = machine(json!({"Tag": [
            {"Name": "é".repeat(64)}, {"Name": "ü".repeat(64)}, {"Name": "z"}, {"Name": "y"},
        ]}));
        assert_eq!(row.facts.tags().len(), 2, "{row:?}");
        assert!(row.facts.tags().iter().map(|t| t.len()).sum::<usize>() <= MAX_MACHINE_TAG_BYTES);
        // Not a list, not strings, not a region id: absent.
        for facts in [
            json!({"Tag": {"Name": "web"}, "MachineWanIp": 7, "RegionInfo": "ap-guangzhou"}),
            json!({"Tag": "web", "MachineWanIp": null, "RegionInfo": {"Region": 5}}),
            json!({"Tag": null, "MachineWanIp": ["1.2.3.4"], "RegionInfo": {"Region": "AP-X"}}),
            json!({"MachineWanIp": "  ", "RegionInfo": {"Region": "a".repeat(33)}}),
            json!({"RegionInfo": {"Region": "ap-guangzhou\n"}}),
            json!({"RegionInfo": {"Region": ""}}),
        ] {
            let row = machine(facts.clone());
            assert!(row.facts.is_empty(), "{facts}: {row:?}");
            assert_eq!(row.name.as_deref(), Some("m"), "the rest of the row stays");
        }
    }

    #[test]
    fn hostile_answers_are_decode_errors() {
        for fields in [
            json!({"Machines": []}),
            json!({"TotalCount": -1, "Machines": []}),
            json!({"TotalCount": 1, "Machines": {}}),
            json!({"TotalCount": 1, "Machines": [{"Uuid": "../../etc"}]}),
            json!({"TotalCount": 1, "Machines": [{"Uuid": 7}]}),
            json!({"TotalCount": 3, "Machines": [{"Uuid": ""}, {"Uuid": ""}, {"Uuid": ""}]}),
        ] {
            let e = parse_page(&answer(fields.clone()), 2).unwrap_err();
            assert_eq!(e.code(), "ClientError.Decode", "{fields}");
            assert!(!e.to_string().contains("../"), "{e}");
        }
    }
}
