//! `source = "assume-role"`: temporary credentials from STS `AssumeRole`, asked for with base
//! credentials from any other source, and renewed before they expire.
//!
//! This module owns the STS side: the checks of `role_arn` and `role_session_name` that
//! `check` shares ([`is_role_arn`], [`is_role_session_name`]), one `AssumeRole` round
//! ([`AssumeRole::fetch`]: base credentials, then a TC3-signed call with service `sts`, version
//! `2018-08-13`), when to renew ([`renew_after`], a pure function) and the background renewer
//! ([`run_renewer`]), which hands every new set to a callback (the daemon passes
//! `move |c| client.set_credentials(c)`), as the CVM-role refresher does.
//!
//! [`AssumeRole`] is self-contained: it takes its request, the STS endpoint and its base
//! credentials, and keeps no global state, so several accounts can each have their own.
//!
//! The base credentials are fetched again for every call ([`BaseCredentials`]): a rotated
//! SecretKey in a file, or CVM-role base credentials that expired, are picked up by the next
//! renewal instead of failing it for good.
//!
//! Answers are hostile until checked: the body is read capped (the API client's
//! [`crate::api::body::read_capped`]), the fields are checked like the metadata service's
//! (printable ASCII, bounded lengths, an `ExpiredTime` after 1970), and how long to wait is
//! bounded by the duration asked for, so a far `ExpiredTime` or a wrong clock cannot postpone
//! a renewal. No message, log line or `Debug` text contains the base SecretKey, the temporary
//! key or the token: they live in `secrecy` types, and errors name fields, never values.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::cvm_role::{CvmRole, CvmRoleError, MAX_SECRET_ID_BYTES, credential_field, expiry};
use super::refresh::{Refresher, refresh_loop};
use super::{
    CredentialError, CredentialSettings, Credentials, Environment, MAX_SECRET_CHARS,
    MAX_TOKEN_CHARS, Resolved, is_cam_role_name, resolve,
};
use crate::api::client::ClientBuildError;
use crate::api::{ApiError, Client, ClientOptions, ErrorClass};
use crate::clock::unix_now;

/// The STS action.
pub const ASSUME_ROLE_ACTION: &str = "AssumeRole";
/// STS's signing service name.
pub const STS_SERVICE: &str = "sts";
/// STS's API version.
pub const STS_VERSION: &str = "2018-08-13";
/// `[api] sts_endpoint` when absent.
pub const DEFAULT_STS_ENDPOINT: &str = "https://sts.tencentcloudapi.com";
/// `duration` when absent: STS's own default `DurationSeconds`.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(7_200);
/// The longest `duration` STS grants (`DurationSeconds` at most 43200).
pub const MAX_DURATION: Duration = Duration::from_secs(43_200);
/// Renew at the latest this long before expiry, as the Tencent Cloud SDKs do.
pub const RENEW_MARGIN_SECS: i64 = 300;
/// Shortest wait before a renewal, whatever the answer said: no busy loop on credentials that
/// arrive already expired (a wrong clock).
pub const MIN_RENEW_DELAY: Duration = Duration::from_secs(1);
/// Longest `role_arn` accepted (`qcs::cam::uin/` + a UIN + `:roleName/` + 128 characters).
pub const MAX_ROLE_ARN_BYTES: usize = 200;
/// Log target of this module, for `RUST_LOG` filters.
const TARGET: &str = "cwp_portwatch::assume_role";

/// `qcs::cam::uin/<digits>:roleName/<CAM role name>`, the form the CAM console shows.
pub fn is_role_arn(arn: &str) -> bool {
    let Some(rest) = arn.strip_prefix("qcs::cam::uin/") else {
        return false;
    };
    let Some((uin, name)) = rest.split_once(":roleName/") else {
        return false;
    };
    arn.len() <= MAX_ROLE_ARN_BYTES
        && (1..=20).contains(&uin.len())
        && uin.bytes().all(|b| b.is_ascii_digit())
        && is_cam_role_name(name)
}

/// STS's rule for `RoleSessionName`: `[\w+=,.@-]{2,128}` (ASCII word characters).
pub fn is_role_session_name(name: &str) -> bool {
    (2..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_+=,.@-".contains(&b))
}

/// What to ask STS for: the checked `role_arn`, `role_session_name` and `duration`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRequest {
    /// `RoleArn`, checked by [`is_role_arn`].
    pub role_arn: String,
    /// `RoleSessionName`, checked by [`is_role_session_name`]; CloudAudit shows it.
    pub role_session_name: String,
    /// `DurationSeconds`: 1 s to [`MAX_DURATION`], whole seconds (a fraction is dropped).
    pub duration: Duration,
}

