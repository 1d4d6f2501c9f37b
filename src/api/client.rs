//! The signed CWP API client: one generic [`Client::call`] and the actions built on it. The
//! same client signs STS calls ([`Client::for_service`]: service `sts`) for the assume-role
//! credentials source.
//!
//! I/O lives here and nowhere else on the request path: build the JSON body, sign it
//! ([`crate::signing`]), send it over a keep-alive connection pool, read the answer
//! ([`super::response`]). The client never retries on its own: every request must pass the
//! engine's rate limiter, so retries are the scheduler's decision.
//!
//! It also learns the server's clock from each answer's `Date` header (server time minus the
//! midpoint of the round trip) and signs with the corrected time, so a host whose clock drifts
//! keeps getting answers instead of `AuthFailure.SignatureExpire`. All of that time arithmetic
//! saturates: no `Date` header, offset or local clock, however absurd, can make it panic.
//!
//! Answers are read through [`super::body::read_capped`] with a cap of
//! [`MAX_API_BODY_BYTES`]: an oversized answer is the transient `ClientError.BodyTooLarge`,
//! never a status.
//!
//! Proxies: for an `https://` endpoint reqwest honours the usual environment variables
//! (`HTTPS_PROXY`, `ALL_PROXY`, `NO_PROXY`, lower case too): the request is end-to-end TLS
//! through the proxy. For a loopback endpoint (plain `http://`, the simulator) no proxy is ever
//! used: a proxy would see the signed request and `X-TC-Token` in clear text, and a loopback
//! address means this host anyway.
//!
//! TLS: the reqwest client is built by [`crate::tls::TlsTrust::client`] (the system's CA store
//! plus `[api] ca_file`), the one constructor every HTTP client of the daemon goes through. A
//! server certificate refused during a call is `ClientError.Certificate`
//! ([`ApiError::Certificate`]), whose text says what to do, not a bare transport error.
//!
//! Fencing (`[ha]`, `docs/ha.md`): a client of the CWP APIs holds the process's
//! [`Fence`] and checks it right before every request, after signing and just before the bytes
//! leave: a closed fence is [`ApiError::Fenced`] and nothing is sent. The fence is the
//! process's ([`fence_every_client`]), set once when it is elected, before any client exists:
//! a deposed leader exits, so a process leads at most once. Without `[ha]` the fence is always
//! open. STS clients are not fenced: their calls are not the CWP quota the fence protects.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use reqwest::header::{
    AUTHORIZATION, CONTENT_TYPE as CONTENT_TYPE_HEADER, HOST, HeaderName, HeaderValue,
};
use secrecy::ExposeSecret;
use serde::Serialize;

use super::body::{BodyError, MAX_API_BODY_BYTES, read_capped};
use super::error::ApiError;
use super::response::{self, Answer};
use super::service::ApiService;
use crate::endpoint::is_loopback;
use crate::ha::Fence;
use crate::signing;
use crate::signing::Credentials;
use crate::tls::{TlsError, TlsTrust, certificate_problem};

/// CWP's API version.
pub const API_VERSION: &str = "2018-02-28";
/// CWP's signing service name.
pub const SERVICE: &str = "yunjing";
/// The content type we send and sign, byte for byte.
const CONTENT_TYPE: &str = "application/json";
/// Date headers have 1-second resolution: smaller differences are noise, not skew.
const SKEW_NOISE_MS: i64 = 2_000;
/// `X-TC-RequestClient`: who we are.
const REQUEST_CLIENT: &str = concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION"));

// Header names as constants: no parsing or allocation per request (issue 13).
const X_TC_ACTION: HeaderName = HeaderName::from_static("x-tc-action");
const X_TC_VERSION: HeaderName = HeaderName::from_static("x-tc-version");
const X_TC_TIMESTAMP: HeaderName = HeaderName::from_static("x-tc-timestamp");
const X_TC_REQUEST_CLIENT: HeaderName = HeaderName::from_static("x-tc-requestclient");
const X_TC_REGION: HeaderName = HeaderName::from_static("x-tc-region");
const X_TC_TOKEN: HeaderName = HeaderName::from_static("x-tc-token");
// Constant values too, checked when compiling.
const CONTENT_TYPE_VALUE: HeaderValue = HeaderValue::from_static(CONTENT_TYPE);
const REQUEST_CLIENT_VALUE: HeaderValue = HeaderValue::from_static(REQUEST_CLIENT);

