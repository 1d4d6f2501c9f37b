//! `kind = "dingtalk"`: a DingTalk (钉钉) custom robot with the "sign" (加签) security setting.
//! `POST …/robot/send?access_token=…&timestamp=MS&sign=S` with
//! `{"msgtype":"markdown","markdown":{"title":…,"text":…}}`, where
//! `S = urlencode(base64(HMAC-SHA256(key = secret, msg = MS + "\n" + secret)))` and `MS` is
//! the sending time in Unix milliseconds (DingTalk refuses one more than an hour off). The
//! time is the `now` given to `compose`, never read here, so a test can check the signature.
//!
//! DingTalk documents no byte limit for markdown; text messages are limited to 20,000 bytes,
//! and that bound is used for `text` ([`TEXT_LIMIT`]). 20 messages a minute per robot; over
//! it DingTalk blocks the robot for 10 minutes (errcode 130101), so that answer waits 10
//! minutes. The answer is `{"errcode":0,"errmsg":"ok"}` when taken.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

use super::markdown::{self, Dialect};
use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink};

/// The most bytes of `text` sent (DingTalk's documented limit for text messages; it states
/// none for markdown).
pub const TEXT_LIMIT: usize = 20_000;

/// How long DingTalk blocks a robot that sent over 20 messages in a minute (errcode 130101).
pub const BLOCKED_WAIT: Duration = Duration::from_secs(10 * 60);

/// The dingtalk receiver.
pub struct Dingtalk {
    /// The robot URL as configured (with `access_token`; any `timestamp`/`sign` removed).
    url: url::Url,
    /// The signing secret (`secret_file`); without one the message goes unsigned.
    secret: Option<SecretString>,
    /// The URL's token, the URL and the secret, kept out of reasons.
    secrets: Vec<String>,
}

impl Dingtalk {
    /// For this sink.
    pub fn new(sink: &ResolvedSink) -> Self {
        let mut url = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("a valid URL"));
        // A URL copied from a signed request would carry a stale timestamp and sign.
        let kept: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "timestamp" && k != "sign")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            url.set_query(None);
        } else {
            url.query_pairs_mut().clear().extend_pairs(kept);
        }
        let mut secrets = markdown::url_secrets(&url);
        if let Some(secret) = &sink.secret {
            secrets.push(secret.expose_secret().to_owned());
            secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
        Dingtalk {
            url,
            secret: sink.secret.clone(),
            secrets,
        }
    }
}

/// `base64(HMAC-SHA256(key = secret, msg = timestamp_ms + "\n" + secret))`, before URL encoding.
pub fn sign(secret: &str, timestamp_ms: u128) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any size");
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

