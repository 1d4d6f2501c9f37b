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

//!
//! Files: this one holds the vocabulary (requests, options, errors, the name checks);
//! `client.rs` one `AssumeRole` round and its answer; `renew.rs` the renewal schedule and
//! loop; `tests.rs` their unit tests.

mod client;
mod renew;
#[cfg(test)]
mod tests;

use std::time::Duration;

use reqwest::Url;

use super::cvm_role::{CvmRole, CvmRoleError};
use super::{CredentialError, CredentialSettings, Credentials, Environment, is_cam_role_name};
use crate::api::ApiError;
use crate::api::client::ClientBuildError;

pub use client::{AssumeRole, AssumedCredentials};
// The answer's decoder, for the fuzz targets (`fuzz/`): the very code `AssumeRole::fetch` runs.
#[doc(hidden)]
pub use client::parse_answer;
pub use renew::{renew_after, run_renewer};

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
    /// STS's TLS certificate was refused (unknown issuer: a TLS-inspecting proxy whose CA is
    /// not in `[api] ca_file`; a wrong host name). The renewer retries with backoff while the
    /// operator fixes the trust.
    #[error("cannot reach STS for AssumeRole of {role_arn}: {error}")]
    Certificate {
        /// The role asked for.
        role_arn: String,
        /// The refusal, `ClientError.Certificate`.
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
            AssumeRoleError::Certificate { .. } => "AssumeRoleError.Certificate",
            AssumeRoleError::BadAnswer { .. } => "AssumeRoleError.BadAnswer",
        }
    }

    /// The code STS (or the client) answered, when there was an answer: `AuthFailure.*`, …
    pub fn api_code(&self) -> Option<&str> {
        match self {
            AssumeRoleError::Refused { error, .. }
            | AssumeRoleError::Unavailable { error, .. }
            | AssumeRoleError::Certificate { error, .. } => Some(error.code()),
            _ => None,
        }
    }
}
