//! Reading an API answer: HTTP status + body bytes → the `Response` object, or a typed error.
//!
//! Pure and total: any bytes give either a value or an [`ApiError`], never a panic (property
//! tests feed it arbitrary input). The `RequestId` is kept whenever a valid one can be found,
//! because users quote it to Tencent support.
//!
//! Every field we read from an answer is checked before it is believed, because each ends up
//! in an event, a log line or the state file:
//!
//! - `RequestId`: 1 to [`MAX_REQUEST_ID_BYTES`] bytes of `A-Z a-z 0-9 - _ . :` (real ones are
//!   UUIDs). A success without a valid one is a decode error; an error answer with an invalid
//!   one keeps its code and loses the RequestId.
//! - `Error.Code`: 1 to [`MAX_CODE_BYTES`] bytes of `A-Z a-z 0-9 _ .`, else a decode error (a
//!   code decides what the engine does, so a strange one is not guessed at).
//! - `Error.Message`: kept, cut to [`MAX_MESSAGE_CHARS`] characters (the output layer escapes
//!   control characters).
//! - a status field ([`Answer::status_field`], e.g. `Status`): 1 to [`MAX_STATUS_BYTES`] bytes
//!   of `A-Z a-z 0-9 _ . -`, else a decode error. Unknown statuses that fit pass through as
//!   they are; an empty, huge or control-character "status" is not a status.
//!
//! Error messages name the field and what is wrong with it, never quote the value.
//!
//! The body's size is bounded before it gets here ([`super::body`]).

use serde_json::{Map, Value};

use super::error::ApiError;

/// How much of an unreadable body is kept for the operator.
const EXCERPT_CHARS: usize = 120;
/// Longest `RequestId` accepted (real ones are 36-byte UUIDs).
pub const MAX_REQUEST_ID_BYTES: usize = 128;
/// Longest `Error.Code` accepted (the longest known is under 60 bytes).
pub const MAX_CODE_BYTES: usize = 128;
/// Longest status accepted (the longest known, `AGENT_OFFLINE`, is 13 bytes).
pub const MAX_STATUS_BYTES: usize = 64;
/// `Error.Message` is cut to this many characters.
pub const MAX_MESSAGE_CHARS: usize = 1024;

/// A successful answer's `Response` object and its `RequestId`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `Response.RequestId`, valid (see the module docs).
    pub request_id: String,
    /// The whole `Response` object (action-specific fields).
    pub fields: Map<String, Value>,
}

impl Answer {
    /// A string field of the answer, or a decode error naming it.
    pub fn string_field(&self, name: &str) -> Result<&str, ApiError> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => {
                Err(self.decode(format!("Response.{name} is {}, not a string", kind(other))))
            }
            None => Err(self.decode(format!("Response.{name} is missing"))),
        }
    }

    /// A status field (`Status`): a string of 1 to [`MAX_STATUS_BYTES`] bytes of
    /// `A-Z a-z 0-9 _ . -`, or a decode error naming the field and the problem.
    pub fn status_field(&self, name: &str) -> Result<&str, ApiError> {
        let value = self.string_field(name)?;
        check_word(value, MAX_STATUS_BYTES, is_status_byte)
            .map_err(|problem| self.decode(format!("Response.{name} {problem}")))?;
        Ok(value)
    }

    fn decode(&self, reason: String) -> ApiError {
        ApiError::Decode {
            reason,
            request_id: Some(self.request_id.clone()),
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn is_status_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn is_request_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b':')
}

fn is_code_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.')
}

/// Checks a short identifier-like value; the problem, for "Response.X {problem}", never
/// quoting the value.
fn check_word(value: &str, max_bytes: usize, allowed: fn(u8) -> bool) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".to_owned());
    }
    if value.len() > max_bytes {
        return Err(format!(
            "is {} bytes long (at most {max_bytes})",
            value.len()
        ));
    }
    if let Some(at) = value.bytes().position(|b| !allowed(b)) {
        return Err(format!(
            "has a character that is not a letter, digit or one of the few allowed marks              (at byte {at})"
        ));
    }
    Ok(())
}

/// A short, printable start of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    // A character is at most 4 bytes: this much holds the excerpt, and no more is decoded.
    let head = &body[..body.len().min(EXCERPT_CHARS * 4)];
    let text = String::from_utf8_lossy(head);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if head.len() < body.len() || text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out.trim().to_string()
}

/// What replaces every text taken from a credentials endpoint's answer.
pub const BODY_NOT_SHOWN: &str =
    "(body not shown: a credentials endpoint's answer may hold secrets)";

