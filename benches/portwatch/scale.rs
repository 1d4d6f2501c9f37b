//! `scale` (issue 27): fifty accounts × three actions at full quota in one daemon, 3,000
//! requests/s, beside the floor client extended to as many SecretIds at the same aggregate rate.
//!
//! ```text
//! cargo bench --bench portwatch -- scale [--accounts 50] [--agents 2000] [--seconds 30]
//!                                        [--rounds 1] [--log-level info]
//! ```
//!
//! Per phase (daemon, then floor; `--rounds` times) a fresh simulator runs in its own process:
//! this executable re-run as `__scale-simulator` (the `cwp-simulator` library's
//! `RunningSimulator`, strict sliding 1-second window at 20/s per SecretId and action, two
//! worker threads as `cwp-portwatch simulate`), knowing one SecretId per account. It keeps
//! every request record (its log is a ring of 100,000: a collector thread drains it every
//! 5 s) and writes them, with its per-account stats, when the bench asks (`dump PATH` on its
//! stdin). No proxy: at 3,000 requests/s a proxy in the middle would cost as much as what is
//! measured; arrival times are the simulator's own (the instant its handler starts, the one
//! its limiter counts).
//!
//! The daemon (`cwp-portwatch run`) has N `[[account]]` blocks (credentials from files), each
//! with its own watchlist of M agents, the inventory on (`rescan_interval = "60s"`,
//! `create_missing = true`) and every `[poll]` interval 1 s, and a state file per account that
//! knows nine agents in ten as `COMPLETE` (the tenth are `NO_TASK` in the scenario). So every
//! lane has more work than quota from the start: status (M agents due every second), ports
//! (every `COMPLETE` agent without a stored snapshot is fetched, phased over 1 s; one agent in
//! fifty has 150 ports, two pages), create (each agent's rescan slot in 60 s: M / 60 per
//! second, plus `create_missing` on `NO_TASK`).
//!
//! The floor client (`__scale-floor`) is `ratio`'s floor extended: one process, one
//! current-thread runtime, one reqwest client per account, and one paced loop per account and
//! action (50.375 ms slots, a slot more than 3 ms late starts a new schedule, the first slot
//! at a random point of the first period as the daemon's pacer does) sending that
//! lane's request (status, create, first ports page) for the account's agents in turn, signed
//! with the account's SecretId, the answer parsed into a `Value`.
//!
//! Measured after `WARM_UP` (from the daemon's spawn) for `--seconds`: per lane (account ×
//! action) the arrivals in that interval, their rate (first to last), the most arrivals in any
//! 1-s window over the whole phase (from the log, and the simulator's own meter), throttled
//! answers; the process's CPU time (sum of its threads' `schedstat`, as `ratio`) over the
//! interval per request, and as a share of one core; VmHWM / VmRSS at the end.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::ChildStdin;

use super::*;

/// The arguments that make this executable the simulator and the floor of `scale`.
pub(crate) const SIM_ARG: &str = "__scale-simulator";
pub(crate) const FLOOR_ARG_SCALE: &str = "__scale-floor";
/// Issue 27 targets.
const TARGET_LANE_RATE: f64 = 19.8;
const TARGET_WINDOW: u32 = 20;
const TARGET_RATIO: f64 = 1.2;
const TARGET_CORE_SHARE: f64 = 0.25;
const TARGET_RSS_MB: f64 = 64.0;
/// From the spawn of the daemon (or floor) to the start of the measured interval: the daemon
/// reads 50 watchlists and state files and starts polling well within it.
const WARM_UP: Duration = Duration::from_secs(5);
/// The three lanes, in the order the bench prints them.
const ACTIONS: [&str; 3] = [
    "DescribeOpenPortTaskStatus",
    "CreateOpenPortTask",
    "DescribeOpenPorts",
];
const SHORT: [&str; 3] = ["status", "create", "ports"];
/// One agent in this many has 150 open ports (two `DescribeOpenPorts` pages); the others 3.
const BIG_EVERY: usize = 50;
/// One agent in this many has no task (`NO_TASK`: `create_missing`'s work).
const NO_TASK_EVERY: usize = 10;

fn secret_id(a: usize) -> String {
    format!("AKIDcwpscale{a:04}000000000000000000000")
}

fn secret_key(a: usize) -> String {
    format!("cwpscaleKey{a:04}00000000000000000")
}

fn account_name(a: usize) -> String {
    format!("a{a:02}")
}

/// Agent `i` of account `a`: the account is the first group, the index the last.
fn scale_uuid(a: usize, i: usize) -> String {
    format!("{a:08x}-0000-4000-8000-{i:012x}")
}

