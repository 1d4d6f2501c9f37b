//! When to fetch CVM role credentials again ([`refresh_at`], pure) and the background
//! refresher ([`run_refresher`]) that drives the shared refresh loop with them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    CvmRole, CvmRoleError, MAX_REFRESH_DELAY_SECS, REFRESH_MARGIN_SECS, RoleCredentials,
    SHORT_LIVED_MIN_DELAY_SECS, TARGET,
};
use crate::clock::unix_now;
use crate::credentials::Credentials;
use crate::credentials::refresh::{Refresher, refresh_loop};

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
///   is retried after [`retry_delay`](super::retry_delay) (1 s, 2 s, 4 s, … 60 s); `on_update` is not called, so the
///   last good credentials stay in use.
/// - `refresh_now.notify_one()` (the engine, on `AuthFailure.TokenFailure`) cuts the sleep
///   short; the fetch then happens at once, but never sooner than [`FORCED_REFRESH_MIN_GAP`](super::FORCED_REFRESH_MIN_GAP)
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
