//! Credentials: what describes them in the settings, the secret values, and where they came
//! from.
//!
//! This module owns the `[credentials]` vocabulary ([`CredentialSettings`], [`SourceKind`],
//! [`DEFAULT_METADATA_ENDPOINT`]); [`crate::config`] reads the section into these types and
//! depends on this module, never the reverse.
//!
//! Secrets are `secrecy` types so they cannot reach a log or `Debug` text by accident, and no
//! message of [`CredentialError`] contains a secret value: errors name the source and the missing
//! key, never what was read.
//!
//! [`resolve`] turns the `[credentials]` settings into either static credentials or "ask the CVM
//! metadata service" ([`Resolved::CvmRole`]); it does no network I/O. The metadata fetch and its
//! refreshing happen at run time in [`cvm_role`] (the daemon starts its refresher and hands each
//! new set to the API client). Without a `[credentials]` section the default chain is tried,
//! first hit wins:
//!
//! 1. systemd credentials: `$CREDENTIALS_DIRECTORY/secret_id`, `secret_key`, optional
//!    `session_token` (`LoadCredential=` / `LoadCredentialEncrypted=`: the safest place);
//! 2. environment: `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY`, optional
//!    `TENCENTCLOUD_SESSION_TOKEN`;
//! 3. profile file (`profile.rs`): `~/.tencentcloud/credentials`, then
//!    `/etc/tencentcloud/credentials`, section `[default]`, keys `secret_id`, `secret_key`,
//!    optional `token`;
//! 4. CVM instance role, through the metadata service.
//!
//! `source = "assume-role"` ([`assume_role`]) is never part of the chain: it asks STS
//! `AssumeRole` for temporary credentials, signing with base credentials from one of the other
//! sources (`base`), and renews them before they expire.
//!
//! A source that is half there (an id without a key) is an error naming what is missing, not a
//! silent fall-through to the next source: falling through would make the daemon run with
//! credentials the operator did not mean.

pub mod assume_role;
pub mod cvm_role;
mod environment;
mod profile;
mod refresh;
#[cfg(test)]
mod tests;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use reqwest::Url;
use secrecy::SecretString;

use crate::problems::shown_path;

pub use self::environment::{Environment, SYSTEM_PROFILE_PATH};
use self::profile::{from_profile, profile_candidates};

/// The CVM metadata service, used for `source = "cvm-role"` and by the default chain.
pub const DEFAULT_METADATA_ENDPOINT: &str = "http://metadata.tencentyun.com/latest/meta-data/";

/// `[credentials]`: where the SecretId/SecretKey come from. Turned into credentials by [`resolve`].
#[derive(Debug, Clone, PartialEq)]
pub enum CredentialSettings {
    /// No `[credentials]` section: systemd credentials, then environment, then profile file,
    /// then CVM instance role; the first source found wins.
    Chain,
    /// `source = "env"`: `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY`,
    /// optional `TENCENTCLOUD_SESSION_TOKEN`.
    Env,
    /// `source = "systemd"`: `$CREDENTIALS_DIRECTORY/secret_id`, `secret_key`,
    /// optional `session_token`.
    Systemd,
    /// `source = "profile"`: an INI profile file, as the Tencent Cloud SDKs and tccli write it.
    Profile {
        /// `profile_path`; `None` means `~/.tencentcloud/credentials`, then
        /// `/etc/tencentcloud/credentials`.
        path: Option<PathBuf>,
        /// `profile`: the section name, default `default`.
        profile: String,
    },
    /// `source = "cvm-role"`: temporary credentials from the CVM metadata service.
    CvmRole {
        /// `role`; `None` means: ask the metadata service which role the instance has.
        role: Option<String>,
        /// `metadata_endpoint`, default [`DEFAULT_METADATA_ENDPOINT`]; always ends with `/`.
        metadata_endpoint: Url,
    },
    /// `source = "file"`: two files each holding one value (trailing newline allowed).
    File {
        /// `secret_id_file`, resolved against the config file's folder.
        secret_id_file: PathBuf,
        /// `secret_key_file`, resolved against the config file's folder.
        secret_key_file: PathBuf,
    },
    /// `source = "assume-role"`: STS `AssumeRole` on top of base credentials.
    AssumeRole {
        /// `base` and its keys: any variant but `Chain` and `AssumeRole`.
        base: Box<CredentialSettings>,
        /// `role_arn`, `role_session_name`, `duration`.
        request: assume_role::RoleRequest,
    },
}

