//! STS `AssumeRole` (service `sts`, version `2018-08-13`) and the temporary credentials it
//! issues: any `RoleArn` is granted; the credentials sign requests to every action until
//! `ExpiredTime`, sent with their token in `X-TC-Token` (else `AuthFailure.TokenFailure`).
//!
//! Rate windows: a permanent SecretId is its own sub-account, with its own window per action;
//! temporary credentials count against their role (`RoleArn`), the sub-account they act as, so
//! renewing them never opens a fresh window.

use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use super::lock::lock;
use super::shared::Shared;
use super::wire::Answer;

/// The action.
pub const ASSUME_ROLE_ACTION: &str = "AssumeRole";
/// Its API version.
pub const STS_VERSION: &str = "2018-08-13";
/// Its signing service.
pub const STS_SERVICE: &str = "sts";
/// Its documented rate limit, requests per second.
pub const STS_PER_SECOND: u32 = 600;
/// `DurationSeconds` when the request has none, and the most it may be (the real API's).
const DEFAULT_DURATION_SECS: i64 = 7200;
const MAX_DURATION_SECS: i64 = 43_200;
/// The longest `RoleArn` and `RoleSessionName` accepted.
const MAX_ARN_CHARS: usize = 512;
const MAX_SESSION_NAME_CHARS: usize = 128;

/// Who signed a request: the key to verify with, the window to count against and, for
/// temporary credentials, the token and expiry to check.
pub(crate) struct Signer {
    pub(crate) secret_key: String,
    pub(crate) window: String,
    pub(crate) token: Option<(String, i64)>,
}

fn random_text(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl Shared {
    /// The signer behind `secret_id`, if the simulator knows it.
    pub(crate) fn signer(&self, secret_id: &str) -> Option<Signer> {
        if let Some(key) = self.keys.get(secret_id) {
            return Some(Signer {
                secret_key: key.clone(),
                window: secret_id.to_owned(),
                token: None,
            });
        }
        let temporary = lock(&self.temporary);
        let t = temporary.get(secret_id)?;
        Some(Signer {
            secret_key: t.secret_key.clone(),
            window: t.window.clone(),
            token: Some((t.token.clone(), t.expires)),
        })
    }

    /// The secret parts (`TmpSecretKey`, `Token`) of the temporary credentials held now.
    pub(crate) fn temporary_secrets(&self) -> Vec<String> {
        lock(&self.temporary).secrets()
    }

    /// Forgets every temporary credential: requests signed with one answer
    /// `AuthFailure.SecretIdNotFound` from now on.
    pub(crate) fn revoke_temporary(&self) {
        lock(&self.temporary).clear();
    }

    /// `AssumeRole`: temporary credentials for any role.
    pub(crate) fn assume_role(&self, body: &[u8]) -> Answer {
        match self.try_assume_role(body) {
            Ok(answer) | Err(answer) => answer,
        }
    }

    fn try_assume_role(&self, body: &[u8]) -> Result<Answer, Answer> {
        let params = super::actions::params(
            body,
            &[
                "RoleArn",
                "RoleSessionName",
                "DurationSeconds",
                "Policy",
                "ExternalId",
            ],
        )?;
        let text = |name: &str, max: usize| -> Result<String, Answer> {
            match params.get(name) {
                None => Err(Answer::error(
                    "MissingParameter",
                    format!("The request is missing a required parameter `{name}`."),
                )),
                Some(Value::String(s))
                    if !s.is_empty()
                        && s.chars().count() <= max
                        && !s.chars().any(cwp_text::is_unsafe) =>
                {
                    Ok(s.clone())
                }
                Some(_) => Err(Answer::error(
                    "InvalidParameterValue",
                    format!(
                        "The value of parameter `{name}` must be a string of 1 to {max} characters."
                    ),
                )),
            }
        };
        let role_arn = text("RoleArn", MAX_ARN_CHARS)?;
        text("RoleSessionName", MAX_SESSION_NAME_CHARS)?;
        let requested = match params.get("DurationSeconds") {
            None => DEFAULT_DURATION_SECS,
            Some(v) => match v.as_i64() {
                Some(d) if (1..=MAX_DURATION_SECS).contains(&d) => d,
                _ => {
                    return Err(Answer::error(
                        "InvalidParameterValue",
                        format!(
                            "DurationSeconds must be an integer from 1 to {MAX_DURATION_SECS}."
                        ),
                    ));
                }
            },
        };
        // A test may grant less than asked, to see renewal within seconds.
        let granted = match *lock(&self.assume_role_cap) {
            Some(cap) => requested.min(i64::try_from(cap.as_secs()).unwrap_or(i64::MAX)),
            None => requested,
        };
        let expires = self.now_unix().saturating_add(granted);
        let id = format!("AKID{}", random_text(32));
        let key = random_text(32);
        let token = random_text(64);
        lock(&self.temporary).issue(
            id.clone(),
            key.clone(),
            token.clone(),
            expires,
            format!("role:{role_arn}"),
        );
        let expiration = time::OffsetDateTime::from_unix_timestamp(expires)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        let mut fields = Map::new();
        fields.insert(
            "Credentials".to_owned(),
            json!({ "Token": token, "TmpSecretId": id, "TmpSecretKey": key }),
        );
        fields.insert("ExpiredTime".to_owned(), json!(expires));
        fields.insert("Expiration".to_owned(), json!(expiration));
        Ok(Answer::Fields(fields))
    }
}

impl Shared {
    /// The scripted failure for a call signed by `secret_id`, if one is left (used up by it).
    pub(crate) fn take_sts_failure(&self, secret_id: &str) -> Option<(u16, String)> {
        let mut failures = lock(&self.sts_failures);
        let at = failures
            .iter()
            .position(|f| f.times > 0 && f.secret_id.as_deref().is_none_or(|id| id == secret_id))?;
        let failure = &mut failures[at];
        failure.times -= 1;
        let answer = (failure.status, failure.body.clone());
        if failure.times == 0 {
            failures.remove(at);
        }
        Some(answer)
    }
}
