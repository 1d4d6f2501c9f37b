//! A failed poll's bookkeeping: one more failure in a row (and `poll_failed`, spaced), the
//! backoff of the next try, and the `credentials_failed` event.

use tokio::time::Instant;

use super::super::POLL_FAILED_EVERY;
use super::super::agents::Progress;
use super::{Context, Who};
use crate::api::ApiError;
use crate::events::Event;
use crate::scheduler::{backoff, later};

/// One more failure in a row; a `poll_failed` unless one went out less than
/// [`POLL_FAILED_EVERY`] ago.
pub(super) fn count_failure(
    who: Who<'_>,
    progress: &mut Progress,
    error: &ApiError,
    now: Instant,
    events: &mut Vec<Event>,
) {
    // Saturating: a daemon may run for years against an agent that always fails.
    progress.failures = progress.failures.saturating_add(1);
    let due = progress
        .last_failed_event
        .is_none_or(|t| now.duration_since(t) >= POLL_FAILED_EVERY);
    if due {
        progress.last_failed_event = Some(now);
        events.push(Event::PollFailed {
            uuid: who.uuid.to_string(),
            agent_name: who.name.to_string(),
            error_code: error.code().to_string(),
            error_message: error.message(),
            request_id: error.request_id().map(str::to_string),
            consecutive_failures: progress.failures,
        });
    }
}

/// The first failure is retried at once; repeats back off (exponential, jittered, capped).
pub(super) fn backoff_next(
    progress: &Progress,
    now: Instant,
    cap: std::time::Duration,
    jitter: f64,
) -> Instant {
    if progress.failures <= 1 {
        return now;
    }
    later(now, backoff(progress.failures - 1, cap, jitter))
}

/// The `credentials_failed` event for `error`.
pub(crate) fn credentials_failed(error: &ApiError, ctx: &Context<'_>) -> Event {
    Event::CredentialsFailed {
        error_code: error.code().to_string(),
        error_message: error.message(),
        source: ctx.credential_source.to_string(),
    }
}
