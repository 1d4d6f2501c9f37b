//! One task per sink: takes the sink's outbox to its receiver, paced, retried, given up only
//! after `max_age`.
//!
//! The loop waits for whichever comes first: records in the outbox (a push wakes it), the
//! kind's periodic message ([`Kind::next_periodic`]), the end of a backoff or of the rate
//! window, a full outbox's report, or the shutdown. Then:
//! - a message: everything pending is offered to [`Kind::compose`], which takes what fits (a
//!   digest when events came faster than the rate); the outbox marks those records in flight
//!   with the message's stable id and is **persisted before the request is sent**, so a
//!   restart re-sends exactly that message. The id also travels in the
//!   [`MESSAGE_ID_HEADER`] header, whatever the kind puts in the body.
//! - the answer ([`Kind::classify`]; no answer within the timeout, a reset, a refused
//!   connection are all a retry): delivered records leave the outbox (persisted again);
//!   otherwise the next try waits [`backoff`] (1 s doubling to 5 min, deterministic), or the
//!   receiver's own `Retry-After` when longer. When the message's oldest record is older than
//!   `max_age`, it and every other record that old are given up: `delivery_failed` to the
//!   log, `deliveries_total{outcome="failed"}`.
//! - the rate ([`RateWindow`]): never more than `per_minute` requests in any 60 s, retries
//!   and periodic messages included.
//!
//! Nothing here can delay another sink or the engine: each sink has its own task, client and
//! outbox lock, and the engine's side ([`SinkShared::push`]) only appends in memory and
//! wakes the task. On shutdown a request in flight gets [`super::DeliveryOptions`]'
//! `finish_within` to be answered; the outbox is then persisted and the task ends.
//!
//! Time: every wait is on tokio's clock (paused in the tests), and the wall clock the
//! records are stamped with and `max_age` is measured on is [`Clock`]: the wall clock at the
//! start plus tokio's elapsed time, so a wall clock that jumps moves no deadline.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Record;
use super::journal::Journal;
use super::kinds::{Answer, Kind, Request};
use super::outbox::{Outbox, OutboxFile, message_id};
use crate::events::{Event, EventSink, printable};
use crate::metrics::{DeliveryOutcome, Metrics};
use crate::state::StateError;

/// The header carrying a message's stable id (`{sink}-{first_seq}-{last_seq}`), on every
/// message made of records (a periodic re-post has none).
pub const MESSAGE_ID_HEADER: &str = "X-Cwp-Portwatch-Message-Id";
/// The most of an answer's body read (kinds classify on its first bytes).
pub const MAX_ANSWER_BYTES: usize = 4096;
/// The first retry's wait; each failure doubles it up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest wait between two tries (longer only when the receiver asks for it).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// The longest `Retry-After` honoured: a hostile answer cannot park a sink for ever.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The rate window's span: the receivers' minute plus [`RATE_MARGIN`].
pub const RATE_WINDOW: Duration = Duration::from_secs(60).saturating_add(RATE_MARGIN);
/// Why a margin: the receivers count arrivals, not sends. With sends exactly 60 s apart, a
/// first message that took longer on the way than the one a minute later lands both in the
/// robot's minute, and DingTalk blocks a robot for 10 minutes over 20 a minute. A second
/// covers any network time an answer within [`super::ANSWER_TIMEOUT`] makes likely, for
/// 1.6 % of the rate.
pub const RATE_MARGIN: Duration = Duration::from_secs(1);
/// A full outbox reports its losses at most this often.
pub const FULL_REPORT_EVERY: Duration = Duration::from_secs(60);
/// Records offered to one [`Kind::compose`] at most (a digest never needs more).
const MAX_OFFER: usize = 500;
/// Characters kept of a transport error's text.
const MAX_REASON_CHARS: usize = 300;

/// The wait after the `attempt`-th failure in a row (1 s, 2 s, 4 s, … 5 min).
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

/// `per_minute` requests in any [`RATE_WINDOW`]: the send times of the last window.
#[derive(Debug)]
pub struct RateWindow {
    per_minute: usize,
    sent: VecDeque<Instant>,
}

