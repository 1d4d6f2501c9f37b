//! Memory of the open-port inventory: 10,000 agents × 30 ports each, inventory on, the
//! inventory file written to a temporary `state_dir`; prints the peak RSS (`VmHWM`) against
//! the 64 MB target of issue 10.
//!
//! In-process, under tokio's paused clock: the real engine, lanes, page assembly, snapshot
//! store and saver, with a fake API that answers at once (every agent `COMPLETE`, its 30 ports
//! generated on the fly, so the fake holds no copy). Paused time lets the 10,000 first
//! fetches that take 500 s at 20 requests/s finish in seconds of wall time; memory does not
//! depend on the clock. Run with `cargo bench --bench inventory_memory`; options:
//! `--agents N`, `--ports N`.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cwp_portwatch::api::{ApiError, TaskStatus};
use cwp_portwatch::engine::{Engine, EngineConfig, InventoryOptions, Poller};
use cwp_portwatch::events::{Event, EventSink};
use cwp_portwatch::inventory::store::InventoryFile;
use cwp_portwatch::inventory::{Baseline, Page, Port};
use cwp_portwatch::scheduler::Intervals;
use cwp_portwatch::watchlist::Watchlist;

/// Every agent COMPLETE, with `ports` ports named like real services.
#[derive(Clone)]
struct Fake {
    ports: u32,
}

impl Poller for Fake {
    async fn poll(&self, _uuid: &str) -> Result<TaskStatus, ApiError> {
        Ok(TaskStatus {
            status: "COMPLETE".into(),
            request_id: "5b0a1c9e-0000-4000-8000-000000000000".into(),
        })
    }

    fn describe_ports(
        &self,
        _uuid: &str,
        limit: u32,
        offset: u32,
    ) -> impl Future<Output = Result<Page, ApiError>> + Send {
        const NAMES: [&str; 6] = ["sshd", "nginx", "mysqld", "redis-server", "node", "java"];
        let end = (offset + limit).min(self.ports);
        let rows = (offset..end)
            .map(|i| Port {
                port: 1000 + i as u16,
                process: NAMES[i as usize % NAMES.len()].into(),
                pid: 1000 + i,
                cwp: None,
            })
            .collect();
        let total = u64::from(self.ports);
        async move {
            Ok(Page {
                total,
                rows,
                ids: Vec::new(),
                machine_ip: "10.0.12.34".into(),
                machine_name: "VM-12-34-ubuntu".into(),
                request_id: "5b0a1c9e-0000-4000-8000-000000000001".into(),
            })
        }
    }
}

/// Counts events instead of keeping them.
#[derive(Default)]
struct Count {
    baselines: AtomicUsize,
    other: AtomicUsize,
}

impl EventSink for Count {
    fn emit(&self, event: &Event) {
        match event {
            Event::InventoryBaseline { .. } => self.baselines.fetch_add(1, Ordering::Relaxed),
            _ => self.other.fetch_add(1, Ordering::Relaxed),
        };
    }
}

fn arg(name: &str, default: u32) -> u32 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let agents = arg("--agents", 10_000) as usize;
    let ports = arg("--ports", 30);
    let text: String = (0..agents)
        .map(|i| {
            format!(
                "[[agent]]\nuuid = \"00000000-0000-4000-8000-{i:012x}\"\nname = \"host-{i:05}\"\n"
            )
        })
        .collect();
    let watchlist = Watchlist::from_toml_str(&text, std::path::Path::new("w.toml"))
        .expect("generated watchlist parses");
    drop(text);
    let dir = tempfile::tempdir().expect("a temporary state_dir");
    let file = InventoryFile::in_dir(dir.path());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    let sink = Arc::new(Count::default());
    let before_kb = status_kb("VmRSS:");
    let started = std::time::Instant::now();
    let (stored_agents, stored_ports) = runtime.block_on(async {
        let config = EngineConfig {
            requests_per_second: 20,
            max_in_flight: 32,
            intervals: Intervals {
                settled: Duration::from_secs(60),
                collecting: Duration::from_secs(5),
                offline: Duration::from_secs(30),
            },
            once: false,
        };
        let options = InventoryOptions {
            enabled: true,
            rescan_interval: Duration::ZERO,
            create_missing: false,
            baseline: Baseline::Summary,
            action_rates: [20; 5],
            action_in_flight: [32; 5],
        };
        let engine = Engine::new(
            Fake { ports },
            sink.clone(),
            config,
            &watchlist.agents,
            Default::default(),
        )
        .with_inventory(options, Default::default(), Some(file.clone()));
        drop(watchlist);
        let stop = tokio_util::sync::CancellationToken::new();
        let stopper = stop.clone();
        // Every agent's first fetch at 20 pages/s (one page each at 30 ports), with margin.
        let run_for = Duration::from_secs(agents as u64 / 20 + 120);
        tokio::spawn(async move {
            tokio::time::sleep(run_for).await;
            stopper.cancel();
        });
        let (engine, _) = engine.run(stop).await;
        let stored = engine.stored_inventory().expect("inventory kept");
        let n = stored.values().filter(|a| a.snapshot.is_some()).count();
        let p = stored
            .values()
            .filter_map(|a| a.snapshot.as_ref())
            .map(|s| s.ports.len())
            .sum::<usize>();
        (n, p)
    });
    let file_bytes = std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0);
    let hwm_mb = status_kb("VmHWM:") as f64 / 1024.0;
    println!("inventory memory: {agents} agents x {ports} ports, inventory on");
    println!(
        "  snapshots stored: {stored_agents} agents, {stored_ports} ports; baselines {}; \
         inventory.json {:.1} MB; wall time {:.1} s",
        sink.baselines.load(Ordering::Relaxed),
        file_bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  VmRSS before the engine {:.1} MB; VmHWM (peak) {hwm_mb:.1} MB (target <= 64 MB: {})",
        before_kb as f64 / 1024.0,
        if hwm_mb <= 64.0 { "met" } else { "NOT met" }
    );
    assert_eq!(stored_agents, agents, "every agent's inventory fetched");
}
