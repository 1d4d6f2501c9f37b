//! Typed API errors, their stable codes, and what a poller should do about each.
//!
//! Every failure of a call ends up as one [`ApiError`] with a stable [`ApiError::code`]: the
//! API's own code for API errors, `ClientError.*` for what happened on our side of the wire.
//! [`classify`] maps a code to an [`ErrorClass`] per the reference table, so the engine decides
//! by class, never by string matching of its own.

use std::time::Duration;

/// The API's error codes that are statuses of an agent rather than failures of a poll.
pub const AGENT_STATUS_CODES: [(&str, &str); 4] = [
    ("FailedOperation.AgentOffline", "AGENT_OFFLINE"),
    ("FailedOperation.OpenPortTaskNotFound", "NO_TASK"),
    ("ResourceNotFound", "NOT_FOUND"),
    ("InvalidParameter.InvalidFormat", "INVALID"),
];

/// Codes that mean no request can succeed as configured (the credentials themselves, or the
/// action, version or client address): alert, do not hammer.
const FATAL_CODES: [&str; 12] = [
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.SignatureFailure",
    "AuthFailure.InvalidAuthorization",
    "AuthFailure.MFAFailure",
    "InvalidAction",
    "NoSuchVersion",
    "ActionOffline",
    "IpInBlacklist",
    "IpNotInWhitelist",
    "NoSuchProduct",
    "UnsupportedProtocol",
];

/// Codes that refuse one request, not the credentials: a CAM policy may deny access to some
/// resources (one agent's Uuid) and allow the rest, so these back off that agent alone. Only
/// when they come for every agent does the engine treat them as refused credentials.
const DENIED_CODES: [&str; 2] = ["AuthFailure.UnauthorizedOperation", "UnauthorizedOperation"];

/// Every error code the API reference (`shared/reference/tencent-cloud-api.md`) and this
/// client name: the vocabulary a metric label or an alert may rely on. Codes outside it are
/// the API's (or a hostile server's) inventions, which a bounded label may fold into `other`;
/// these never are (`RequestLimitExceeded`, `AuthFailure.*` are what the shipped alerts match).
pub const KNOWN_CODES: [&str; 51] = [
    // Throttled.
    "RequestLimitExceeded",
    "RequestLimitExceeded.UinLimitExceeded",
    "RequestLimitExceeded.IPLimitExceeded",
    "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
    // Transient.
    "InternalError",
    "InternalError.MainDBFail",
    "ServiceUnavailable",
    "ResourceUnavailable",
    // Authentication and permission.
    "AuthFailure.SignatureExpire",
    "AuthFailure.TokenFailure",
    "AuthFailure.SecretIdNotFound",
    "AuthFailure.InvalidSecretId",
    "AuthFailure.SignatureFailure",
    "AuthFailure.InvalidAuthorization",
    "AuthFailure.MFAFailure",
    "AuthFailure.UnauthorizedOperation",
    "UnauthorizedOperation",
    // Fatal configuration.
    "InvalidAction",
    "NoSuchVersion",
    "ActionOffline",
    "IpInBlacklist",
    "IpNotInWhitelist",
    "NoSuchProduct",
    "UnsupportedProtocol",
    // About one agent, or one request.
    "FailedOperation",
    "FailedOperation.AgentOffline",
    "FailedOperation.OpenPortTaskNotFound",
    "FailedOperation.CreateOpenPortTask",
    "ResourceNotFound",
    "InvalidParameter",
    "InvalidParameter.InvalidFormat",
    "InvalidParameterValue",
    "MissingParameter",
    "UnknownParameter",
    "InvalidRequest",
    "LimitExceeded",
    "DryRunOperation",
    "RequestSizeLimitExceeded",
    "ResourceInUse",
    "ResourceInsufficient",
    "ResponseSizeLimitExceeded",
    "UnsupportedOperation",
    "UnsupportedRegion",
    // Our side of the wire ([`ApiError::code`], `body::BodyError::code`), and the Go SDK's
    // name for a non-200 answer (the reference quotes it).
    "ClientError.Timeout",
    "ClientError.Transport",
    "ClientError.HttpStatus",
    "ClientError.Decode",
    "ClientError.BodyTooLarge",
    "ClientError.HttpStatusCodeError",
    "ClientError.Certificate",
    "ClientError.Fenced",
];

/// Whether `code` is one of [`KNOWN_CODES`].
pub fn is_known_code(code: &str) -> bool {
    KNOWN_CODES.contains(&code)
}