impl RoleRequest {
    /// `DurationSeconds`, clamped to what STS accepts.
    fn duration_seconds(&self) -> u64 {
        self.duration.as_secs().clamp(1, MAX_DURATION.as_secs())
    }
}

/// Where STS is and how long to wait for it.
#[derive(Debug, Clone)]
pub struct StsOptions {
    /// `[api] sts_endpoint`: https, or http on a loopback host (a simulator).
    pub endpoint: Url,
    /// `X-TC-Region` (the account's region).
    pub region: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
}

/// The credentials that sign `AssumeRole`, fetched again for every call.
#[derive(Debug, Clone)]
pub enum BaseCredentials {
    /// These, always (tests, and callers that manage them).
    Fixed(Credentials),
    /// Resolved again from these settings (`env`, `systemd`, `profile`, `file`) at every call,
    /// so a rotated key is used from the next renewal on.
    Reread {
        /// The base source's settings.
        settings: CredentialSettings,
        /// The environment they are read from.
        env: Environment,
    },
    /// Fetched from the CVM metadata service at every call.
    CvmRole(CvmRole),
}

/// Why `AssumeRole` credentials could not be had. Messages name the role and what is wrong,
/// never a secret.
#[derive(Debug, thiserror::Error)]
pub enum AssumeRoleError {
    /// The base credentials could not be read.
    #[error("cannot get the base credentials for AssumeRole: {0}")]
    Base(#[source] CredentialError),
    /// The CVM-role base credentials could not be fetched.
    #[error("cannot get the base credentials for AssumeRole: {0}")]
    BaseCvmRole(#[source] CvmRoleError),
    /// The STS client could not be built (the endpoint).
    #[error("cannot use sts_endpoint: {0}")]
    Setup(#[source] ClientBuildError),
    /// STS refused: the base credentials, their permission to assume the role (CAM policy
    /// `sts:AssumeRole`, the role's trust policy), or the request. Retrying does not help
    /// until the operator fixes it; the renewer still retries with backoff.
    #[error(
        "STS refused AssumeRole of {role_arn}: {error}; check that the base credentials may \
         assume the role (sts:AssumeRole in their CAM policy, the role's trust policy)"
    )]
    Refused {
        /// The role asked for.
        role_arn: String,
        /// STS's answer.
        error: ApiError,
    },
    /// STS did not answer usefully now: throttled, a server error, the network.
    #[error("STS unavailable for AssumeRole of {role_arn}: {error}")]
    Unavailable {
        /// The role asked for.
        role_arn: String,
        /// The failure.
        error: ApiError,
    },
    /// An answer that cannot be used (a missing or malformed field, not JSON). Names the
    /// field, never the value nor the body: the body holds the secrets.
    #[error("unusable AssumeRole answer for {role_arn}: {problem}")]
    BadAnswer {
        /// The role asked for.
        role_arn: String,
        /// What is wrong.
        problem: String,
    },
}

impl AssumeRoleError {
    /// Stable machine-readable code, for `error_code` log fields.
    pub fn code(&self) -> &'static str {
        match self {
            AssumeRoleError::Base(_) | AssumeRoleError::BaseCvmRole(_) => "AssumeRoleError.Base",
            AssumeRoleError::Setup(_) => "AssumeRoleError.Setup",
            AssumeRoleError::Refused { .. } => "AssumeRoleError.Refused",
            AssumeRoleError::Unavailable { .. } => "AssumeRoleError.Unavailable",
            AssumeRoleError::BadAnswer { .. } => "AssumeRoleError.BadAnswer",
        }
    }

    /// The code STS (or the client) answered, when there was an answer: `AuthFailure.*`, …
    pub fn api_code(&self) -> Option<&str> {
        match self {
            AssumeRoleError::Refused { error, .. } | AssumeRoleError::Unavailable { error, .. } => {
                Some(error.code())
            }
            _ => None,
        }
    }
}

/// One set of temporary credentials from `AssumeRole`. `Debug` never shows the key or token.
#[derive(Debug, Clone)]
pub struct AssumedCredentials {
    /// The credentials; `token` is always `Some`.
    pub credentials: Credentials,
    /// `ExpiredTime`: when they stop working, Unix seconds (STS's clock).
    pub expires_at: i64,
    /// STS's `RequestId`, for support.
    pub request_id: String,
}

