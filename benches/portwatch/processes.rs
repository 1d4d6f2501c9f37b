//! The child processes: the release binary to run, waiting for a child to listen, its
//! `/proc` CPU and memory, the tail of its log, and the [`Guard`] that SIGTERMs and reaps every
//! child on every path.

use super::*;

/// The release binary: `PORTWATCH_BENCH_BIN` when set, else the one cargo built for this bench, else next to this bench's
/// executable, else under `CARGO_MANIFEST_DIR/target/release` (built when missing).
pub(crate) fn binary() -> Result<PathBuf> {
    // Another build (e.g. the one before a change, for a before/after in one session).
    if let Some(p) = std::env::var_os("PORTWATCH_BENCH_BIN") {
        return Ok(PathBuf::from(p));
    }
    let mut candidates = Vec::new();
    if let Some(p) = option_env!("CARGO_BIN_EXE_cwp-portwatch") {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe() {
        // target/release/deps/portwatch-HASH → target/release/cwp-portwatch
        if let Some(dir) = exe.parent().and_then(Path::parent) {
            candidates.push(dir.join("cwp-portwatch"));
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fallback = manifest.join("target/release/cwp-portwatch");
    candidates.push(fallback.clone());
    if let Some(found) = candidates.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    eprintln!("no release binary found; running cargo build --release");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--bin", "cwp-portwatch"])
        .current_dir(manifest)
        .status()?;
    if !status.success() || !fallback.is_file() {
        return Err(format!("cargo build --release failed ({status})").into());
    }
    Ok(fallback)
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// Polls `out` for `listening on http://ADDR`.
pub(crate) fn wait_for_listening(
    sim: &mut Guard,
    out: &Path,
    err: &Path,
    limit: Duration,
) -> Result<SocketAddr> {
    let until = Instant::now() + limit;
    loop {
        if let Ok(text) = std::fs::read_to_string(out)
            && let Some(line) = text.lines().find(|l| l.starts_with("listening on "))
        {
            let addr = line
                .trim_start_matches("listening on ")
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/');
            return addr
                .parse()
                .map_err(|e| format!("cannot read the address in {line:?}: {e}").into());
        }
        sim.check_running(err)?;
        if Instant::now() > until {
            return Err(format!(
                "the simulator did not print `listening on` within {} s",
                limit.as_secs()
            )
            .into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `stopped after N requests (X ok, Y throttled)`; also takes `max_in_window=K` (or
/// `max_in_window: K`) from that line when present.
pub(crate) fn parse_stats(out: &str) -> Option<SimStats> {
    let line = out.lines().rev().find(|l| l.starts_with("stopped after"))?;
    let words: Vec<&str> = line
        .split(|c: char| c.is_whitespace() || "(),;".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let before = |word: &str| -> Option<u64> {
        let i = words.iter().position(|w| *w == word)?;
        words.get(i.checked_sub(1)?)?.parse().ok()
    };
    let max_in_window = line.find("max_in_window").and_then(|i| {
        let rest = &line[i + "max_in_window".len()..];
        let digits: String = rest
            .trim_start_matches([':', '=', ' '])
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        digits.parse().ok()
    });
    Some(SimStats {
        requests: before("requests")?,
        ok: before("ok")?,
        throttled: before("throttled")?,
        max_in_window,
        line: line.to_owned(),
    })
}

pub(crate) fn proc_sample(pid: i32) -> Result<ProcSample> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')').ok_or("bad /proc/PID/stat")? + 1..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = f.get(11).ok_or("no utime")?.parse()?;
    let stime: u64 = f.get(12).ok_or("no stime")?.parse()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Nanoseconds on CPU per living thread: far finer than the 10 ms ticks of utime and
    // stime (one tick is 25 µs per poll in a 20 s run). A thread that exited between two
    // samples is missing from the second; the steady-state figures come from a daemon whose
    // threads all live (one, plus blocking-pool threads that idle out after 10 s without work).
    let sched_ns: Option<u64> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()
        .map(|tasks| {
            tasks
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .sum()
        });
    Ok(ProcSample {
        cpu_s: sched_ns
            .filter(|&ns| ns > 0)
            .map_or((utime + stime) as f64 / ticks, |ns| ns as f64 / 1e9),
        hwm_kb: kb("VmHWM:"),
        rss_kb: kb("VmRSS:"),
    })
}

pub(crate) fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process that is SIGTERMed and reaped when dropped.
pub(crate) struct Guard {
    pub(crate) name: &'static str,
    pub(crate) child: Option<Child>,
    /// Peak RSS of the whole life of the child, stop included (`ru_maxrss` from `wait4`),
    /// once [`Guard::stop`] reaped it.
    pub(crate) max_rss_kb: Option<u64>,
}

impl Guard {
    pub(crate) fn spawn(name: &'static str, mut cmd: Command) -> Result<Guard> {
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start the {name}: {e}"))?;
        Ok(Guard {
            name,
            child: Some(child),
            max_rss_kb: None,
        })
    }

    pub(crate) fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    pub(crate) fn check_running(&mut self, log: &Path) -> Result<()> {
        let name = self.name;
        let Some(child) = self.child.as_mut() else {
            return Err(format!("the {name} is not running").into());
        };
        match child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                self.child = None;
                Err(format!("the {name} exited early ({status}):\n{}", tail(log, 20)).into())
            }
        }
    }

    /// SIGTERM, then wait up to `limit` (SIGKILL after that). Returns the exit status.
    pub(crate) fn stop(&mut self, limit: Duration) -> Result<String> {
        let Some(mut child) = self.child.take() else {
            return Ok("already gone".into());
        };
        let pid = child.id() as i32;
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let until = Instant::now() + limit;
        loop {
            // Reaped with wait4 for its peak RSS over its whole life, the final state save
            // included (VmHWM can only be read while it runs).
            let mut status = 0;
            // SAFETY: rusage is plain data; wait4 on our own unreaped child.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let reaped = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
            if reaped == pid {
                self.max_rss_kb = u64::try_from(usage.ru_maxrss).ok();
                return Ok(if libc::WIFEXITED(status) {
                    format!("exit status: {}", libc::WEXITSTATUS(status))
                } else {
                    format!("wait status {status}")
                });
            }
            if Instant::now() > until {
                let _ = child.kill();
                let status = child.wait()?;
                return Ok(format!(
                    "{status} (SIGKILLed: no exit {} s after SIGTERM)",
                    limit.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop(Duration::from_secs(10));
        }
    }
}