/// `error` with every text that came from the answer's body removed: the excerpt of a
/// non-200 answer, the API's `Error.Message`, the reason of an unreadable answer (which may
/// quote it). Kept: the HTTP status, the error code and the `RequestId` (checked words that
/// cannot carry a secret). For the answers of credentials endpoints (STS `AssumeRole`), whose
/// bodies hold `TmpSecretKey` and `Token`: an error built from them reaches start-up errors,
/// events and warn lines, so the body must not be in it at all.
pub fn without_body(error: ApiError) -> ApiError {
    match error {
        ApiError::HttpStatus {
            status, request_id, ..
        } => ApiError::HttpStatus {
            status,
            excerpt: BODY_NOT_SHOWN.to_owned(),
            request_id,
        },
        ApiError::Api {
            code, request_id, ..
        } => ApiError::Api {
            code,
            message: BODY_NOT_SHOWN.to_owned(),
            request_id,
        },
        ApiError::Decode { request_id, .. } => ApiError::Decode {
            reason: format!("not a valid API answer {BODY_NOT_SHOWN}"),
            request_id,
        },
        other @ (ApiError::Timeout(_)
        | ApiError::Transport(_)
        | ApiError::Certificate(_)
        | ApiError::Fenced) => other,
    }
}

/// `Response.RequestId` as sent: `None` if absent or not a string, `Some(Err)` if invalid.
fn raw_request_id(response: &Map<String, Value>) -> Option<Result<String, String>> {
    match response.get("RequestId")? {
        Value::String(id) => {
            Some(check_word(id, MAX_REQUEST_ID_BYTES, is_request_id_byte).map(|()| id.clone()))
        }
        other => Some(Err(format!("is {}, not a string", kind(other)))),
    }
}

/// Best effort: a valid `RequestId` where a Tencent answer puts it, even in a body that is
/// otherwise unreadable.
fn find_request_id(value: &Value) -> Option<String> {
    value
        .get("Response")
        .and_then(Value::as_object)
        .and_then(raw_request_id)
        .and_then(Result::ok)
}

/// `message` cut to [`MAX_MESSAGE_CHARS`] characters.
fn bounded_message(message: &str) -> String {
    match message.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((at, _)) => format!("{}…", &message[..at]),
        None => message.to_owned(),
    }
}

