//! Reading the state file: bounded, non-blocking, never through anything but a regular file;
//! and setting a file that cannot be read aside under a name of its own.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use super::format::FileIn;
use super::write::{rename_no_replace, sync_dir};
use super::{
    FILE_NAME, MAX_DAMAGED_NAMES, MAX_FILE_BYTES, SetAside, StateError, StateFile, VERSION,
    check_version,
};
use crate::agent_uuid::AgentUuid;
use crate::tracker::{Known, KnownMap};

impl StateFile {
    /// Reads the state; a missing file is an empty state.
    pub fn load(&self) -> Result<KnownMap, StateError> {
        self.load_capped(MAX_FILE_BYTES)
    }

    /// [`StateFile::load`] with the size limit given (tests use a small one).
    pub(super) fn load_capped(&self, max_bytes: u64) -> Result<KnownMap, StateError> {
        let mut known = HashMap::new();
        self.load_each_capped(max_bytes, &mut |uuid, k| {
            known.insert(uuid, k);
        })?;
        Ok(known)
    }

    /// Reads the state, giving each agent's entry to `each` as it is parsed (a missing file
    /// gives none). On an error, entries already given must be dropped: the file is damaged.
    pub fn load_each(&self, each: &mut dyn FnMut(AgentUuid, Known)) -> Result<(), StateError> {
        self.load_each_capped(MAX_FILE_BYTES, each)
    }

    pub(super) fn load_each_capped(
        &self,
        max_bytes: u64,
        each: &mut dyn FnMut(AgentUuid, Known),
    ) -> Result<(), StateError> {
        if let Some(version) = self.read_json_seed(max_bytes, FileIn { each })? {
            check_version(&self.path, version, VERSION)?;
        }
        Ok(())
    }

    /// Reads and parses the file as JSON; `None` when it is missing. Read only when it is a
    /// regular file of at most `max_bytes` (checked before and while reading), opened
    /// non-blocking: a FIFO planted here must not hang the start.
    pub fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        max_bytes: u64,
    ) -> Result<Option<T>, StateError> {
        self.read_json_seed(max_bytes, std::marker::PhantomData::<T>)
    }

    /// [`StateFile::read_json`] with a [`serde::de::DeserializeSeed`] (entries streamed to a
    /// callback).
    pub(super) fn read_json_seed<S: for<'de> serde::de::DeserializeSeed<'de>>(
        &self,
        max_bytes: u64,
        seed: S,
    ) -> Result<Option<<S as serde::de::DeserializeSeed<'static>>::Value>, StateError> {
        let damaged = |reason: String| StateError::Damaged {
            path: self.path.clone(),
            reason,
        };
        let io = |source| StateError::Io {
            path: self.path.clone(),
            source,
        };
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path)
        {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(io(source)),
        };
        let meta = file.metadata().map_err(io)?;
        if !meta.is_file() {
            return Err(damaged(
                "not a regular file (a folder, a FIFO or a device)".to_owned(),
            ));
        }
        let too_large = || damaged(format!("larger than {} MiB", max_bytes >> 20));
        if meta.len() > max_bytes {
            return Err(too_large());
        }
        // Streamed, not read whole: 100k agents' file would otherwise sit in memory beside
        // the map built from it. Bounded again while reading: the file may grow meanwhile.
        let mut limited = file.take(max_bytes.saturating_add(1));
        let reader = io::BufReader::with_capacity(64 * 1024, &mut limited);
        let mut de = serde_json::Deserializer::from_reader(reader);
        let parsed = seed.deserialize(&mut de).and_then(|v| de.end().map(|()| v));
        if limited.limit() == 0 {
            return Err(too_large());
        }
        parsed.map(Some).map_err(|e| damaged(e.to_string()))
    }

    /// Reads the state for a daemon that starts: a missing file is an empty state, and a
    /// file that cannot be read is renamed (see [`StateFile::set_aside`]) so the first save
    /// cannot overwrite it; the daemon then starts fresh. Fails only when such a file cannot
    /// be kept.
    pub fn load_keeping_damaged(&self) -> Result<(KnownMap, Option<SetAside>), StateError> {
        match self.load() {
            Ok(known) => Ok((known, None)),
            Err(error) => {
                let moved_to = self.set_aside()?;
                Ok((HashMap::new(), Some(SetAside { error, moved_to })))
            }
        }
    }

    /// Renames the state file to `state.json.damaged-<unix time>` (`….1`, `….2`, … when that
    /// name is taken), never over an existing file, and makes the rename durable.
    pub fn set_aside(&self) -> Result<PathBuf, StateError> {
        let failed = |source| StateError::SetAside {
            path: self.path.clone(),
            source,
        };
        let stamp = crate::clock::unix_now();
        // `state.json` or a sibling's (`inventory.json`) own name.
        let own = self.path.file_name().map_or_else(
            || FILE_NAME.to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
        for n in 0..MAX_DAMAGED_NAMES {
            let name = match n {
                0 => format!("{own}.damaged-{stamp}"),
                n => format!("{own}.damaged-{stamp}.{n}"),
            };
            let target = self.path.with_file_name(name);
            match rename_no_replace(&self.path, &target) {
                Ok(()) => {
                    sync_dir(self.dir()).map_err(failed)?;
                    return Ok(target);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(failed(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{MAX_DAMAGED_NAMES} damaged copies from this second exist already"),
        )))
    }
}
