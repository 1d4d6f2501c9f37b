//! What `AssumeRole` has issued and what a test scripted for it: the temporary credentials
//! (bounded: past [`MAX_TEMPORARY`] the oldest is forgotten), the scripted failures
//! ([`StsFailure`]) and the cap on granted durations. A leaf: the shared state holds them,
//! `sts.rs` issues and checks.

use std::collections::HashMap;
use std::time::Duration;

/// The most temporary credentials kept; past it the oldest is forgotten (a hostile client
/// cannot grow the table without bound).
pub(crate) const MAX_TEMPORARY: usize = 10_000;

/// Credentials issued by `AssumeRole`.
pub(crate) struct TemporaryCredential {
    pub(crate) secret_key: String,
    pub(crate) token: String,
    /// Unix seconds on the simulator's clock.
    pub(crate) expires: i64,
    /// The rate window they count against: `role:` and the `RoleArn`.
    pub(crate) window: String,
    /// Issue order, for forgetting the oldest.
    serial: u64,
}

/// The temporary credentials issued so far.
#[derive(Default)]
pub(crate) struct TemporaryCredentials {
    by_id: HashMap<String, TemporaryCredential>,
    next_serial: u64,
}

impl TemporaryCredentials {
    /// The credential whose SecretId is `id`, if held.
    pub(crate) fn get(&self, id: &str) -> Option<&TemporaryCredential> {
        self.by_id.get(id)
    }

    /// The secret parts (`TmpSecretKey`, `Token`) of every credential held.
    pub(crate) fn secrets(&self) -> Vec<String> {
        self.by_id
            .values()
            .flat_map(|t| [t.secret_key.clone(), t.token.clone()])
            .collect()
    }

    /// Forgets every credential.
    pub(crate) fn clear(&mut self) {
        self.by_id.clear();
    }

    /// Holds a new credential under `id`, forgetting the oldest first when [`MAX_TEMPORARY`]
    /// are held.
    pub(crate) fn issue(
        &mut self,
        id: String,
        secret_key: String,
        token: String,
        expires: i64,
        window: String,
    ) {
        if self.by_id.len() >= MAX_TEMPORARY {
            let oldest = self
                .by_id
                .iter()
                .min_by_key(|(_, t)| t.serial)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                self.by_id.remove(&oldest);
            }
        }
        let serial = self.next_serial;
        self.next_serial += 1;
        self.by_id.insert(
            id,
            TemporaryCredential {
                secret_key,
                token,
                expires,
                window,
                serial,
            },
        );
    }
}

/// `AssumeRole` failures a test scripts (see
/// [`RunningSimulator::fail_assume_role`](crate::RunningSimulator::fail_assume_role)): the next
/// `times` calls signed by `secret_id` (any signer when `None`) that the limiter accepts get
/// HTTP `status` with `body` instead of credentials. A body holding a marker secret shows
/// whether a client ever prints what a credentials endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StsFailure {
    /// Only calls signed by this SecretId; `None`: every call.
    pub secret_id: Option<String>,
    /// How many calls fail.
    pub times: u32,
    /// The HTTP status answered (e.g. 503).
    pub status: u16,
    /// The body answered.
    pub body: String,
}

/// How long a test caps granted credentials; see
/// [`RunningSimulator::cap_assume_role_duration`](crate::RunningSimulator::cap_assume_role_duration).
pub(crate) type DurationCap = Option<Duration>;
