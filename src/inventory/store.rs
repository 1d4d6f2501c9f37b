//! The inventory file: each watched agent's last complete snapshot and when its tasks were
//! fetched and requested, in `state_dir/inventory.json`, beside the state file.
//!
//! Why a file of its own: the state file is rewritten whenever a status changes and stays
//! small; snapshots are larger and change less often. Both share one write discipline
//! ([`crate::state::StateFile`]: temp file created new, `O_NOFOLLOW`, mode 0600, fsync,
//! rename, fsync of the folder) and one read discipline (regular file only, bounded size,
//! non-blocking open). A file that cannot be read is set aside as
//! `inventory.json.damaged-<unix time>` and the inventory starts empty: every agent's next
//! snapshot is a baseline again, never a flood of `port_opened`.
//!
//! Bounds: at most [`super::MAX_PORTS_PER_AGENT`] rows per agent and
//! [`MAX_INVENTORY_BYTES`] per file; a process name over [`super::MAX_PROCESS_BYTES`] is
//! damage. The engine drops the entries of agents no longer watched, so a removed agent's
//! inventory is forgotten at the next save.
//!
//! One size bound for both sides: [`MAX_INVENTORY_BYTES`] is what a start reads and what a
//! save writes. A save whose content would exceed it stops at the bound, keeps the previous
//! file and fails with `StateError.TooLarge` (logged at error level): a file the next start
//! would refuse is never written, since refusing it re-baselines every agent. (Raising the
//! bound until any inventory fits is not possible: the agents are not bounded, and at
//! [`super::MAX_PORTS_PER_AGENT`] ports with long process names one agent alone can take
//! tens of MiB.)
//!
//! Saving is streamed ([`InventoryFile::write_entries`]): the engine takes a cheap copy on
//! its thread ([`save_copy`]: snapshots are shared, not copied) and the JSON is encoded
//! straight into the temp file on a blocking thread, never whole in memory.

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{MAX_MACHINE_BYTES, MAX_PORTS_PER_AGENT, MAX_PROCESS_BYTES, PortKey, Snapshot};
use crate::state::{StateError, StateFile, check_version};

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "inventory.json";
/// Format version written into the file.
const VERSION: u32 = 1;
/// The largest inventory file read, and written (see the module docs): 10,000 agents with 30
/// ports each take about 20 MiB.
pub const MAX_INVENTORY_BYTES: u64 = 512 << 20;

/// What is kept of one agent.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredAgent {
    /// Its name when last stored (for `cwp-portwatch ports`).
    #[serde(default)]
    pub name: String,
    /// Unix seconds of its last complete snapshot: when its last completed task was seen.
    #[serde(default)]
    pub fetched_at: Option<u64>,
    /// Unix seconds of the last `CreateOpenPortTask` sent for it.
    #[serde(default)]
    pub requested_at: Option<u64>,
    /// What is reported open: its last complete snapshot, plus the ports that snapshot missed
    /// for the first time (`unconfirmed`); `None` before the first. Shared, never changed in
    /// place: a save copies the pointer, not the ports.
    #[serde(default)]
    pub snapshot: Option<Arc<Snapshot>>,
    /// Ports of `snapshot` its last complete fetch missed: reported closed only when the next
    /// complete fetch misses them too ([`super::confirm`]). Kept across a restart, which
    /// fetches again at start to confirm them. Written only when some are held, so a file
    /// without any stays readable by a version that does not know the field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unconfirmed: Vec<PortKey>,
    /// The expected-ports policy's findings raised for it and not cleared (reported once:
    /// a restart compares with them and repeats none). Written only when there are some,
    /// so files of agents without findings read as before.
    #[serde(default, skip_serializing_if = "no_findings")]
    pub findings: crate::policy::Findings,
}

fn no_findings(f: &crate::policy::Findings) -> bool {
    f.0.is_empty()
}

/// Every agent's inventory, by Uuid.
pub type InventoryMap = HashMap<String, StoredAgent>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    agents: InventoryMap,
}

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    agents: Agents<'a>,
}

/// The agents of a save copy, written as the JSON object [`InventoryMap`] reads back.
struct Agents<'a>(&'a [(String, StoredAgent)]);

impl Serialize for Agents<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(uuid, agent)| (uuid, agent)))
    }
}

