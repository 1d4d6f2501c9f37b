//! What a request is and who answers it: the checks every request passes, in the real API's
//! order, the per-action rate limit, and the dispatch to the action's handler (`actions.rs`).
//! The pipeline around it (body, faults, answer, statistics) is `handle.rs`.
//!
//! Order of checks, first failure answers:
//! 1. method and path: only `POST /` (`InvalidRequest` otherwise);
//! 2. `X-TC-Action`, `X-TC-Version`, `X-TC-Timestamp` present (`MissingParameter`), timestamp an
//!    integer (`InvalidParameterValue`);
//! 3. `Authorization` present and well-formed (`AuthFailure.InvalidAuthorization`);
//! 4. timestamp within 300 s of the simulator clock (`AuthFailure.SignatureExpire`);
//! 5. SecretId known: the scenario's, a `[[credential]]`'s, or one `AssumeRole` issued
//!    (`AuthFailure.SecretIdNotFound`); from here on a request of a known action
//!    counts as an arrival of that action (`SimStats::per_action`), whatever follows;
//! 6. credential scope (`yunjing`, `cwp` for the live API's actions, or `sts` for
//!    `AssumeRole`) and signature
//!    (`AuthFailure.SignatureFailure`); for temporary credentials, their token in `X-TC-Token`
//!    and their expiry (`AuthFailure.TokenFailure`);
//! 7. version `2018-02-28` (`2018-08-13` for `AssumeRole`) (`NoSuchVersion`), action known (`InvalidAction`; other real CWP
//!    actions the simulator does not implement: `UnsupportedOperation`); a request signed for
//!    service `cwp` is one of the `cwp` API (`DescribeMachines`, `DescribeAssetPortInfoList`;
//!    yunjing's task actions are `InvalidAction` there), counted as `cwp:ACTION`;
//! 8. rate limit per account (SecretId, or the role of temporary credentials) and action, one
//!    strict window each, as Tencent counts each action of each sub-account separately
//!    (`RequestLimitExceeded`) — so only authenticated calls of a real action count, and refused
//!    ones do not;
//! 9. injected faults (drawn only for requests the limiter accepted, i.e. those the real API
//!    would hand to its backend; they consume quota like a backend failure would);
//! 10. body and parameters (`InvalidParameter`, `UnknownParameter`, `MissingParameter`,
//!     `InvalidParameterValue`, `InvalidParameter.InvalidFormat`, `ResourceNotFound`), then the
//!     action's answer (`actions.rs`).

use hyper::Method;
use tokio::time::Instant;

use super::auth::SERVICE;
use super::auth::{self, ReceivedRequest};
use super::cwp_ports::DESCRIBE_ASSET_PORTS_ACTION;
use super::limiter::{ActionWindow, LimiterKind};
use super::lock::lock;
use super::machines::DESCRIBE_MACHINES_ACTION;
use super::shared::Shared;
use super::sts::{ASSUME_ROLE_ACTION, STS_PER_SECOND, STS_SERVICE, STS_VERSION};
use super::wire::Answer;

/// The only API version of CWP.
pub const API_VERSION: &str = "2018-02-28";
/// The task-status action, answered from each agent's timeline and created tasks.
pub const DESCRIBE_ACTION: &str = "DescribeOpenPortTaskStatus";
/// Starts an open-port collection task for one agent.
pub const CREATE_TASK_ACTION: &str = "CreateOpenPortTask";
/// Pages the open ports collected by an agent's latest completed task.
pub const DESCRIBE_PORTS_ACTION: &str = "DescribeOpenPorts";
/// Largest accepted clock difference, as the real API: 5 minutes.
pub const MAX_SKEW_SECS: i64 = 300;

/// The actions the simulator answers (`actions.rs`).
const IMPLEMENTED: &[&str] = &[
    DESCRIBE_ACTION,
    CREATE_TASK_ACTION,
    DESCRIBE_PORTS_ACTION,
    DESCRIBE_MACHINES_ACTION,
    ASSUME_ROLE_ACTION,
];

/// Real CWP actions the simulator knows by name but does not implement.
const OTHER_CWP_ACTIONS: &[&str] = &["DescribeOpenPortStatistics", "DescribeMachineInfo"];

/// The signing service of the live `cwp` API (same version, `2018-02-28`).
pub const CWP_SERVICE: &str = "cwp";
/// The `cwp` actions the simulator answers (`cwp_machines.rs`, `cwp_ports.rs`).
const CWP_IMPLEMENTED: &[&str] = &[DESCRIBE_MACHINES_ACTION, DESCRIBE_ASSET_PORTS_ACTION];
/// Real `cwp` actions around the port inventory that the simulator knows by name only.
const OTHER_CWP_API_ACTIONS: &[&str] = &[
    "ScanAsset",
    "SyncAssetScan",
    "ExportAssetPortInfoList",
    "DescribeAssetPortCount",
    "DescribeOpenPortStatistics",
    "DescribeAssetTypes",
    "DescribeMachineInfo",
];

/// The name a `cwp` action has in the statistics, the rate windows and the request log:
/// `cwp:` and the action, so that `cwp:DescribeMachines` and yunjing's `DescribeMachines` are
/// counted (and limited) apart. Yunjing's and STS's actions keep their plain names.
pub fn cwp_action_key(action: &str) -> String {
    format!("{CWP_SERVICE}:{action}")
}

/// Which API a request is for: the `cwp` one when its credential scope names service `cwp`
/// (the official SDK's `cwp_client` signs so; yunjing's and the `cwp` API share the
/// simulator's one address, as `X-TC-Action` alone cannot tell `DescribeMachines` apart),
/// except `AssumeRole`, which is always STS's.
fn is_cwp(action: &str, scope_service: &str) -> bool {
    scope_service == CWP_SERVICE && action != ASSUME_ROLE_ACTION
}

