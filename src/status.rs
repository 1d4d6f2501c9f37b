//! Agent statuses: the [`Status`] type, and API answer → status per the spec's Statuses
//! table ([`PollOutcome`]). Pure.
//!
//! `Status` strings pass through unchanged (future statuses included, as [`Status::Other`]).
//! Four API errors are statuses of the agent rather than failed polls
//! ([`crate::api::error::AGENT_STATUS_CODES`]); every other error is a failed poll and leaves
//! the agent's status as it was.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::api::{ApiError, ErrorClass, TaskStatus};

/// Status of an agent before any answer, with nothing persisted (the wire string).
pub const UNKNOWN: &str = "UNKNOWN";

/// An agent's task status as the API spells it.
///
/// Why an enum and not a string: 100k agents mostly share a handful of statuses, so the known
/// ones cost no allocation (the tracker used to intern strings for the same reason), matching
/// is checked by the compiler, and the wire strings live in one place ([`Status::as_str`]).
/// Serialises as the API's string, so the state file and event fields read exactly as before.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Status {
    /// `COLLECTING`: the task runs; the transition users wait for comes next.
    Collecting,
    /// `COMPLETE`.
    Complete,
    /// `AGENT_OFFLINE` (also from the error `FailedOperation.AgentOffline`).
    AgentOffline,
    /// `FAILED`.
    Failed,
    /// `NO_TASK`, from the error `FailedOperation.OpenPortTaskNotFound`.
    NoTask,
    /// `NOT_FOUND`, from the error `ResourceNotFound`.
    NotFound,
    /// `INVALID`, from the error `InvalidParameter.InvalidFormat`.
    Invalid,
    /// `UNKNOWN`: no answer yet and nothing persisted.
    #[default]
    Unknown,
    /// Any other string the API may add; passed through unchanged.
    Other(OtherStatus),
}

/// A status string this build does not know. Only [`Status::new`] makes one, so it never
/// holds a known status's string and derived equality stays string equality.
///
/// Thin (one pointer) so that [`Status`] stays two words: cheaper than the `Cow<str>` it
/// replaces, for 100k agents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OtherStatus(Arc<Box<str>>);

impl OtherStatus {
    /// The string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Status {
    /// Every status with a variant of its own, for tests and counters.
    pub const KNOWN: [Status; 8] = [
        Status::Collecting,
        Status::Complete,
        Status::AgentOffline,
        Status::Failed,
        Status::NoTask,
        Status::NotFound,
        Status::Invalid,
        Status::Unknown,
    ];

    /// The status the API's string names; known strings cost no allocation.
    pub fn new(s: &str) -> Status {
        match s {
            "COLLECTING" => Status::Collecting,
            "COMPLETE" => Status::Complete,
            "AGENT_OFFLINE" => Status::AgentOffline,
            "FAILED" => Status::Failed,
            "NO_TASK" => Status::NoTask,
            "NOT_FOUND" => Status::NotFound,
            "INVALID" => Status::Invalid,
            UNKNOWN => Status::Unknown,
            other => Status::Other(OtherStatus(Arc::new(Box::from(other)))),
        }
    }