/// What a save writes: every agent of `maps` (watched agents' and those kept while not
/// watched; their keys are distinct Uuids), copied on the engine's thread for a blocking
/// thread to encode. Cheap: a name and a Uuid per agent; the snapshots are shared.
pub fn save_copy(maps: &[&InventoryMap]) -> Vec<(String, StoredAgent)> {
    maps.iter()
        .flat_map(|m| m.iter())
        .map(|(u, a)| (u.clone(), a.clone()))
        .collect()
}

/// A writer that refuses to pass more than `left` bytes on, and says so in `over`.
struct Capped<'a, W> {
    inner: W,
    left: u64,
    over: &'a mut bool,
}

impl<W: Write> Write for Capped<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() as u64 > self.left {
            *self.over = true;
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                "the inventory file's bound",
            ));
        }
        let n = self.inner.write(buf)?;
        self.left -= n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The inventory file.
#[derive(Debug, Clone)]
pub struct InventoryFile {
    file: StateFile,
}

impl InventoryFile {
    /// `inventory.json` in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        InventoryFile {
            file: StateFile::in_dir(state_dir).sibling(FILE_NAME),
        }
    }

    /// `account`'s inventory in `state_dir`: `inventory.<account>.json`, the `default`
    /// account's `inventory.json` (as [`StateFile::for_account`] names the state files).
    pub fn for_account(state_dir: &Path, account: &str) -> Self {
        if account == crate::account_name::DEFAULT_ACCOUNT {
            return InventoryFile::in_dir(state_dir);
        }
        InventoryFile {
            file: StateFile::in_dir(state_dir).sibling(&format!("inventory.{account}.json")),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads it; a missing file is an empty inventory.
    pub fn load(&self) -> Result<InventoryMap, StateError> {
        self.load_capped(MAX_INVENTORY_BYTES)
    }

    fn load_capped(&self, max_bytes: u64) -> Result<InventoryMap, StateError> {
        let Some(file) = self.file.read_json::<FileIn>(max_bytes)? else {
            return Ok(HashMap::new());
        };
        check_version(self.path(), file.version, VERSION)?;
        for (uuid, agent) in &file.agents {
            if let Some(problem) = out_of_bounds(agent) {
                return Err(StateError::Damaged {
                    path: self.path().to_path_buf(),
                    reason: format!("agent {uuid}: {problem}"),
                });
            }
        }
        Ok(file.agents)
    }

    /// Reads it for a daemon that starts: an unreadable file is renamed (never overwritten)
    /// and the inventory starts empty; the error and the new name are returned for
    /// `state_damaged`.
    pub fn load_keeping_damaged(
        &self,
    ) -> Result<(InventoryMap, Option<crate::state::SetAside>), StateError> {
        match self.load() {
            Ok(map) => Ok((map, None)),
            Err(error) => {
                let moved_to = self.file.set_aside()?;
                Ok((
                    HashMap::new(),
                    Some(crate::state::SetAside { error, moved_to }),
                ))
            }
        }
    }

    /// The file's bytes for `map` (tests, tools: the engine streams [`Self::write_entries`]).
    pub fn encode(&self, map: &InventoryMap) -> Vec<u8> {
        self.encode_all(&[map])
    }

    /// The file's bytes for the entries of all `maps` (watched agents' and those kept while
    /// not watched), without merging them first.
    pub fn encode_all(&self, maps: &[&InventoryMap]) -> Vec<u8> {
        let copy = save_copy(maps);
        let out = FileOut {
            version: VERSION,
            agents: Agents(&copy),
        };
        // Strings and integers only: serialising to memory cannot fail.
        let mut bytes = serde_json::to_vec(&out).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes encoded bytes atomically; bytes over [`MAX_INVENTORY_BYTES`] are refused
    /// (`StateError.TooLarge`), the previous file kept.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        if bytes.len() as u64 > MAX_INVENTORY_BYTES {
            return Err(StateError::TooLarge {
                path: self.path().to_path_buf(),
                limit: MAX_INVENTORY_BYTES,
            });
        }
        self.file.write(bytes)
    }

    /// Encodes `entries` (a [`save_copy`]) straight into the temp file, 64 KiB buffered, and
    /// writes it atomically. Content past [`MAX_INVENTORY_BYTES`] stops the write: the
    /// previous file is kept and `StateError.TooLarge` returned.
    pub fn write_entries(&self, entries: &[(String, StoredAgent)]) -> Result<(), StateError> {
        self.write_entries_capped(entries, MAX_INVENTORY_BYTES)
    }

    fn write_entries_capped(
        &self,
        entries: &[(String, StoredAgent)],
        max_bytes: u64,
    ) -> Result<(), StateError> {
        let mut over = false;
        let written = self.file.write_streamed(&mut |file| {
            let mut out = io::BufWriter::with_capacity(
                64 * 1024,
                Capped {
                    inner: file,
                    left: max_bytes,
                    over: &mut over,
                },
            );
            let body = FileOut {
                version: VERSION,
                agents: Agents(entries),
            };
            serde_json::to_writer(&mut out, &body).map_err(io::Error::other)?;
            out.write_all(b"\n")?;
            out.flush()
        });
        match written {
            Err(_) if over => Err(StateError::TooLarge {
                path: self.path().to_path_buf(),
                limit: max_bytes,
            }),
            other => other,
        }
    }
}

