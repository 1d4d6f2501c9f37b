//! Credentials: the secret values and where they came from.
//!
//! Secrets are `secrecy` types so they cannot reach a log or `Debug` text by accident, and no
//! message of [`CredentialError`] contains a secret value: errors name the source and the missing
//! key, never what was read.
//!
//! [`resolve`] turns the `[credentials]` settings into either static credentials or "ask the CVM
//! metadata service" ([`Resolved::CvmRole`]); the metadata fetch itself happens at run time in
//! the API client, so this module does no network I/O. Without a `[credentials]` section the
//! default chain is tried, first hit wins:
//!
//! 1. systemd credentials: `$CREDENTIALS_DIRECTORY/secret_id`, `secret_key`, optional
//!    `session_token` (`LoadCredential=` / `LoadCredentialEncrypted=`: the safest place);
//! 2. environment: `TENCENTCLOUD_SECRET_ID`, `TENCENTCLOUD_SECRET_KEY`, optional
//!    `TENCENTCLOUD_SESSION_TOKEN`;
//! 3. profile file: `~/.tencentcloud/credentials`, then `/etc/tencentcloud/credentials`, section
//!    `[default]`, keys `secret_id`, `secret_key`, optional `token`;
//! 4. CVM instance role, through the metadata service.
//!
//! A source that is half there (an id without a key) is an error naming what is missing, not a
//! silent fall-through to the next source: falling through would make the daemon run with
//! credentials the operator did not mean.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use crate::config::{CredentialSettings, DEFAULT_METADATA_ENDPOINT};

/// One set of API credentials. `Debug` never shows the secret key or token.
#[derive(Clone)]
pub struct Credentials {
    /// SecretId (AKID…): not secret by itself, shown in `Authorization` headers.
    pub secret_id: String,
    /// SecretKey: never logged.
    pub secret_key: SecretString,
    /// Session token of temporary credentials, sent as `X-TC-Token`.
    pub token: Option<SecretString>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("secret_id", &self.secret_id)
            .field("secret_key", &"[redacted]")
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Where static credentials were found; `Display` is meant for `check` and start-up logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialSource {
    /// `$CREDENTIALS_DIRECTORY/secret_id` and `secret_key`.
    Systemd,
    /// `TENCENTCLOUD_SECRET_ID` and `TENCENTCLOUD_SECRET_KEY`.
    Env,
    /// An INI profile file, this one.
    Profile(PathBuf),
    /// The CVM metadata service (temporary credentials).
    CvmRole,
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
            CredentialSource::Profile(path) => write!(f, "profile file {}", path.display()),
            CredentialSource::CvmRole => f.write_str("CVM instance role"),
            CredentialSource::File {
                secret_id_file,
                secret_key_file,
            } => write!(
                f,
                "files {} and {}",
                secret_id_file.display(),
                secret_key_file.display()
            ),
        }
    }
}

/// A snapshot of the environment variables credential resolution (and config defaults) read,
/// so tests can pass their own instead of mutating the process environment.
#[derive(Clone)]
pub struct Environment {
    vars: HashMap<String, String>,
    /// The system-wide profile file; a field only so tests can point it away from `/etc`.
    system_profile: PathBuf,
}

/// Names only: the values include `TENCENTCLOUD_SECRET_KEY` and the session token.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.vars.keys().map(String::as_str).collect();
        names.sort_unstable();
        f.debug_struct("Environment")
            .field("variables", &names)
            .field("system_profile", &self.system_profile)
            .finish()
    }
}

/// The system-wide profile file of the default chain.
pub const SYSTEM_PROFILE_PATH: &str = "/etc/tencentcloud/credentials";

impl Environment {
    /// The process environment now. Variables whose name or value is not UTF-8 are left out.
    pub fn from_process() -> Environment {
        Environment::from_pairs(std::env::vars_os().filter_map(|(name, value)| {
            Some((name.into_string().ok()?, value.into_string().ok()?))
        }))
    }

