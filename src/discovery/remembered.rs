//! The discovery file: [`super::membership::Membership`] saved beside the state file
//! (`discovery.json`, `discovery.<account>.json` for other accounts), so a restart keeps
//! the count of passes that missed a machine and who left when (what is known of those is in
//! the state and inventory files until `forget_after`). Written and read with the state
//! file's discipline ([`crate::state::StateFile`]: atomic, private, bounded, a damaged file
//! set aside, never overwritten).
//!
//! Bounds: at most [`MAX_REMEMBERED`] machines, each a Uuid, a name of at most
//! [`crate::watchlist::MAX_NAME_CHARS`] printable characters (at most 4 bytes each in JSON),
//! two numbers, and its host facts (tags within
//! [`crate::api::machines::MAX_MACHINE_TAG_BYTES`], a region id, a flag): under
//! [`MAX_DISCOVERY_BYTES`], which is also the read bound, so a file this build writes is
//! never refused at the next start (checked by a test). Facts out of those bounds make the
//! file damaged, as an overlong name does.
//!
//! Files written before host facts (issue 22) have no `facts` key and load as machines
//! without facts; the next pass fills them in.

use std::collections::HashMap;
use std::path::Path;

use super::membership::{MAX_REMEMBERED, Member, Membership};
use crate::agent_uuid::AgentUuid;
use crate::state::{SetAside, StateError, StateFile, check_version};
#[cfg(test)]
use crate::watchlist::Facts;
#[cfg(test)]
use std::sync::Arc;

