//! Profile files: the INI files the Tencent Cloud SDKs and tccli write
//! (`~/.tencentcloud/credentials`, `/etc/tencentcloud/credentials`), read for
//! `source = "profile"` and by the default chain.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{CredentialError, CredentialSource, Environment, Resolved, build, read_secret_file};

/// `~/.tencentcloud/credentials` (when `$HOME` is set), then the system-wide file.
pub(super) fn profile_candidates(env: &Environment) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(2);
    if let Some(home) = env.get_nonblank("HOME") {
        paths.push(Path::new(home).join(".tencentcloud/credentials"));
    }
    paths.push(env.system_profile().to_path_buf());
    paths
}

/// `Ok(None)` when the file does not exist or has no `[profile]` section; an error when the
/// section lacks `secret_id` or `secret_key`.
pub(super) fn from_profile(
    path: &Path,
    profile: &str,
) -> Result<Option<Resolved>, CredentialError> {
    let Some(text) = read_secret_file(path)? else {
        return Ok(None);
    };
    let Some(section) = ini_section(&text, profile) else {
        return Ok(None);
    };
    let origin = || format!("profile file {}, section [{profile}]", path.display());
    let incomplete = |missing: &str| CredentialError::Incomplete {
        origin: origin(),
        missing: missing.to_owned(),
        hint: format!("add {missing} = … to the [{profile}] section"),
    };
    let mut section = section;
    let secret_id = section.remove("secret_id");
    let secret_key = section.remove("secret_key");
    let token = section.remove("token");
    match (secret_id, secret_key) {
        (Some(secret_id), Some(secret_key)) => build(
            secret_id,
            secret_key,
            token,
            CredentialSource::Profile(path.to_path_buf()),
        )
        .map(Some),
        (None, _) => Err(incomplete("secret_id")),
        (Some(_), None) => Err(incomplete("secret_key")),
    }
}

/// The keys of one `[section]` of an INI text (lower-cased keys, trimmed values; blank values
/// left out), or `None` when there is no such section. Comments start with `#` or `;`; `key: value`
/// is accepted like `key = value`; a repeated key keeps its last value.
fn ini_section(text: &str, wanted: &str) -> Option<HashMap<String, String>> {
    let mut found: Option<HashMap<String, String>> = None;
    let mut in_wanted = false;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line
            .strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
        {
            in_wanted = name.trim() == wanted;
            if in_wanted {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        if !in_wanted {
            continue;
        }
        if let Some((key, value)) = line.split_once('=').or_else(|| line.split_once(':')) {
            let value = value.trim();
            if let Some(section) = found.as_mut() {
                if value.is_empty() {
                    section.remove(&key.trim().to_ascii_lowercase());
                } else {
                    section.insert(key.trim().to_ascii_lowercase(), value.to_owned());
                }
            }
        }
    }
    found
}
