//! One request from arrival to answer: read the body (bounded), let `routes.rs` decide the
//! answer, apply the injected faults (`faults.rs`) and the latency, build the HTTP response and
//! record it (`stats.rs`).

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, DATE, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tokio::time::Instant;

use super::auth::parse_authorization;
use super::faults::{FaultDraw, FaultKind};
use super::routes::action_key;
use super::shared::Shared;
use super::stats::{Outcome, RequestRecord};
use super::sts::ASSUME_ROLE_ACTION;
use super::wire::{self, Answer};

/// Bodies above this answer `RequestSizeLimitExceeded` (the real limit is larger; nothing this
/// crate sends comes close).
const MAX_BODY_BYTES: usize = 1 << 20;

/// The service error that makes hyper drop the connection without an answer: the client sees
/// the connection closed mid-request, as with a reset.
#[derive(Debug, thiserror::Error)]
#[error("injected connection reset")]
pub(crate) struct InjectedReset;

/// Serves one request; `Err` drops the connection without an answer.
pub(crate) async fn handle(
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
    let header_action = parts
        .headers
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `cwp:ACTION` for the `cwp` API's actions (see `routes::cwp_action_key`).
    let action = action_key(
        header_action,
        parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok()),
    );
    let uuid = body.as_ref().ok().and_then(|b| uuid_of(b));
    let _in_flight = shared.enter(&action, uuid.as_deref());

    let mut sts_failure = None;
    let (answer, fault) = match &body {
        Ok(bytes) => {
            let decision = shared.decide(&parts, bytes, arrived);
            if decision.accepted && action == ASSUME_ROLE_ACTION {
                sts_failure = signer_of(&parts).and_then(|id| shared.take_sts_failure(&id));
            }
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

    let latency = shared
        .action_latency
        .get(&action)
        .copied()
        .unwrap_or(shared.latency);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
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

    let (outcome, response) = match (kind, sts_failure) {
        (_, Some((status, body))) => (
            Outcome::Fault("fault:sts"),
            Some(build(
                &shared,
                StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
                "application/json",
                body.into_bytes(),
            )),
        ),
        (kind, None) => match kind {
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
        },
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
            action,
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

/// The SecretId that signed the request, if its `Authorization` header can be read.
fn signer_of(parts: &hyper::http::request::Parts) -> Option<String> {
    let value = parts.headers.get("authorization")?.to_str().ok()?;
    parse_authorization(value)
        .ok()
        .map(|auth| auth.secret_id.to_owned())
}

/// The `Uuid` parameter if the body is a JSON object with a string one, else its `Quuid` (the
/// `cwp` API names a machine so), for in-flight tracking and the log, before any check.
fn uuid_of(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct OnlyIds {
        #[serde(rename = "Uuid")]
        uuid: Option<serde_json::Value>,
        #[serde(rename = "Quuid")]
        quuid: Option<serde_json::Value>,
    }
    let ids = serde_json::from_slice::<OnlyIds>(body).ok()?;
    match (ids.uuid, ids.quuid) {
        (Some(serde_json::Value::String(s)), _) => Some(s),
        (None, Some(serde_json::Value::String(s))) => Some(s),
        _ => None,
    }
}
