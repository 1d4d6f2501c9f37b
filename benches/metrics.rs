//! What `[metrics] per_agent` costs at 100,000 agents: scrape time, scrape size and the
//! daemon's memory, with and without it (docs/metrics.md). Prints numbers; asserts nothing.
//!
//! ```text
//! cargo bench --bench metrics [-- --agents N --scrapes K]
//! ```
//!
//! For each setting, the real release binary runs `cwp-portwatch run` with a watchlist of N
//! agents and a state file that knows all of them as `COMPLETE` (what a long-running daemon
//! restarts with, so every `agent_status` series exists from the start without polling for
//! N / 20 seconds). The API endpoint is a loopback port nobody listens on: polls fail at once,
//! paced at 20/s as ever, and change no status. Once `agents{status="COMPLETE"}` reads N,
//! K scrapes of `GET /metrics` are timed one after another (connection, answer and reading
//! the whole body), and `VmRSS` / `VmHWM` are read from `/proc/PID/status` before the first
//! and after the last.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<()> {
    let mut agents = 100_000usize;
    let mut scrapes = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--agents" => agents = args.next().ok_or("--agents N")?.parse()?,
            "--scrapes" => scrapes = args.next().ok_or("--scrapes K")?.parse::<usize>()?.max(1),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    println!("metrics bench: {agents} agents, {scrapes} scrapes each, release binary");
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>10} {:>14} {:>13} {:>13}",
        "per_agent",
        "scrape p50",
        "scrape max",
        "bytes",
        "series",
        "RSS before",
        "RSS after",
        "VmHWM"
    );
    for per_agent in [false, true] {
        let r = measure(agents, scrapes, per_agent)?;
        println!(
            "{:<10} {:>9.1} ms {:>9.1} ms {:>12} {:>10} {:>11} MiB {:>10} MiB {:>10} MiB",
            per_agent,
            r.p50.as_secs_f64() * 1e3,
            r.max.as_secs_f64() * 1e3,
            r.bytes,
            r.series,
            r.rss_before_kb / 1024,
            r.rss_after_kb / 1024,
            r.hwm_kb / 1024
        );
    }
    Ok(())
}

struct Measured {
    p50: Duration,
    max: Duration,
    bytes: usize,
    series: usize,
    rss_before_kb: u64,
    rss_after_kb: u64,
    hwm_kb: u64,
}

/// A child killed and reaped on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn uuid(i: usize) -> String {
    format!("{:08x}-0000-4000-8000-{:012x}", i as u32 ^ 0x5eed_0000, i)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn write_files(dir: &Path, agents: usize, per_agent: bool, port: u16) -> Result<()> {
    let mut watchlist = String::with_capacity(agents * 80);
    let mut state = String::with_capacity(agents * 110);
    state.push_str("{\"version\":1,\"agents\":{");
    for i in 0..agents {
        let u = uuid(i);
        let _ = write!(
            watchlist,
            "[[agent]]\nuuid = \"{u}\"\nname = \"bench-{i:06}\"\n"
        );
        if i > 0 {
            state.push(',');
        }
        let _ = write!(
            state,
            "\"{u}\":{{\"status\":\"COMPLETE\",\"seen_at\":1700000000,\"request_id\":\"r{i}\"}}"
        );
    }
    state.push_str("}}\n");
    std::fs::create_dir_all(dir.join("state"))?;
    std::fs::write(dir.join("watchlist.toml"), watchlist)?;
    std::fs::write(dir.join("state/state.json"), state)?;
    std::fs::write(
        dir.join("config.toml"),
        format!(
            "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\n\
             endpoint = \"http://127.0.0.1:9\"\ntimeout = \"1s\"\n[credentials]\nsource = \"env\"\n\
             [log]\nformat = \"json\"\nlevel = \"error\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\nper_agent = {per_agent}\n"
        ),
    )?;
    Ok(())
}

/// One `GET path`, the whole body read: (status line, body).
fn get(port: u16, path: &str) -> Result<(String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8(raw)?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no HTTP head")?;
    Ok((
        head.lines().next().unwrap_or("").to_owned(),
        body.to_owned(),
    ))
}

fn memory_kb(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((kb("VmRSS:"), kb("VmHWM:")))
}

fn measure(agents: usize, scrapes: usize, per_agent: bool) -> Result<Measured> {
    let dir = tempfile::tempdir()?;
    let port = free_port()?;
    write_files(dir.path(), agents, per_agent, port)?;
    let child = Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"))
        .args(["run", "--config"])
        .arg(dir.path().join("config.toml"))
        .env("HOME", dir.path())
        .env(
            "TENCENTCLOUD_SECRET_ID",
            "AKIDcwpportwatchSIMULATOR000000000000",
        )
        .env(
            "TENCENTCLOUD_SECRET_KEY",
            "cwpportwatchSimulatorSecretKey00",
        )
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.log"))?)
        .spawn()?;
    let daemon = Daemon(child);
    let pid = daemon.0.id();
    // Ready when the gauges have counted every agent (the first refresh after start).
    let ready = format!("cwp_portwatch_agents{{status=\"COMPLETE\"}} {agents}\n");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok((_, body)) = get(port, "/metrics")
            && body.contains(&ready)
        {
            break;
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            return Err(format!("the daemon never exported {agents} agents:\n{log}").into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (rss_before_kb, _) = memory_kb(pid)?;
    let mut times = Vec::with_capacity(scrapes);
    let mut last = String::new();
    for _ in 0..scrapes {
        let t = Instant::now();
        let (status, body) = get(port, "/metrics")?;
        times.push(t.elapsed());
        if !status.contains(" 200 ") {
            return Err(format!("scrape answered {status}").into());
        }
        last = body;
    }
    let (rss_after_kb, hwm_kb) = memory_kb(pid)?;
    drop(daemon);
    times.sort();
    Ok(Measured {
        p50: times[times.len() / 2],
        max: *times.last().unwrap_or(&Duration::ZERO),
        bytes: last.len(),
        series: last.lines().filter(|l| !l.starts_with('#')).count(),
        rss_before_kb,
        rss_after_kb,
        hwm_kb,
    })
}
