//! End-to-end throughput, CPU and memory benchmark (issue 3). Prints numbers; asserts nothing.
//!
//! ```text
//! cargo bench --bench portwatch -- [rate|latency|cpu|rss|all]... [--seconds N]
//! ```
//!
//! Every scenario runs the real release binary twice, as two processes:
//!
//! ```text
//! daemon  (cwp-portwatch run --config C)  --HTTP-->  bench proxy  --HTTP-->  simulator
//!                                                     (this process)    (cwp-portwatch simulate)
//! ```
//!
//! - The simulator is `cwp-portwatch simulate --listen 127.0.0.1:0 --scenario S [--latency 1s]`
//!   with a generated scenario (every agent answers `COMPLETE` from 0 s). Its stats line at stop
//!   (`stopped after N requests (X ok, Y throttled)`) gives the authoritative request and
//!   throttled counts. Its limiter is the strict sliding 1-second window at 20/s, so
//!   `throttled = 0` also means it never saw more than 20 requests in any 1-second window.
//! - `simulate` logs one structured line per request on stderr (JSON lines here, stderr being
//!   `simulator.err` in the temporary folder: action, uuid, answer, request_id, latency_ms).
//!   Those lines are stamped when written, after the answer, to the millisecond, and the stats
//!   line has no timing, so request times come from a pass-through TCP proxy in this process:
//!   it frames the HTTP/1.1 requests on each connection and stamps the moment a request head
//!   is complete, just before forwarding it on loopback (the simulator stamps its own arrival
//!   time at the same point, microseconds later). The proxy count is cross-checked against the
//!   simulator's count. When the stats line carries `max_in_window=K`, that value is printed as
//!   well.
//! - The daemon is `cwp-portwatch run --config C`, credentials from the environment
//!   (`TENCENTCLOUD_SECRET_ID/KEY` = the simulator's documented test values, `[credentials]
//!   source = "env"`), `[poll] interval = "1s"` so there is always more work than quota, state
//!   and logs in a temporary folder. Its CPU time (`utime + stime` in `/proc/PID/stat`) and
//!   memory (`VmHWM`, `VmRSS` in `/proc/PID/status`) are read just before SIGTERM.
//!
//! Child processes are SIGTERMed and reaped on every path, errors and panics included.
//!
//! Files: this one parses the arguments and runs the chosen scenarios in order; one file per
//! scenario (`rate.rs` for `rate` and `cpu`, `latency.rs`, `rss.rs`, `ratio.rs`, `detect.rs`);
//! `harness.rs` runs one setup (simulator, proxy, daemon phases, generated files),
//! `proxy.rs` is the timing proxy, `processes.rs` the child processes and their `/proc` figures.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Result<T, E = BoxError> = std::result::Result<T, E>;

/// The simulator's documented test credentials (not secrets).
const SECRET_ID: &str = "AKIDcwpportwatchSIMULATOR000000000000";
const SECRET_KEY: &str = "cwpportwatchSimulatorSecretKey00";

/// Steady-state figures leave out this much after the first request.
const WARMUP: Duration = Duration::from_secs(3);

mod detect;
mod harness;
mod latency;
mod processes;
mod proxy;
mod rate;
mod ratio;
mod rss;
mod scale;

use detect::*;
use harness::*;
use processes::*;
use proxy::*;
use ratio::*;