/// The fence of every CWP client of this process, once it leads (`[ha]`).
static PROCESS_FENCE: OnceLock<Fence> = OnceLock::new();

/// `[ha]`: every CWP client built from now on in this process checks `fence` before each
/// request. Called once, when the process is elected and before its accounts connect; a second
/// call is refused (`Err` gives the fence back): a process leads at most once (a deposed
/// leader exits, `docs/ha.md`), and a fence replaced under running clients would be a second
/// truth.
pub fn fence_every_client(fence: Fence) -> Result<(), Fence> {
    PROCESS_FENCE.set(fence)
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientBuildError {
    /// The endpoint is not usable.
    #[error("endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint as configured.
        endpoint: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// The HTTP stack could not be set up, or the endpoint is https and this host trusts no
    /// CA ([`TlsError::NoSystemRoots`]).
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl ClientBuildError {
    /// Stable machine-readable code, for `error_code` log fields and scripts.
    pub fn code(&self) -> &'static str {
        match self {
            ClientBuildError::Endpoint { .. } => "ClientError.Endpoint",
            ClientBuildError::Tls(TlsError::Setup(_)) => "ClientError.Setup",
            ClientBuildError::Tls(e @ TlsError::NoSystemRoots { .. }) => e.code(),
        }
    }
}

/// What a client needs to know besides credentials.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// `https://yunjing.tencentcloudapi.com`, or `http://` on loopback (simulator).
    pub endpoint: Url,
    /// Sent as `X-TC-Region` when set.
    pub region: Option<String>,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Idle connections kept per host: the sum of the engine's lanes' in-flight budgets
    /// ([`crate::config::ApiSettings::in_flight_total`]). Fewer, and answers in one lane close
    /// connections that the next requests (of any lane) open again, a TCP and TLS handshake
    /// each.
    pub max_idle_connections: usize,
}

