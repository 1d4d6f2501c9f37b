//! The real binary as the tests run it. Every test that starts `cwp-portwatch` does it through
//! [`command`]: a clean environment (nothing from the caller's service manager, shell or
//! profile), `$HOME` in the test's own temporary folder, the simulator's test credentials.
//!
//! - [`App`]: a temporary folder with `config.toml`, `watchlist.toml` and `state/`, removed on
//!   drop; [`App::for_simulator`] points the config at a simulator on `127.0.0.1:0`.
//! - [`Running`]: a started process whose stderr is read line by line as it comes (JSON lines
//!   parsed), with waits for a condition over those lines (never a fixed sleep), signals, and
//!   [`Running::stop`] (SIGTERM, then everything it printed).
//! - [`NotifySocket`]: a `$NOTIFY_SOCKET` to wait for `READY=1` and the other sd_notify messages.
//! - [`run_within`]: a short command run to the end, killed if it outlives its limit, so a test
//!   fails instead of hanging.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cwp_portwatch::state::StateFile;
use cwp_simulator::{DEFAULT_SECRET_ID, DEFAULT_SECRET_KEY};
use serde_json::Value;
use tempfile::TempDir;

use super::uuid;

/// How long a daemon may take to exit after SIGTERM.
pub const STOP_LIMIT: Duration = Duration::from_secs(15);

/// Inherited variables that would change what the binary does (where it logs, whom it
/// notifies, where it finds config, state and credentials).
const SCRUBBED: [&str; 10] = [
    "CREDENTIALS_DIRECTORY",
    "CWP_PORTWATCH_CONFIG",
    "STATE_DIRECTORY",
    "XDG_STATE_HOME",
    "JOURNAL_STREAM",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "TENCENTCLOUD_SESSION_TOKEN",
    "RUST_LOG",
];

