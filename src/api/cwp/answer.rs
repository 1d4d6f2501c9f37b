//! Reading the fields of a `cwp` answer: the typed [`BadAnswer`] every refusal is, and the
//! JSON accessors that turn a missing or mistyped field into one.
//!
//! A [`BadAnswer`] names the field by its path (`Response.Ports[3].BindIp`) and what is wrong
//! with it, never the value. It becomes an [`ApiError::Decode`] with the answer's `RequestId`
//! ([`BadAnswer::into_api`]): `ClientError.Decode`, classified transient, so the fetch is
//! tried again and, wrong every time, ends in `inventory_failed` — never in an event built
//! from a value nobody checked.

use serde_json::{Map, Value};

use super::fields::Problem;
use crate::api::error::ApiError;

/// Why an answer (or one page of a listing) cannot be believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    /// One field is wrong.
    #[error("Response.{field} {problem}")]
    Field {
        /// Its path below `Response`, e.g. `Ports[3].Port`.
        field: String,
        /// What is wrong with it.
        problem: Problem,
    },
    /// More rows than the `Limit` asked for.
    #[error("Response.{list} has {rows} rows for Limit {limit}")]
    TooManyRows {
        /// `Ports` or `Machines`.
        list: &'static str,
        /// Rows in the answer.
        rows: usize,
        /// The `Limit` asked for.
        limit: u64,
    },
    /// The page holds rows past the total the same answer states: the total lies.
    #[error(
        "Response.{list} has {rows} rows at Offset {offset}, past the {total} the answer \
         says there are"
    )]
    PastTotal {
        /// `Ports` or `Machines`.
        list: &'static str,
        /// The total the answer states.
        total: u64,
        /// The `Offset` asked for.
        offset: u64,
        /// Rows in the answer.
        rows: usize,
    },
}

impl BadAnswer {
    /// A problem of the field at `field`.
    pub fn field(field: impl Into<String>, problem: impl Into<Problem>) -> BadAnswer {
        BadAnswer::Field {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The client error the engine handles: `ClientError.Decode` with `request_id`.
    pub fn into_api(self, request_id: &str) -> ApiError {
        ApiError::Decode {
            reason: self.to_string(),
            request_id: Some(request_id.to_owned()),
        }
    }
}

/// The JSON type of `v`, for messages.
pub(super) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A string field; `None` when absent or `null`.
pub(super) fn opt_str<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: impl Fn() -> String,
) -> Result<Option<&'a str>, BadAnswer> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(BadAnswer::field(
            path(),
            Problem::WrongType {
                found: kind(other),
                expected: "a string",
            },
        )),
    }
}

/// A string field that must be there.
pub(super) fn req_str<'a>(
    object: &'a Map<String, Value>,
    name: &str,
    path: impl Fn() -> String,
) -> Result<&'a str, BadAnswer> {
    opt_str(object, name, &path)?.ok_or_else(|| BadAnswer::field(path(), Problem::Missing))
}

/// A whole number ≥ 0 that must be there (`Total`, `TotalCount`).
pub(super) fn req_count(object: &Map<String, Value>, name: &str) -> Result<u64, BadAnswer> {
    match object.get(name) {
        None | Some(Value::Null) => Err(BadAnswer::field(name, Problem::Missing)),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| {
            BadAnswer::field(
                name,
                Problem::WrongType {
                    found: "a number that is not a whole number ≥ 0",
                    expected: "a count",
                },
            )
        }),
        Some(other) => Err(BadAnswer::field(
            name,
            Problem::WrongType {
                found: kind(other),
                expected: "a count",
            },
        )),
    }
}

/// The list `name` (absent or `null`: empty, as some actions send an empty result), at
/// most `limit` rows, none of them past `total` from `offset`.
pub(super) fn rows<'a>(
    object: &'a Map<String, Value>,
    name: &'static str,
    limit: u64,
    offset: u64,
    total: u64,
) -> Result<&'a [Value], BadAnswer> {
    let list = match object.get(name) {
        None | Some(Value::Null) => &[][..],
        Some(Value::Array(list)) => list.as_slice(),
        Some(other) => {
            return Err(BadAnswer::field(
                name,
                Problem::WrongType {
                    found: kind(other),
                    expected: "an array",
                },
            ));
        }
    };
    let count = list.len() as u64;
    if count > limit {
        return Err(BadAnswer::TooManyRows {
            list: name,
            rows: list.len(),
            limit,
        });
    }
    // An empty page past the total is no lie of this answer: the list shrank while it was
    // paged, which the listing sees (the total changed) and fetches again.
    if count > 0 && offset.saturating_add(count) > total {
        return Err(BadAnswer::PastTotal {
            list: name,
            total,
            offset,
            rows: list.len(),
        });
    }
    Ok(list)
}

/// Row `i` of `list` as an object.
pub(super) fn row<'a>(
    list: &'static str,
    i: usize,
    value: &'a Value,
) -> Result<&'a Map<String, Value>, BadAnswer> {
    match value {
        Value::Object(object) => Ok(object),
        other => Err(BadAnswer::field(
            format!("{list}[{i}]"),
            Problem::WrongType {
                found: kind(other),
                expected: "an object",
            },
        )),
    }
}