/// The signed API client. Cheap to clone; clones share connections, credentials and the
/// learned clock offset.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: Url,
    /// The `Host` header exactly as sent and signed.
    host: String,
    /// `host` as a header value, built once (cloning it shares the bytes).
    host_header: HeaderValue,
    /// `X-TC-Region`, built once.
    region_header: Option<HeaderValue>,
    timeout: Duration,
    /// Signing service and API version: CWP's, or STS's for the assume-role source.
    service: &'static str,
    version: &'static str,
    credentials: Arc<RwLock<Credentials>>,
    /// Server time minus local time, in milliseconds.
    clock_offset_ms: Arc<AtomicI64>,
    /// Errors carry nothing of the answer's body ([`Client::hiding_answer_bodies`]).
    hide_bodies: bool,
    /// Checked right before every request (see the module docs).
    fence: Fence,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client; the endpoint must be https, or http on a loopback host. Trusts the
    /// system's CA store ([`TlsTrust::system`]); the daemon, which may have `[api] ca_file`,
    /// uses [`Client::with_trust`].
    pub fn new(options: ClientOptions, credentials: Credentials) -> Result<Self, ClientBuildError> {
        Self::with_trust(options, credentials, &TlsTrust::system())
    }

    /// As [`Client::new`], trusting the CAs of `trust`.
    pub fn with_trust(
        options: ClientOptions,
        credentials: Credentials,
        trust: &TlsTrust,
    ) -> Result<Self, ClientBuildError> {
        Self::for_service(options, credentials, trust, SERVICE, API_VERSION)
    }

    /// As [`Client::with_trust`], for either CWP API ([`ApiService`]): signed for its
    /// service, sent with its version. The endpoint is the caller's
    /// ([`ApiService::endpoint`]), checked as for every service.
    pub fn for_api(
        options: ClientOptions,
        credentials: Credentials,
        trust: &TlsTrust,
        api: ApiService,
    ) -> Result<Self, ClientBuildError> {
        Self::for_service(
            options,
            credentials,
            trust,
            api.signing_service(),
            api.version(),
        )
    }

    /// As [`Client::with_trust`], for another API than CWP's: `service` is the signing service
    /// (`sts`), `version` the `X-TC-Version` (`2018-08-13`). Same rules for the endpoint.
    pub fn for_service(
        options: ClientOptions,
        credentials: Credentials,
        trust: &TlsTrust,
        service: &'static str,
        version: &'static str,
    ) -> Result<Self, ClientBuildError> {
        let endpoint = options.endpoint;
        let bad = |reason: &str| ClientBuildError::Endpoint {
            endpoint: endpoint.to_string(),
            reason: reason.to_string(),
        };
        match endpoint.scheme() {
            "https" => {}
            "http" if is_loopback(&endpoint) => {}
            "http" => {
                return Err(bad(
                    "http:// is allowed only for loopback hosts; use https://",
                ));
            }
            _ => return Err(bad("the scheme must be https://")),
        }
        let Some(host_name) = endpoint.host_str() else {
            return Err(bad("no host name"));
        };
        let host = match endpoint.port() {
            Some(port) => format!("{host_name}:{port}"),
            None => host_name.to_string(),
        };
        let loopback = is_loopback(&endpoint);
        let host_header = HeaderValue::from_str(&host)
            .map_err(|_| bad("a host name that cannot be a Host header"))?;
        let region_header = match options.region.filter(|r| !r.is_empty()) {
            Some(region) => Some(HeaderValue::from_str(&region).map_err(|_| {
                ClientBuildError::Endpoint {
                    endpoint: endpoint.to_string(),
                    reason: "the region has characters a header cannot carry; write a region \
                             name such as ap-guangzhou"
                        .to_string(),
                }
            })?),
            None => None,
        };
        let http = trust.client(&endpoint, |builder| {
            let builder = if loopback {
                // Never through a proxy: see the module docs.
                builder.no_proxy()
            } else {
                builder
            };
            builder
                .timeout(options.timeout)
                .connect_timeout(options.timeout.min(Duration::from_secs(10)))
                .pool_max_idle_per_host(options.max_idle_connections.max(1))
                .pool_idle_timeout(Duration::from_secs(50))
                .tcp_keepalive(Duration::from_secs(30))
                .user_agent(REQUEST_CLIENT)
        })?;
        Ok(Client {
            http,
            endpoint,
            host,
            host_header,
            region_header,
            timeout: options.timeout,
            service,
            version,
            credentials: Arc::new(RwLock::new(credentials)),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
            hide_bodies: false,
            fence: fence_for(service),
        })
    }

    /// This client checks `fence` before every request instead of the process's.
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Whether a request may be sent now (the fence is open): the engine asks before it
    /// takes a job, so that a closed fence holds its queues rather than failing polls.
    pub fn may_send(&self) -> bool {
        self.fence.may_send()
    }

    /// For a credentials endpoint (STS): the errors of every call keep the HTTP status, the
    /// error code and the `RequestId`, and nothing else of the answer
    /// ([`response::without_body`]), because its body holds secrets (`TmpSecretKey`,
    /// `Token`), and an error reaches start-up errors, events and log lines.
    pub fn hiding_answer_bodies(mut self) -> Self {
        self.hide_bodies = true;
        self
    }

    /// The signing service name (`yunjing`, `cwp`, `sts`).
    pub fn service(&self) -> &'static str {
        self.service
    }

    /// The `X-TC-Version` sent.
    pub fn version(&self) -> &'static str {
        self.version
    }

    /// Replaces the credentials (temporary credentials refreshed).
    pub fn set_credentials(&self, credentials: Credentials) {
        // A poisoned lock only means a writer panicked mid-assignment of a whole value.
        let mut guard = self.credentials.write().unwrap_or_else(|e| e.into_inner());
        *guard = credentials;
    }

    /// The SecretId in use (not a secret), for messages.
    pub fn secret_id(&self) -> String {
        self.credentials
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .secret_id
            .clone()
    }

    /// Server time minus local time in milliseconds, as learned from answers.
    pub fn clock_offset_ms(&self) -> i64 {
        self.clock_offset_ms.load(Ordering::Relaxed)
    }

    /// Sets the clock offset (e.g. learned from a `SignatureExpire` message).
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.clock_offset_ms.store(offset_ms, Ordering::Relaxed);
    }

    /// Local time in Unix milliseconds, saturating (a clock before 1970 is negative).
    fn now_ms() -> i64 {
        unix_ms(SystemTime::now())
    }

    /// Calls one action with JSON parameters (a `serde_json::Value`, or a typed struct that
    /// serializes without building one) and returns the `Response` object.
    pub async fn call<P: Serialize + ?Sized>(
        &self,
        action: &str,
        params: &P,
    ) -> Result<Answer, ApiError> {
        let body = serde_json::to_vec(params).map_err(|e| ApiError::Decode {
            reason: format!("cannot encode the request: {e}"),
            request_id: None,
        })?;
        let sent_ms = Self::now_ms();
        let timestamp = signing_timestamp(sent_ms, self.clock_offset_ms.load(Ordering::Relaxed));
        let (signed, secret_id_token) = {
            let creds = self.credentials.read().unwrap_or_else(|e| e.into_inner());
            let signed = signing::sign(
                &creds.secret_id,
                creds.secret_key.expose_secret(),
                &signing::RequestParts {
                    method: "POST",
                    host: &self.host,
                    content_type: CONTENT_TYPE,
                    payload: &body,
                    service: self.service,
                    timestamp,
                },
            );
            let token = creds
                .token
                .as_ref()
                .map(|t| HeaderValue::from_str(t.expose_secret()));
            (signed, token)
        };
        let mut headers = reqwest::header::HeaderMap::with_capacity(9);
        headers.insert(HOST, self.host_header.clone());
        headers.insert(CONTENT_TYPE_HEADER, CONTENT_TYPE_VALUE);
        let action = HeaderValue::from_str(action).map_err(|_| ApiError::Decode {
            reason: "the action name cannot be a header value".into(),
            request_id: None,
        })?;
        headers.insert(X_TC_ACTION, action);
        headers.insert(X_TC_VERSION, HeaderValue::from_static(self.version));
        headers.insert(X_TC_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(X_TC_REQUEST_CLIENT, REQUEST_CLIENT_VALUE);
        let mut authorization = HeaderValue::try_from(signed.authorization).map_err(|_| {
            ApiError::Transport("the signed Authorization header is not a valid header".into())
        })?;
        // Kept out of any debug output of the request (and out of HTTP/2 header tables).
        authorization.set_sensitive(true);
        headers.insert(AUTHORIZATION, authorization);
        if let Some(region) = &self.region_header {
            headers.insert(X_TC_REGION, region.clone());
        }
        if let Some(token) = secret_id_token {
            let mut token = token.map_err(|_| {
                ApiError::Transport(
                    "the credentials' token has characters a header cannot carry".into(),
                )
            })?;
            token.set_sensitive(true);
            headers.insert(X_TC_TOKEN, token);
        }
        let request = self
            .http
            .post(self.endpoint.clone())
            .headers(headers)
            .body(body);
        // The last moment before anything leaves: a leader that can no longer prove it leads
        // sends nothing (a standby may have taken over).
        if !self.fence.may_send() {
            return Err(ApiError::Fenced);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let body = read_capped(response, MAX_API_BODY_BYTES)
            .await
            .map_err(|e| self.body_error(e))?;
        if let Some(date) = date {
            let rtt_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
            self.learn_offset(date, sent_ms.saturating_add(rtt_ms / 2));
        }
        let parsed = response::parse(status, &body);
        if self.hide_bodies {
            parsed.map_err(response::without_body)
        } else {
            parsed
        }
    }

    /// Server `Date` (1 s resolution, so + 500 ms) minus the local midpoint of the round trip.
    fn learn_offset(&self, server: SystemTime, local_midpoint_ms: i64) {
        let measured = unix_ms(server)
            .saturating_add(500)
            .saturating_sub(local_midpoint_ms);
        let current = self.clock_offset_ms.load(Ordering::Relaxed);
        if measured.abs_diff(current) > SKEW_NOISE_MS.unsigned_abs() {
            self.clock_offset_ms.store(measured, Ordering::Relaxed);
        } else if measured.unsigned_abs() <= SKEW_NOISE_MS.unsigned_abs() && current != 0 {
            // The clocks agree again (NTP fixed the host): stop correcting.
            self.clock_offset_ms.store(0, Ordering::Relaxed);
        }
    }

    /// A body that could not be read: too large (its own code, transient), or a transport error.
    fn body_error(&self, e: BodyError) -> ApiError {
        match e {
            BodyError::Read(e) => self.transport_error(e),
            too_large @ BodyError::TooLarge { .. } => ApiError::Api {
                // Not an API error, but `Api` is the variant that carries a code of its own;
                // `ClientError.*` is classified transient like every client-side failure.
                code: too_large.code().to_owned(),
                message: too_large.to_string(),
                request_id: None,
            },
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            return ApiError::Timeout(self.timeout);
        }
        let host = self.endpoint.host_str().unwrap_or_default();
        if let Some(problem) = certificate_problem(&e, host) {
            return ApiError::Certificate(problem);
        }
        // The whole source chain says what happened ("connection reset by peer", …); reqwest
        // errors never hold request headers, so no secret can leak here.
        let e = e.without_url();
        let mut text = e.to_string();
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s.source();
        }
        ApiError::Transport(text)
    }

    /// `DescribeOpenPortTaskStatus`: the agent's open-port collection task status.
    pub async fn describe_open_port_task_status(&self, uuid: &str) -> Result<TaskStatus, ApiError> {
        /// `{"Uuid": …}` serialized straight to bytes, without a `Value` tree.
        #[derive(Serialize)]
        struct Params<'a> {
            #[serde(rename = "Uuid")]
            uuid: &'a str,
        }
        let answer = self
            .call("DescribeOpenPortTaskStatus", &Params { uuid })
            .await?;
        let status = answer.status_field("Status")?.to_string();
        Ok(TaskStatus {
            status,
            request_id: answer.request_id,
        })
    }
}

