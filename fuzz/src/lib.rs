//! What the fuzz targets share: a scratch folder per process for the decoders that read a
//! file (the daemon's loaders are fuzzed through their real path, file opening and size
//! checks included, not a copy that takes a string).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A folder of this process under the temporary folder (`$TMPDIR`, else `/tmp`), made once.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cwp-portwatch-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch folder can be made");
        dir
    })
}

/// Writes `data` to `name` in the scratch folder and returns its path.
pub fn file_with(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join(name);
    std::fs::write(&path, data).expect("the scratch file can be written");
    path
}
