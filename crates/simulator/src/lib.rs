//! A faithful stand-in for the Tencent Cloud CWP API on loopback, for the demo, the tests and
//! users' own integration tests: a real HTTP/1.1 server that checks TC3 signatures and clock
//! skew, rate-limits per account and action (one strict window each), answers
//! `DescribeOpenPortTaskStatus` from a scripted timeline per agent, `CreateOpenPortTask` and
//! `DescribeOpenPorts` from a scripted port timeline, `DescribeMachines` and STS `AssumeRole`,
//! the live `cwp` API's `DescribeMachines` and `DescribeAssetPortInfoList` (a request signed
//! for service `cwp`; its ports with protocol, bind address, user and first-seen time),
//! answers bad input with the API's real error codes, and can inject latency, clock offset and
//! faults. The official SDKs talk to it (see `tests/sdk_crosscheck.sh`).
//!
//! Files, from the top down (every import points down this list; nothing imports upwards, so
//! there is no import circle):
//! - `cli.rs`: `cwp-portwatch simulate` arguments and the options they make.
//! - `server.rs`: the [`RunningSimulator`] handle (start, statistics, test hooks, shutdown),
//!   accept and connection loops.
//! - `handle.rs`: one request from arrival to answer (body, decision, faults, latency, record).
//! - `routes.rs`: the checks in the real API's order (its docs list them), the rate limit per
//!   account and action, dispatch to the action handlers; the API's version and action names.
//! - `machines.rs`: `DescribeMachines`, for agent discovery; `sts.rs`: STS `AssumeRole` and
//!   which rate window a signer counts against; `cwp_machines.rs`: the `cwp` API's
//!   `DescribeMachines` (Quuid, `AgentStatus` timeline).
//! - `cwp_ports.rs`: the `cwp` API's `DescribeAssetPortInfoList` and the parameter checks of
//!   the `cwp` actions (`InvalidParameter`).
//! - `actions.rs`: the handlers of `DescribeOpenPortTaskStatus`, `CreateOpenPortTask`,
//!   `DescribeOpenPorts`, and the parameter checks `machines.rs` and `sts.rs` share.
//! - `shared.rs`: the state every connection shares, built from the options; the handlers above
//!   add their methods to it, it holds the parts below.
//! - `options.rs`: [`SimulatorOptions`].
//! - `inventory.rs`: created tasks, completions and the port set served, pure.
//! - `scenario.rs`: the scenario (credentials, agents, timelines, `ports` and `collect_time`,
//!   machines) and timeline lookup; `scenario/parse.rs` reads the TOML, with `file:line:column`
//!   errors; `scenario/tests.rs` its tests.
//! - Leaves: `faults.rs` (injected faults and their draw; hostile `DescribeOpenPorts` answers),
//!   `stats.rs` ([`SimStats`], [`RequestRecord`], the request log and in-flight counts),
//!   `temporary.rs` (the credentials `AssumeRole` issued, scripted [`StsFailure`]s),
//!   `machine_hooks.rs` ([`MachineHooks`]), `limiter.rs` (the rate limit of one account's action,
//!   sliding window or token bucket, and its meters, pure), `auth.rs` (`Authorization` parsing
//!   and signature verification with [`cwp_tc3`]), `wire.rs` (answer bodies, request ids, fault
//!   bodies, pure), `lock.rs` (locks that survive poisoning), `error.rs` ([`SimulatorError`] and
//!   [`ScenarioError`] with stable `code()` strings).
//! - `http_tests.rs`: the tests through real HTTP; `cwp_tests.rs`: those of the `cwp` API.
//!
//! A crate of its own (`crates/simulator`, package `cwp-simulator`): the daemon's `simulate` and
//! `demo` commands and its tests use it through the public API below, and it needs nothing of
//! the daemon but TC3 signing (`cwp-tc3`) and the text rules for operator files (`cwp-text`).
//! Its log lines keep the target `cwp_portwatch::simulator` they had inside the daemon, so an
//! operator's `RUST_LOG` filters and the daemon's default filter still select them.

#![deny(missing_docs)]

mod actions;
mod auth;
pub mod cli;
mod cwp_machines;
mod cwp_ports;
mod error;
mod faults;
mod handle;
mod inventory;
mod limiter;
mod lock;
mod machine_hooks;
mod machines;
mod options;
mod routes;
mod scenario;
mod server;
mod shared;
mod stats;
mod sts;
mod temporary;
mod wire;

pub use actions::MAX_LIMIT;
pub use auth::{AuthProblem, Authorization, SERVICE, parse_authorization};
pub use cwp_ports::DESCRIBE_ASSET_PORTS_ACTION;
pub use error::{ScenarioError, SimulatorError};
pub use faults::{AssetPortFaults, Faults, PortFaults};
pub use limiter::{ActionStats, LimiterKind};
pub use machine_hooks::MachineHooks;
pub use machines::DESCRIBE_MACHINES_ACTION;
pub use options::SimulatorOptions;
pub use routes::{
    API_VERSION, CREATE_TASK_ACTION, CWP_SERVICE, DESCRIBE_ACTION, DESCRIBE_PORTS_ACTION,
    MAX_SKEW_SECS, cwp_action_key,
};
pub use scenario::{
    AgentStatusEntry, BEFORE_TIMELINE_ERROR, CwpFaults, CwpPortFacts, DEFAULT_COLLECT_TIME,
    DEFAULT_REGION, DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, OpenPortSpec, Placement, PortsEntry,
    Scenario, ScenarioAgent, ScenarioCredential, ScenarioMachine, ScriptedAnswer, TimelineEntry,
    default_quuid, is_agent_uuid,
};
pub use server::RunningSimulator;
pub use stats::{RequestRecord, SimStats};
pub use sts::{ASSUME_ROLE_ACTION, STS_SERVICE, STS_VERSION};
pub use temporary::StsFailure;

#[cfg(test)]
mod cwp_tests;
#[cfg(test)]
mod http_tests;