impl Client {
    /// `CreateOpenPortTask`: starts collecting the agent's open ports; the answer's
    /// `RequestId`.
    pub async fn create_open_port_task(&self, uuid: &str) -> Result<String, ApiError> {
        let answer = self
            .call("CreateOpenPortTask", &serde_json::json!({ "Uuid": uuid }))
            .await?;
        Ok(answer.request_id)
    }

    /// `DescribeOpenPorts`: one page of the agent's open ports, every row checked
    /// ([`super::ports::parse_page`]).
    pub async fn describe_open_ports(
        &self,
        uuid: &str,
        limit: u32,
        offset: u32,
    ) -> Result<crate::inventory::Page, ApiError> {
        let answer = self
            .call(
                "DescribeOpenPorts",
                &serde_json::json!({ "Uuid": uuid, "Limit": limit, "Offset": offset }),
            )
            .await?;
        super::ports::parse_page(answer, uuid, limit)
    }
}

/// The fence of a new client signing for `service`: the process's for the CWP APIs once it
/// leads, always open otherwise (no `[ha]`, or STS).
fn fence_for(service: &str) -> Fence {
    let cwp = ApiService::from_name(service).is_some();
    match PROCESS_FENCE.get() {
        Some(fence) if cwp => fence.clone(),
        _ => Fence::always_open(),
    }
}

