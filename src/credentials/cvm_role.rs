//! Temporary credentials from the CVM instance metadata service, refreshed before they expire.
//!
//! A CVM instance with a CAM role bound to it gets temporary credentials from its metadata
//! service (plain `http`, link-local, no authentication):
//!
//! - `GET {endpoint}cam/security-credentials/` answers the role name (first non-empty line);
//! - `GET {endpoint}cam/security-credentials/{role}` answers JSON with `TmpSecretId`,
//!   `TmpSecretKey`, `Token`, `ExpiredTime` (Unix seconds), `Expiration` and `Code`
//!   (`"Success"`).
//!
//! [`CvmRole::fetch`] does one round of that; [`run_refresher`] keeps the credentials fresh in
//! the background and hands every new set to a callback (the daemon passes
//! `move |c| client.set_credentials(c)`). When to refresh is [`refresh_at`], a pure function.
//!
//! Answers are hostile until checked: bodies are read through [`crate::api::body::read_capped`]
//! with a cap of [`MAX_ANSWER_BYTES`] (an oversized one is `CvmRoleError.BodyTooLarge`, and
//! the refresher retries it like any failure), the secrets must be printable ASCII (they go
//! into HTTP headers), and an `ExpiredTime` or `Expiration` at or before 1970 is refused; one
//! far in the future is accepted, [`refresh_at`] bounds the wait anyway.
//!
//! The metadata client never uses a proxy (`no_proxy`): the metadata service is link-local,
//! so a proxy could not reach it, and its answers are secrets sent in clear text.
//!
//! Secrets stay in `secrecy::SecretString` from the moment they are parsed; no error message,
//! log line or `Debug` text of this module contains a secret value (errors name the field that
//! is wrong, never its content, and never quote the answer's body).

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Credentials;
// The refresh loop's timing is shared with the assume-role renewer and lives with the loop.
pub use super::refresh::{FORCED_REFRESH_MIN_GAP, MAX_RETRY_DELAY, retry_delay};
use super::refresh::{Refresher, refresh_loop};
use crate::api::body::{BodyError, read_capped};
use crate::clock::unix_now;
use crate::endpoint::with_trailing_slash;

/// Connect timeout for the metadata service: it is on the local network or nowhere.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Whole-request timeout for the metadata service.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Refresh this long before expiry, as the Tencent Cloud SDKs do.
pub const REFRESH_MARGIN_SECS: i64 = 300;
/// Shortest wait before refreshing credentials that already have less than
/// [`REFRESH_MARGIN_SECS`] left: the service most likely hands out the same ones again, so
/// asking again at once would only hammer it.
pub const SHORT_LIVED_MIN_DELAY_SECS: i64 = 5;
/// Longest wait between two fetches, whatever the expiry says: bounds the harm of a wrong
/// local clock or a nonsense `ExpiredTime`.
pub const MAX_REFRESH_DELAY_SECS: i64 = 3_600;
/// Answers larger than this are not metadata answers (real ones are under 4 KiB: a role name,
/// or a JSON object whose `Token` is the largest part).
pub const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest role name accepted, configured or discovered (CAM allows 128 characters).
pub const MAX_ROLE_NAME_BYTES: usize = 128;
/// Longest `TmpSecretId` accepted: it is logged and signed (real ones are about 40 bytes).
pub const MAX_SECRET_ID_BYTES: usize = 128;
/// Log target of this module. Kept as it was before the module moved under `credentials`:
/// operators' log filters (`RUST_LOG=cwp_portwatch::cvm_role=debug`) name it.
const TARGET: &str = "cwp_portwatch::cvm_role";

