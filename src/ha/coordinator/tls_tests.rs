//! `[ha]`'s TLS files and etcd user against a real etcd served over TLS with client
//! certificates required (`--client-cert-auth`) and authentication on: the files are read at
//! connect, the election works through them, and a wrong password or a foreign CA is a clear
//! `HaError::Etcd` that never carries the password.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use etcd_client::Permission;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use tokio_util::sync::CancellationToken;

use super::Coordinator;
use crate::ha::{HaError, HaSettings};

/// etcd over TLS, killed on drop.
struct TlsEtcd {
    child: Child,
    port: u16,
}

impl Drop for TlsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write(path: &Path, text: &str, mode: u32) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_path_buf()
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` signed by `ca`, and its key, as PEM.
fn leaf(ca: &CertifiedIssuer<'static, KeyPair>, cn: &str, names: &[&str]) -> (String, String) {
    let mut params =
        CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

struct Files {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    foreign_ca: PathBuf,
}

async fn start(dir: &Path) -> (TlsEtcd, Files) {
    let authority = ca("etcd test CA");
    let (server_cert, server_key) = leaf(&authority, "etcd", &["127.0.0.1", "localhost"]);
    let (client_cert, client_key) = leaf(&authority, "cwp", &[]);
    let files = Files {
        ca: write(&dir.join("ca.pem"), &authority.pem(), 0o644),
        cert: write(&dir.join("client.pem"), &client_cert, 0o644),
        key: write(&dir.join("client.key"), &client_key, 0o600),
        foreign_ca: write(&dir.join("other-ca.pem"), &ca("other").pem(), 0o644),
    };
    let server_cert = write(&dir.join("server.pem"), &server_cert, 0o644);
    let server_key = write(&dir.join("server.key"), &server_key, 0o600);
    let (port, peer) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{port}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(super::super::test_etcd::ETCD)
        .arg("--name=tls")
        .arg(format!("--data-dir={}", dir.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=tls={peer_url}"))
        .arg(format!("--cert-file={}", server_cert.display()))
        .arg(format!("--key-file={}", server_key.display()))
        .arg(format!("--trusted-ca-file={}", files.ca.display()))
        .arg("--client-cert-auth")
        .arg("--heartbeat-interval=20")
        .arg("--election-timeout=200")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    (TlsEtcd { child, port }, files)
}

fn settings(etcd: &TlsEtcd, files: &Files, name: &str) -> HaSettings {
    HaSettings {
        etcd: vec![format!("https://127.0.0.1:{}/", etcd.port)],
        election: "/cwp-test".into(),
        lease_ttl: Duration::from_secs(3),
        name: name.into(),
        ca_file: Some(files.ca.clone()),
        cert_file: Some(files.cert.clone()),
        key_file: Some(files.key.clone()),
        username: None,
        password_file: None,
    }
}

#[tokio::test]
async fn tls_with_a_client_certificate_and_an_etcd_user() {
    let dir = tempfile::tempdir().unwrap();
    let (etcd, files) = start(dir.path()).await;
    let plain = settings(&etcd, &files, "host-a");

    // Ready, over TLS with the client certificate (no user yet: auth is off).
    let admin = Coordinator::connect(&plain).await.unwrap();
    let mut client = admin.client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.get("probe", None).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "etcd over TLS did not answer: {}",
            std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Authentication on: root, and a user allowed under the deployment's prefix.
    client.user_add("root", "root-pw-1", None).await.unwrap();
    client.user_grant_role("root", "root").await.unwrap();
    client.role_add("cwp").await.unwrap();
    client
        .role_grant_permission("cwp", Permission::read_write("/cwp-test").with_prefix())
        .await
        .unwrap();
    client.user_add("cwp", "cwp-Pass-2024", None).await.unwrap();
    client.user_grant_role("cwp", "cwp").await.unwrap();
    client.auth_enable().await.unwrap();

    // The user and its password file (private).
    let mut with_user = plain.clone();
    with_user.username = Some("cwp".into());
    with_user.password_file = Some(write(
        &dir.path().join("password"),
        "cwp-Pass-2024\n",
        0o600,
    ));
    let a = Coordinator::connect(&with_user).await.unwrap();
    let leadership = tokio::time::timeout(
        Duration::from_secs(5),
        a.campaign(&CancellationToken::new()),
    )
    .await
    .expect("elected over TLS with a user")
    .unwrap()
    .unwrap();
    assert!(leadership.fence().may_send());
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-a"));

    // A wrong password: refused at connect, without the password.
    write(&dir.path().join("password"), "not-the-password", 0o600);
    match Coordinator::connect(&with_user).await {
        Err(HaError::Etcd(message)) => {
            assert!(!message.contains("not-the-password"), "{message}");
            assert!(message.contains("authentication failed"), "{message}");
            assert!(
                message.contains("connecting to https://127.0.0.1"),
                "{message}"
            );
        }
        Err(other) => panic!("{other}"),
        Ok(_) => panic!("a wrong password must be refused"),
    }

    // A CA that did not sign etcd's certificate: the handshake fails.
    let mut foreign = with_user.clone();
    foreign.ca_file = Some(files.foreign_ca.clone());
    write(&dir.path().join("password"), "cwp-Pass-2024", 0o600);
    assert!(matches!(
        Coordinator::connect(&foreign).await,
        Err(HaError::Etcd(_))
    ));
    leadership.resign().await;
    assert_eq!(a.leader().await.unwrap(), None);
    drop(etcd);
}