/// The format version written.
const VERSION: u32 = 1;
/// The largest discovery file read (and the most a written one can take, see the module).
pub const MAX_DISCOVERY_BYTES: u64 = 320 << 20;

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
        let name = if account == crate::account_name::DEFAULT_ACCOUNT {
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
            facts: None,
        }
    }

    #[test]
    fn round_trips_and_a_missing_file_remembers_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let f = DiscoveryFile::for_account(dir.path(), "prod");
        assert!(f.path().ends_with("discovery.prod.json"));
        assert!(
            DiscoveryFile::for_account(dir.path(), crate::account_name::DEFAULT_ACCOUNT)
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

    /// Facts round-trip; a file from before them (no `facts` key) loads, without facts; facts
    /// out of a listing's bounds make the file damaged.
    #[test]
    fn facts_round_trip_and_old_files_load_without_them() {
        let dir = tempfile::tempdir().unwrap();
        let f = DiscoveryFile::for_account(dir.path(), crate::account_name::DEFAULT_ACCOUNT);
        let mut members = HashMap::new();
        members.insert(
            AgentUuid::from_value(1),
            Member {
                facts: Facts::new(["web", "prod"], Some("ap-guangzhou".into()), true).shared(),
                ..member(Some("web-1".into()), 1, None)
            },
        );
        members.insert(
            AgentUuid::from_value(2),
            Member {
                facts: Facts::new(Vec::<&str>::new(), Some("ap-beijing".into()), false).shared(),
                ..member(None, 0, None)
            },
        );
        members.insert(AgentUuid::from_value(3), member(None, 0, None));
        let m = Membership::from_members(members);
        let bytes = f.encode(&m);
        let text = String::from_utf8(bytes.clone()).unwrap();
        assert!(
            text.contains(r#""facts":{"tags":["prod","web"],"region":"ap-guangzhou","wan":true}"#),
            "{text}"
        );
        assert!(
            text.contains(r#""facts":{"region":"ap-beijing"}"#),
            "{text}"
        );
        assert_eq!(
            text.matches("facts").count(),
            2,
            "none for a machine without: {text}"
        );
        f.write(&bytes).unwrap();
        assert_eq!(f.load().unwrap(), m);

        // As written before issue 22.
        std::fs::write(
            f.path(),
            r#"{"version":1,"machines":{"00000000-0000-0000-0000-000000000001":{"name":"web-1","missing":2},"00000000-0000-0000-0000-000000000002":{"left_at":5}}}"#,
        )
        .unwrap();
        let old = f.load().unwrap();
        let one = &old.members()[&AgentUuid::from_value(1)];
        assert_eq!(
            (one.name.as_deref(), one.missing, &one.facts),
            (Some("web-1"), 2, &None)
        );
        assert_eq!(old.members().len(), 2);

        // Out of bounds: damaged, with the reason.
        let too_many: Vec<String> = (0..=crate::watchlist::MAX_TAGS)
            .map(|i| format!("\"t{i}\""))
            .collect();
        for facts in [
            format!("{{\"tags\":[{}]}}", too_many.join(",")),
            r#"{"tags":["a\u001b[2J"]}"#.to_owned(),
            r#"{"tags":["a","a"]}"#.to_owned(),
            r#"{"tags":[""]}"#.to_owned(),
            r#"{"region":"AP/../x"}"#.to_owned(),
            r#"{"tags":"web"}"#.to_owned(),
            r#"{"colour":"red"}"#.to_owned(),
        ] {
            std::fs::write(
                f.path(),
                format!(
                    r#"{{"version":1,"machines":{{"00000000-0000-0000-0000-000000000001":{{"facts":{facts}}}}}}}"#
                ),
            )
            .unwrap();
            let e = f.load().unwrap_err();
            assert!(
                e.to_string().contains("facts")
                    || e.to_string().contains("colour")
                    || e.to_string().contains("sequence"),
                "{facts}: {e}"
            );
        }
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

    /// The facts of the largest entry: tags filling the byte budget with characters JSON
    /// escapes (or 4-byte ones), the longest region, the flag.
    fn largest_facts(tag_char: &str) -> Option<Arc<Facts>> {
        use crate::api::machines::{MAX_MACHINE_TAG_BYTES, MAX_REGION_CHARS, machine_tags};
        let per_tag = MAX_MACHINE_TAG_BYTES / crate::watchlist::MAX_TAGS;
        let tags: Vec<String> = (0..crate::watchlist::MAX_TAGS)
            .map(|i| {
                let mut t = format!("{i:x}");
                while t.len() + tag_char.len() <= per_tag {
                    t.push_str(tag_char);
                }
                t
            })
            .collect();
        let kept = machine_tags(tags.iter().map(String::as_str));
        assert_eq!(kept.len(), crate::watchlist::MAX_TAGS, "all kept");
        Facts::new(kept, Some("a".repeat(MAX_REGION_CHARS).into()), true).shared()
    }

    #[test]
    fn the_largest_file_written_is_within_the_read_bound() {
        // The longest entry: a name of MAX_NAME_CHARS 4-byte characters, the largest numbers.
        let name: String = "\u{10FFFF}".repeat(crate::watchlist::MAX_NAME_CHARS);
        let mut one = HashMap::new();
        one.insert(
            AgentUuid::from_value(u128::MAX),
            Member {
                facts: largest_facts("\u{10FFFF}"),
                ..member(Some(name.clone()), u32::MAX, Some(i64::MIN))
            },
        );
        let f = DiscoveryFile::for_account(Path::new("/nonexistent"), "a");
        let entry = f.encode(&Membership::from_members(one)).len() as u64;
        // And one of quotes, which JSON escapes to 2 bytes each.
        let mut quotes = HashMap::new();
        quotes.insert(
            AgentUuid::from_value(u128::MAX),
            Member {
                facts: largest_facts("\""),
                ..member(
                    Some("\"".repeat(crate::watchlist::MAX_NAME_CHARS)),
                    u32::MAX,
                    Some(i64::MIN),
                )
            },
        );
        let quoted = f.encode(&Membership::from_members(quotes)).len() as u64;
        let largest = entry.max(quoted) * MAX_REMEMBERED as u64;
        println!("largest entry {} bytes, file {largest}", entry.max(quoted));
        assert!(
            largest <= MAX_DISCOVERY_BYTES,
            "{largest} > {MAX_DISCOVERY_BYTES}"
        );
    }
}
