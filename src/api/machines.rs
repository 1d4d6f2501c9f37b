//! `DescribeMachines`: one page of the account's machines, parsed and bounded. Paging,
//! completeness and what the rows mean for the watchlist belong to [`crate::discovery`].
//!
//! Request shape (see the API reference): `MachineType` (`CVM` | `BM`) and `MachineRegion`
//! required, `Limit` 0..=100, `Offset`, and `Filters` as `[{Name, Values: [one value]}]` with
//! `Status` and `Keywords`. Answer: `TotalCount` and `Machines[]`, each with `Uuid` (empty for
//! a machine whose agent has been offline for long) and `MachineName`.

use serde_json::{Value, json};

use super::client::Client;
use super::error::ApiError;
use super::response::Answer;
use crate::agent_uuid::AgentUuid;
use crate::problems::text_problem;
use crate::watchlist::MAX_NAME_CHARS;

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
        rows.push(MachineRow { uuid, name, quuid });
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
