//! The expected-ports policy (issue 22): evaluating 10,000 agents × 30 ports against 200 rules,
//! as a reload does (target ≤ 200 ms), and the cost per confirmed snapshot of one agent
//! (evaluate + changes), set beside the daemon's CPU per poll from docs/performance.md
//! (target: ≤ 5 % added per poll).
//!
//! Two policies: *tiered* (each rule selects its tier by tag or name glob, as a real policy
//! does, plus a few rules for every host) and *flat* (all 200 rules select every host: the
//! worst case for the index, every rule's entries are candidates for every port).
//!
//! Run with `cargo bench --bench policy`; `--runs N` (default 9) sets how many times each
//! is measured; the median is printed, with the fastest and slowest.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use cwp_portwatch::policy::{Capabilities, Findings, Host, Policy, PortFacts, changes};

const AGENTS: usize = 10_000;
const PORTS: usize = 30;
const RULES: usize = 200;
const TIERS: usize = 100;

/// The daemon's CPU per status poll, steady state, 2,000 agents (docs/performance.md,
/// "Efficiency (issue 13)", after): what one evaluation is compared with.
const CPU_PER_POLL_US: f64 = 385.0;

const PROCESSES: [&str; 10] = [
    "sshd",
    "nginx",
    "python3",
    "java",
    "node_exporter",
    "postgres",
    "redis-server",
    "chronyd",
    "containerd",
    "dockerd",
];

/// 200 rules: 190 for tiers (by tag, every tenth by name glob too), each allowing six
/// entries (single ports and a range) and requiring one; 10 for every host (monitoring).
fn tiered_policy() -> String {
    let mut text = String::from("default = \"alert\"\n");
    let severities = ["info", "notice", "warning", "critical"];
    for r in 0..RULES - 10 {
        let tier = r % TIERS;
        let hosts = if r % 10 == 0 {
            format!("{{ tags = [\"tier-{tier}\"], names = [\"host-{tier}-*\"] }}")
        } else {
            format!("{{ tags = [\"tier-{tier}\"] }}")
        };
        let base = 1000 + (r * 37) % 50_000;
        text.push_str(&format!(
            "[[rule]]\nname = \"tier {r}\"\nhosts = {hosts}\nseverity = \"{}\"\n\
             allow = [\"22/sshd\", \"{}/nginx\", \"{}/java\", \"{}-{}/python*\", \"{}\", \"{}/redis-*\"]\n\
             require = [\"{}/nginx\"]\n",
            severities[r % 4],
            base,
            base + 1,
            base + 2,
            base + 40,
            base + 50,
            base + 51,
            base,
        ));
    }
    for r in 0..10 {
        text.push_str(&format!(
            "[[rule]]\nname = \"every host {r}\"\nseverity = \"info\"\n\
             allow = [\"9100/node_exporter\", \"323/chronyd\", \"{}/containerd\"]\n",
            40_000 + r
        ));
    }
    text
}

/// 200 rules that all select every host, each with six entries over the same ports.
fn flat_policy() -> String {
    let mut text = String::new();
    for r in 0..RULES {
        let base = 1000 + (r * 37) % 50_000;
        text.push_str(&format!(
            "[[rule]]\nname = \"flat {r}\"\n\
             allow = [\"22/sshd\", \"{}/nginx\", \"{}/java\", \"{}-{}/python*\", \"{}\", \"9100/node_*\"]\n",
            base,
            base + 1,
            base + 2,
            base + 40,
            base + 50,
        ));
    }
    text
}

