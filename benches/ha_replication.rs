//! State replication to etcd at 100,000 agents (issue 25): the first full push (bytes,
//! seconds), the steady state (bytes to etcd per minute), and a takeover's restore (seconds to
//! write the whole state back into an empty `state_dir`, then the new leader's first push).
//!
//! Starts its own etcd (`/usr/bin/etcd`, on 127.0.0.1, data in a temp dir) and writes the
//! files with the daemon's own writers ([`StateFile::write_entries`],
//! [`InventoryFile::write_entries`]). The steady state is 60 simulated seconds, each one a
//! save of what the daemon would have changed in it, then one push (no sleeping: the pushes'
//! own time is measured too):
//! - `state.json` saved every second (a status changes every second: 1% of the agents change
//!   status per minute), with `--polls` (20) agents' entries changed in each save: every
//!   answer moves its agent's `request_id` and `seen_at`, changed or not, and a save writes
//!   them all;
//! - `inventory.json` (`--ports` ports per agent, 10) saved every 2 s (the engine's inventory
//!   save period), with 4 agents' `fetched_at` moved per save and 0.1% of the agents per
//!   minute changing one port;
//! - one sink's outbox: `outbox-ops.json` rewritten and `outbox-ops.journal` appended every
//!   second with that second's events (a healthy sink: the outbox holds only them).
//!
//! Run with `cargo bench --features ha --bench ha_replication` (`-- --agents N --ports N
//! --polls N`).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cwp_portwatch::agent_uuid::AgentUuid;
use cwp_portwatch::ha::{Guard, PushReport, Replicator, restore};
use cwp_portwatch::inventory::store::{InventoryFile, StoredAgent};
use cwp_portwatch::inventory::{Port, Snapshot};
use cwp_portwatch::state::StateFile;
use cwp_portwatch::status::Status;
use cwp_portwatch::tracker::{Known, RequestId};

#[path = "../src/ha/test_etcd.rs"]
mod test_etcd;

const PREFIX: &str = "/cwp-bench";
const NAMES: [&str; 6] = ["sshd", "nginx", "mysqld", "redis-server", "node", "java"];
const START: i64 = 1_765_000_000;

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn uuid(&mut self) -> AgentUuid {
        AgentUuid::from_value((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1)?.parse().ok())
        .unwrap_or(default)
}

fn inventory_agent(i: usize, ports: usize, variant: u32, fetched_at: u64) -> StoredAgent {
    let rows = (0..ports)
        .map(|p| Port {
            port: if p == 0 {
                (20_000 + variant % 40_000) as u16
            } else {
                (1000 + p * 7) as u16
            },
            process: NAMES[(i + p) % NAMES.len()].into(),
            pid: 1000 + (i * 31 + p) as u32 % 60_000,
            cwp: None,
        })
        .collect();
    StoredAgent {
        name: format!("host-{i:06}"),
        fetched_at: Some(fetched_at),
        requested_at: None,
        snapshot: Some(Arc::new(Snapshot::from_rows(
            rows,
            format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
            format!("VM-{i}-ubuntu"),
        ))),
        unconfirmed: Vec::new(),
        findings: Default::default(),
    }
}

fn size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

