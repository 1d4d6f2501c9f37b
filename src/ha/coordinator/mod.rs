//! The etcd connection, the election, the keep-alive that moves the [`Fence`].
//!
//! - [`Coordinator::connect`] builds two clients on the `[ha]` endpoints (`connect.rs`: TLS
//!   files, the user's password read now, timeouts bounded by the TTL): one with a request
//!   timeout for everything short, one without for the campaign, which blocks until elected.
//! - [`Coordinator::campaign`] grants a lease of `lease_ttl` and keeps it alive from the grant
//!   on (`renew.rs`), then waits in etcd's own election (`v3election.Campaign` on
//!   [`super::election_name`]): etcd makes the candidate whose key is oldest the leader.
//!   etcd faults are retried with a bounded backoff; the outage is logged once. A lease lost
//!   while waiting (etcd unreachable for longer than the TTL, then back) is replaced by a new
//!   one. A cancelled `stop` revokes the lease, which removes the candidate's key.
//! - Once elected, the [`Leadership`] holds the fence the keep-alive moves (opened from the
//!   latest renewal, which etcd's answer to the campaign follows), the [`Guard`], and the two
//!   tasks that end it: the keep-alive (TTL 0: the lease is gone) and the watch of the leader
//!   key (deleted). Each closes the fence before reporting ([`Leadership::deposed`]).
//!
//! etcd unreachable while leading is not a loss: the keep-alive retries every 500 ms, the fence
//! closes by itself when its time passes (before etcd can expire the lease), and polling
//! resumes when a renewal is answered. etcd keeps leases across its restarts (and renews
//! them when it starts), so after an outage the same process may still lead; if another took
//! over meanwhile, the first answer is TTL 0 and this one is deposed.

mod connect;
mod renew;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tls_tests;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use etcd_client::{Client, LeaderKey, ResignOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use self::renew::Health;
use super::{Fence, HaError, HaSettings};
use crate::credentials::Environment;

/// The longest wait between two campaign attempts while etcd fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// The first wait after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// The longest name read back from etcd (another process's `name`).
const MAX_HOLDER_CHARS: usize = HaSettings::MAX_NAME_CHARS;

/// The connection to etcd and this process's place in the election.
pub struct Coordinator {
    /// With the request timeout: keep-alive, watch, get, resign, revoke, leader.
    client: etcd_client::Client,
    /// Without a request timeout: the campaign, which returns only when elected.
    waiting: etcd_client::Client,
    election: String,
    name: String,
    ttl: Duration,
    /// How long one short request may take ([`connect::request_timeout`]).
    request_timeout: Duration,
    health: Arc<Health>,
}

impl Coordinator {
    /// Connects (TLS and credentials from `[ha]`'s files). The files are read now; a file
    /// that cannot be used is a [`HaError::Files`] naming the key and the file. Without a user
    /// the connection itself is made on first use; with one, etcd must answer now (it
    /// authenticates) or this is a [`HaError::Etcd`].
    pub async fn connect(settings: &HaSettings) -> Result<Self, HaError> {
        Coordinator::connect_with(settings, &Environment::from_process()).await
    }

    /// [`Coordinator::connect`] with the environment given (`%d/NAME` files; for tests).
    pub async fn connect_with(settings: &HaSettings, env: &Environment) -> Result<Self, HaError> {
        let client = connect_one(settings, connect::options(settings, env, false)?).await?;
        let waiting = connect_one(settings, connect::options(settings, env, true)?).await?;
        Ok(Coordinator {
            client,
            waiting,
            election: super::election_name(&settings.election),
            name: settings.name.clone(),
            ttl: settings.lease_ttl,
            request_timeout: connect::request_timeout(settings.lease_ttl),
            health: Arc::new(Health::default()),
        })
    }

    /// The etcd client (cheap to clone), for the replication.
    pub fn client(&self) -> etcd_client::Client {
        self.client.clone()
    }

