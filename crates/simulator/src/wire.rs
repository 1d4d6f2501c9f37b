//! What goes on the wire: the API's JSON answer shapes, request ids, and the non-API bodies of
//! injected faults. Pure functions, so the shapes are tested without a server.

use rand::Rng;
use serde_json::json;

/// One answer of the API (before any injected fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `{"Response":{"Status":...,"RequestId":...}}`.
    Status(String),
    /// A success answer with these fields, in this order, then `RequestId` (e.g. `TotalCount`
    /// and `OpenPorts`; none for `CreateOpenPortTask`).
    Fields(serde_json::Map<String, serde_json::Value>),
    /// `{"Response":{"Error":{"Code":...,"Message":...},"RequestId":...}}`.
    Error {
        /// API error code.
        code: String,
        /// Human text; clients must not parse it (except the documented server time).
        message: String,
    },
}

impl Answer {
    /// An error answer.
    pub fn error(code: &str, message: impl Into<String>) -> Answer {
        Answer::Error {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The status, `ok` for other success answers, or the error code, as logged and recorded.
    pub fn label(&self) -> &str {
        match self {
            Answer::Status(s) => s,
            Answer::Fields(_) => "ok",
            Answer::Error { code, .. } => code,
        }
    }

    /// The JSON body, exactly as the API shapes it (HTTP 200 for errors too).
    pub fn body(&self, request_id: &str) -> Vec<u8> {
        let value = match self {
            Answer::Status(status) => json!({
                "Response": { "Status": status, "RequestId": request_id }
            }),
            Answer::Fields(fields) => {
                let mut response = fields.clone();
                response.insert("RequestId".to_owned(), json!(request_id));
                json!({ "Response": response })
            }
            Answer::Error { code, message } => json!({
                "Response": {
                    "Error": { "Code": code, "Message": message },
                    "RequestId": request_id
                }
            }),
        };
        // Serializing a json! value of strings cannot fail.
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

/// The human message the simulator gives a scripted error code (real ones vary; clients decide
/// on the code).
pub fn scripted_error_message(code: &str) -> String {
    match code {
        "FailedOperation.AgentOffline" => "The agent is offline.".to_owned(),
        "FailedOperation.OpenPortTaskNotFound" => {
            "No open-port collection task exists for this agent.".to_owned()
        }
        "InternalError" | "InternalError.MainDBFail" => "An internal error occurred.".to_owned(),
        "ResourceNotFound" => "The resource does not exist.".to_owned(),
        "FailedOperation.CreateOpenPortTask" => "The collection task cannot be created.".to_owned(),
        _ => format!("Scripted error {code}."),
    }
}

/// A random version-4 UUID string, the form the real `RequestId` has.
pub fn new_request_id() -> String {
    let mut b: [u8; 16] = rand::rng().random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// What a gateway in front of the API sends when the backend is unavailable: HTML, not JSON.
pub const GATEWAY_503_BODY: &str = "<html>\r\n<head><title>503 Service Temporarily Unavailable</title></head>\r\n\
<body>\r\n<center><h1>503 Service Temporarily Unavailable</h1></center>\r\n<hr><center>stgw</center>\r\n\
</body>\r\n</html>\r\n";

/// The first half of a body: valid UTF-8 is not needed, a client must just fail to parse it.
pub fn truncated(body: &[u8]) -> Vec<u8> {
    body[..body.len() / 2].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_and_error_shapes() {
        let ok: serde_json::Value =
            serde_json::from_slice(&Answer::Status("COMPLETE".into()).body("r-1")).unwrap();
        assert_eq!(ok["Response"]["Status"], "COMPLETE");
        assert_eq!(ok["Response"]["RequestId"], "r-1");
        let err: serde_json::Value =
            serde_json::from_slice(&Answer::error("ResourceNotFound", "gone").body("r-2")).unwrap();
        assert_eq!(err["Response"]["Error"]["Code"], "ResourceNotFound");
        assert_eq!(err["Response"]["Error"]["Message"], "gone");
        assert_eq!(err["Response"]["RequestId"], "r-2");
        assert!(err["Response"].get("Status").is_none());
        let mut fields = serde_json::Map::new();
        fields.insert("TotalCount".into(), json!(2));
        let text = String::from_utf8(Answer::Fields(fields).body("r-3")).unwrap();
        assert_eq!(text, r#"{"Response":{"TotalCount":2,"RequestId":"r-3"}}"#);
        let empty = String::from_utf8(Answer::Fields(Default::default()).body("r-4")).unwrap();
        assert_eq!(empty, r#"{"Response":{"RequestId":"r-4"}}"#);
    }

    #[test]
    fn request_ids_look_like_uuid_v4() {
        let id = new_request_id();
        assert!(super::super::scenario::is_agent_uuid(&id), "{id}");
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]), "{id}");
        assert_ne!(id, new_request_id());
    }

    #[test]
    fn truncated_bodies_do_not_parse() {
        let body = Answer::Status("COMPLETE".into()).body("r");
        let cut = truncated(&body);
        assert_eq!(cut.len(), body.len() / 2);
        assert!(serde_json::from_slice::<serde_json::Value>(&cut).is_err());
    }
}