/// The `source` key of `[credentials]`: which [`CredentialSettings`] variant a section
/// describes. Typed so that the config check matches on it exhaustively instead of on strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// `source = "env"`.
    Env,
    /// `source = "systemd"`.
    Systemd,
    /// `source = "profile"`.
    Profile,
    /// `source = "cvm-role"`.
    CvmRole,
    /// `source = "file"`.
    File,
    /// `source = "assume-role"`.
    AssumeRole,
}

impl SourceKind {
    /// Every source, in the order messages list them.
    pub const ALL: [SourceKind; 6] = [
        SourceKind::Env,
        SourceKind::Systemd,
        SourceKind::Profile,
        SourceKind::CvmRole,
        SourceKind::File,
        SourceKind::AssumeRole,
    ];

    /// The `source` value as written in the file (exact, lower case).
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Env => "env",
            SourceKind::Systemd => "systemd",
            SourceKind::Profile => "profile",
            SourceKind::CvmRole => "cvm-role",
            SourceKind::File => "file",
            SourceKind::AssumeRole => "assume-role",
        }
    }

    /// The source named `name` (exact match), if there is one.
    pub fn from_name(name: &str) -> Option<SourceKind> {
        SourceKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One set of API credentials: the keys a request is signed with (they live beside the
/// signing code, so the API client needs nothing from this module).
pub use crate::signing::Credentials;

/// Where static credentials were found; `Display` is meant for `check` and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `$CREDENTIALS_DIRECTORY/secret_id` and `secret_key`.
    Systemd,
    /// `TENCENTCLOUD_SECRET_ID` and `TENCENTCLOUD_SECRET_KEY`.
    Env,
    /// An INI profile file, this one.
    Profile(PathBuf),
    /// `source = "file"`: these two files.
    File {
        /// Holds the SecretId.
        secret_id_file: PathBuf,
        /// Holds the SecretKey.
        secret_key_file: PathBuf,
    },
}

impl fmt::Display for CredentialSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CredentialSource::Systemd => {
                f.write_str("systemd credentials ($CREDENTIALS_DIRECTORY)")
            }
            CredentialSource::Env => f.write_str("environment (TENCENTCLOUD_SECRET_ID)"),
            CredentialSource::Profile(path) => write!(f, "profile file {}", shown_path(path)),
            CredentialSource::File {
                secret_id_file,
                secret_key_file,
            } => write!(
                f,
                "files {} and {}",
                shown_path(secret_id_file),
                shown_path(secret_key_file)
            ),
        }
    }
}

/// What [`resolve`] found.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// Credentials known now, and where they came from.
    Static(Credentials, CredentialSource),
    /// Temporary credentials to fetch (and refresh before expiry) from the metadata service.
    CvmRole {
        /// The role name; `None`: ask `cam/security-credentials/` which one the instance has.
        role: Option<String>,
        /// Base URL of the metadata service, ending with `/`.
        metadata_endpoint: Url,
    },
    /// Temporary credentials to ask STS for (and renew), signing with `base`, which was
    /// resolved once here so that a missing base source is reported before any network I/O.
    AssumeRole {
        /// The base credentials as resolved now (`Static` or `CvmRole`).
        base: Box<Resolved>,
        /// The base source's settings, resolved again at every renewal.
        base_settings: Box<CredentialSettings>,
        /// What to ask for.
        request: assume_role::RoleRequest,
    },
}

/// Why no credentials could be resolved. Messages name the source and the missing piece, never a
/// secret value.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// The configured source has nothing at all.
    #[error("no credentials in {origin}: {detail}")]
    NotFound {
        /// The source looked at.
        origin: String,
        /// What was missing and what to do.
        detail: String,
    },
    /// The source has some of the values but not all.
    #[error("incomplete credentials in {origin}: {missing} is missing or empty; {hint}")]
    Incomplete {
        /// The source looked at.
        origin: String,
        /// The missing piece (`secret_key`, `TENCENTCLOUD_SECRET_ID`, ...).
        missing: String,
        /// What to do.
        hint: String,
    },
    /// A file exists but cannot be read (permissions, not UTF-8, a directory, too large).
    #[error("cannot read {}: {reason}", shown_path(path))]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why, from the OS error (never the content).
        reason: String,
    },
    /// A value is present but cannot be a credential (in quotes, whitespace, control or
    /// non-ASCII characters inside, too long), or a profile file's section is written in a way
    /// the SDKs would read differently.
    #[error("invalid credentials in {origin}: {problem}")]
    Invalid {
        /// The source looked at; for a profile file `profile file PATH:LINE`.
        origin: String,
        /// What is wrong, without the value.
        problem: String,
    },
}

