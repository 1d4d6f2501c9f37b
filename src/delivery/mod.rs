//! Alert delivery (`[[sink]]`, `docs/delivery.md`): chosen events reach Alertmanager and chat
//! robots at least once, through an outbox in `state_dir` that survives crashes.
//!
//! How an event travels, and where each step lives:
//! - [`Delivery`] (here): the [`EventSink`] the daemon tees with its log. Each event a sink
//!   takes becomes a [`Record`] appended to that sink's outbox in memory, and the sink's
//!   worker is woken: the engine never waits for a disk or a receiver.
//! - [`select`]: which events a sink takes (`events`, `min_severity`; a sink that takes a
//!   finding also takes its clear).
//! - [`record`]: the event as the outbox keeps it ([`Record`]: its own fields, account,
//!   severity, the condition it starts or resolves).
//! - [`outbox`]: the per-sink queue in `state_dir` (atomic, private, bounded, the message in
//!   flight kept with its stable id), made durable before the engine's state files
//!   ([`Delivery::barrier`], a [`crate::state::SaveBarrier`]), so a crash between the two
//!   repeats an event, never loses one.
//! - [`journal`]: every record taken appended at once to `outbox-{sink}.journal` and
//!   replayed at start, so a `kill -9` right after an emit loses nothing either.
//! - [`worker`]: one task per sink: its own rate window, backoff up to `max_age`, digests over
//!   the rate; a slow or dead sink never delays another, nor the polling.
//! - [`kinds`]: what one receiver wants: the message (body, size limit, signature) and what
//!   its answer means. Pure, one file per kind.
//! - [`settings`]: the validated `[[sink]]` blocks and the secrets their files hold.
//!
//! Sinks are set up at start: a SIGHUP that changes `[[sink]]` blocks takes effect at the
//! next restart (`commands::reload` puts it among the changes that wait, and says so).

pub mod journal;
pub mod kinds;
pub mod outbox;
pub mod record;
pub mod select;
pub mod settings;
pub mod worker;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, EventSink};
use crate::metrics::Metrics;
use crate::policy::Severity;
use crate::state::{SaveBarrier, SetAside};
use crate::tls::{TlsError, TlsTrust};

pub use record::Record;
pub use select::EventSelector;
pub use settings::{ResolvedSink, SinkKind, SinkSettings, UrlSource};
pub use worker::MESSAGE_ID_HEADER;

use journal::Journal;
use outbox::{Outbox, OutboxFile};
use worker::{Clock, HttpTransport, SinkShared, Transport, Worker, WorkerConfig};

/// A receiver's answer is awaited this long (connecting included), then the try failed.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// On shutdown, a request in flight gets this long to be answered.
pub const FINISH_WITHIN: Duration = Duration::from_secs(3);

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The URL (from `url` or `url_file`) is not an http(s) URL. Its text is never shown: a
    /// robot's URL holds its key.
    #[error(
        "sink {sink}: the URL is not an http:// or https:// URL (not shown: it may hold the \
         robot's key); fix `url` or the file `url_file` names"
    )]
    Url {
        /// The sink's name.
        sink: String,
    },
    /// The HTTP client could not be built with the trust settings.
    #[error("sink {sink}: {source}")]
    Client {
        /// The sink's name.
        sink: String,
        /// Why.
        source: TlsError,
    },
    /// `url_file` or `secret_file` could not be used ([`settings::resolve`]).
    #[error(transparent)]
    Resolve(#[from] settings::ResolveError),
}

impl DeliveryError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DeliveryError::Url { .. } => "DeliveryError.Url",
            DeliveryError::Client { .. } => "DeliveryError.Client",
            DeliveryError::Resolve(e) => e.code(),
        }
    }
}

/// What [`Delivery::start_with`] may change from the defaults.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Which CAs the sinks' clients trust (the daemon: the system's and `[api] ca_file`).
    pub trust: TlsTrust,
    /// [`ANSWER_TIMEOUT`].
    pub answer_timeout: Duration,
    /// [`FINISH_WITHIN`].
    pub finish_within: Duration,
}