/// Why CVM role credentials could not be had. Messages name the URL and what is wrong, never a
/// secret value nor the answer's body.
#[derive(Debug, thiserror::Error)]
pub enum CvmRoleError {
    /// The endpoint is unusable or the HTTP client could not be built.
    #[error("cannot use metadata endpoint {endpoint}: {reason}")]
    Setup {
        /// The endpoint as given.
        endpoint: String,
        /// What is wrong.
        reason: String,
    },
    /// No answer: connection refused, timeout, reset (not on a CVM, or the network is down).
    #[error(
        "metadata service unreachable at {url}: {reason} (is this a CVM instance? otherwise \
         choose another [credentials] source)"
    )]
    Unreachable {
        /// The URL asked.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The instance has no CAM role (404, or an empty role list), or the configured role is
    /// not the instance's.
    #[error("no CAM role at {url}: {detail}")]
    NoRole {
        /// The URL asked.
        url: String,
        /// What was found and what to do.
        detail: String,
    },
    /// An answer larger than [`MAX_ANSWER_BYTES`]: not read further. A fault of the service or
    /// of something in between, worth retrying.
    #[error("answer from {url} refused: {reason}")]
    BodyTooLarge {
        /// The URL asked.
        url: String,
        /// The size found and the cap.
        reason: String,
    },
    /// An answer that cannot be used: an HTTP error status, not JSON, `Code` other than
    /// `Success`, a missing or malformed field.
    #[error("unusable answer from {url}: {problem}")]
    BadAnswer {
        /// The URL asked.
        url: String,
        /// What is wrong, naming the field but never quoting a secret.
        problem: String,
    },
}

impl CvmRoleError {
    /// Stable machine-readable code, for `error_code` log fields.
    pub fn code(&self) -> &'static str {
        match self {
            CvmRoleError::Setup { .. } => "CvmRoleError.Setup",
            CvmRoleError::Unreachable { .. } => "CvmRoleError.Unreachable",
            CvmRoleError::NoRole { .. } => "CvmRoleError.NoRole",
            CvmRoleError::BadAnswer { .. } => "CvmRoleError.BadAnswer",
            CvmRoleError::BodyTooLarge { .. } => "CvmRoleError.BodyTooLarge",
        }
    }
}

/// One set of temporary credentials. `Debug` shows the SecretId, never the key or token.
#[derive(Debug, Clone)]
pub struct RoleCredentials {
    /// The credentials; `token` is always `Some` (the `Token` of the answer).
    pub credentials: Credentials,
    /// `ExpiredTime`: when they stop working, Unix seconds.
    pub expires_at: i64,
    /// The role they belong to.
    pub role: String,
}

/// A metadata service client for one instance role. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CvmRole {
    http: reqwest::Client,
    /// Base URL, ending with `/` (`http://metadata.tencentyun.com/latest/meta-data/`).
    metadata_endpoint: Url,
    /// The role; `None`: ask `cam/security-credentials/` at each fetch.
    role: Option<String>,
}

