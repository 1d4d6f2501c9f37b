//! What the tests share, and the only thing they share (no test file uses another's helpers).
//! Compiled into both test binaries: `it` (everything, in parallel) and `rate` (the real-clock
//! rate tests, one at a time).
//!
//! - here: the in-process simulator on `127.0.0.1:0`, scenarios, a signed client for it;
//! - [`app`]: the real binary in a temporary folder (config, watchlist, state) with a clean
//!   environment, its output read line by line, waits for a line or `READY=1`, signals;
//! - [`engine`]: the polling engine against the simulator, and what its events and the
//!   simulator's log say changed.

pub mod accounts;
pub mod app;
pub mod engine;

use std::time::Duration;

use cwp_portwatch::api::{Client, ClientOptions};
use cwp_portwatch::credentials::Credentials;
use cwp_simulator::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, RunningSimulator, Scenario, SimulatorOptions,
};
use secrecy::SecretString;

/// The `i`-th test agent's Uuid (lower case, valid, distinct for every `i`).
pub fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32 ^ 0x5eed_0000, i)
}

pub fn scenario(text: &str) -> Scenario {
    Scenario::from_toml_str(text).expect("test scenario parses")
}

/// `n` agents ([`uuid`]`(0..n)`) that answer `status` from the start, forever.
pub fn steady(n: usize, status: &str) -> String {
    (0..n)
        .map(|i| {
            format!(
                "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"{status}\" }}]\n",
                uuid(i)
            )
        })
        .collect()
}

/// A simulator on a free loopback port.
pub async fn start(opts: SimulatorOptions) -> RunningSimulator {
    RunningSimulator::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts on loopback")
}

/// A simulator of `text` with the default options.
pub async fn start_scenario(text: &str) -> RunningSimulator {
    start(SimulatorOptions::new(scenario(text))).await
}

pub fn creds(key: &str) -> Credentials {
    Credentials {
        secret_id: DEFAULT_SECRET_ID.to_string(),
        secret_key: SecretString::from(key.to_string()),
        token: None,
    }
}

pub fn client_for(sim: &RunningSimulator, key: &str, timeout: Duration) -> Client {
    Client::new(
        ClientOptions {
            endpoint: sim.endpoint().parse().unwrap(),
            region: None,
            timeout,
            max_idle_connections: 32,
        },
        creds(key),
    )
    .expect("client for the simulator")
}

pub fn good_client(sim: &RunningSimulator) -> Client {
    client_for(sim, DEFAULT_SECRET_KEY, Duration::from_secs(5))
}
