//! What [`super::Coordinator::connect`] reads and builds: the timeouts (bounded by the lease
//! TTL), the TLS files and the etcd user's password, each read when connecting and checked
//! here. Errors name the key and the file, never what a file holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};
use secrecy::{ExposeSecret, SecretString};

use super::super::{HaError, HaSettings};
use crate::credentials::Environment;

/// The longest CA or certificate file read: a bundle of some hundred certificates.
const MAX_PEM_BYTES: u64 = crate::tls::MAX_CA_FILE_BYTES;
/// The longest password accepted.
const MAX_PASSWORD_CHARS: usize = 256;

/// How long one request to etcd may take: a third of the TTL (the keep-alive's period, so a
/// renewal never waits past the next one), from 1 s to 5 s.
pub(super) fn request_timeout(ttl: Duration) -> Duration {
    (ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(5))
}

/// The options of both clients. `waiting`: the client of the campaign, which blocks until
/// elected, so it has no request timeout (HTTP/2 pings find a dead connection instead).
pub(super) fn options(
    settings: &HaSettings,
    env: &Environment,
    waiting: bool,
) -> Result<ConnectOptions, HaError> {
    let timeout = request_timeout(settings.lease_ttl);
    let mut options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_keep_alive(timeout, timeout)
        .with_keep_alive_while_idle(true)
        // A token that expires (etcd's `--auth-token-ttl`) is fetched again, not an outage.
        .with_auto_token_refresh(true);
    if !waiting {
        options = options.with_timeout(timeout);
    }
    if settings.etcd.iter().any(|e| e.starts_with("https://")) {
        options = options.with_tls(tls(settings, env)?);
    }
    if let (Some(user), Some(path)) = (&settings.username, &settings.password_file) {
        let password = read_private(path, "password_file", env)?;
        if let Some(problem) = crate::credentials::value_problem(
            "the password",
            password.expose_secret(),
            MAX_PASSWORD_CHARS,
        ) {
            return Err(files(
                "password_file",
                path,
                problem.replacen("the password ", "holds a password that ", 1),
            ));
        }
        options = options.with_user(user.clone(), password.expose_secret().to_owned());
    }
    Ok(options)
}

/// TLS: the CA of `ca_file` (else the system's store), the client certificate and key.
fn tls(settings: &HaSettings, env: &Environment) -> Result<TlsOptions, HaError> {
    let mut tls = TlsOptions::new();
    tls = match &settings.ca_file {
        Some(path) => {
            let pem = read_public(path, "ca_file")?;
            // Checked as the API's `ca_file` is: PEM certificates, at least one.
            if let Err(error) = crate::tls::CaBundle::parse(path, &pem) {
                return Err(files("ca_file", path, error.to_string()));
            }
            tls.ca_certificate(Certificate::from_pem(pem))
        }
        None => tls.with_native_roots(),
    };
    if let (Some(cert), Some(key)) = (&settings.cert_file, &settings.key_file) {
        let cert_pem = read_public(cert, "cert_file")?;
        if !String::from_utf8_lossy(&cert_pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(files(
                "cert_file",
                cert,
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----): write the client \
                 certificate etcd's CA signed"
                    .to_owned(),
            ));
        }
        let key_pem = read_private(key, "key_file", env)?;
        if !key_pem.expose_secret().contains("PRIVATE KEY-----") {
            return Err(files(
                "key_file",
                key,
                "holds no PEM private key (-----BEGIN … PRIVATE KEY-----): write the key of \
                 cert_file"
                    .to_owned(),
            ));
        }
        tls = tls.identity(Identity::from_pem(cert_pem, key_pem.expose_secret()));
    }
    Ok(tls)
}

fn files(key: &str, path: &Path, problem: String) -> HaError {
    HaError::Files {
        what: format!("`{key}` {}", crate::problems::shown_path(path)),
        problem,
    }
}

/// A file that is not secret (a CA, a certificate): a regular file, at most
/// [`MAX_PEM_BYTES`].
fn read_public(path: &Path, key: &str) -> Result<Vec<u8>, HaError> {
    use std::io::Read;
    let file = crate::problems::open_regular(path).map_err(|e| files(key, path, e.to_string()))?;
    let mut bytes = Vec::new();
    file.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| files(key, path, e.to_string()))?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(files(
            key,
            path,
            format!(
                "is larger than {} KiB, so not a PEM file",
                MAX_PEM_BYTES / 1024
            ),
        ));
    }
    Ok(bytes)
}