#[tokio::main]
async fn main() {
    let agents = arg("--agents", 100_000);
    let ports = arg("--ports", 10);
    let polls = arg("--polls", 20);
    let etcd = test_etcd::TestEtcd::new().await;
    let mut client = etcd.client().await;
    let lease = client.lease_grant(600, None).await.expect("lease").id();
    let key = format!("{PREFIX}/leader/{lease:x}").into_bytes();
    let put = etcd_client::PutOptions::new().with_lease(lease);
    client
        .put(key.clone(), "bench", Some(put))
        .await
        .expect("key");
    let guard = Guard { key, lease };

    let dir = tempfile::tempdir().expect("state_dir");
    let d = dir.path();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut state: Vec<(AgentUuid, Known)> = (0..agents)
        .map(|i| {
            let known = Known {
                status: Status::Complete,
                request_id: RequestId::Uuid(rng.uuid()),
                seen_at: START + (i % 5000) as i64,
            };
            (rng.uuid(), known)
        })
        .collect();
    let mut inventory: Vec<(String, StoredAgent)> = state
        .iter()
        .enumerate()
        .map(|(i, (u, _))| (u.to_string(), inventory_agent(i, ports, 0, START as u64)))
        .collect();
    let state_file = StateFile::in_dir(d);
    let inventory_file = InventoryFile::in_dir(d);
    state_file.write_entries(&state).expect("state.json");
    inventory_file
        .write_entries(&inventory)
        .expect("inventory.json");
    let event = |i: usize, s: i64| {
        format!(
            "{{\"seq\":{i},\"event\":\"status_changed\",\"agent_uuid\":\"{}\",\"from\":\"COMPLETE\",\"to\":\"AGENT_OFFLINE\",\"at\":{s},\"account\":\"default\"}}\n",
            AgentUuid::from_value(i as u128)
        )
    };
    std::fs::write(
        d.join("outbox-ops.json"),
        "{\"version\":1,\"next_seq\":0,\"records\":[]}\n",
    )
    .expect("outbox");
    std::fs::write(d.join("outbox-ops.journal"), "").expect("journal");
    let total = size(d);
    println!(
        "state_dir: {agents} agents, {ports} ports each: {} (state.json {}, inventory.json {})",
        mb(total),
        mb(std::fs::metadata(state_file.path()).unwrap().len()),
        mb(std::fs::metadata(inventory_file.path()).unwrap().len()),
    );
    let db = |s: etcd_client::StatusResponse| s.db_size() as u64;
    let db_before = db(client.status().await.expect("status"));

    // The first full push.
    let mut leader = Replicator::new(client.clone(), PREFIX, guard.clone(), d);
    let t = Instant::now();
    let first = leader.push().await.expect("first push");
    let first_time = t.elapsed();
    println!(
        "first full push: {} in {} chunks and {} list pieces, {} files, {:.2} s",
        mb(first.bytes),
        first.chunks,
        first.lists,
        first.files,
        first_time.as_secs_f64()
    );

    // 60 seconds of steady state.
    let mut minute = PushReport::default();
    let mut push_time = Duration::ZERO;
    let mut slowest = Duration::ZERO;
    let mut seq = 0usize;
    let (mut status_changes, mut port_changes) = (0usize, 0usize);
    let status_per_second = agents / 100 / 60; // 1% per minute
    let ports_per_2s = (agents / 1000 / 30).max(1); // 0.1% per minute, saved every 2 s
    for second in 1..=60i64 {
        let now = START + 5000 + second;
        let mut journal = String::new();
        for p in 0..polls {
            let i = rng.below(agents);
            let known = &mut state[i].1;
            known.request_id = RequestId::Uuid(rng.uuid());
            known.seen_at = now;
            if p < status_per_second {
                known.status = if known.status == Status::Complete {
                    Status::new("AGENT_OFFLINE")
                } else {
                    Status::Complete
                };
                status_changes += 1;
                journal.push_str(&event(seq, now));
                seq += 1;
            }
        }
        state_file.write_entries(&state).expect("state.json");
        if second % 2 == 0 {
            for k in 0..4 {
                let i = rng.below(agents);
                let variant = if k < ports_per_2s {
                    port_changes += 1;
                    rng.next() as u32
                } else {
                    0
                };
                inventory[i].1 = inventory_agent(i, ports, variant, now as u64);
            }
            inventory_file
                .write_entries(&inventory)
                .expect("inventory.json");
        }
        std::fs::write(
            d.join("outbox-ops.json"),
            format!(
                "{{\"version\":1,\"next_seq\":{seq},\"records\":[{}]}}\n",
                journal.trim_end().replace('\n', ",")
            ),
        )
        .expect("outbox");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.join("outbox-ops.journal"))
            .expect("journal");
        std::io::Write::write_all(&mut f, journal.as_bytes()).expect("journal");

        let t = Instant::now();
        let r = leader.push().await.expect("push");
        let took = t.elapsed();
        push_time += took;
        slowest = slowest.max(took);
        minute.files += r.files;
        minute.chunks += r.chunks;
        minute.lists += r.lists;
        minute.deleted += r.deleted;
        minute.bytes += r.bytes;
    }
    let db_after = db(client.status().await.expect("status"));
    println!(
        "steady state, 60 saves of state.json ({polls} entries each, {status_changes} status \
         changes), 30 of inventory.json (4 entries each, {port_changes} port changes), 60 of \
         the outbox and journal:"
    );
    println!(
        "  bytes to etcd per minute: {} ({} chunks and {} list pieces written, {} deleted, {} \
         file versions)",
        mb(minute.bytes),
        minute.chunks,
        minute.lists,
        minute.deleted,
        minute.files
    );
    println!(
        "  push time: {:.1} ms mean, {:.1} ms slowest (read + hash + chunk + etcd)",
        push_time.as_secs_f64() * 1e3 / 60.0,
        slowest.as_secs_f64() * 1e3
    );
    println!(
        "  etcd database: {} before the first push, {} after the minute (history kept until \
         etcd compacts)",
        mb(db_before),
        mb(db_after)
    );

    // A takeover: restore into an empty state_dir, then the new leader's first push.
    let to = tempfile::tempdir().expect("new state_dir");
    let t = Instant::now();
    let restored = restore(&mut client, PREFIX, to.path())
        .await
        .expect("restore");
    let restore_time = t.elapsed();
    println!(
        "takeover: restore of {} files, {} in {:.2} s",
        restored.files,
        mb(restored.bytes),
        restore_time.as_secs_f64()
    );
    for name in ["state.json", "inventory.json", "outbox-ops.json"] {
        assert_eq!(
            std::fs::read(d.join(name)).expect("source"),
            std::fs::read(to.path().join(name)).expect("restored"),
            "{name} restored differs"
        );
    }
    let mut next = Replicator::new(client.clone(), PREFIX, guard, to.path());
    let t = Instant::now();
    let again = next.push().await.expect("first push of the new leader");
    println!(
        "  the new leader's first push (lists etcd, reads and hashes every file): {} in {:.2} s",
        mb(again.bytes),
        t.elapsed().as_secs_f64()
    );
}
