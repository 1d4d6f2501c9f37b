//! `cwp-portwatch demo`: the newcomer's first run. Starts the simulator on loopback with the
//! bundled scenario (`config/demo-scenario.toml`), runs the real engine and client against it
//! with readable output, and ends by itself with a summary table. No credentials, no network.

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use crate::api::{Client, ClientOptions};
use crate::config::LogFormat;
use crate::credentials::Credentials;
use crate::engine::{Engine, EngineConfig, EngineReport};
use crate::escape::Escaped;
use crate::events::{CollectingSink, Event, EventSink, Tee, TracingSink};
use crate::logging;
use crate::scheduler::Intervals;
use crate::shutdown::{self, Shutdown};
use cwp_simulator::{RunningSimulator, Scenario, SimStats, SimulatorOptions};

use super::output;

/// The bundled scenario.
pub const SCENARIO: &str = include_str!("../../config/demo-scenario.toml");
/// The bundled policy: ssh and nginx only on the web hosts.
pub const POLICY: &str = include_str!("../../config/demo-policy.toml");
/// How long the demo runs: the scenario's last change is at 20 s.
pub const DURATION: Duration = Duration::from_secs(26);

/// Errors of the demo. The cause is the source, printed by `main` after the message; a
/// variant that only wraps is its cause.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The bundled scenario does not parse (a build defect).
    #[error("the bundled demo scenario does not parse")]
    Scenario(#[source] cwp_simulator::ScenarioError),
    /// The bundled policy does not parse (a build defect).
    #[error("the bundled demo policy does not parse")]
    Policy(#[source] crate::config::ConfigErrors),
    /// The simulator could not listen on loopback.
    #[error("cannot start the simulator on loopback")]
    Listen(#[source] io::Error),
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] crate::api::client::ClientBuildError),
    /// Stdout failed for another reason than its reader going away.
    #[error("cannot write to stdout")]
    Output(#[source] io::Error),
}

/// Runs the demo.
pub async fn run() -> Result<ExitCode, DemoError> {
    let _ = logging::init_with_filter(
        LogFormat::Text,
        tracing_subscriber::EnvFilter::new("warn,cwp_portwatch=info,cwp_portwatch::simulator=warn"),
    );
    let scenario = Scenario::from_toml_str(SCENARIO).map_err(DemoError::Scenario)?;
    let policy = crate::policy::Policy::from_toml_str(
        POLICY,
        std::path::Path::new("config/demo-policy.toml"),
        crate::policy::Capabilities::YUNJING,
    )
    .map_err(DemoError::Policy)?;
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
            facts: None,
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
    .await
    .map_err(DemoError::Listen)?;
    output::stdout(|out| {
        writeln!(
            out,
            "cwp-portwatch demo: simulator on {}, {} agents, {} s\n",
            sim.endpoint(),
            agents.len(),
            DURATION.as_secs()
        )
    })
    .map_err(DemoError::Output)?;
    let client = Client::new(
        ClientOptions {
            endpoint: sim.endpoint().parse().expect("simulator endpoint is a URL"),
            region: None,
            timeout: Duration::from_secs(5),
            // Three lanes of 8 in flight each (`action_in_flight` below).
            max_idle_connections: 24,
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
    // The inventory on, so the demo shows ports opening and closing (nothing is saved).
    let inventory = crate::engine::InventoryOptions {
        enabled: true,
        rescan_interval: Duration::ZERO,
        create_missing: false,
        baseline: crate::inventory::Baseline::Summary,
        action_rates: [20; 5],
        action_in_flight: [8; 5],
    };
    // The policy before the inventory, as the daemon does.
    let engine = Engine::new(client, sink, config, &agents, Default::default())
        .with_policy(Some(Arc::new(policy)), crate::config::DEFAULT_ACCOUNT)
        .with_inventory(inventory, Default::default(), None);
    let shutdown = Shutdown::new();
    shutdown.cancel_on_stop_signals();
    let token = shutdown.token();
    shutdown.spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(DURATION) => token.cancel(),
            _ = token.cancelled() => {}
        }
    });
    let (engine, mut report) = engine.run(shutdown.token()).await;
    // The demo's summary lists every agent, as `once` does.
    report.agents = engine.agent_reports();
    shutdown.finish(shutdown::GRACE).await;
    let stats = sim.stats();
    sim.shutdown().await;
    let events = collected.events();
    let changes = events
        .iter()
        .filter(|e| matches!(e, Event::StatusChanged { .. }))
        .count();
    let port_changes = events
        .iter()
        .filter(|e| matches!(e, Event::PortOpened { .. } | Event::PortClosed { .. }))
        .count();
    let (flagged, cleared) = events.iter().fold((0, 0), |(f, c), e| match e {
        Event::Finding(f_) if f_.reason().is_some() => (f, c + 1),
        Event::Finding(_) => (f + 1, c),
        _ => (f, c),
    });
    output::stdout(|out| {
        print_summary(
            out,
            &report,
            &stats,
            (changes, port_changes),
            (flagged, cleared),
        )
    })
    .map_err(DemoError::Output)?;
    Ok(ExitCode::SUCCESS)
}

fn print_summary(
    out: &mut dyn Write,
    report: &EngineReport,
    stats: &SimStats,
    (changes, port_changes): (usize, usize),
    (flagged, cleared): (usize, usize),
) -> io::Result<()> {
    writeln!(
        out,
        "\n{:<10} {:<38} {:<18} transitions",
        "agent", "uuid", "final status"
    )?;
    for a in &report.agents {
        writeln!(
            out,
            "{:<10} {:<38} {:<18} {}",
            Escaped(&a.name),
            Escaped(&a.uuid),
            Escaped(&a.status),
            a.transitions
        )?;
    }
    writeln!(
        out,
        "\nPolicy (config/demo-policy.toml): {flagged} unexpected port(s) flagged, {cleared} \
         cleared."
    )?;
    writeln!(
        out,
        "{} requests sent, {} answered by the simulator ({} throttled), {changes} status changes \
         and {port_changes} ports opened or closed reported.",
        report.sent, stats.requests, stats.throttled
    )
}