/// One agent: its facts and its 30 ports.
struct Agent {
    uuid: String,
    name: String,
    tags: Vec<Box<str>>,
    ports: Vec<(u16, &'static str)>,
}

/// 10,000 agents. `stray`: how many of each agent's 30 ports no rule allows (the rest are
/// allowed by its tier's rules or the rules for every host).
fn agents(stray: usize) -> Vec<Agent> {
    (0..AGENTS)
        .map(|i| {
            let tier = i % TIERS;
            // The ports of the tier's first rule (rule index = tier), then others.
            let base = (1000 + (tier * 37) % 50_000) as u16;
            let mut ports: Vec<(u16, &'static str)> = vec![
                (22, "sshd"),
                (base, "nginx"),
                (base + 1, "java"),
                (9100, "node_exporter"),
                (323, "chronyd"),
            ];
            let mut p = 0;
            while ports.len() < PORTS - stray {
                // The tier's python range (base+2 ..= base+40).
                ports.push((base + 2 + (p % 39) as u16, "python3"));
                p += 1;
            }
            while ports.len() < PORTS {
                ports.push((
                    (60_000 + (i * 7 + p * 131) % 5_000) as u16,
                    PROCESSES[(i + p) % PROCESSES.len()],
                ));
                p += 1;
            }
            Agent {
                uuid: format!("00000000-0000-4000-8000-{i:012x}"),
                name: format!("host-{tier}-{i}"),
                tags: vec![format!("tier-{tier}").into(), "prod".into()],
                ports,
            }
        })
        .collect()
}

fn host(agent: &Agent) -> Host<'_> {
    Host {
        uuid: &agent.uuid,
        name: &agent.name,
        account: "default",
        tags: &agent.tags,
        region: "ap-guangzhou",
        wan: false,
    }
}

fn facts<'a>(ports: &'a [(u16, &'static str)]) -> impl Iterator<Item = PortFacts<'static>> + 'a {
    ports.iter().map(|&(port, process)| PortFacts {
        port,
        process,
        proto: None,
        bind_ip: None,
        user: None,
    })
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
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut runs = 9usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        // cargo bench passes --bench; anything but --runs is ignored.
        if arg == "--runs" {
            runs = args
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(runs)
                .max(1);
        }
    }
    let realistic = agents(1);
    let stray = agents(PORTS);
    println!(
        "policy bench: {AGENTS} agents x {PORTS} ports, {RULES} rules, {runs} runs (median, fastest .. slowest)"
    );
    let (tiered, flat) = (tiered_policy(), flat_policy());
    for (label, text, agents) in [
        ("tiered, 1 of 30 ports unexpected", &tiered, &realistic),
        (
            "flat (every rule selects every host), 1 of 30 unexpected",
            &flat,
            &realistic,
        ),
        ("tiered, every port unexpected", &tiered, &stray),
    ] {
        let (load, _, _) = time(runs, || {
            black_box(
                Policy::from_toml_str(text, Path::new("policy.toml"), Capabilities::YUNJING)
                    .expect("the bench policy is valid"),
            );
        });
        let policy = Policy::from_toml_str(text, Path::new("policy.toml"), Capabilities::YUNJING)
            .expect("the bench policy is valid");
        assert_eq!(policy.rule_count(), RULES);
        let mut findings_total = 0;
        let (reload, fastest, slowest) = time(runs, || {
            findings_total = 0;
            for agent in agents.iter() {
                let found = policy.evaluate(&host(agent), facts(&agent.ports));
                findings_total += found.len();
                black_box(found);
            }
        });
        // One confirmed snapshot of one agent: evaluate, then compare with the stored
        // findings (here: the same, the steady state).
        let stored: Vec<Findings> = agents
            .iter()
            .map(|a| policy.evaluate(&host(a), facts(&a.ports)))
            .collect();
        let (per_snapshot_all, _, _) = time(runs, || {
            for (agent, old) in agents.iter().zip(&stored) {
                let new = policy.evaluate(&host(agent), facts(&agent.ports));
                let changed = changes(
                    old,
                    &new,
                    |port, process| agent.ports.contains(&(port, process)),
                    |rule, spec| policy.requires(&host(agent), rule, spec),
                );
                black_box(changed.len());
            }
        });
        let per_snapshot_us = per_snapshot_all.as_secs_f64() * 1e6 / AGENTS as f64;
        println!(
            "{label}:\n  policy load {}\n  reload evaluation {} ({} .. {}), {findings_total} \
             findings (target <= 200 ms: {})\n  per snapshot (evaluate + changes) \
             {per_snapshot_us:.2} µs = {:.2} % of the {CPU_PER_POLL_US} µs CPU per poll \
             (target <= 5 %: {})",
            ms(load),
            ms(reload),
            ms(fastest),
            ms(slowest),
            if reload <= Duration::from_millis(200) {
                "met"
            } else {
                "NOT met"
            },
            per_snapshot_us / CPU_PER_POLL_US * 100.0,
            if per_snapshot_us / CPU_PER_POLL_US <= 0.05 {
                "met"
            } else {
                "NOT met"
            },
        );
    }
}