fn main() {
    // The floor client re-runs this executable in its own process (its CPU is read from
    // /proc like the daemon's).
    let mut args = std::env::args().skip(1);
    let first = args.next();
    let child = match first.as_deref() {
        Some(FLOOR_ARG) => Some(("floor client", floor_client(args))),
        Some(scale::SIM_ARG) => Some(("scale simulator", scale::scale_simulator(args))),
        Some(scale::FLOOR_ARG_SCALE) => Some(("scale floor client", scale::scale_floor(args))),
        _ => None,
    };
    if let Some((name, result)) = child {
        if let Err(e) = result {
            eprintln!("{name}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let opts = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            eprintln!(
                "usage: cargo bench --bench portwatch -- [rate|latency|cpu|rss|ratio|detect|all|scale]... \
                 [--seconds N] [--agents N] [--rounds N] [--pair] [--accounts N] [--log-level L] [--no-floor]"
            );
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&opts) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

#[derive(Debug, Default)]
struct Options {
    rate: bool,
    latency: bool,
    cpu: bool,
    rss: bool,
    /// Issue 13: daemon vs floor client vs Python SDK, side by side, CPU per poll.
    ratio: bool,
    /// Issue 13: detection latency at 10,000 agents.
    detect: bool,
    /// `--agents N` for `ratio` (default 2,000).
    agents: Option<usize>,
    /// `--rounds N` for `ratio` (default 3).
    rounds: Option<usize>,
    /// `--pair`: `ratio` runs only the daemon and the floor client (no first pass, no
    /// Python), for quick comparisons while optimising.
    pair: bool,
    /// `--seconds N`: length of every run (default 30 s; 20 s for `rss`).
    seconds: Option<u64>,
    /// Issue 27: 50 accounts × 3 lanes at full quota, daemon vs floor (not in `all`).
    scale: bool,
    /// `--accounts N` for `scale` (default 50).
    accounts: Option<usize>,
    /// `--log-level L` of the daemon in `scale` (default `info`).
    log_level: Option<String>,
    /// `--no-floor`: `scale` without the floor client (profiling).
    no_floor: bool,
}

impl Options {
    fn parse(args: impl Iterator<Item = String>) -> Result<Options> {
        let mut o = Options::default();
        let mut any = false;
        let mut args = args.peekable();
        while let Some(a) = args.next() {
            match a.as_str() {
                // cargo passes `--bench` to harness = false targets.
                "--bench" => {}
                "--seconds" => {
                    let v = args.next().ok_or("--seconds needs a value")?;
                    o.seconds = Some(parse_seconds(&v)?);
                }
                s if s.starts_with("--seconds=") => {
                    o.seconds = Some(parse_seconds(&s["--seconds=".len()..])?);
                }
                "rate" => (o.rate, any) = (true, true),
                "latency" => (o.latency, any) = (true, true),
                "cpu" => (o.cpu, any) = (true, true),
                "rss" => (o.rss, any) = (true, true),
                "ratio" => (o.ratio, any) = (true, true),
                "detect" => (o.detect, any) = (true, true),
                "--pair" => o.pair = true,
                "--no-floor" => o.no_floor = true,
                "scale" => (o.scale, any) = (true, true),
                "--accounts" => {
                    let v = args.next().ok_or("--accounts needs a value")?;
                    o.accounts = Some(
                        v.parse()
                            .map_err(|_| format!("--accounts {v:?}: a number"))?,
                    );
                }
                "--log-level" => {
                    o.log_level = Some(args.next().ok_or("--log-level needs a value")?);
                }
                "--rounds" => {
                    let v = args.next().ok_or("--rounds needs a value")?;
                    o.rounds = Some(v.parse().map_err(|_| format!("--rounds {v:?}: a number"))?);
                }
                "--agents" => {
                    let v = args.next().ok_or("--agents needs a value")?;
                    o.agents = Some(v.parse().map_err(|_| format!("--agents {v:?}: a number"))?);
                }
                "all" => {
                    (o.rate, o.latency, o.cpu, o.rss) = (true, true, true, true);
                    (o.ratio, o.detect) = (true, true);
                    any = true;
                }
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        if !any {
            (o.rate, o.latency, o.cpu, o.rss) = (true, true, true, true);
            (o.ratio, o.detect) = (true, true);
        }
        Ok(o)
    }
}

fn parse_seconds(v: &str) -> Result<u64> {
    match v.parse::<u64>() {
        Ok(n) if n >= 2 => Ok(n),
        _ => Err(format!("--seconds {v:?}: write a whole number of seconds, at least 2").into()),
    }
}

fn run(opts: &Options) -> Result<()> {
    let bin = binary()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    println!("binary: {}", bin.display());
    println!(
        "machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );
    let secs = |default: u64| Duration::from_secs(opts.seconds.unwrap_or(default));
    let mut summary = Vec::new();

    // `rate` and `cpu` measure the same run.
    if opts.rate || opts.cpu {
        rate::rate_and_cpu(&runtime, &bin, opts, &mut summary)?;
    }
    if opts.latency {
        latency::latency(&runtime, &bin, opts, &mut summary)?;
    }
    if opts.rss {
        rss::rss(&runtime, &bin, opts, &mut summary)?;
    }
    if opts.ratio {
        ratio(&runtime, &bin, opts, &mut summary)?;
    }
    if opts.detect {
        detect(&runtime, &bin, secs(150), &mut summary)?;
    }
    if opts.scale {
        scale::scale(
            &bin,
            &scale::ScaleOptions {
                accounts: opts.accounts.unwrap_or(50),
                agents: opts.agents.unwrap_or(2_000),
                seconds: opts.seconds.unwrap_or(30),
                rounds: opts.rounds.unwrap_or(1),
                log_level: opts.log_level.clone().unwrap_or_else(|| "info".into()),
                no_floor: opts.no_floor,
            },
            &mut summary,
        )?;
    }

    println!();
    println!("| measurement | value | target | met |");
    println!("|---|---|---|---|");
    for line in &summary {
        println!("{line}");
    }
    Ok(())
}

fn row(what: &str, value: String, target: String, met: bool) -> String {
    let met = if target == "-" {
        "-"
    } else if met {
        "yes"
    } else {
        "NO"
    };
    format!("| {what} | {value} | {target} | {met} |")
}