    /// An environment holding exactly these variables.
    pub fn from_pairs<I, K, V>(pairs: I) -> Environment
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Environment {
            vars: pairs
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
            system_profile: PathBuf::from(SYSTEM_PROFILE_PATH),
        }
    }

    /// Replaces `/etc/tencentcloud/credentials` in the default chain (for tests).
    pub fn with_system_profile(mut self, path: impl Into<PathBuf>) -> Environment {
        self.system_profile = path.into();
        self
    }

    /// The variable's value, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// The variable's value trimmed, if set and not blank.
    fn get_nonblank(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
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
        metadata_endpoint: reqwest::Url,
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
    #[error("cannot read {}: {reason}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why, from the OS error (never the content).
        reason: String,
    },
    /// A value is present but cannot be a credential (whitespace or control characters inside).
    #[error("invalid credentials in {origin}: {problem}")]
    Invalid {
        /// The source looked at.
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
                metadata_endpoint: reqwest::Url::parse(DEFAULT_METADATA_ENDPOINT)
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
                        "{dir} has no secret_id or secret_key; add LoadCredential=secret_id:… and \
                     LoadCredential=secret_key:… to the unit"
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
            let tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
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
                    missing: format!("{key} ({})", path.display()),
                    hint: format!("write the {key} value into {}", path.display()),
                }),
            };
            let secret_id = read(secret_id_file, "secret_id_file")?;
            let secret_key = read(secret_key_file, "secret_key_file")?;
            build(secret_id, secret_key, None, source)
        }
    }
}

/// `~/.tencentcloud/credentials` (when `$HOME` is set), then the system-wide file.
fn profile_candidates(env: &Environment) -> Vec<PathBuf> {
    let mut paths = Vec::with_capacity(2);
    if let Some(home) = env.get_nonblank("HOME") {
        paths.push(Path::new(home).join(".tencentcloud/credentials"));
    }
    paths.push(env.system_profile.clone());
    paths
}

