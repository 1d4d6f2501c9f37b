//! The discovery file: [`super::membership::Membership`] saved beside the state file
//! (`discovery.json`, `discovery.<account>.json` for other accounts), so a restart keeps
//! the count of passes that missed a machine and who left when (what is known of those is in
//! the state and inventory files until `forget_after`). Written and read with the state
//! file's discipline ([`crate::state::StateFile`]: atomic, private, bounded, a damaged file
//! set aside, never overwritten).
//!
//! Bounds: at most [`MAX_REMEMBERED`] machines, each a Uuid, a name of at most
//! [`crate::watchlist::MAX_NAME_CHARS`] printable characters (at most 4 bytes each in JSON)
//! and two numbers: under [`MAX_DISCOVERY_BYTES`], which is also the read bound, so a file
//! this build writes is never refused at the next start (checked by a test).

use std::collections::HashMap;
use std::path::Path;

use super::membership::{MAX_REMEMBERED, Member, Membership};
use crate::agent_uuid::AgentUuid;
use crate::state::{SetAside, StateError, StateFile, check_version};

/// The format version written.
const VERSION: u32 = 1;
/// The largest discovery file read (and the most a written one can take, see the module).
pub const MAX_DISCOVERY_BYTES: u64 = 256 << 20;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    machines: HashMap<AgentUuid, Member>,
}

#[derive(serde::Serialize)]
struct FileOut<'a> {
    version: u32,
    machines: &'a HashMap<AgentUuid, Member>,
}

/// The discovery file of one account.
#[derive(Debug, Clone)]
pub struct DiscoveryFile {
    file: StateFile,
}

impl DiscoveryFile {
    /// `account`'s file in `state_dir`, named as [`StateFile::for_account`] names the state.
    pub fn for_account(state_dir: &Path, account: &str) -> Self {
        let name = if account == crate::config::DEFAULT_ACCOUNT {
            "discovery.json".to_owned()
        } else {
            format!("discovery.{account}.json")
        };
        DiscoveryFile {
            file: StateFile::in_dir(state_dir).sibling(&name),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Reads it; a missing file remembers nothing.
    pub fn load(&self) -> Result<Membership, StateError> {
        let Some(file) = self.file.read_json::<FileIn>(MAX_DISCOVERY_BYTES)? else {
            return Ok(Membership::default());
        };
        check_version(self.path(), file.version, VERSION)?;
        let damaged = |reason: String| StateError::Damaged {
            path: self.path().to_path_buf(),
            reason,
        };
        if file.machines.len() > MAX_REMEMBERED {
            return Err(damaged(format!(
                "{} machines (at most {MAX_REMEMBERED})",
                file.machines.len()
            )));
        }
        for (uuid, m) in &file.machines {
            if let Some(name) = &m.name
                && name.chars().count() > crate::watchlist::MAX_NAME_CHARS
            {
                return Err(damaged(format!("machine {uuid}: a name over the limit")));
            }
        }
        Ok(Membership::from_members(file.machines))
    }

    /// Reads it for a daemon that starts: an unreadable file is renamed (never overwritten)
    /// and nothing is remembered; the error and the new name are returned for
    /// `state_damaged`.
    pub fn load_keeping_damaged(&self) -> Result<(Membership, Option<SetAside>), StateError> {
        match self.load() {
            Ok(m) => Ok((m, None)),
            Err(error) => {
                let moved_to = self.file.set_aside()?;
                Ok((Membership::default(), Some(SetAside { error, moved_to })))
            }
        }
    }

    /// The file's bytes for `membership`.
    pub fn encode(&self, membership: &Membership) -> Vec<u8> {
        let out = FileOut {
            version: VERSION,
            machines: membership.members(),
        };
        // Strings and integers only: serialising to memory cannot fail.
        let mut bytes = serde_json::to_vec(&out).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes encoded bytes atomically.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        self.file.write(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: Option<String>, missing: u32, left_at: Option<i64>) -> Member {
        Member {
            name,
            missing,
            left_at,
        }
    }

    #[test]
    fn round_trips_and_a_missing_file_remembers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = DiscoveryFile::for_account(dir.path(), "prod");
        assert!(f.path().ends_with("discovery.prod.json"));
        assert!(
            DiscoveryFile::for_account(dir.path(), crate::config::DEFAULT_ACCOUNT)
                .path()
                .ends_with("discovery.json")
        );
        assert_eq!(f.load().unwrap(), Membership::default());
        let mut members = HashMap::new();
        members.insert(
            AgentUuid::from_value(1),
            member(Some("web-1".into()), 0, None),
        );
        members.insert(
            AgentUuid::from_value(2),
            member(None, 3, Some(1_700_000_000)),
        );
        let m = Membership::from_members(members);
        f.write(&f.encode(&m)).unwrap();
        assert_eq!(f.load().unwrap(), m);
    }

    #[test]
    fn a_damaged_file_is_set_aside_and_nothing_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let f = DiscoveryFile::for_account(dir.path(), "prod");
        std::fs::write(f.path(), "{\"version\":1,\"machines\":{\"x\":{}}}").unwrap();
        let (m, set_aside) = f.load_keeping_damaged().unwrap();
        assert_eq!(m, Membership::default());
        let set_aside = set_aside.unwrap();
        assert!(set_aside.moved_to.exists());
        assert!(!f.path().exists());
    }

    #[test]
    fn the_largest_file_written_is_within_the_read_bound() {
        // The longest entry: a name of MAX_NAME_CHARS 4-byte characters, the largest numbers.
        let name: String = "\u{10FFFF}".repeat(crate::watchlist::MAX_NAME_CHARS);
        let mut one = HashMap::new();
        one.insert(
            AgentUuid::from_value(u128::MAX),
            member(Some(name.clone()), u32::MAX, Some(i64::MIN)),
        );
        let f = DiscoveryFile::for_account(Path::new("/nonexistent"), "a");
        let entry = f.encode(&Membership::from_members(one)).len() as u64;
        // And one of quotes, which JSON escapes to 2 bytes each.
        let mut quotes = HashMap::new();
        quotes.insert(
            AgentUuid::from_value(u128::MAX),
            member(
                Some("\"".repeat(crate::watchlist::MAX_NAME_CHARS)),
                u32::MAX,
                Some(i64::MIN),
            ),
        );
        let quoted = f.encode(&Membership::from_members(quotes)).len() as u64;
        let largest = entry.max(quoted) * MAX_REMEMBERED as u64;
        assert!(
            largest <= MAX_DISCOVERY_BYTES,
            "{largest} > {MAX_DISCOVERY_BYTES}"
        );
    }
}
