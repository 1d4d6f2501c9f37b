//! What the simulator has seen: the counters and request log behind
//! [`RunningSimulator::stats`](super::RunningSimulator::stats), and the per-Uuid in-flight
//! count (a client must never have two requests for one agent open at once).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use super::limiter::ActionStats;
use super::wire::Answer;

/// The request log keeps this many newest records, so a long `simulate` run stays bounded.
const LOG_CAPACITY: usize = 100_000;

/// A snapshot of what the simulator has seen.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SimStats {
    /// Every request that reached the service (faulted ones included).
    pub requests: u64,
    /// Success answers (a `Status`, or another action's result) that reached the client intact.
    pub ok: u64,
    /// `RequestLimitExceeded` answers.
    pub throttled: u64,
    /// Count per API error code, plus `fault:503`, `fault:reset`, `fault:truncated` and
    /// `fault:stall` (a stall is counted here and its request also under its final answer).
    pub by_code: BTreeMap<String, u64>,
    /// The most requests of one action for one Uuid that were being handled at the same time
    /// (a status poll and a `DescribeOpenPorts` page for the same agent are two actions).
    pub max_in_flight_per_uuid: u32,
    /// The most requests the limiter accepted in any sliding 1-second window, for any one
    /// action.
    pub max_in_window: u32,
    /// Per action: arrivals, acceptances, throttling and the densest 1-second windows (of
    /// arrivals and of acceptances). Only the actions that were asked for are present. With
    /// several accounts (SecretIds, roles) the counts are summed and the densest windows are
    /// those of the busiest account: each account has its own windows, see `per_account`.
    /// The `cwp` API's actions are named `cwp:ACTION` (`cwp:DescribeMachines` is not yunjing's
    /// `DescribeMachines`: each has its own window).
    pub per_action: BTreeMap<String, ActionStats>,
    /// Per account (rate window: the SecretId, or `role:RoleArn` for credentials from
    /// `AssumeRole`), per action: as `per_action`, for that account alone.
    pub per_account: BTreeMap<String, BTreeMap<String, ActionStats>>,
    /// One record per request, oldest first (the newest 100 000).
    pub log: Vec<RequestRecord>,
}

/// One handled request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When the request arrived, since the simulator started.
    pub at: Duration,
    /// The `X-TC-Action` header (empty when missing); for the `cwp` API's actions (signed
    /// for service `cwp`) `cwp:` and the action, e.g. `cwp:DescribeAssetPortInfoList`.
    pub action: String,
    /// The `Uuid` parameter, when the body had a string one, else the `Quuid` parameter (the
    /// `cwp` API's `DescribeAssetPortInfoList`).
    pub uuid: Option<String>,
    /// The status, the error code, or `fault:503` / `fault:reset` / `fault:truncated`.
    pub answer: String,
    /// The `RequestId` answered (also for faults, though the client never sees it then).
    pub request_id: String,
    /// The answer was held back by a stall fault (a client with a shorter timeout never saw
    /// it).
    pub stalled: bool,
}

/// What the client got, for the statistics.
pub(crate) enum Outcome {
    /// An API answer (scripted, refused or an injected `InternalError`).
    Answered(Answer),
    /// A fault that is not an API answer (`fault:503`, `fault:reset`, `fault:truncated`).
    Fault(&'static str),
}

/// The live counters behind [`SimStats`].
#[derive(Default)]
pub(crate) struct StatsState {
    requests: u64,
    ok: u64,
    throttled: u64,
    by_code: BTreeMap<String, u64>,
    max_in_flight_per_uuid: u32,
    pub(crate) max_in_window: u32,
    in_flight: HashMap<(String, String), u32>,
    log: VecDeque<RequestRecord>,
}

impl StatsState {
    /// A snapshot for the caller.
    pub(crate) fn snapshot(&self) -> SimStats {
        SimStats {
            requests: self.requests,
            ok: self.ok,
            throttled: self.throttled,
            by_code: self.by_code.clone(),
            max_in_flight_per_uuid: self.max_in_flight_per_uuid,
            max_in_window: self.max_in_window,
            per_action: BTreeMap::new(),
            per_account: BTreeMap::new(),
            log: self.log.iter().cloned().collect(),
        }
    }
}

impl StatsState {
    /// Counts one more request in flight for `key` (action, Uuid).
    pub(crate) fn enter(&mut self, key: &(String, String)) {
        let n = self.in_flight.entry(key.clone()).or_insert(0);
        *n += 1;
        let n = *n;
        self.max_in_flight_per_uuid = self.max_in_flight_per_uuid.max(n);
    }

    /// Counts one request for `key` as no longer in flight.
    pub(crate) fn leave(&mut self, key: &(String, String)) {
        if let Some(n) = self.in_flight.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(key);
            }
        }
    }

    /// Counts one finished request and appends it to the log.
    pub(crate) fn record(&mut self, record: RequestRecord, outcome: &Outcome) {
        let st = self;
        st.requests += 1;
        match outcome {
            Outcome::Answered(Answer::Status(_) | Answer::Fields(_)) => st.ok += 1,
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

    /// Counts a stall (its request is counted again under its final answer).
    pub(crate) fn count_stall(&mut self) {
        *self.by_code.entry("fault:stall".to_owned()).or_insert(0) += 1;
    }
}
