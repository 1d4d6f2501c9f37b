//! TLS trust against a real local HTTPS server whose CA the test makes: accepted with
//! `ca_file`, refused without it (a certificate error, said as such), refused for a wrong host
//! name even with it; for the API client, the STS client and the CVM metadata client. And the
//! checks of `ca_file` itself, and the loud failure on a host without any CA.

use std::path::Path;
use std::time::Duration;

use secrecy::SecretString;

use super::test_server::{HttpsServer, TestCa};
use super::*;
use crate::api::client::ClientBuildError;
use crate::api::{Client, ClientOptions};
use crate::credentials::Credentials;
use crate::credentials::assume_role::{
    AssumeRole, AssumeRoleError, BaseCredentials, RoleRequest, StsOptions,
};
use crate::credentials::cvm_role::CvmRole;

const UUID: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

fn credentials() -> Credentials {
    Credentials {
        secret_id: "AKIDtest".to_owned(),
        secret_key: SecretString::from("key".to_owned()),
        token: None,
    }
}

fn api_client(endpoint: Url, trust: &TlsTrust) -> Result<Client, ClientBuildError> {
    Client::with_trust(
        ClientOptions {
            endpoint,
            region: None,
            timeout: Duration::from_secs(10),
            max_idle_connections: 1,
        },
        credentials(),
        trust,
    )
}

fn sts_client(endpoint: Url, trust: &TlsTrust) -> AssumeRole {
    AssumeRole::with_trust(
        RoleRequest {
            role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
            role_session_name: "s1".to_owned(),
            duration: Duration::from_secs(7_200),
        },
        StsOptions {
            endpoint,
            region: None,
            timeout: Duration::from_secs(10),
        },
        BaseCredentials::Fixed(credentials()),
        trust,
    )
    .unwrap()
}

/// The daemon's rule with `ca`'s certificate as `ca_file`.
fn with_ca_file(ca: &TestCa) -> TlsTrust {
    TlsTrust::with_ca_file(Some(ca.bundle()))
}

#[tokio::test]
async fn with_ca_file_a_real_api_call_succeeds() {
    let ca = TestCa::new("proxy CA");
    let server = HttpsServer::start(&ca, &["127.0.0.1", "localhost"]).await;
    for host in ["127.0.0.1", "localhost"] {
        let client = api_client(server.url(host), &with_ca_file(&ca)).unwrap();
        let answer = client.describe_open_port_task_status(UUID).await.unwrap();
        assert_eq!(answer.status, "COMPLETE", "{host}");
        assert_eq!(answer.request_id, "tls-test-1");
    }
    assert_eq!(server.answered(), 2);
}

/// A refusal of `server`'s certificate by the API client, as the daemon reports it.
async fn api_refusal(server: &HttpsServer, trust: &TlsTrust) -> crate::api::ApiError {
    let client = api_client(server.url("127.0.0.1"), trust).unwrap();
    let error = client
        .describe_open_port_task_status(UUID)
        .await
        .unwrap_err();
    assert_eq!(error.code(), "ClientError.Certificate", "{error}");
    assert_eq!(error.class(), crate::api::ErrorClass::Transient);
    error
}

#[tokio::test]
async fn without_ca_file_the_server_is_refused_as_an_unknown_issuer() {
    let ca = TestCa::new("proxy CA");
    let server = HttpsServer::start(&ca, &["127.0.0.1"]).await;
    // A store that does not hold the proxy's CA, whatever this host's store holds.
    let elsewhere = TlsTrust::only(TestCa::new("some other CA").bundle());
    let error = api_refusal(&server, &elsewhere).await;
    let text = error.to_string();
    assert!(text.contains("TLS certificate refused"), "{text}");
    assert!(text.contains("unknown issuer"), "{text}");
    assert!(text.contains("ca_file"), "{text}");
    // Refused during the handshake: no request reached the server.
    assert_eq!(server.answered(), 0);
}