impl Default for DeliveryOptions {
    fn default() -> Self {
        DeliveryOptions {
            trust: TlsTrust::system(),
            answer_timeout: ANSWER_TIMEOUT,
            finish_within: FINISH_WITHIN,
        }
    }
}

/// One sink as [`Delivery`] sees it: what it takes and its shared outbox.
struct SinkEntry {
    events: Vec<EventSelector>,
    min_severity: Severity,
    shared: Arc<SinkShared>,
}

/// Every sink's outbox and worker (see the module docs).
pub struct Delivery {
    sinks: Vec<SinkEntry>,
    clock: Clock,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// Ends the workers (a child of the daemon's shutdown).
    stop: CancellationToken,
    finish_within: Duration,
}

impl Delivery {
    /// Starts a worker per sink, each with its outbox loaded from `state_dir` (a damaged file
    /// is set aside and reported to `log_sink` as `state_damaged`; it never stops the
    /// daemon). `log_sink` also gets `delivery_failed`. The workers end with `shutdown`.
    pub fn start(
        sinks: Vec<ResolvedSink>,
        state_dir: &Path,
        metrics: Option<Arc<Metrics>>,
        log_sink: Arc<dyn EventSink>,
        shutdown: CancellationToken,
    ) -> Result<Arc<Delivery>, DeliveryError> {
        Self::start_with(
            sinks,
            state_dir,
            metrics,
            log_sink,
            shutdown,
            DeliveryOptions::default(),
        )
    }

    /// [`Delivery::start`] with `options`.
    pub fn start_with(
        sinks: Vec<ResolvedSink>,
        state_dir: &Path,
        metrics: Option<Arc<Metrics>>,
        log_sink: Arc<dyn EventSink>,
        shutdown: CancellationToken,
        options: DeliveryOptions,
    ) -> Result<Arc<Delivery>, DeliveryError> {
        // Every client first: a sink that cannot work fails the start before any task runs.
        let mut transports: Vec<Arc<dyn Transport>> = Vec::with_capacity(sinks.len());
        for sink in &sinks {
            transports.push(Arc::new(http_transport(sink, &options)?));
        }
        let stop = shutdown.child_token();
        let clock = Clock::start();
        let mut entries = Vec::with_capacity(sinks.len());
        let mut workers = Vec::with_capacity(sinks.len());
        for (sink, transport) in sinks.iter().zip(transports) {
            let s = &sink.settings;
            let (mut outbox, file) = load_outbox(state_dir, s, log_sink.as_ref());
            // Records taken after the last snapshot, before a kill (see `journal`).
            let journal = file.is_some().then(|| {
                journal::replay(state_dir, &s.name, &mut outbox);
                Journal::open(state_dir, &s.name)
            });
            let mut kind = kinds::for_sink(sink);
            kind.restore(outbox.kind_state());
            let mut shared =
                SinkShared::new(&s.name, s.outbox_limit, outbox, file, metrics.clone());
            if let Some(journal) = journal {
                shared = shared.with_journal(journal);
            }
            let shared = Arc::new(shared);
            let worker = Worker::new(
                shared.clone(),
                kind,
                transport,
                WorkerConfig {
                    per_minute: s.per_minute,
                    max_age: s.max_age,
                    finish_within: options.finish_within,
                },
                clock,
                log_sink.clone(),
                stop.clone(),
            );
            workers.push(tokio::spawn(worker.run()));
            entries.push(SinkEntry {
                events: s.events.clone(),
                min_severity: s.min_severity,
                shared,
            });
        }
        Ok(Arc::new(Delivery {
            sinks: entries,
            clock,
            workers: Mutex::new(workers),
            stop,
            finish_within: options.finish_within,
        }))
    }

    /// What the engines call before writing a state or inventory file: persists every
    /// outbox with unsaved records (on the caller's thread; it blocks).
    pub fn barrier(&self) -> SaveBarrier {
        let shared: Vec<Arc<SinkShared>> = self.sinks.iter().map(|s| s.shared.clone()).collect();
        Arc::new(move || {
            for sink in &shared {
                sink.persist_logged();
            }
        })
    }