impl Kind for Dingtalk {
    fn compose(&mut self, id: &str, records: &[Record], now: SystemTime) -> Composed {
        let (text, covers) = markdown::digest(Dialect::Dingtalk, id, records, TEXT_LIMIT);
        let body = serde_json::json!({
            "msgtype": "markdown",
            "markdown": { "title": markdown::header_text(covers), "text": text },
        });
        let mut url = self.url.clone();
        if let Some(secret) = &self.secret {
            // A clock before 1970 signs as 0: DingTalk refuses it, the answer says so.
            let ms = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0);
            // `append_pair` form-encodes: `+`, `/`, `=` of base64 become %2B, %2F, %3D.
            url.query_pairs_mut()
                .append_pair("timestamp", &ms.to_string())
                .append_pair("sign", &sign(secret.expose_secret(), ms));
        }
        Composed {
            covers,
            request: Request {
                url,
                headers: Vec::new(),
                body: body.to_string().into_bytes(),
            },
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer {
        let (code, message) =
            match markdown::robot_errcode("DingTalk", status, retry_after, body, &self.secrets) {
                Ok(answer) => answer,
                Err(retry) => return retry,
            };
        match code {
            0 => Answer::Delivered,
            130101 => Answer::Retry {
                after: Some(BLOCKED_WAIT),
                reason: format!(
                    "DingTalk errcode 130101: sent too fast, the robot is blocked for 10 minutes \
                     ({message})"
                ),
            },
            310000 => Answer::Retry {
                after: retry_after,
                reason: format!(
                    "DingTalk errcode 310000: the robot's security check failed: check secret_file \
                     (sign), the robot's keyword (\"cwp-portwatch\") and IP allow-list ({message})"
                ),
            },
            code => Answer::Retry {
                after: retry_after,
                reason: format!("DingTalk errcode {code}: {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::markdown::testing::{any_record, finding, sink};
    use super::*;
    use crate::delivery::SinkKind;
    use proptest::prelude::*;

    const URL: &str = "https://oapi.dingtalk.com/robot/send?access_token=ab12cd34ef56";
    const SECRET: &str = "SEC0123456789abcdef";
    /// 2026-12-08T02:47:04.123Z.
    const NOW_MS: u64 = 1_796_698_024_123;

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(NOW_MS)
    }

    fn dingtalk() -> Dingtalk {
        Dingtalk::new(&sink(SinkKind::Dingtalk, URL, Some(SECRET)))
    }

    fn markdown_of(composed: &Composed) -> (String, String) {
        let body: serde_json::Value = serde_json::from_slice(&composed.request.body).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        let md = &body["markdown"];
        (
            md["title"].as_str().unwrap().to_owned(),
            md["text"].as_str().unwrap().to_owned(),
        )
    }

    #[test]
    fn the_signature_is_dingtalks() {
        // Computed apart, with Python's hmac, hashlib, base64 and urllib.parse.quote_plus.
        assert_eq!(
            sign(SECRET, u128::from(NOW_MS)),
            "gWwSfIBBEQTOSe4CRUZMGi/0CviAvjuVl/i9wyflwtA="
        );
        let composed = dingtalk().compose("d-1-1", &[finding(1, "port_missing", "a", "")], now());
        assert_eq!(
            composed.request.url.as_str(),
            "https://oapi.dingtalk.com/robot/send?access_token=ab12cd34ef56\
             &timestamp=1796698024123&sign=gWwSfIBBEQTOSe4CRUZMGi%2F0CviAvjuVl%2Fi9wyflwtA%3D"
        );
    }

    #[test]
    fn a_stale_timestamp_and_sign_in_the_url_are_replaced() {
        let kind = Dingtalk::new(&sink(
            SinkKind::Dingtalk,
            &format!("{URL}&timestamp=1&sign=old"),
            Some(SECRET),
        ));
        let mut kind = kind;
        let url = kind
            .compose("d-1-1", &[finding(1, "port_missing", "a", "")], now())
            .request
            .url;
        let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        let names: Vec<&str> = pairs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["access_token", "timestamp", "sign"]);
        assert_eq!(pairs[1].1, NOW_MS.to_string());
    }

    #[test]
    fn without_a_secret_the_url_is_unchanged() {
        let mut kind = Dingtalk::new(&sink(SinkKind::Dingtalk, URL, None));
        let composed = kind.compose("d-1-1", &[finding(1, "port_missing", "a", "")], now());
        assert_eq!(composed.request.url.as_str(), URL);
    }

    #[test]
    fn the_title_counts_the_events_and_the_text_lists_them() {
        let records = [
            finding(4, "port_unexpected", "web-01", "sshd"),
            finding(5, "port_unexpected_cleared", "web-01", "sshd"),
        ];
        let composed = dingtalk().compose("oncall-4-5", &records, now());
        assert_eq!(composed.covers, 2);
        let (title, text) = markdown_of(&composed);
        assert_eq!(title, "cwp-portwatch: 2 events");
        assert_eq!(
            text,
            "**cwp-portwatch: 2 events**\n\n\
             - **critical** · prod · web-01 (6b6cd843…) · port 22 (sshd) · rule no-ssh · \
             port_unexpected · 2026-12-08T02:47:04Z\n\
             - **resolved** · prod · web-01 (6b6cd843…) · port 22 (sshd) · rule no-ssh · \
             port_unexpected_cleared (closed) · 2026-12-08T02:47:04Z\n\n\
             id: oncall-4-5"
        );
    }

    fn retry(after: Option<Duration>, reason: &str) -> Answer {
        Answer::Retry {
            after,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn answers() {
        let k = dingtalk();
        assert_eq!(
            k.classify(200, None, br#"{"errcode":0,"errmsg":"ok"}"#),
            Answer::Delivered
        );
        assert_eq!(
            k.classify(200, None, br#"{"errcode":130101,"errmsg":"send too fast"}"#),
            retry(
                Some(BLOCKED_WAIT),
                "DingTalk errcode 130101: sent too fast, the robot is blocked for 10 minutes \
                 (send too fast)"
            )
        );
        assert_eq!(
            k.classify(
                200,
                None,
                br#"{"errcode":310000,"errmsg":"sign not match, secret SEC0123456789abcdef"}"#
            ),
            retry(
                None,
                "DingTalk errcode 310000: the robot's security check failed: check secret_file \
                 (sign), the robot's keyword (\"cwp-portwatch\") and IP allow-list \
                 (sign not match, secret [redacted])"
            )
        );
        assert_eq!(
            k.classify(
                200,
                None,
                br#"{"errcode":300001,"errmsg":"token is not exist"}"#
            ),
            retry(None, "DingTalk errcode 300001: token is not exist")
        );
        assert_eq!(
            k.classify(200, None, b""),
            retry(
                None,
                "DingTalk answered HTTP 200 without an errcode, not taken as delivered: "
            )
        );
        assert_eq!(
            k.classify(429, Some(Duration::from_secs(30)), b"{}"),
            retry(
                Some(Duration::from_secs(30)),
                "DingTalk answered HTTP 429: {}"
            )
        );
        assert_eq!(
            k.classify(500, None, b"access_token=ab12cd34ef56"),
            retry(None, "DingTalk answered HTTP 500: access_token=[redacted]")
        );
    }

    proptest! {
        #[test]
        fn every_message_is_valid_signed_and_within_the_limit(
            records in prop::collection::vec(any_record(), 1..12),
            ms in 0u64..4_102_444_800_000,
        ) {
            let at = SystemTime::UNIX_EPOCH + Duration::from_millis(ms);
            let composed = dingtalk().compose("oncall-1-12", &records, at);
            prop_assert!(composed.covers >= 1 && composed.covers <= records.len());
            let (title, text) = markdown_of(&composed);
            prop_assert!(text.len() <= TEXT_LIMIT, "{}", text.len());
            prop_assert_eq!(title, markdown::header_text(composed.covers));
            prop_assert!(text.ends_with("id: oncall-1-12"));
            // The worker re-sends a message (a retry, a restart) by composing again from the
            // records it covered: they must all fit again, whatever the time.
            let again = dingtalk().compose("oncall-1-12", &records[..composed.covers], SystemTime::UNIX_EPOCH);
            prop_assert_eq!(again.covers, composed.covers);
            prop_assert!(!text.contains(['<', '@', '[', '`']));
            let sign_value = composed
                .request
                .url
                .query_pairs()
                .find(|(k, _)| k == "sign")
                .map(|(_, v)| v.into_owned());
            prop_assert_eq!(sign_value, Some(sign(SECRET, u128::from(ms))));
        }
    }
}
