//! The state file: each agent's last status, when it was seen, and its RequestId.
//!
//! `state_dir/state.json`, written atomically (temp file + fsync + rename + fsync of the
//! folder), so a crash at any moment leaves either the old or the new file, never a torn
//! one. A damaged or missing file is reported and the daemon starts fresh rather than
//! refusing to run.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::tracker::KnownMap;

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "state.json";
/// Format version written into the file.
const VERSION: u32 = 1;

/// Errors reading or writing state.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Could not read or write.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not a state file we can read.
    #[error("{path}: damaged state file: {reason}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

impl StateError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            StateError::Io { .. } => "StateError.Io",
            StateError::Damaged { .. } => "StateError.Damaged",
        }
    }
}

/// What is read: entries go straight into the map the tracker keeps (no second copy of
/// 100k agents while loading).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    agents: KnownMap,
}

/// What is written: borrowed, so saving copies nothing.
#[derive(Debug, Serialize)]
struct FileOut<'a> {
    version: u32,
    agents: &'a KnownMap,
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// The state file in `state_dir`.
    pub fn in_dir(state_dir: &Path) -> Self {
        StateFile {
            path: state_dir.join(FILE_NAME),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<KnownMap, StateError> {
        // Streamed, not read whole: 100k agents' file would otherwise sit in memory beside
        // the map built from it.
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HashMap::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let reader = std::io::BufReader::with_capacity(64 * 1024, file);
        let file: FileIn = serde_json::from_reader(reader).map_err(|e| StateError::Damaged {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        if file.version != VERSION {
            return Err(StateError::Damaged {
                path: self.path.clone(),
                reason: format!("version {} (this build reads {VERSION})", file.version),
            });
        }
        Ok(file.agents)
    }

    /// The file's bytes for `known` (cheap enough for the dispatcher; the slow part, the
    /// write with its fsyncs, is [`StateFile::write`]).
    pub fn encode(&self, known: &KnownMap) -> Vec<u8> {
        let file = FileOut {
            version: VERSION,
            agents: known,
        };
        // Strings and integers only: serialising to memory cannot fail.
        let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Writes encoded state atomically: temp file, fsync, rename, fsync of the folder.
    pub fn write(&self, bytes: &[u8]) -> Result<(), StateError> {
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io)?;
        let tmp = self
            .path
            .with_extension(format!("json.tmp.{}", std::process::id()));
        let result = (|| {
            // Created new, mode 0600, never through an existing path or link: a leftover of
            // a crashed run with the same pid (or a link planted there) is removed first,
            // and `create_new` (O_EXCL) refuses anything that appears meanwhile.
            match fs::remove_file(&tmp) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            // The rename itself is durable only once the folder is synced.
            File::open(dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io)
    }

    /// Encodes and writes the state atomically.
    pub fn save(&self, known: &KnownMap) -> Result<(), StateError> {
        self.write(&self.encode(known))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::Known;

    #[test]
    fn round_trip_missing_and_damaged() {
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        assert!(s.load().unwrap().is_empty());
        let mut known = HashMap::new();
        known.insert(
            "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1".into(),
            Known {
                status: crate::status::Status::Complete,
                request_id: "r1".into(),
                seen_at: 42,
            },
        );
        s.save(&known).unwrap();
        assert_eq!(s.load().unwrap(), known);
        fs::write(s.path(), b"{\"version\":1,\"agents\":{\"x\":").unwrap();
        let e = s.load().unwrap_err();
        assert_eq!(e.code(), "StateError.Damaged");
        fs::write(s.path(), [0xff, 0xfe, 0x00]).unwrap();
        assert_eq!(s.load().unwrap_err().code(), "StateError.Damaged");
        // A crash mid-write leaves a temp file beside the state: the state still loads.
        s.save(&known).unwrap();
        fs::write(
            dir.path().join("state.json.tmp.999"),
            b"{\"version\":1,\"ag",
        )
        .unwrap();
        assert_eq!(s.load().unwrap(), known);
        fs::remove_file(dir.path().join("state.json.tmp.999")).unwrap();
        // No temp files are left behind.
        s.save(&known).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn temp_files_are_new_private_and_never_written_through_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let s = StateFile::in_dir(dir.path());
        let victim = dir.path().join("victim");
        fs::write(&victim, b"precious").unwrap();
        let tmp = dir
            .path()
            .join(format!("state.json.tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        s.save(&HashMap::new()).unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert!(
            fs::symlink_metadata(&tmp).is_err(),
            "the planted link is gone"
        );
        let mode = fs::metadata(s.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
}