/// Reads one answer. HTTP 200 with `Response.Error` is an API error; non-200 is an HTTP error;
/// anything unreadable or invalid is a decode error.
pub fn parse(http_status: u16, body: &[u8]) -> Result<Answer, ApiError> {
    let parsed: Result<Value, _> = serde_json::from_slice(body);
    if http_status != 200 {
        return Err(ApiError::HttpStatus {
            status: http_status,
            excerpt: excerpt(body),
            request_id: parsed.as_ref().ok().and_then(find_request_id),
        });
    }
    let value = parsed.map_err(|e| ApiError::Decode {
        reason: format!("body is not JSON ({e}): {}", excerpt(body)),
        request_id: None,
    })?;
    // Taken out of the parsed value, not cloned: the fields are moved into the answer.
    let response = match value {
        Value::Object(mut top) => top.remove("Response"),
        _ => None,
    };
    let Some(Value::Object(response)) = response else {
        return Err(ApiError::Decode {
            reason: "no Response object in the answer".into(),
            request_id: None,
        });
    };
    let request_id = raw_request_id(&response);
    let valid_request_id = request_id.clone().and_then(Result::ok);
    if let Some(error) = response.get("Error") {
        let code = error.get("Code").and_then(Value::as_str);
        let message = error.get("Message").and_then(Value::as_str).unwrap_or("");
        return match code {
            None => Err(ApiError::Decode {
                reason: "Response.Error has no Code".into(),
                request_id: valid_request_id,
            }),
            Some(code) => match check_word(code, MAX_CODE_BYTES, is_code_byte) {
                Ok(()) => Err(ApiError::Api {
                    code: code.to_string(),
                    message: bounded_message(message),
                    request_id: valid_request_id,
                }),
                Err(problem) => Err(ApiError::Decode {
                    reason: format!("Response.Error.Code {problem}"),
                    request_id: valid_request_id,
                }),
            },
        };
    }
    match request_id {
        None => Err(ApiError::Decode {
            reason: "Response.RequestId is missing".into(),
            request_id: None,
        }),
        Some(Err(problem)) => Err(ApiError::Decode {
            reason: format!("Response.RequestId {problem}"),
            request_id: None,
        }),
        Some(Ok(request_id)) => Ok(Answer {
            request_id,
            fields: response,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn success_is_read_with_its_request_id() {
        let a = parse(
            200,
            br#"{"Response":{"Status":"COMPLETE","RequestId":"354f4ac3"}}"#,
        )
        .unwrap();
        assert_eq!(a.request_id, "354f4ac3");
        assert_eq!(a.string_field("Status").unwrap(), "COMPLETE");
    }

    #[test]
    fn api_error_is_http_200_with_error_object() {
        let e = parse(
            200,
            br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"slow down"},"RequestId":"r9"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code(), "RequestLimitExceeded");
        assert_eq!(e.request_id(), Some("r9"));
        assert_eq!(e.message(), "slow down");
    }

    #[test]
    fn non_200_is_an_http_error_even_with_json() {
        let e = parse(503, b"<html>Service Unavailable</html>").unwrap_err();
        assert_eq!(e.code(), "ClientError.HttpStatus");
        assert!(e.to_string().contains("503"));
        let e = parse(502, br#"{"Response":{"RequestId":"gw-1"}}"#).unwrap_err();
        assert_eq!(e.request_id(), Some("gw-1"));
    }

    #[test]
    fn without_body_keeps_status_code_and_request_id_and_nothing_of_the_body() {
        let secret = "TmpSecretKey S3CRETmarker Token S3CRETmarker";
        let answers: [(u16, String); 5] = [
            (503, format!("<html>{secret}</html>")),
            (
                502,
                format!(r#"{{"Response":{{"RequestId":"gw-1","Msg":"{secret}"}}}}"#),
            ),
            (
                200,
                format!(
                    r#"{{"Response":{{"Error":{{"Code":"InternalError","Message":"{secret}"}},"RequestId":"r1"}}}}"#
                ),
            ),
            (200, format!(r#"{{"Response":{{"Credentials":"{secret}"#)),
            (200, format!("not json {secret}")),
        ];
        for (status, body) in &answers {
            let raw = parse(*status, body.as_bytes()).unwrap_err();
            // Before: the body reaches the text (what the fix closes).
            let shown = without_body(raw.clone());
            assert_eq!(shown.code(), raw.code(), "{body}");
            assert_eq!(shown.request_id(), raw.request_id(), "{body}");
            let text = format!("{shown} {shown:?} {}", shown.message());
            assert!(!text.contains("S3CRET"), "{text}");
            if let ApiError::HttpStatus { status: kept, .. } = shown {
                assert_eq!(kept, *status);
            }
        }
        // The raw errors did carry it: the redaction is what keeps it out.
        let raw = parse(503, format!("<html>{secret}</html>").as_bytes()).unwrap_err();
        assert!(raw.to_string().contains("S3CRET"));
        let timeout = ApiError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(
            without_body(timeout.clone()).to_string(),
            timeout.to_string()
        );
    }

    #[test]
    fn truncated_and_incomplete_bodies_are_decode_errors() {
        let e = parse(200, br#"{"Response":{"Status":"COMPL"#).unwrap_err();
        assert_eq!(e.code(), "ClientError.Decode");
        let e = parse(200, br#"{"Response":{"Status":"COMPLETE"}}"#).unwrap_err();
        assert_eq!(e.code(), "ClientError.Decode");
        let a = parse(200, br#"{"Response":{"RequestId":"r1"}}"#).unwrap();
        let e = a.string_field("Status").unwrap_err();
        assert_eq!(e.code(), "ClientError.Decode");
        assert_eq!(e.request_id(), Some("r1"));
        let a = parse(200, br#"{"Response":{"RequestId":"r1","Status":7}}"#).unwrap();
        assert!(
            a.string_field("Status")
                .unwrap_err()
                .to_string()
                .contains("number")
        );
        let e = parse(200, br#"{"Response":{"Error":{},"RequestId":"r2"}}"#).unwrap_err();
        assert_eq!(
            (e.code(), e.request_id()),
            ("ClientError.Decode", Some("r2"))
        );
    }

    #[test]
    fn empty_request_id_and_status_are_decode_errors() {
        let e = parse(200, br#"{"Response":{"Status":"COMPLETE","RequestId":""}}"#).unwrap_err();
        assert_eq!(e.code(), "ClientError.Decode");
        assert!(e.to_string().contains("RequestId is empty"), "{e}");
        let e = parse(200, br#"{"Response":{"Status":"COMPLETE","RequestId":7}}"#).unwrap_err();
        assert!(e.to_string().contains("RequestId is a number"), "{e}");
        let a = parse(200, br#"{"Response":{"Status":"","RequestId":"r1"}}"#).unwrap();
        let e = a.status_field("Status").unwrap_err();
        assert_eq!(
            (e.code(), e.request_id()),
            ("ClientError.Decode", Some("r1"))
        );
        assert!(e.to_string().contains("Response.Status is empty"), "{e}");
    }

    #[test]
    fn statuses_are_short_words() {
        let answer = |status: &str| {
            let body = serde_json::json!({"Response": {"Status": status, "RequestId": "r1"}});
            parse(200, &serde_json::to_vec(&body).unwrap()).unwrap()
        };
        for good in [
            "COMPLETE",
            "SOMETHING_NEW",
            "v2.beta-1",
            &"A".repeat(MAX_STATUS_BYTES),
        ] {
            assert_eq!(answer(good).status_field("Status").unwrap(), good);
        }
        for bad in [
            "COMPLETE\n",
            "\u{1b}[31mRED",
            "COMPLETE NOW",
            "COMPLÉTÉ",
            "\"quoted\"",
            &"A".repeat(MAX_STATUS_BYTES + 1),
            &"A".repeat(1 << 20),
        ] {
            let e = answer(bad).status_field("Status").unwrap_err();
            assert_eq!(e.code(), "ClientError.Decode", "{bad:?}");
            let text = e.to_string();
            assert!(text.len() < 200 && !text.contains(bad), "{text}");
        }
    }

    #[test]
    fn request_ids_and_codes_are_checked_and_messages_bounded() {
        // An invalid RequestId is dropped from an error answer; the code still counts.
        let e = parse(
            200,
            br#"{"Response":{"Error":{"Code":"InternalError","Message":"m"},"RequestId":"a\nb"}}"#,
        )
        .unwrap_err();
        assert_eq!((e.code(), e.request_id()), ("InternalError", None));
        let long = "x".repeat(5_000);
        let body = serde_json::json!({"Response": {"Error": {"Code": "InternalError", "Message": long}, "RequestId": "r"}});
        let e = parse(200, &serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert_eq!(e.message().chars().count(), MAX_MESSAGE_CHARS + 1);
        for code in [
            "Internal Error",
            "A\nB",
            &"A".repeat(MAX_CODE_BYTES + 1),
            "",
        ] {
            let body = serde_json::json!({"Response": {"Error": {"Code": code}, "RequestId": "r"}});
            let e = parse(200, &serde_json::to_vec(&body).unwrap()).unwrap_err();
            assert_eq!(
                (e.code(), e.request_id()),
                ("ClientError.Decode", Some("r")),
                "{code:?}"
            );
        }
        let e = parse(502, br#"{"Response":{"RequestId":"gw 1"}}"#).unwrap_err();
        assert_eq!(e.request_id(), None);
        let id = "x".repeat(MAX_REQUEST_ID_BYTES + 1);
        let body = serde_json::json!({"Response": {"Status": "COMPLETE", "RequestId": id}});
        let e = parse(200, &serde_json::to_vec(&body).unwrap()).unwrap_err();
        assert!(e.to_string().contains("bytes long"), "{e}");
    }

    #[test]
    fn excerpt_is_short_and_printable() {
        let long = vec![b'x'; 10_000];
        assert!(excerpt(&long).chars().count() <= EXCERPT_CHARS + 1);
        assert_eq!(excerpt(b"a\nb\x00c"), "a b c");
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
            prop_oneof![
                Just("Response"),
                Just("Error"),
                Just("Code"),
                Just("RequestId"),
                Just("Status")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop_oneof![
                            Just("Response".to_string()),
                            Just("Error".to_string()),
                            Just("Code".to_string()),
                            Just("Message".to_string()),
                            Just("RequestId".to_string()),
                            Just("Status".to_string()),
                            "[a-z]{1,4}"
                        ],
                        inner
                    ),
                    0..5
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(status in 100u16..600, body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(status, &body);
        }

        #[test]
        fn arbitrary_json_shapes_give_a_value_or_a_typed_error(v in json_value()) {
            let body = serde_json::to_vec(&v).unwrap();
            match parse(200, &body) {
                Ok(answer) => {
                    // Anything accepted has a valid RequestId and no Error.
                    prop_assert!(check_word(&answer.request_id, MAX_REQUEST_ID_BYTES, is_request_id_byte).is_ok());
                    prop_assert!(answer.fields.get("Error").is_none());
                    let _ = answer.string_field("Status");
                    if let Ok(status) = answer.status_field("Status") {
                        prop_assert!(!status.is_empty() && status.len() <= MAX_STATUS_BYTES);
                        prop_assert!(status.bytes().all(is_status_byte));
                    }
                }
                Err(e) => prop_assert!(!e.code().is_empty()),
            }
        }
    }
}
