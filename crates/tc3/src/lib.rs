//! TC3-HMAC-SHA256 request signing, as Tencent Cloud API 3.0 defines it.
//!
//! Pure code: request parts and credentials in, header values out. The client signs with
//! [`sign`]; the simulator verifies with the same building blocks ([`canonical_request_hash`],
//! [`string_to_sign`], [`signature`]) so that both sides agree by construction, and the official
//! test vectors pin both to what Tencent computes.

#![deny(missing_docs)]

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// The only algorithm the API accepts for API 3.0 requests.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";

type HmacSha256 = Hmac<Sha256>;

/// What is signed about one request.
#[derive(Debug, Clone, Copy)]
pub struct RequestParts<'a> {
    /// `POST` for every call this crate makes.
    pub method: &'a str,
    /// The `Host` header exactly as sent (with `:port` when it is not the default).
    pub host: &'a str,
    /// The `Content-Type` header exactly as sent: the signature covers its bytes.
    pub content_type: &'a str,
    /// The exact request body bytes.
    pub payload: &'a [u8],
    /// Signing service name, e.g. `yunjing`.
    pub service: &'a str,
    /// Unix seconds, also sent as `X-TC-Timestamp`.
    pub timestamp: i64,
}

/// The signature and the `Authorization` header built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// Hex signature.
    pub signature: String,
    /// Full `Authorization` header value.
    pub authorization: String,
}

/// `YYYY-MM-DD` of a Unix timestamp in UTC. A local-time date breaks signatures around midnight.
pub fn utc_date(timestamp: i64) -> String {
    let days = timestamp.div_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Howard Hinnant's days-to-civil algorithm: exact for every proleptic Gregorian date, no
/// dependency on the process time zone.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // new_from_slice only fails for fixed-size-key MACs; HMAC takes any key length.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Hex SHA-256 of the canonical request.
///
/// `canonical_headers` is the `name:value\n` list of the signed headers (lower-case names,
/// trimmed values) and `signed_headers` their `;`-joined names.
pub fn canonical_request_hash(
    method: &str,
    uri: &str,
    query: &str,
    canonical_headers: &str,
    signed_headers: &str,
    payload: &[u8],
) -> String {
    let canonical = format!(
        "{method}\n{uri}\n{query}\n{canonical_headers}\n{signed_headers}\n{}",
        sha256_hex(payload)
    );
    sha256_hex(canonical.as_bytes())
}

/// `Date/service/tc3_request`.
pub fn credential_scope(timestamp: i64, service: &str) -> String {
    format!("{}/{service}/tc3_request", utc_date(timestamp))
}

/// The string the signature covers.
pub fn string_to_sign(timestamp: i64, scope: &str, canonical_hash: &str) -> String {
    format!("{ALGORITHM}\n{timestamp}\n{scope}\n{canonical_hash}")
}

/// Hex HMAC chain: `TC3`+key → date → service → `tc3_request` → string to sign.
pub fn signature(secret_key: &str, date: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Signs one request the way every call of this crate is signed: headers `content-type;host`.
pub fn sign(secret_id: &str, secret_key: &str, parts: &RequestParts<'_>) -> Signed {
    let signed_headers = "content-type;host";
    let canonical_headers = format!(
        "content-type:{}\nhost:{}\n",
        parts.content_type.trim().to_ascii_lowercase(),
        parts.host.trim().to_ascii_lowercase()
    );
    let hash = canonical_request_hash(
        parts.method,
        "/",
        "",
        &canonical_headers,
        signed_headers,
        parts.payload,
    );
    let scope = credential_scope(parts.timestamp, parts.service);
    let to_sign = string_to_sign(parts.timestamp, &scope, &hash);
    let sig = signature(
        secret_key,
        &utc_date(parts.timestamp),
        parts.service,
        &to_sign,
    );
    let authorization = format!(
        "{ALGORITHM} Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}"
    );
    Signed {
        signature: sig,
        authorization,
    }
}

/// One set of API credentials. `Debug` never shows the secret key or token.
#[derive(Clone)]
pub struct Credentials {
    /// SecretId (AKID…): not secret by itself, shown in `Authorization` headers.
    pub secret_id: String,
    /// SecretKey: never logged.
    pub secret_key: secrecy::SecretString,
    /// Session token of temporary credentials, sent as `X-TC-Token`.
    pub token: Option<secrecy::SecretString>,
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

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str =
        r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;

    fn vector() -> RequestParts<'static> {
        RequestParts {
            method: "POST",
            host: "cvm.tencentcloudapi.com",
            content_type: "application/json; charset=utf-8",
            payload: BODY.as_bytes(),
            service: "cvm",
            timestamp: 1_551_113_065,
        }
    }

    #[test]
    fn payload_and_canonical_hashes_match_the_official_vector() {
        assert_eq!(
            sha256_hex(BODY.as_bytes()),
            "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064"
        );
        let hash = canonical_request_hash(
            "POST",
            "/",
            "",
            "content-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n",
            "content-type;host",
            BODY.as_bytes(),
        );
        assert_eq!(
            hash,
            "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
        );
    }

    #[test]
    fn official_vector_gives_the_official_signature_and_header() {
        let signed = sign(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            &vector(),
        );
        assert_eq!(
            signed.signature,
            "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn newer_doc_vector_with_literal_asterisks() {
        let signed = sign(
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            "Gu5t9xGARNpq86cd98joQYCN3*******",
            &vector(),
        );
        assert_eq!(
            signed.signature,
            "2230eefd229f582d8b1b891af7107b91597240707d778ab3738f756258d7652c"
        );
    }

    #[test]
    fn date_is_the_utc_date_not_the_local_one() {
        // 1551113065 is 2019-02-25 16:44:25 UTC, already 2019-02-26 00:44 in UTC+8.
        assert_eq!(utc_date(1_551_113_065), "2019-02-25");
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(1_798_761_599), "2026-12-31");
        assert_eq!(utc_date(1_798_761_600), "2027-01-01");
    }

    /// Every day from 1600 to 2600 (four 400-year leap cycles, both sides of 1970) against
    /// the `time` crate's calendar, an independent implementation.
    #[test]
    fn utc_date_agrees_with_the_time_crate_on_every_day_of_a_thousand_years() {
        let format = time::macros::format_description!("[year]-[month]-[day]");
        let first = time::macros::datetime!(1600-01-01 00:00 UTC).unix_timestamp();
        let last = time::macros::datetime!(2600-12-31 00:00 UTC).unix_timestamp();
        let mut day = first;
        while day <= last {
            // Both ends of the day.
            for ts in [day, day + 86_399] {
                let want = time::OffsetDateTime::from_unix_timestamp(ts)
                    .unwrap()
                    .format(&format)
                    .unwrap();
                assert_eq!(utc_date(ts), want, "timestamp {ts}");
            }
            day += 86_400;
        }
    }

    #[test]
    fn another_key_gives_another_signature() {
        let a = sign("AKID", "key-a", &vector());
        let b = sign("AKID", "key-b", &vector());
        assert_ne!(a.signature, b.signature);
    }
}
