//! Injected faults: the probabilities a test or `simulate --fault-*` sets, and the draw that
//! decides which fault (if any) hits one request (applied in `handle.rs`); and the hostile
//! `DescribeOpenPorts` answers a test switches on ([`PortFaults`], applied in `actions.rs`) and
//! their `cwp` counterpart for `DescribeAssetPortInfoList` ([`AssetPortFaults`], applied in
//! `cwp_ports.rs`).

use std::time::Duration;

use rand::Rng;

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

/// The faults drawn for one request.
pub(crate) struct FaultDraw {
    /// Hold the answer back this long first.
    pub(crate) stall: Option<Duration>,
    /// What replaces (or spoils) the answer.
    pub(crate) kind: FaultKind,
}

/// The answer-replacing faults; at most one per request.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    None,
    Reset,
    Http503,
    InternalError,
    Truncated,
}

impl Faults {
    /// Which fault, if any, hits one request, drawn from `rng` (seeded by the options for
    /// reproducible runs).
    pub(crate) fn draw(&self, rng: &mut impl Rng) -> FaultDraw {
        let faults = self;
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
}

/// Hostile `DescribeOpenPorts` answers, applied to every answer while set (not drawn: a client
/// must see the same lie on every retry to give up; only `empty_answers` counts down), for tests of a client's checks. Set with
/// [`RunningSimulator::set_port_faults`](super::RunningSimulator::set_port_faults); the default
/// is honest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortFaults {
    /// Only answers for this agent Uuid lie; `None`: every answer (also `Port`-only queries).
    pub uuid: Option<String>,
    /// Added to `TotalCount` (saturating): the rows then never add up to it.
    pub total_count_offset: i64,
    /// Replaces `Port` in the first row of every page, e.g. `-1` or `70000`.
    pub first_port: Option<i64>,
    /// Removed from the first row of every page, e.g. `"ProcessName"` or `"Port"`.
    pub missing_field: Option<String>,
    /// Answer every page as if `Offset` were 0 (a server that ignores it): the first rows
    /// again and again, under the true `TotalCount`.
    pub ignore_offset: bool,
    /// The next this many answers list no port at all (`TotalCount` 0), then the answers are
    /// honest again: a transient empty answer. Counted down by each answer it empties.
    pub empty_answers: u32,
}

impl PortFaults {
    /// Whether an answer for `uuid` (`None`: a `Port`-only query) lies.
    pub(crate) fn applies_to(&self, uuid: Option<&str>) -> bool {
        match &self.uuid {
            None => true,
            Some(only) => uuid == Some(only.as_str()),
        }
    }
}

/// Hostile `cwp` `DescribeAssetPortInfoList` answers, the `cwp` counterpart of [`PortFaults`]:
/// set at run time with
/// [`RunningSimulator::set_asset_port_faults`](super::RunningSimulator::set_asset_port_faults)
/// (for one `quuid` or every answer), or per agent in a scenario (`cwp_faults`, see
/// `ScenarioAgent::cwp_faults`). Applied to every answer while set; only `empty_answers` counts
/// down. The default is honest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssetPortFaults {
    /// Only answers for this `Quuid` lie; `None`: every answer (also those without `Quuid`).
    /// Not used by a scenario's switch, which is the agent's own.
    pub quuid: Option<String>,
    /// Added to `Total` (saturating): the rows then never add up to it.
    pub total_offset: i64,
    /// Replaces `Port` in the first row of every page, e.g. `"http"`, `"70000"` or `""`.
    pub first_port: Option<String>,
    /// Replaces `BindIp` in the first row of every page, e.g. `"localhost"`.
    pub first_bind_ip: Option<String>,
    /// Removed from the first row of every page, e.g. `"Quuid"` or `"Port"`.
    pub missing_field: Option<String>,
    /// The first matching port is listed twice (two identical rows, both counted in `Total`).
    pub duplicate_rows: bool,
    /// Answer every page as if `Offset` were 0.
    pub ignore_offset: bool,
    /// The next this many answers list no port (`Total` 0), then the answers are honest again.
    pub empty_answers: u32,
}

impl AssetPortFaults {
    /// Whether an answer for `quuid` (`None`: a query without one) lies.
    pub(crate) fn applies_to(&self, quuid: Option<&str>) -> bool {
        match &self.quuid {
            None => true,
            Some(only) => quuid == Some(only.as_str()),
        }
    }

    /// Whether it tells any lie at all.
    pub(crate) fn is_honest(&self) -> bool {
        let AssetPortFaults {
            quuid: _,
            total_offset,
            first_port,
            first_bind_ip,
            missing_field,
            duplicate_rows,
            ignore_offset,
            empty_answers,
        } = self;
        *total_offset == 0
            && first_port.is_none()
            && first_bind_ip.is_none()
            && missing_field.is_none()
            && !duplicate_rows
            && !ignore_offset
            && *empty_answers == 0
    }
}