/// `t` as Unix milliseconds, saturating at the ends of `i64` (negative before 1970).
fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

/// The `X-TC-Timestamp` to sign with: local milliseconds plus the learned offset, in Unix
/// seconds, saturating, and kept within years 1970..=9999 so the signing date stays a date.
fn signing_timestamp(now_ms: i64, offset_ms: i64) -> i64 {
    /// 9999-12-31T23:59:59Z.
    const LAST: i64 = 253_402_300_799;
    now_ms
        .saturating_add(offset_ms)
        .div_euclid(1000)
        .clamp(0, LAST)
}

/// The answer of `DescribeOpenPortTaskStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// `Status` exactly as the API sent it (checked: 1 to 64 bytes of `A-Z a-z 0-9 _ . -`).
    pub status: String,
    /// `RequestId`.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn client(endpoint: &str) -> Client {
        Client::new(
            ClientOptions {
                endpoint: endpoint.parse().unwrap(),
                region: None,
                timeout: Duration::from_secs(2),
                max_idle_connections: 1,
            },
            Credentials {
                secret_id: "AKIDtest".into(),
                secret_key: SecretString::from("key".to_owned()),
                token: None,
            },
        )
        .unwrap()
    }

    /// A loopback port nothing listens on.
    fn closed_endpoint() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/", listener.local_addr().unwrap())
    }

    #[tokio::test]
    async fn extreme_clock_offsets_never_panic() {
        let c = client(&closed_endpoint());
        for offset in [i64::MAX, i64::MIN, i64::MAX / 2, -i64::MAX / 2] {
            c.set_clock_offset_ms(offset);
            let e = c
                .describe_open_port_task_status("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1")
                .await
                .unwrap_err();
            assert_eq!(e.code(), "ClientError.Transport", "{offset}: {e}");
        }
    }

    #[tokio::test]
    async fn an_endless_timeout_is_not_a_panic() {
        let mut options = ClientOptions {
            endpoint: closed_endpoint().parse().unwrap(),
            region: None,
            timeout: Duration::MAX,
            max_idle_connections: usize::MAX,
        };
        for timeout in [Duration::MAX, Duration::ZERO] {
            options.timeout = timeout;
            let credentials = Credentials {
                secret_id: "AKIDtest".into(),
                secret_key: SecretString::from("key".to_owned()),
                token: None,
            };
            let c = Client::new(options.clone(), credentials).unwrap();
            let e = c.call("X", &serde_json::Value::Null).await.unwrap_err();
            assert!(e.code().starts_with("ClientError."), "{timeout:?}: {e}");
        }
    }

    #[test]
    fn learning_from_extreme_dates_and_offsets_never_panics() {
        let c = client("http://127.0.0.1:9/");
        let far = UNIX_EPOCH + Duration::from_secs(253_402_300_799); // 9999-12-31
        for current in [i64::MAX, i64::MIN, 0] {
            for local in [i64::MAX, i64::MIN, 0] {
                for server in [UNIX_EPOCH, far, UNIX_EPOCH - Duration::from_secs(1)] {
                    c.set_clock_offset_ms(current);
                    c.learn_offset(server, local);
                }
            }
        }
        // Sane values are still learned.
        c.set_clock_offset_ms(0);
        c.learn_offset(UNIX_EPOCH + Duration::from_secs(1_000), 500_000);
        assert_eq!(c.clock_offset_ms(), 1_000_500 - 500_000);
    }

    /// `[ha]` fencing: with a closed fence nothing leaves the host, not even a connection;
    /// the same client with an open fence reaches the server.
    #[tokio::test]
    async fn a_closed_fence_sends_nothing_and_says_so() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/", listener.local_addr().unwrap());
        let fenced = client(&endpoint).with_fence(Fence::closed());
        assert!(!fenced.may_send());
        let e = fenced
            .describe_open_port_task_status("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1")
            .await
            .unwrap_err();
        assert!(matches!(e, ApiError::Fenced), "{e}");
        assert_eq!(e.code(), "ClientError.Fenced");
        let connected = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
        assert!(connected.is_err(), "a fenced client opened a connection");

        let open = client(&endpoint).with_fence(Fence::always_open());
        assert!(open.may_send());
        let call = tokio::spawn(async move { open.call("X", &serde_json::Value::Null).await });
        let connected = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        assert!(connected.is_ok(), "an open fence lets the request out");
        call.abort();
    }

    /// Without `[ha]` (no process fence set) a new client may always send, whatever its
    /// service.
    #[test]
    fn without_ha_every_client_may_send() {
        for service in [ApiService::Yunjing.name(), ApiService::Cwp.name(), "sts"] {
            assert!(fence_for(service).may_send(), "{service}");
        }
    }
}