impl RateWindow {
    /// At most `per_minute` (at least one) requests in any [`RATE_WINDOW`] (61 s).
    pub fn new(per_minute: u32) -> RateWindow {
        let per_minute = usize::try_from(per_minute.max(1)).unwrap_or(usize::MAX);
        RateWindow {
            per_minute,
            sent: VecDeque::new(),
        }
    }

    /// When the next request may go: `now` when the window has room, else when its oldest
    /// send leaves it.
    pub fn free_at(&mut self, now: Instant) -> Instant {
        while self
            .sent
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= RATE_WINDOW)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.per_minute {
            return now;
        }
        self.sent.front().map_or(now, |t| *t + RATE_WINDOW)
    }

    /// A request went at `now`.
    pub fn sent(&mut self, now: Instant) {
        self.sent.push_back(now);
        // Only the last `per_minute` decide.
        while self.sent.len() > self.per_minute {
            self.sent.pop_front();
        }
    }
}

/// The wall clock of delivery: Unix time at the start plus tokio's time since (see the
/// module docs).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    at: Instant,
    unix_ms: u64,
}

impl Clock {
    /// Starting now.
    pub fn start() -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Clock {
            at: Instant::now(),
            unix_ms,
        }
    }

    /// Unix milliseconds now.
    pub fn now_ms(&self) -> u64 {
        let elapsed = Instant::now()
            .saturating_duration_since(self.at)
            .as_millis();
        self.unix_ms
            .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
    }

    /// Now, as a [`SystemTime`] (what kinds take).
    pub fn system_now(&self) -> SystemTime {
        UNIX_EPOCH
            .checked_add(Duration::from_millis(self.now_ms()))
            .unwrap_or(UNIX_EPOCH)
    }

    /// The instant of `t` on tokio's clock (the past is now; at most 30 days ahead).
    fn instant_of(&self, t: SystemTime) -> Instant {
        let ms = t
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let now_ms = self.now_ms();
        let ahead = Duration::from_millis(ms.saturating_sub(now_ms))
            .min(Duration::from_secs(30 * 24 * 3600));
        Instant::now() + ahead
    }
}

/// What a receiver answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// `Retry-After`, when given and readable.
    pub retry_after: Option<Duration>,
    /// The body's first [`MAX_ANSWER_BYTES`].
    pub body: Vec<u8>,
}

/// A request's future: the reply, or why there was none (printable, no secret).
pub type Sending<'a> = Pin<Box<dyn Future<Output = Result<Reply, String>> + Send + 'a>>;

/// How requests reach a receiver: HTTP in the daemon ([`HttpTransport`]), a script in the
/// unit tests.
pub trait Transport: Send + Sync {
    /// Sends `request`, with `message_id` in [`MESSAGE_ID_HEADER`] when given.
    fn send<'a>(&'a self, request: Request, message_id: Option<&'a str>) -> Sending<'a>;
}

/// The daemon's transport: one reqwest client per sink (built by
/// [`crate::tls::TlsTrust::client`], with the answer timeout, no redirects).
pub struct HttpTransport {
    client: reqwest::Client,
}

impl HttpTransport {
    /// Over `client`.
    pub fn new(client: reqwest::Client) -> HttpTransport {
        HttpTransport { client }
    }

