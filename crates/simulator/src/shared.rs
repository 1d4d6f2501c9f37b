//! The state every connection shares ([`Shared`]): the scenario, the limiters, the injected
//! faults, the test hooks, the issued credentials, the created tasks and the statistics, and the
//! simulator's clock. It is built from [`SimulatorOptions`] and only holds the parts: what a
//! request does with them is in the modules above it (`routes.rs`, `actions.rs`, `machines.rs`,
//! `sts.rs`, each adding the methods of its step), so every import points down to here and
//! from here down to the leaves (`faults.rs`, `stats.rs`, `limiter.rs`, `temporary.rs`,
//! `machine_hooks.rs`, `scenario`, `inventory.rs`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use hyper::header::HeaderValue;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;

use super::faults::{AssetPortFaults, FaultDraw, Faults, PortFaults};
use super::inventory::CreatedTask;
use super::limiter::{ActionWindow, LimiterKind};
use super::lock::lock;
use super::machine_hooks::MachineHooks;
use super::options::SimulatorOptions;
use super::scenario::{CwpPortFacts, OpenPortSpec, Scenario};
use super::stats::{Outcome, RequestRecord, StatsState};
use super::temporary::{DurationCap, StsFailure, TemporaryCredentials};

/// State shared by every connection.
pub(crate) struct Shared {
    pub(crate) scenario: Scenario,
    /// Uuid → index in `scenario.agents`, so a large scenario costs no scan per request.
    pub(crate) agents: HashMap<String, usize>,
    pub(crate) limiter_kind: LimiterKind,
    pub(crate) latency: Duration,
    pub(crate) action_latency: HashMap<String, Duration>,
    pub(crate) clock_offset_secs: i64,
    pub(crate) start: Instant,
    pub(crate) faults: Mutex<Faults>,
    pub(crate) rng: Mutex<StdRng>,
    /// Per action: the limiter and the meter of accepted requests.
    /// Per (rate window, action): the limiter and its meters. The window is the SecretId, or
    /// `role:RoleArn` for temporary credentials (see `sts.rs`).
    pub(crate) limiters: Mutex<HashMap<(String, String), ActionWindow>>,
    /// Permanent SecretId → SecretKey: the scenario's main pair and its `[[credential]]`s.
    pub(crate) keys: HashMap<String, String>,
    /// Credentials issued by `AssumeRole`.
    pub(crate) temporary: Mutex<TemporaryCredentials>,
    /// Grant at most this long to `AssumeRole` (a test hook).
    pub(crate) assume_role_cap: Mutex<DurationCap>,
    /// Scripted `AssumeRole` failures (a test hook).
    pub(crate) sts_failures: Mutex<Vec<StsFailure>>,
    /// The simulator's clock at `start`, in Unix seconds, for `CreateTime`/`ModifyTime`.
    pub(crate) start_unix: i64,
    /// Agent index → the latest task created through `CreateOpenPortTask`.
    pub(crate) tasks: Mutex<HashMap<usize, CreatedTask>>,
    /// Agent index → ports set by a test, served instead of the scenario's.
    pub(crate) port_overrides: Mutex<HashMap<usize, PortOverride>>,
    /// Hostile `DescribeOpenPorts` answers.
    pub(crate) port_faults: Mutex<PortFaults>,
    /// `DescribeMachines` test hooks.
    pub(crate) machine_hooks: MachineHooks,
    /// Quuid → index in `scenario.agents`, for the `cwp` actions.
    pub(crate) quuids: HashMap<String, usize>,
    /// Run-time hostile `DescribeAssetPortInfoList` answers.
    pub(crate) asset_port_faults: Mutex<AssetPortFaults>,
    /// The `cwp` `DescribeMachines` test hooks.
    pub(crate) cwp_machine_hooks: MachineHooks,
    /// Tag name → `TagId` in the `cwp` answers: numbered in order of first appearance in the
    /// scenario, so one tag has one id on every machine.
    pub(crate) tag_ids: HashMap<String, u64>,
    pub(crate) stats: Mutex<StatsState>,
}

/// Ports a test set for one agent (see [`RunningSimulator::set_ports`]).
#[derive(Default)]
pub(crate) struct PortOverride {
    /// Served now.
    pub(crate) now: Option<Arc<[OpenPortSpec]>>,
    /// Becomes `now` once the next page has been answered.
    pub(crate) after_next_page: Option<Arc<[OpenPortSpec]>>,
    /// The `cwp` facts of `now[i]` at `now_cwp[i]`; missing ones are the defaults, first seen
    /// at `since`.
    pub(crate) now_cwp: Option<Arc<[CwpPortFacts]>>,
    /// Becomes `now_cwp` with `after_next_page`.
    pub(crate) after_next_page_cwp: Option<Arc<[CwpPortFacts]>>,
    /// When `now` was set (since the start): its ports' `cwp` `UpdateTime`.
    pub(crate) since: Duration,
}