#[tokio::test]
async fn the_system_store_alone_refuses_a_private_ca() {
    let ca = TestCa::new("proxy CA");
    let server = HttpsServer::start(&ca, &["127.0.0.1"]).await;
    let found = rustls_native_certs::load_native_certs().certs.len();
    match api_client(server.url("127.0.0.1"), &TlsTrust::system()) {
        // This host has a CA store (scripts/test installs ca-certificates): it does not know
        // the test's CA.
        Ok(client) => {
            assert!(found > 0);
            let error = client
                .describe_open_port_task_status(UUID)
                .await
                .unwrap_err();
            assert_eq!(error.code(), "ClientError.Certificate", "{error}");
        }
        // No store at all: the loud failure.
        Err(error) => {
            assert_eq!(found, 0, "{error}");
            assert_eq!(error.code(), "TlsError.NoSystemRoots");
        }
    }
    assert_eq!(server.answered(), 0);
}

#[tokio::test]
async fn a_certificate_for_another_name_is_refused_even_with_ca_file() {
    let ca = TestCa::new("proxy CA");
    let server = HttpsServer::start(&ca, &["other.example"]).await;
    let error = api_refusal(&server, &with_ca_file(&ca)).await;
    let text = error.to_string();
    assert!(
        text.contains("not valid for the host name 127.0.0.1"),
        "{text}"
    );
    assert_eq!(server.answered(), 0);
}