impl CvmRole {
    /// A client for `metadata_endpoint` (`http` or `https`; a missing final `/` is added).
    /// `role = None` asks the service which role the instance has. Timeouts:
    /// [`CONNECT_TIMEOUT`], [`REQUEST_TIMEOUT`].
    pub fn new(metadata_endpoint: Url, role: Option<String>) -> Result<Self, CvmRoleError> {
        let setup = |endpoint: &Url, reason: &str| CvmRoleError::Setup {
            endpoint: endpoint.to_string(),
            reason: reason.to_owned(),
        };
        if !matches!(metadata_endpoint.scheme(), "http" | "https") {
            return Err(setup(
                &metadata_endpoint,
                "the scheme must be http:// or https://",
            ));
        }
        if metadata_endpoint.host_str().is_none_or(str::is_empty) {
            return Err(setup(&metadata_endpoint, "no host name"));
        }
        if metadata_endpoint.query().is_some() || metadata_endpoint.fragment().is_some() {
            return Err(setup(
                &metadata_endpoint,
                "remove the query or fragment (`?…`, `#…`)",
            ));
        }
        let metadata_endpoint = with_trailing_slash(metadata_endpoint);
        let role = role.map(|r| r.trim().to_owned()).filter(|r| !r.is_empty());
        if let Some(role) = &role
            && !valid_role_name(role)
        {
            return Err(setup(
                &metadata_endpoint,
                "the role name is empty, longer than 128 bytes, or contains whitespace, \
                 control characters or `/`",
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| setup(&metadata_endpoint, &format!("cannot set up HTTP: {e}")))?;
        Ok(CvmRole {
            http,
            metadata_endpoint,
            role,
        })
    }

    /// The base URL, ending with `/`.
    pub fn metadata_endpoint(&self) -> &Url {
        &self.metadata_endpoint
    }

    /// The configured role, if any.
    pub fn role(&self) -> Option<&str> {
        self.role.as_deref()
    }

    /// Fetches the current credentials: asks for the role name first unless it was configured.
    pub async fn fetch(&self) -> Result<RoleCredentials, CvmRoleError> {
        let role = match &self.role {
            Some(role) => role.clone(),
            None => self.discover_role().await?,
        };
        let url = self.role_url(&role)?;
        let body = self.get(&url, true).await?;
        let credentials = parse_credentials(&url, &body)?;
        Ok(RoleCredentials {
            role,
            ..credentials
        })
    }

    /// `cam/security-credentials/`: the role name is the first non-empty line.
    async fn discover_role(&self) -> Result<String, CvmRoleError> {
        let url = self.list_url()?;
        let body = self.get(&url, false).await?;
        let text = std::str::from_utf8(&body).map_err(|_| CvmRoleError::BadAnswer {
            url: url.to_string(),
            problem: "the role list is not UTF-8 text".to_owned(),
        })?;
        let Some(role) = text.lines().map(str::trim).find(|line| !line.is_empty()) else {
            return Err(CvmRoleError::NoRole {
                url: url.to_string(),
                detail: "the role list is empty; bind a CAM role to the instance in the CVM \
                         console, or choose another [credentials] source"
                    .to_owned(),
            });
        };
        if !valid_role_name(role) {
            return Err(CvmRoleError::BadAnswer {
                url: url.to_string(),
                problem: "the role name is longer than 128 bytes or contains control characters \
                          or `/`"
                    .to_owned(),
            });
        }
        Ok(role.to_owned())
    }

    fn list_url(&self) -> Result<Url, CvmRoleError> {
        self.metadata_endpoint
            .join("cam/security-credentials/")
            .map_err(|e| CvmRoleError::Setup {
                endpoint: self.metadata_endpoint.to_string(),
                reason: e.to_string(),
            })
    }

    fn role_url(&self, role: &str) -> Result<Url, CvmRoleError> {
        let mut url = self.list_url()?;
        url.path_segments_mut()
            .map_err(|()| CvmRoleError::Setup {
                endpoint: self.metadata_endpoint.to_string(),
                reason: "the URL cannot have a path".to_owned(),
            })?
            .pop_if_empty()
            .push(role);
        Ok(url)
    }

    /// One GET; the body of a 2xx answer. `for_role`: a 404 means that role is not the
    /// instance's, otherwise that the instance has no role.
    async fn get(&self, url: &Url, for_role: bool) -> Result<Vec<u8>, CvmRoleError> {
        let unreachable = |e: reqwest::Error| CvmRoleError::Unreachable {
            url: url.to_string(),
            reason: transport_reason(&e),
        };
        let response = self
            .http
            .get(url.clone())
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            let detail = if for_role {
                "404: the instance has no such role; check [credentials] role, or leave it out to \
                 use the instance's role"
            } else {
                "404: the instance has no CAM role; bind one in the CVM console, or choose \
                 another [credentials] source"
            };
            return Err(CvmRoleError::NoRole {
                url: url.to_string(),
                detail: detail.to_owned(),
            });
        }
        if !status.is_success() {
            return Err(CvmRoleError::BadAnswer {
                url: url.to_string(),
                problem: format!("HTTP status {status}"),
            });
        }
        read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| match e {
                BodyError::Read(e) => unreachable(e),
                too_large @ BodyError::TooLarge { .. } => CvmRoleError::BodyTooLarge {
                    url: url.to_string(),
                    reason: too_large.to_string(),
                },
            })
    }
}

/// A role name we can put in a URL path segment and a log line: the CAM rule, shared with
/// `check` so that it refuses what [`CvmRole::new`] would refuse at run time.
fn valid_role_name(role: &str) -> bool {
    crate::credentials::is_cam_role_name(role) && role.len() <= MAX_ROLE_NAME_BYTES
}

/// A short reason for a transport error (the URL is already in the message).
fn transport_reason(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(source) = root.source() {
        root = source;
    }
    if e.is_timeout() {
        format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
    } else if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        root.to_string()
    }
}

