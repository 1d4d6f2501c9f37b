//! The loop every refreshing credentials source shares (the CVM instance role, STS
//! `AssumeRole`): fetch, hand the credentials on, wait, fetch again; back off after failures;
//! fetch early when asked (the engine, on `AuthFailure.TokenFailure` or refused credentials),
//! but never twice within [`FORCED_REFRESH_MIN_GAP`]; stop at once on shutdown.
//!
//! What differs between sources (what a fetch is, when the next one is due, what is logged
//! under which target) is the [`Refresher`] trait; the timing rules live here once.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::Credentials;

/// One refreshing source, as [`refresh_loop`] drives it.
pub(super) trait Refresher {
    /// What a successful fetch gives.
    type Fresh;
    /// Why a fetch failed.
    type Error;

    /// One fetch.
    fn fetch(&self) -> impl Future<Output = Result<Self::Fresh, Self::Error>> + Send;

    /// Logs a success (`failures`: the failures in a row before it) and says how long to wait
    /// before the next fetch.
    fn fetched(&self, fresh: &Self::Fresh, failures: u32) -> Duration;

    /// The credentials to hand on.
    fn into_credentials(fresh: Self::Fresh) -> Credentials;

    /// Logs a failure; the next attempt is in `retry_in`.
    fn failed(&self, error: &Self::Error, failures: u32, retry_in: Duration);

    /// Logs that a fetch was asked for ahead of time.
    fn requested(&self);

    /// Whether `fresh` had expired already when it arrived (on the source's own clock).
    fn expired(&self, fresh: &Self::Fresh) -> bool;

    /// Logs (a warning) that answers come already expired; the next fetch is in `retry_in`.
    /// Called once per run of such answers, not for each.
    fn arrived_expired(&self, fresh: &Self::Fresh, retry_in: Duration);
}

/// Keeps `source`'s credentials fresh until `shutdown`, handing each new set to `on_update`.
///
/// - `first_wait`: `None` fetches at once; `Some(d)` waits `d` first (credentials already in
///   use), listening to `refresh_now` meanwhile.
/// - After a success, waits what [`Refresher::fetched`] says; after the `n`-th failure in a
///   row, [`retry_delay`]`(n)` (1 s, 2 s, … 60 s), and `on_update` is not called, so the last
///   good credentials stay in use.
/// - Credentials that had already expired when they arrived ([`Refresher::expired`]: an
///   `ExpiredTime` in the past, a source's wrong clock) are no reason to ask again at once,
///   which would only get the same answer: the next fetch waits [`expired_retry_delay`]
///   (30 s, 60 s, … 10 min) and one warning says so for the whole run of such answers. They
///   are handed on all the same: the API, not our reading of a clock, has the last word.
/// - `refresh_now.notify_one()` cuts a wait short; the fetch then happens at once, but never
///   sooner than [`FORCED_REFRESH_MIN_GAP`] after the previous one. While retrying after
///   failures or expired answers it is not listened to (the retries are already under way,
///   and the engine asks again on every refused request); a request made then is served after
///   the next good answer.
/// - `shutdown` stops it at once, also in the middle of a fetch.
pub(super) async fn refresh_loop<R: Refresher>(
    source: R,
    first_wait: Option<Duration>,
    on_update: impl Fn(Credentials),
    refresh_now: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut failures: u32 = 0;
    // Good answers in a row whose credentials had expired already.
    let mut expired: u32 = 0;
    let mut wait = first_wait;
    let mut fetched_at = tokio::time::Instant::now();
    loop {
        if let Some(delay) = wait {
            let listen = failures == 0 && expired == 0;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
                _ = async {
                    refresh_now.notified().await;
                    tokio::time::sleep_until(forced_refresh_at(fetched_at)).await;
                }, if listen => source.requested(),
            }
        }
        let fetched = tokio::select! {
            _ = shutdown.cancelled() => return,
            fetched = source.fetch() => fetched,
        };
        fetched_at = tokio::time::Instant::now();
        wait = Some(match fetched {
            Ok(fresh) if source.expired(&fresh) => {
                failures = 0;
                expired = expired.saturating_add(1);
                let delay = expired_retry_delay(expired);
                if expired == 1 {
                    source.arrived_expired(&fresh, delay);
                }
                on_update(R::into_credentials(fresh));
                delay
            }
            Ok(fresh) => {
                let delay = source.fetched(&fresh, failures);
                failures = 0;
                expired = 0;
                on_update(R::into_credentials(fresh));
                delay
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = retry_delay(failures);
                source.failed(&error, failures, delay);
                delay
            }
        });
    }
}

/// Longest wait between two attempts after failures.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);
/// A refresh asked for through `refresh_now` waits at least this long after the previous fetch,
/// so a burst of `AuthFailure.TokenFailure` answers cannot turn into a burst of fetches.
pub const FORCED_REFRESH_MIN_GAP: Duration = Duration::from_secs(1);

/// Wait after the `failures`-th failure in a row (1 s, 2 s, 4 s, … up to [`MAX_RETRY_DELAY`]).
pub fn retry_delay(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exponent).min(MAX_RETRY_DELAY)
}

/// First wait after credentials that arrived already expired.
pub const EXPIRED_RETRY_FIRST: Duration = Duration::from_secs(30);
/// Longest wait between fetches while credentials keep arriving expired.
pub const EXPIRED_RETRY_MAX: Duration = Duration::from_secs(600);

/// Wait after the `answers`-th answer in a row whose credentials had already expired (30 s,
/// 60 s, 120 s, … up to [`EXPIRED_RETRY_MAX`]): the source gives the same answer until its
/// side is fixed, so asking every second would only load it.
pub fn expired_retry_delay(answers: u32) -> Duration {
    let exponent = answers.saturating_sub(1).min(16);
    EXPIRED_RETRY_FIRST
        .saturating_mul(1u32 << exponent)
        .min(EXPIRED_RETRY_MAX)
}

/// When a forced refresh may start: [`FORCED_REFRESH_MIN_GAP`] after the previous fetch, or at
/// once where that sum does not exist (checked: an `Instant` sum panics on overflow).
pub(super) fn forced_refresh_at(fetched_at: tokio::time::Instant) -> tokio::time::Instant {
    fetched_at
        .checked_add(FORCED_REFRESH_MIN_GAP)
        .unwrap_or(fetched_at)
}
