//! Checking a request's TC3-HMAC-SHA256 `Authorization`: parsing the header, and recomputing the
//! signature with the crate's own signer building blocks ([`cwp_tc3`]), so client and
//! simulator agree by construction and the official test vectors pin both.

use hyper::HeaderMap;

use cwp_tc3::{
    ALGORITHM, canonical_request_hash, credential_scope, signature, string_to_sign, utc_date,
};

/// The signing service name of CWP.
pub const SERVICE: &str = "yunjing";

/// The parts of an `Authorization` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    /// SecretId from the credential.
    pub secret_id: &'a str,
    /// `YYYY-MM-DD` from the credential scope.
    pub date: &'a str,
    /// Service from the credential scope.
    pub service: &'a str,
    /// Lower-case names of the signed headers, in the order listed.
    pub signed_headers: Vec<String>,
    /// Hex signature as sent.
    pub signature: &'a str,
}

/// Why a request is not authenticated; each maps to one API error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthProblem {
    /// `AuthFailure.InvalidAuthorization`: missing or not in the TC3 form.
    Invalid(String),
    /// `AuthFailure.SignatureFailure`: well-formed, but not what the key signs.
    Signature(String),
}

impl AuthProblem {
    /// The API error code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthProblem::Invalid(_) => "AuthFailure.InvalidAuthorization",
            AuthProblem::Signature(_) => "AuthFailure.SignatureFailure",
        }
    }

    /// The API error message.
    pub fn message(&self) -> &str {
        match self {
            AuthProblem::Invalid(m) | AuthProblem::Signature(m) => m,
        }
    }
}

/// Parses `TC3-HMAC-SHA256 Credential=ID/DATE/SERVICE/tc3_request, SignedHeaders=a;b,
/// Signature=hex`. Spaces after commas are optional; each of the three fields must appear
/// exactly once.
pub fn parse_authorization(value: &str) -> Result<Authorization<'_>, AuthProblem> {
    let invalid = |what: &str| {
        AuthProblem::Invalid(format!(
            "The Authorization header is malformed ({what}); expected \
             `{ALGORITHM} Credential=SecretId/YYYY-MM-DD/service/tc3_request, \
             SignedHeaders=content-type;host, Signature=...`"
        ))
    };
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| invalid("unsupported algorithm"))?;
    if !rest.starts_with(' ') {
        return Err(invalid("no space after the algorithm"));
    }
    let (mut credential, mut signed, mut sig) = (None, None, None);
    for field in rest.split(',') {
        let (key, val) = field
            .trim()
            .split_once('=')
            .ok_or_else(|| invalid("a field without `=`"))?;
        let slot = match key {
            "Credential" => &mut credential,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut sig,
            _ => return Err(invalid("unknown field")),
        };
        if slot.replace(val.trim()).is_some() {
            return Err(invalid("a field appears twice"));
        }
    }
    let credential = credential.ok_or_else(|| invalid("no Credential"))?;
    let signed = signed.ok_or_else(|| invalid("no SignedHeaders"))?;
    let signature = sig
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("no Signature"))?;

    let parts: Vec<&str> = credential.split('/').collect();
    let [secret_id, date, service, terminator] = parts[..] else {
        return Err(invalid(
            "Credential is not SecretId/date/service/tc3_request",
        ));
    };
    if secret_id.is_empty() || date.is_empty() || service.is_empty() || terminator != "tc3_request"
    {
        return Err(invalid(
            "Credential is not SecretId/date/service/tc3_request",
        ));
    }
    let signed_headers: Vec<String> = signed.split(';').map(str::to_ascii_lowercase).collect();
    if signed_headers.iter().any(|h| h.is_empty()) {
        return Err(invalid("empty name in SignedHeaders"));
    }
    Ok(Authorization {
        secret_id,
        date,
        service,
        signed_headers,
        signature,
    })
}