    /// Waits in the election until this process leads (retrying etcd faults with backoff and
    /// saying so), or `stop` is cancelled (`Ok(None)`: the lease is revoked, so the
    /// candidate's key is gone at once).
    pub async fn campaign(&self, stop: &CancellationToken) -> Result<Option<Leadership>, HaError> {
        let mut backoff = FIRST_BACKOFF;
        loop {
            // A lease, kept alive from its grant on.
            let sent = Instant::now();
            let mut lease_client = self.client.lease_client();
            let grant = tokio::select! {
                () = stop.cancelled() => return Ok(None),
                grant = timeout(self.request_timeout, lease_client.grant(ttl_secs(self.ttl), None)) => grant,
            };
            let problem = match grant {
                Ok(Ok(grant)) if grant.ttl() > 0 => Ok(grant),
                Ok(Ok(_)) => Err("etcd granted a TTL of 0".to_owned()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {:?}", self.request_timeout)),
            };
            let grant = match problem {
                Ok(grant) => grant,
                Err(error) => {
                    self.health.fault("granting a lease", &error);
                    if !self.pause_or_stop(stop, &mut backoff).await {
                        return Ok(None);
                    }
                    continue;
                }
            };
            self.health.ok();
            backoff = FIRST_BACKOFF;
            let lease = grant.id();
            let granted = Duration::from_secs(u64::try_from(grant.ttl()).unwrap_or(0));
            let fence = Fence::closed();
            fence.renewed(sent, granted);
            let (lost_tx, mut lost_rx) = watch::channel(None);
            let keep_alive = tokio::spawn(renew::keep_alive(
                self.client.clone(),
                lease,
                granted,
                fence.clone(),
                self.health.clone(),
                lost_tx.clone(),
            ));
            let mut tasks = Tasks(vec![keep_alive]);
            tracing::debug!(lease, ttl = ?granted, "lease granted: waiting in the election");
            // Campaign with this lease until elected, stopped, or the lease is lost.
            loop {
                let mut election = self.waiting.election_client();
                let attempt = election.campaign(self.election.clone(), self.name.clone(), lease);
                let outcome = tokio::select! {
                    () = stop.cancelled() => None,
                    _ = lost_rx.wait_for(Option::is_some) => Some(None),
                    answer = attempt => Some(Some(answer)),
                };
                let problem = match outcome {
                    None => {
                        tasks.abort();
                        self.revoke(lease).await;
                        return Ok(None);
                    }
                    Some(None) => {
                        tracing::info!(
                            "the lease expired while waiting in the election (etcd was \
                             unreachable for longer than lease_ttl): waiting again with a new one"
                        );
                        tasks.abort();
                        break;
                    }
                    Some(Some(Ok(answer))) => match answer.leader().cloned() {
                        Some(leader) => {
                            let revision = answer.header().map_or(0, |h| h.revision());
                            self.health.ok();
                            return Ok(Some(
                                self.lead(leader, revision, fence, tasks, lost_tx, lost_rx),
                            ));
                        }
                        None => "etcd's answer names no leader key".to_owned(),
                    },
                    Some(Some(Err(e))) => e.to_string(),
                };
                self.health.fault("campaigning", &problem);
                if !self.pause_or_stop(stop, &mut backoff).await {
                    tasks.abort();
                    self.revoke(lease).await;
                    return Ok(None);
                }
            }
        }
    }

    /// Elected: the watch of the leader key joins the keep-alive.
    fn lead(
        &self,
        leader: LeaderKey,
        revision: i64,
        fence: Fence,
        mut tasks: Tasks,
        lost_tx: watch::Sender<Option<Lost>>,
        lost_rx: watch::Receiver<Option<Lost>>,
    ) -> Leadership {
        self.health.leading.store(true, Ordering::Release);
        tasks.0.push(tokio::spawn(renew::watch_key(
            self.client.clone(),
            leader.key().to_vec(),
            revision,
            fence.clone(),
            self.health.clone(),
            lost_tx,
        )));
        let guard = Guard {
            key: leader.key().to_vec(),
            lease: leader.lease(),
        };
        Leadership {
            fence,
            guard,
            leader,
            lost: lost_rx,
            tasks,
            client: self.client.clone(),
            election: self.election.clone(),
            request_timeout: self.request_timeout,
            health: self.health.clone(),
        }
    }

    /// Waits `backoff` (or until `stop`), then doubles it up to [`MAX_BACKOFF`]. False when
    /// stopped.
    async fn pause_or_stop(&self, stop: &CancellationToken, backoff: &mut Duration) -> bool {
        let stopped = tokio::select! {
            () = stop.cancelled() => true,
            () = sleep(*backoff) => false,
        };
        *backoff = (*backoff * 2).min(MAX_BACKOFF);
        !stopped
    }

    /// Revokes `lease` (its keys go with it), bounded by the request timeout; a failure is
    /// logged and left to the TTL.
    async fn revoke(&self, lease: i64) {
        revoke(&self.client, lease, self.request_timeout).await;
    }

    /// The current leader's name, if any.
    pub async fn leader(&self) -> Result<Option<String>, HaError> {
        let leader = leader_of(&self.client, &self.election, self.request_timeout).await?;
        Ok(leader.map(|(_, name)| name))
    }
}

async fn connect_one(
    settings: &HaSettings,
    options: etcd_client::ConnectOptions,
) -> Result<Client, HaError> {
    Client::connect(&settings.etcd, Some(options))
        .await
        .map_err(|e| {
            HaError::Etcd(format!(
                "connecting to {}: {}",
                settings.etcd.join(", "),
                crate::escape::escape(&e.to_string())
            ))
        })
}

/// Whole seconds for etcd (at least 1; the config keeps the TTL from 3 s to 5 min).
fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX)
}

