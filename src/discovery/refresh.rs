//! The refresh loop of one account's discovery: a pass at once, then one every `refresh`;
//! a failed pass is reported (`discovery_failed`, with its error code) and tried again after a
//! backoff (5 s, doubling, never longer than `refresh`) while the last good list stays. Each
//! complete pass is published on a `watch` channel, which the daemon applies like a reload.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Discovered, Discovery, MachineSource};
use crate::events::{Event, EventSink};

/// The wait after the first failed pass; it doubles with each failure in a row.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The wait after `failures` failed passes in a row (at least 1): [`FIRST_RETRY`] doubled
/// per further failure, capped at `refresh` (checked: no overflow for any count).
pub fn retry_delay(failures: u32, refresh: Duration) -> Duration {
    let factor = 2u32
        .checked_pow(failures.saturating_sub(1))
        .unwrap_or(u32::MAX);
    FIRST_RETRY
        .checked_mul(factor)
        .unwrap_or(Duration::MAX)
        .min(refresh)
}

/// Runs passes until `cancel`; every complete pass replaces the value in `updates`.
pub async fn run<S: MachineSource>(
    mut discovery: Discovery<S>,
    updates: watch::Sender<Option<Arc<Discovered>>>,
    sink: Arc<dyn EventSink>,
    cancel: CancellationToken,
) {
    let refresh = discovery.settings().refresh;
    let mut failures = 0u32;
    loop {
        let pass = tokio::select! {
            _ = cancel.cancelled() => return,
            pass = discovery.discover() => pass,
        };
        let wait = match pass {
            Ok(found) => {
                failures = 0;
                updates.send_replace(Some(Arc::new(found)));
                refresh
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                let wait = retry_delay(failures, refresh);
                sink.emit(&Event::DiscoveryFailed {
                    error_code: e.code().to_owned(),
                    error_message: e.to_string(),
                    retry_in_seconds: wait.as_secs(),
                });
                wait
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