/// What the signature of one received request covers.
#[derive(Debug, Clone, Copy)]
pub struct ReceivedRequest<'a> {
    /// HTTP method as received.
    pub method: &'a str,
    /// Path (`/`).
    pub uri: &'a str,
    /// Query string, empty for POST.
    pub query: &'a str,
    /// All request headers.
    pub headers: &'a HeaderMap,
    /// Body bytes as received.
    pub payload: &'a [u8],
    /// `X-TC-Timestamp`.
    pub timestamp: i64,
    /// The signing service the endpoint is (`yunjing`, or `sts` for `AssumeRole`).
    pub service: &'a str,
}

/// Checks the credential scope and recomputes the signature over the headers the client listed.
///
/// Header names are lower-case and values trimmed and lower-cased, as the TC3 document says
/// (the `Host` value is taken as received, port included). With
/// `X-TC-Content-SHA256: UNSIGNED-PAYLOAD` the payload hashed is that literal string, as the
/// official SDKs do.
pub fn verify(
    auth: &Authorization<'_>,
    secret_key: &str,
    req: &ReceivedRequest<'_>,
) -> Result<(), AuthProblem> {
    if auth.service != req.service {
        return Err(AuthProblem::Invalid(format!(
            "The credential scope names service `{}`, this endpoint is `{}`.",
            auth.service, req.service
        )));
    }
    for required in ["content-type", "host"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(AuthProblem::Invalid(format!(
                "SignedHeaders must include `{required}`."
            )));
        }
    }
    let expected_date = utc_date(req.timestamp);
    if auth.date != expected_date {
        return Err(AuthProblem::Signature(format!(
            "The credential date {} is not the UTC date of X-TC-Timestamp {} ({expected_date}).",
            auth.date, req.timestamp
        )));
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let values: Vec<&str> = req
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if values.is_empty() {
            return Err(AuthProblem::Signature(format!(
                "The signed header `{name}` is not in the request."
            )));
        }
        canonical_headers.push_str(name);
        canonical_headers.push(':');
        canonical_headers.push_str(&values.join(",").trim().to_ascii_lowercase());
        canonical_headers.push('\n');
    }
    let unsigned = req
        .headers
        .get("x-tc-content-sha256")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"UNSIGNED-PAYLOAD"));
    let payload: &[u8] = if unsigned {
        b"UNSIGNED-PAYLOAD"
    } else {
        req.payload
    };
    let hash = canonical_request_hash(
        req.method,
        req.uri,
        req.query,
        &canonical_headers,
        &auth.signed_headers.join(";"),
        payload,
    );
    let scope = credential_scope(req.timestamp, req.service);
    let to_sign = string_to_sign(req.timestamp, &scope, &hash);
    let expected = signature(secret_key, &expected_date, req.service, &to_sign);
    if constant_time_eq(expected.as_bytes(), auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(AuthProblem::Signature(
            "The provided credentials could not be validated. \
             Please check your signature is correct."
                .to_owned(),
        ))
    }
}