/// The most findings one agent may have stored: one per port it may hold, plus as many
/// `require` entries (a file with more is damage, not a policy).
pub const MAX_FINDINGS_PER_AGENT: u64 = 2 * MAX_PORTS_PER_AGENT;

/// What exceeds the bounds in an agent's stored findings, if anything.
fn findings_out_of_bounds(findings: &crate::policy::Findings) -> Option<String> {
    use crate::policy::Finding;
    if findings.0.len() as u64 > MAX_FINDINGS_PER_AGENT {
        return Some(format!(
            "{} findings (at most {MAX_FINDINGS_PER_AGENT})",
            findings.0.len()
        ));
    }
    let too_long = findings.0.iter().any(|f| match f {
        Finding::Unexpected { process, rule, .. } => {
            process.len() > MAX_PROCESS_BYTES || rule.len() > MAX_PROCESS_BYTES
        }
        Finding::Missing {
            rule,
            spec,
            process,
            ..
        } => {
            rule.len() > MAX_PROCESS_BYTES
                || spec.len() > MAX_PROCESS_BYTES
                || process.len() > MAX_PROCESS_BYTES
        }
    });
    too_long.then(|| format!("a finding's text over {MAX_PROCESS_BYTES} bytes"))
}

/// What exceeds the bounds in a stored agent, if anything.
fn out_of_bounds(agent: &StoredAgent) -> Option<String> {
    let Some(snapshot) = agent.snapshot.as_ref() else {
        if !agent.unconfirmed.is_empty() {
            return Some("ports awaiting confirmation without a snapshot".to_owned());
        }
        return findings_out_of_bounds(&agent.findings);
    };
    if snapshot.ports.len() as u64 > MAX_PORTS_PER_AGENT {
        return Some(format!(
            "{} ports (at most {MAX_PORTS_PER_AGENT})",
            snapshot.ports.len()
        ));
    }
    if snapshot.machine_ip.len() > MAX_MACHINE_BYTES
        || snapshot.machine_name.len() > MAX_MACHINE_BYTES
        || agent.name.len() > MAX_MACHINE_BYTES
    {
        return Some(format!("a name over {MAX_MACHINE_BYTES} bytes"));
    }
    if snapshot
        .ports
        .iter()
        .any(|p| p.process.len() > MAX_PROCESS_BYTES)
        || agent
            .unconfirmed
            .iter()
            .any(|p| p.process.len() > MAX_PROCESS_BYTES)
    {
        return Some(format!("a process name over {MAX_PROCESS_BYTES} bytes"));
    }
    // A `cwp` port's user and path: as the API's answers are checked (bounded, no control,
    // separator or bidirectional character), so an edited file cannot put into the logs what
    // an answer could not.
    use crate::port_facts::{MAX_PATH_BYTES, MAX_USER_BYTES, checked_text};
    for facts in snapshot.ports.iter().filter_map(|p| p.cwp.as_deref()) {
        if checked_text(&facts.user, MAX_USER_BYTES).is_err()
            || checked_text(&facts.process_path, MAX_PATH_BYTES).is_err()
        {
            return Some("a port's user or process path that no answer could hold".to_owned());
        }
    }
    if let Some(problem) = findings_out_of_bounds(&agent.findings) {
        return Some(problem);
    }
    if agent.unconfirmed.len() > snapshot.ports.len() {
        return Some(format!(
            "{} ports awaiting confirmation of {} stored",
            agent.unconfirmed.len(),
            snapshot.ports.len()
        ));
    }
    None
}

