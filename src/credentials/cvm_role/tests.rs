//! Unit tests of the CVM role client, its answers and its refresh schedule.

use reqwest::Url;
use serde_json::Value;

use super::answer::parse_credentials;
use super::client::valid_role_name;
use super::*;
use crate::credentials::refresh::forced_refresh_at;

const NOW: i64 = 1_700_000_000;

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

#[test]
fn refresh_at_is_300_s_before_expiry() {
    assert_eq!(secs(refresh_at(NOW, NOW + 303)), 3);
    assert_eq!(secs(refresh_at(NOW, NOW + 301)), 1);
    assert_eq!(secs(refresh_at(NOW, NOW + 1_800)), 1_500);
    assert_eq!(secs(refresh_at(NOW, NOW + 3_900)), 3_600);
}

#[test]
fn refresh_at_is_capped_at_an_hour() {
    assert_eq!(secs(refresh_at(NOW, NOW + 43_200)), 3_600);
    assert_eq!(secs(refresh_at(NOW, i64::MAX)), 3_600);
    assert_eq!(secs(refresh_at(i64::MIN, i64::MAX)), 3_600);
}

#[test]
fn short_lived_credentials_halve_the_wait_without_busy_looping() {
    assert_eq!(secs(refresh_at(NOW, NOW + 300)), 150);
    assert_eq!(secs(refresh_at(NOW, NOW + 100)), 50);
    assert_eq!(secs(refresh_at(NOW, NOW + 12)), 6);
    assert_eq!(secs(refresh_at(NOW, NOW + 9)), 5);
    assert_eq!(secs(refresh_at(NOW, NOW)), 5);
    assert_eq!(secs(refresh_at(NOW, NOW - 1_000)), 5);
    assert_eq!(secs(refresh_at(NOW, i64::MIN)), 5);
}

#[test]
fn refresh_never_waits_past_expiry_when_there_is_time() {
    for remaining in 11..10_000 {
        let wait = secs(refresh_at(NOW, NOW + remaining)) as i64;
        assert!(wait >= 1, "{remaining}");
        assert!(wait < remaining, "{remaining}: {wait}");
    }
}

#[test]
fn retry_delay_doubles_up_to_a_minute() {
    let got: Vec<u64> = (1..=9).map(|n| secs(retry_delay(n))).collect();
    assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(secs(retry_delay(0)), 1);
    assert_eq!(secs(retry_delay(u32::MAX)), 60);
}

fn url() -> Url {
    Url::parse("http://127.0.0.1:1/latest/meta-data/cam/security-credentials/r").unwrap()
}

#[test]
fn parses_an_answer() {
    let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k3y","Token":"t0k","ExpiredTime":1700000900,"Expiration":"2023-11-14T22:28:20Z","Code":"Success"}"#;
    let got = parse_credentials(&url(), body).unwrap();
    assert_eq!(got.credentials.secret_id, "AKIDt");
    assert_eq!(got.expires_at, 1_700_000_900);
    let text = format!("{got:?}");
    assert!(!text.contains("k3y") && !text.contains("t0k"), "{text}");
}

#[test]
fn expiry_falls_back_to_expiration() {
    let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t","Expiration":"2023-11-14T22:28:20Z","Code":"Success"}"#;
    assert_eq!(
        parse_credentials(&url(), body).unwrap().expires_at,
        1_700_000_900
    );
    let body = br#"{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t","ExpiredTime":"1700000900","Code":"Success"}"#;
    assert_eq!(
        parse_credentials(&url(), body).unwrap().expires_at,
        1_700_000_900
    );
}

