//! For the TLS tests: a certificate authority made on the spot ([`TestCa`], rcgen), and a real
//! HTTPS server on `127.0.0.1:0` ([`HttpsServer`], tokio-rustls + hyper) whose certificate
//! that CA signs, answering Tencent-shaped JSON for `DescribeOpenPortTaskStatus`, STS `AssumeRole`
//! and the CVM metadata service's role credentials (role `r`). It counts the requests it answered, so a test can tell a refusal during the
//! handshake (none answered) from one after.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::CaBundle;

/// A CA of the test's own, trusted by nothing on this host.
pub(crate) struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl TestCa {
    /// A new CA named `name`.
    pub(crate) fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        TestCa { issuer }
    }

    /// The CA certificate, PEM.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// The CA as `[api] ca_file` would give it (named `path` in messages; nothing is read).
    pub(crate) fn bundle(&self) -> CaBundle {
        CaBundle::parse(Path::new("/test/ca.pem"), self.pem().as_bytes()).unwrap()
    }

    /// A server certificate for `names` (host names, or IP addresses as text), signed by this
    /// CA, and its key.
    fn leaf(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "cwp-portwatch test server");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// A local HTTPS server; stops when dropped.
pub(crate) struct HttpsServer {
    addr: SocketAddr,
    answered: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsServer {
    /// Serves on `127.0.0.1:0` with a certificate for `names` signed by `ca`.
    pub(crate) async fn start(ca: &TestCa, names: &[&str]) -> HttpsServer {
        let (cert, key) = ca.leaf(names);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let answered = Arc::new(AtomicUsize::new(0));
        let counter = answered.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // A client that refuses our certificate ends the handshake: nothing to serve.
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, Infallible>(answer(&request)) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        HttpsServer {
            addr,
            answered,
            task,
        }
    }

    /// `https://HOST:PORT/` for `host` (`127.0.0.1`, `localhost`): the port of this server.
    pub(crate) fn url(&self, host: &str) -> reqwest::Url {
        reqwest::Url::parse(&format!("https://{host}:{}/", self.addr.port())).unwrap()
    }

    /// Requests answered so far (past the handshake).
    pub(crate) fn answered(&self) -> usize {
        self.answered.load(Ordering::SeqCst)
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A Tencent-shaped answer to the request's `X-TC-Action`.
fn answer(request: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    let action = request
        .headers()
        .get("x-tc-action")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The CVM metadata service: GETs, no action header.
    if request
        .uri()
        .path()
        .ends_with("/cam/security-credentials/r")
    {
        return json(serde_json::json!({
            "TmpSecretId": "AKIDcvm", "TmpSecretKey": "k", "Token": "t",
            "ExpiredTime": crate::clock::unix_now() + 7_200, "Code": "Success"
        }));
    }
    let body = match action {
        "DescribeOpenPortTaskStatus" => serde_json::json!({
            "Response": {"Status": "COMPLETE", "RequestId": "tls-test-1"}
        }),
        "AssumeRole" => serde_json::json!({
            "Response": {
                "Credentials": {"TmpSecretId": "AKIDtls", "TmpSecretKey": "k", "Token": "t"},
                "ExpiredTime": crate::clock::unix_now() + 7_200,
                "RequestId": "tls-test-2"
            }
        }),
        _ => serde_json::json!({
            "Response": {
                "Error": {"Code": "InvalidAction", "Message": "not served here"},
                "RequestId": "tls-test-3"
            }
        }),
    };
    json(body)
}

/// `body` as a JSON answer.
fn json(body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}
