//! [`SimulatorOptions`]: how to run a simulator (scenario, rate limiter, latency, clock offset,
//! faults, seed). A leaf: `shared.rs` builds the state from it, `server.rs` starts with it.

use std::collections::HashMap;
use std::time::Duration;

use super::faults::Faults;
use super::limiter::LimiterKind;
use super::scenario::Scenario;

/// How to run a simulator.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// Agents, timelines and credentials.
    pub scenario: Scenario,
    /// The per-action rate limit.
    pub limiter: LimiterKind,
    /// Added before every answer (errors included).
    pub latency: Duration,
    /// Per action (`X-TC-Action`), added instead of `latency`: one slow action beside fast
    /// ones, as a half-broken API answers (issue 20: `DescribeOpenPorts` in 8 s).
    pub action_latency: HashMap<String, Duration>,
    /// The simulator's clock is the system clock plus this (signed), for `Date`, the
    /// signature-expiry check and its message.
    pub clock_offset_secs: i64,
    /// Injected faults (changeable later with [`RunningSimulator::set_faults`](crate::RunningSimulator::set_faults)).
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
            action_latency: HashMap::new(),
            clock_offset_secs: 0,
            faults: Faults::default(),
            seed: None,
        }
    }
}