/// What the caller should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// `RequestLimitExceeded*`: slow down, retry later.
    Throttled,
    /// Server or network trouble: retry with backoff.
    Transient,
    /// `AuthFailure.SignatureExpire`: correct the clock and sign again.
    Clock,
    /// `AuthFailure.TokenFailure`: refresh temporary credentials, else alert.
    CredentialsRefresh,
    /// The credentials or the configuration are refused for every request: alert, close the
    /// credentials gate, do not hammer.
    Fatal,
    /// Permission denied for this one request (`UnauthorizedOperation`: a CAM policy that
    /// does not cover this agent's resource): a failed poll of this agent alone, retried with
    /// backoff; the others go on.
    Denied,
    /// The answer is a status of the agent (e.g. `AGENT_OFFLINE`), not a failed poll.
    AgentStatus(&'static str),
    /// A problem with this one agent's request (other `FailedOperation.*`,
    /// `InvalidParameter*`, …): a failed poll, retried at the agent's normal pace.
    Request,
}

impl ErrorClass {
    /// Stable lower-case name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Transient => "transient",
            ErrorClass::Clock => "clock",
            ErrorClass::CredentialsRefresh => "credentials",
            ErrorClass::Fatal => "fatal",
            ErrorClass::Denied => "denied",
            ErrorClass::AgentStatus(_) => "agent_status",
            ErrorClass::Request => "request",
        }
    }
}

/// Classifies an error code. Unknown codes get the class of their family (the part before the
/// first `.`), and a code nobody has heard of is transient: retrying it with backoff is safe,
/// treating it as fatal would silence an agent for good.
pub fn classify(code: &str) -> ErrorClass {
    if let Some((_, status)) = AGENT_STATUS_CODES.iter().find(|(c, _)| *c == code) {
        return ErrorClass::AgentStatus(status);
    }
    if code.starts_with("RequestLimitExceeded") {
        return ErrorClass::Throttled;
    }
    if FATAL_CODES.contains(&code) {
        return ErrorClass::Fatal;
    }
    if DENIED_CODES.contains(&code) || code.starts_with("UnauthorizedOperation.") {
        return ErrorClass::Denied;
    }
    match code {
        "AuthFailure.SignatureExpire" => return ErrorClass::Clock,
        "AuthFailure.TokenFailure" => return ErrorClass::CredentialsRefresh,
        "ServiceUnavailable" | "ResourceUnavailable" => return ErrorClass::Transient,
        _ => {}
    }
    let family = code.split('.').next().unwrap_or(code);
    match family {
        "InternalError" | "ClientError" | "ResourceUnavailable" | "ServiceUnavailable" => {
            ErrorClass::Transient
        }
        // Any other authentication failure is about the credentials, which polling again
        // cannot fix.
        "AuthFailure" => ErrorClass::Fatal,
        "FailedOperation"
        | "InvalidParameter"
        | "InvalidParameterValue"
        | "MissingParameter"
        | "UnknownParameter"
        | "ResourceNotFound"
        | "ResourceInUse"
        | "ResourceInsufficient"
        | "InvalidRequest"
        | "UnsupportedOperation"
        | "LimitExceeded"
        | "DryRunOperation"
        | "RequestSizeLimitExceeded"
        | "ResponseSizeLimitExceeded"
        | "UnsupportedRegion" => ErrorClass::Request,
        _ => ErrorClass::Transient,
    }
}

/// One failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// The API answered with `Response.Error` (HTTP 200).
    #[error("{code}: {message}{}", rid(request_id))]
    Api {
        /// The API's error code, e.g. `RequestLimitExceeded`.
        code: String,
        /// The API's message (may change between releases: decide on `code`).
        message: String,
        /// `Response.RequestId`, when present.
        request_id: Option<String>,
    },
    /// No complete answer within the client timeout.
    #[error("no answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// Connection refused, reset, closed early, TLS failure, …
    #[error("transport error: {0}")]
    Transport(String),
    /// The server's TLS certificate was refused (unknown issuer, wrong host name, expired):
    /// what it means and what to do ([`crate::tls::certificate_problem`]). Transient by its
    /// `ClientError` family: the engine retries with backoff while the operator fixes the
    /// trust (`[api] ca_file`, `ca-certificates`).
    #[error("TLS certificate refused: {0}")]
    Certificate(String),
    /// Not sent: this process cannot prove that it leads its `[ha]` election (its fence is
    /// closed, `crate::ha::Fence`), so another process may be polling. Nothing left the host.
    /// The engine does not send while the fence is closed; a request that meets a fence closing
    /// under it is put back in its queue with no status change and no failure event.
    #[error("not sent: this process cannot prove that it leads (its [ha] fence is closed)")]
    Fenced,
    /// A non-200 answer: a gateway or proxy, not the API itself.
    #[error("HTTP {status} from the endpoint: {excerpt}{}", rid(request_id))]
    HttpStatus {
        /// The HTTP status code.
        status: u16,
        /// The start of the body, for the operator.
        excerpt: String,
        /// A RequestId if the body carried one.
        request_id: Option<String>,
    },
    /// HTTP 200 but not an answer we can read (not JSON, fields missing).
    #[error("cannot read the answer: {reason}{}", rid(request_id))]
    Decode {
        /// What was wrong.
        reason: String,
        /// A RequestId if one could be found.
        request_id: Option<String>,
    },
}

