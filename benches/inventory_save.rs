//! Saving the inventory file (issue 20, item 12): for 10,000 agents × 30 ports and for one
//! agent × 20,000 ports, the time the dispatcher's thread spends per save (the copy it takes,
//! [`save_copy`]) and the time of the save itself on the blocking thread (encoding streamed
//! into the temp file, fsync, rename: [`InventoryFile::write_entries`]), with the file's size.
//! For comparison, the time the dispatcher spent before: encoding the whole file to memory.
//!
//! Run with `cargo bench --bench inventory_save`; `--runs N` (default 9) sets how many times
//! each is measured; the median is printed, with the fastest and slowest.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cwp_portwatch::inventory::store::{InventoryFile, InventoryMap, StoredAgent, save_copy};
use cwp_portwatch::inventory::{Port, Snapshot};

const NAMES: [&str; 6] = ["sshd", "nginx", "mysqld", "redis-server", "node", "java"];

fn map(agents: usize, ports: u32) -> InventoryMap {
    (0..agents)
        .map(|i| {
            let rows = (0..ports)
                .map(|p| Port {
                    port: (1000 + p % 64_000) as u16,
                    process: format!("{}-{}", NAMES[p as usize % NAMES.len()], p / 64_000).into(),
                    pid: 1000 + p,
                    cwp: None,
                })
                .collect();
            let agent = StoredAgent {
                name: format!("host-{i:05}"),
                fetched_at: Some(1_765_000_000),
                requested_at: None,
                snapshot: Some(Arc::new(Snapshot::from_rows(
                    rows,
                    "10.0.12.34".into(),
                    "VM-12-34-ubuntu".into(),
                ))),
                unconfirmed: Vec::new(),
                findings: Default::default(),
            };
            (format!("00000000-0000-4000-8000-{i:012x}"), agent)
        })
        .collect()
}

/// Median, fastest and slowest of `runs` timings of `f`.
fn time(runs: usize, mut f: impl FnMut()) -> (Duration, Duration, Duration) {
    let mut all: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    all.sort();
    (all[all.len() / 2], all[0], all[all.len() - 1])
}

fn ms(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{:.1} µs", d.as_secs_f64() * 1e6)
    } else {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }
}

/// The file as the dispatcher encoded it before (`serde_json::to_vec` of the whole map).
#[derive(serde::Serialize)]
struct Before<'a> {
    version: u32,
    agents: &'a InventoryMap,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs = args
        .iter()
        .position(|a| a == "--runs")
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(9usize)
        .max(1);
    let dir = tempfile::tempdir().expect("a temporary state_dir");
    let file = InventoryFile::in_dir(dir.path());
    println!("inventory file save, median of {runs} (fastest .. slowest)");
    for (agents, ports) in [(10_000usize, 30u32), (1, 20_000)] {
        let map = map(agents, ports);
        let (copy, copy_min, copy_max) = time(runs, || {
            std::hint::black_box(save_copy(&[&map]));
        });
        let entries = save_copy(&[&map]);
        let (save, save_min, save_max) = time(runs, || {
            file.write_entries(&entries).expect("saved");
        });
        let (before, _, _) = time(runs, || {
            std::hint::black_box(serde_json::to_vec(&Before {
                version: 1,
                agents: &map,
            }))
            .ok();
        });
        let bytes = std::fs::metadata(file.path()).map(|m| m.len()).unwrap_or(0);
        assert_eq!(file.load().expect("read back").len(), agents);
        println!(
            "{agents} agents x {ports} ports: inventory.json {:.1} MB",
            bytes as f64 / 1e6
        );
        println!(
            "  dispatcher thread per save (save_copy): {} ({} .. {})",
            ms(copy),
            ms(copy_min),
            ms(copy_max)
        );
        println!(
            "  save on the blocking thread (stream-encode + fsync + rename): {} ({} .. {})",
            ms(save),
            ms(save_min),
            ms(save_max)
        );
        println!(
            "  before: encoded whole on the dispatcher thread: {}",
            ms(before)
        );
    }
}