impl CredentialError {
    /// Stable machine-readable code, for `error_code` log fields.
    pub fn code(&self) -> &'static str {
        match self {
            CredentialError::NotFound { .. } => "CredentialError.NotFound",
            CredentialError::Incomplete { .. } => "CredentialError.Incomplete",
            CredentialError::Unreadable { .. } => "CredentialError.Unreadable",
            CredentialError::Invalid { .. } => "CredentialError.Invalid",
        }
    }
}

/// Finds the credentials `settings` asks for. Reads files and `env` only; no network.
pub fn resolve(
    settings: &CredentialSettings,
    env: &Environment,
) -> Result<Resolved, CredentialError> {
    match settings {
        CredentialSettings::Chain => {
            if let Some(found) = from_systemd(env)? {
                return Ok(found);
            }
            if let Some(found) = from_env(env)? {
                return Ok(found);
            }
            for path in profile_candidates(env) {
                if let Some(found) = from_profile(&path, "default")? {
                    return Ok(found);
                }
            }
            Ok(Resolved::CvmRole {
                role: None,
                metadata_endpoint: Url::parse(DEFAULT_METADATA_ENDPOINT)
                    .expect("default metadata endpoint is a URL"),
            })
        }
        CredentialSettings::Systemd => {
            from_systemd(env)?.ok_or_else(|| CredentialError::NotFound {
                origin: CredentialSource::Systemd.to_string(),
                detail: match env.get_nonblank("CREDENTIALS_DIRECTORY") {
                    None => {
                        "$CREDENTIALS_DIRECTORY is not set; add LoadCredential=secret_id:… and \
                         LoadCredential=secret_key:… (or LoadCredentialEncrypted=) to the unit"
                            .to_owned()
                    }
                    Some(dir) => format!(
                        "{} has no secret_id or secret_key; add LoadCredential=secret_id:… and \
                     LoadCredential=secret_key:… to the unit",
                        shown_path(Path::new(dir))
                    ),
                },
            })
        }
        CredentialSettings::Env => from_env(env)?.ok_or_else(|| CredentialError::NotFound {
            origin: CredentialSource::Env.to_string(),
            detail: "TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set; set both, or \
                     choose another [credentials] source"
                .to_owned(),
        }),
        CredentialSettings::Profile { path, profile } => {
            let candidates = match path {
                Some(path) => vec![path.clone()],
                None => profile_candidates(env),
            };
            for path in &candidates {
                if let Some(found) = from_profile(path, profile)? {
                    return Ok(found);
                }
            }
            let tried: Vec<String> = candidates
                .iter()
                .map(|p| shown_path(p).to_string())
                .collect();
            Err(CredentialError::NotFound {
                origin: format!("profile file {}", tried.join(", ")),
                detail: format!(
                    "no file with a [{profile}] section; create one with secret_id = … and \
                     secret_key = … under [{profile}], or set profile_path"
                ),
            })
        }
        CredentialSettings::CvmRole {
            role,
            metadata_endpoint,
        } => Ok(Resolved::CvmRole {
            role: role.clone(),
            metadata_endpoint: metadata_endpoint.clone(),
        }),
        CredentialSettings::File {
            secret_id_file,
            secret_key_file,
        } => {
            let source = CredentialSource::File {
                secret_id_file: secret_id_file.clone(),
                secret_key_file: secret_key_file.clone(),
            };
            let read = |path: &Path, key: &str| match read_secret_file(path)? {
                Some(value) => Ok(value),
                None => Err(CredentialError::Incomplete {
                    origin: source.to_string(),
                    missing: format!("{key} ({})", shown_path(path)),
                    hint: format!("write the {key} value into {}", shown_path(path)),
                }),
            };
            let secret_id = read(secret_id_file, "secret_id_file")?;
            let secret_key = read(secret_key_file, "secret_key_file")?;
            build(secret_id, secret_key, None, source)
        }
        CredentialSettings::AssumeRole { base, request } => {
            // The config check allows neither; refused here too so that a hand-built
            // setting cannot recurse or fall back to a chain the operator did not choose.
            if matches!(
                **base,
                CredentialSettings::Chain | CredentialSettings::AssumeRole { .. }
            ) {
                return Err(CredentialError::Invalid {
                    origin: "[credentials] source = \"assume-role\"".to_owned(),
                    problem: "`base` must be \"env\", \"systemd\", \"profile\", \"cvm-role\" or \
                              \"file\""
                        .to_owned(),
                });
            }
            Ok(Resolved::AssumeRole {
                base: Box::new(resolve(base, env)?),
                base_settings: base.clone(),
                request: request.clone(),
            })
        }
    }
}

