//! The tasks that hold a lease and a leadership: the keep-alive (moves the fence from each
//! answered renewal, says when the lease is gone), the watch of the leader key (says when it
//! is deleted), and [`Health`], which logs an etcd outage once when it starts and once when
//! it ends, whichever task sees it first.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions};
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

use super::super::Fence;
use super::Lost;

/// How soon a failed renewal or a broken watch is tried again.
pub(super) const RETRY: Duration = Duration::from_millis(500);

/// What a leader logs when a renewal fails. It still polls until its fence closes (the last
/// answered renewal + ttl − margin); the daemon says so when it does (`fence closed: …`).
pub(super) const LEADER_OUTAGE: &str = "etcd unreachable: cannot renew the lease; polling stops \
     when the fence closes unless a renewal is answered first";
/// What a leader logs at the first answered renewal after an outage.
pub(super) const LEADER_BACK: &str = "lease renewed again: leadership proven";
/// What a standby logs when etcd does not answer.
pub(super) const STANDBY_OUTAGE: &str =
    "etcd unreachable: waiting in the election, retrying until it answers";
/// What a standby logs when etcd answers again.
pub(super) const STANDBY_BACK: &str = "etcd answers again: waiting in the election";

/// The outage state shared by the tasks of one process, so an outage is logged once.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// etcd did not answer the last request that needed it.
    outage: AtomicBool,
    /// This process leads (the messages differ: a leader stops polling).
    pub(super) leading: AtomicBool,
    /// What was logged at warn or info, for the tests (tracing's per-callsite caches make a
    /// thread's own subscriber unreliable while other tests log in parallel).
    #[cfg(test)]
    pub(super) said: std::sync::Mutex<Vec<&'static str>>,
}

impl Health {
    /// A request failed: warns at the first failure of an outage, debug after.
    pub(super) fn fault(&self, what: &str, error: &dyn std::fmt::Display) {
        let error = crate::escape::escape(&error.to_string()).into_owned();
        if self.outage.swap(true, Ordering::AcqRel) {
            tracing::debug!(error_code = "HaError.Etcd", %error, "{what} failed again");
            return;
        }
        let message = if self.leading.load(Ordering::Acquire) {
            LEADER_OUTAGE
        } else {
            STANDBY_OUTAGE
        };
        tracing::warn!(error_code = "HaError.Etcd", %error, "{message}");
        self.said(message);
    }

    /// A request succeeded: ends an outage, saying so once.
    pub(super) fn ok(&self) {
        if self.outage.swap(false, Ordering::AcqRel) {
            let message = if self.leading.load(Ordering::Acquire) {
                LEADER_BACK
            } else {
                STANDBY_BACK
            };
            tracing::info!("{message}");
            self.said(message);
        }
    }

    #[cfg_attr(not(test), allow(clippy::unused_self))]
    fn said(&self, message: &'static str) {
        #[cfg(test)]
        self.said
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(message);
        let _ = message;
    }
}

/// Sets the first reason leadership (or the lease) was lost; later ones are dropped.
pub(super) fn report_lost(lost: &watch::Sender<Option<Lost>>, reason: String) {
    lost.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(Lost {
            reason,
            holder: None,
        });
        true
    });
}

/// Renews `lease` every `ttl`/3 (every [`RETRY`] while etcd does not answer), moving `fence`
/// from each answered renewal ([`Fence::renewed`]: the instant it was *sent*). Ends when
/// etcd says the lease is gone (TTL 0 or not found), after closing the fence and reporting it
/// on `lost`. `granted`: the TTL etcd granted (it may raise a short one to its minimum).
pub(super) async fn keep_alive(
    client: Client,
    lease: i64,
    granted: Duration,
    fence: Fence,
    health: Arc<Health>,
    lost: watch::Sender<Option<Lost>>,
) {
    let period = granted / 3;
    let wait = super::connect::request_timeout(granted);
    let mut lease_client = client.lease_client();
    let mut stream = None;
    loop {
        let sent = Instant::now();
        let answer = match stream.take() {
            // (Re)opening the stream sends a first renewal and waits for its answer.
            None => match timeout(wait, lease_client.keep_alive(lease)).await {
                Ok(Ok(opened)) => {
                    stream = Some(opened);
                    Ok(granted)
                }
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => {
                    Ok(Duration::ZERO)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {wait:?}")),
            },
            Some((mut keeper, mut answers)) => {
                let renewed = async {
                    keeper.keep_alive().await?;
                    answers.message().await
                };
                match timeout(wait, renewed).await {
                    Ok(Ok(Some(answer))) => {
                        stream = Some((keeper, answers));
                        Ok(Duration::from_secs(
                            u64::try_from(answer.ttl()).unwrap_or(0),
                        ))
                    }
                    Ok(Ok(None)) => Err("etcd closed the keep-alive stream".to_owned()),
                    Ok(Err(e)) => Err(e.to_string()),
                    // The stream is dropped: a late answer must not be taken for the next
                    // renewal's, which was sent later.
                    Err(_) => Err(format!("no answer within {wait:?}")),
                }
            }
        };
        match answer {
            Ok(ttl) if ttl.is_zero() => {
                fence.close();
                report_lost(
                    &lost,
                    "the lease expired: etcd no longer knows it (it was not renewed in time)"
                        .to_owned(),
                );
                return;
            }
            Ok(ttl) => {
                fence.renewed(sent, ttl);
                health.ok();
                sleep_until(sent + period).await;
            }
            Err(error) => {
                health.fault("renewing the lease", &error);
                sleep(RETRY).await;
            }
        }
    }
}

/// Watches the leader `key` from `revision` on (the campaign's answer): its deletion means
/// this process no longer leads. A broken watch is set up again after checking that the key
/// is still there (a deletion while it was down is not missed).
pub(super) async fn watch_key(
    client: Client,
    key: Vec<u8>,
    mut revision: i64,
    fence: Fence,
    health: Arc<Health>,
    lost: watch::Sender<Option<Lost>>,
) {
    let mut kv = client.kv_client();
    let mut watcher = client.watch_client();
    let wait = Duration::from_secs(5);
    let deleted = |fence: &Fence, lost: &watch::Sender<Option<Lost>>| {
        fence.close();
        report_lost(
            lost,
            "the leader key was deleted in etcd (by an operator, or its lease was revoked)"
                .to_owned(),
        );
    };
    loop {
        // After the first round: is the key still there, and from which revision on to watch?
        if revision == 0 {
            match timeout(wait, kv.get(key.clone(), None)).await {
                Ok(Ok(answer)) if answer.kvs().is_empty() => return deleted(&fence, &lost),
                Ok(Ok(answer)) => {
                    revision = answer.header().map_or(0, |h| h.revision());
                }
                Ok(Err(e)) => {
                    health.fault("watching the leader key", &e);
                    sleep(RETRY).await;
                    continue;
                }
                Err(_) => {
                    health.fault("watching the leader key", &"no answer");
                    sleep(RETRY).await;
                    continue;
                }
            }
        }
        let options = WatchOptions::new().with_start_revision(revision.saturating_add(1));
        let mut stream = match timeout(wait, watcher.watch(key.clone(), Some(options))).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                health.fault("watching the leader key", &e);
                revision = 0;
                sleep(RETRY).await;
                continue;
            }
            Err(_) => {
                revision = 0;
                sleep(RETRY).await;
                continue;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(answer)) => {
                    if answer
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        return deleted(&fence, &lost);
                    }
                    if answer.canceled() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    health.fault("watching the leader key", &e);
                    break;
                }
            }
        }
        revision = 0;
        sleep(RETRY).await;
    }
}
