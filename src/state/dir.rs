//! The state folder checked before the daemon polls: [`prepare_dir`].

use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::Path;

use super::write::{create_new_private, remove_leftover};
use super::{FILE_NAME, StateError, shown};

/// Makes sure `dir` can hold the state: a folder (created with its missing parents, mode
/// 0700, when absent), not writable by group or others, in which we can create and remove a
/// file. Run by `check` and before `run` polls, so a state that could not be persisted, or
/// could be swapped by another user, is an error at once and not a silent loss later.
pub fn prepare_dir(dir: &Path) -> Result<(), StateError> {
    let unusable = |problem: String, fix: String| StateError::Unusable {
        dir: dir.to_path_buf(),
        problem,
        fix,
    };
    let shown_dir = shown(dir);
    let meta = match fs::metadata(dir) {
        Ok(meta) => meta,
        // Missing, or a file where a parent folder should be: creating it says which.
        Err(e)
            if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENOTDIR) =>
        {
            if let Ok(target) = fs::read_link(dir) {
                // A relative target is relative to the link's folder.
                let target = dir.parent().unwrap_or(Path::new("/")).join(target);
                return Err(unusable(
                    format!(
                        "is a symbolic link to {}, which does not exist",
                        shown(&target)
                    ),
                    format!(
                        "create the folder it points to (install -d -m 700 {}) or set \
                         state_dir to a folder",
                        shown(&target)
                    ),
                ));
            }
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    unusable(
                        format!("cannot create the folder ({e})"),
                        format!(
                            "create it (install -d -m 700 {shown_dir}) or set state_dir to a \
                             folder the daemon's user can write"
                        ),
                    )
                })?;
            fs::metadata(dir).map_err(|e| {
                unusable(
                    format!("cannot be read after creating it ({e})"),
                    "set state_dir to a folder the daemon's user can write".to_owned(),
                )
            })?
        }
        Err(e) => {
            return Err(unusable(
                format!("cannot be read ({e})"),
                "set state_dir to a folder the daemon's user can read and write".to_owned(),
            ));
        }
    };
    if !meta.is_dir() {
        return Err(unusable(
            "is not a folder".to_owned(),
            "set state_dir to a folder (it is created when missing)".to_owned(),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(unusable(
            format!(
                "is writable by other users (mode {mode:04o}), who could replace the state file"
            ),
            format!("chmod 700 {shown_dir}, or set state_dir to a private folder"),
        ));
    }
    // The probe: created new, never through a link, as the state's temp file is.
    let probe = dir.join(format!(".{FILE_NAME}.probe.{}", std::process::id()));
    remove_leftover(&probe);
    let cannot_write = |e: io::Error| {
        unusable(
            format!("cannot write in it ({e})"),
            "set state_dir to a folder on a writable file system that the daemon's user can \
             write (not under /proc or /sys)"
                .to_owned(),
        )
    };
    create_new_private(&probe).map_err(cannot_write)?;
    fs::remove_file(&probe).map_err(cannot_write)
}
