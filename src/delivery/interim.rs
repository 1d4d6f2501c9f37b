//! Reading the sinks' secret files at start ([`resolve_all`]), until `settings::resolve`
//! (issue 23's config side) takes over: then this file goes.
//!
//! A file is read only when it is a regular file of at most [`MAX_SECRET_BYTES`], opened
//! non-blocking (a FIFO cannot hang the start), never shown: its content is a robot's key.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use secrecy::SecretString;

use super::{DeliveryError, ResolvedSink, SinkSettings, UrlSource};

/// The largest `url_file` / `secret_file` read (a URL or a secret is far smaller).
pub const MAX_SECRET_BYTES: u64 = 4096;

/// Every sink with its files read.
pub fn resolve_all(sinks: &[SinkSettings]) -> Result<Vec<ResolvedSink>, DeliveryError> {
    sinks.iter().map(resolve_one).collect()
}

fn resolve_one(s: &SinkSettings) -> Result<ResolvedSink, DeliveryError> {
    let url = match &s.url {
        UrlSource::Inline(url) => SecretString::from(url.as_str().to_owned()),
        UrlSource::File(path) => read_secret(&s.name, path)?,
    };
    let secret = match &s.secret_file {
        Some(path) => Some(read_secret(&s.name, path)?),
        None => None,
    };
    Ok(ResolvedSink {
        settings: s.clone(),
        url,
        secret,
    })
}

/// The file's text, trimmed; never shown.
fn read_secret(sink: &str, path: &Path) -> Result<SecretString, DeliveryError> {
    let fail = |problem: String| DeliveryError::SecretFile {
        sink: sink.to_owned(),
        path: crate::state::shown(path),
        problem,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            fail(format!(
                "{e}; check the path (systemd credentials: %d/NAME)"
            ))
        })?;
    let meta = file.metadata().map_err(|e| fail(e.to_string()))?;
    if !meta.is_file() {
        return Err(fail("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        return Err(fail(format!("larger than {MAX_SECRET_BYTES} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| fail("not UTF-8 text".to_owned()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(fail("empty".to_owned()));
    }
    Ok(SecretString::from(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn sink(url: UrlSource) -> SinkSettings {
        SinkSettings {
            name: "robot".into(),
            kind: super::super::SinkKind::Wecom,
            url,
            secret_file: None,
            events: super::super::select::default_selectors(),
            min_severity: crate::policy::Severity::Warning,
            max_age: super::super::settings::DEFAULT_MAX_AGE,
            per_minute: 20,
            outbox_limit: 10,
        }
    }

    #[test]
    fn url_files_are_read_trimmed_and_errors_never_show_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("url");
        std::fs::write(&path, "https://qyapi.example/send?key=SECRET\n").unwrap();
        let resolved = resolve_all(&[sink(UrlSource::File(path.clone()))]).unwrap();
        assert_eq!(
            resolved[0].url.expose_secret(),
            "https://qyapi.example/send?key=SECRET"
        );
        assert!(!format!("{:?}", resolved[0]).contains("SECRET"));
        std::fs::write(&path, "SECRET".repeat(1000)).unwrap();
        let e = resolve_all(&[sink(UrlSource::File(path.clone()))]).unwrap_err();
        assert_eq!(e.code(), "DeliveryError.SecretFile");
        assert!(!e.to_string().contains("SECRET"), "{e}");
        let e = resolve_all(&[sink(UrlSource::File(dir.path().to_path_buf()))]).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
