//! API answer → agent status, per the spec's Statuses table. Pure.
//!
//! `Status` strings pass through unchanged (future statuses included). Four API errors are
//! statuses of the agent rather than failed polls ([`crate::api::error::AGENT_STATUS_CODES`]);
//! every other error is a failed poll and leaves the agent's status as it was.

use crate::api::{ApiError, ErrorClass, TaskStatus};

/// Status of an agent before any answer, with nothing persisted.
pub const UNKNOWN: &str = "UNKNOWN";

/// What one poll says about an agent.
#[derive(Debug, Clone)]
pub enum PollOutcome {
    /// The agent has this status.
    Status {
        /// The status string.
        status: String,
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
                status: t.status,
                request_id: t.request_id,
                error_code: None,
            },
            Err(e) => match e.class() {
                ErrorClass::AgentStatus(status) => PollOutcome::Status {
                    status: status.to_string(),
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

    fn status_of(r: Result<TaskStatus, ApiError>) -> Option<(String, Option<String>)> {
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
            assert_eq!(status_of(r), Some((s.to_string(), None)));
        }
        for (code, status) in [
            ("FailedOperation.AgentOffline", "AGENT_OFFLINE"),
            ("FailedOperation.OpenPortTaskNotFound", "NO_TASK"),
            ("ResourceNotFound", "NOT_FOUND"),
            ("InvalidParameter.InvalidFormat", "INVALID"),
        ] {
            assert_eq!(
                status_of(Err(api(code))),
                Some((status.to_string(), Some(code.to_string())))
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
}
