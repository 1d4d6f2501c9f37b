//! [`Environment`]: a snapshot of the environment variables that credential resolution and the
//! config defaults read, so tests pass their own instead of mutating the process environment.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

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