async fn revoke(client: &Client, lease: i64, wait: Duration) {
    match timeout(wait, client.lease_client().revoke(lease)).await {
        Ok(Ok(_)) => tracing::debug!(lease, "lease revoked"),
        Ok(Err(e)) => tracing::warn!(
            error_code = "HaError.Etcd",
            error = %crate::escape::escape(&e.to_string()),
            "could not revoke the lease: it expires after lease_ttl"
        ),
        Err(_) => tracing::warn!(
            error_code = "HaError.Etcd",
            "etcd did not answer the lease's revocation in time: it expires after lease_ttl"
        ),
    }
}

/// The election's leader: its key and name (the value of the oldest key), `None` when nobody
/// leads.
async fn leader_of(
    client: &Client,
    election: &str,
    wait: Duration,
) -> Result<Option<(Vec<u8>, String)>, HaError> {
    match timeout(wait, client.election_client().leader(election.to_owned())).await {
        Ok(Ok(answer)) => Ok(answer
            .kv()
            .map(|kv| (kv.key().to_vec(), holder_name(kv.value())))),
        // etcd answers "election: no leader" as an error.
        Ok(Err(etcd_client::Error::GRpcStatus(status)))
            if status.message().contains("no leader") =>
        {
            Ok(None)
        }
        Ok(Err(e)) => Err(HaError::Etcd(format!(
            "reading the leader: {}",
            crate::escape::escape(&e.to_string())
        ))),
        Err(_) => Err(HaError::Etcd(format!(
            "reading the leader: no answer within {wait:?}"
        ))),
    }
}

/// Another process's name as read from etcd: hostile text, bounded (escaped where printed).
fn holder_name(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .chars()
        .take(MAX_HOLDER_CHARS)
        .collect()
}

/// The tasks of a lease; aborted when dropped, so a leadership dropped without
/// [`Leadership::resign`] (a crash, a panic) stops renewing and etcd expires it.
struct Tasks(Vec<JoinHandle<()>>);

impl Tasks {
    fn abort(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        self.abort();
    }
}

/// What a replicated write compares: the leader's election key still bound to its lease.
#[derive(Debug, Clone)]
pub struct Guard {
    /// The election key this process created (`P/leader/<lease>`).
    pub key: Vec<u8>,
    /// Its lease.
    pub lease: i64,
}

/// Why leadership ended.
#[derive(Debug, Clone)]
pub struct Lost {
    /// What happened, for the event and the log.
    pub reason: String,
    /// Who leads now, when known.
    pub holder: Option<String>,
}

/// This process leads: its fence, its guard, and the signal that it no longer does.
pub struct Leadership {
    fence: Fence,
    guard: Guard,
    leader: LeaderKey,
    lost: watch::Receiver<Option<Lost>>,
    tasks: Tasks,
    client: Client,
    election: String,
    request_timeout: Duration,
    health: Arc<Health>,
}

impl Leadership {
    /// The fence the API clients check before each request.
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The guard of replicated writes.
    pub fn guard(&self) -> Guard {
        self.guard.clone()
    }

    /// Resolves when leadership is lost (the lease expired or the key is gone); the fence is
    /// closed by then. `holder` is the new leader's name when etcd names one.
    pub async fn deposed(&mut self) -> Lost {
        let lost = match self.lost.wait_for(Option::is_some).await {
            Ok(lost) => lost.clone(),
            // Both tasks ended without a reason: cannot happen, but never lead on unproven.
            Err(_) => None,
        };
        self.fence.close();
        self.health.leading.store(false, Ordering::Release);
        let mut lost = lost.unwrap_or_else(|| Lost {
            reason: "the lease's tasks ended".to_owned(),
            holder: None,
        });
        if lost.holder.is_none() {
            lost.holder = leader_of(&self.client, &self.election, self.request_timeout)
                .await
                .ok()
                .flatten()
                .filter(|(key, _)| key.as_slice() != self.leader.key())
                .map(|(_, name)| name);
        }
        lost
    }

    /// At a clean stop: closes the fence, then resigns so a standby takes over at once, and
    /// revokes the lease; each step bounded by the request timeout.
    pub async fn resign(mut self) {
        self.fence.close();
        self.tasks.abort();
        self.health.leading.store(false, Ordering::Release);
        let mut election = self.client.election_client();
        let resign = election.resign(Some(ResignOptions::new().with_leader(self.leader.clone())));
        match timeout(self.request_timeout, resign).await {
            Ok(Ok(_)) => tracing::info!("resigned the leadership"),
            Ok(Err(e)) => tracing::warn!(
                error_code = "HaError.Etcd",
                error = %crate::escape::escape(&e.to_string()),
                "could not resign: a standby takes over when the lease expires"
            ),
            Err(_) => tracing::warn!(
                error_code = "HaError.Etcd",
                "etcd did not answer the resignation in time: a standby takes over when the \
                 lease expires"
            ),
        }
        revoke(&self.client, self.guard.lease, self.request_timeout).await;
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        // Whatever ends it, a leadership no one holds any more does not send.
        self.fence.close();
        self.health.leading.store(false, Ordering::Release);
    }
}