#[cfg(test)]
mod findings_tests {
    use super::*;
    use crate::policy::{Finding, Findings, Severity};

    fn unexpected(port: u16, process: &str) -> Finding {
        Finding::Unexpected {
            port,
            process: process.into(),
            rule: "default".into(),
            severity: Severity::Critical,
        }
    }

    #[test]
    fn findings_round_trip_and_files_without_them_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        // A file written before findings existed.
        std::fs::write(
            f.path(),
            r#"{"version":1,"agents":{"u1":{"name":"db","snapshot":{"ports":[{"port":22,"process":"sshd","pid":1}]}}}}"#,
        )
        .unwrap();
        let map = f.load().unwrap();
        assert!(map["u1"].findings.0.is_empty());
        // Written only when some are held.
        let text = String::from_utf8(f.encode(&map)).unwrap();
        assert!(!text.contains("findings"), "{text}");
        let mut map = map;
        let entry = map.get_mut("u1").unwrap();
        entry.findings = Findings(
            [
                unexpected(6379, "redis-server"),
                Finding::Missing {
                    rule: "web".into(),
                    spec: "443/nginx".into(),
                    port: 443,
                    process: "nginx".into(),
                    severity: Severity::Warning,
                },
            ]
            .into_iter()
            .collect(),
        );
        f.write_entries(&save_copy(&[&map])).unwrap();
        assert_eq!(f.load().unwrap(), map);
    }

    #[test]
    fn findings_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        let mut map = InventoryMap::new();
        let long = "x".repeat(MAX_PROCESS_BYTES + 1);
        map.insert(
            "u".into(),
            StoredAgent {
                findings: Findings([unexpected(1, &long)].into_iter().collect()),
                ..Default::default()
            },
        );
        f.write(&f.encode(&map)).unwrap();
        let e = f.load().unwrap_err();
        assert!(e.to_string().contains("finding"), "{e}");
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::inventory::Port;

    fn agent(ports: &[(u16, &str)]) -> StoredAgent {
        StoredAgent {
            name: "db-01".into(),
            fetched_at: Some(5),
            requested_at: None,
            snapshot: Some(Arc::new(Snapshot::from_rows(
                ports
                    .iter()
                    .map(|(p, n)| Port {
                        port: *p,
                        process: (*n).into(),
                        pid: 1,
                        cwp: None,
                    })
                    .collect(),
                "10.0.0.1".into(),
                "db".into(),
            ))),
            unconfirmed: Vec::new(),
            findings: Default::default(),
        }
    }

    #[test]
    fn round_trip_private_file_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        assert!(f.load().unwrap().is_empty());
        let mut map = InventoryMap::new();
        map.insert("u1".into(), agent(&[(22, "sshd"), (3306, "my\u{1b}sqld")]));
        f.write(&f.encode(&map)).unwrap();
        assert_eq!(f.load().unwrap(), map);
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(f.path().file_name().unwrap(), FILE_NAME);
    }

    #[test]
    fn damaged_newer_or_oversized_files_are_set_aside_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        for bad in [
            "{\"version\":1,\"agents\":".to_owned(),
            "{\"version\":2,\"agents\":{}}".to_owned(),
            format!(
                "{{\"version\":1,\"agents\":{{\"u\":{{\"snapshot\":{{\"ports\":[{{\"port\":1,\"process\":\"{}\",\"pid\":1}}]}}}}}}}}",
                "x".repeat(MAX_PROCESS_BYTES + 1)
            ),
            "{\"version\":1,\"agents\":{\"u\":{\"snapshot\":{\"ports\":[{\"port\":70000,\"process\":\"a\",\"pid\":1}]}}}}".to_owned(),
        ] {
            std::fs::write(f.path(), &bad).unwrap();
            let (map, set_aside) = f.load_keeping_damaged().unwrap();
            assert!(map.is_empty());
            let moved = set_aside.expect("damaged").moved_to;
            assert!(moved.to_string_lossy().contains("inventory.json.damaged-"));
            assert_eq!(std::fs::read_to_string(&moved).unwrap(), bad);
            assert!(!f.path().exists());
        }
        std::fs::write(f.path(), "{\"version\":1,\"agents\":{}}   ").unwrap();
        let e = f.load_capped(8).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }

    #[test]
    fn a_file_at_the_bound_round_trips_and_one_over_it_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        let mut map = InventoryMap::new();
        for i in 0..50 {
            map.insert(format!("u{i}"), agent(&[(22, "sshd"), (3306, "mysqld")]));
        }
        let exact = f.encode(&map).len() as u64;
        // Streamed at exactly the bound: written, and read back under the same bound.
        f.write_entries_capped(&save_copy(&[&map]), exact).unwrap();
        assert_eq!(std::fs::metadata(f.path()).unwrap().len(), exact);
        assert_eq!(f.load_capped(exact).unwrap(), map);
        // One byte more than the bound allows: refused, loudly, and the previous file kept
        // (the reader would refuse the new one and re-baseline every agent).
        let before = std::fs::read(f.path()).unwrap();
        map.insert("u-new".into(), agent(&[(80, "nginx")]));
        let e = f
            .write_entries_capped(&save_copy(&[&map]), exact)
            .unwrap_err();
        assert_eq!(e.code(), "StateError.TooLarge");
        assert!(e.to_string().contains("previous file is kept"), "{e}");
        assert_eq!(std::fs::read(f.path()).unwrap(), before);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp file left: {leftovers:?}");
        // The streamed bytes are those of `encode`, byte for byte.
        f.write_entries(&save_copy(&[&map])).unwrap();
        assert_eq!(std::fs::read(f.path()).unwrap(), f.encode(&map));
    }

    #[test]
    fn held_closes_are_kept_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        let mut held = agent(&[(22, "sshd"), (3306, "mysqld")]);
        held.unconfirmed = vec![crate::inventory::PortKey {
            port: 3306,
            process: "mysqld".into(),
            proto: None,
            bind_ip: None,
        }];
        let mut map = InventoryMap::new();
        map.insert("u1".into(), held);
        map.insert("u2".into(), agent(&[(22, "sshd")]));
        f.write_entries(&save_copy(&[&map])).unwrap();
        assert_eq!(f.load().unwrap(), map);
        // Written only when some are held: an older reader still reads the rest.
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert_eq!(text.matches("unconfirmed").count(), 1, "{text}");
        // Held closes without a snapshot are damage.
        std::fs::write(
            f.path(),
            r#"{"version":1,"agents":{"u":{"unconfirmed":[{"port":1,"process":"a"}]}}}"#,
        )
        .unwrap();
        assert!(f.load().is_err());
    }
}

