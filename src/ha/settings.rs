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

impl HaSettings {
    /// `lease_ttl` when the file names none.
    pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(10);
    /// `lease_ttl` allowed. Below 3 s the fence's 1 s margin and etcd's own minimum lease TTL
    /// (1.5 × its election timeout, 1.5 s by default, rounded up) leave too little: one slow
    /// renewal or a short pause of etcd's leader would depose a healthy leader. Above 5 minutes a
    /// crashed leader leaves every account unwatched for longer than any poll interval worth
    /// having: the TTL is how long a takeover can take.
    pub const LEASE_TTL_RANGE: std::ops::RangeInclusive<Duration> =
        Duration::from_secs(3)..=Duration::from_secs(5 * 60);
    /// The most `etcd` endpoints: a cluster has 3, 5 or 7 members.
    pub const MAX_ENDPOINTS: usize = 16;
    /// The longest `name` (a host name is at most 64 bytes on Linux; an FQDN 253).
    pub const MAX_NAME_CHARS: usize = 253;
    /// The longest `election` prefix.
    pub const MAX_ELECTION_CHARS: usize = 256;
    /// The longest `username`.
    pub const MAX_USERNAME_CHARS: usize = 128;

    /// The section in one line, for `check` (paths shown escaped, never a file's content).
    pub fn summary(&self) -> String {
        let shown = |p: &Option<PathBuf>| p.as_deref().map(crate::state::shown).unwrap_or_default();
        let tls = match (&self.ca_file, &self.cert_file) {
            (None, None) => String::new(),
            (ca, None) => format!(", tls ca {}", shown(ca)),
            (None, cert) => format!(", tls client cert {}", shown(cert)),
            (ca, cert) => format!(", tls ca {} client cert {}", shown(ca), shown(cert)),
        };
        let user = match &self.username {
            Some(user) => format!(
                ", user {} (password from {})",
                crate::escape::escape(user),
                shown(&self.password_file)
            ),
            None => String::new(),
        };
        format!(
            "etcd {}, election {}, lease_ttl {}, name {}{tls}{user}",
            self.etcd.join(" "),
            crate::escape::escape(&self.election),
            humantime::format_duration(self.lease_ttl),
            crate::escape::escape(&self.name),
        )
    }

    /// This host's name (the default `name`), when it has a usable one.
    pub fn host_name() -> Option<String> {
        let mut buffer = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at most that much.
        let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
        if rc != 0 {
            return None;
        }
        let end = buffer.iter().position(|b| *b == 0)?;
        let name = std::str::from_utf8(&buffer[..end]).ok()?.trim();
        (!name.is_empty()).then(|| name.to_owned())
    }
}
