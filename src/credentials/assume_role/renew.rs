//! When to renew `AssumeRole` credentials ([`renew_after`], pure) and the background renewer
//! ([`run_renewer`]) that drives the shared refresh loop with them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{
    AssumeRole, AssumeRoleError, AssumedCredentials, MIN_RENEW_DELAY, RENEW_MARGIN_SECS,
    RoleRequest, TARGET,
};
use crate::credentials::Credentials;
use crate::credentials::refresh::{Refresher, refresh_loop};

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
///   `api_code`) and is retried after [`crate::credentials::cvm_role::retry_delay`] (1 s, 2 s, … 60 s); the
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
        .map(|expires_at| renew_after(role.server_now(), expires_at, role.request().duration));
    refresh_loop(Renewer(role), first_wait, on_update, refresh_now, shutdown).await;
}

/// What the renewal needs of an [`AssumeRole`]: a seam so that the schedule is tested under
/// paused time with a fake, without a network.
pub(super) trait Renewable {
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
        AssumeRole::request(self)
    }
}

/// A [`Renewable`] as the shared refresh loop drives it: renewed at [`renew_after`], logged
/// under this module's target.
pub(super) struct Renewer<R>(pub(super) R);

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
