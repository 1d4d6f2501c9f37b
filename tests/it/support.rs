//! Shared helpers: start a simulator, build a client for it, make scenarios.

use std::time::Duration;

use cwp_portwatch::api::{Client, ClientOptions};
use cwp_portwatch::credentials::Credentials;
use cwp_portwatch::simulator::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, RunningSimulator, Scenario, SimulatorOptions,
};
use secrecy::SecretString;

pub fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32 ^ 0x5eed_0000, i)
}

pub fn scenario(text: &str) -> Scenario {
    Scenario::from_toml_str(text).expect("test scenario parses")
}

pub async fn start(opts: SimulatorOptions) -> RunningSimulator {
    RunningSimulator::start(opts, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("simulator starts on loopback")
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

/// Tests that measure rates or timing on the real clock take this, so that two of them never
/// compete for the machine's two cores (a strict server window has a few ms of slack).
pub static REAL_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
