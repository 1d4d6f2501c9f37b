//! The `[metrics] listen` HTTP listener: `GET /metrics` (the scrape), `GET /healthz` (200
//! while the dispatcher makes progress, 503 when it is wedged), 404 for anything else.
//!
//! Bounded: request bodies are never read, a connection must send its headers within
//! [`HEADER_TIMEOUT`] and ends after [`CONNECTION_LIFETIME`], and at most
//! [`MAX_CONNECTIONS`] are served at once (more are closed at accept). It runs on the
//! daemon's shutdown tracker and stops with it.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Metrics;
use crate::engine::EngineStatus;

/// Connections served at once; Prometheus uses one per target, and a few for people and
/// probes is plenty. More are closed at once rather than queued.
pub const MAX_CONNECTIONS: usize = 16;
/// A client has this long to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection (with keep-alive, several requests) is closed after this long.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// `/healthz` answers 503 when the dispatcher's heartbeat has not advanced for this long. It
/// advances at least once per second while the loop runs, so this is a wedged loop, not a
/// slow API; it is well below the unit's `WatchdogSec=30s`, so a probe sees it first.
pub const STALE_AFTER: Duration = Duration::from_secs(10);
/// `Content-Type` of an OpenMetrics scrape.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The listener could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// Binding the configured address failed (in use, not ours, not permitted).
    #[error(
        "cannot listen on {addr} for [metrics] ({source}); pick a free port in `[metrics] listen`, \
         or set listen = \"\" to serve no metrics"
    )]
    Bind {
        /// The address from the config.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl MetricsError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            MetricsError::Bind { .. } => "MetricsError.Bind",
        }
    }
}

/// Whether the dispatcher makes progress, judged from its heartbeat counter.
#[derive(Debug)]
struct Health {
    status: Arc<EngineStatus>,
    /// The counter last seen and when it was first seen at that value.
    last: Mutex<(u64, Instant)>,
}

impl Health {
    fn new(status: Arc<EngineStatus>) -> Self {
        let beats = status.beats.load(Ordering::Relaxed);
        Health {
            status,
            last: Mutex::new((beats, Instant::now())),
        }
    }

    /// True while the heartbeat advanced within [`STALE_AFTER`].
    fn healthy(&self) -> bool {
        let beats = self.status.beats.load(Ordering::Relaxed);
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if beats != last.0 {
            *last = (beats, now);
            return true;
        }
        now.duration_since(last.1) < STALE_AFTER
    }
}

/// A bound listener, ready to [`serve`](MetricsServer::serve).
#[derive(Debug)]
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (at start-up, so a taken port fails the start with a clear error).
    pub async fn bind(addr: SocketAddr) -> Result<MetricsServer, MetricsError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| MetricsError::Bind { addr, source })?;
        Ok(MetricsServer { listener })
    }

    /// The address bound.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `cancel`.
    pub async fn serve(
        self,
        metrics: Arc<Metrics>,
        status: Arc<EngineStatus>,
        cancel: CancellationToken,
    ) {
        let shared = Arc::new(Shared {
            metrics,
            health: Health::new(status),
        });
        let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        // Over the cap: closed now (dropping the stream), never queued.
                        let Ok(permit) = permits.clone().try_acquire_owned() else {
                            tracing::debug!("metrics: connection refused, {MAX_CONNECTIONS} open");
                            continue;
                        };
                        let shared = shared.clone();
                        let cancel = cancel.clone();
                        tokio::spawn(async move {
                            connection(stream, shared, cancel).await;
                            drop(permit);
                        });
                    }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!("metrics: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }
}

struct Shared {
    metrics: Arc<Metrics>,
    health: Health,
}

async fn connection(stream: tokio::net::TcpStream, shared: Arc<Shared>, cancel: CancellationToken) {
    let service = service_fn(move |req| {
        let shared = shared.clone();
        async move { Ok::<_, std::convert::Infallible>(answer(&shared, &req)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(16 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!("metrics: connection ended: {e}");
            }
        }
        _ = tokio::time::sleep(CONNECTION_LIFETIME) => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(1), conn).await;
        }
    }
}

