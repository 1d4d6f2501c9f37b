//! One run of a [`Setup`]: the simulator and the proxy in front of it, the daemon's phases,
//! the generated scenario, config and state files, and the [`Outcome`] the scenarios print and
//! sum up.

use super::*;

pub(crate) struct Setup {
    pub(crate) name: &'static str,
    pub(crate) agents: usize,
    pub(crate) latency: Duration,
    pub(crate) duration: Duration,
    /// `detect`: agent index → when (after the simulator starts) it goes from `COLLECTING`
    /// to `COMPLETE`; the daemon runs with `collecting_interval = "5s"` and default intervals
    /// otherwise. Empty: every agent is `COMPLETE` from 0 s, every interval 1 s.
    pub(crate) changes: Vec<(usize, Duration)>,
}

/// What one phase runs against the simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// `cwp-portwatch run`.
    Daemon,
    /// `cwp-portwatch run` of another build (`PORTWATCH_BENCH_BEFORE`): before/after side by
    /// side in one run.
    DaemonBefore,
    /// [`floor_client`]: sign + reqwest POST + parse on a current-thread runtime.
    Floor,
    /// The official Python SDK in a paced loop ([`PYTHON_LOOP`]).
    Python,
}

impl Runner {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Runner::Daemon => "daemon",
            Runner::DaemonBefore => "daemon (before)",
            Runner::Floor => "floor client",
            Runner::Python => "Python SDK loop",
        }
    }
}

/// One daemon (or client) run in a scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Phase {
    pub(crate) runner: Runner,
    /// The state file is pre-seeded with every agent.
    pub(crate) seeded: bool,
}

impl Phase {
    pub(crate) const DAEMON: Phase = Phase {
        runner: Runner::Daemon,
        seeded: false,
    };
    pub(crate) const SEEDED: Phase = Phase {
        runner: Runner::Daemon,
        seeded: true,
    };
}

/// `/proc` readings of the daemon at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ProcSample {
    /// CPU time, seconds: the sum of the threads' `sum_exec_runtime` (nanoseconds, from
    /// `/proc/PID/task/*/schedstat`), or utime + stime (10 ms ticks) where that is missing.
    pub(crate) cpu_s: f64,
    pub(crate) hwm_kb: u64,
    pub(crate) rss_kb: u64,
}

/// The simulator's stats line.
#[derive(Debug, Clone, Default)]
pub(crate) struct SimStats {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    pub(crate) throttled: u64,
    pub(crate) max_in_window: Option<u64>,
    pub(crate) line: String,
}

pub(crate) struct Outcome {
    pub(crate) setup_name: &'static str,
    pub(crate) agents: usize,
    pub(crate) latency: Duration,
    pub(crate) duration: Duration,
    pub(crate) sim: SimStats,
    /// Daemon runs against this simulator (its stats line covers them all).
    pub(crate) phases: usize,
    /// The state file was pre-seeded with every agent.
    pub(crate) seeded: bool,
    /// What ran.
    pub(crate) runner: Runner,
    /// When the simulator's clock started (its `listening on` line was seen; at most 5 ms
    /// late, so change times are at most that much late and latencies that much short).
    pub(crate) sim_epoch: std::time::SystemTime,
    /// Request times seen by the proxy, relative to `t0` (daemon spawn).
    pub(crate) times: Vec<Duration>,
    /// Requests the proxy could not frame (should be 0).
    pub(crate) unframed: u64,
    pub(crate) sim_ready: Duration,
    pub(crate) sim_hwm_kb: u64,
    pub(crate) daemon_end: ProcSample,
    pub(crate) daemon_warm: Option<(Duration, ProcSample)>,
    pub(crate) daemon_after_start: Option<ProcSample>,
    pub(crate) daemon_exit: String,
    /// Peak RSS over the daemon's whole life, its stop included (`ru_maxrss`).
    pub(crate) daemon_life_hwm_kb: Option<u64>,
    pub(crate) rate_limited_events: usize,
    /// The daemon's (or client's) stderr, read before the temporary folder goes.
    pub(crate) log_text: String,
    pub(crate) poll_failed_events: usize,
    pub(crate) log_lines: usize,
}

impl Outcome {
    /// Sustained rate: (n − 1) / (t_last − t_first), requests as the proxy saw them.
    pub(crate) fn rate(&self) -> Option<f64> {
        rate_of(&self.times)
    }

