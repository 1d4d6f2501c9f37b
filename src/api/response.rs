//! Reading an API answer: HTTP status + body bytes → the `Response` object, or a typed error.
//!
//! Pure and total: any bytes give either a value or an [`ApiError`], never a panic (property
//! tests feed it arbitrary input). The `RequestId` is kept whenever one can be found, because
//! users quote it to Tencent support.

use serde_json::{Map, Value};

use super::error::ApiError;

/// How much of an unreadable body is kept for the operator.
const EXCERPT_CHARS: usize = 120;

/// A successful answer's `Response` object and its `RequestId`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// `Response.RequestId`.
    pub request_id: String,
    /// The whole `Response` object (action-specific fields).
    pub fields: Map<String, Value>,
}

impl Answer {
    /// A string field of the answer, or a decode error naming it.
    pub fn string_field(&self, name: &str) -> Result<&str, ApiError> {
        match self.fields.get(name) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(ApiError::Decode {
                reason: format!("Response.{name} is {}, not a string", kind(other)),
                request_id: Some(self.request_id.clone()),
            }),
            None => Err(ApiError::Decode {
                reason: format!("Response.{name} is missing"),
                request_id: Some(self.request_id.clone()),
            }),
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

/// A short, printable start of a body for error messages.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut out: String = text
        .chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > EXCERPT_CHARS {
        out.push('…');
    }
    out.trim().to_string()
}

/// Best effort: a `RequestId` anywhere a Tencent answer puts it, even in a body that is
/// otherwise unreadable.
fn find_request_id(value: &Value) -> Option<String> {
    value
        .get("Response")
        .and_then(|r| r.get("RequestId"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// Reads one answer. HTTP 200 with `Response.Error` is an API error; non-200 is an HTTP error;
/// anything unreadable is a decode error.
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
    let request_id = find_request_id(&value);
    let Some(Value::Object(response)) = value.get("Response") else {
        return Err(ApiError::Decode {
            reason: "no Response object in the answer".into(),
            request_id,
        });
    };
    if let Some(error) = response.get("Error") {
        let code = error.get("Code").and_then(Value::as_str);
        let message = error.get("Message").and_then(Value::as_str).unwrap_or("");
        return match code {
            Some(code) if !code.is_empty() => Err(ApiError::Api {
                code: code.to_string(),
                message: message.to_string(),
                request_id,
            }),
            _ => Err(ApiError::Decode {
                reason: "Response.Error has no Code".into(),
                request_id,
            }),
        };
    }
    let Some(request_id) = request_id else {
        return Err(ApiError::Decode {
            reason: "Response.RequestId is missing".into(),
            request_id: None,
        });
    };
    Ok(Answer {
        request_id,
        fields: response.clone(),
    })
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
                    // Anything accepted has a RequestId and no Error.
                    prop_assert!(!answer.request_id.is_empty() || v["Response"]["RequestId"] == "");
                    prop_assert!(answer.fields.get("Error").is_none());
                    let _ = answer.string_field("Status");
                }
                Err(e) => prop_assert!(!e.code().is_empty()),
            }
        }
    }
}