/// `cwp-portwatch` with `home` as `$HOME`, none of [`SCRUBBED`], the simulator's documented
/// test credentials in the environment (a test may set others), stdin closed, stdout and
/// stderr piped.
pub fn command(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cwp-portwatch"));
    for var in SCRUBBED {
        c.env_remove(var);
    }
    c.env("HOME", home)
        .env("TENCENTCLOUD_SECRET_ID", DEFAULT_SECRET_ID)
        .env("TENCENTCLOUD_SECRET_KEY", DEFAULT_SECRET_KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Agents `uuid(i)` for `i` in `range`, all called `name`, for [`App::write_watchlist`].
pub fn agents(range: std::ops::Range<usize>, name: &str) -> Vec<(String, String)> {
    range.map(|i| (uuid(i), name.to_owned())).collect()
}

/// A config for a daemon against the simulator at `endpoint`: `watchlist.toml` and `state/`
/// beside it, sub-second poll intervals, JSON logs at `info`.
pub fn daemon_config(endpoint: &str) -> String {
    format!(
        "watchlist = \"watchlist.toml\"\nstate_dir = \"state\"\n[api]\nendpoint = \"{endpoint}\"\n\
         timeout = \"2s\"\n[poll]\ninterval = \"300ms\"\ncollecting_interval = \"200ms\"\n\
         offline_interval = \"300ms\"\n[log]\nformat = \"json\"\nlevel = \"info\"\n"
    )
}

/// A temporary folder for the binary (also its `$HOME`), removed on drop.
pub struct App {
    dir: TempDir,
}

impl App {
    /// An empty folder.
    pub fn new() -> App {
        App {
            dir: tempfile::Builder::new()
                .prefix("cwp-portwatch-test-")
                .tempdir()
                .expect("a temporary folder"),
        }
    }

    /// A folder with [`daemon_config`] for `endpoint` and a watchlist of `agents`.
    pub fn for_simulator(endpoint: &str, agents: &[(String, String)]) -> App {
        let app = App::new();
        app.write_watchlist(agents);
        app.write("config.toml", daemon_config(endpoint));
        app
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `config.toml` in the folder (what [`App::with_config`] passes).
    pub fn config(&self) -> PathBuf {
        self.path().join("config.toml")
    }

    /// Writes `name` (relative to the folder); returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    /// Writes `watchlist.toml`: one `[[agent]]` per (Uuid, name).
    pub fn write_watchlist(&self, agents: &[(String, String)]) {
        let mut w = String::new();
        for (u, name) in agents {
            w.push_str(&format!("[[agent]]\nuuid = \"{u}\"\nname = \"{name}\"\n"));
        }
        self.write("watchlist.toml", w);
    }

    /// The state file in `state/`, as the daemon writes it.
    pub fn state(&self) -> StateFile {
        StateFile::in_dir(&self.path().join("state"))
    }

    /// The binary with `args` and this folder as `$HOME` (see [`command`]).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = command(self.path());
        c.args(args);
        c
    }

    /// The binary with `args` and `--config <folder>/config.toml`.
    pub fn with_config(&self, args: &[&str]) -> Command {
        let mut c = self.command(args);
        c.arg("--config").arg(self.config());
        c
    }

    /// Starts `run --config <folder>/config.toml` with `envs` added.
    pub fn daemon(&self, envs: &[(&str, &str)]) -> Running {
        let mut c = self.with_config(&["run"]);
        c.envs(envs.iter().copied());
        Running::spawn(c)
    }
}

/// What a process printed, as it comes: raw stdout, stderr line by line, and each stderr
/// line parsed as JSON (a line that is not JSON becomes a JSON string).
#[derive(Default)]
struct Captured {
    stdout: Vec<u8>,
    lines: Vec<String>,
    events: Vec<Value>,
}

/// A started process; killed on drop if still running.
pub struct Running {
    child: Child,
    captured: Arc<Mutex<Captured>>,
    readers: Vec<JoinHandle<()>>,
}

/// A process that ended (or was killed at its time limit).
pub struct Finished {
    /// `None`: still running at its time limit, killed.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    /// stderr, one `\n` after each line.
    pub stderr: String,
    /// stderr's lines as JSON (a line that is not JSON is a JSON string).
    pub events: Vec<Value>,
}

impl Finished {
    pub fn code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    /// The JSON events called `event`.
    pub fn named(&self, event: &str) -> Vec<Value> {
        named(&self.events, event)
    }
}

fn named(events: &[Value], event: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|v| v["event"] == event)
        .cloned()
        .collect()
}

/// How often the waits look again.
const POLL: Duration = Duration::from_millis(20);

impl Running {
    /// Spawns `cmd` (which must pipe stdout and stderr, as [`command`] does) and starts
    /// reading both.
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd.spawn().expect("the binary starts");
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let mut stderr = BufReader::new(child.stderr.take().expect("stderr is piped"));
        let out = captured.clone();
        let stdout_reader = std::thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = stdout.read(&mut chunk) {
                out.lock().unwrap().stdout.extend_from_slice(&chunk[..n]);
            }
        });
        let err = captured.clone();
        let stderr_reader = std::thread::spawn(move || {
            let mut bytes = Vec::new();
            while let Ok(1..) = stderr.read_until(b'\n', &mut bytes) {
                let line = String::from_utf8_lossy(&bytes)
                    .trim_end_matches(['\n', '\r'])
                    .to_owned();
                let event = serde_json::from_str::<Value>(&line)
                    .unwrap_or_else(|_| Value::String(line.clone()));
                let mut captured = err.lock().unwrap();
                captured.lines.push(line);
                captured.events.push(event);
                bytes.clear();
            }
        });
        Running {
            child,
            captured,
            readers: vec![stdout_reader, stderr_reader],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `sig` (a `libc::SIG*`).
    pub fn signal(&self, sig: i32) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) on our own child, which is not reaped before `Running` is consumed
        // or dropped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
    }

    /// The exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().unwrap()
    }

    /// stderr's lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.captured.lock().unwrap().lines.clone()
    }

    /// The JSON events so far called `event`.
    pub fn named(&self, event: &str) -> Vec<Value> {
        named(&self.captured.lock().unwrap().events, event)
    }

    /// Waits until `holds` over stderr's JSON lines so far. Panics with the output when it
    /// does not within `within`, or the process exits first.
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        holds: impl Fn(&[Value]) -> bool,
    ) {
        self.wait_until(what, within, |c| holds(&c.events)).await
    }

    /// Waits until `holds` over stderr's lines so far (any format). Panics as
    /// [`Running::wait_for`].
    pub async fn wait_for_lines(
        &mut self,
        what: &str,
        within: Duration,
        holds: impl Fn(&[String]) -> bool,
    ) {
        self.wait_until(what, within, |c| holds(&c.lines)).await
    }

    async fn wait_until(
        &mut self,
        what: &str,
        within: Duration,
        holds: impl Fn(&Captured) -> bool,
    ) {
        let deadline = Instant::now() + within;
        loop {
            if holds(&self.captured.lock().unwrap()) {
                return;
            }
            if let Some(status) = self.exited() {
                // What it printed last may still be in the pipe.
                self.join_readers();
                if holds(&self.captured.lock().unwrap()) {
                    return;
                }
                panic!(
                    "exited ({status}) before {what}; stderr:\n{}",
                    self.lines().join("\n")
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "no {what} within {within:?}; stderr:\n{}",
                    self.lines().join("\n")
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM, then [`Running::finish`] within [`STOP_LIMIT`].
    pub async fn stop(self) -> Finished {
        self.signal(libc::SIGTERM);
        self.finish(STOP_LIMIT).await
    }

    /// Waits for the exit (killing the process after `within`) and for all it printed.
    pub async fn finish(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        while self.exited().is_none() && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        self.collect()
    }

    /// [`Running::finish`] for tests without a runtime.
    pub fn finish_blocking(mut self, within: Duration) -> Finished {
        let deadline = Instant::now() + within;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(POLL);
        }
        self.collect()
    }

    /// Kills the process if it still runs, reaps it, and reads the pipes to their end.
    fn collect(mut self) -> Finished {
        let status = match self.exited() {
            Some(status) => Some(status),
            None => {
                let _ = self.child.kill();
                let _ = self.child.wait();
                None
            }
        };
        self.join_readers();
        let captured = std::mem::take(&mut *self.captured.lock().unwrap());
        let mut stderr = String::new();
        for line in &captured.lines {
            stderr.push_str(line);
            stderr.push('\n');
        }
        Finished {
            status,
            stdout: String::from_utf8_lossy(&captured.stdout).into_owned(),
            stderr,
            events: captured.events,
        }
    }

    /// After the exit: the pipes close, so the readers end promptly.
    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            reader.join().expect("output reader");
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` to the end; kills it after `limit` (then [`Finished::status`] is `None`).
pub fn run_within(cmd: Command, limit: Duration) -> Finished {
    Running::spawn(cmd).finish_blocking(limit)
}

/// A `$NOTIFY_SOCKET` in a folder: what a service manager receives from sd_notify.
pub struct NotifySocket {
    socket: tokio::net::UnixDatagram,
    path: PathBuf,
    received: Vec<String>,
}

impl NotifySocket {
    /// Binds `notify.sock` in `dir` (needs a tokio runtime).
    pub fn bind(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = tokio::net::UnixDatagram::bind(&path).expect("notify socket binds");
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// For `NOTIFY_SOCKET=`.
    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }

    /// Every datagram so far, oldest first.
    pub fn received(&self) -> &[String] {
        &self.received
    }

    /// Receives until `holds` over everything received so far; false if it does not within
    /// `within`.
    pub async fn wait_for(&mut self, within: Duration, holds: impl Fn(&[String]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        while !holds(&self.received) {
            match tokio::time::timeout_at(deadline, self.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => self
                    .received
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => return false,
            }
        }
        true
    }

    /// Receives until no datagram that `is` arrives for `gap` (true), or `within` passes
    /// first (false). For silences: a wedged daemon may send nothing at all, so "no ping for a
    /// while" cannot be read off the datagrams alone.
    pub async fn quiet_for(
        &mut self,
        within: Duration,
        gap: Duration,
        is: impl Fn(&String) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut buf = vec![0u8; 4096];
        let mut last = tokio::time::Instant::now();
        loop {
            let quiet_at = last + gap;
            if quiet_at > deadline {
                return false;
            }
            match tokio::time::timeout_at(quiet_at, self.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let datagram = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if is(&datagram) {
                        last = tokio::time::Instant::now();
                    }
                    self.received.push(datagram);
                }
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => return true,
            }
        }
    }
}

/// Does a datagram carry `line` (e.g. `READY=1`) as one of its lines?
pub fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}