/// Parses the credentials answer. Works on a `serde_json::Value` so that no error message can
/// quote a value (serde's type errors would).
fn parse_credentials(url: &Url, body: &[u8]) -> Result<RoleCredentials, CvmRoleError> {
    let bad = |problem: String| CvmRoleError::BadAnswer {
        url: url.to_string(),
        problem,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(bad("not a JSON object".to_owned()));
    };
    match object.get("Code") {
        Some(Value::String(code)) if code == "Success" => {}
        Some(Value::String(code)) => {
            let code: String = code.chars().take(64).collect();
            return Err(bad(format!("Code is {code:?}, not \"Success\"")));
        }
        Some(_) => return Err(bad("Code is not a string".to_owned())),
        None => return Err(bad("Code is missing".to_owned())),
    }
    let text = |name: &str| credential_field(object, name).map_err(bad);
    let secret_id = text("TmpSecretId")?;
    if secret_id.len() > MAX_SECRET_ID_BYTES {
        return Err(bad(format!(
            "TmpSecretId is longer than {MAX_SECRET_ID_BYTES} bytes"
        )));
    }
    let secret_key = SecretString::from(text("TmpSecretKey")?);
    let token = SecretString::from(text("Token")?);
    let expires_at = expiry(object).map_err(bad)?;
    Ok(RoleCredentials {
        credentials: Credentials {
            secret_id,
            secret_key,
            token: Some(token),
        },
        expires_at,
        role: String::new(),
    })
}