/// CAM's rule for role names: 1 to 128 of `A-Za-z0-9+=,.@_-`. The name becomes a path segment
/// of the metadata URL (`cam/security-credentials/<role>`), so anything else (`/`, `..`, `?`,
/// `%`, spaces) could make that URL point elsewhere; the config check refuses it at `check`,
/// and a role name the metadata service announces can be held to the same rule.
pub fn is_cam_role_name(role: &str) -> bool {
    (1..=128).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+=,.@_-".contains(&b))
}

/// The longest SecretId or SecretKey accepted, in bytes. Real ones are 36 and 32 characters;
/// the bound only keeps a wrong value (a pasted file, a huge variable) out of every request's
/// `Authorization` header.
pub(crate) const MAX_SECRET_CHARS: usize = 256;
/// The longest session token accepted, in bytes: STS tokens are a few KiB, and the token is
/// sent as a header, which servers cap at 8 to 16 KiB in all.
pub(crate) const MAX_TOKEN_CHARS: usize = 8 * 1024;

/// Why `value` cannot be the credential `name` ("the SecretId", ...), or `None` when it can.
/// The API only ever issues printable ASCII without quotes, so anything else is a mistake in
/// how it was written down (quotes kept by a profile file, a pasted comment, a non-breaking
/// space), reported now instead of as `AuthFailure` after the daemon started. The message
/// never includes the value.
pub(crate) fn value_problem(name: &str, value: &str, max_bytes: usize) -> Option<String> {
    if value.starts_with(['"', '\'']) || value.ends_with(['"', '\'']) {
        return Some(format!(
            "{name} is in quotes; write the value alone, without quotes"
        ));
    }
    if value.len() > max_bytes {
        return Some(format!(
            "{name} is longer than {max_bytes} characters, so it is not a credential; check \
             that the right value was stored there"
        ));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Some(format!(
            "{name} contains whitespace, control or non-ASCII characters; it must hold only \
             the value (a trailing newline is fine)"
        ));
    }
    None
}

/// Checks that the values can be credentials ([`value_problem`]) and wraps them; the secret
/// strings move straight into `SecretString`.
pub(super) fn build(
    secret_id: String,
    secret_key: String,
    token: Option<String>,
    source: CredentialSource,
) -> Result<Resolved, CredentialError> {
    let problem = value_problem("the SecretId", &secret_id, MAX_SECRET_CHARS)
        .or_else(|| value_problem("the SecretKey", &secret_key, MAX_SECRET_CHARS))
        .or_else(|| {
            token
                .as_deref()
                .and_then(|token| value_problem("the session token", token, MAX_TOKEN_CHARS))
        });
    if let Some(problem) = problem {
        return Err(CredentialError::Invalid {
            origin: source.to_string(),
            problem,
        });
    }
    Ok(Resolved::Static(
        Credentials {
            secret_id,
            secret_key: SecretString::from(secret_key),
            token: token.map(SecretString::from),
        },
        source,
    ))
}

/// An error when one of `names` is set to a value that is not UTF-8: the source is there but
/// unusable, which must not read as "not set" (the chain would move on to another source).
fn refuse_not_utf8(env: &Environment, origin: &str, names: &[&str]) -> Result<(), CredentialError> {
    match names.iter().find(|name| env.not_utf8(name)) {
        Some(name) => Err(CredentialError::Invalid {
            origin: origin.to_owned(),
            problem: format!(
                "{name} is set but not UTF-8 text; credentials and their paths are plain \
                 text: set it again, or unset it"
            ),
        }),
        None => Ok(()),
    }
}

