//! The HTTP side of the simulator: the accept loop, the per-request pipeline (checks in the real
//! API's order, rate limit, scripted answers, injected faults), statistics and the request log.
//!
//! Order of checks, first failure answers:
//! 1. method and path: only `POST /` (`InvalidRequest` otherwise);
//! 2. `X-TC-Action`, `X-TC-Version`, `X-TC-Timestamp` present (`MissingParameter`), timestamp an
//!    integer (`InvalidParameterValue`);
//! 3. `Authorization` present and well-formed (`AuthFailure.InvalidAuthorization`);
//! 4. timestamp within 300 s of the simulator clock (`AuthFailure.SignatureExpire`);
//! 5. SecretId known (`AuthFailure.SecretIdNotFound`);
//! 6. credential scope and signature (`AuthFailure.SignatureFailure`);
//! 7. version `2018-02-28` (`NoSuchVersion`), action known (`InvalidAction`; other real CWP
//!    actions the simulator does not implement: `UnsupportedOperation`);
//! 8. rate limit per action (`RequestLimitExceeded`) — so only authenticated calls of a real
//!    action count, and refused ones do not;
//! 9. injected faults (drawn only for requests the limiter accepted, i.e. those the real API
//!    would hand to its backend; they consume quota like a backend failure would);
//! 10. body and parameters (`InvalidParameter`, `UnknownParameter`, `MissingParameter`,
//!     `InvalidParameterValue`, `InvalidParameter.InvalidFormat`, `ResourceNotFound`), then the
//!     scripted answer.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, UNIX_EPOCH};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, DATE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::{self, ReceivedRequest};
use super::limiter::{Limiter, LimiterKind, WindowMeter};
use super::scenario::{Scenario, ScriptedAnswer, is_agent_uuid};
use super::wire::{self, Answer};
use crate::clock::unix_now;

/// The only API version of CWP.
pub const API_VERSION: &str = "2018-02-28";
/// The one action the simulator answers from the scenario.
pub const DESCRIBE_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Largest accepted clock difference, as the real API: 5 minutes.
pub const MAX_SKEW_SECS: i64 = 300;
/// Bodies above this answer `RequestSizeLimitExceeded` (the real limit is larger; nothing this
/// crate sends comes close).
const MAX_BODY_BYTES: usize = 1 << 20;
/// The request log keeps this many newest records, so a long `simulate` run stays bounded.
const LOG_CAPACITY: usize = 100_000;
/// Real CWP actions the simulator knows by name but does not implement.
const OTHER_CWP_ACTIONS: &[&str] = &[
    "CreateOpenPortTask",
    "DescribeOpenPorts",
    "DescribeOpenPortStatistics",
    "DescribeMachines",
    "DescribeMachineInfo",
];

/// Fault probabilities, each in `0..=1`, drawn independently per request in the order
/// `stall`, `reset`, `http_503`, `internal_error`, `truncated_json`. A stall delays and then
/// lets the request go on (it can combine with one other fault); of the other four the first
/// that fires wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Answer the API error `InternalError` instead.
    pub internal_error: f64,
    /// Answer HTTP 503 with a gateway's HTML body.
    pub http_503: f64,
    /// Close the connection without an answer.
    pub reset: f64,
    /// HTTP 200 with the first half of the JSON body (consistent `Content-Length`).
    pub truncated_json: f64,
    /// Wait `stall_for` before answering.
    pub stall: f64,
    /// How long a stall lasts.
    pub stall_for: Duration,
}

impl Default for Faults {
    /// No faults; a stall, once enabled, lasts 30 s.
    fn default() -> Self {
        Faults {
            internal_error: 0.0,
            http_503: 0.0,
            reset: 0.0,
            truncated_json: 0.0,
            stall: 0.0,
            stall_for: Duration::from_secs(30),
        }
    }
}

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Agents, timelines and credentials.
    pub scenario: Scenario,
    /// The per-action rate limit.
    pub limiter: LimiterKind,
    /// Added before every answer (errors included).
    pub latency: Duration,
    /// The simulator's clock is the system clock plus this (signed), for `Date`, the
    /// signature-expiry check and its message.
    pub clock_offset_secs: i64,
    /// Injected faults (changeable later with [`RunningSimulator::set_faults`]).
    pub faults: Faults,
    /// Seed for the fault draws, for reproducible runs; `None` seeds from the OS.
    pub seed: Option<u64>,
}