    /// Ends the workers (a request in flight gets `finish_within`) and persists every outbox.
    /// Events emitted after this wait in the outboxes for the next start.
    pub async fn finish(&self) {
        self.stop.cancel();
        let workers =
            std::mem::take(&mut *self.workers.lock().unwrap_or_else(PoisonError::into_inner));
        let bound = self.finish_within + Duration::from_secs(1);
        for worker in workers {
            let abort = worker.abort_handle();
            if tokio::time::timeout(bound, worker).await.is_err() {
                abort.abort();
            }
        }
        let barrier = self.barrier();
        let _ = tokio::task::spawn_blocking(move || barrier()).await;
    }

    /// Events waiting in `sink`'s outbox (tests, `status`).
    pub fn pending(&self, sink: &str) -> Option<usize> {
        self.sinks
            .iter()
            .find(|s| s.shared.name() == sink)
            .map(|s| s.shared.outbox().len())
    }
}

impl Drop for Delivery {
    /// Without [`Delivery::finish`], the workers stop where they are (as a crash would stop
    /// them): what the outboxes hold on disk is what the next start delivers.
    fn drop(&mut self) {
        for worker in self
            .workers
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            worker.abort();
        }
    }
}

impl EventSink for Delivery {
    fn emit(&self, event: &Event) {
        // Per sink: what a status change starts or ends depends on the statuses the sink
        // takes (`Record::for_sink`), so two sinks may keep different records of one event.
        let mut context = None;
        for sink in &self.sinks {
            let (account, at_ms) = context
                .get_or_insert_with(|| (crate::events::current_account(), self.clock.now_ms()));
            if let Some(record) = Record::for_sink(
                event,
                account.as_deref(),
                0,
                *at_ms,
                &sink.events,
                sink.min_severity,
            ) {
                sink.shared.push(record);
            }
        }
    }
}

/// The sink's outbox and its file; a damaged file is set aside and reported. When it cannot
/// be set aside, the sink keeps its outbox in memory only (never overwriting the file) and
/// says so: alerts still go out, the daemon still runs.
fn load_outbox(
    state_dir: &Path,
    s: &SinkSettings,
    log: &dyn EventSink,
) -> (Outbox, Option<OutboxFile>) {
    let file = OutboxFile::for_sink(state_dir, &s.name);
    match file.load_keeping_damaged(&s.name, s.outbox_limit) {
        Ok((outbox, None)) => (outbox, Some(file)),
        Ok((outbox, Some(SetAside { error, moved_to }))) => {
            log.emit(&Event::StateDamaged {
                path: crate::state::shown(file.path()),
                error_message: error.to_string(),
                moved_to: crate::state::shown(&moved_to),
            });
            (outbox, Some(file))
        }
        Err(e) => {
            tracing::error!(
                sink = s.name.as_str(),
                error_code = e.code(),
                "sink {}: {e}; its events are kept in memory only until the file is moved \
                 away and the daemon restarted",
                s.name
            );
            (Outbox::new(&s.name, s.outbox_limit), None)
        }
    }
}

/// The sink's HTTP client: the trust settings, the answer timeout, no redirects (a robot's
/// URL holds its key: never followed elsewhere), never through a proxy for loopback.
fn http_transport(
    sink: &ResolvedSink,
    options: &DeliveryOptions,
) -> Result<HttpTransport, DeliveryError> {
    use secrecy::ExposeSecret;
    let name = &sink.settings.name;
    let url = url::Url::parse(sink.url.expose_secret())
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
        .ok_or_else(|| DeliveryError::Url { sink: name.clone() })?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let timeout = options.answer_timeout;
    let client = options
        .trust
        .client(&url, |builder| {
            let builder = if loopback {
                builder.no_proxy()
            } else {
                builder
            };
            builder
                .timeout(timeout)
                .connect_timeout(timeout)
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(Duration::from_secs(50))
                .user_agent(concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION")))
        })
        .map_err(|source| DeliveryError::Client {
            sink: name.clone(),
            source,
        })?;
    Ok(HttpTransport::new(client))
}

#[cfg(test)]
mod tests;