#[cfg(test)]
mod cwp_tests {
    use super::*;
    use crate::api::cwp::{AssetPort, BindIp, Proto};
    use crate::inventory::Port;

    fn stored(user: &str) -> StoredAgent {
        let row = AssetPort {
            proto: Proto::parse("tcp").unwrap(),
            bind_ip: BindIp::parse("127.0.0.1").unwrap(),
            port: 3306,
            process: "mysqld".into(),
            pid: None,
            user: user.into(),
            process_path: "/usr/sbin/mysqld".into(),
            first_seen: None,
        };
        let port = Port::from_asset(row);
        StoredAgent {
            unconfirmed: vec![port.owned_key()],
            snapshot: Some(Arc::new(Snapshot::from_rows(
                vec![port],
                "10.0.0.6".into(),
                "db".into(),
            ))),
            ..Default::default()
        }
    }

    /// A `cwp` port keeps its facts through the file (a close awaiting confirmation keeps
    /// its protocol and bind address); a yunjing file stays as it was written.
    #[test]
    fn cwp_ports_round_trip_and_a_hostile_user_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let f = InventoryFile::in_dir(dir.path());
        let mut map = InventoryMap::new();
        map.insert("u1".into(), stored("mysql"));
        f.write_entries(&save_copy(&[&map])).unwrap();
        let text = std::fs::read_to_string(f.path()).unwrap();
        assert!(text.contains("\"bind_ip\":\"127.0.0.1\""), "{text}");
        assert!(!text.contains("first_seen"), "unknown: not written: {text}");
        assert_eq!(f.load().unwrap(), map);

        let mut map = InventoryMap::new();
        map.insert("u1".into(), stored("root\u{1b}[31m"));
        f.write_entries(&save_copy(&[&map])).unwrap();
        let error = f.load().unwrap_err();
        assert!(
            error.to_string().contains("user or process path"),
            "{error}"
        );
    }
}