    /// The wire string (state file, event fields, output).
    pub fn as_str(&self) -> &str {
        match self {
            Status::Collecting => "COLLECTING",
            Status::Complete => "COMPLETE",
            Status::AgentOffline => "AGENT_OFFLINE",
            Status::Failed => "FAILED",
            Status::NoTask => "NO_TASK",
            Status::NotFound => "NOT_FOUND",
            Status::Invalid => "INVALID",
            Status::Unknown => UNKNOWN,
            Status::Other(o) => o.as_str(),
        }
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Status {
        Status::new(s)
    }
}

impl From<String> for Status {
    fn from(s: String) -> Status {
        Status::new(&s)
    }
}

impl std::str::FromStr for Status {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Status, Self::Err> {
        Ok(Status::new(s))
    }
}

impl Deref for Status {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Status {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`, so `{:<14}` columns line up as they did with strings.
        f.pad(self.as_str())
    }
}

impl PartialEq<str> for Status {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Status {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Status {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Status, D::Error> {
        struct StatusVisitor;
        impl Visitor<'_> for StatusVisitor {
            type Value = Status;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a status string")
            }
            // Borrowed where the format allows: a known status is read without allocating.
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Status, E> {
                Ok(Status::new(v))
            }
        }
        d.deserialize_str(StatusVisitor)
    }
}

/// What one poll says about an agent.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    /// The agent has this status.
    Status {
        /// The status.
        status: Status,
        /// `RequestId` of the answer.
        request_id: String,
        /// The API error code when the status came from an error answer.
        error_code: Option<String>,
    },
    /// The poll failed; the agent keeps its status.
    Failed(ApiError),
}

impl PollOutcome {
    /// Maps one answer of `DescribeOpenPortTaskStatus`.
    pub fn from_result(result: Result<TaskStatus, ApiError>) -> PollOutcome {
        match result {
            Ok(t) => PollOutcome::Status {
                status: Status::new(&t.status),
                request_id: t.request_id,
                error_code: None,
            },
            Err(e) => match e.class() {
                ErrorClass::AgentStatus(status) => PollOutcome::Status {
                    status: Status::new(status),
                    request_id: e.request_id().unwrap_or_default().to_string(),
                    error_code: Some(e.code().to_string()),
                },
                _ => PollOutcome::Failed(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str) -> ApiError {
        ApiError::Api {
            code: code.into(),
            message: "m".into(),
            request_id: Some("r".into()),
        }
    }

    fn status_of(r: Result<TaskStatus, ApiError>) -> Option<(Status, Option<String>)> {
        match PollOutcome::from_result(r) {
            PollOutcome::Status {
                status, error_code, ..
            } => Some((status, error_code)),
            PollOutcome::Failed(_) => None,
        }
    }

    #[test]
    fn the_statuses_table() {
        for s in [
            "COLLECTING",
            "COMPLETE",
            "AGENT_OFFLINE",
            "FAILED",
            "BRAND_NEW",
        ] {
            let r = Ok(TaskStatus {
                status: s.into(),
                request_id: "r".into(),
            });
            assert_eq!(status_of(r), Some((Status::new(s), None)));
        }
        for (code, status) in [
            ("FailedOperation.AgentOffline", Status::AgentOffline),
            ("FailedOperation.OpenPortTaskNotFound", Status::NoTask),
            ("ResourceNotFound", Status::NotFound),
            ("InvalidParameter.InvalidFormat", Status::Invalid),
        ] {
            assert_eq!(
                status_of(Err(api(code))),
                Some((status, Some(code.to_string())))
            );
        }
        for code in [
            "RequestLimitExceeded",
            "InternalError",
            "AuthFailure.SignatureFailure",
            "FailedOperation.Other",
        ] {
            assert_eq!(status_of(Err(api(code))), None, "{code}");
        }
        assert_eq!(status_of(Err(ApiError::Transport("reset".into()))), None);
    }

    #[test]
    fn wire_strings_round_trip_and_unknown_ones_pass_through() {
        for s in Status::KNOWN {
            assert!(!matches!(s, Status::Other(_)));
            assert_eq!(Status::new(s.as_str()), s);
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        }
        let new = Status::new("BRAND_NEW");
        assert!(matches!(new, Status::Other(_)));
        assert_eq!(new, "BRAND_NEW");
        assert_eq!(new, Status::new("BRAND_NEW"));
        assert_ne!(new, Status::new("OTHER_NEW"));
        assert_eq!(serde_json::to_string(&new).unwrap(), "\"BRAND_NEW\"");
        assert_eq!(
            serde_json::from_str::<Status>("\"BRAND_NEW\"").unwrap(),
            new
        );
        assert_eq!(Status::default(), UNKNOWN);
        assert_eq!(format!("[{:<10}]", Status::Complete), "[COMPLETE  ]");
    }

    /// Every way to turn a string into a status and back gives the wire string, for known
    /// statuses and others alike; equality with strings is string equality.
    #[test]
    fn every_conversion_and_comparison_is_the_wire_string() {
        let wire = [
            "COLLECTING",
            "COMPLETE",
            "AGENT_OFFLINE",
            "FAILED",
            "NO_TASK",
            "NOT_FOUND",
            "INVALID",
            "UNKNOWN",
            "BRAND_NEW",
        ];
        for w in wire {
            let from_str: Status = w.into();
            let from_string: Status = w.to_owned().into();
            let parsed: Status = w.parse().unwrap();
            for s in [&from_str, &from_string, &parsed] {
                assert_eq!(s.as_str(), w);
                assert_eq!(&**s, w, "Deref");
                assert_eq!(AsRef::<str>::as_ref(s), w);
                assert_eq!(s.to_string(), w, "Display");
                assert!(*s == *w, "PartialEq<str>");
                assert!(*s == w, "PartialEq<&str>");
                assert!(s.eq(&w.to_owned()), "PartialEq<String>");
                assert!(*s != *"COMPLETE_", "PartialEq<str>");
                assert!(*s != "xyzzy", "PartialEq<&str>");
                assert!(!s.eq(&String::from("collecting")), "PartialEq<String>");
            }
            assert_eq!(from_str, from_string);
            assert_eq!(from_str, parsed);
            assert_eq!(
                serde_json::from_str::<Status>(&format!("\"{w}\"")).unwrap(),
                from_str
            );
        }
        let Status::Other(other) = Status::new("BRAND_NEW") else {
            panic!("not Other")
        };
        assert_eq!(other.as_str(), "BRAND_NEW");
        // A JSON value of the wrong type is an error that says what was expected.
        let e = serde_json::from_str::<Status>("42")
            .unwrap_err()
            .to_string();
        assert!(e.contains("status"), "{e}");
    }

    #[test]
    fn a_status_is_two_words_at_most() {
        // Known.status used to be a Cow<'static, str> (three words).
        assert!(std::mem::size_of::<Status>() <= 2 * std::mem::size_of::<usize>());
    }
}
