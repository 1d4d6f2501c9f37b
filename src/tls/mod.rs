//! TLS trust: which certificate authorities the daemon's HTTPS clients believe, and the one
//! place where a reqwest client is built with them ([`TlsTrust::client`]).
//!
//! The rule, the same for every client of the daemon that may talk TLS (the API client, the
//! STS client of `source = "assume-role"`, the CVM metadata client when its endpoint is
//! https): the system's CA store (Debian's `ca-certificates` in `/etc/ssl/certs`, kept current
//! by apt; `SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured), plus the CAs of `[api] ca_file`
//! when it is set (a private CA, e.g. the one a TLS-inspecting proxy signs with). No roots are
//! bundled in the binary: a CA that a Debian update distrusts is distrusted here at the next
//! start.
//!
//! A client added later (an etcd client, say) builds its reqwest client through
//! [`TlsTrust::client`] as well, never with `reqwest::Client::builder()` of its own: the trust
//! settings live here and nowhere else, so one rule covers every connection. (A client that
//! must trust a private CA alone, such as an etcd cluster's, uses [`TlsTrust::only`].)
//!
//! An https endpoint with an empty system store and no `ca_file` fails the client's
//! construction, so the start-up, with [`TlsError::NoSystemRoots`], which says to
//! `apt install ca-certificates` or to set `ca_file`; otherwise every request would fail
//! later with an "unknown issuer" that does not say why.
//!
//! A certificate refused during a request is told apart from other transport failures by
//! [`certificate_problem`]: the API client turns it into `ClientError.Certificate`, whose text
//! says what to do.
//!
//! `ca_file` ([`CaBundle::read`]) is PEM text of at most [`MAX_CA_FILE_BYTES`] with at least
//! one `CERTIFICATE` block, each one usable as a trust anchor; the config check reads it at
//! start and on every reload, and reports a problem at the key's line:column. It is not a
//! secret; its path is shown escaped. It lives in `ca_file.rs`; the tests, with their local
//! HTTPS server (`test_server.rs`), in `tests.rs`.

mod ca_file;
#[cfg(test)]
pub(crate) mod test_server;
#[cfg(test)]
mod tests;

use reqwest::Url;
use rustls::CertificateError;

pub use ca_file::{CaBundle, CaFileError, MAX_CA_FILE_BYTES};

/// Why a client could not be built with the trust settings.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// An https endpoint, no `ca_file`, and no certificate in the system's store.
    #[error(
        "no CA certificates in the system's store{detail}, so the certificate of {host} \
         cannot be checked: install them (`apt install ca-certificates`), or set [api] \
         ca_file to the PEM file of the CA that signs it"
    )]
    NoSystemRoots {
        /// The endpoint's host.
        host: String,
        /// What the store's loader said, `: …`, or empty.
        detail: String,
    },
    /// The HTTP stack could not be set up.
    #[error("cannot set up HTTPS: {0}")]
    Setup(#[source] reqwest::Error),
}

impl TlsError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            TlsError::NoSystemRoots { .. } => "TlsError.NoSystemRoots",
            TlsError::Setup(_) => "TlsError.Setup",
        }
    }
}

/// Which CAs a client trusts. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsTrust {
    /// The system's store.
    system: bool,
    /// `[api] ca_file`.
    extra: Option<CaBundle>,
}

impl TlsTrust {
    /// The system's store alone: what a config without `ca_file` means.
    pub fn system() -> TlsTrust {
        TlsTrust {
            system: true,
            extra: None,
        }
    }

    /// The system's store plus `ca_file`'s CAs when set: the daemon's rule.
    pub fn with_ca_file(ca_file: Option<CaBundle>) -> TlsTrust {
        TlsTrust {
            system: true,
            extra: ca_file,
        }
    }

    /// These CAs alone, without the system's store: a client of a service with a private CA
    /// of its own (an etcd cluster's), and tests that must not depend on the host's store.
    pub fn only(cas: CaBundle) -> TlsTrust {
        TlsTrust {
            system: false,
            extra: Some(cas),
        }
    }

    /// `ca_file`, when set.
    pub fn ca_file(&self) -> Option<&CaBundle> {
        self.extra.as_ref()
    }

