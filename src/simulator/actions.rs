//! The handlers of the actions the simulator implements, each after the request passed every
//! check of `routes.rs`: parameters first (with the API's error codes), then the answer from
//! the scenario.

use tokio::time::Instant;

use super::scenario::{ScriptedAnswer, is_agent_uuid};
use super::server::Shared;
use super::wire::{self, Answer};

impl Shared {
    /// Step 10: `DescribeOpenPortTaskStatus` parameters and the scripted answer.
    pub(super) fn describe(&self, body: &[u8], now: Instant) -> Answer {
        let params = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Answer::error("InvalidParameter", "The request body is not a JSON object.");
            }
        };
        if let Some(unknown) = params.keys().find(|k| k.as_str() != "Uuid") {
            return Answer::error(
                "UnknownParameter",
                format!("The parameter `{unknown}` is not recognized."),
            );
        }
        let uuid = match params.get("Uuid") {
            None => {
                return Answer::error(
                    "MissingParameter",
                    "The request is missing a required parameter `Uuid`.",
                );
            }
            Some(serde_json::Value::String(u)) => u,
            Some(_) => {
                return Answer::error(
                    "InvalidParameterValue",
                    "The value of parameter `Uuid` must be a string.",
                );
            }
        };
        if !is_agent_uuid(uuid) {
            return Answer::error(
                "InvalidParameter.InvalidFormat",
                format!("The parameter `Uuid` value `{uuid}` has an invalid format."),
            );
        }
        let Some(&index) = self.agents.get(uuid) else {
            return Answer::error(
                "ResourceNotFound",
                format!("The agent `{uuid}` does not exist."),
            );
        };
        match self.scenario.agents[index].answer_at(now.duration_since(self.start)) {
            ScriptedAnswer::Status(s) => Answer::Status(s.clone()),
            ScriptedAnswer::Error(code) => Answer::error(code, wire::scripted_error_message(code)),
        }
    }
}