    pub(crate) fn steady_times(&self) -> &[Duration] {
        let Some(&first) = self.times.first() else {
            return &[];
        };
        let from = self.times.partition_point(|&t| t < first + WARMUP);
        &self.times[from..]
    }

    /// Peak RSS in kB: over the whole life when the daemon was reaped here, else up to the
    /// last sample before its stop.
    pub(crate) fn peak_kb(&self) -> u64 {
        self.daemon_life_hwm_kb
            .unwrap_or(0)
            .max(self.daemon_end.hwm_kb)
    }

    pub(crate) fn max_window(&self) -> usize {
        max_in_window(&self.times, Duration::from_secs(1))
    }

    /// CPU seconds per 1,000 polls, whole run or after the warm-up sample.
    pub(crate) fn cpu_per_1000(&self, steady: bool) -> Option<f64> {
        if steady {
            let (at, warm) = self.daemon_warm?;
            let polls = self.times.iter().filter(|&&t| t > at).count();
            (polls > 0).then(|| (self.daemon_end.cpu_s - warm.cpu_s) / (polls as f64 / 1000.0))
        } else {
            let polls = self.times.len();
            (polls > 0).then(|| self.daemon_end.cpu_s / (polls as f64 / 1000.0))
        }
    }

    pub(crate) fn print(&self) {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== {}: {} agents, latency {:?}, {} s{} ==",
            self.setup_name,
            self.agents,
            self.latency,
            self.duration.as_secs(),
            if self.seeded {
                ", state file seeded with every agent"
            } else {
                ", empty state"
            }
        );
        let _ = writeln!(
            s,
            "simulator: {}{}",
            self.sim.line,
            if self.phases > 1 {
                format!(" (over {} daemon runs)", self.phases)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "simulator: ready {:.2} s after start, peak RSS {:.1} MB",
            self.sim_ready.as_secs_f64(),
            self.sim_hwm_kb as f64 / 1024.0
        );
        let n = self.times.len();
        let _ = writeln!(
            s,
            "proxy: {n} requests (simulator counted {}, {} answered with a status; unframed {})",
            self.sim.requests, self.sim.ok, self.unframed
        );
        if let (Some(first), Some(last)) = (self.times.first(), self.times.last()) {
            let _ = writeln!(
                s,
                "  first request {:.3} s after daemon start, last {:.3} s, span {:.3} s",
                first.as_secs_f64(),
                last.as_secs_f64(),
                (*last - *first).as_secs_f64()
            );
            let _ = writeln!(
                s,
                "  sustained {:.3} req/s ((n-1)/span); n/span {:.3}; after {}s warm-up {:.3} req/s",
                self.rate().unwrap_or(0.0),
                n as f64 / (*last - *first).as_secs_f64().max(1e-9),
                WARMUP.as_secs(),
                rate_of(self.steady_times()).unwrap_or(0.0),
            );
            let gaps: Vec<Duration> = self.times.windows(2).map(|w| w[1] - w[0]).collect();
            if let (Some(min), Some(max)) = (gaps.iter().min(), gaps.iter().max()) {
                let _ = writeln!(
                    s,
                    "  gap between requests: min {:.1} ms, max {:.1} ms",
                    min.as_secs_f64() * 1000.0,
                    max.as_secs_f64() * 1000.0
                );
            }
        }
        let _ = writeln!(
            s,
            "  max in any sliding 1 s window: {} (proxy view){}",
            self.max_window(),
            match self.sim.max_in_window {
                Some(k) => format!(", {k} (simulator's max_in_window)"),
                None => String::new(),
            }
        );
        let _ = writeln!(
            s,
            "daemon: cpu {:.2} s (utime+stime) over {n} polls = {} ms per 1,000 polls; \
             after warm-up {} ms per 1,000 polls",
            self.daemon_end.cpu_s,
            fmt_ms(self.cpu_per_1000(false)),
            fmt_ms(self.cpu_per_1000(true)),
        );
        if let Some(after) = self.daemon_after_start {
            let _ = writeln!(
                s,
                "daemon: VmRSS {:.1} MB / VmHWM {:.1} MB at its first request",
                after.rss_kb as f64 / 1024.0,
                after.hwm_kb as f64 / 1024.0
            );
        }
        let _ = writeln!(
            s,
            "daemon: VmRSS {:.1} MB, VmHWM (peak) {:.1} MB at the end; exit {}",
            self.daemon_end.rss_kb as f64 / 1024.0,
            self.daemon_end.hwm_kb as f64 / 1024.0,
            self.daemon_exit
        );
        if let Some(kb) = self.daemon_life_hwm_kb {
            let _ = writeln!(
                s,
                "daemon: peak RSS over its whole life, stop and last save included (ru_maxrss) {:.1} MB",
                kb as f64 / 1024.0
            );
        }
        let _ = writeln!(
            s,
            "daemon log: {} lines, {} rate_limited, {} poll_failed",
            self.log_lines, self.rate_limited_events, self.poll_failed_events
        );
        print!("{s}");
        let _ = std::io::stdout().flush();
    }
}