/// The statistics name of a request (see [`cwp_action_key`]) from its action and
/// `Authorization` header (a request whose header cannot be read is not a `cwp` one).
pub(crate) fn action_key(action: &str, authorization: Option<&str>) -> String {
    let scope = authorization
        .and_then(|a| auth::parse_authorization(a).ok())
        .map(|a| a.service)
        .unwrap_or_default();
    if is_cwp(action, scope) {
        cwp_action_key(action)
    } else {
        action.to_owned()
    }
}

impl Shared {
    /// Steps 1–8 of the module docs, then (for accepted requests) step 10. Returns the answer
    /// and whether the limiter accepted the request (only those can be faulted).
    pub(crate) fn decide(
        &self,
        parts: &hyper::http::request::Parts,
        body: &[u8],
        now: Instant,
    ) -> Decision {
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
        let Some(signer) = self.signer(auth.secret_id) else {
            return refused(Answer::error(
                "AuthFailure.SecretIdNotFound",
                "The SecretId is not found, please ensure that your SecretId is correct.",
            ));
        };
        let window = signer.window.as_str();
        let cwp = is_cwp(action, auth.service);
        let (implemented, others) = if cwp {
            (CWP_IMPLEMENTED, OTHER_CWP_API_ACTIONS)
        } else {
            (IMPLEMENTED, OTHER_CWP_ACTIONS)
        };
        let key = if cwp {
            cwp_action_key(action)
        } else {
            action.to_owned()
        };
        if implemented.contains(&action) || others.contains(&action) {
            self.arrive(window, &key, now);
        }
        let (service, api_version) = if action == ASSUME_ROLE_ACTION {
            (STS_SERVICE, STS_VERSION)
        } else if cwp {
            (CWP_SERVICE, API_VERSION)
        } else {
            (SERVICE, API_VERSION)
        };
        let query = parts.uri.query().unwrap_or("");
        let received = ReceivedRequest {
            method: parts.method.as_str(),
            uri: parts.uri.path(),
            query,
            headers: &parts.headers,
            payload: body,
            timestamp,
            service,
        };
        if let Err(p) = auth::verify(&auth, &signer.secret_key, &received) {
            return refused(Answer::error(p.code(), p.message()));
        }
        if let Some((token, expires)) = &signer.token {
            // Temporary credentials: the token must come along, and they expire.
            if header("x-tc-token") != Some(token.as_str()) {
                return refused(Answer::error(
                    "AuthFailure.TokenFailure",
                    "Temporary credentials need their token in X-TC-Token.",
                ));
            }
            if server_time >= *expires {
                return refused(Answer::error(
                    "AuthFailure.TokenFailure",
                    format!(
                        "The temporary credentials expired at {expires}; assume the role again."
                    ),
                ));
            }
        }
        if version != api_version {
            return refused(Answer::error(
                "NoSuchVersion",
                format!(
                    "The API version `{version}` does not exist for `{action}`; it is `{api_version}`."
                ),
            ));
        }
        if !implemented.contains(&action) {
            return refused(if others.contains(&action) {
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
        if !self.admit(window, &key, now) {
            return refused(Answer::error(
                "RequestLimitExceeded",
                "Your current request times equals to `20` in a second, which exceeds the \
                 frequency limit `20` for a second. Please reduce the frequency of calls.",
            ));
        }
        let answer = match action {
            DESCRIBE_MACHINES_ACTION if cwp => self.cwp_describe_machines(body, now),
            DESCRIBE_ASSET_PORTS_ACTION => self.describe_asset_ports(body, now),
            ASSUME_ROLE_ACTION => self.assume_role(body),
            DESCRIBE_MACHINES_ACTION => self.describe_machines(body),
            CREATE_TASK_ACTION => self.create_task(body, now),
            DESCRIBE_PORTS_ACTION => self.describe_ports(body, now),
            _ => self.describe_status(body, now),
        };
        Decision {
            answer,
            accepted: true,
        }
    }

    /// Counts an arrival of a known action (see the module docs, step 5).
    fn arrive(&self, window: &str, action: &str, now: Instant) {
        lock(&self.limiters)
            .entry((window.to_owned(), action.to_owned()))
            .or_insert_with(|| ActionWindow::new(self.limiter_kind_of(action), now))
            .arrive(now);
    }

    /// CWP's 20/s (or what the options say) for every action, STS's own limit for `AssumeRole`.
    fn limiter_kind_of(&self, action: &str) -> LimiterKind {
        if action == ASSUME_ROLE_ACTION {
            LimiterKind::SlidingWindow {
                per_second: STS_PER_SECOND,
            }
        } else {
            self.limiter_kind
        }
    }

    /// Step 8: the action's own limiter.
    fn admit(&self, window: &str, action: &str, now: Instant) -> bool {
        let mut limiters = lock(&self.limiters);
        let window = limiters
            .entry((window.to_owned(), action.to_owned()))
            .or_insert_with(|| ActionWindow::new(self.limiter_kind_of(action), now));
        if !window.try_acquire(now) {
            return false;
        }
        let max = window.stats().max_accepted_in_window;
        drop(limiters);
        let mut st = lock(&self.stats);
        st.max_in_window = st.max_in_window.max(max);
        true
    }
}

/// The answer to a request before any fault, and whether the limiter accepted it.
pub(crate) struct Decision {
    /// What the API answers.
    pub(crate) answer: Answer,
    /// The limiter counted the request (only those can be faulted).
    pub(crate) accepted: bool,
}