#[test]
fn bad_answers_name_the_field_not_the_value() {
    let cases: &[(&[u8], &str)] = &[
        (b"<html>", "not JSON"),
        (b"[1]", "not a JSON object"),
        (br#"{"Code":"Failed","TmpSecretKey":"s3cr3t"}"#, "\"Failed\""),
        (br#"{"TmpSecretKey":"s3cr3t"}"#, "Code is missing"),
        (br#"{"Code":"Success","TmpSecretKey":"s3cr3t"}"#, "TmpSecretId is missing"),
        (
            br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":7,"Token":"s3cr3t"}"#,
            "TmpSecretKey is not a string",
        ),
        (
            br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3 cr3t","Token":"t"}"#,
            "TmpSecretKey contains whitespace",
        ),
        (
            br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3cr3t","Token":"t","ExpiredTime":"s3cr3t"}"#,
            "ExpiredTime is not a positive whole number",
        ),
        (
            br#"{"Code":"Success","TmpSecretId":"AKID","TmpSecretKey":"s3cr3t","Token":"t"}"#,
            "ExpiredTime is missing",
        ),
    ];
    for (body, want) in cases {
        let error = parse_credentials(&url(), body).unwrap_err();
        let text = error.to_string();
        assert_eq!(error.code(), "CvmRoleError.BadAnswer", "{text}");
        assert!(text.contains(want), "{text}");
        assert!(
            !text.contains("s3cr3t") && !text.contains("s3 cr3t"),
            "{text}"
        );
    }
}

#[test]
fn absurd_expiry_values_are_refused_not_trusted() {
    let with = |expiry: &str| {
        format!(
            r#"{{"TmpSecretId":"AKIDt","TmpSecretKey":"k","Token":"t",{expiry},"Code":"Success"}}"#
        )
    };
    for bad in [
        r#""ExpiredTime":-1"#,
        r#""ExpiredTime":0"#,
        r#""ExpiredTime":9223372036854775808"#,
        r#""ExpiredTime":1e300"#,
        r#""ExpiredTime":"-9223372036854775808""#,
        r#""Expiration":"0001-01-01T00:00:00Z""#,
        r#""Expiration":"1969-12-31T23:59:59Z""#,
    ] {
        let error = parse_credentials(&url(), with(bad).as_bytes()).unwrap_err();
        assert_eq!(error.code(), "CvmRoleError.BadAnswer", "{bad}: {error}");
    }
    // Far in the future is accepted: refresh_at bounds the wait to an hour anyway.
    let got = parse_credentials(
        &url(),
        with(r#""ExpiredTime":9223372036854775807"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(got.expires_at, i64::MAX);
    assert_eq!(secs(refresh_at(NOW, got.expires_at)), 3_600);
}

#[test]
fn secrets_that_cannot_go_into_a_header_are_refused() {
    for (field, value) in [
        ("TmpSecretId", "AKIDé"),
        ("TmpSecretKey", "k\u{0}"),
        ("Token", "tök"),
        ("Token", "t\u{7f}"),
    ] {
        let mut answer = serde_json::json!({
            "TmpSecretId": "AKIDt", "TmpSecretKey": "k", "Token": "t",
            "ExpiredTime": 1_700_000_900, "Code": "Success"
        });
        answer[field] = Value::String(value.to_owned());
        let body = serde_json::to_vec(&answer).unwrap();
        let error = parse_credentials(&url(), &body).unwrap_err();
        assert!(error.to_string().contains(field), "{field}: {error}");
    }
}

#[test]
fn role_names_and_secret_ids_are_bounded() {
    assert!(valid_role_name(&"r".repeat(MAX_ROLE_NAME_BYTES)));
    assert!(!valid_role_name(&"r".repeat(MAX_ROLE_NAME_BYTES + 1)));
    let error =
        CvmRole::new(Url::parse("http://h/").unwrap(), Some("r".repeat(10_000))).unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.Setup");
    let body = serde_json::json!({
        "TmpSecretId": "A".repeat(MAX_SECRET_ID_BYTES + 1), "TmpSecretKey": "k", "Token": "t",
        "ExpiredTime": 1_700_000_900, "Code": "Success"
    });
    let error = parse_credentials(&url(), &serde_json::to_vec(&body).unwrap()).unwrap_err();
    let text = error.to_string();
    assert!(text.contains("TmpSecretId is longer than"), "{text}");
    assert!(text.len() < 300, "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_refresh_request_at_the_end_of_time_does_not_panic() {
    // The last representable instant.
    let mut far = tokio::time::Instant::now();
    let mut step = Duration::MAX;
    while !step.is_zero() {
        match far.checked_add(step) {
            Some(later) => far = later,
            None => step /= 2,
        }
    }
    assert_eq!(forced_refresh_at(far), far);
    let now = tokio::time::Instant::now();
    assert_eq!(forced_refresh_at(now), now + FORCED_REFRESH_MIN_GAP);
}

#[test]
fn new_checks_the_endpoint_and_adds_the_slash() {
    let role = CvmRole::new(Url::parse("http://127.0.0.1:9/meta").unwrap(), None).unwrap();
    assert_eq!(
        role.metadata_endpoint().as_str(),
        "http://127.0.0.1:9/meta/"
    );
    assert_eq!(
        role.role_url("R").unwrap().as_str(),
        "http://127.0.0.1:9/meta/cam/security-credentials/R"
    );
    assert_eq!(
        role.list_url().unwrap().as_str(),
        "http://127.0.0.1:9/meta/cam/security-credentials/"
    );
    let role = CvmRole::new(
        Url::parse("http://127.0.0.1:9/m/").unwrap(),
        Some(" R \n".into()),
    )
    .unwrap();
    assert_eq!(role.role(), Some("R"));
    for bad in ["ftp://h/", "http://h/?q=1", "file:///x/"] {
        let error = CvmRole::new(Url::parse(bad).unwrap(), None).unwrap_err();
        assert_eq!(error.code(), "CvmRoleError.Setup", "{bad}: {error}");
    }
    let error = CvmRole::new(Url::parse("http://h/").unwrap(), Some("a/b".into())).unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.Setup");
}