impl SimulatorOptions {
    /// Defaults: 20/s sliding window, no latency, no clock offset, no faults, random seed.
    pub fn new(scenario: Scenario) -> SimulatorOptions {
        SimulatorOptions {
            scenario,
            limiter: LimiterKind::default(),
            latency: Duration::ZERO,
            clock_offset_secs: 0,
            faults: Faults::default(),
            seed: None,
        }
    }
}

/// A snapshot of what the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Every request that reached the service (faulted ones included).
    pub requests: u64,
    /// Answers with a `Status` that reached the client intact.
    pub ok: u64,
    /// `RequestLimitExceeded` answers.
    pub throttled: u64,
    /// Count per API error code, plus `fault:503`, `fault:reset`, `fault:truncated` and
    /// `fault:stall` (a stall is counted here and its request also under its final answer).
    pub by_code: BTreeMap<String, u64>,
    /// The most requests for one Uuid that were being handled at the same time.
    pub max_in_flight_per_uuid: u32,
    /// The most requests the limiter accepted in any sliding 1-second window, for any one
    /// action.
    pub max_in_window: u32,
    /// One record per request, oldest first (the newest 100 000).
    pub log: Vec<RequestRecord>,
}

/// One handled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived, since the simulator started.
    pub at: Duration,
    /// The `Uuid` parameter, when the body had a string one.
    pub uuid: Option<String>,
    /// The status, the error code, or `fault:503` / `fault:reset` / `fault:truncated`.
    pub answer: String,
    /// The `RequestId` answered (also for faults, though the client never sees it then).
    pub request_id: String,
    /// The answer was held back by a stall fault (a client with a shorter timeout never saw
    /// it).
    pub stalled: bool,
}

/// A simulator serving on a socket; dropping it without [`shutdown`](Self::shutdown) leaves the
/// accept loop running until the runtime ends.
pub struct RunningSimulator {
    /// The bound address (the real port when asked for port 0).
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl std::fmt::Debug for RunningSimulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningSimulator")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl RunningSimulator {
    /// Binds `listen`, spawns the accept loop and returns at once.
    pub async fn start(opts: SimulatorOptions, listen: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(opts));
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(accept_loop(
            listener,
            shared.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::info!(target: "cwp_portwatch::simulator", %addr, "simulator listening");
        Ok(RunningSimulator {
            addr,
            shared,
            cancel,
            tracker,
        })
    }

    /// `http://ADDR`, the endpoint to give a client.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of the statistics and the request log.
    pub fn stats(&self) -> SimStats {
        let st = lock(&self.shared.stats);
        SimStats {
            requests: st.requests,
            ok: st.ok,
            throttled: st.throttled,
            by_code: st.by_code.clone(),
            max_in_flight_per_uuid: st.max_in_flight_per_uuid,
            max_in_window: st.max_in_window,
            log: st.log.iter().cloned().collect(),
        }
    }

    /// Replaces the fault probabilities for requests that arrive from now on.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = faults;
    }

