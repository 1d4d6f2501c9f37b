//! `check --probe`: for every `[[sink]]`, what a delivery would need short of sending: its
//! files read ([`crate::delivery::settings::resolve`]), its host resolved, a TCP connection
//! made and, for https, a TLS handshake with the daemon's trust (the system's CAs plus
//! `[api] ca_file`). Nothing is written on the connection: no HTTP request, so no test message
//! reaches a chat group and no alert reaches Alertmanager.
//!
//! One line per sink, naming the host and port only: a robot's URL holds its key in the
//! path or the query, and neither is ever printed. Connections are direct: a proxy that the
//! environment names is not used here.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::credentials::Environment;
use crate::delivery::SinkSettings;
use crate::delivery::settings::resolve_with;
use crate::escape::escape;
use crate::tls::CaBundle;

/// How long one connection attempt, and the TLS handshake, may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(5);
/// The most addresses of one host tried.
const MAX_ADDRESSES: usize = 4;

/// What the probe of one sink found: `Ok` with what worked, `Err` with what failed first.
/// Both are one printable line, without the URL's path or query.
pub type Outcome = Result<String, String>;

/// Probes every sink, in order.
pub fn probe_sinks(
    sinks: &[SinkSettings],
    ca_file: Option<&CaBundle>,
    env: &Environment,
) -> Vec<(String, Outcome)> {
    sinks
        .iter()
        .map(|sink| {
            let label = format!("{} ({})", sink.name, sink.kind.as_str());
            (label, probe_sink(sink, ca_file, env))
        })
        .collect()
}

fn probe_sink(sink: &SinkSettings, ca_file: Option<&CaBundle>, env: &Environment) -> Outcome {
    let resolved = resolve_with(sink, env).map_err(|e| e.to_string())?;
    // Checked when read; parsed again here only to find the host.
    let url = url::Url::parse(resolved.url.expose_secret())
        .map_err(|_| "the URL cannot be parsed".to_owned())?;
    let host = match url.host() {
        Some(url::Host::Domain(domain)) => domain.to_owned(),
        Some(url::Host::Ipv4(ip)) => ip.to_string(),
        Some(url::Host::Ipv6(ip)) => ip.to_string(),
        None => return Err("the URL has no host".to_owned()),
    };
    let port = url
        .port_or_known_default()
        .ok_or_else(|| "the URL has no port".to_owned())?;
    let shown_host = escape(&host);
    let at = if host.contains(':') {
        format!("[{shown_host}]:{port}")
    } else {
        format!("{shown_host}:{port}")
    };
    let addresses: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("{at}: cannot resolve the host ({})", escape(&e.to_string())))?
        .take(MAX_ADDRESSES)
        .collect();
    if addresses.is_empty() {
        return Err(format!("{at}: the host resolves to no address"));
    }
    let mut failures = Vec::new();
    let mut connected = None;
    for address in &addresses {
        match TcpStream::connect_timeout(address, STEP_TIMEOUT) {
            Ok(stream) => {
                connected = Some((stream, *address));
                break;
            }
            Err(e) => failures.push(format!("{address}: {}", escape(&e.to_string()))),
        }
    }
    let Some((stream, address)) = connected else {
        return Err(format!("{at}: cannot connect ({})", failures.join("; ")));
    };
    let mut done = format!("{at}: resolved, connected to {address}");
    if url.scheme() == "https" {
        handshake(stream, &host, ca_file).map_err(|e| format!("{done}, but {e}"))?;
        done.push_str(", TLS handshake ok");
    }
    Ok(format!("{done}; nothing sent"))
}

