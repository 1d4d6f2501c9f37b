//! `[api] ca_file`: the extra CAs every HTTPS client trusts, read bounded and checked as the
//! TLS stack will take them ([`CaBundle::read`]), with errors that name the file (escaped) and
//! say what to do ([`CaFileError`]).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::problems::{open_regular, shown_path};

/// The largest `ca_file` read: Debian's whole CA bundle (about 150 roots) is about 220 KB,
/// so a file larger than this is a wrong path, not a CA.
pub const MAX_CA_FILE_BYTES: u64 = 1 << 20;

/// Why `[api] ca_file` cannot be used. Each message names the file (escaped) and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaFileError {
    /// No such file.
    #[error(
        "{} does not exist: write the path of the PEM file of the CA to trust (e.g. a \
         TLS-inspecting proxy's), or remove the line",
        shown_path(.path)
    )]
    Missing {
        /// The path as resolved.
        path: PathBuf,
    },
    /// It exists but cannot be read (permissions, a directory, a device).
    #[error(
        "cannot read {}: {reason} (the service reads it as its own user: make it a regular \
         file it may read)",
        shown_path(.path)
    )]
    Unreadable {
        /// The path as resolved.
        path: PathBuf,
        /// The system's reason.
        reason: String,
    },
    /// Larger than [`MAX_CA_FILE_BYTES`].
    #[error(
        "{} is larger than {MAX_CA_FILE_BYTES} bytes: a CA file holds a few certificates; \
         check the path",
        shown_path(.path)
    )]
    TooLarge {
        /// The path as resolved.
        path: PathBuf,
    },
    /// Not PEM text at all (DER, or something else).
    #[error(
        "{} is not PEM: it must hold -----BEGIN CERTIFICATE----- blocks (convert a DER file \
         with `openssl x509 -inform der -in ca.der -out ca.pem`)",
        shown_path(.path)
    )]
    NotPem {
        /// The path as resolved.
        path: PathBuf,
    },
    /// PEM whose blocks cannot be decoded (cut short, bad base64).
    #[error(
        "{} has a damaged PEM block (cut short, or not base64): export the CA certificate \
         again",
        shown_path(.path)
    )]
    BadPem {
        /// The path as resolved.
        path: PathBuf,
    },
    /// PEM without a `CERTIFICATE` block (a key, a request).
    #[error(
        "{} holds no certificate (no -----BEGIN CERTIFICATE----- block; a key or a request \
         is not a CA): write the CA's certificate",
        shown_path(.path)
    )]
    NoCertificate {
        /// The path as resolved.
        path: PathBuf,
    },
    /// A `CERTIFICATE` block that is not a usable certificate.
    #[error(
        "certificate {index} of {} cannot be a trusted CA ({reason}): export the CA \
         certificate again",
        shown_path(.path)
    )]
    BadCertificate {
        /// The path as resolved.
        path: PathBuf,
        /// 1-based, in file order.
        index: usize,
        /// What the TLS library said.
        reason: String,
    },
}

impl CaFileError {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            CaFileError::Missing { .. } => "CaFileError.Missing",
            CaFileError::Unreadable { .. } => "CaFileError.Unreadable",
            CaFileError::TooLarge { .. } => "CaFileError.TooLarge",
            CaFileError::NotPem { .. } => "CaFileError.NotPem",
            CaFileError::BadPem { .. } => "CaFileError.BadPem",
            CaFileError::NoCertificate { .. } => "CaFileError.NoCertificate",
            CaFileError::BadCertificate { .. } => "CaFileError.BadCertificate",
        }
    }
}

/// The certificates of `[api] ca_file`, checked: at least one, each usable as a trust anchor.
#[derive(Clone, PartialEq, Eq)]
pub struct CaBundle {
    path: PathBuf,
    /// DER, in file order.
    pub(super) certificates: Vec<Vec<u8>>,
}

impl fmt::Debug for CaBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaBundle")
            .field("path", &self.path)
            .field("certificates", &self.certificates.len())
            .finish()
    }
}

impl CaBundle {
    /// Reads and checks the PEM file at `path` (at most [`MAX_CA_FILE_BYTES`]).
    pub fn read(path: &Path) -> Result<CaBundle, CaFileError> {
        let file = open_regular(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => CaFileError::Missing {
                path: path.to_owned(),
            },
            _ => CaFileError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            },
        })?;
        let mut bytes = Vec::new();
        file.take(MAX_CA_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| CaFileError::Unreadable {
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
        if bytes.len() as u64 > MAX_CA_FILE_BYTES {
            return Err(CaFileError::TooLarge {
                path: path.to_owned(),
            });
        }
        CaBundle::parse(path, &bytes)
    }

    /// Checks PEM text read from `path` (named in errors only).
    pub fn parse(path: &Path, pem: &[u8]) -> Result<CaBundle, CaFileError> {
        let path = path.to_owned();
        if !pem.windows(11).any(|w| w == b"-----BEGIN ") {
            return Err(CaFileError::NotPem { path });
        }
        let Ok(certificates) = pem_blocks(pem) else {
            return Err(CaFileError::BadPem { path });
        };
        if certificates.is_empty() {
            return Err(CaFileError::NoCertificate { path });
        }
        // Each one as the TLS stack will take it, so that a block it refuses is reported
        // here, at the key's line:column, not as a failed start-up later. The client built
        // for that is thrown away unused: it is a check, not a client (those are built by
        // `TlsTrust::client` alone).
        for (index, der) in certificates.iter().enumerate() {
            let refused = |reason: String| CaFileError::BadCertificate {
                path: path.clone(),
                index: index + 1,
                reason,
            };
            let certificate =
                reqwest::Certificate::from_der(der).map_err(|e| refused(error_chain(&e)))?;
            reqwest::Client::builder()
                .tls_built_in_root_certs(false)
                .add_root_certificate(certificate)
                .build()
                .map_err(|e| refused(error_chain(&e)))?;
        }
        Ok(CaBundle { path, certificates })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many certificates it holds (at least one).
    pub fn certificate_count(&self) -> usize {
        self.certificates.len()
    }

    /// The certificates, DER, in file order (for a TLS client other than reqwest's:
    /// `check --probe`'s handshake).
    pub fn certificates_der(&self) -> impl Iterator<Item = &[u8]> {
        self.certificates.iter().map(Vec::as_slice)
    }
}

/// The DER of every `CERTIFICATE` block of `pem`, in order (blocks of other kinds skipped);
/// `Err` when a block is damaged.
fn pem_blocks(pem: &[u8]) -> Result<Vec<Vec<u8>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .map(|der| der.map(|der| der.as_ref().to_vec()))
        .collect()
}

/// An error and its sources on one line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