/// A credential string of an answer (`TmpSecretId`, `TmpSecretKey`, `Token`): present,
/// non-empty, printable ASCII (it goes into HTTP headers). The error names the field, never
/// the value. Shared with [`super::assume_role`], whose answers carry the same fields.
pub(super) fn credential_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, String> {
    match object.get(name) {
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is empty")),
        Some(Value::String(s)) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(format!("{name} contains whitespace or control characters"))
        }
        // They go into HTTP headers, which take visible ASCII only.
        Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => Err(format!(
            "{name} contains characters other than printable ASCII"
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

/// `ExpiredTime` (Unix seconds, a number or a string of digits), else `Expiration` (RFC 3339).
/// Shared with [`super::assume_role`]: STS answers carry the same two fields.
pub(super) fn expiry(object: &serde_json::Map<String, Value>) -> Result<i64, String> {
    match object.get("ExpiredTime") {
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|t| *t > 0)
            .ok_or_else(|| "ExpiredTime is not a positive whole number".to_owned()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| "ExpiredTime is not a positive whole number".to_owned()),
        Some(_) => Err("ExpiredTime is not a number".to_owned()),
        None => match object.get("Expiration") {
            Some(Value::String(s)) => time::OffsetDateTime::parse(
                s.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| "ExpiredTime is missing and Expiration is not RFC 3339".to_owned())
            .and_then(|t| {
                Some(t.unix_timestamp())
                    .filter(|t| *t > 0)
                    .ok_or_else(|| "Expiration is not after 1970".to_owned())
            }),
            _ => Err("ExpiredTime is missing".to_owned()),
        },
    }
}

/// How long to wait, from `now_unix`, before fetching again credentials that expire at
/// `expires_at` (both Unix seconds):
///
/// - normally [`REFRESH_MARGIN_SECS`] (300 s) before expiry, as the SDKs do, but at least 1 s;
/// - credentials that already have 300 s or less left (or are expired): half of what is left,
///   but at least [`SHORT_LIVED_MIN_DELAY_SECS`] (5 s) — the service probably hands out the
///   same ones until it rotates them, so this converges on the rotation without a busy loop;
/// - never more than [`MAX_REFRESH_DELAY_SECS`] (1 h).
pub fn refresh_at(now_unix: i64, expires_at: i64) -> Duration {
    let remaining = expires_at.saturating_sub(now_unix);
    let secs = if remaining > REFRESH_MARGIN_SECS {
        remaining - REFRESH_MARGIN_SECS
    } else {
        (remaining / 2).max(SHORT_LIVED_MIN_DELAY_SECS)
    };
    Duration::from_secs(secs.clamp(1, MAX_REFRESH_DELAY_SECS) as u64)
}

/// Keeps CVM role credentials fresh until `shutdown`: fetch, hand the credentials to
/// `on_update`, sleep until [`refresh_at`], repeat. The first fetch happens at once.
///
/// - A failed fetch logs a warning (target `cwp_portwatch::cvm_role`, field `error_code`) and
///   is retried after [`retry_delay`] (1 s, 2 s, 4 s, … 60 s); `on_update` is not called, so the
///   last good credentials stay in use.
/// - `refresh_now.notify_one()` (the engine, on `AuthFailure.TokenFailure`) cuts the sleep
///   short; the fetch then happens at once, but never sooner than [`FORCED_REFRESH_MIN_GAP`]
///   after the previous one. While retrying after failures it is not listened to (the retries
///   are already under way); a request made then is served after the next success.
/// - `shutdown` stops it at once, also in the middle of a fetch.
pub async fn run_refresher(
    role: CvmRole,
    on_update: impl Fn(Credentials) + Send + Sync + 'static,
    refresh_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    refresh_loop(role, None, on_update, refresh_now, shutdown).await;
}

impl Refresher for CvmRole {
    type Fresh = RoleCredentials;
    type Error = CvmRoleError;

    fn fetch(&self) -> impl Future<Output = Result<RoleCredentials, CvmRoleError>> + Send {
        CvmRole::fetch(self)
    }

    fn fetched(&self, fresh: &RoleCredentials, failures: u32) -> Duration {
        let delay = refresh_at(unix_now(), fresh.expires_at);
        if failures > 0 {
            tracing::info!(
                target: TARGET,
                role = %fresh.role,
                secret_id = %crate::credentials::masked_secret_id(&fresh.credentials.secret_id),
                expires_at = fresh.expires_at,
                failures,
                "CVM role credentials fetched again after failures"
            );
        } else {
            tracing::debug!(
                target: TARGET,
                role = %fresh.role,
                secret_id = %crate::credentials::masked_secret_id(&fresh.credentials.secret_id),
                expires_at = fresh.expires_at,
                refresh_in_secs = delay.as_secs(),
                "CVM role credentials fetched"
            );
        }
        delay
    }

    fn into_credentials(fresh: RoleCredentials) -> Credentials {
        fresh.credentials
    }

    fn failed(&self, error: &CvmRoleError, failures: u32, retry_in: Duration) {
        tracing::warn!(
            target: TARGET,
            error_code = error.code(),
            error = %error,
            failures,
            retry_in_secs = retry_in.as_secs(),
            "cannot fetch CVM role credentials; retrying"
        );
    }

    fn requested(&self) {
        tracing::debug!(target: TARGET, "CVM role credentials refresh requested");
    }

    fn expired(&self, fresh: &RoleCredentials) -> bool {
        fresh.expires_at <= unix_now()
    }

    fn arrived_expired(&self, fresh: &RoleCredentials, retry_in: Duration) {
        tracing::warn!(
            target: TARGET,
            role = %fresh.role,
            secret_id = %crate::credentials::masked_secret_id(&fresh.credentials.secret_id),
            expires_at = fresh.expires_at,
            now = unix_now(),
            retry_in_secs = retry_in.as_secs(),
            "the metadata service hands out CVM role credentials that have expired already \
             (or this host's clock is wrong); asking again less and less often"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::refresh::forced_refresh_at;

    const NOW: i64 = 1_700_000_000;

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn refresh_at_is_300_s_before_expiry() {
        assert_eq!(secs(refresh_at(NOW, NOW + 303)), 3);
        assert_eq!(secs(refresh_at(NOW, NOW + 301)), 1);
        assert_eq!(secs(refresh_at(NOW, NOW + 1_800)), 1_500);
        assert_eq!(secs(refresh_at(NOW, NOW + 3_900)), 3_600);
    }

    #[test]
    fn refresh_at_is_capped_at_an_hour() {
        assert_eq!(secs(refresh_at(NOW, NOW + 43_200)), 3_600);
        assert_eq!(secs(refresh_at(NOW, i64::MAX)), 3_600);
        assert_eq!(secs(refresh_at(i64::MIN, i64::MAX)), 3_600);
    }

    #[test]
    fn short_lived_credentials_halve_the_wait_without_busy_looping() {
        assert_eq!(secs(refresh_at(NOW, NOW + 300)), 150);
        assert_eq!(secs(refresh_at(NOW, NOW + 100)), 50);
        assert_eq!(secs(refresh_at(NOW, NOW + 12)), 6);
        assert_eq!(secs(refresh_at(NOW, NOW + 9)), 5);
        assert_eq!(secs(refresh_at(NOW, NOW)), 5);
        assert_eq!(secs(refresh_at(NOW, NOW - 1_000)), 5);
        assert_eq!(secs(refresh_at(NOW, i64::MIN)), 5);
    }

    #[test]
    fn refresh_never_waits_past_expiry_when_there_is_time() {
        for remaining in 11..10_000 {
            let wait = secs(refresh_at(NOW, NOW + remaining)) as i64;
            assert!(wait >= 1, "{remaining}");
            assert!(wait < remaining, "{remaining}: {wait}");
        }
    }

    #[test]
    fn retry_delay_doubles_up_to_a_minute() {
        let got: Vec<u64> = (1..=9).map(|n| secs(retry_delay(n))).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(secs(retry_delay(0)), 1);
        assert_eq!(secs(retry_delay(u32::MAX)), 60);
    }

    fn url() -> Url {
        Url::parse("http://127.0.0.1:1/latest/meta-data/cam/security-credentials/r").unwrap()
    }

    #[test]
    fn parses_an_answer() {
        let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k3y","Token":"t0k","ExpiredTime":1700000900,"Expiration":"2023-11-14T22:28:20Z","Code":"Success"}"#;
        let got = parse_credentials(&url(), body).unwrap();
        assert_eq!(got.credentials.secret_id, "AKIDt");
        assert_eq!(got.expires_at, 1_700_000_900);
        let text = format!("{got:?}");
        assert!(!text.contains("k3y") && !text.contains("t0k"), "{text}");
    }

    #[test]
    fn expiry_falls_back_to_expiration() {
        let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t","Expiration":"2023-11-14T22:28:20Z","Code":"Success"}"#;
        assert_eq!(
            parse_credentials(&url(), body).unwrap().expires_at,
            1_700_000_900
        );
        let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t","ExpiredTime":"1700000900","Code":"Success"}"#;
        assert_eq!(
            parse_credentials(&url(), body).unwrap().expires_at,
            1_700_000_900
        );
    }

    #[test]
    fn bad_answers_name_the_field_not_the_value() {
        let cases: &[(&[u8], &str)] = &[
            (b"<html>", "not JSON"),
            (b"[1]", "not a JSON object"),
            (br#"{"Code":"Failed","TmpSecretKey":"s3cr3t"}"#, "\"Failed\""),
            (br#"{"TmpSecretKey":"s3cr3t"}"#, "Code is missing"),
            (br#"{"Code":"Success","TmpSecretKey":"s3cr3t"}"#, "TmpSecretId is missing"),
            (
                br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":7,"Token":"s3cr3t"}"#,
                "TmpSecretKey is not a string",
            ),
            (
                br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3 cr3t","Token":"t"}"#,
                "TmpSecretKey contains whitespace",
            ),
            (
                br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3cr3t","Token":"t","ExpiredTime":"s3cr3t"}"#,
                "ExpiredTime is not a positive whole number",
            ),
            (
                br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3cr3t","Token":"t"}"#,
                "ExpiredTime is missing",
            ),
        ];
        for (body, want) in cases {
            let error = parse_credentials(&url(), body).unwrap_err();
            let text = error.to_string();
            assert_eq!(error.code(), "CvmRoleError.BadAnswer", "{text}");
            assert!(text.contains(want), "{text}");
            assert!(
                !text.contains("s3cr3t") && !text.contains("s3 cr3t"),
                "{text}"
            );
        }
    }

    #[test]
    fn absurd_expiry_values_are_refused_not_trusted() {
        let with = |expiry: &str| {
            format!(
                r#"{{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t",{expiry},"Code":"Success"}}"#
            )
        };
        for bad in [
            r#""ExpiredTime":-1"#,
            r#""ExpiredTime":0"#,
            r#""ExpiredTime":9223372036854775808"#,
            r#""ExpiredTime":1e300"#,
            r#""ExpiredTime":"-9223372036854775808""#,
            r#""Expiration":"0001-01-01T00:00:00Z""#,
            r#""Expiration":"1969-12-31T23:59:59Z""#,
        ] {
            let error = parse_credentials(&url(), with(bad).as_bytes()).unwrap_err();
            assert_eq!(error.code(), "CvmRoleError.BadAnswer", "{bad}: {error}");
        }
        // Far in the future is accepted: refresh_at bounds the wait to an hour anyway.
        let got = parse_credentials(
            &url(),
            with(r#""ExpiredTime":9223372036854775807"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(got.expires_at, i64::MAX);
        assert_eq!(secs(refresh_at(NOW, got.expires_at)), 3_600);
    }

    #[test]
    fn secrets_that_cannot_go_into_a_header_are_refused() {
        for (field, value) in [
            ("TmpSecretId", "AKIDé"),
            ("TmpSecretKey", "k\u{0}"),
            ("Token", "tök"),
            ("Token", "t\u{7f}"),
        ] {
            let mut answer = serde_json::json!({
                "TmpSecretId": "AKIDt", "TmpSecretKey": "k", "Token": "t",
                "ExpiredTime": 1_700_000_900, "Code": "Success"
            });
            answer[field] = Value::String(value.to_owned());
            let body = serde_json::to_vec(&answer).unwrap();
            let error = parse_credentials(&url(), &body).unwrap_err();
            assert!(error.to_string().contains(field), "{field}: {error}");
        }
    }

    #[test]
    fn role_names_and_secret_ids_are_bounded() {
        assert!(valid_role_name(&"r".repeat(MAX_ROLE_NAME_BYTES)));
        assert!(!valid_role_name(&"r".repeat(MAX_ROLE_NAME_BYTES + 1)));
        let error =
            CvmRole::new(Url::parse("http://h/").unwrap(), Some("r".repeat(10_000))).unwrap_err();
        assert_eq!(error.code(), "CvmRoleError.Setup");
        let body = serde_json::json!({
            "TmpSecretId": "A".repeat(MAX_SECRET_ID_BYTES + 1), "TmpSecretKey": "k", "Token": "t",
            "ExpiredTime": 1_700_000_900, "Code": "Success"
        });
        let error = parse_credentials(&url(), &serde_json::to_vec(&body).unwrap()).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("TmpSecretId is longer than"), "{text}");
        assert!(text.len() < 300, "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_request_at_the_end_of_time_does_not_panic() {
        // The last representable instant.
        let mut far = tokio::time::Instant::now();
        let mut step = Duration::MAX;
        while !step.is_zero() {
            match far.checked_add(step) {
                Some(later) => far = later,
                None => step /= 2,
            }
        }
        assert_eq!(forced_refresh_at(far), far);
        let now = tokio::time::Instant::now();
        assert_eq!(forced_refresh_at(now), now + FORCED_REFRESH_MIN_GAP);
    }

    #[test]
    fn new_checks_the_endpoint_and_adds_the_slash() {
        let role = CvmRole::new(Url::parse("http://127.0.0.1:9/meta").unwrap(), None).unwrap();
        assert_eq!(
            role.metadata_endpoint().as_str(),
            "http://127.0.0.1:9/meta/"
        );
        assert_eq!(
            role.role_url("R").unwrap().as_str(),
            "http://127.0.0.1:9/meta/cam/security-credentials/R"
        );
        assert_eq!(
            role.list_url().unwrap().as_str(),
            "http://127.0.0.1:9/meta/cam/security-credentials/"
        );
        let role = CvmRole::new(
            Url::parse("http://127.0.0.1:9/m/").unwrap(),
            Some(" R \n".into()),
        )
        .unwrap();
        assert_eq!(role.role(), Some("R"));
        for bad in ["ftp://h/", "http://h/?q=1", "file:///x/"] {
            let error = CvmRole::new(Url::parse(bad).unwrap(), None).unwrap_err();
            assert_eq!(error.code(), "CvmRoleError.Setup", "{bad}: {error}");
        }
        let error = CvmRole::new(Url::parse("http://h/").unwrap(), Some("a/b".into())).unwrap_err();
        assert_eq!(error.code(), "CvmRoleError.Setup");
    }
}