    async fn post(&self, request: Request, message_id: Option<&str>) -> Result<Reply, String> {
        let mut builder = self
            .client
            .post(request.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        if let Some(id) = message_id {
            builder = builder.header(MESSAGE_ID_HEADER, id);
        }
        for (name, value) in request.headers {
            builder = builder.header(name, value);
        }
        let mut response = builder
            .body(request.body)
            .send()
            .await
            .map_err(transport_reason)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        // Bounded: a receiver streaming an endless answer is read no further.
        let mut body = Vec::new();
        while body.len() < MAX_ANSWER_BYTES {
            match response.chunk().await.map_err(transport_reason)? {
                Some(chunk) => {
                    let room = MAX_ANSWER_BYTES - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                }
                None => break,
            }
        }
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }
}

impl Transport for HttpTransport {
    fn send<'a>(&'a self, request: Request, message_id: Option<&'a str>) -> Sending<'a> {
        Box::pin(self.post(request, message_id))
    }
}

/// `Retry-After`: seconds, or an HTTP date (then the time from `now` to it).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Why a request got no answer, printable and without the URL (which may hold a key).
fn transport_reason(error: reqwest::Error) -> String {
    let error = error.without_url();
    let what = if error.is_timeout() {
        "no answer in time"
    } else if error.is_connect() {
        "cannot connect"
    } else if error.is_body() || error.is_decode() {
        "the answer broke off"
    } else {
        "the request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(&error);
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    let kept: String = text.chars().take(MAX_REASON_CHARS).collect();
    printable(&kept)
}

/// What a sink's worker shares with the engine's side and the save barrier: the outbox, its
/// file and the worker's wake-up.
pub struct SinkShared {
    name: String,
    limit: usize,
    outbox: Mutex<Outbox>,
    /// `None`: the outbox is kept in memory only (its damaged file could not be set aside).
    file: Option<OutboxFile>,
    /// The outbox version last written; held while writing, so writes never reorder.
    written: Mutex<u64>,
    /// Every record taken, appended as taken ([`super::journal`]); locked after `outbox`.
    journal: Mutex<Option<Journal>>,
    wake: Notify,
    metrics: Option<Arc<Metrics>>,
}

impl SinkShared {
    /// `name`'s shared part, over `outbox` as loaded from `file` (unchanged since).
    pub fn new(
        name: &str,
        limit: usize,
        outbox: Outbox,
        file: Option<OutboxFile>,
        metrics: Option<Arc<Metrics>>,
    ) -> SinkShared {
        if let Some(m) = &metrics {
            m.sink_known(name);
            m.sink_events(name, DeliveryOutcome::Dropped, outbox.evicted_unreported());
            m.set_outbox_events(name, outbox.len());
        }
        SinkShared {
            name: name.to_owned(),
            limit,
            outbox: Mutex::new(outbox),
            file,
            // A loaded outbox is version 0: written already, unless the load changed it
            // (records given up to fit `limit`), which bumped the version.
            written: Mutex::new(0),
            journal: Mutex::new(None),
            wake: Notify::new(),
            metrics,
        }
    }

    /// Appends every record taken from now on to `journal` (sinks with a file).
    pub fn with_journal(self, journal: Journal) -> SinkShared {
        *self.journal.lock().unwrap_or_else(PoisonError::into_inner) = Some(journal);
        self
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The outbox, locked (briefly: the engine's emits take it too).
    pub fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `record` (numbered by the outbox) and wakes the worker: memory only, never
    /// waiting for the disk or the network.
    pub fn push(&self, mut record: Record) {
        let (evicted, len) = {
            let mut outbox = self.outbox();
            // Journaled under the outbox's lock, numbered as the push numbers it, so the
            // journal's order is the outbox's and a snapshot's move of the journal
            // (`persist`) falls between two records.
            record.seq = outbox.next_seq();
            if let Some(journal) = &mut *self.journal.lock().unwrap_or_else(PoisonError::into_inner)
            {
                journal.append(&record);
            }
            let (_, evicted) = outbox.push(record);
            (evicted.is_some(), outbox.len())
        };
        if let Some(m) = &self.metrics {
            if evicted {
                m.sink_events(&self.name, DeliveryOutcome::Dropped, 1);
            }
            m.set_outbox_events(&self.name, len);
        }
        self.wake.notify_one();
    }

    /// Writes the outbox when it changed since the last write (blocking: fsyncs). Only a
    /// snapshot (pointers) is taken under the outbox's lock; it is encoded and written after
    /// releasing it, so emits never wait for the encoding nor the disk.
    pub fn persist(&self) -> Result<(), StateError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let mut written = self.written.lock().unwrap_or_else(PoisonError::into_inner);
        let (version, snapshot) = {
            let outbox = self.outbox();
            if outbox.version() == *written {
                return Ok(());
            }
            let taken = (outbox.version(), outbox.snapshot());
            if let Some(journal) = &mut *self.journal.lock().unwrap_or_else(PoisonError::into_inner)
            {
                journal.snapshot_taken();
            }
            taken
        };
        file.write(&snapshot.encode())?;
        if let Some(journal) = &*self.journal.lock().unwrap_or_else(PoisonError::into_inner) {
            journal.snapshot_written();
        }
        *written = version;
        Ok(())
    }

    /// [`SinkShared::persist`], a failure logged (the records stay in memory and are written
    /// at the next change).
    pub fn persist_logged(&self) {
        if let Err(e) = self.persist() {
            tracing::error!(
                sink = self.name.as_str(),
                error_code = e.code(),
                "cannot write the outbox of sink {}: {e}",
                self.name
            );
        }
    }

    fn count(&self, outcome: DeliveryOutcome, n: usize) {
        if let Some(m) = &self.metrics {
            m.sink_events(&self.name, outcome, n as u64);
        }
    }

    fn gauge(&self) {
        if let Some(m) = &self.metrics {
            let len = self.outbox().len();
            m.set_outbox_events(&self.name, len);
        }
    }
}

/// The worker's settings besides its sink.
pub struct WorkerConfig {
    /// `per_minute`.
    pub per_minute: u32,
    /// `max_age`.
    pub max_age: Duration,
    /// How long a request in flight may still take once the shutdown began.
    pub finish_within: Duration,
}

/// What the loop does next.
enum Step {
    Records,
    Periodic,
    Wait(Option<Instant>),
}

/// One sink's task (see the module docs).
pub struct Worker {
    shared: Arc<SinkShared>,
    kind: Box<dyn Kind>,
    transport: Arc<dyn Transport>,
    config: WorkerConfig,
    rate: RateWindow,
    /// A compose panicked on several records: the next message offers only the first, so
    /// the record at fault is found and given up alone.
    single_next: bool,
    /// Failures in a row.
    attempts: u32,
    /// No request before this (backoff).
    not_before: Option<Instant>,
    /// The kind said no periodic message was due: not asked again before this.
    periodic_not_before: Option<Instant>,
    last_full_report: Option<Instant>,
    clock: Clock,
    log: Arc<dyn EventSink>,
    shutdown: CancellationToken,
}

impl Worker {
    /// A worker for `shared`'s sink; `kind` has restored its saved state already.
    pub fn new(
        shared: Arc<SinkShared>,
        kind: Box<dyn Kind>,
        transport: Arc<dyn Transport>,
        config: WorkerConfig,
        clock: Clock,
        log: Arc<dyn EventSink>,
        shutdown: CancellationToken,
    ) -> Worker {
        Worker {
            shared,
            kind,
            transport,
            rate: RateWindow::new(config.per_minute),
            single_next: false,
            config,
            attempts: 0,
            not_before: None,
            periodic_not_before: None,
            last_full_report: None,
            clock,
            log,
            shutdown,
        }
    }

    /// Runs until the shutdown; the outbox is persisted at the end.
    pub async fn run(mut self) {
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            let now = Instant::now();
            self.report_full(now);
            let done = match self.next_step(now) {
                Step::Records => self.send_records().await,
                Step::Periodic => self.send_periodic().await,
                Step::Wait(until) => {
                    let sleep = async {
                        match until {
                            Some(t) => tokio::time::sleep_until(t).await,
                            None => std::future::pending().await,
                        }
                    };
                    tokio::select! {
                        _ = self.shutdown.cancelled() => true,
                        _ = self.shared.wake.notified() => false,
                        _ = sleep => false,
                    }
                }
            };
            if done {
                break;
            }
        }
        self.persist().await;
    }

    fn next_step(&mut self, now: Instant) -> Step {
        let has_records = !self.shared.outbox().is_empty();
        let periodic_at = self
            .kind
            .next_periodic()
            .map(|t| self.clock.instant_of(t))
            .map(|t| self.periodic_not_before.map_or(t, |n| t.max(n)));
        let gate = self
            .not_before
            .map_or(now, |t| t.max(now))
            .max(self.rate.free_at(now));
        let due = has_records || periodic_at.is_some_and(|t| t <= now);
        if due && gate <= now {
            return if has_records {
                Step::Records
            } else {
                Step::Periodic
            };
        }
        let wake = if due {
            Some(gate)
        } else {
            periodic_at.map(|t| t.max(gate))
        };
        let report_at = (self.shared.outbox().evicted_unreported() > 0)
            .then(|| self.last_full_report.map_or(now, |t| t + FULL_REPORT_EVERY));
        Step::Wait(match (wake, report_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        })
    }

    /// Reports what a full outbox gave up, at most once per [`FULL_REPORT_EVERY`].
    fn report_full(&mut self, now: Instant) {
        if self
            .last_full_report
            .is_some_and(|t| now < t + FULL_REPORT_EVERY)
        {
            return;
        }
        let evicted = self.shared.outbox().take_evicted();
        if evicted == 0 {
            return;
        }
        self.last_full_report = Some(now);
        self.log.emit(&Event::DeliveryFailed {
            sink: self.shared.name.clone(),
            error_message: format!(
                "the outbox is full (outbox_limit = {}): the oldest events that end no \
                 condition were given up",
                self.shared.limit
            ),
            events: evicted,
        });
    }

    /// Composes, marks in flight, persists, sends and handles the answer of one message.
    /// `true` when the shutdown left it unanswered (the task ends).
    async fn send_records(&mut self) -> bool {
        let now = self.clock.system_now();
        let most = if self.single_next { 1 } else { MAX_OFFER };
        let shared = self.shared.outbox().offer(most);
        let offered: Vec<Record> = shared.into_iter().map(Arc::unwrap_or_clone).collect();
        let Some(first) = offered.first().map(|r| r.seq) else {
            return false;
        };
        // The id names the records the message carries, which the kind decides: composed
        // again on what it took (a kind is pure, so the second time takes them all).
        let mut covers = offered.len();
        let mut composed;
        let mut tries = 0;
        loop {
            let id = message_id(&self.shared.name, first, offered[covers - 1].seq);
            let kind = &mut self.kind;
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                kind.compose(&id, &offered[..covers], now)
            }));
            composed = match attempt {
                Ok(composed) => composed,
                Err(_) => {
                    self.give_up_uncomposable(covers);
                    return false;
                }
            };
            let took = composed.covers.clamp(1, covers);
            tries += 1;
            if took == covers || tries == 3 {
                covers = took;
                break;
            }
            covers = took;
        }
        self.single_next = false;
        let Some(id) = self.shared.outbox().start(covers) else {
            return false;
        };
        // On disk before it is sent: a restart re-sends exactly this message.
        self.persist().await;
        self.rate.sent(Instant::now());
        let Some(reply) = self.exchange(composed.request, Some(id.clone())).await else {
            return true;
        };
        let answer = self.classify(reply);
        match answer {
            Answer::Delivered => {
                let records = self.shared.outbox().finish_in_flight();
                self.kind.delivered(&records, self.clock.system_now());
                let state = self.kind.save();
                self.shared.outbox().set_kind_state(state);
                self.shared.count(DeliveryOutcome::Ok, records.len());
                self.succeeded();
            }
            Answer::Retry { after, reason } => {
                self.shared.count(DeliveryOutcome::Retry, covers);
                self.failed(after, &reason, &id);
                self.give_up_old(&reason);
            }
        }
        self.shared.gauge();
        self.persist().await;
        false
    }

    /// A kind panicked composing a message (a defect: kinds are pure and property-tested).
    /// The sink must not stop for it, nor try the same records for ever: the first record
    /// alone is given up and reported when it was offered alone, else the next try offers it
    /// alone, so one bad record costs only itself.
    fn give_up_uncomposable(&mut self, offered: usize) {
        if offered > 1 {
            self.single_next = true;
            return;
        }
        self.single_next = false;
        let given_up = {
            let mut outbox = self.shared.outbox();
            if outbox.start(1).is_none() {
                return;
            }
            outbox.finish_in_flight().len()
        };
        self.shared.count(DeliveryOutcome::Failed, given_up);
        self.shared.gauge();
        tracing::error!(
            sink = %printable(&self.shared.name),
            "a message could not be composed (a defect: please report it); its event is \
             given up"
        );
        self.log.emit(&Event::DeliveryFailed {
            sink: self.shared.name.clone(),
            error_message: "the event could not be composed into a message (a defect; the \
                            event is still in the journal)"
                .to_owned(),
            events: given_up as u64,
        });
    }

    /// Sends the kind's periodic message. `true` when the shutdown left it unanswered.
    async fn send_periodic(&mut self) -> bool {
        let kind = &mut self.kind;
        let now = self.clock.system_now();
        let periodic =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| kind.periodic(now)));
        let Ok(periodic) = periodic else {
            tracing::error!(
                sink = %printable(&self.shared.name),
                "the periodic message could not be composed (a defect: please report it); \
                 tried again in a minute"
            );
            self.periodic_not_before = Some(Instant::now() + RATE_WINDOW);
            return false;
        };
        let Some(request) = periodic else {
            // Due, says `next_periodic`, but nothing to send: asked again in a second.
            self.periodic_not_before = Some(Instant::now() + FIRST_BACKOFF);
            return false;
        };
        self.periodic_not_before = None;
        self.rate.sent(Instant::now());
        let Some(reply) = self.exchange(request, None).await else {
            return true;
        };
        // A periodic message counts as one event of its sink's outcomes.
        match self.classify(reply) {
            Answer::Delivered => {
                self.shared.count(DeliveryOutcome::Ok, 1);
                self.succeeded();
            }
            Answer::Retry { after, reason } => {
                self.shared.count(DeliveryOutcome::Retry, 1);
                self.failed(after, &reason, "periodic");
            }
        }
        let state = self.kind.save();
        self.shared.outbox().set_kind_state(state);
        false
    }

    fn classify(&self, reply: Result<Reply, String>) -> Answer {
        match reply {
            Ok(r) => self.kind.classify(r.status, r.retry_after, &r.body),
            Err(reason) => Answer::Retry {
                after: None,
                reason,
            },
        }
    }

    fn succeeded(&mut self) {
        self.attempts = 0;
        self.not_before = None;
    }

    fn failed(&mut self, after: Option<Duration>, reason: &str, what: &str) {
        self.attempts = self.attempts.saturating_add(1);
        let wait = backoff(self.attempts).max(after.unwrap_or_default().min(MAX_RETRY_AFTER));
        self.not_before = Some(Instant::now() + wait);
        tracing::warn!(
            sink = self.shared.name.as_str(),
            attempt = self.attempts,
            retry_in_s = wait.as_secs(),
            "sink {}: message {what} not delivered ({}); trying again in {}",
            self.shared.name,
            printable(reason),
            humantime::format_duration(wait)
        );
    }

    /// After a failure: when the message's oldest record is older than `max_age`, it and
    /// every other record that old are given up, and said so.
    fn give_up_old(&mut self, reason: &str) {
        let max_age = u64::try_from(self.config.max_age.as_millis()).unwrap_or(u64::MAX);
        let cutoff = self.clock.now_ms().saturating_sub(max_age);
        let given_up = {
            let mut outbox = self.shared.outbox();
            if outbox.oldest_at_ms().is_none_or(|at| at >= cutoff) {
                return;
            }
            let flying = outbox.finish_in_flight().len();
            flying + outbox.give_up_before(cutoff)
        };
        self.shared.count(DeliveryOutcome::Failed, given_up);
        self.log.emit(&Event::DeliveryFailed {
            sink: self.shared.name.clone(),
            error_message: format!(
                "{} (retried for {})",
                printable(reason),
                humantime::format_duration(self.config.max_age)
            ),
            events: given_up as u64,
        });
    }

    /// Sends; once the shutdown began, waits at most `finish_within` more (`None`: no
    /// answer by then). Takes no `&self` across its awaits: a kind is `Send`, not `Sync`.
    fn exchange(
        &self,
        request: Request,
        message_id: Option<String>,
    ) -> impl Future<Output = Option<Result<Reply, String>>> + Send + use<> {
        let transport = self.transport.clone();
        let shutdown = self.shutdown.clone();
        let finish_within = self.config.finish_within;
        async move {
            let send = transport.send(request, message_id.as_deref());
            tokio::pin!(send);
            tokio::select! {
                reply = &mut send => Some(reply),
                _ = shutdown.cancelled() => {
                    tokio::time::timeout(finish_within, send).await.ok()
                }
            }
        }
    }

    fn persist(&self) -> impl Future<Output = ()> + Send + use<> {
        let shared = self.shared.clone();
        async move {
            let _ = tokio::task::spawn_blocking(move || shared.persist_logged()).await;
        }
    }
}

#[cfg(test)]
mod tests;
