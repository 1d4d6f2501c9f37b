//! Reading an HTTP answer's body with a size cap: the one reader every client of the daemon
//! uses (the CWP API, the CVM metadata service, and later STS).
//!
//! An answer is hostile until checked, and its size first of all: `Response::bytes()` would
//! buffer whatever the peer sends (one 300 MiB answer took the daemon to 929 MB of memory). So
//! a declared `Content-Length` over the cap is refused before a byte of the body is read, and
//! an undeclared (chunked) body is read as a stream and dropped as soon as it passes the cap,
//! without reading the rest: the connection is closed instead of drained. The cap counts the
//! bytes handed to us, so it would also bound a decompressed body if compression were enabled.
//! The whole read stays under the HTTP client's request timeout, so a slow drip ends too.

/// The cap on a CWP API answer. Real answers are well under 1 KiB; 1 MiB leaves room for any
/// future field while bounding the memory one answer can take.
pub const MAX_API_BODY_BYTES: usize = 1 << 20;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The answer is larger than the cap (declared by `Content-Length`, or seen while reading).
    #[error("the answer is larger than {limit} bytes{}; not read further", declared_text(*.declared))]
    TooLarge {
        /// The cap.
        limit: usize,
        /// The `Content-Length`, when the answer declared one.
        declared: Option<u64>,
    },
    /// The connection failed while the body was read (reset, timeout, bad chunking).
    #[error("reading the answer failed: {0}")]
    Read(#[source] reqwest::Error),
}

fn declared_text(declared: Option<u64>) -> String {
    declared
        .map(|n| format!(" (Content-Length {n})"))
        .unwrap_or_default()
}

impl BodyError {
    /// Stable code. `ClientError.*` codes are classified transient by
    /// [`super::error::classify`]: an oversized answer is a server or middlebox fault that
    /// may be gone at the next poll, never a status of the agent.
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "ClientError.BodyTooLarge",
            BodyError::Read(_) => "ClientError.Transport",
        }
    }
}

/// Reads `response`'s body, at most `limit` bytes: a `Content-Length` over `limit` is refused
/// at once, an undeclared body as soon as it passes `limit`. The body is copied once, from the
/// network's chunks into the returned buffer (pre-sized to a declared length within the cap).
pub async fn read_capped(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Vec<u8>, BodyError> {
    let declared = response.content_length();
    if let Some(length) = declared
        && usize::try_from(length).map_or(true, |length| length > limit)
    {
        return Err(BodyError::TooLarge { limit, declared });
    }
    // A declared length is within the cap here, so this allocation is bounded too.
    let capacity = declared.and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    let mut body = Vec::with_capacity(capacity.min(limit));
    while let Some(chunk) = response.chunk().await.map_err(BodyError::Read)? {
        if chunk.len() > limit.saturating_sub(body.len()) {
            return Err(BodyError::TooLarge { limit, declared });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