/// Checks that the values can be credentials and wraps them; the secret strings move straight
/// into `SecretString`.
fn build(
    secret_id: String,
    secret_key: String,
    token: Option<String>,
    source: CredentialSource,
) -> Result<Resolved, CredentialError> {
    let invalid = |name: &str| CredentialError::Invalid {
        origin: source.to_string(),
        problem: format!(
            "{name} contains whitespace or control characters; it must hold only the value \
             (a trailing newline is fine)"
        ),
    };
    let clean = |value: &str| !value.chars().any(|c| c.is_whitespace() || c.is_control());
    if !clean(&secret_id) {
        return Err(invalid("the SecretId"));
    }
    if !clean(&secret_key) {
        return Err(invalid("the SecretKey"));
    }
    if token.as_deref().is_some_and(|token| !clean(token)) {
        return Err(invalid("the session token"));
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

/// `Ok(None)` when the directory is not set or holds neither `secret_id` nor `secret_key`.
fn from_systemd(env: &Environment) -> Result<Option<Resolved>, CredentialError> {
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

/// `Ok(None)` when the file does not exist or has no `[profile]` section; an error when the
/// section lacks `secret_id` or `secret_key`.
fn from_profile(path: &Path, profile: &str) -> Result<Option<Resolved>, CredentialError> {
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

/// Secret files are small; a bigger one is a wrong path, refused before it fills memory.
const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The trimmed content of a small UTF-8 file: `Ok(None)` when it does not exist or is blank.
/// Errors name the file and the OS reason, never the content.
fn read_secret_file(path: &Path) -> Result<Option<String>, CredentialError> {
    let unreadable = |reason: String| CredentialError::Unreadable {
        path: path.to_path_buf(),
        reason,
    };
    let file = match std::fs::File::open(path) {
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
    let trimmed = text.trim();
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

#[cfg(test)]
mod tests {
    #[test]
    fn environment_debug_shows_names_not_values() {
        let env = Environment::from_pairs([("TENCENTCLOUD_SECRET_KEY", "very-secret-value")]);
        let text = format!("{env:?}");
        assert!(text.contains("TENCENTCLOUD_SECRET_KEY"));
        assert!(!text.contains("very-secret-value"));
    }

    use super::*;
    use secrecy::ExposeSecret;

    const ID: &str = "AKIDexampleexampleexample";
    const KEY: &str = "s3cr3t-key-value-never-shown";

    /// A temp folder with `name → content` files.
    fn files(entries: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in entries {
            let path = dir.path().join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, content).unwrap();
        }
        dir
    }

    /// An environment with these variables and no system profile file.
    fn env(pairs: &[(&str, &str)]) -> Environment {
        Environment::from_pairs(pairs.iter().copied())
            .with_system_profile("/nonexistent/tencentcloud/credentials")
    }

    fn static_creds(resolved: Resolved) -> (Credentials, CredentialSource) {
        match resolved {
            Resolved::Static(credentials, source) => (credentials, source),
            other => panic!("expected static credentials, got {other:?}"),
        }
    }

    fn profile_text(id: &str, key: &str) -> String {
        format!(
            "# tccli\n[other]\nsecret_id = nope\n\n[default]\nsecret_id = {id}\nsecret_key = {key}\n"
        )
    }

    #[test]
    fn chain_order_systemd_env_profile_cvm() {
        let systemd = files(&[
            ("secret_id", "AKIDsystemd\n"),
            ("secret_key", "k1\n"),
            ("session_token", "tok\n"),
        ]);
        let home = files(&[(".tencentcloud/credentials", &profile_text("AKIDhome", "k3"))]);
        let system = files(&[("credentials", &profile_text("AKIDsystem", "k4"))]);
        let systemd_dir = systemd.path().to_str().unwrap();
        let home_dir = home.path().to_str().unwrap();
        let env_vars = [
            ("TENCENTCLOUD_SECRET_ID", "AKIDenv"),
            ("TENCENTCLOUD_SECRET_KEY", "k2"),
        ];

        let all = Environment::from_pairs(
            [("CREDENTIALS_DIRECTORY", systemd_dir), ("HOME", home_dir)]
                .into_iter()
                .chain(env_vars),
        )
        .with_system_profile(system.path().join("credentials"));
        let (creds, source) = static_creds(resolve(&CredentialSettings::Chain, &all).unwrap());
        assert_eq!(source, CredentialSource::Systemd);
        assert_eq!(creds.secret_id, "AKIDsystemd");
        assert_eq!(creds.secret_key.expose_secret(), "k1");
        assert_eq!(creds.token.unwrap().expose_secret(), "tok");

        let no_systemd = Environment::from_pairs([("HOME", home_dir)].into_iter().chain(env_vars))
            .with_system_profile(system.path().join("credentials"));
        let (creds, source) =
            static_creds(resolve(&CredentialSettings::Chain, &no_systemd).unwrap());
        assert_eq!(
            (creds.secret_id.as_str(), source),
            ("AKIDenv", CredentialSource::Env)
        );
        assert!(creds.token.is_none());

        let home_only =
            env(&[("HOME", home_dir)]).with_system_profile(system.path().join("credentials"));
        let (creds, source) =
            static_creds(resolve(&CredentialSettings::Chain, &home_only).unwrap());
        assert_eq!(creds.secret_id, "AKIDhome");
        assert_eq!(
            source,
            CredentialSource::Profile(home.path().join(".tencentcloud/credentials"))
        );

        let system_only = env(&[("HOME", "/nonexistent/home")])
            .with_system_profile(system.path().join("credentials"));
        let (creds, source) =
            static_creds(resolve(&CredentialSettings::Chain, &system_only).unwrap());
        assert_eq!(creds.secret_id, "AKIDsystem");
        assert_eq!(
            source.to_string(),
            format!(
                "profile file {}",
                system.path().join("credentials").display()
            )
        );

        match resolve(&CredentialSettings::Chain, &env(&[])).unwrap() {
            Resolved::CvmRole {
                role,
                metadata_endpoint,
            } => {
                assert_eq!(role, None);
                assert_eq!(metadata_endpoint.as_str(), DEFAULT_METADATA_ENDPOINT);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn systemd_directory_without_our_files_falls_through() {
        let dir = files(&[("other_credential", "x")]);
        let env = env(&[
            ("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap()),
            ("TENCENTCLOUD_SECRET_ID", ID),
            ("TENCENTCLOUD_SECRET_KEY", KEY),
        ]);
        let (_, source) = static_creds(resolve(&CredentialSettings::Chain, &env).unwrap());
        assert_eq!(source, CredentialSource::Env);
    }

    #[test]
    fn incomplete_sources_are_errors_not_fall_throughs() {
        let systemd = files(&[("secret_id", ID)]);
        let env_full = [
            ("TENCENTCLOUD_SECRET_ID", ID),
            ("TENCENTCLOUD_SECRET_KEY", KEY),
        ];
        let with_systemd = Environment::from_pairs(
            [("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]
                .into_iter()
                .chain(env_full),
        );
        let error = resolve(&CredentialSettings::Chain, &with_systemd).unwrap_err();
        assert_eq!(error.code(), "CredentialError.Incomplete");
        assert!(
            error.to_string().contains("secret_key is missing"),
            "{error}"
        );
        assert!(
            error.to_string().contains("LoadCredential=secret_key"),
            "{error}"
        );

        let systemd = files(&[("secret_key", KEY)]);
        let error = resolve(
            &CredentialSettings::Chain,
            &env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]),
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("secret_id is missing"),
            "{error}"
        );

        let error = resolve(
            &CredentialSettings::Chain,
            &env(&[("TENCENTCLOUD_SECRET_ID", ID)]),
        )
        .unwrap_err();
        assert_eq!(error.code(), "CredentialError.Incomplete");
        assert!(
            error
                .to_string()
                .contains("TENCENTCLOUD_SECRET_KEY is missing"),
            "{error}"
        );

        let error = resolve(
            &CredentialSettings::Chain,
            &env(&[
                ("TENCENTCLOUD_SECRET_KEY", KEY),
                ("TENCENTCLOUD_SECRET_ID", "  "),
            ]),
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("TENCENTCLOUD_SECRET_ID is missing"),
            "{error}"
        );
        assert!(!error.to_string().contains(KEY));

        let home = files(&[(
            ".tencentcloud/credentials",
            "[default]\nsecret_id = AKIDx\n",
        )]);
        let error = resolve(
            &CredentialSettings::Chain,
            &env(&[("HOME", home.path().to_str().unwrap())]),
        )
        .unwrap_err();
        assert_eq!(error.code(), "CredentialError.Incomplete");
        assert!(
            error
                .to_string()
                .contains("section [default]: secret_key is missing"),
            "{error}"
        );
    }

    #[test]
    fn values_are_trimmed_and_checked() {
        let systemd = files(&[
            ("secret_id", &format!("  {ID}\r\n")),
            ("secret_key", &format!("{KEY}\n\n")),
        ]);
        let env = env(&[("CREDENTIALS_DIRECTORY", systemd.path().to_str().unwrap())]);
        let (creds, _) = static_creds(resolve(&CredentialSettings::Systemd, &env).unwrap());
        assert_eq!(creds.secret_id, ID);
        assert_eq!(creds.secret_key.expose_secret(), KEY);

        let error = resolve(
            &CredentialSettings::Env,
            &super::tests::env(&[
                ("TENCENTCLOUD_SECRET_ID", ID),
                ("TENCENTCLOUD_SECRET_KEY", "two words"),
            ]),
        )
        .unwrap_err();
        assert_eq!(error.code(), "CredentialError.Invalid");
        assert!(
            error
                .to_string()
                .contains("the SecretKey contains whitespace")
        );
        assert!(!error.to_string().contains("two words"));
    }

    #[test]
    fn explicit_sources() {
        let error = resolve(&CredentialSettings::Env, &env(&[])).unwrap_err();
        assert_eq!(error.code(), "CredentialError.NotFound");
        assert!(
            error
                .to_string()
                .contains("TENCENTCLOUD_SECRET_ID and TENCENTCLOUD_SECRET_KEY are not set")
        );

        let error = resolve(&CredentialSettings::Systemd, &env(&[])).unwrap_err();
        assert_eq!(error.code(), "CredentialError.NotFound");
        assert!(
            error
                .to_string()
                .contains("$CREDENTIALS_DIRECTORY is not set"),
            "{error}"
        );

        // Explicit systemd ignores the environment even when it is set.
        let env_set = env(&[
            ("TENCENTCLOUD_SECRET_ID", ID),
            ("TENCENTCLOUD_SECRET_KEY", KEY),
        ]);
        assert!(resolve(&CredentialSettings::Systemd, &env_set).is_err());

        let dir = files(&[(
            "creds.ini",
            "[prod]\nsecret_id=AKIDprod\nsecret_key : kprod\ntoken = t\n[default]\nsecret_id = AKIDdef\nsecret_key = kdef\n",
        )]);
        let path = dir.path().join("creds.ini");
        let settings = CredentialSettings::Profile {
            path: Some(path.clone()),
            profile: "prod".into(),
        };
        let (creds, source) = static_creds(resolve(&settings, &env(&[])).unwrap());
        assert_eq!(creds.secret_id, "AKIDprod");
        assert_eq!(creds.secret_key.expose_secret(), "kprod");
        assert_eq!(creds.token.unwrap().expose_secret(), "t");
        assert_eq!(source, CredentialSource::Profile(path.clone()));

        let settings = CredentialSettings::Profile {
            path: Some(path.clone()),
            profile: "staging".into(),
        };
        let error = resolve(&settings, &env(&[])).unwrap_err();
        assert_eq!(error.code(), "CredentialError.NotFound");
        assert!(error.to_string().contains("[staging]"), "{error}");

        let settings = CredentialSettings::File {
            secret_id_file: dir.path().join("id"),
            secret_key_file: dir.path().join("key"),
        };
        let error = resolve(&settings, &env(&[])).unwrap_err();
        assert_eq!(error.code(), "CredentialError.Incomplete");
        assert!(error.to_string().contains("secret_id_file"), "{error}");
        std::fs::write(dir.path().join("id"), format!("{ID}\n")).unwrap();
        std::fs::write(dir.path().join("key"), format!("{KEY}\n")).unwrap();
        let (creds, source) = static_creds(resolve(&settings, &env(&[])).unwrap());
        assert_eq!(creds.secret_id, ID);
        assert!(source.to_string().starts_with("files "));

        let role = CredentialSettings::CvmRole {
            role: Some("R".into()),
            metadata_endpoint: reqwest::Url::parse("http://127.0.0.1:1/").unwrap(),
        };
        assert!(
            matches!(resolve(&role, &env(&[])).unwrap(), Resolved::CvmRole { role: Some(r), .. } if r == "R")
        );
    }

    #[test]
    fn unreadable_files_are_reported_without_content() {
        let dir = files(&[]);
        std::fs::create_dir(dir.path().join("secret_id")).unwrap();
        std::fs::write(dir.path().join("secret_key"), KEY).unwrap();
        let error = resolve(
            &CredentialSettings::Systemd,
            &env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]),
        )
        .unwrap_err();
        assert_eq!(error.code(), "CredentialError.Unreadable");
        assert!(error.to_string().contains("secret_id"), "{error}");

        let dir = files(&[("secret_key", KEY)]);
        std::fs::write(dir.path().join("secret_id"), b"AKID\xff\xfe").unwrap();
        let error = resolve(
            &CredentialSettings::Systemd,
            &env(&[("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]),
        )
        .unwrap_err();
        assert_eq!(error.code(), "CredentialError.Unreadable");
        assert!(error.to_string().contains("not UTF-8"));
    }

    #[test]
    fn debug_never_shows_secrets() {
        let creds = Credentials {
            secret_id: ID.into(),
            secret_key: SecretString::from(KEY),
            token: Some(SecretString::from("session-token-value")),
        };
        let resolved = Resolved::Static(creds.clone(), CredentialSource::Env);
        for text in [
            format!("{creds:?}"),
            format!("{creds:#?}"),
            format!("{resolved:?}"),
        ] {
            assert!(text.contains(ID));
            assert!(!text.contains(KEY), "{text}");
            assert!(!text.contains("session-token-value"), "{text}");
            assert!(text.contains("[redacted]"));
        }
    }

    #[test]
    fn environment_snapshot() {
        let env = Environment::from_pairs([("A", "1")]);
        assert_eq!(env.get("A"), Some("1"));
        assert_eq!(env.get("B"), None);
        let process = Environment::from_process();
        assert_eq!(process.get("PATH").is_some(), std::env::var("PATH").is_ok());
    }

    #[test]
    fn source_display() {
        assert_eq!(
            CredentialSource::Systemd.to_string(),
            "systemd credentials ($CREDENTIALS_DIRECTORY)"
        );
        assert_eq!(
            CredentialSource::Env.to_string(),
            "environment (TENCENTCLOUD_SECRET_ID)"
        );
        assert_eq!(
            CredentialSource::Profile("/root/.tencentcloud/credentials".into()).to_string(),
            "profile file /root/.tencentcloud/credentials"
        );
        assert_eq!(CredentialSource::CvmRole.to_string(), "CVM instance role");
    }
}