/// `Ok(None)` when the directory is not set or holds neither `secret_id` nor `secret_key`.
fn from_systemd(env: &Environment) -> Result<Option<Resolved>, CredentialError> {
    refuse_not_utf8(
        env,
        &CredentialSource::Systemd.to_string(),
        &["CREDENTIALS_DIRECTORY"],
    )?;
    let Some(dir) = env.get_nonblank("CREDENTIALS_DIRECTORY") else {
        return Ok(None);
    };
    let dir = Path::new(dir);
    let secret_id = read_secret_file(&dir.join("secret_id"))?;
    let secret_key = read_secret_file(&dir.join("secret_key"))?;
    let token = read_secret_file(&dir.join("session_token"))?;
    let hint = |name: &str| {
        format!("add LoadCredential={name}:… to the unit, next to the one that is there")
    };
    match (secret_id, secret_key) {
        (None, None) if token.is_none() => Ok(None),
        (Some(secret_id), Some(secret_key)) => {
            build(secret_id, secret_key, token, CredentialSource::Systemd).map(Some)
        }
        (None, _) => Err(CredentialError::Incomplete {
            origin: CredentialSource::Systemd.to_string(),
            missing: "secret_id".to_owned(),
            hint: hint("secret_id"),
        }),
        (Some(_), None) => Err(CredentialError::Incomplete {
            origin: CredentialSource::Systemd.to_string(),
            missing: "secret_key".to_owned(),
            hint: hint("secret_key"),
        }),
    }
}

/// `Ok(None)` when neither `TENCENTCLOUD_SECRET_ID` nor `TENCENTCLOUD_SECRET_KEY` is set.
fn from_env(env: &Environment) -> Result<Option<Resolved>, CredentialError> {
    refuse_not_utf8(
        env,
        "environment",
        &[
            "TENCENTCLOUD_SECRET_ID",
            "TENCENTCLOUD_SECRET_KEY",
            "TENCENTCLOUD_SESSION_TOKEN",
        ],
    )?;
    let secret_id = env.get_nonblank("TENCENTCLOUD_SECRET_ID");
    let secret_key = env.get_nonblank("TENCENTCLOUD_SECRET_KEY");
    let token = env.get_nonblank("TENCENTCLOUD_SESSION_TOKEN");
    let incomplete = |missing: &str| CredentialError::Incomplete {
        origin: "environment".to_owned(),
        missing: missing.to_owned(),
        hint: format!("set {missing} too, or unset the other TENCENTCLOUD_ variables"),
    };
    match (secret_id, secret_key) {
        (None, None) if token.is_none() => Ok(None),
        (Some(secret_id), Some(secret_key)) => build(
            secret_id.to_owned(),
            secret_key.to_owned(),
            token.map(str::to_owned),
            CredentialSource::Env,
        )
        .map(Some),
        (None, _) => Err(incomplete("TENCENTCLOUD_SECRET_ID")),
        (Some(_), None) => Err(incomplete("TENCENTCLOUD_SECRET_KEY")),
    }
}

/// Secret files are small; a bigger one is a wrong path, refused before it fills memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The trimmed content of a small UTF-8 file, without a leading BOM: `Ok(None)` when it does
/// not exist or is blank.
/// Errors name the file and the OS reason, never the content.
pub(crate) fn read_secret_file(path: &Path) -> Result<Option<String>, CredentialError> {
    let unreadable = |reason: String| CredentialError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let file = match crate::problems::open_regular(path) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(unreadable(io_reason(&error))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| unreadable(io_reason(&error)))?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(unreadable(format!(
            "larger than {} KiB, so not a credentials file",
            MAX_SECRET_FILE_BYTES / 1024
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| unreadable("not UTF-8 text; credentials are plain ASCII".to_owned()))?;
    // A UTF-8 BOM (saved by Windows editors) is not part of the value, as the SDKs' INI
    // readers agree for profile files.
    let trimmed = text.strip_prefix('\u{feff}').unwrap_or(&text).trim();
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

fn io_reason(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::PermissionDenied => {
            "permission denied; make it readable by the service user".to_owned()
        }
        std::io::ErrorKind::IsADirectory => "it is a directory, not a file".to_owned(),
        _ => error.to_string(),
    }
}

/// A SecretId as messages may show it: its first 4 characters (`AKID`, the kind of key) and,
/// when it is long enough that this leaves most of it hidden, its last 4, which tell two keys
/// apart as the CAM console does. Never the whole value.
pub fn masked_secret_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let head: String = chars.iter().take(4.min(chars.len() / 2)).collect();
    if chars.len() >= 16 {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("{}…{} (masked)", shown_plain(&head), shown_plain(&tail))
    } else {
        format!("{}… (masked)", shown_plain(&head))
    }
}

/// `text` without the quotes [`crate::problems::shown`] adds (it escapes what must not reach a terminal).
fn shown_plain(text: &str) -> String {
    let quoted = crate::problems::shown(text);
    quoted[1..quoted.len() - 1].to_owned()
}