impl PortOverride {
    /// A page was answered at `t`: a pending change takes effect for the next one.
    pub(crate) fn promote(&mut self, t: Duration) {
        if let Some(next) = self.after_next_page.take() {
            self.now = Some(next);
            self.now_cwp = self.after_next_page_cwp.take();
            self.since = t;
        }
    }
}

impl Shared {
    pub(crate) fn new(opts: SimulatorOptions) -> Shared {
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
        let mut keys: HashMap<String, String> = opts
            .scenario
            .extra_credentials
            .iter()
            .map(|c| (c.secret_id.clone(), c.secret_key.clone()))
            .collect();
        keys.insert(
            opts.scenario.secret_id.clone(),
            opts.scenario.secret_key.clone(),
        );
        let quuids = opts
            .scenario
            .agents
            .iter()
            .enumerate()
            .rev() // the first of equal Quuids wins (only possible when built by hand)
            .map(|(i, a)| (a.quuid.clone(), i))
            .collect();
        let mut tag_ids: HashMap<String, u64> = HashMap::new();
        for tag in opts.scenario.agents.iter().flat_map(|a| &a.tags) {
            let next = tag_ids.len() as u64 + 1;
            tag_ids.entry(tag.clone()).or_insert(next);
        }
        Shared {
            keys,
            quuids,
            tag_ids,
            asset_port_faults: Mutex::new(AssetPortFaults::default()),
            cwp_machine_hooks: MachineHooks::default(),
            temporary: Mutex::new(TemporaryCredentials::default()),
            assume_role_cap: Mutex::new(None),
            sts_failures: Mutex::new(Vec::new()),
            scenario: opts.scenario,
            agents,
            limiter_kind: opts.limiter,
            latency: opts.latency,
            action_latency: opts.action_latency,
            clock_offset_secs: opts.clock_offset_secs,
            start: Instant::now(),
            faults: Mutex::new(opts.faults),
            rng: Mutex::new(rng),
            limiters: Mutex::new(HashMap::new()),
            machine_hooks: MachineHooks::default(),
            start_unix: unix_now().saturating_add(opts.clock_offset_secs),
            tasks: Mutex::new(HashMap::new()),
            port_overrides: Mutex::new(HashMap::new()),
            port_faults: Mutex::new(PortFaults::default()),
            stats: Mutex::new(StatsState::default()),
        }
    }

    /// Unix seconds on the simulator's clock (system time plus the configured offset).
    pub(crate) fn now_unix(&self) -> i64 {
        unix_now().saturating_add(self.clock_offset_secs)
    }

    /// `Date`: the simulator's clock, clamped to what an HTTP date can say (1970 to the end of
    /// 9999: `httpdate` panics past it), so no `--clock-offset` can take the server down.
    pub(crate) fn date_header(&self) -> HeaderValue {
        /// 9999-12-31T23:59:59Z.
        const LAST_HTTP_DATE: u64 = 253_402_300_799;
        let secs = u64::try_from(self.now_unix()).map_or(0, |s| s.min(LAST_HTTP_DATE));
        let time = UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .unwrap_or(UNIX_EPOCH);
        HeaderValue::from_str(&httpdate::fmt_http_date(time))
            .unwrap_or_else(|_| HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"))
    }
}

impl Shared {
    /// Step 9: which fault, if any, hits this request.
    pub(crate) fn draw_fault(&self) -> FaultDraw {
        let faults = *lock(&self.faults);
        faults.draw(&mut *lock(&self.rng))
    }

    /// Counts a request of `action` for `uuid` as in flight until the returned guard drops.
    pub(crate) fn enter(self: &Arc<Self>, action: &str, uuid: Option<&str>) -> Option<InFlight> {
        let key = (action.to_owned(), uuid?.to_owned());
        lock(&self.stats).enter(&key);
        Some(InFlight {
            shared: self.clone(),
            key,
        })
    }

    /// Counts one finished request and appends it to the log.
    pub(crate) fn record(&self, record: RequestRecord, outcome: &Outcome) {
        lock(&self.stats).record(record, outcome);
    }

    /// Counts a stall (its request is counted again under its final answer).
    pub(crate) fn count_stall(&self) {
        lock(&self.stats).count_stall();
    }
}

/// Keeps a Uuid counted as in flight until the answer is sent (or the request is dropped).
pub(crate) struct InFlight {
    shared: Arc<Shared>,
    key: (String, String),
}

impl Drop for InFlight {
    fn drop(&mut self) {
        lock(&self.shared.stats).leave(&self.key);
    }
}

/// Seconds since the Unix epoch on the system clock, saturating at the ends of `i64` (the
/// daemon's `clock::unix_now`, three lines, written out so that the simulator needs none of the
/// daemon).
fn unix_now() -> i64 {
    match std::time::SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}
