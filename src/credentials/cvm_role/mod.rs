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

//!
//! Files: this one holds the limits, errors and the credentials type; `client.rs` the
//! metadata client ([`CvmRole`]); `answer.rs` the checks of its answers (shared with
//! `assume_role`, whose answers carry the same fields); `refresher.rs` when to refresh and the
//! refresher; `tests.rs` their unit tests.

mod answer;
mod client;
mod refresher;
#[cfg(test)]
mod tests;

use std::time::Duration;

use super::Credentials;
// The refresh loop's timing is shared with the assume-role renewer and lives with the loop.
pub use super::refresh::{FORCED_REFRESH_MIN_GAP, MAX_RETRY_DELAY, retry_delay};
pub(in crate::credentials) use answer::{credential_field, expiry};
pub use client::CvmRole;
// The answers' decoders, for the fuzz targets (`fuzz/`): the very code `CvmRole::fetch` runs.
#[doc(hidden)]
pub use answer::parse_credentials;
#[doc(hidden)]
pub use client::parse_role_list;
pub use refresher::{refresh_at, run_refresher};

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
