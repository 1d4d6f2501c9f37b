//! The signed CWP API client: one generic [`Client::call`] and the actions built on it.
//!
//! I/O lives here and nowhere else on the request path: build the JSON body, sign it
//! ([`crate::signing`]), send it over a keep-alive connection pool, read the answer
//! ([`super::response`]). The client never retries on its own: every request must pass the
//! engine's rate limiter, so retries are the scheduler's decision.
//!
//! It also learns the server's clock from each answer's `Date` header (server time minus the
//! midpoint of the round trip) and signs with the corrected time, so a host whose clock drifts
//! keeps getting answers instead of `AuthFailure.SignatureExpire`.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use reqwest::Url;
use secrecy::ExposeSecret;
use serde_json::Value;

use super::error::ApiError;
use super::response::{self, Answer};
use crate::credentials::Credentials;
use crate::endpoint::is_loopback;
use crate::signing;

/// CWP's API version.
pub const API_VERSION: &str = "2018-02-28";
/// CWP's signing service name.
pub const SERVICE: &str = "yunjing";
/// The content type we send and sign, byte for byte.
const CONTENT_TYPE: &str = "application/json";
/// Date headers have 1-second resolution: smaller differences are noise, not skew.
const SKEW_NOISE_MS: i64 = 2_000;

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
    /// The HTTP stack could not be set up.
    #[error("cannot set up HTTP: {0}")]
    Http(#[from] reqwest::Error),
}

impl ClientBuildError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ClientBuildError::Endpoint { .. } => "ClientError.Endpoint",
            ClientBuildError::Http(_) => "ClientError.Setup",
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
    /// Idle connections kept per host (set to the engine's `max_in_flight`).
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
    region: Option<String>,
    timeout: Duration,
    credentials: Arc<RwLock<Credentials>>,
    /// Server time minus local time, in milliseconds.
    clock_offset_ms: Arc<AtomicI64>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.as_str())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client; the endpoint must be https, or http on a loopback host.
    pub fn new(options: ClientOptions, credentials: Credentials) -> Result<Self, ClientBuildError> {
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
        let http = reqwest::Client::builder()
            .timeout(options.timeout)
            .connect_timeout(options.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(options.max_idle_connections.max(1))
            .pool_idle_timeout(Duration::from_secs(50))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client {
            http,
            endpoint,
            host,
            region: options.region.filter(|r| !r.is_empty()),
            timeout: options.timeout,
            credentials: Arc::new(RwLock::new(credentials)),
            clock_offset_ms: Arc::new(AtomicI64::new(0)),
        })
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

    fn now_ms() -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    /// Calls one action with JSON parameters and returns the `Response` object.
    pub async fn call(&self, action: &str, params: &Value) -> Result<Answer, ApiError> {
        let body = serde_json::to_vec(params).map_err(|e| ApiError::Decode {
            reason: format!("cannot encode the request: {e}"),
            request_id: None,
        })?;
        let sent_ms = Self::now_ms();
        let timestamp = (sent_ms + self.clock_offset_ms.load(Ordering::Relaxed)).div_euclid(1000);
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
                    service: SERVICE,
                    timestamp,
                },
            );
            let token = creds.token.as_ref().map(|t| t.expose_secret().to_string());
            (signed, token)
        };
        let mut request = self
            .http
            .post(self.endpoint.clone())
            .header("Host", &self.host)
            .header("Content-Type", CONTENT_TYPE)
            .header("X-TC-Action", action)
            .header("X-TC-Version", API_VERSION)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header(
                "X-TC-RequestClient",
                concat!("cwp-portwatch/", env!("CARGO_PKG_VERSION")),
            )
            .header("Authorization", signed.authorization)
            .body(body);
        if let Some(region) = &self.region {
            request = request.header("X-TC-Region", region);
        }
        if let Some(token) = secret_id_token {
            request = request.header("X-TC-Token", token);
        }
        let started = Instant::now();
        let response = request.send().await.map_err(|e| self.transport_error(e))?;
        let status = response.status().as_u16();
        let date = response
            .headers()
            .get(reqwest::header::DATE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if let Some(date) = date {
            let rtt_ms = started.elapsed().as_millis() as i64;
            self.learn_offset(date, sent_ms + rtt_ms / 2);
        }
        response::parse(status, &bytes)
    }

    /// Server `Date` (1 s resolution, so + 500 ms) minus the local midpoint of the round trip.
    fn learn_offset(&self, server: SystemTime, local_midpoint_ms: i64) {
        let Ok(server) = server.duration_since(UNIX_EPOCH) else {
            return;
        };
        let measured = server.as_millis() as i64 + 500 - local_midpoint_ms;
        let current = self.clock_offset_ms.load(Ordering::Relaxed);
        if (measured - current).abs() > SKEW_NOISE_MS {
            self.clock_offset_ms.store(measured, Ordering::Relaxed);
        } else if measured.abs() <= SKEW_NOISE_MS && current != 0 {
            // The clocks agree again (NTP fixed the host): stop correcting.
            self.clock_offset_ms.store(0, Ordering::Relaxed);
        }
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        if e.is_timeout() {
            return ApiError::Timeout(self.timeout);
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
        let answer = self
            .call(
                "DescribeOpenPortTaskStatus",
                &serde_json::json!({ "Uuid": uuid }),
            )
            .await?;
        let status = answer.string_field("Status")?.to_string();
        Ok(TaskStatus {
            status,
            request_id: answer.request_id,
        })
    }
}

/// The answer of `DescribeOpenPortTaskStatus`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStatus {
    /// `Status` exactly as the API sent it.
    pub status: String,
    /// `RequestId`.
    pub request_id: String,
}