/// Compares without an early exit, as a real server must (timing would leak the signature).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use cwp_tc3::{RequestParts, sign};
    use hyper::header::HeaderValue;

    const ID: &str = "AKIDtest";
    const KEY: &str = "secret";
    const TS: i64 = 1_551_113_065;
    const BODY: &[u8] = br#"{"Uuid":"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"}"#;

    fn headers(host: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("host", HeaderValue::from_str(host).unwrap());
        h
    }

    fn signed(key: &str, host: &str) -> String {
        sign(
            ID,
            key,
            &RequestParts {
                method: "POST",
                host,
                content_type: "application/json",
                payload: BODY,
                service: SERVICE,
                timestamp: TS,
            },
        )
        .authorization
    }

    fn check(authorization: &str, headers: &HeaderMap, payload: &[u8]) -> Result<(), AuthProblem> {
        let auth = parse_authorization(authorization)?;
        verify(
            &auth,
            KEY,
            &ReceivedRequest {
                method: "POST",
                uri: "/",
                query: "",
                headers,
                payload,
                timestamp: TS,
                service: SERVICE,
            },
        )
    }

    #[test]
    fn parses_the_sdk_form() {
        let a = parse_authorization(
            "TC3-HMAC-SHA256 Credential=AKIDx/2019-02-25/yunjing/tc3_request, \
             SignedHeaders=content-type;Host, Signature=abc",
        )
        .unwrap();
        assert_eq!(a.secret_id, "AKIDx");
        assert_eq!(a.date, "2019-02-25");
        assert_eq!(a.service, "yunjing");
        assert_eq!(a.signed_headers, vec!["content-type", "host"]);
        assert_eq!(a.signature, "abc");
        // No spaces after the commas is fine too.
        assert!(
            parse_authorization(
                "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request,SignedHeaders=host,Signature=x"
            )
            .is_ok()
        );
    }

    #[test]
    fn malformed_headers_are_invalid_authorization() {
        for bad in [
            "",
            "TC3-HMAC-SHA256",
            "HMAC-SHA1 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/b/c, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc2_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=/b/c/tc3_request, SignedHeaders=host, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host;;x, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, Signature=y, SignedHeaders=h, Signature=x",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, Nonce=1, SignedHeaders=h, Signature=x",
            "TC3-HMAC-SHA256 garbage",
        ] {
            let err = parse_authorization(bad).unwrap_err();
            assert_eq!(err.code(), "AuthFailure.InvalidAuthorization", "{bad:?}");
        }
    }

    #[test]
    fn a_correct_signature_verifies_including_the_port_in_host() {
        let host = "127.0.0.1:8020";
        assert_eq!(check(&signed(KEY, host), &headers(host), BODY), Ok(()));
    }

    #[test]
    fn wrong_key_body_or_host_is_a_signature_failure() {
        let host = "127.0.0.1:8020";
        let wrong_key = check(&signed("other", host), &headers(host), BODY).unwrap_err();
        assert_eq!(wrong_key.code(), "AuthFailure.SignatureFailure");
        let wrong_body = check(&signed(KEY, host), &headers(host), b"{}").unwrap_err();
        assert_eq!(wrong_body.code(), "AuthFailure.SignatureFailure");
        let wrong_host = check(&signed(KEY, host), &headers("127.0.0.1:8021"), BODY).unwrap_err();
        assert_eq!(wrong_host.code(), "AuthFailure.SignatureFailure");
    }

    #[test]
    fn header_values_are_compared_lower_cased_and_trimmed() {
        let mut h = headers("LOCALHOST:1");
        h.insert(
            "content-type",
            HeaderValue::from_static(" Application/JSON "),
        );
        // The client signed lower-cased values (as the document says).
        let auth = sign(
            ID,
            KEY,
            &RequestParts {
                method: "POST",
                host: "localhost:1",
                content_type: "application/json",
                payload: BODY,
                service: SERVICE,
                timestamp: TS,
            },
        )
        .authorization;
        assert_eq!(check(&auth, &h, BODY), Ok(()));
    }

    #[test]
    fn scope_problems_are_named() {
        let host = "h";
        let other_service = signed(KEY, host).replace("/yunjing/", "/cvm/");
        assert_eq!(
            check(&other_service, &headers(host), BODY)
                .unwrap_err()
                .code(),
            "AuthFailure.InvalidAuthorization"
        );
        let other_date = signed(KEY, host).replace("2019-02-25", "2019-02-26");
        let err = check(&other_date, &headers(host), BODY).unwrap_err();
        assert_eq!(err.code(), "AuthFailure.SignatureFailure");
        assert!(err.message().contains("UTC date"));
        let host_only = signed(KEY, host).replace("content-type;host", "host");
        assert_eq!(
            check(&host_only, &headers(host), BODY).unwrap_err().code(),
            "AuthFailure.InvalidAuthorization"
        );
    }

    #[test]
    fn unsigned_payload_hashes_the_literal() {
        let host = "h";
        let mut h = headers(host);
        h.insert(
            "x-tc-content-sha256",
            HeaderValue::from_static("UNSIGNED-PAYLOAD"),
        );
        let auth = sign(
            ID,
            KEY,
            &RequestParts {
                method: "POST",
                host,
                content_type: "application/json",
                payload: b"UNSIGNED-PAYLOAD",
                service: SERVICE,
                timestamp: TS,
            },
        )
        .authorization;
        assert_eq!(check(&auth, &h, BODY), Ok(()));
    }
}
