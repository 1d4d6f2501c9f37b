//! The checked `[ha]` section (parsed and placed by `crate::config`).

use std::path::PathBuf;
use std::time::Duration;

/// `[ha]` with `etcd` non-empty: run active/standby (`docs/ha.md`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaSettings {
    /// etcd endpoints (`http://` or `https://` URLs).
    pub etcd: Vec<String>,
    /// The deployment's key prefix (`election`), one per deployment, without a trailing `/`.
    pub election: String,
    /// The lease's TTL (`lease_ttl`, default 10 s).
    pub lease_ttl: Duration,
    /// This process's name in the election (`name`, default the host name): what
    /// `leadership_lost`'s `holder` shows on the others.
    pub name: String,
    /// TLS: the CA that signs the etcd servers' certificates.
    pub ca_file: Option<PathBuf>,
    /// TLS client certificate and key (both or neither).
    pub cert_file: Option<PathBuf>,
    /// TLS client key.
    pub key_file: Option<PathBuf>,
    /// etcd user (with `password_file`).
    pub username: Option<String>,
    /// A file holding the etcd user's password (private; its content never reaches output).
    pub password_file: Option<PathBuf>,
}
