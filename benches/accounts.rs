//! Several accounts in one daemon (`[[account]]`, issue 12): 3 accounts × 2,000 agents by
//! default. Prints numbers; asserts nothing.
//!
//! ```text
//! cargo bench --bench accounts -- [--seconds N] [--agents N]
//! PORTWATCH_BENCH_BIN=old/cwp-portwatch cargo bench --bench accounts   # another build
//! ```
//!
//! The simulator runs in this process (the library's `RunningSimulator`, strict sliding
//! 1-second window at 20/s kept per SecretId and action) and knows three SecretIds; the
//! release binary runs `cwp-portwatch run` with the default account (credentials from the
//! environment) and `[[account]]` `alpha` and `beta` (credentials from files), each with its
//! own watchlist of N agents, `[poll] interval = "1s"` so every account always has far more
//! work than quota. After a 3-second warm-up, the simulator's per-account stats are read twice,
//! `--seconds` apart: the rate per account is accepted polls over that time; the strict bound
//! is `max_arrivals_in_window` per account and action (every arrival counted, before the
//! limiter) and `throttled`. CPU is the daemon's `utime + stime` (`/proc/PID/stat`) over the
//! same interval, divided by the polls of all accounts (one process serves them all: per
//! poll it is the same for each account).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cwp_simulator::{
    DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY, RunningSimulator, Scenario, SimulatorOptions,
};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

const ACTION: &str = "DescribeOpenPortTaskStatus";
const WARM_UP: Duration = Duration::from_secs(3);
const TARGET_RATE: f64 = 19.8;
const TARGET_MAX_WINDOW: u32 = 20;
/// (account, SecretId, SecretKey); the default account's are the simulator's test values.
const ACCOUNTS: [(&str, &str, &str); 3] = [
    ("default", DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY),
    (
        "alpha",
        "AKIDcwpportwatchALPHA000000000000000",
        "alphaSimulatorKey000000000000000",
    ),
    (
        "beta",
        "AKIDcwpportwatchBETA0000000000000000",
        "betaSimulatorKey0000000000000000",
    ),
];

struct Options {
    seconds: u64,
    agents: usize,
}

fn main() {
    let mut opts = Options {
        seconds: 20,
        agents: 2_000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--seconds" => opts.seconds = args.next().and_then(|v| v.parse().ok()).unwrap_or(20),
            "--agents" => opts.agents = args.next().and_then(|v| v.parse().ok()).unwrap_or(2_000),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    if let Err(e) = runtime.block_on(run(&opts)) {
        eprintln!("accounts bench failed: {e}");
        std::process::exit(1);
    }
}

fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32 ^ 0x5eed_0000, i)
}

/// Kills the daemon on every path.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').ok_or("bad /proc/PID/stat")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = f.get(12).ok_or("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((utime + stime) as f64 / ticks)
}

/// Per account (by the agent's index: account `a` has agents `a*n..(a+1)*n`), the arrival
/// times of its accepted polls in `[from, to]` (simulator time), from the request log.
fn accepted_times(
    sim: &RunningSimulator,
    n: usize,
    from: Duration,
    to: Duration,
) -> Vec<Vec<Duration>> {
    let mut times = vec![Vec::new(); ACCOUNTS.len()];
    for r in sim.stats().log {
        if r.action != ACTION || r.answer == "RequestLimitExceeded" || r.at < from || r.at > to {
            continue;
        }
        let Some(index) = r
            .uuid
            .as_deref()
            .and_then(|u| u.rsplit('-').next())
            .and_then(|tail| usize::from_str_radix(tail, 16).ok())
        else {
            continue;
        };
        if let Some(t) = times.get_mut(index / n) {
            t.push(r.at);
        }
    }
    times
}

/// Polls per second from the first to the last (the `portwatch` bench's method: no
/// quantization at the edges of the measured interval).
fn rate_of(times: &[Duration]) -> f64 {
    match (times.first(), times.last()) {
        (Some(first), Some(last)) if last > first => {
            (times.len() - 1) as f64 / (*last - *first).as_secs_f64()
        }
        _ => 0.0,
    }
}