    /// Builds a reqwest client for `endpoint` with these trust settings: THE constructor of
    /// every HTTP client of the daemon. `configure` sets everything else (timeouts, pool,
    /// proxy, redirects, user agent); the trust settings are applied after it, so it cannot
    /// change them.
    ///
    /// For an https endpoint without `ca_file`, an empty system store is
    /// [`TlsError::NoSystemRoots`]. A plain-http endpoint (loopback: the simulator, or the
    /// link-local metadata service) never does TLS, so the system store is not even read for
    /// it, and a host without one can still run the demo.
    pub fn client(
        &self,
        endpoint: &Url,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
    ) -> Result<reqwest::Client, TlsError> {
        self.client_checking(endpoint, configure, || {
            let found = rustls_native_certs::load_native_certs();
            let errors = found.errors.iter().map(ToString::to_string).collect();
            (found.certs.len(), errors)
        })
    }

    /// [`TlsTrust::client`] with the system store's size and loading errors from
    /// `system_store`, called only when they decide (https, no `ca_file`): the tests give a
    /// host without `ca-certificates` this way.
    fn client_checking(
        &self,
        endpoint: &Url,
        configure: impl FnOnce(reqwest::ClientBuilder) -> reqwest::ClientBuilder,
        system_store: impl FnOnce() -> (usize, Vec<String>),
    ) -> Result<reqwest::Client, TlsError> {
        let https = endpoint.scheme() == "https";
        let system = self.system && https;
        if system && self.extra.is_none() {
            let (certificates, errors) = system_store();
            system_store_usable(endpoint, certificates, &errors)?;
        }
        let mut builder = configure(reqwest::Client::builder()).tls_built_in_root_certs(system);
        for der in self.extra.iter().flat_map(|ca| &ca.certificates) {
            let certificate = reqwest::Certificate::from_der(der).map_err(TlsError::Setup)?;
            builder = builder.add_root_certificate(certificate);
        }
        builder.build().map_err(TlsError::Setup)
    }
}

/// The loud failure: an https `endpoint` whose only trust would be a system store of
/// `certificates` certificates (none), with the loader's `errors` (escaped) as detail.
fn system_store_usable(
    endpoint: &Url,
    certificates: usize,
    errors: &[String],
) -> Result<(), TlsError> {
    if certificates > 0 {
        return Ok(());
    }
    let detail = if errors.is_empty() {
        String::new()
    } else {
        let joined = errors.join("; ");
        format!(" ({})", crate::escape::escape(&joined))
    };
    Err(TlsError::NoSystemRoots {
        host: endpoint.host_str().unwrap_or("the endpoint").to_owned(),
        detail,
    })
}

/// What to tell the operator when `error` (a failed request, with its sources) is a server
/// certificate refused by the TLS stack; `None` for any other failure. `host` is the
/// endpoint's host, named in the message.
pub fn certificate_problem(
    error: &(dyn std::error::Error + 'static),
    host: &str,
) -> Option<String> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(rustls::Error::InvalidCertificate(refused)) = e.downcast_ref::<rustls::Error>()
        {
            return Some(describe(refused, host));
        }
        // The TLS stack's error travels inside `io::Error`s (nested: hyper's, then
        // tokio-rustls's), whose `source()` skips the error they wrap: step into it instead.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// The operator's words for a refused certificate: what it means and what to do.
fn describe(refused: &CertificateError, host: &str) -> String {
    match refused {
        CertificateError::UnknownIssuer => format!(
            "the certificate of {host} is not signed by a CA this host trusts (unknown issuer): \
             if a TLS-inspecting proxy signs it, set [api] ca_file to that proxy's CA (PEM); \
             else update the system's CAs (apt install ca-certificates)"
        ),
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!(
                "the certificate presented is not valid for the host name {host}: check the \
                 endpoint; something else answers for that name"
            )
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => format!(
            "the certificate of {host} has expired or is not valid yet: check this host's clock"
        ),
        other => format!(
            "the certificate of {host} is refused ({})",
            crate::escape::escape(&format!("{other:?}"))
        ),
    }
}
