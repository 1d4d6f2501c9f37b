//! Credentials: the secret values and where they came from.
//!
//! Secrets are `secrecy` types so they cannot reach a log or `Debug` text by accident.

use secrecy::SecretString;

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