/// (account, agent index) from a Uuid made by [`scale_uuid`].
fn parse_scale_uuid(u: &str) -> Option<(usize, usize)> {
    let a = usize::from_str_radix(u.get(..8)?, 16).ok()?;
    let i = usize::from_str_radix(u.rsplit('-').next()?, 16).ok()?;
    Some((a, i))
}

fn action_index(action: &str) -> Option<usize> {
    ACTIONS.iter().position(|a| *a == action)
}

pub(crate) struct ScaleOptions {
    pub(crate) accounts: usize,
    pub(crate) agents: usize,
    pub(crate) seconds: u64,
    pub(crate) rounds: usize,
    pub(crate) log_level: String,
    /// Leave the floor client out (profiling runs).
    pub(crate) no_floor: bool,
}

/// The scenario: N credentials, N × M agents (timeline `COMPLETE` from 0 s, or none:
/// `NO_TASK`), their ports, `collect_time = "1s"`.
fn write_scenario(path: &Path, accounts: usize, agents: usize) -> Result<()> {
    let mut s = String::with_capacity(accounts * agents * 120);
    for a in 0..accounts {
        let _ = writeln!(
            s,
            "[[credential]]\nsecret_id = \"{}\"\nsecret_key = \"{}\"",
            secret_id(a),
            secret_key(a)
        );
    }
    for a in 0..accounts {
        for i in 0..agents {
            let _ = write!(
                s,
                "[[agent]]\nuuid = \"{}\"\ncollect_time = \"1s\"\n",
                scale_uuid(a, i)
            );
            // An empty timeline answers `NO_TASK` until a task is created.
            if i % NO_TASK_EVERY == NO_TASK_EVERY - 1 {
                s.push_str("timeline = []\n");
            } else {
                s.push_str("timeline = [{ at = \"0s\", status = \"COMPLETE\" }]\n");
            }
            let n = if i % BIG_EVERY == 0 { 150 } else { 3 };
            s.push_str("ports = [{ at = \"0s\", open = [");
            for p in 0..n {
                let _ = write!(
                    s,
                    "{{port={},process=\"p{}\",pid={}}},",
                    1000 + p,
                    p % 7,
                    100 + p
                );
            }
            s.push_str("] }]\n");
        }
    }
    std::fs::write(path, s)?;
    Ok(())
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

/// Watchlists, credentials and the config of the daemon (in `dir`); state files (in
/// `dir/state`, made fresh per phase by [`seed_scale_state`]).
fn write_daemon_files(dir: &Path, opts: &ScaleOptions, endpoint: &str) -> Result<PathBuf> {
    let mut config = format!(
        "state_dir = {state:?}\n\n\
         [api]\nendpoint = \"{endpoint}\"\nrequests_per_second = 20\nmax_in_flight = 32\n\
         timeout = \"10s\"\n\n\
         [poll]\ninterval = \"1s\"\ncollecting_interval = \"1s\"\noffline_interval = \"1s\"\n\n\
         [inventory]\nenabled = true\nrescan_interval = \"60s\"\ncreate_missing = true\n\n\
         [log]\nformat = \"json\"\nlevel = \"{level}\"\n\n",
        state = dir.join("state").display().to_string(),
        level = opts.log_level,
    );
    for a in 0..opts.accounts {
        let name = account_name(a);
        let mut w = String::with_capacity(opts.agents * 60);
        for i in 0..opts.agents {
            let _ = write!(w, "[[agent]]\nuuid = \"{}\"\n", scale_uuid(a, i));
        }
        let watchlist = dir.join(format!("{name}.watchlist.toml"));
        std::fs::write(&watchlist, w)?;
        let id = dir.join(format!("{name}.id"));
        let key = dir.join(format!("{name}.key"));
        write_private(&id, &secret_id(a))?;
        write_private(&key, &secret_key(a))?;
        let _ = write!(
            config,
            "[[account]]\nname = \"{name}\"\nwatchlist = {:?}\n\
             [account.credentials]\nsource = \"file\"\nsecret_id_file = {:?}\nsecret_key_file = {:?}\n\n",
            watchlist.display().to_string(),
            id.display().to_string(),
            key.display().to_string(),
        );
    }
    let path = dir.join("config.toml");
    std::fs::write(&path, config)?;
    Ok(path)
}

/// Fresh state files: every agent but the `NO_TASK` ones known as `COMPLETE`; no inventory.
fn seed_scale_state(state: &Path, opts: &ScaleOptions) -> Result<()> {
    if state.exists() {
        std::fs::remove_dir_all(state)?;
    }
    std::fs::create_dir_all(state)?;
    std::fs::set_permissions(state, std::fs::Permissions::from_mode(0o700))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    for a in 0..opts.accounts {
        let mut s = String::with_capacity(opts.agents * 130 + 64);
        s.push_str("{\"version\":1,\"agents\":{");
        let mut first = true;
        for i in (0..opts.agents).filter(|i| i % NO_TASK_EVERY != NO_TASK_EVERY - 1) {
            if !first {
                s.push(',');
            }
            first = false;
            let _ = write!(
                s,
                "\"{}\":{{\"status\":\"COMPLETE\",\"seen_at\":{now},\"request_id\":\"{}\"}}",
                scale_uuid(a, i),
                scale_uuid(a + 1000, i)
            );
        }
        s.push_str("}}\n");
        write_private(&state.join(format!("state.{}.json", account_name(a))), &s)?;
    }
    Ok(())
}

/// The main thread's `schedstat`: nanoseconds on CPU, nanoseconds waiting on a run queue
/// (runnable, not running: the machine's scheduling delay), time slices.
fn main_thread_sched(pid: i32) -> [u64; 3] {
    let text =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/schedstat")).unwrap_or_default();
    let mut v = text.split_whitespace().map(|x| x.parse().unwrap_or(0));
    [(); 3].map(|_| v.next().unwrap_or(0))
}

/// The simulator child: its stdin takes commands, its stdout answers them.
struct SimChild {
    guard: Guard,
    stdin: ChildStdin,
    lines: std::io::Lines<BufReader<File>>,
    addr: SocketAddr,
    err: PathBuf,
}

impl SimChild {
    fn start(scenario: &Path, dir: &Path, tag: &str, drain_every: u64) -> Result<SimChild> {
        let out = dir.join(format!("sim-{tag}.out"));
        let err = dir.join(format!("sim-{tag}.err"));
        // `PORTWATCH_SCALE_SIM_WRAP="chrt -f 1"` (or `"nice -n -10"`): the simulator, which
        // stands for Tencent's servers, started through that command, e.g. at a real-time
        // priority so that its arrival stamps carry less of this machine's scheduling delay.
        let wrap = std::env::var("PORTWATCH_SCALE_SIM_WRAP").unwrap_or_default();
        let mut words = wrap.split_whitespace();
        let mut cmd = match words.next() {
            Some(program) => {
                let mut c = Command::new(program);
                c.args(words).arg(std::env::current_exe()?);
                c
            }
            None => Command::new(std::env::current_exe()?),
        };
        cmd.arg(SIM_ARG)
            .arg(scenario)
            .arg(drain_every.to_string())
            .stdin(Stdio::piped())
            .stdout(File::create(&out)?)
            .stderr(File::create(&err)?);
        let mut guard = Guard::spawn("simulator", cmd)?;
        let stdin = guard
            .child
            .as_mut()
            .and_then(|c| c.stdin.take())
            .ok_or("no stdin")?;
        let addr = wait_for_listening(&mut guard, &out, &err, Duration::from_secs(300))?;
        let mut lines = BufReader::new(File::open(&out)?).lines();
        // Past the `listening on` line.
        lines.next();
        Ok(SimChild {
            guard,
            stdin,
            lines,
            addr,
            err,
        })
    }

    /// Sends a command and waits for its one-line answer.
    fn ask(&mut self, command: &str) -> Result<String> {
        use std::io::Write as _;
        writeln!(self.stdin, "{command}")?;
        self.stdin.flush()?;
        let until = Instant::now() + Duration::from_secs(120);
        loop {
            match self.lines.next() {
                Some(line) => return Ok(line?),
                None => {
                    self.guard.check_running(&self.err)?;
                    if Instant::now() > until {
                        return Err(format!("the simulator did not answer {command:?}").into());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// The simulator's clock (since its start).
    fn now(&mut self) -> Result<Duration> {
        let line = self.ask("now")?;
        Ok(Duration::from_nanos(line.trim().parse()?))
    }
}

/// Per lane, what one phase saw.
#[derive(Debug, Default, Clone)]
struct Lane {
    /// Arrival times in the measured interval.
    times: Vec<Duration>,
    /// Every arrival of the phase (warm-up included), for the window bound.
    all: Vec<Duration>,
    throttled: u64,
    /// The simulator's own meter over the phase.
    sim_max_window: u32,
    sim_throttled: u64,
}

struct PhaseResult {
    runner: &'static str,
    lanes: Vec<[Lane; 3]>,
    requests: usize,
    cpu_s: f64,
    wall_s: f64,
    end: ProcSample,
    after_start: ProcSample,
    lost: u64,
    other_actions: BTreeMap<String, u64>,
    log_lines: usize,
    log_bytes: u64,
    errors: BTreeMap<String, u64>,
    /// The simulator's CPU time over the interval.
    sim_cpu: f64,
    /// The main thread (the runtime's, where the daemon's engines run): ns on CPU, ns
    /// runnable but waiting, slices, over the interval.
    main: [u64; 3],
    /// Threads at the end of the interval.
    threads: usize,
}

impl PhaseResult {
    fn rates(&self) -> Vec<f64> {
        self.lanes
            .iter()
            .flat_map(|l| l.iter().map(|x| rate_of(&x.times).unwrap_or(0.0)))
            .collect()
    }

    fn max_window(&self) -> (u32, u32) {
        let log = self
            .lanes
            .iter()
            .flat_map(|l| {
                l.iter()
                    .map(|x| max_in_window(&x.all, Duration::from_secs(1)) as u32)
            })
            .max()
            .unwrap_or(0);
        let sim = self
            .lanes
            .iter()
            .flat_map(|l| l.iter().map(|x| x.sim_max_window))
            .max()
            .unwrap_or(0);
        (log, sim)
    }

    fn throttled(&self) -> u64 {
        self.lanes
            .iter()
            .flat_map(|l| l.iter().map(|x| x.throttled.max(x.sim_throttled)))
            .sum()
    }

    fn per_request_us(&self) -> f64 {
        self.cpu_s * 1e6 / self.requests.max(1) as f64
    }

    fn print(&self) {
        let rates = self.rates();
        let mut sorted = rates.clone();
        sorted.sort_by(f64::total_cmp);
        let (wlog, wsim) = self.max_window();
        println!(
            "\n-- {}: {} requests in {:.1} s = {:.0} req/s; CPU {:.2} s = {:.1} µs per request, \
             {:.1} % of one core; VmRSS {:.1} MB, VmHWM {:.1} MB (at {:.1} / {:.1} MB {} s after start)",
            self.runner,
            self.requests,
            self.wall_s,
            self.requests as f64 / self.wall_s,
            self.cpu_s,
            self.per_request_us(),
            self.cpu_s * 100.0 / self.wall_s,
            self.end.rss_kb as f64 / 1024.0,
            self.end.hwm_kb as f64 / 1024.0,
            self.after_start.rss_kb as f64 / 1024.0,
            self.after_start.hwm_kb as f64 / 1024.0,
            WARM_UP.as_secs(),
        );
        if let (Some(min), Some(max)) = (sorted.first(), sorted.last()) {
            println!(
                "   lanes: {}, rate min {min:.3} / median {:.3} / max {max:.3} req/s; \
                 most in a 1 s window {wlog} (log) / {wsim} (simulator's meter); throttled {}",
                rates.len(),
                sorted[sorted.len() / 2],
                self.throttled()
            );
        }
        for (k, short) in SHORT.iter().enumerate() {
            let r: Vec<f64> = self
                .lanes
                .iter()
                .map(|l| rate_of(&l[k].times).unwrap_or(0.0))
                .collect();
            let n: usize = self.lanes.iter().map(|l| l[k].times.len()).sum();
            let min = r.iter().copied().fold(f64::INFINITY, f64::min);
            let w = self
                .lanes
                .iter()
                .map(|l| max_in_window(&l[k].all, Duration::from_secs(1)))
                .max()
                .unwrap_or(0);
            println!(
                "   {short:<6}: {n} requests, {:.1} req/s together, slowest lane {min:.3} req/s, \
                 most in a 1 s window {w}",
                n as f64 / self.wall_s
            );
        }
        let slow: Vec<String> = self
            .lanes
            .iter()
            .enumerate()
            .flat_map(|(a, l)| {
                l.iter().enumerate().filter_map(move |(k, x)| {
                    let r = rate_of(&x.times).unwrap_or(0.0);
                    (r < TARGET_LANE_RATE)
                        .then(|| format!("{}/{} {r:.3}", account_name(a), SHORT[k]))
                })
            })
            .collect();
        if !slow.is_empty() {
            println!(
                "   lanes under {TARGET_LANE_RATE}: {}{}",
                slow.iter().take(12).cloned().collect::<Vec<_>>().join(", "),
                if slow.len() > 12 {
                    format!(" … ({} in all)", slow.len())
                } else {
                    String::new()
                }
            );
        }
        // Gaps between consecutive arrivals in a lane: a short one is a late request followed
        // by an on-time one (or arrivals bunched on the way); 21 in a window needs the 20 gaps
        // between them to sum under 1 s.
        let mut gaps: Vec<f64> = self
            .lanes
            .iter()
            .flatten()
            .flat_map(|x| {
                x.all
                    .windows(2)
                    .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
            })
            .collect();
        gaps.sort_by(f64::total_cmp);
        if !gaps.is_empty() {
            let q = |p: f64| gaps[((gaps.len() - 1) as f64 * p) as usize];
            println!(
                "   gaps between arrivals in a lane (ms): min {:.1}, p0.1 {:.1}, p1 {:.1}, median {:.1}, \
                 p99 {:.1}, p99.9 {:.1}, max {:.1}",
                q(0.0),
                q(0.001),
                q(0.01),
                q(0.5),
                q(0.99),
                q(0.999),
                q(1.0)
            );
        }
        if !self.errors.is_empty() {
            println!(
                "   answers other than success, in the interval: {:?}",
                self.errors
            );
        }
        if !self.other_actions.is_empty() || self.lost > 0 {
            println!(
                "   other actions: {:?}; records lost from the simulator's log: {}",
                self.other_actions, self.lost
            );
        }
        println!(
            "   main thread: {:.1} % of one core ({:.1} µs per request); runnable but waiting \
             {:.1} ms per second (mean {:.0} µs per wake-up); {} threads at the end",
            self.main[0] as f64 / 1e7 / self.wall_s,
            self.main[0] as f64 / 1e3 / self.requests.max(1) as f64,
            self.main[1] as f64 / 1e6 / self.wall_s,
            self.main[1] as f64 / 1e3 / self.main[2].max(1) as f64,
            self.threads
        );
        println!(
            "   simulator: {:.1} % of one core ({:.1} µs per request)",
            self.sim_cpu * 100.0 / self.wall_s,
            self.sim_cpu * 1e6 / self.requests.max(1) as f64
        );
        if self.log_lines > 0 {
            println!(
                "   log: {} lines, {:.1} MB",
                self.log_lines,
                self.log_bytes as f64 / 1e6
            );
        }
    }
}

/// One phase: a fresh simulator, the daemon (or floor) for WARM_UP + seconds, the numbers.
fn scale_phase(
    bin: &Path,
    dir: &Path,
    opts: &ScaleOptions,
    floor: bool,
    tag: &str,
) -> Result<PhaseResult> {
    // The ring holds 100,000 records: drain it every 25 s only when the phase would overflow it.
    // (Records before the measured interval may be overwritten: the simulator's own meter
    // covers the window bound over the whole phase.)
    let expected = (opts.accounts * 3 * 20) as u64 * (opts.seconds + 2);
    let drain_every = if expected > 100_000 { 25 } else { 0 };
    let mut sim = SimChild::start(&dir.join("scenario.toml"), dir, tag, drain_every)?;
    let endpoint = format!("http://{}", sim.addr);
    let log_path = dir.join(format!("{tag}.log"));
    let mut cmd = if floor {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(FLOOR_ARG_SCALE)
            .arg(sim.addr.to_string())
            .arg(opts.accounts.to_string())
            .arg(opts.agents.to_string());
        cmd
    } else {
        let config = write_daemon_files(dir, opts, &endpoint)?;
        seed_scale_state(&dir.join("state"), opts)?;
        let mut cmd = Command::new(bin);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .env("HOME", dir)
            .env_remove("TENCENTCLOUD_SECRET_ID")
            .env_remove("TENCENTCLOUD_SECRET_KEY")
            .env_remove("CREDENTIALS_DIRECTORY")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CWP_PORTWATCH_CONFIG");
        cmd
    };
    // `PORTWATCH_SCALE_CLIENT_WRAP="chrt -f 1"`: the daemon and the floor likewise (a
    // machine where nothing else competes with them).
    if let Ok(wrap) = std::env::var("PORTWATCH_SCALE_CLIENT_WRAP") {
        let mut words = wrap.split_whitespace();
        if let Some(program) = words.next() {
            let mut wrapped = Command::new(program);
            wrapped
                .args(words)
                .arg(cmd.get_program())
                .args(cmd.get_args());
            for (k, v) in cmd.get_envs() {
                match v {
                    Some(v) => wrapped.env(k, v),
                    None => wrapped.env_remove(k),
                };
            }
            cmd = wrapped;
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path)?);
    let runner = if floor { "floor client" } else { "daemon" };
    eprintln!("[scale] {tag}: {runner}");
    let mut child = Guard::spawn(runner, cmd)?;
    let pid = child.pid();
    std::thread::sleep(WARM_UP);
    child.check_running(&log_path)?;
    let after_start = proc_sample(pid)?;
    let sim_pid = sim.guard.pid();
    let main0 = main_thread_sched(pid);
    let (cpu0, sim_cpu0, m0) = (
        proc_sample(pid)?.cpu_s,
        proc_sample(sim_pid)?.cpu_s,
        sim.now()?,
    );
    std::thread::sleep(Duration::from_secs(opts.seconds));
    child.check_running(&log_path)?;
    let end = proc_sample(pid)?;
    let main1 = main_thread_sched(pid);
    let main = [0, 1, 2].map(|i| main1[i].saturating_sub(main0[i]));
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let sim_cpu = proc_sample(sim_pid)?.cpu_s - sim_cpu0;
    let m1 = sim.now()?;
    child.stop(Duration::from_secs(30))?;
    let records = dir.join(format!("{tag}.records"));
    let answer = sim.ask(&format!("dump {}", records.display()))?;
    let lost: u64 = answer
        .strip_prefix("dumped lost=")
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("unexpected answer to dump: {answer:?}"))?;
    sim.guard.stop(Duration::from_secs(20))?;

    let mut lanes = vec![<[Lane; 3]>::default(); opts.accounts];
    let mut other_actions = BTreeMap::new();
    let mut errors = BTreeMap::new();
    let mut requests = 0;
    // Lines: `R at_ns action uuid answer` and `S secret_id action max_arrivals throttled`.
    for line in std::fs::read_to_string(&records)?.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        match f.as_slice() {
            ["R", at, action, uuid, answer] => {
                let at = Duration::from_nanos(at.parse()?);
                let (Some(k), Some((a, _))) = (action_index(action), parse_scale_uuid(uuid)) else {
                    *other_actions.entry(action.to_string()).or_insert(0) += 1;
                    continue;
                };
                let Some(lane) = lanes.get_mut(a).map(|l| &mut l[k]) else {
                    continue;
                };
                lane.all.push(at);
                if at >= m0 && at <= m1 {
                    lane.times.push(at);
                    requests += 1;
                    if *answer == "RequestLimitExceeded" {
                        lane.throttled += 1;
                    }
                    // Success: `ok` (create, ports) or a status word (`COMPLETE`, `NO_TASK`…
                    // is an error code the daemon reads as a status: counted here too).
                    let success = *answer == "ok"
                        || answer.chars().all(|c| c.is_ascii_uppercase() || c == '_');
                    if !success {
                        *errors.entry(format!("{}:{answer}", SHORT[k])).or_insert(0) += 1;
                    }
                }
            }
            ["S", id, action, max, throttled] => {
                let a = (0..opts.accounts).find(|&a| secret_id(a) == *id);
                if let (Some(a), Some(k)) = (a, action_index(action)) {
                    lanes[a][k].sim_max_window = max.parse()?;
                    lanes[a][k].sim_throttled = throttled.parse()?;
                }
            }
            _ => return Err(format!("bad record line {line:?}").into()),
        }
    }
    for l in lanes.iter_mut().flatten() {
        l.times.sort();
        l.all.sort();
    }
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    Ok(PhaseResult {
        runner,
        lanes,
        requests,
        cpu_s: end.cpu_s - cpu0,
        wall_s: (m1 - m0).as_secs_f64().max(1e-9),
        end,
        after_start,
        lost,
        other_actions,
        log_lines: log.lines().count(),
        log_bytes: log.len() as u64,
        errors,
        sim_cpu,
        main,
        threads,
    })
}

/// Issue 27: the scenario.
pub(crate) fn scale(bin: &Path, opts: &ScaleOptions, summary: &mut Vec<String>) -> Result<()> {
    let mut dir = tempfile::Builder::new()
        .prefix("portwatch-scale-")
        .tempdir()?;
    // `PORTWATCH_SCALE_KEEP=1`: the folder (scenario, configs, logs, records) stays.
    if std::env::var_os("PORTWATCH_SCALE_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("[scale] files kept in {}", dir.path().display());
    }
    let d = dir.path();
    let started = Instant::now();
    write_scenario(&d.join("scenario.toml"), opts.accounts, opts.agents)?;
    eprintln!(
        "[scale] {} accounts × {} agents; scenario {:.1} MB written in {:.1} s",
        opts.accounts,
        opts.agents,
        std::fs::metadata(d.join("scenario.toml"))?.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let mut results = Vec::new();
    for round in 0..opts.rounds.max(1) {
        let daemon = scale_phase(bin, d, opts, false, &format!("daemon{round}"))?;
        daemon.print();
        let floor = if opts.no_floor {
            None
        } else {
            let f = scale_phase(bin, d, opts, true, &format!("floor{round}"))?;
            f.print();
            Some(f)
        };
        if let Some(f) = &floor {
            println!(
                "   round {}: daemon / floor CPU per request {:.2} ({:.1} / {:.1} µs)",
                round + 1,
                daemon.per_request_us() / f.per_request_us(),
                daemon.per_request_us(),
                f.per_request_us()
            );
        }
        results.push((daemon, floor));
    }
    let n = opts.accounts * 3;
    for (round, (daemon, floor)) in results.iter().enumerate() {
        let r = format!("round {}", round + 1);
        let rates = daemon.rates();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let under = rates.iter().filter(|&&x| x < TARGET_LANE_RATE).count();
        summary.push(row(
            &format!("scale {r}: slowest of {n} lanes, req/s ({under} under {TARGET_LANE_RATE})"),
            format!("{min:.3}"),
            format!(">= {TARGET_LANE_RATE}"),
            min >= TARGET_LANE_RATE,
        ));
        let (wlog, wsim) = daemon.max_window();
        summary.push(row(
            &format!("scale {r}: most in any 1-s window, any lane (log / simulator)"),
            format!("{wlog} / {wsim}"),
            format!("<= {TARGET_WINDOW}"),
            wlog.max(wsim) <= TARGET_WINDOW,
        ));
        summary.push(row(
            &format!("scale {r}: throttled"),
            daemon.throttled().to_string(),
            "0".into(),
            daemon.throttled() == 0,
        ));
        summary.push(row(
            &format!(
                "scale {r}: daemon, {:.0} req/s: CPU share of one core",
                daemon.requests as f64 / daemon.wall_s
            ),
            format!("{:.1} %", daemon.cpu_s * 100.0 / daemon.wall_s),
            format!("< {:.0} %", TARGET_CORE_SHARE * 100.0),
            daemon.cpu_s / daemon.wall_s < TARGET_CORE_SHARE,
        ));
        let hwm = daemon.end.hwm_kb as f64 / 1024.0;
        summary.push(row(
            &format!(
                "scale {r}: daemon peak RSS (VmHWM), {} × {} agents",
                opts.accounts, opts.agents
            ),
            format!("{hwm:.1} MB"),
            format!("<= {TARGET_RSS_MB:.0} MB"),
            hwm <= TARGET_RSS_MB,
        ));
        if let Some(f) = floor {
            let ratio = daemon.per_request_us() / f.per_request_us();
            summary.push(row(
                &format!(
                    "scale {r}: CPU per request, daemon / floor ({:.0} req/s)",
                    f.requests as f64 / f.wall_s
                ),
                format!(
                    "{ratio:.2} ({:.1} / {:.1} µs)",
                    daemon.per_request_us(),
                    f.per_request_us()
                ),
                format!("<= {TARGET_RATIO}"),
                ratio <= TARGET_RATIO,
            ));
        }
    }
    Ok(())
}

/// The simulator child: `SCENARIO`; prints `listening on http://ADDR`, then answers `now`
/// (its clock, ns) and `dump PATH` (writes every record and the per-account stats, answers
/// `dumped lost=N`) on stdin, until stdin closes or it is killed.
pub(crate) fn scale_simulator(mut args: impl Iterator<Item = String>) -> Result<()> {
    use cwp_simulator::{RunningSimulator, Scenario, SimulatorOptions};
    let scenario = Scenario::load(Path::new(&args.next().ok_or("no scenario")?))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let start = Instant::now();
    let sim = Arc::new(rt.block_on(RunningSimulator::start(
        SimulatorOptions::new(scenario),
        "127.0.0.1:0".parse()?,
    ))?);
    println!("listening on {}", sim.endpoint());
    // Every record, drained from the simulator's ring before it can wrap.
    #[derive(Default)]
    struct Drained {
        records: Vec<cwp_simulator::RequestRecord>,
        seen: u64,
        lost: u64,
    }
    let drained = Arc::new(Mutex::new(Drained::default()));
    let drain = {
        let sim = sim.clone();
        let drained = drained.clone();
        move || {
            let stats = sim.stats();
            let mut d = drained.lock().unwrap();
            let new = stats.requests.saturating_sub(d.seen);
            let have = (new as usize).min(stats.log.len());
            d.lost += new - have as u64;
            let from = stats.log.len() - have;
            d.records.extend_from_slice(&stats.log[from..]);
            d.seen = stats.requests;
            stats
        }
    };
    // A snapshot clones the whole log under the simulator's locks, which stalls its handlers
    // (and so its arrival stamps) for tens of milliseconds: by default only the dump at the
    // end takes one (a phase of 5 + 30 s at 3,000 requests/s fits in the ring). Longer runs
    // pass a drain period (seconds) and take that stall every period.
    let every: u64 = args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
    if every > 0 {
        let drain = drain.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_secs(every));
                drain();
            }
        });
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut out = std::io::stdout().lock();
        if line == "now" {
            writeln!(out, "{}", start.elapsed().as_nanos())?;
        } else if let Some(path) = line.strip_prefix("dump ") {
            let stats = drain();
            let d = drained.lock().unwrap();
            let mut w = std::io::BufWriter::new(File::create(path)?);
            for r in &d.records {
                writeln!(
                    w,
                    "R {} {} {} {}",
                    r.at.as_nanos(),
                    r.action,
                    r.uuid.as_deref().unwrap_or("-"),
                    r.answer.replace(' ', "_")
                )?;
            }
            for (id, actions) in &stats.per_account {
                for (action, s) in actions {
                    writeln!(
                        w,
                        "S {id} {action} {} {}",
                        s.max_arrivals_in_window, s.throttled
                    )?;
                }
            }
            w.flush()?;
            writeln!(out, "dumped lost={}", d.lost)?;
        } else {
            writeln!(out, "unknown command")?;
        }
        out.flush()?;
    }
    Ok(())
}

/// Where the floor's lanes start in the period.
#[derive(Clone, Copy)]
enum Phases {
    Random,
    Aligned,
    Spread,
}

/// The floor of `scale`: `ADDR ACCOUNTS AGENTS`; one paced loop per account and action on a
/// current-thread runtime (see the module docs). Runs until killed.
pub(crate) fn scale_floor(mut args: impl Iterator<Item = String>) -> Result<()> {
    let addr: SocketAddr = args.next().ok_or("no address")?.parse()?;
    let accounts: usize = args.next().ok_or("no account count")?.parse()?;
    let agents: usize = args.next().ok_or("no agent count")?.parse()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let host: Rc<str> = addr.to_string().into();
        let url = reqwest::Url::parse(&format!("http://{addr}/"))?;
        let local = tokio::task::LocalSet::new();
        let phases = if std::env::var_os("PORTWATCH_SCALE_FLOOR_ALIGNED").is_some() {
            Phases::Aligned
        } else if std::env::var_os("PORTWATCH_SCALE_FLOOR_SPREAD").is_some() {
            Phases::Spread
        } else {
            Phases::Random
        };
        for a in 0..accounts {
            let http = reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(32)
                .build()?;
            let uuids: Rc<[String]> = (0..agents.max(1)).map(|i| scale_uuid(a, i)).collect();
            let (id, key): (Rc<str>, Rc<str>) = (secret_id(a).into(), secret_key(a).into());
            for (k, action) in ACTIONS.iter().enumerate() {
                let (http, url, host, uuids) =
                    (http.clone(), url.clone(), host.clone(), uuids.clone());
                let (id, key) = (id.clone(), key.clone());
                // Like the daemon's pacer: each lane's first slot at a random point of the
                // first period. `PORTWATCH_SCALE_FLOOR_ALIGNED=1`: every lane's at once (the
                // daemon before issue 27), `PORTWATCH_SCALE_FLOOR_SPREAD=1`: spread evenly.
                let offset = match phases {
                    Phases::Random => PERIOD.mul_f64(rand::random::<f64>()),
                    Phases::Aligned => Duration::ZERO,
                    Phases::Spread => PERIOD.mul_f64(
                        (a * ACTIONS.len() + k) as f64 / (accounts * ACTIONS.len()) as f64,
                    ),
                };
                local.spawn_local(async move {
                    let mut next = tokio::time::Instant::now() + offset;
                    let mut failures = 0u64;
                    for i in 0.. {
                        tokio::time::sleep_until(next).await;
                        let now = tokio::time::Instant::now();
                        if now.duration_since(next) > Duration::from_millis(3) {
                            next = now;
                        }
                        next += PERIOD;
                        let uuid = &uuids[i % uuids.len()];
                        let body = if k == 2 {
                            serde_json::to_vec(
                                &serde_json::json!({ "Uuid": uuid, "Limit": 100, "Offset": 0 }),
                            )
                        } else {
                            serde_json::to_vec(&serde_json::json!({ "Uuid": uuid }))
                        };
                        let Ok(body) = body else { continue };
                        let timestamp = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs() as i64);
                        let signed = cwp_portwatch::signing::sign(
                            &id,
                            &key,
                            &cwp_portwatch::signing::RequestParts {
                                method: "POST",
                                host: &host,
                                content_type: "application/json",
                                payload: &body,
                                service: "yunjing",
                                timestamp,
                            },
                        );
                        let sent = http
                            .post(url.clone())
                            .header("Host", &*host)
                            .header("Content-Type", "application/json")
                            .header("X-TC-Action", *action)
                            .header("X-TC-Version", "2018-02-28")
                            .header("X-TC-Timestamp", timestamp.to_string())
                            .header("Authorization", signed.authorization)
                            .body(body)
                            .send()
                            .await;
                        let answer = match sent {
                            Ok(r) => r.bytes().await,
                            Err(e) => Err(e),
                        };
                        let ok = answer.ok().and_then(|a| {
                            let v: serde_json::Value = serde_json::from_slice(&a).ok()?;
                            v.get("Response").map(|_| ())
                        });
                        if ok.is_none() {
                            failures += 1;
                            if failures <= 3 {
                                eprintln!("floor client: {action}: no answer");
                            }
                        }
                    }
                });
            }
        }
        local.await;
        Ok::<(), BoxError>(())
    })
}

use std::rc::Rc;
