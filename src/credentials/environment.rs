//! [`Environment`]: a snapshot of the environment variables that credential resolution and the
//! config defaults read, so tests pass their own instead of mutating the process environment.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// A snapshot of the environment variables credential resolution (and config defaults) read,
/// so tests can pass their own instead of mutating the process environment.
#[derive(Clone)]
pub struct Environment {
    vars: HashMap<String, String>,
    /// Names of variables set to a value that is not UTF-8 (left out of `vars`).
    not_utf8: Vec<String>,
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
            .field("not_utf8", &self.not_utf8)
            .field("system_profile", &self.system_profile)
            .finish()
    }
}

/// The system-wide profile file of the default chain.
pub const SYSTEM_PROFILE_PATH: &str = "/etc/tencentcloud/credentials";

impl Environment {
    /// The process environment now. Variables whose name or value is not UTF-8 are left out,
    /// but the names of those with a UTF-8 name are kept, so a source can refuse such a
    /// variable instead of reading it as unset.
    pub fn from_process() -> Environment {
        Environment::from_os_pairs(std::env::vars_os())
    }

    /// An environment of these variables as the OS gives them; as [`Environment::from_process`].
    pub fn from_os_pairs(pairs: impl IntoIterator<Item = (OsString, OsString)>) -> Environment {
        let mut not_utf8 = Vec::new();
        let utf8: Vec<(String, String)> = pairs
            .into_iter()
            .filter_map(|(name, value)| {
                let name = name.into_string().ok()?;
                match value.into_string() {
                    Ok(value) => Some((name, value)),
                    Err(_) => {
                        not_utf8.push(name);
                        None
                    }
                }
            })
            .collect();
        let mut env = Environment::from_pairs(utf8);
        env.not_utf8 = not_utf8;
        env
    }

    /// Whether `name` is set to a value that is not UTF-8 (and so is absent from this
    /// snapshot). A source must refuse such a variable rather than act as if it were unset,
    /// or the chain would fall through to another source without a word.
    pub(crate) fn not_utf8(&self, name: &str) -> bool {
        self.not_utf8.iter().any(|n| n == name)
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
            not_utf8: Vec::new(),
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
    pub(crate) fn get_nonblank(&self, name: &str) -> Option<&str> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
    }

    /// The system-wide profile file the default chain tries last before the CVM role.
    pub(crate) fn system_profile(&self) -> &Path {
        &self.system_profile
    }
}