    /// Stops accepting, lets connections finish what they are answering (up to 1 s, longer
    /// stalls are cut), and waits for every task.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// State shared by every connection.
struct Shared {
    scenario: Scenario,
    /// Uuid → index in `scenario.agents`, so a large scenario costs no scan per request.
    agents: HashMap<String, usize>,
    limiter_kind: LimiterKind,
    latency: Duration,
    clock_offset_secs: i64,
    start: Instant,
    faults: Mutex<Faults>,
    rng: Mutex<StdRng>,
    /// Per action: the limiter and the meter of accepted requests.
    limiters: Mutex<HashMap<String, (Limiter, WindowMeter)>>,
    stats: Mutex<StatsState>,
}

#[derive(Default)]
struct StatsState {
    requests: u64,
    ok: u64,
    throttled: u64,
    by_code: BTreeMap<String, u64>,
    max_in_flight_per_uuid: u32,
    max_in_window: u32,
    in_flight: HashMap<String, u32>,
    log: VecDeque<RequestRecord>,
}

/// A poisoned lock only means another request panicked mid-update of counters; the counters
/// are still usable, and the simulator must keep answering.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn new(opts: SimulatorOptions) -> Shared {
        let agents = opts
            .scenario
            .agents
            .iter()
            .enumerate()
            .map(|(i, a)| (a.uuid.clone(), i))
            .collect();
        let rng = match opts.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        Shared {
            scenario: opts.scenario,
            agents,
            limiter_kind: opts.limiter,
            latency: opts.latency,
            clock_offset_secs: opts.clock_offset_secs,
            start: Instant::now(),
            faults: Mutex::new(opts.faults),
            rng: Mutex::new(rng),
            limiters: Mutex::new(HashMap::new()),
            stats: Mutex::new(StatsState::default()),
        }
    }

    /// Unix seconds on the simulator's clock (system time plus the configured offset).
    fn now_unix(&self) -> i64 {
        unix_now().saturating_add(self.clock_offset_secs)
    }

    /// `Date`: the simulator's clock, clamped to what an HTTP date can say (1970 to the end of
    /// 9999: `httpdate` panics past it), so no `--clock-offset` can take the server down.
    fn date_header(&self) -> HeaderValue {
        /// 9999-12-31T23:59:59Z.
        const LAST_HTTP_DATE: u64 = 253_402_300_799;
        let secs = u64::try_from(self.now_unix()).map_or(0, |s| s.min(LAST_HTTP_DATE));
        let time = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(UNIX_EPOCH);
        HeaderValue::from_str(&httpdate::fmt_http_date(time))
            .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    }

    /// Steps 1–8 of the module docs, then (for accepted requests) step 10. Returns the answer
    /// and whether the limiter accepted the request (only those can be faulted).
    fn decide(&self, parts: &hyper::http::request::Parts, body: &[u8], now: Instant) -> Decision {
        let refused = |answer| Decision {
            answer,
            accepted: false,
        };
        if parts.method != Method::POST || parts.uri.path() != "/" {
            return refused(Answer::error(
                "InvalidRequest",
                format!(
                    "The simulator serves only `POST /` with a JSON body, not `{} {}`.",
                    parts.method,
                    parts.uri.path()
                ),
            ));
        }
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let (Some(action), Some(version), Some(timestamp)) = (
            header("x-tc-action"),
            header("x-tc-version"),
            header("x-tc-timestamp"),
        ) else {
            let missing = [
                ("x-tc-action", "Action"),
                ("x-tc-version", "Version"),
                ("x-tc-timestamp", "Timestamp"),
            ]
            .into_iter()
            .find(|(h, _)| header(h).is_none())
            .map_or("Action", |(_, p)| p);
            return refused(Answer::error(
                "MissingParameter",
                format!("The request is missing a required parameter `{missing}`."),
            ));
        };
        let Ok(timestamp) = timestamp.parse::<i64>() else {
            return refused(Answer::error(
                "InvalidParameterValue",
                format!("The value `{timestamp}` of `Timestamp` is not Unix seconds."),
            ));
        };
        let Some(authorization) = header("authorization") else {
            return refused(Answer::error(
                "AuthFailure.InvalidAuthorization",
                "The request has no Authorization header.",
            ));
        };
        let auth = match auth::parse_authorization(authorization) {
            Ok(a) => a,
            Err(p) => return refused(Answer::error(p.code(), p.message())),
        };
        let server_time = self.now_unix();
        if timestamp.abs_diff(server_time) > MAX_SKEW_SECS as u64 {
            return refused(Answer::error(
                "AuthFailure.SignatureExpire",
                format!(
                    "Signature expired. Timestamp: {timestamp}, server time: {server_time}; \
                     they must be within {MAX_SKEW_SECS} seconds of each other."
                ),
            ));
        }
        if auth.secret_id != self.scenario.secret_id {
            return refused(Answer::error(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            ));
        }
        let query = parts.uri.query().unwrap_or("");
        let received = ReceivedRequest {
            method: parts.method.as_str(),
            uri: parts.uri.path(),
            query,
            headers: &parts.headers,
            payload: body,
            timestamp,
        };
        if let Err(p) = auth::verify(&auth, &self.scenario.secret_key, &received) {
            return refused(Answer::error(p.code(), p.message()));
        }
        if version != API_VERSION {
            return refused(Answer::error(
                "NoSuchVersion",
                format!("The API version `{version}` does not exist; CWP is `{API_VERSION}`."),
            ));
        }
        if action != DESCRIBE_ACTION {
            return refused(if OTHER_CWP_ACTIONS.contains(&action) {
                Answer::error(
                    "UnsupportedOperation",
                    format!("The simulator does not implement `{action}`."),
                )
            } else {
                Answer::error(
                    "InvalidAction",
                    format!("The action `{action}` does not exist."),
                )
            });
        }
        if !self.admit(action, now) {
            return refused(Answer::error(
                "RequestLimitExceeded",
                "Your current request times equals to `20` in a second, which exceeds the \
                 frequency limit `20` for a second. Please reduce the frequency of calls.",
            ));
        }
        Decision {
            answer: self.describe(body, now),
            accepted: true,
        }
    }

    /// Step 8: the per-action limiter; accepted requests also feed the window meter.
    fn admit(&self, action: &str, now: Instant) -> bool {
        let mut limiters = lock(&self.limiters);
        let (limiter, meter) = limiters
            .entry(action.to_owned())
            .or_insert_with(|| (Limiter::new(self.limiter_kind, now), WindowMeter::default()));
        if !limiter.try_acquire(now) {
            return false;
        }
        let max = meter.record(now);
        drop(limiters);
        let mut st = lock(&self.stats);
        st.max_in_window = st.max_in_window.max(max);
        true
    }

    /// Step 10: `DescribeOpenPortTaskStatus` parameters and the scripted answer.
    fn describe(&self, body: &[u8], now: Instant) -> Answer {
        let params = match serde_json::from_slice::<serde_json::Value>(body) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => {
                return Answer::error("InvalidParameter", "The request body is not a JSON object.");
            }
        };
        if let Some(unknown) = params.keys().find(|k| k.as_str() != "Uuid") {
            return Answer::error(
                "UnknownParameter",
                format!("The parameter `{unknown}` is not recognized."),
            );
        }
        let uuid = match params.get("Uuid") {
            None => {
                return Answer::error(
                    "MissingParameter",
                    "The request is missing a required parameter `Uuid`.",
                );
            }
            Some(serde_json::Value::String(u)) => u,
            Some(_) => {
                return Answer::error(
                    "InvalidParameterValue",
                    "The value of parameter `Uuid` must be a string.",
                );
            }
        };
        if !is_agent_uuid(uuid) {
            return Answer::error(
                "InvalidParameter.InvalidFormat",
                format!("The parameter `Uuid` value `{uuid}` has an invalid format."),
            );
        }
        let Some(&index) = self.agents.get(uuid) else {
            return Answer::error(
                "ResourceNotFound",
                format!("The agent `{uuid}` does not exist."),
            );
        };
        match self.scenario.agents[index].answer_at(now.duration_since(self.start)) {
            ScriptedAnswer::Status(s) => Answer::Status(s.clone()),
            ScriptedAnswer::Error(code) => Answer::error(code, wire::scripted_error_message(code)),
        }
    }

    /// Step 9: which fault, if any, hits this request.
    fn draw_fault(&self) -> FaultDraw {
        let faults = *lock(&self.faults);
        let mut rng = lock(&self.rng);
        // `random::<f64>() < p` instead of `random_bool(p)`: no panic on p outside 0..=1.
        let mut hit = |p: f64| rng.random::<f64>() < p;
        let stall = hit(faults.stall).then_some(faults.stall_for);
        let kind = if hit(faults.reset) {
            FaultKind::Reset
        } else if hit(faults.http_503) {
            FaultKind::Http503
        } else if hit(faults.internal_error) {
            FaultKind::InternalError
        } else if hit(faults.truncated_json) {
            FaultKind::Truncated
        } else {
            FaultKind::None
        };
        FaultDraw { stall, kind }
    }

    fn enter(self: &Arc<Self>, uuid: Option<&str>) -> Option<InFlight> {
        let uuid = uuid?.to_owned();
        let mut st = lock(&self.stats);
        let n = st.in_flight.entry(uuid.clone()).or_insert(0);
        *n += 1;
        let n = *n;
        st.max_in_flight_per_uuid = st.max_in_flight_per_uuid.max(n);
        Some(InFlight {
            shared: self.clone(),
            uuid,
        })
    }

    fn record(&self, record: RequestRecord, outcome: &Outcome) {
        let mut st = lock(&self.stats);
        st.requests += 1;
        match outcome {
            Outcome::Answered(Answer::Status(_)) => st.ok += 1,
            Outcome::Answered(Answer::Error { code, .. }) => {
                if code == "RequestLimitExceeded" {
                    st.throttled += 1;
                }
                *st.by_code.entry(code.clone()).or_insert(0) += 1;
            }
            Outcome::Fault(label) => *st.by_code.entry((*label).to_owned()).or_insert(0) += 1,
        }
        if st.log.len() == LOG_CAPACITY {
            st.log.pop_front();
        }
        st.log.push_back(record);
    }

    fn count_stall(&self) {
        *lock(&self.stats)
            .by_code
            .entry("fault:stall".to_owned())
            .or_insert(0) += 1;
    }
}