fn rid(request_id: &Option<String>) -> String {
    request_id
        .as_deref()
        .map(|id| format!(" (RequestId {id})"))
        .unwrap_or_default()
}

impl ApiError {
    /// Stable machine-readable code: the API's code or `ClientError.*`.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Api { code, .. } => code,
            ApiError::Timeout(_) => "ClientError.Timeout",
            ApiError::Transport(_) => "ClientError.Transport",
            ApiError::Certificate(_) => "ClientError.Certificate",
            ApiError::HttpStatus { .. } => "ClientError.HttpStatus",
            ApiError::Decode { .. } => "ClientError.Decode",
            ApiError::Fenced => "ClientError.Fenced",
        }
    }

    /// The RequestId to quote to support, when the answer had one.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            ApiError::Api { request_id, .. }
            | ApiError::HttpStatus { request_id, .. }
            | ApiError::Decode { request_id, .. } => request_id.as_deref(),
            ApiError::Timeout(_)
            | ApiError::Transport(_)
            | ApiError::Certificate(_)
            | ApiError::Fenced => None,
        }
    }

    /// The message without code and RequestId, for the `error_message` event field.
    pub fn message(&self) -> String {
        match self {
            ApiError::Api { message, .. } => message.clone(),
            ApiError::HttpStatus {
                status, excerpt, ..
            } => format!("HTTP {status}: {excerpt}"),
            ApiError::Decode { reason, .. } => reason.clone(),
            other => other.to_string(),
        }
    }

    /// What to do about it.
    pub fn class(&self) -> ErrorClass {
        classify(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_of_the_reference_table_has_its_class() {
        use ErrorClass::*;
        let table: &[(&str, ErrorClass)] = &[
            ("RequestLimitExceeded", Throttled),
            ("RequestLimitExceeded.UinLimitExceeded", Throttled),
            ("RequestLimitExceeded.IPLimitExceeded", Throttled),
            (
                "RequestLimitExceeded.GlobalRegionUinLimitExceeded",
                Throttled,
            ),
            ("RequestLimitExceeded.SomethingNew", Throttled),
            ("InternalError", Transient),
            ("InternalError.MainDBFail", Transient),
            ("ServiceUnavailable", Transient),
            ("ResourceUnavailable", Transient),
            ("ClientError.Timeout", Transient),
            ("ClientError.Transport", Transient),
            ("ClientError.HttpStatus", Transient),
            ("ClientError.Decode", Transient),
            ("ClientError.Certificate", Transient),
            ("ClientError.Fenced", Transient),
            ("AuthFailure.SignatureExpire", Clock),
            ("AuthFailure.TokenFailure", CredentialsRefresh),
            ("AuthFailure.SecretIdNotFound", Fatal),
            ("AuthFailure.InvalidSecretId", Fatal),
            ("AuthFailure.SignatureFailure", Fatal),
            ("AuthFailure.InvalidAuthorization", Fatal),
            ("AuthFailure.UnauthorizedOperation", Denied),
            ("UnauthorizedOperation", Denied),
            ("UnauthorizedOperation.DeniedByPolicy", Denied),
            ("NoSuchProduct", Fatal),
            ("UnsupportedProtocol", Fatal),
            ("AuthFailure.MFAFailure", Fatal),
            ("AuthFailure.SomethingNew", Fatal),
            ("InvalidAction", Fatal),
            ("NoSuchVersion", Fatal),
            ("ActionOffline", Fatal),
            ("IpInBlacklist", Fatal),
            ("IpNotInWhitelist", Fatal),
            ("FailedOperation.AgentOffline", AgentStatus("AGENT_OFFLINE")),
            (
                "FailedOperation.OpenPortTaskNotFound",
                AgentStatus("NO_TASK"),
            ),
            ("ResourceNotFound", AgentStatus("NOT_FOUND")),
            ("InvalidParameter.InvalidFormat", AgentStatus("INVALID")),
            ("FailedOperation.CreateOpenPortTask", Request),
            ("FailedOperation", Request),
            ("InvalidParameter", Request),
            ("InvalidParameterValue", Request),
            ("MissingParameter", Request),
            ("UnknownParameter", Request),
            ("LimitExceeded", Request),
            ("ResourceNotFound.Other", Request),
            ("UnsupportedOperation", Request),
            ("SomethingNobodyKnows", Transient),
            ("", Transient),
            ("....", Transient),
        ];
        for (code, class) in table {
            assert_eq!(classify(code), *class, "code {code:?}");
        }
    }

    /// The metrics label guard keeps these labels whatever else comes (issue 20 item 9): so
    /// every code this module and the client decide on or produce must be in the list.
    #[test]
    fn every_code_named_here_is_a_known_code() {
        let errors = [
            ApiError::Timeout(Duration::ZERO),
            ApiError::Transport(String::new()),
            ApiError::Certificate(String::new()),
            ApiError::Fenced,
            ApiError::Decode {
                reason: String::new(),
                request_id: None,
            },
            ApiError::HttpStatus {
                status: 502,
                excerpt: String::new(),
                request_id: None,
            },
        ];
        let too_large = super::super::body::BodyError::TooLarge {
            limit: 1,
            declared: None,
        };
        let named = FATAL_CODES
            .iter()
            .chain(&DENIED_CODES)
            .chain(AGENT_STATUS_CODES.iter().map(|(code, _)| code))
            .copied()
            .chain(errors.iter().map(ApiError::code))
            .chain([
                too_large.code(),
                "AuthFailure.SignatureExpire",
                "AuthFailure.TokenFailure",
                "ServiceUnavailable",
                "ResourceUnavailable",
                "RequestLimitExceeded",
            ]);
        for code in named {
            assert!(is_known_code(code), "{code} is not in KNOWN_CODES");
        }
        let mut sorted = KNOWN_CODES.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), KNOWN_CODES.len(), "no code twice");
    }

    #[test]
    fn class_names_are_stable_and_distinct() {
        use ErrorClass::*;
        let names: Vec<&str> = [
            Throttled,
            Transient,
            Clock,
            CredentialsRefresh,
            Fatal,
            Denied,
            AgentStatus("NO_TASK"),
            Request,
        ]
        .iter()
        .map(ErrorClass::name)
        .collect();
        assert_eq!(
            names,
            [
                "throttled",
                "transient",
                "clock",
                "credentials",
                "fatal",
                "denied",
                "agent_status",
                "request"
            ]
        );
    }

    /// Code, RequestId, message and text of every kind of error: what events and reports
    /// show.
    #[test]
    fn every_error_kind_has_its_code_request_id_and_message() {
        let api = ApiError::Api {
            code: "InternalError".into(),
            message: "try later".into(),
            request_id: Some("r-api".into()),
        };
        let http = ApiError::HttpStatus {
            status: 502,
            excerpt: "bad gateway".into(),
            request_id: None,
        };
        let decode = ApiError::Decode {
            reason: "not JSON".into(),
            request_id: None,
        };
        let timeout = ApiError::Timeout(Duration::from_secs(2));
        let transport = ApiError::Transport("reset".into());
        let cases = [
            (&api, "InternalError", Some("r-api"), "try later"),
            (
                &http,
                "ClientError.HttpStatus",
                None,
                "HTTP 502: bad gateway",
            ),
            (&decode, "ClientError.Decode", None, "not JSON"),
            (&timeout, "ClientError.Timeout", None, "no answer within 2s"),
            (
                &transport,
                "ClientError.Transport",
                None,
                "transport error: reset",
            ),
        ];
        for (e, code, request_id, message) in cases {
            assert_eq!(e.code(), code);
            assert_eq!(e.request_id(), request_id, "{code}");
            assert_eq!(e.message(), message, "{code}");
        }
        assert_eq!(
            api.to_string(),
            "InternalError: try later (RequestId r-api)"
        );
        assert_eq!(http.to_string(), "HTTP 502 from the endpoint: bad gateway");
        assert_eq!(api.class(), ErrorClass::Transient);
        assert_eq!(
            ApiError::HttpStatus {
                status: 502,
                excerpt: String::new(),
                request_id: Some("r-http".into()),
            }
            .request_id(),
            Some("r-http")
        );
    }

    #[test]
    fn client_side_errors_have_stable_codes_and_request_ids() {
        let e = ApiError::Decode {
            reason: "missing Response.Status".into(),
            request_id: Some("r-1".into()),
        };
        assert_eq!(e.code(), "ClientError.Decode");
        assert_eq!(e.request_id(), Some("r-1"));
        assert!(e.to_string().contains("RequestId r-1"));
        assert_eq!(
            ApiError::Timeout(Duration::from_secs(2)).code(),
            "ClientError.Timeout"
        );
        assert_eq!(
            ApiError::HttpStatus {
                status: 503,
                excerpt: String::new(),
                request_id: None
            }
            .class(),
            ErrorClass::Transient
        );
    }
}