/// Accepted polls per account, in [`ACCOUNTS`] order.
fn accepted(sim: &RunningSimulator) -> Vec<u64> {
    let stats = sim.stats();
    ACCOUNTS
        .iter()
        .map(|(_, id, _)| {
            stats
                .per_account
                .get(*id)
                .and_then(|a| a.get(ACTION))
                .map_or(0, |a| a.accepted)
        })
        .collect()
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

async fn run(opts: &Options) -> Result<()> {
    let n = opts.agents;
    let mut scenario = String::new();
    for (name, id, key) in &ACCOUNTS[1..] {
        let _ = name;
        scenario.push_str(&format!(
            "[[credential]]\nsecret_id = \"{id}\"\nsecret_key = \"{key}\"\n"
        ));
    }
    for i in 0..3 * n {
        scenario.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n",
            uuid(i)
        ));
    }
    let sim = RunningSimulator::start(
        SimulatorOptions::new(Scenario::from_toml_str(&scenario)?),
        "127.0.0.1:0".parse()?,
    )
    .await?;
    let dir = tempfile::Builder::new()
        .prefix("cwp-accounts-bench-")
        .tempdir()?;
    let d = dir.path();
    let mut config = format!(
        "watchlist = \"default.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"{}\"\n\
         [poll]\ninterval = \"1s\"\ncollecting_interval = \"1s\"\noffline_interval = \"1s\"\n\
         [log]\nformat = \"json\"\nlevel = \"warn\"\n",
        sim.endpoint()
    );
    for (a, (name, id, key)) in ACCOUNTS.iter().enumerate() {
        let mut w = String::new();
        for i in a * n..(a + 1) * n {
            w.push_str(&format!("[[agent]]\nuuid = \"{}\"\n", uuid(i)));
        }
        std::fs::write(d.join(format!("{name}.toml")), w)?;
        if a > 0 {
            write_private(&d.join(format!("{name}.id")), id)?;
            write_private(&d.join(format!("{name}.key")), key)?;
            config.push_str(&format!(
                "[[account]]\nname = \"{name}\"\nwatchlist = \"{name}.toml\"\n\
                 [account.credentials]\nsource = \"file\"\nsecret_id_file = \"{0}/{name}.id\"\n\
                 secret_key_file = \"{0}/{name}.key\"\n",
                d.display()
            ));
        }
    }
    std::fs::write(d.join("config.toml"), config)?;
    let daemon = Daemon(
        // `PORTWATCH_BENCH_BIN`: another build (before/after comparisons).
        Command::new(
            std::env::var_os("PORTWATCH_BENCH_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_cwp-portwatch").into()),
        )
        .args(["run", "--config"])
        .arg(d.join("config.toml"))
        .env("HOME", d)
        .env("TENCENTCLOUD_SECRET_ID", DEFAULT_SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY)
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(d.join("daemon.err"))?))
        .spawn()?,
    );
    let pid = daemon.0.id();
    tokio::time::sleep(WARM_UP).await;
    let sim_now = || sim.stats().log.last().map_or(Duration::ZERO, |r| r.at);
    let (t0, cpu0, polls0, at0) = (Instant::now(), cpu_seconds(pid)?, accepted(&sim), sim_now());
    tokio::time::sleep(Duration::from_secs(opts.seconds)).await;
    let (t1, cpu1, polls1, at1) = (Instant::now(), cpu_seconds(pid)?, accepted(&sim), sim_now());
    drop(daemon);
    let times = accepted_times(&sim, n, at0, at1);
    let stats = sim.stats();
    let secs = (t1 - t0).as_secs_f64();
    let total: u64 = polls1.iter().zip(&polls0).map(|(b, a)| b - a).sum();
    println!(
        "accounts bench: {} accounts x {n} agents, {secs:.1} s measured after {} s warm-up \
         (req/s: first to last accepted poll of the account in that time)",
        ACCOUNTS.len(),
        WARM_UP.as_secs()
    );
    println!(
        "{:<8} {:>10} {:>10} {:>8} {:>14} {:>10}  target",
        "account", "polls", "in log", "req/s", "max in 1s win", "throttled"
    );
    let mut all_met = true;
    for (a, (name, id, _)) in ACCOUNTS.iter().enumerate() {
        let polls = polls1[a] - polls0[a];
        // Cross-checked: the log's count in the same interval is within a poll or two.
        let rate = rate_of(&times[a]);
        let s = stats
            .per_account
            .get(*id)
            .and_then(|x| x.get(ACTION))
            .cloned()
            .unwrap_or_default();
        let met = rate >= TARGET_RATE
            && s.max_arrivals_in_window <= TARGET_MAX_WINDOW
            && s.throttled == 0;
        all_met &= met;
        println!(
            "{name:<8} {polls:>10} {:>10} {rate:>8.3} {:>14} {:>10}  >= {TARGET_RATE}/s, <= {TARGET_MAX_WINDOW}, 0: {}",
            times[a].len(),
            s.max_arrivals_in_window,
            s.throttled,
            if met { "met" } else { "NOT met" }
        );
        // Every other action of this account too (none is expected in status-only mode).
        if let Some(actions) = stats.per_account.get(*id) {
            for (action, s) in actions.iter().filter(|(k, _)| k.as_str() != ACTION) {
                println!(
                    "         {action}: max in 1s window {}, throttled {}",
                    s.max_arrivals_in_window, s.throttled
                );
            }
        }
    }
    let cpu = cpu1 - cpu0;
    println!(
        "daemon CPU {cpu:.2} s for {total} polls: {:.1} us per poll (each account's polls cost \
         the same), {:.1}% of one core",
        cpu * 1e6 / total.max(1) as f64,
        cpu * 100.0 / secs
    );
    println!("all targets {}", if all_met { "met" } else { "NOT met" });
    sim.shutdown().await;
    Ok(())
}