#[tokio::test]
async fn the_sts_client_follows_the_same_rule() {
    let ca = TestCa::new("proxy CA");
    let server = HttpsServer::start(&ca, &["127.0.0.1"]).await;
    let endpoint = server.url("127.0.0.1");
    // Accepted with ca_file: a real AssumeRole answer.
    let assumed = sts_client(endpoint.clone(), &with_ca_file(&ca))
        .fetch()
        .await
        .unwrap();
    assert_eq!(assumed.credentials.secret_id, "AKIDtls");
    assert_eq!(assumed.request_id, "tls-test-2");
    // Refused without it, said as a certificate problem.
    let elsewhere = TlsTrust::only(TestCa::new("some other CA").bundle());
    let error = sts_client(endpoint, &elsewhere).fetch().await.unwrap_err();
    assert_eq!(error.code(), "AssumeRoleError.Certificate", "{error}");
    assert_eq!(error.api_code(), Some("ClientError.Certificate"));
    assert!(error.to_string().contains("unknown issuer"), "{error}");
    // Refused for a wrong host name even with ca_file.
    let wrong = HttpsServer::start(&ca, &["other.example"]).await;
    let error = sts_client(wrong.url("127.0.0.1"), &with_ca_file(&ca))
        .fetch()
        .await
        .unwrap_err();
    assert!(
        matches!(error, AssumeRoleError::Certificate { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("not valid for the host name"),
        "{error}"
    );
    assert_eq!(server.answered() + wrong.answered(), 1);
}

#[tokio::test]
async fn an_https_metadata_service_follows_the_same_rule() {
    let ca = TestCa::new("metadata CA");
    let server = HttpsServer::start(&ca, &["127.0.0.1"]).await;
    let endpoint = server.url("127.0.0.1").join("meta/").unwrap();
    let role = Some("r".to_owned());
    let fetched = CvmRole::with_trust(endpoint.clone(), role.clone(), &with_ca_file(&ca))
        .unwrap()
        .fetch()
        .await
        .unwrap();
    assert_eq!(fetched.credentials.secret_id, "AKIDcvm");
    let elsewhere = TlsTrust::only(TestCa::new("some other CA").bundle());
    let error = CvmRole::with_trust(endpoint, role, &elsewhere)
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.Unreachable", "{error}");
    assert!(
        error.to_string().contains("TLS certificate refused"),
        "{error}"
    );
    assert_eq!(server.answered(), 1);
}

#[test]
fn an_https_endpoint_without_any_ca_fails_loudly_with_what_to_do() {
    let https = Url::parse("https://yunjing.tencentcloudapi.com/").unwrap();
    let no_store = || {
        (
            0,
            vec!["could not load certs from dir /etc/ssl/certs\n: gone".into()],
        )
    };
    let error = TlsTrust::system()
        .client_checking(&https, |b| b, no_store)
        .unwrap_err();
    assert_eq!(error.code(), "TlsError.NoSystemRoots");
    let text = error.to_string();
    for hint in [
        "no CA certificates",
        "yunjing.tencentcloudapi.com",
        "apt install ca-certificates",
        "ca_file",
        "/etc/ssl/certs\\n: gone",
    ] {
        assert!(text.contains(hint), "{hint}: {text}");
    }
    // The API client's construction carries it (so the start-up fails with it).
    let built: ClientBuildError = error.into();
    assert_eq!(built.code(), "TlsError.NoSystemRoots");
    // A store with certificates is fine.
    TlsTrust::system()
        .client_checking(&https, |b| b, || (140, vec![]))
        .unwrap();
}

#[test]
fn the_store_is_not_asked_when_it_does_not_decide() {
    let asked = std::cell::Cell::new(false);
    let no_store = || {
        asked.set(true);
        (0, vec![])
    };
    let https = Url::parse("https://yunjing.tencentcloudapi.com/").unwrap();
    let loopback = Url::parse("http://127.0.0.1:8080/").unwrap();
    // ca_file set: its CA is enough.
    let ca = TestCa::new("proxy CA");
    with_ca_file(&ca)
        .client_checking(&https, |b| b, no_store)
        .unwrap();
    // Plain http (the simulator): no TLS at all.
    TlsTrust::system()
        .client_checking(&loopback, |b| b, no_store)
        .unwrap();
    assert!(!asked.get());
}

fn refused(pem: &[u8]) -> CaFileError {
    CaBundle::parse(Path::new("/etc/cwp-portwatch/ca.pem"), pem).unwrap_err()
}

#[test]
fn ca_file_contents_are_checked_with_what_to_do() {
    let ca = TestCa::new("proxy CA");
    let pem = ca.pem();
    // One, two certificates, other blocks around them ignored.
    assert_eq!(
        CaBundle::parse(Path::new("ca.pem"), pem.as_bytes())
            .unwrap()
            .certificate_count(),
        1
    );
    let two = format!(
        "# proxy\n{pem}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
        TestCa::new("second").pem()
    );
    assert_eq!(
        CaBundle::parse(Path::new("ca.pem"), two.as_bytes())
            .unwrap()
            .certificate_count(),
        2
    );
    let cut_short = pem.replace("-----END CERTIFICATE-----", "");
    let cases: [(&[u8], &str, &str); 5] = [
        (
            b"\x30\x82\x01\x0a binary DER",
            "CaFileError.NotPem",
            "openssl x509",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n",
            "CaFileError.BadPem",
            "damaged",
        ),
        (cut_short.as_bytes(), "CaFileError.BadPem", "damaged"),
        (
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "CaFileError.NoCertificate",
            "no certificate",
        ),
        (
            b"-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
            "CaFileError.BadCertificate",
            "certificate 1 of",
        ),
    ];
    for (text, code, hint) in cases {
        let error = refused(text);
        assert_eq!(error.code(), code, "{error}");
        assert!(error.to_string().contains(hint), "{error}");
        assert!(
            error.to_string().contains("/etc/cwp-portwatch/ca.pem"),
            "{error}"
        );
    }
}

#[test]
fn ca_file_is_read_bounded_and_its_path_shown_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no\nsuch.pem");
    let error = CaBundle::read(&missing).unwrap_err();
    assert_eq!(error.code(), "CaFileError.Missing");
    assert!(!error.to_string().contains('\n'), "{error}");
    assert!(error.to_string().contains("no\\u{a}such.pem"), "{error}");
    let error = CaBundle::read(dir.path()).unwrap_err();
    assert_eq!(error.code(), "CaFileError.Unreadable", "{error}");
    let large = dir.path().join("large.pem");
    std::fs::write(&large, vec![b'A'; MAX_CA_FILE_BYTES as usize + 1]).unwrap();
    assert_eq!(
        CaBundle::read(&large).unwrap_err().code(),
        "CaFileError.TooLarge"
    );
    let good = dir.path().join("ca.pem");
    std::fs::write(&good, TestCa::new("proxy CA").pem()).unwrap();
    let bundle = CaBundle::read(&good).unwrap();
    assert_eq!(bundle.path(), good);
    assert_eq!(bundle.certificate_count(), 1);
}