/// An STS client for one role. Cheap to clone; clones share the connection pool and the
/// learned clock offset.
#[derive(Debug, Clone)]
pub struct AssumeRole {
    request: RoleRequest,
    base: BaseCredentials,
    sts: Client,
    /// One call at a time: the client's credentials are set to the base ones just before it.
    calling: Arc<tokio::sync::Mutex<()>>,
}

impl AssumeRole {
    /// A client for `request` at `options.endpoint`, signing with `base`. No I/O.
    pub fn new(
        request: RoleRequest,
        options: StsOptions,
        base: BaseCredentials,
    ) -> Result<Self, AssumeRoleError> {
        // Replaced by the base credentials before every call; never used to sign.
        let unset = Credentials {
            secret_id: String::new(),
            secret_key: SecretString::from(String::new()),
            token: None,
        };
        let sts = Client::for_service(
            ClientOptions {
                endpoint: options.endpoint,
                region: options.region,
                timeout: options.timeout,
                max_idle_connections: 1,
            },
            unset,
            STS_SERVICE,
            STS_VERSION,
        )
        .map_err(AssumeRoleError::Setup)?
        // Its answers carry the temporary secrets: no error may quote them.
        .hiding_answer_bodies();
        Ok(AssumeRole {
            request,
            base,
            sts,
            calling: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// What this asks for.
    pub fn request(&self) -> &RoleRequest {
        &self.request
    }

    /// Now on STS's clock (as learned from its `Date` headers), Unix seconds: `ExpiredTime` is
    /// on that clock, so a local clock that drifts does not shift the renewal.
    pub fn server_now(&self) -> i64 {
        unix_now().saturating_add(self.sts.clock_offset_ms() / 1000)
    }

    /// The base credentials now.
    async fn base_credentials(&self) -> Result<Credentials, AssumeRoleError> {
        match &self.base {
            BaseCredentials::Fixed(credentials) => Ok(credentials.clone()),
            BaseCredentials::Reread { settings, env } => match resolve(settings, env) {
                Ok(Resolved::Static(credentials, _)) => Ok(credentials),
                Ok(_) => Err(AssumeRoleError::Base(CredentialError::Invalid {
                    origin: "[credentials] base".to_owned(),
                    problem: "the base source must give credentials directly".to_owned(),
                })),
                Err(e) => Err(AssumeRoleError::Base(e)),
            },
            BaseCredentials::CvmRole(role) => role
                .fetch()
                .await
                .map(|fetched| fetched.credentials)
                .map_err(AssumeRoleError::BaseCvmRole),
        }
    }

    /// One `AssumeRole` call with fresh base credentials.
    pub async fn fetch(&self) -> Result<AssumedCredentials, AssumeRoleError> {
        let base = self.base_credentials().await?;
        let params = json!({
            "RoleArn": self.request.role_arn,
            "RoleSessionName": self.request.role_session_name,
            "DurationSeconds": self.request.duration_seconds(),
        });
        let answer = {
            let _one_at_a_time = self.calling.lock().await;
            self.sts.set_credentials(base);
            let offset = self.sts.clock_offset_ms();
            match self.sts.call(ASSUME_ROLE_ACTION, &params).await {
                // The client learned STS's clock from this very answer's `Date`: signed again
                // with it, at once, as the engine does for CWP answers. Without this a host
                // whose clock is 15 minutes off fails every start-up (the offset learned dies
                // with the process), a restart loop under systemd.
                Err(error)
                    if error.class() == ErrorClass::Clock
                        && self.sts.clock_offset_ms() != offset =>
                {
                    self.sts.call(ASSUME_ROLE_ACTION, &params).await
                }
                answer => answer,
            }
        };
        let role_arn = || self.request.role_arn.clone();
        let answer = answer.map_err(|error| match error {
            // The body of an unreadable answer may hold the secrets: not even an excerpt.
            ApiError::Decode { .. } => AssumeRoleError::BadAnswer {
                role_arn: role_arn(),
                problem: "not a valid API answer".to_owned(),
            },
            error => match error.class() {
                ErrorClass::Throttled | ErrorClass::Transient | ErrorClass::Clock => {
                    AssumeRoleError::Unavailable {
                        role_arn: role_arn(),
                        error,
                    }
                }
                _ => AssumeRoleError::Refused {
                    role_arn: role_arn(),
                    error,
                },
            },
        })?;
        parse_answer(&answer.fields)
            .map(|(credentials, expires_at)| AssumedCredentials {
                credentials,
                expires_at,
                request_id: answer.request_id,
            })
            .map_err(|problem| AssumeRoleError::BadAnswer {
                role_arn: role_arn(),
                problem,
            })
    }
}

/// The credentials and expiry of an `AssumeRole` `Response`; the problem names the field.
fn parse_answer(response: &serde_json::Map<String, Value>) -> Result<(Credentials, i64), String> {
    let Some(Value::Object(credentials)) = response.get("Credentials") else {
        return Err("Credentials is missing or not an object".to_owned());
    };
    let bounded = |name: &str, max: usize| {
        credential_field(credentials, name).and_then(|value| {
            if value.len() > max {
                Err(format!("{name} is longer than {max} bytes"))
            } else {
                Ok(value)
            }
        })
    };
    let secret_id = bounded("TmpSecretId", MAX_SECRET_ID_BYTES)?;
    let secret_key = SecretString::from(bounded("TmpSecretKey", MAX_SECRET_CHARS)?);
    let token = SecretString::from(bounded("Token", MAX_TOKEN_CHARS)?);
    let expires_at = expiry(response)?;
    Ok((
        Credentials {
            secret_id,
            secret_key,
            token: Some(token),
        },
        expires_at,
    ))
}

/// How long to wait, from `now_unix`, before renewing credentials that expire at `expires_at`
/// (both Unix seconds on STS's clock) and were asked for `requested`:
///
/// - at 80 % of the time left, or [`RENEW_MARGIN_SECS`] (300 s) before expiry, whichever is
///   earlier: 2 h credentials are renewed after 96 min, 20 min ones 5 min before expiry;
/// - but never before half the time left: short-lived credentials (60 s) are renewed at 30 s,
///   not at once in a loop;
/// - the time left counts as at most `requested` (STS grants no more than asked for, so a
///   later `ExpiredTime` is a wrong clock or a wrong answer), and the wait is at least
///   [`MIN_RENEW_DELAY`].
///
/// Saturating integer arithmetic throughout: no `ExpiredTime` or clock can make it panic.
pub fn renew_after(now_unix: i64, expires_at: i64, requested: Duration) -> Duration {
    let asked = i64::try_from(requested.as_secs()).unwrap_or(i64::MAX);
    let left = expires_at.saturating_sub(now_unix).min(asked);
    let at_80_percent = left / 5 * 4 + left % 5 * 4 / 5;
    let before_margin = left.saturating_sub(RENEW_MARGIN_SECS);
    let wait = at_80_percent.min(before_margin).max(left / 2);
    let min = MIN_RENEW_DELAY.as_secs() as i64;
    Duration::from_secs(wait.max(min) as u64)
}

/// Keeps `AssumeRole` credentials fresh until `shutdown`: fetch, hand them to `on_update`,
/// sleep until [`renew_after`], repeat.
///
/// - `in_use_until`: the `ExpiredTime` of credentials already handed out (fetched at start-up
///   so that a refused role fails start-up); the first renewal is scheduled from it. `None`:
///   fetch at once.
/// - A failed fetch logs a warning (target `cwp_portwatch::assume_role`, fields `error_code`,
///   `api_code`) and is retried after [`super::cvm_role::retry_delay`] (1 s, 2 s, … 60 s); the
///   last good credentials stay in use.
/// - `refresh_now.notify_one()` (the engine, on `AuthFailure.TokenFailure` or refused
///   credentials) cuts the sleep short, but never sooner than 1 s after the previous fetch.
/// - `shutdown` stops it at once, also in the middle of a fetch.
pub async fn run_renewer(
    role: AssumeRole,
    in_use_until: Option<i64>,
    on_update: impl Fn(Credentials) + Send + Sync + 'static,
    refresh_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let first_wait = in_use_until
        .map(|expires_at| renew_after(role.server_now(), expires_at, role.request.duration));
    refresh_loop(Renewer(role), first_wait, on_update, refresh_now, shutdown).await;
}

/// What the renewal needs of an [`AssumeRole`]: a seam so that the schedule is tested under
/// paused time with a fake, without a network.
trait Renewable {
    /// One `AssumeRole` round.
    fn fetch(&self) -> impl Future<Output = Result<AssumedCredentials, AssumeRoleError>> + Send;
    /// Now on STS's clock, Unix seconds.
    fn server_now(&self) -> i64;
    /// What is asked for.
    fn request(&self) -> &RoleRequest;
}

impl Renewable for AssumeRole {
    fn fetch(&self) -> impl Future<Output = Result<AssumedCredentials, AssumeRoleError>> + Send {
        AssumeRole::fetch(self)
    }

    fn server_now(&self) -> i64 {
        AssumeRole::server_now(self)
    }

    fn request(&self) -> &RoleRequest {
        &self.request
    }
}

/// A [`Renewable`] as the shared refresh loop drives it: renewed at [`renew_after`], logged
/// under this module's target.
struct Renewer<R>(R);

impl<R: Renewable> Refresher for Renewer<R> {
    type Fresh = AssumedCredentials;
    type Error = AssumeRoleError;

    fn fetch(&self) -> impl Future<Output = Result<AssumedCredentials, AssumeRoleError>> + Send {
        self.0.fetch()
    }

    fn fetched(&self, fresh: &AssumedCredentials, failures: u32) -> Duration {
        let request = self.0.request();
        let delay = renew_after(self.0.server_now(), fresh.expires_at, request.duration);
        tracing::debug!(
            target: TARGET,
            role_arn = %request.role_arn,
            secret_id = %crate::credentials::masked_secret_id(&fresh.credentials.secret_id),
            expires_at = fresh.expires_at,
            renew_in_secs = delay.as_secs(),
            request_id = %fresh.request_id,
            "AssumeRole credentials renewed"
        );
        if failures > 0 {
            tracing::info!(
                target: TARGET,
                role_arn = %request.role_arn,
                failures,
                "AssumeRole credentials renewed again after failures"
            );
        }
        delay
    }

    fn into_credentials(fresh: AssumedCredentials) -> Credentials {
        fresh.credentials
    }

    fn failed(&self, error: &AssumeRoleError, failures: u32, retry_in: Duration) {
        tracing::warn!(
            target: TARGET,
            error_code = error.code(),
            api_code = error.api_code().unwrap_or(""),
            error = %error,
            failures,
            retry_in_secs = retry_in.as_secs(),
            "cannot renew AssumeRole credentials; retrying"
        );
    }

    fn requested(&self) {
        tracing::debug!(target: TARGET, "AssumeRole renewal requested");
    }

    fn expired(&self, fresh: &AssumedCredentials) -> bool {
        fresh.expires_at <= self.0.server_now()
    }

    fn arrived_expired(&self, fresh: &AssumedCredentials, retry_in: Duration) {
        tracing::warn!(
            target: TARGET,
            role_arn = %self.0.request().role_arn,
            secret_id = %crate::credentials::masked_secret_id(&fresh.credentials.secret_id),
            expires_at = fresh.expires_at,
            server_now = self.0.server_now(),
            request_id = %fresh.request_id,
            retry_in_secs = retry_in.as_secs(),
            "STS AssumeRole answers credentials that have expired already; asking again less \
             and less often"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_700_000_000;
    const TWO_HOURS: Duration = Duration::from_secs(7_200);

    fn secs(d: Duration) -> u64 {
        d.as_secs()
    }

    #[test]
    fn renewal_is_at_80_percent_or_300_s_before_expiry_whichever_is_earlier() {
        // 2 h: 80 % (5760 s) is earlier than 300 s before (6900 s).
        assert_eq!(secs(renew_after(NOW, NOW + 7_200, TWO_HOURS)), 5_760);
        // 12 h.
        assert_eq!(secs(renew_after(NOW, NOW + 43_200, MAX_DURATION)), 34_560);
        // 20 min: 300 s before (900 s) is earlier than 80 % (960 s).
        assert_eq!(secs(renew_after(NOW, NOW + 1_200, TWO_HOURS)), 900);
        // Both agree at 25 min.
        assert_eq!(secs(renew_after(NOW, NOW + 1_500, TWO_HOURS)), 1_200);
    }

    #[test]
    fn short_lived_credentials_are_used_for_half_their_life_without_a_busy_loop() {
        assert_eq!(secs(renew_after(NOW, NOW + 60, TWO_HOURS)), 30);
        assert_eq!(secs(renew_after(NOW, NOW + 8, TWO_HOURS)), 4);
        assert_eq!(secs(renew_after(NOW, NOW + 1, TWO_HOURS)), 1);
        assert_eq!(secs(renew_after(NOW, NOW, TWO_HOURS)), 1);
        assert_eq!(secs(renew_after(NOW, NOW - 500, TWO_HOURS)), 1);
        assert_eq!(secs(renew_after(NOW, i64::MIN, TWO_HOURS)), 1);
        assert_eq!(secs(renew_after(i64::MAX, i64::MIN, TWO_HOURS)), 1);
    }

    #[test]
    fn a_far_expiry_is_bounded_by_the_duration_asked_for() {
        assert_eq!(secs(renew_after(NOW, i64::MAX, TWO_HOURS)), 5_760);
        assert_eq!(secs(renew_after(i64::MIN, i64::MAX, TWO_HOURS)), 5_760);
        assert_eq!(
            secs(renew_after(NOW, NOW + 100_000, Duration::from_secs(60))),
            30
        );
        assert_eq!(secs(renew_after(NOW, i64::MAX, Duration::MAX)), {
            let left = i64::MAX - NOW;
            (left / 5 * 4 + left % 5 * 4 / 5) as u64
        });
    }

    #[test]
    fn renewal_always_comes_before_expiry() {
        for left in 2..50_000 {
            let wait = secs(renew_after(NOW, NOW + left, MAX_DURATION)) as i64;
            assert!(wait >= 1 && wait < left, "{left}: {wait}");
        }
    }

    #[test]
    fn role_arns_follow_the_cam_form() {
        for good in [
            "qcs::cam::uin/100000000001:roleName/cwp-reader",
            "qcs::cam::uin/1:roleName/a",
            "qcs::cam::uin/100000000001:roleName/R+=,.@_-",
        ] {
            assert!(is_role_arn(good), "{good}");
        }
        for bad in [
            "",
            "cwp-reader",
            "qcs::cam::uin/:roleName/r",
            "qcs::cam::uin/12a:roleName/r",
            "qcs::cam::uin/1:roleName/",
            "qcs::cam::uin/1:role/r",
            "qcs::cam::uin/1:roleName/a/b",
            "qcs::cam::uin/1:roleName/a b",
            "qcs::cam::uin/1:roleName/r\n",
            "QCS::cam::uin/1:roleName/r",
            "qcs::cam::uin/123456789012345678901:roleName/r",
        ] {
            assert!(!is_role_arn(bad), "{bad:?}");
        }
        let long = format!("qcs::cam::uin/1:roleName/{}", "r".repeat(129));
        assert!(!is_role_arn(&long));
    }

    #[test]
    fn session_names_follow_the_sts_rule() {
        for good in ["ab", "cwp-portwatch", "a_b+c=d,e.f@g-h", &"s".repeat(128)] {
            assert!(is_role_session_name(good), "{good}");
        }
        for bad in ["", "a", "a b", "a/b", "é1", "a\u{1b}", &"s".repeat(129)] {
            assert!(!is_role_session_name(bad), "{bad:?}");
        }
    }

    fn response(value: Value) -> serde_json::Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn parses_an_answer_and_keeps_the_secrets_out_of_debug() {
        let (credentials, expires_at) = parse_answer(&response(json!({
            "Credentials": {"TmpSecretId": "AKIDtmp", "TmpSecretKey": "k3yS3CRET", "Token": "t0kS3CRET"},
            "ExpiredTime": 1_700_000_900,
            "Expiration": "2023-11-14T22:28:20Z",
            "RequestId": "r"
        })))
        .unwrap();
        assert_eq!(credentials.secret_id, "AKIDtmp");
        assert_eq!(expires_at, 1_700_000_900);
        let text = format!("{credentials:?}");
        assert!(!text.contains("S3CRET"), "{text}");
        // Expiration alone is enough.
        let (_, expires_at) = parse_answer(&response(json!({
            "Credentials": {"TmpSecretId": "AKIDtmp", "TmpSecretKey": "k", "Token": "t"},
            "Expiration": "2023-11-14T22:28:20Z"
        })))
        .unwrap();
        assert_eq!(expires_at, 1_700_000_900);
    }

    #[test]
    fn bad_answers_name_the_field_never_the_value() {
        let good = json!({"TmpSecretId": "AKIDtmp", "TmpSecretKey": "S3CRET", "Token": "S3CRET"});
        let with = |name: &str, value: Value| {
            let mut c = good.clone();
            c[name] = value;
            json!({"Credentials": c, "ExpiredTime": 1_700_000_900})
        };
        let cases = [
            (json!({"ExpiredTime": 1}), "Credentials is missing"),
            (
                json!({"Credentials": "S3CRET", "ExpiredTime": 1}),
                "not an object",
            ),
            (
                with("TmpSecretKey", json!(7)),
                "TmpSecretKey is not a string",
            ),
            (
                with("Token", json!("S3CRET S3CRET")),
                "Token contains whitespace",
            ),
            (
                with("TmpSecretId", json!("A".repeat(200))),
                "TmpSecretId is longer",
            ),
            (
                with("Token", json!("S".repeat(MAX_TOKEN_CHARS + 1))),
                "Token is longer",
            ),
            (
                json!({"Credentials": good, "ExpiredTime": -5}),
                "ExpiredTime",
            ),
            (json!({"Credentials": good}), "ExpiredTime is missing"),
        ];
        for (answer, want) in cases {
            let problem = parse_answer(&response(answer)).unwrap_err();
            assert!(problem.contains(want), "{problem}");
            assert!(!problem.contains("S3CRET"), "{problem}");
        }
    }

    /// A role at `endpoint` with fixed base credentials.
    fn role_at(endpoint: &str) -> Result<AssumeRole, AssumeRoleError> {
        AssumeRole::new(
            RoleRequest {
                role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
                role_session_name: "s1".to_owned(),
                duration: TWO_HOURS,
            },
            StsOptions {
                endpoint: Url::parse(endpoint).unwrap(),
                region: None,
                timeout: Duration::from_secs(1),
            },
            BaseCredentials::Fixed(Credentials {
                secret_id: "AKIDbase".to_owned(),
                secret_key: SecretString::from("k".to_owned()),
                token: None,
            }),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_renewer_stops_with_the_shutdown_even_mid_sleep() {
        // Nothing listens on port 9: every fetch fails at once; the renewer backs off.
        let role = role_at("http://127.0.0.1:9/").unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run_renewer(
            role,
            Some(NOW),
            |_| panic!("nothing to hand out"),
            Arc::new(Notify::new()),
            shutdown.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(3_600)).await;
        shutdown.cancel();
        task.await.unwrap();
    }

    #[test]
    fn new_refuses_a_plain_http_endpoint_off_loopback() {
        let error = role_at("http://sts.example.com/").unwrap_err();
        assert_eq!(error.code(), "AssumeRoleError.Setup");
    }

    /// A fake STS on paused time: STS's clock is `EPOCH` + the paused time elapsed; each fetch
    /// is recorded (seconds since start) and answers credentials valid for `lifetime`, or
    /// fails while `failures_left` is not zero.
    struct FakeSts {
        start: tokio::time::Instant,
        request: RoleRequest,
        /// Seconds the next answer's credentials are valid for (negative: expired already).
        lifetime: Arc<std::sync::Mutex<i64>>,
        failures_left: Arc<std::sync::Mutex<u32>>,
        fetches: Arc<std::sync::Mutex<Vec<u64>>>,
    }

    const EPOCH: i64 = 1_800_000_000;

    impl FakeSts {
        fn new(lifetime: i64, failures: u32) -> Self {
            FakeSts {
                start: tokio::time::Instant::now(),
                request: RoleRequest {
                    role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
                    role_session_name: "s1".to_owned(),
                    duration: Duration::from_secs(lifetime as u64),
                },
                lifetime: Arc::new(std::sync::Mutex::new(lifetime)),
                failures_left: Arc::new(std::sync::Mutex::new(failures)),
                fetches: Arc::new(std::sync::Mutex::new(Vec::new())),
            }
        }
    }

    impl Renewable for FakeSts {
        fn fetch(
            &self,
        ) -> impl Future<Output = Result<AssumedCredentials, AssumeRoleError>> + Send {
            let at = self.start.elapsed().as_secs();
            self.fetches.lock().unwrap().push(at);
            let mut failures = self.failures_left.lock().unwrap();
            let result = if *failures > 0 {
                *failures -= 1;
                Err(AssumeRoleError::BadAnswer {
                    role_arn: self.request.role_arn.clone(),
                    problem: "scripted failure".to_owned(),
                })
            } else {
                Ok(AssumedCredentials {
                    credentials: Credentials {
                        secret_id: format!("AKIDtmp{at}"),
                        secret_key: SecretString::from("k".to_owned()),
                        token: Some(SecretString::from("t".to_owned())),
                    },
                    expires_at: self.server_now() + *self.lifetime.lock().unwrap(),
                    request_id: "r".to_owned(),
                })
            };
            async move { result }
        }

        fn server_now(&self) -> i64 {
            EPOCH + self.start.elapsed().as_secs() as i64
        }

        fn request(&self) -> &RoleRequest {
            &self.request
        }
    }

    /// Runs the loop on `sts` for `run` of paused time, asking for a renewal at each of
    /// `pokes` (seconds); the fetch times and the SecretIds handed out.
    async fn run_for(
        sts: FakeSts,
        in_use_until: Option<i64>,
        run: Duration,
        pokes: &[u64],
    ) -> (Vec<u64>, Vec<String>) {
        let fetches = sts.fetches.clone();
        let updates = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = updates.clone();
        let refresh_now = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let first_wait = in_use_until
            .map(|expires_at| renew_after(sts.server_now(), expires_at, sts.request().duration));
        let task = tokio::spawn(refresh_loop(
            Renewer(sts),
            first_wait,
            move |c: Credentials| seen.lock().unwrap().push(c.secret_id),
            refresh_now.clone(),
            shutdown.clone(),
        ));
        for poke in pokes {
            tokio::time::sleep_until(start + Duration::from_secs(*poke)).await;
            refresh_now.notify_one();
        }
        tokio::time::sleep_until(start + run).await;
        shutdown.cancel();
        task.await.unwrap();
        let fetches = fetches.lock().unwrap().clone();
        let updates = updates.lock().unwrap().clone();
        (fetches, updates)
    }

    #[tokio::test(start_paused = true)]
    async fn two_hour_credentials_are_renewed_every_96_minutes() {
        let sts = FakeSts::new(7_200, 0);
        let (fetches, updates) = run_for(
            sts,
            Some(EPOCH + 7_200),
            Duration::from_secs(5 * 3_600),
            &[],
        )
        .await;
        assert_eq!(fetches, [5_760, 11_520, 17_280]);
        assert_eq!(updates, ["AKIDtmp5760", "AKIDtmp11520", "AKIDtmp17280"]);
    }

    #[tokio::test(start_paused = true)]
    async fn sixty_second_credentials_are_renewed_every_30_s_and_at_once_without_any() {
        let sts = FakeSts::new(60, 0);
        let (fetches, _) = run_for(sts, None, Duration::from_secs(100), &[]).await;
        assert_eq!(fetches, [0, 30, 60, 90]);
    }

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_hand_out_nothing_until_a_success() {
        let sts = FakeSts::new(7_200, 4);
        let (fetches, updates) = run_for(sts, None, Duration::from_secs(20), &[]).await;
        // At once, then after 1, 2, 4 and 8 s.
        assert_eq!(fetches, [0, 1, 3, 7, 15]);
        assert_eq!(updates, ["AKIDtmp15"]);
    }

    /// What `tracing` writes on this thread, for the tests that count warnings.
    #[derive(Clone, Default)]
    struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    // Issue 20 item 8: an `ExpiredTime` already past meant a call every second, forever, at
    // debug level only. Current-thread runtime: the loop logs under this thread's subscriber.
    #[tokio::test(start_paused = true)]
    async fn credentials_that_arrive_expired_back_off_from_30_s_and_warn_once() {
        let logs = Logs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        // Every answer expired 10 s before it was given.
        let sts = FakeSts::new(7_200, 0);
        *sts.lifetime.lock().unwrap() = -10;
        // The engine asks for fresh credentials now and then (refused requests): no bypass.
        let (fetches, updates) =
            run_for(sts, None, Duration::from_secs(1_800), &[5, 6, 40, 100]).await;
        // 30 s, then doubling (60, 120, 240, 480) up to 10 min.
        assert_eq!(fetches, [0, 30, 90, 210, 450, 930, 1_530]);
        // Handed on all the same: the API decides whether they work.
        assert_eq!(updates.len(), fetches.len());
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warnings = text
            .lines()
            .filter(|l| l.contains("WARN") && l.contains("expired already"))
            .count();
        assert_eq!(warnings, 1, "{text}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_good_answer_after_expired_ones_brings_back_the_normal_schedule() {
        let sts = FakeSts::new(60, 0);
        let lifetime = sts.lifetime.clone();
        *lifetime.lock().unwrap() = -10;
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(35)).await;
            *lifetime.lock().unwrap() = 60;
        });
        let (fetches, _) = run_for(sts, None, Duration::from_secs(140), &[]).await;
        task.await.unwrap();
        // Expired at 0 (next in 30 s), expired at 30 (next in 60 s); good at 90: every 30 s.
        assert_eq!(fetches, [0, 30, 90, 120]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_renews_at_once_but_never_twice_within_a_second() {
        let sts = FakeSts::new(7_200, 0);
        let (fetches, _) = run_for(
            sts,
            Some(EPOCH + 7_200),
            Duration::from_secs(100),
            &[10, 10, 50],
        )
        .await;
        // The second request at 10 s waits for the 1-s gap after the fetch it caused.
        assert_eq!(fetches, [10, 11, 50]);
    }
}
