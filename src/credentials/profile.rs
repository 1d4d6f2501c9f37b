//! Profile files: the INI files the Tencent Cloud SDKs and tccli write
//! (`~/.tencentcloud/credentials`, `/etc/tencentcloud/credentials`), read for
//! `source = "profile"` and by the default chain.
//!
//! Read the way the official SDKs read them, so a file that works with them works here:
//! tencentcloud-sdk-python reads it with Python's `configparser` (`key = value` or
//! `key: value`, keys in any case, lines and values trimmed, `#` and `;` comments on their own
//! line, CRLF), and the Go SDK's readers skip a UTF-8 BOM, which this reader does too.
//!
//! Where the SDKs disagree or would send something the API refuses, the section being read is
//! refused with the file's path and line instead of failing later with `AuthFailure`:
//! a value in quotes (`configparser` keeps the quotes, one Go reader strips them), a comment
//! after a value (`configparser` keeps it as part of the value), an indented continuation
//! line, a line that is not `key = value`, a key or the section given twice (`configparser`
//! refuses both). Other sections are not looked at, so a mistake in `[other]` never stops the
//! daemon reading `[default]`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::problems::shown_path;

use super::{
    CredentialError, CredentialSource, Environment, MAX_SECRET_CHARS, MAX_TOKEN_CHARS, Resolved,
    build, read_secret_file, value_problem,
};

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
/// section lacks `secret_id` or `secret_key`, or holds a mistake (see the module docs), which
/// names the file and line.
pub(super) fn from_profile(
    path: &Path,
    profile: &str,
) -> Result<Option<Resolved>, CredentialError> {
    let Some(text) = read_secret_file(path)? else {
        return Ok(None);
    };
    let section = match ini_section(&text, profile) {
        Ok(Some(section)) => section,
        Ok(None) => return Ok(None),
        Err(mistake) => {
            return Err(CredentialError::Invalid {
                origin: format!("profile file {}:{}", shown_path(path), mistake.line),
                problem: mistake.what,
            });
        }
    };
    let origin = || format!("profile file {}, section [{profile}]", shown_path(path));
    let incomplete = |missing: &str| CredentialError::Incomplete {
        origin: origin(),
        missing: missing.to_owned(),
        hint: format!("add {missing} = … to the [{profile}] section"),
    };
    let mut section = section;
    let mut take = |key: &str| section.remove(key).filter(|entry| !entry.value.is_empty());
    let secret_id = take("secret_id");
    let secret_key = take("secret_key");
    let token = take("token");
    // Each value checked with its line, so the message can say where; `build` checks again.
    for (key, entry, max) in [
        ("secret_id", &secret_id, MAX_SECRET_CHARS),
        ("secret_key", &secret_key, MAX_SECRET_CHARS),
        ("token", &token, MAX_TOKEN_CHARS),
    ] {
        if let Some(entry) = entry
            && let Some(problem) = value_problem(&format!("`{key}`"), &entry.value, max)
        {
            return Err(CredentialError::Invalid {
                origin: format!("profile file {}:{}", shown_path(path), entry.line),
                problem,
            });
        }
    }
    match (secret_id, secret_key) {
        (Some(secret_id), Some(secret_key)) => build(
            secret_id.value,
            secret_key.value,
            token.map(|token| token.value),
            CredentialSource::Profile(path.to_path_buf()),
        )
        .map(Some),
        (None, _) => Err(incomplete("secret_id")),
        (Some(_), None) => Err(incomplete("secret_key")),
    }
}

/// The keys of a section this program reads; others (`region`, `role_arn`, ...) are skipped.
const KEYS: [&str; 3] = ["secret_id", "secret_key", "token"];

/// A value of the section read, and the 1-based line it is on.
#[derive(Debug)]
struct Entry {
    value: String,
    line: usize,
}

/// Something in the section read that the SDKs would read differently or refuse: where, and
/// what to write instead (never the value).
#[derive(Debug)]
struct Mistake {
    line: usize,
    what: String,
}

/// How a key's value is shown in advice, without the real one.
fn example(key: &str) -> &'static str {
    match key {
        "secret_id" => "AKID…",
        _ => "…",
    }
}

/// The [`KEYS`] of the `[wanted]` section of an INI text (lower-cased keys, trimmed values,
/// each with its line), `Ok(None)` when there is no such section, or the first [`Mistake`] in
/// it. A leading UTF-8 BOM is skipped.
fn ini_section(text: &str, wanted: &str) -> Result<Option<HashMap<String, Entry>>, Mistake> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut found: Option<HashMap<String, Entry>> = None;
    let mut header_line = None;
    let mut in_wanted = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let mistake = |what: String| Err(Mistake { line, what });
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        // configparser's header: `[`, the name, the last `]`; anything after it is ignored.
        if let Some(rest) = trimmed.strip_prefix('[')
            && let Some(end) = rest.rfind(']')
        {
            in_wanted = rest[..end].trim() == wanted;
            if in_wanted {
                if let Some(first) = header_line {
                    return mistake(format!(
                        "[{wanted}] appears twice (line {first} and line {line}); merge the two \
                         into one section"
                    ));
                }
                header_line = Some(line);
                found = Some(HashMap::new());
            }
            continue;
        }
        if !in_wanted {
            continue;
        }
        let Some(split) = trimmed.find(['=', ':']) else {
            if raw.starts_with([' ', '\t']) {
                return mistake(format!(
                    "this indented line continues the value above it, which the SDKs read \
                     differently; write each value on the same line as its key, e.g. \
                     secret_id = {}",
                    example("secret_id")
                ));
            }
            return mistake(
                "this line in the section is not `key = value`, a [section] or a comment; \
                 write e.g. secret_id = …, or start it with # to keep it as a comment"
                    .to_owned(),
            );
        };
        let key = trimmed[..split].trim().to_ascii_lowercase();
        if key.is_empty() {
            return mistake(
                "this line has no key before its `=`; write e.g. secret_id = …".to_owned(),
            );
        }
        if !KEYS.contains(&key.as_str()) {
            continue;
        }
        let value = trimmed[split + 1..].trim();
        if value.starts_with(['"', '\'']) || value.ends_with(['"', '\'']) {
            return mistake(format!(
                "`{key}` is in quotes, which the SDKs read differently (Python's configparser \
                 sends the quotes as part of it); write {key} = {} without quotes",
                example(&key)
            ));
        }
        if value.contains([' ', '\t']) && value.contains(['#', ';']) {
            return mistake(format!(
                "`{key}` has a comment after the value, which the SDKs read as part of it; \
                 put the comment on its own line, starting with #"
            ));
        }
        let section = found.get_or_insert_with(HashMap::new);
        if let Some(first) = section.get(&key) {
            return mistake(format!(
                "`{key}` is set twice in [{wanted}] (line {} and line {line}); keep one",
                first.line
            ));
        }
        section.insert(
            key,
            Entry {
                value: value.to_owned(),
                line,
            },
        );
    }
    Ok(found)
}