/// A secret file (the client key, the password): `%d/NAME` resolved against
/// `$CREDENTIALS_DIRECTORY`, read with the credentials' reader (a bounded regular file,
/// trimmed), refused when every user may read it, as the sinks' secret files are.
fn read_private(path: &Path, key: &str, env: &Environment) -> Result<SecretString, HaError> {
    let path: PathBuf = match crate::delivery::settings::credential_name(path) {
        Some(name) => match env
            .get("CREDENTIALS_DIRECTORY")
            .filter(|d| !d.trim().is_empty())
        {
            Some(dir) => Path::new(dir).join(name),
            None => {
                return Err(files(
                    key,
                    path,
                    format!(
                        "needs $CREDENTIALS_DIRECTORY, which is not set: add \
                         LoadCredential={name}:/etc/cwp-portwatch/{name} to the unit; outside \
                         systemd, write the file's path instead"
                    ),
                ));
            }
        },
        None => path.to_path_buf(),
    };
    let text = match crate::credentials::read_secret_file(&path) {
        Ok(Some(text)) => SecretString::from(text),
        Ok(None) => {
            return Err(files(
                key,
                &path,
                "does not exist or is empty; write the value into it (mode 0600, owned by the \
                 service's user)"
                    .to_owned(),
            ));
        }
        Err(crate::credentials::CredentialError::Unreadable { reason, .. }) => {
            return Err(files(key, &path, reason));
        }
        Err(other) => return Err(files(key, &path, other.to_string())),
    };
    // A secret every local user can read is no secret: refuse it before it is used.
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Ok(meta) if meta.permissions().mode() & 0o004 != 0 => Err(files(
            key,
            &path,
            "is readable by every user of this host; make it private: chmod 600 (or 640 with \
             the service's group)"
                .to_owned(),
        )),
        Ok(_) => Ok(text),
        Err(error) => Err(files(key, &path, error.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn settings(dir: &Path) -> HaSettings {
        HaSettings {
            etcd: vec!["https://127.0.0.1:2379".into()],
            election: "/t".into(),
            lease_ttl: Duration::from_secs(9),
            name: "a".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            username: None,
            password_file: Some(dir.join("password")),
        }
    }

    fn write(path: &Path, text: &str, mode: u32) {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn request_timeouts_follow_the_ttl_within_bounds() {
        assert_eq!(
            request_timeout(Duration::from_secs(3)),
            Duration::from_secs(1)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(9)),
            Duration::from_secs(3)
        );
        assert_eq!(
            request_timeout(Duration::from_secs(300)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn secret_files_are_checked_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment::from_pairs(Vec::<(&str, &str)>::new());
        let mut s = settings(dir.path());
        s.username = Some("cwp".into());
        let path = dir.path().join("password");
        let err = |s: &HaSettings| {
            options(s, &env, false)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        // Missing.
        let e = err(&s);
        assert!(
            e.contains("`password_file`") && e.contains("does not exist"),
            "{e}"
        );
        // Readable by everyone.
        write(&path, "hunter2secret\n", 0o644);
        let e = err(&s);
        assert!(e.contains("every user") && !e.contains("hunter2"), "{e}");
        // Not a password.
        write(&path, "two words\n", 0o600);
        let e = err(&s);
        assert!(e.contains("whitespace") && !e.contains("two words"), "{e}");
        // Fine.
        write(&path, "hunter2secret\n", 0o600);
        assert!(options(&s, &env, false).is_ok());
        // `%d/NAME` without systemd's folder.
        s.password_file = Some(PathBuf::from("%d/etcd-password"));
        let e = err(&s);
        assert!(
            e.contains("CREDENTIALS_DIRECTORY") && e.contains("LoadCredential=etcd-password"),
            "{e}"
        );
        let env =
            Environment::from_pairs([("CREDENTIALS_DIRECTORY", dir.path().to_str().unwrap())]);
        write(&dir.path().join("etcd-password"), "s3cret", 0o600);
        assert!(options(&s, &env, false).is_ok());
    }

    #[test]
    fn tls_files_are_checked_at_connect() {
        let dir = tempfile::tempdir().unwrap();
        let env = Environment::from_pairs(Vec::<(&str, &str)>::new());
        let mut s = settings(dir.path());
        s.password_file = None;
        s.ca_file = Some(dir.path().join("ca.pem"));
        let e = options(&s, &env, false).err().unwrap().to_string();
        assert!(
            e.starts_with("[ha] `ca_file`") && e.contains("ca.pem"),
            "{e}"
        );
        write(&dir.path().join("ca.pem"), "not a certificate", 0o644);
        let e = options(&s, &env, false).err().unwrap().to_string();
        assert!(e.contains("`ca_file`"), "{e}");
        assert!(!e.contains("not a certificate"), "never the content: {e}");
        // A real CA, a client certificate and a key.
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        write(&dir.path().join("ca.pem"), &cert.pem(), 0o644);
        assert!(options(&s, &env, false).is_ok());
        s.cert_file = Some(dir.path().join("client.pem"));
        s.key_file = Some(dir.path().join("client.key"));
        write(&dir.path().join("client.pem"), &cert.pem(), 0o644);
        write(&dir.path().join("client.key"), &key.serialize_pem(), 0o644);
        let e = options(&s, &env, false).err().unwrap().to_string();
        assert!(e.contains("`key_file`") && e.contains("every user"), "{e}");
        assert!(!e.contains("PRIVATE KEY"), "{e}");
        write(&dir.path().join("client.key"), &key.serialize_pem(), 0o600);
        assert!(options(&s, &env, false).is_ok());
        write(&dir.path().join("client.key"), "nothing", 0o600);
        let e = options(&s, &env, false).err().unwrap().to_string();
        assert!(
            e.contains("no PEM private key") && !e.contains("nothing"),
            "{e}"
        );
    }
}