/// The answer to one request; its body is never read.
fn answer(shared: &Shared, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and HEAD\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    match req.uri().path() {
        "/metrics" => {
            let openmetrics = req
                .headers()
                .get_all(ACCEPT)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.contains("application/openmetrics-text"));
            let body = shared.metrics.encode(openmetrics);
            let content_type = if openmetrics {
                OPENMETRICS_CONTENT_TYPE
            } else {
                prometheus_client::encoding::prometheus_text::CONTENT_TYPE
            };
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
            r
        }
        "/healthz" => {
            if shared.health.healthy() {
                plain(StatusCode::OK, "ok\n")
            } else {
                plain(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the dispatcher has made no progress for 10 s\n",
                )
            }
        }
        _ => plain(
            StatusCode::NOT_FOUND,
            "not found: GET /metrics or GET /healthz\n",
        ),
    }
}

fn plain(code: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = code;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// A server on a free loopback port; its address and the token that stops it.
    async fn start() -> (SocketAddr, CancellationToken) {
        let server = MetricsServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        let stop = CancellationToken::new();
        tokio::spawn(server.serve(
            Arc::new(Metrics::new(false)),
            Arc::new(EngineStatus::default()),
            stop.clone(),
        ));
        (addr, stop)
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = s.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    #[tokio::test]
    async fn methods_paths_and_head() {
        let (addr, stop) = start().await;
        let get = exchange(
            addr,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(get.starts_with("HTTP/1.1 200"), "{get}");
        assert!(get.contains("cwp_portwatch_build_info"), "{get}");
        let head = exchange(
            addr,
            "HEAD /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            !head.contains("cwp_portwatch_build_info"),
            "HEAD has no body: {head}"
        );
        let post = exchange(
            addr,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        )
        .await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );
        let other = exchange(
            addr,
            "GET /metrics/x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(other.starts_with("HTTP/1.1 404"), "{other}");
        let health = exchange(
            addr,
            "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(health.starts_with("HTTP/1.1 200"), "{health}");
        stop.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_cap_are_closed_at_once_and_served_again_after() {
        let (addr, stop) = start().await;
        // The cap's worth of clients that send nothing (yet).
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // One more: accepted and closed without an answer.
        let refused = exchange(addr, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(refused, "", "over the cap: closed, no answer");
        // The held ones are still served.
        let mut first = idle.remove(0);
        first
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        first.read_to_end(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        // Once they go, new clients are served again.
        drop(idle);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let again = exchange(
                addr,
                "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await;
            if again.starts_with("HTTP/1.1 200") {
                break;
            }
            assert!(Instant::now() < deadline, "never served again: {again:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_never_finishes_its_headers_is_dropped() {
        let (addr, stop) = start().await;
        // Paused time: while both sides wait, the clock jumps to the next timer, so the
        // elapsed time says which bound closed the connection.
        let t = Instant::now();
        let answer = exchange(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
        assert!(!answer.contains("200 OK"), "{answer}");
        assert!(
            t.elapsed() >= HEADER_TIMEOUT && t.elapsed() < HEADER_TIMEOUT * 2,
            "closed after {:?}",
            t.elapsed()
        );
        stop.cancel();
    }

    #[tokio::test(start_paused = true)]
    async fn health_turns_503_when_the_heartbeat_stops_and_back_when_it_moves() {
        let status = Arc::new(EngineStatus::default());
        let health = Health::new(status.clone());
        assert!(health.healthy());
        tokio::time::advance(STALE_AFTER - Duration::from_millis(1)).await;
        assert!(health.healthy(), "not stale yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!health.healthy(), "no beat for STALE_AFTER: wedged");
        status.beats.fetch_add(1, Ordering::Relaxed);
        assert!(health.healthy(), "a beat: progress again");
        // A heartbeat that keeps moving stays healthy however long it runs.
        for _ in 0..30 {
            tokio::time::advance(Duration::from_secs(1)).await;
            status.beats.fetch_add(1, Ordering::Relaxed);
            assert!(health.healthy());
        }
    }
}
