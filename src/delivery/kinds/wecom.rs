//! `kind = "wecom"` (skeleton: the message and answer rules are still to be written).

use std::time::{Duration, SystemTime};

use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink};

/// The wecom receiver.
pub struct Wecom {
    url: url::Url,
}

impl Wecom {
    /// For this sink.
    pub fn new(sink: &ResolvedSink) -> Self {
        use secrecy::ExposeSecret;
        let url = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("a valid URL"));
        Wecom { url }
    }
}

impl Kind for Wecom {
    fn compose(&mut self, _id: &str, _records: &[Record], _now: SystemTime) -> Composed {
        Composed {
            covers: 1,
            request: Request {
                url: self.url.clone(),
                headers: Vec::new(),
                body: b"{}".to_vec(),
            },
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, _body: &[u8]) -> Answer {
        if (200..300).contains(&status) {
            Answer::Delivered
        } else {
            Answer::Retry {
                after: retry_after,
                reason: format!("HTTP {status}"),
            }
        }
    }
}