/// Keeps a Uuid counted as in flight until the answer is sent (or the request is dropped).
struct InFlight {
    shared: Arc<Shared>,
    uuid: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = lock(&self.shared.stats);
        if let Some(n) = st.in_flight.get_mut(&self.uuid) {
            *n -= 1;
            if *n == 0 {
                st.in_flight.remove(&self.uuid);
            }
        }
    }
}

struct Decision {
    answer: Answer,
    accepted: bool,
}

struct FaultDraw {
    stall: Option<Duration>,
    kind: FaultKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    None,
    Reset,
    Http503,
    InternalError,
    Truncated,
}

/// What the client got, for the statistics.
enum Outcome {
    Answered(Answer),
    Fault(&'static str),
}

/// The service error that makes hyper drop the connection without an answer: the client sees
/// the connection closed mid-request, as with a reset.
#[derive(Debug, thiserror::Error)]
#[error("injected connection reset")]
struct InjectedReset;

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tracker.spawn(serve_connection(stream, shared.clone(), cancel.clone()));
                }
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(target: "cwp_portwatch::simulator", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| handle(shared.clone(), req));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(target: "cwp_portwatch::simulator", error = %e, "connection ended");
            }
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, InjectedReset> {
    let arrived = Instant::now();
    let request_id = wire::new_request_id();
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(()),
        // The client went away mid-body: there is nobody to answer.
        Err(_) => return Err(InjectedReset),
    };
    let action = parts
        .headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let uuid = body.as_ref().ok().and_then(|b| uuid_of(b));
    let _in_flight = shared.enter(uuid.as_deref());

    let (answer, fault) = match &body {
        Ok(bytes) => {
            let decision = shared.decide(&parts, bytes, arrived);
            let fault = decision.accepted.then(|| shared.draw_fault());
            (decision.answer, fault)
        }
        Err(()) => (
            Answer::error(
                "RequestSizeLimitExceeded",
                format!("The request body exceeds {MAX_BODY_BYTES} bytes."),
            ),
            None,
        ),
    };

    if !shared.latency.is_zero() {
        tokio::time::sleep(shared.latency).await;
    }
    let stalled = fault.as_ref().is_some_and(|f| f.stall.is_some());
    let kind = match fault {
        Some(FaultDraw { stall, kind }) => {
            if let Some(stall_for) = stall {
                shared.count_stall();
                tokio::time::sleep(stall_for).await;
            }
            kind
        }
        None => FaultKind::None,
    };

    let (outcome, response) = match kind {
        FaultKind::Reset => (Outcome::Fault("fault:reset"), None),
        FaultKind::Http503 => (
            Outcome::Fault("fault:503"),
            Some(build(
                &shared,
                StatusCode::SERVICE_UNAVAILABLE,
                "text/html",
                wire::GATEWAY_503_BODY.as_bytes().to_vec(),
            )),
        ),
        FaultKind::Truncated => (
            Outcome::Fault("fault:truncated"),
            Some(build(
                &shared,
                StatusCode::OK,
                "application/json",
                wire::truncated(&answer.body(&request_id)),
            )),
        ),
        FaultKind::InternalError | FaultKind::None => {
            let answer = if kind == FaultKind::InternalError {
                Answer::error(
                    "InternalError",
                    wire::scripted_error_message("InternalError"),
                )
            } else {
                answer
            };
            let response = build(
                &shared,
                StatusCode::OK,
                "application/json",
                answer.body(&request_id),
            );
            (Outcome::Answered(answer), Some(response))
        }
    };

    let label = match &outcome {
        Outcome::Answered(a) => a.label().to_owned(),
        Outcome::Fault(l) => (*l).to_owned(),
    };
    let latency_ms = arrived.elapsed().as_millis() as u64;
    tracing::info!(
        target: "cwp_portwatch::simulator",
        action = %action,
        uuid = uuid.as_deref().unwrap_or(""),
        answer = %label,
        request_id = %request_id,
        latency_ms,
        "request"
    );
    shared.record(
        RequestRecord {
            at: arrived.duration_since(shared.start),
            uuid,
            answer: label,
            request_id,
            stalled,
        },
        &outcome,
    );
    response.ok_or(InjectedReset)
}

fn build(
    shared: &Shared,
    status: StatusCode,
    content_type: &'static str,
    body: Vec<u8>,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(DATE, shared.date_header());
    response
}

/// The `Uuid` parameter if the body is a JSON object with a string one (for in-flight tracking
/// and the log, before any check).
fn uuid_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyUuid {
        #[serde(rename = "Uuid")]
        uuid: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<OnlyUuid>(body).ok()?.uuid? {
        serde_json::Value::String(s) => Some(s),
        _ => None,
    }
}
