//! A real etcd for tests (and the `ha_replication` bench, which includes this file by path):
//! `/usr/bin/etcd` on 127.0.0.1 with free client and peer ports, its data in a temp dir,
//! killed on drop. [`TestEtcd::stop`] kills it and keeps its data, [`TestEtcd::start`] runs it
//! again on the same ports and data, for restart tests.
//!
//! Uses only `std`, `tempfile` and `etcd_client` (no `crate::` path) so that the bench can
//! include it with `#[path]`.

#![allow(dead_code)] // each user (lib tests, the bench) uses a part

// Its own test is in `crate::ha::replicate`'s tests (a test module here would be compiled,
// unused, into the bench).

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary the tests run (Debian's `etcd-server`).
pub const ETCD: &str = "/usr/bin/etcd";

/// How long etcd may take to answer after its start (a loaded 2-core machine).
const READY_WITHIN: Duration = Duration::from_secs(30);

/// A running (or stopped) etcd of one test.
pub struct TestEtcd {
    // Held for its Drop (removes the data dir after the child is killed: field order).
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    data: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestEtcd {
    /// Starts a new etcd and waits until it answers. Panics (it is a test fixture) with the
    /// tail of etcd's log when it does not.
    pub async fn new() -> TestEtcd {
        // Free ports are picked by binding port 0 and closing; another process may take one
        // before etcd binds it, so a start that dies at once is retried with new ports.
        let mut last = String::new();
        for _ in 0..5 {
            let (client_port, peer_port) = (free_port(), free_port());
            if client_port == peer_port {
                continue;
            }
            let dir = tempfile::tempdir().expect("temp dir for etcd");
            let mut etcd = TestEtcd {
                child: None,
                client_port,
                peer_port,
                data: dir.path().join("data"),
                log: dir.path().join("etcd.log"),
                _dir: dir,
            };
            match etcd.try_start().await {
                Ok(()) => return etcd,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    /// The client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// A connected client.
    pub async fn client(&self) -> etcd_client::Client {
        connect(&self.endpoint())
            .await
            .unwrap_or_else(|e| panic!("connecting to the test etcd: {e}"))
    }

    /// Kills etcd (SIGKILL) and waits for it; keeps its data dir.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data (after [`TestEtcd::stop`]), waits until
    /// it answers.
    pub async fn start(&mut self) {
        assert!(self.child.is_none(), "etcd is already running");
        if let Err(e) = self.try_start().await {
            self.stop();
            panic!("etcd did not start again: {e}");
        }
    }

    /// The data dir (to look at or damage in a test).
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    async fn try_start(&mut self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("etcd log {}: {e}", self.log.display()))?;
        let log2 = log.try_clone().map_err(|e| format!("etcd log: {e}"))?;
        let child = Command::new(ETCD)
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            // One member: a short election makes it leader fast (the default waits ~1 s).
            .arg("--heartbeat-interval=20")
            .arg("--election-timeout=200")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run {ETCD}: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited ({status}); log:\n{}", self.log_tail()));
            }
            if let Ok(mut c) = connect(&client).await
                && c.get("ready-probe", None).await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd did not answer within {READY_WITHIN:?}; log:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        text[start..].to_owned()
    }
}

impl Drop for TestEtcd {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connect(endpoint: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(options)).await
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}