pub(crate) fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("n/a".into(), |s| format!("{:.1}", s * 1000.0))
}

pub(crate) fn rate_of(times: &[Duration]) -> Option<f64> {
    let (first, last) = (times.first()?, times.last()?);
    let span = (*last - *first).as_secs_f64();
    (times.len() >= 2 && span > 0.0).then(|| (times.len() - 1) as f64 / span)
}

/// The most times in any half-open window `[t, t + width)`; `times` sorted.
pub(crate) fn max_in_window(times: &[Duration], width: Duration) -> usize {
    let mut best = 0;
    let mut end = 0;
    for (start, &t) in times.iter().enumerate() {
        while end < times.len() && times[end] < t + width {
            end += 1;
        }
        best = best.max(end - start);
    }
    best
}

/// One scenario: files, simulator, proxy, then one daemon run per phase against that same
/// simulator (a 100,000-agent scenario takes the simulator long to load), then stop.
/// `phases` lists, per daemon run, whether its state file is pre-seeded with every agent.
pub(crate) fn scenario(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    setup: &Setup,
    phases: &[Phase],
) -> Result<Vec<Outcome>> {
    eprintln!(
        "[{}] {} agents, latency {:?}, {} s ...",
        setup.name,
        setup.agents,
        setup.latency,
        setup.duration.as_secs()
    );
    let dir = tempfile::Builder::new()
        .prefix("portwatch-bench-")
        .tempdir()?;
    let d = dir.path();
    write_files(d, setup.agents, &setup.changes)?;

    // Simulator.
    let sim_out = d.join("simulator.out");
    let sim_err = d.join("simulator.err");
    let started = Instant::now();
    let mut cmd = Command::new(bin);
    cmd.arg("simulate")
        .args(["--listen", "127.0.0.1:0", "--scenario"])
        .arg(d.join("scenario.toml"));
    if !setup.latency.is_zero() {
        cmd.arg("--latency")
            .arg(format!("{}ms", setup.latency.as_millis()));
    }
    cmd.stdin(Stdio::null())
        .stdout(File::create(&sim_out)?)
        .stderr(File::create(&sim_err)?);
    let mut sim = Guard::spawn("simulator", cmd)?;
    let sim_addr = wait_for_listening(&mut sim, &sim_out, &sim_err, Duration::from_secs(300))?;
    let sim_epoch = std::time::SystemTime::now();
    let sim_ready = started.elapsed();
    eprintln!(
        "[{}] simulator ready after {:.1} s",
        setup.name,
        sim_ready.as_secs_f64()
    );

    // Proxy.
    let log = Arc::new(Mutex::new(ProxyLog::default()));
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0"))?;
    let proxy_addr = listener.local_addr()?;
    let accept = AbortOnDrop(rt.spawn(proxy_accept(listener, sim_addr, log.clone())));

    let mut outcomes = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        let phase_dir = d.join(format!("phase{i}"));
        std::fs::create_dir_all(phase_dir.join("state"))?;
        if phase.seeded {
            seed_state(&phase_dir.join("state"), setup.agents, &setup.changes)?;
        }
        if i > 0 {
            // The simulator's 1-second window forgets the previous phase's requests.
            std::thread::sleep(Duration::from_millis(1200));
        }
        eprintln!("[{}] phase {i}: {}", setup.name, phase.runner.name());
        let mut o = daemon_phase(
            bin,
            setup,
            phase.runner,
            &phase_dir,
            d,
            proxy_addr,
            &log,
            &mut sim,
            &sim_err,
        )?;
        o.seeded = phase.seeded;
        o.sim_ready = sim_ready;
        o.sim_epoch = sim_epoch;
        outcomes.push(o);
    }

    let sim_hwm_kb = proc_sample(sim.pid()).map(|s| s.hwm_kb).unwrap_or(0);
    let sim_exit = sim.stop(Duration::from_secs(20))?;
    drop(accept);
    let out = std::fs::read_to_string(&sim_out)?;
    let sim_stats = parse_stats(&out).ok_or_else(|| {
        format!(
            "[{}] no stats line in the simulator's output (exit {sim_exit}); stderr:\n{}",
            setup.name,
            tail(&sim_err, 20)
        )
    })?;
    for o in &mut outcomes {
        o.sim = sim_stats.clone();
        o.sim_hwm_kb = sim_hwm_kb;
        o.phases = phases.len();
    }
    Ok(outcomes)
}