/// A TLS handshake as `host` over `stream`, trusting the system's CAs and `ca_file`'s, then
/// a close: no application data.
fn handshake(mut stream: TcpStream, host: &str, ca_file: Option<&CaBundle>) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in ca_file.into_iter().flat_map(CaBundle::certificates_der) {
        roots
            .add(rustls::pki_types::CertificateDer::from(der.to_vec()))
            .map_err(|e| format!("the CA file cannot be used ({e})"))?;
    }
    let system = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(system.certs);
    if roots.is_empty() {
        return Err(format!(
            "no CA certificates to check {} with: install them (`apt install \
             ca-certificates`), or set [api] ca_file ({added} found in the system's store)",
            escape(host)
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS cannot be set up ({e})"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|_| format!("{} is not a name TLS can check", escape(host)))?;
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("TLS cannot be set up ({e})"))?;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| format!("the connection failed ({e})"))?;
    while tls.is_handshaking() {
        if let Err(e) = tls.complete_io(&mut stream) {
            let why = crate::tls::certificate_problem(&e, host)
                .unwrap_or_else(|| escape(&e.to_string()).into_owned());
            return Err(format!("the TLS handshake failed: {why}"));
        }
    }
    tls.send_close_notify();
    let _ = tls.complete_io(&mut stream);
    let _ = stream.flush();
    // Drain what the server may say on close; bounded by the read timeout.
    let mut rest = [0u8; 256];
    let _ = stream.read(&mut rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;
    use crate::delivery::select::default_selectors;
    use crate::delivery::settings::{DEFAULT_MAX_AGE, DEFAULT_OUTBOX_LIMIT};
    use crate::delivery::{SinkKind, UrlSource};
    use crate::policy::Severity;
    use crate::tls::test_server::{HttpsServer, TestCa};

    fn sink(name: &str, kind: SinkKind, url: UrlSource) -> SinkSettings {
        SinkSettings {
            name: name.into(),
            kind,
            url,
            secret_file: None,
            events: default_selectors(),
            min_severity: Severity::Warning,
            max_age: DEFAULT_MAX_AGE,
            per_minute: kind.default_per_minute(),
            outbox_limit: DEFAULT_OUTBOX_LIMIT,
        }
    }

    fn inline(url: &str) -> UrlSource {
        UrlSource::Inline(url::Url::parse(url).unwrap())
    }

    fn env() -> Environment {
        Environment::from_pairs([("HOME", "/nowhere")])
    }

    /// A private file holding `content`.
    fn secret(dir: &std::path::Path, name: &str, content: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn a_listener_is_reached_and_sent_nothing_a_closed_port_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let closed = {
            let gone = TcpListener::bind("127.0.0.1:0").unwrap();
            gone.local_addr().unwrap().port()
        };
        let dir = tempfile::tempdir().unwrap();
        let robot = secret(
            dir.path(),
            "wecom_url",
            &format!("http://127.0.0.1:{port}/cgi-bin/webhook/send?key=ROBOTKEY"),
        );
        let sinks = [
            sink(
                "am",
                SinkKind::Alertmanager,
                inline(&format!("http://127.0.0.1:{port}/")),
            ),
            sink("robot", SinkKind::Wecom, UrlSource::File(robot)),
            sink(
                "down",
                SinkKind::Webhook,
                inline(&format!("http://127.0.0.1:{closed}/x")),
            ),
            sink(
                "nofile",
                SinkKind::Slack,
                UrlSource::File(dir.path().join("missing")),
            ),
        ];
        let results = probe_sinks(&sinks, None, &env());
        assert_eq!(results[0].0, "am (alertmanager)");
        let ok = results[0].1.as_ref().unwrap();
        assert!(
            ok.starts_with(&format!("127.0.0.1:{port}: resolved, connected")),
            "{ok}"
        );
        assert!(ok.ends_with("nothing sent"), "{ok}");
        let robot = results[1].1.as_ref().unwrap();
        assert!(robot.starts_with(&format!("127.0.0.1:{port}:")), "{robot}");
        assert!(
            !robot.contains("ROBOTKEY") && !robot.contains("cgi-bin"),
            "{robot}"
        );
        let down = results[2].1.as_ref().unwrap_err();
        assert!(
            down.contains(&format!("127.0.0.1:{closed}: cannot connect")),
            "{down}"
        );
        assert!(down.contains("refused"), "{down}");
        let nofile = results[3].1.as_ref().unwrap_err();
        assert!(nofile.contains("sink nofile: `url_file`"), "{nofile}");
        assert!(nofile.contains("missing"), "{nofile}");
        // Both probes that connected sent nothing: each connection reads end-of-file at once.
        listener.set_nonblocking(false).unwrap();
        for _ in 0..2 {
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).unwrap();
            assert!(buf.is_empty(), "{buf:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn https_sinks_get_a_tls_handshake_with_the_daemons_trust_and_no_request() {
        let ca = TestCa::new("probe CA");
        let server = HttpsServer::start(&ca, &["localhost"]).await;
        let url = server.url("localhost");
        let trusted = ca.bundle();
        let sinks = vec![sink(
            "hook",
            SinkKind::Webhook,
            UrlSource::Inline(url.clone()),
        )];
        let (with_ca, without) = tokio::task::spawn_blocking(move || {
            (
                probe_sinks(&sinks, Some(&trusted), &env()),
                probe_sinks(&sinks, None, &env()),
            )
        })
        .await
        .unwrap();
        let ok = with_ca[0].1.as_ref().unwrap();
        assert!(ok.contains("TLS handshake ok; nothing sent"), "{ok}");
        assert!(
            ok.starts_with(&format!("localhost:{}:", url.port().unwrap())),
            "{ok}"
        );
        // A CA nobody here trusts: refused, and said so in the operator's words.
        let refused = without[0].1.as_ref().unwrap_err();
        assert!(refused.contains("the TLS handshake failed"), "{refused}");
        assert!(refused.contains("unknown issuer"), "{refused}");
        assert_eq!(server.answered(), 0, "a probe sends no request");
    }
}
