//! The checks of a metadata credentials answer: hostile until checked, and no error quotes a
//! value. [`credential_field`] and [`expiry`] also check STS `AssumeRole` answers.

use reqwest::Url;
use secrecy::SecretString;
use serde_json::Value;

use super::{CvmRoleError, MAX_SECRET_ID_BYTES, RoleCredentials};
use crate::credentials::Credentials;

/// Parses the credentials answer. Works on a `serde_json::Value` so that no error message can
/// quote a value (serde's type errors would). Public (hidden) for the fuzz targets (`fuzz/`).
#[doc(hidden)]
pub fn parse_credentials(url: &Url, body: &[u8]) -> Result<RoleCredentials, CvmRoleError> {
    let bad = |problem: String| CvmRoleError::BadAnswer {
        url: url.to_string(),
        problem,
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "not JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Some(object) = value.as_object() else {
        return Err(bad("not a JSON object".to_owned()));
    };
    match object.get("Code") {
        Some(Value::String(code)) if code == "Success" => {}
        Some(Value::String(code)) => {
            let code: String = code.chars().take(64).collect();
            return Err(bad(format!("Code is {code:?}, not \"Success\"")));
        }
        Some(_) => return Err(bad("Code is not a string".to_owned())),
        None => return Err(bad("Code is missing".to_owned())),
    }
    let text = |name: &str| credential_field(object, name).map_err(bad);
    let secret_id = text("TmpSecretId")?;
    if secret_id.len() > MAX_SECRET_ID_BYTES {
        return Err(bad(format!(
            "TmpSecretId is longer than {MAX_SECRET_ID_BYTES} bytes"
        )));
    }
    let secret_key = SecretString::from(text("TmpSecretKey")?);
    let token = SecretString::from(text("Token")?);
    let expires_at = expiry(object).map_err(bad)?;
    Ok(RoleCredentials {
        credentials: Credentials {
            secret_id,
            secret_key,
            token: Some(token),
        },
        expires_at,
        role: String::new(),
    })
}

/// A credential string of an answer (`TmpSecretId`, `TmpSecretKey`, `Token`): present,
/// non-empty, printable ASCII (it goes into HTTP headers). The error names the field, never
/// the value. Shared with [`crate::credentials::assume_role`], whose answers carry the same fields.
pub(in crate::credentials) fn credential_field(
    object: &serde_json::Map<String, Value>,
    name: &str,
) -> Result<String, String> {
    match object.get(name) {
        Some(Value::String(s)) if s.is_empty() => Err(format!("{name} is empty")),
        Some(Value::String(s)) if s.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(format!("{name} contains whitespace or control characters"))
        }
        // They go into HTTP headers, which take visible ASCII only.
        Some(Value::String(s)) if !s.bytes().all(|b| b.is_ascii_graphic()) => Err(format!(
            "{name} contains characters other than printable ASCII"
        )),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("{name} is not a string")),
        None => Err(format!("{name} is missing")),
    }
}

/// `ExpiredTime` (Unix seconds, a number or a string of digits), else `Expiration` (RFC 3339).
/// Shared with [`crate::credentials::assume_role`]: STS answers carry the same two fields.
pub(in crate::credentials) fn expiry(
    object: &serde_json::Map<String, Value>,
) -> Result<i64, String> {
    match object.get("ExpiredTime") {
        Some(Value::Number(n)) => n
            .as_i64()
            .filter(|t| *t > 0)
            .ok_or_else(|| "ExpiredTime is not a positive whole number".to_owned()),
        Some(Value::String(s)) => s
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|t| *t > 0)
            .ok_or_else(|| "ExpiredTime is not a positive whole number".to_owned()),
        Some(_) => Err("ExpiredTime is not a number".to_owned()),
        None => match object.get("Expiration") {
            Some(Value::String(s)) => time::OffsetDateTime::parse(
                s.trim(),
                &time::format_description::well_known::Rfc3339,
            )
            .map_err(|_| "ExpiredTime is missing and Expiration is not RFC 3339".to_owned())
            .and_then(|t| {
                Some(t.unix_timestamp())
                    .filter(|t| *t > 0)
                    .ok_or_else(|| "Expiration is not after 1970".to_owned())
            }),
            _ => Err("ExpiredTime is missing".to_owned()),
        },
    }
}