/// One daemon run against the running simulator (through the proxy).
#[allow(clippy::too_many_arguments)]
pub(crate) fn daemon_phase(
    bin: &Path,
    setup: &Setup,
    runner: Runner,
    phase_dir: &Path,
    files: &Path,
    proxy_addr: SocketAddr,
    log: &Arc<Mutex<ProxyLog>>,
    sim: &mut Guard,
    sim_err: &Path,
) -> Result<Outcome> {
    let config = phase_dir.join("config.toml");
    std::fs::write(
        &config,
        config_text(
            files,
            &phase_dir.join("state"),
            proxy_addr,
            !setup.changes.is_empty(),
        ),
    )?;
    let daemon_log = phase_dir.join("daemon.log");
    let mut cmd = match runner {
        Runner::Daemon | Runner::DaemonBefore => {
            let mut cmd = match runner {
                Runner::DaemonBefore => {
                    Command::new(std::env::var_os("PORTWATCH_BENCH_BEFORE").ok_or("no before")?)
                }
                _ => Command::new(bin),
            };
            cmd.arg("run")
                .arg("--config")
                .arg(&config)
                .env("TENCENTCLOUD_SECRET_ID", SECRET_ID)
                .env("TENCENTCLOUD_SECRET_KEY", SECRET_KEY)
                .env_remove("CREDENTIALS_DIRECTORY")
                .env_remove("JOURNAL_STREAM")
                .env_remove("CWP_PORTWATCH_CONFIG");
            cmd
        }
        Runner::Floor => {
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.arg(FLOOR_ARG)
                .arg(proxy_addr.to_string())
                .arg(setup.agents.to_string());
            cmd
        }
        Runner::Python => {
            let script = phase_dir.join("sdk_loop.py");
            std::fs::write(&script, PYTHON_LOOP)?;
            let mut cmd = Command::new(python_venv().ok_or("no SDK venv")?);
            cmd.arg(&script)
                .arg(proxy_addr.to_string())
                .arg(setup.agents.to_string());
            cmd
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&daemon_log)?);
    let t0 = Instant::now();
    {
        let mut l = log.lock().unwrap();
        *l = ProxyLog::default();
        l.t0 = Some(t0);
    }
    let mut daemon = Guard::spawn(runner.name(), cmd)?;
    let pid = daemon.pid();

    // Wait for the first request, then `duration`; sample /proc along the way.
    let mut after_start = None;
    let mut warm = None;
    let mut first_at = None;
    let give_up = t0 + Duration::from_secs(120);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        daemon.check_running(&daemon_log)?;
        sim.check_running(sim_err)?;
        let now = Instant::now();
        if first_at.is_none() && log.lock().unwrap().count() > 0 {
            first_at = Some(now);
            after_start = proc_sample(pid).ok();
        }
        match first_at {
            Some(f) => {
                if warm.is_none() && now >= f + WARMUP {
                    warm = Some((now - t0, proc_sample(pid)?));
                }
                if now >= f + setup.duration {
                    break;
                }
            }
            None if now > give_up => {
                return Err(format!(
                    "[{}] the daemon sent no request within {} s; its log:\n{}",
                    setup.name,
                    (give_up - t0).as_secs(),
                    tail(&daemon_log, 20)
                )
                .into());
            }
            None => {}
        }
    }
    let daemon_end = proc_sample(pid)?;
    let daemon_exit = daemon.stop(Duration::from_secs(20))?;
    let daemon_life_hwm_kb = daemon.max_rss_kb;
    let (times, unframed) = {
        let l = log.lock().unwrap();
        let mut v: Vec<Duration> = l.times.iter().map(|t| t.duration_since(t0)).collect();
        v.sort();
        (v, l.unframed)
    };
    let text = std::fs::read_to_string(&daemon_log).unwrap_or_default();
    let count = |event: &str| {
        let needle = format!("\"event\":\"{event}\"");
        text.lines().filter(|l| l.contains(&needle)).count()
    };
    Ok(Outcome {
        setup_name: setup.name,
        agents: setup.agents,
        latency: setup.latency,
        duration: setup.duration,
        sim: SimStats::default(),
        phases: 1,
        seeded: false,
        runner,
        sim_epoch: std::time::UNIX_EPOCH,
        times,
        unframed,
        sim_ready: Duration::ZERO,
        sim_hwm_kb: 0,
        daemon_end,
        daemon_warm: warm,
        daemon_after_start: after_start,
        daemon_exit,
        daemon_life_hwm_kb,
        rate_limited_events: count("rate_limited"),
        poll_failed_events: count("poll_failed"),
        log_lines: text.lines().count(),
        log_text: text,
    })
}

