//! `cwp-portwatch demo`: the newcomer's first run. Starts the simulator on loopback with the
//! bundled scenario (`config/demo-scenario.toml`), runs the real engine and client against it
//! with readable output, and ends by itself with a summary table. No credentials, no network.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;

use crate::api::{Client, ClientOptions};
use crate::config::LogFormat;
use crate::credentials::Credentials;
use crate::engine::{Engine, EngineConfig};
use crate::events::{CollectingSink, Event, EventSink, Tee, TracingSink};
use crate::logging;
use crate::scheduler::Intervals;
use crate::simulator::{RunningSimulator, Scenario, SimulatorOptions};

/// The bundled scenario.
pub const SCENARIO: &str = include_str!("../config/demo-scenario.toml");
/// How long the demo runs: the scenario's last change is at 20 s.
pub const DURATION: Duration = Duration::from_secs(26);

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The bundled scenario does not parse (a build defect).
    #[error("bundled scenario: {0}")]
    Scenario(#[from] crate::simulator::ScenarioError),
    /// The simulator could not listen on loopback.
    #[error("cannot start the simulator: {0}")]
    Listen(#[from] std::io::Error),
    /// The client could not be built.
    #[error("{0}")]
    Client(#[from] crate::api::client::ClientBuildError),
}

/// Runs the demo.
pub async fn run() -> Result<ExitCode, DemoError> {
    let _ = logging::init_with_filter(
        LogFormat::Text,
        tracing_subscriber::EnvFilter::new("warn,cwp_portwatch=info,cwp_portwatch::simulator=warn"),
    );
    let scenario = Scenario::from_toml_str(SCENARIO)?;
    let names = [
        "web-01", "web-02", "db-01", "db-02", "cache-01", "batch-01", "gone-01", "edge-01",
    ];
    let agents: Vec<crate::watchlist::Agent> = scenario
        .agents
        .iter()
        .zip(names)
        .map(|(a, n)| crate::watchlist::Agent {
            uuid: crate::agent_uuid::AgentUuid::parse(&a.uuid)
                .expect("the bundled scenario's Uuids passed the same check"),
            name: Some(n.to_string()),
        })
        .collect();
    let creds = Credentials {
        secret_id: scenario.secret_id.clone(),
        secret_key: SecretString::from(scenario.secret_key.clone()),
        token: None,
    };
    let sim = RunningSimulator::start(
        SimulatorOptions::new(scenario),
        "127.0.0.1:0".parse().expect("loopback address"),
    )
    .await?;
    println!(
        "cwp-portwatch demo: simulator on {}, {} agents, {} s\n",
        sim.endpoint(),
        agents.len(),
        DURATION.as_secs()
    );
    let client = Client::new(
        ClientOptions {
            endpoint: sim.endpoint().parse().expect("simulator endpoint is a URL"),
            region: None,
            timeout: Duration::from_secs(5),
            max_idle_connections: 8,
        },
        creds,
    )?;
    let collected = Arc::new(CollectingSink::default());
    let sink: Arc<dyn EventSink> = Arc::new(Tee(TracingSink, collected.clone()));
    let config = EngineConfig {
        requests_per_second: 20,
        max_in_flight: 8,
        intervals: Intervals {
            settled: Duration::from_secs(2),
            collecting: Duration::from_secs(1),
            offline: Duration::from_secs(2),
        },
        once: false,
    };
    let engine = Engine::new(client, sink, config, &agents, Default::default());
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(DURATION) => {}
            _ = crate::daemon::stop_signal() => {}
        }
        stop.cancel();
    });
    let (_, report) = engine.run(shutdown).await;
    let stats = sim.stats();
    sim.shutdown().await;
    let changes = collected
        .events()
        .iter()
        .filter(|e| matches!(e, Event::StatusChanged { .. }))
        .count();
    println!(
        "
{:<10} {:<38} {:<18} transitions",
        "agent", "uuid", "final status"
    );
    for a in &report.agents {
        println!(
            "{:<10} {:<38} {:<18} {}",
            a.name, a.uuid, a.status, a.transitions
        );
    }
    println!(
        "\n{} requests sent, {} answered by the simulator ({} throttled), {changes} status changes reported.",
        report.sent, stats.requests, stats.throttled
    );
    Ok(ExitCode::SUCCESS)
}