/// A state file as a long-running daemon leaves it: every agent known as `COMPLETE`.
pub(crate) fn seed_state(
    state_dir: &Path,
    agents: usize,
    collecting: &[(usize, Duration)],
) -> Result<()> {
    let collecting: std::collections::HashSet<usize> = collecting.iter().map(|c| c.0).collect();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut s = String::with_capacity(agents * 130 + 64);
    s.push_str("{\"version\":1,\"agents\":{");
    for i in 0..agents {
        if i > 0 {
            s.push(',');
        }
        let _ = write!(
            s,
            "\"{}\":{{\"status\":\"{}\",\"seen_at\":{now},\"request_id\":\"{}\"}}",
            uuid(i),
            if collecting.contains(&i) {
                "COLLECTING"
            } else {
                "COMPLETE"
            },
            uuid(agents + i)
        );
    }
    s.push_str("}}\n");
    std::fs::write(state_dir.join("state.json"), s)?;
    Ok(())
}

/// Aborts the proxy's accept loop when the scenario ends, however it ends.
pub(crate) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn uuid(i: usize) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        i,
        i % 0xffff,
        i % 0xfff,
        (i * 7) % 0xfff,
        i
    )
}

pub(crate) fn write_files(dir: &Path, agents: usize, changes: &[(usize, Duration)]) -> Result<()> {
    let changes: std::collections::HashMap<usize, Duration> = changes.iter().copied().collect();
    let mut watchlist = String::with_capacity(agents * 80);
    let mut scenario = String::with_capacity(agents * 100);
    for i in 0..agents {
        let u = uuid(i);
        let _ = write!(
            watchlist,
            "[[agent]]\nuuid = \"{u}\"\nname = \"bench-{i:06}\"\n\n"
        );
        match changes.get(&i) {
            Some(at) => {
                let _ = write!(
                    scenario,
                    "[[agent]]\nuuid = \"{u}\"\ntimeline = [{{ at = \"0s\", status = \"COLLECTING\" }}, \
                     {{ at = \"{}ms\", status = \"COMPLETE\" }}]\n\n",
                    at.as_millis()
                );
            }
            None => {
                let _ = write!(
                    scenario,
                    "[[agent]]\nuuid = \"{u}\"\ntimeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n\n"
                );
            }
        }
    }
    std::fs::write(dir.join("watchlist.toml"), watchlist)?;
    std::fs::write(dir.join("scenario.toml"), scenario)?;
    Ok(())
}

pub(crate) fn config_text(dir: &Path, state: &Path, proxy: SocketAddr, detect: bool) -> String {
    // `detect`: the default intervals (60 s settled: far more due than the quota, so the
    // sweep never stops) and a 5 s collecting interval.
    let poll = if detect {
        "[poll]\ncollecting_interval = \"5s\"\n"
    } else {
        "[poll]\ninterval = \"1s\"\ncollecting_interval = \"1s\"\noffline_interval = \"1s\"\n"
    };
    format!(
        "watchlist = {watchlist:?}\n\
         state_dir = {state:?}\n\
         \n\
         [api]\n\
         endpoint = \"http://{proxy}\"\n\
         requests_per_second = 20\n\
         max_in_flight = 32\n\
         timeout = \"10s\"\n\
         \n\
         [credentials]\n\
         source = \"env\"\n\
         \n\
         {poll}\
         \n\
         [log]\n\
         format = \"json\"\n\
         level = \"info\"\n",
        watchlist = dir.join("watchlist.toml").display().to_string(),
        state = state.display().to_string(),
    )
}
