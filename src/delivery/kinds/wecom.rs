//! `kind = "wecom"`: a WeCom (企业微信) group robot. `POST …/cgi-bin/webhook/send?key=KEY` with
//! `{"msgtype":"markdown","markdown":{"content":…}}`; the content is at most 4096 bytes of
//! UTF-8, so a message carries the records that fit (`markdown::digest`) and says how many
//! follow. 20 messages a minute per robot (the worker paces; over it WeCom answers errcode
//! 45009).
//!
//! The answer is HTTP 200 with `{"errcode":0,"errmsg":"ok"}` when taken; any other errcode is
//! a refusal, so a 200 alone never counts as delivered.

use std::time::{Duration, SystemTime};

use super::markdown::{self, Dialect};
use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink};

/// The most bytes of `content` WeCom takes.
pub const CONTENT_LIMIT: usize = 4096;

/// How long WeCom's frequency limit lasts: its window is a minute.
pub const OVER_RATE_WAIT: Duration = Duration::from_secs(60);

/// The wecom receiver.
pub struct Wecom {
    url: url::Url,
    /// The URL's key and the URL itself, kept out of reasons.
    secrets: Vec<String>,
}

impl Wecom {
    /// For this sink.
    pub fn new(sink: &ResolvedSink) -> Self {
        use secrecy::ExposeSecret;
        let url = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("a valid URL"));
        let secrets = markdown::url_secrets(&url);
        Wecom { url, secrets }
    }
}

impl Kind for Wecom {
    fn compose(&mut self, id: &str, records: &[Record], _now: SystemTime) -> Composed {
        let (content, covers) = markdown::digest(Dialect::Wecom, id, records, CONTENT_LIMIT);
        let body = serde_json::json!({
            "msgtype": "markdown",
            "markdown": { "content": content },
        });
        Composed {
            covers,
            request: Request {
                url: self.url.clone(),
                headers: Vec::new(),
                body: body.to_string().into_bytes(),
            },
        }
    }

    fn classify(&self, status: u16, retry_after: Option<Duration>, body: &[u8]) -> Answer {
        let (code, message) =
            match markdown::robot_errcode("WeCom", status, retry_after, body, &self.secrets) {
                Ok(answer) => answer,
                Err(retry) => return retry,
            };
        match code {
            0 => Answer::Delivered,
            45009 => Answer::Retry {
                after: Some(retry_after.unwrap_or(OVER_RATE_WAIT).max(OVER_RATE_WAIT)),
                reason: format!(
                    "WeCom errcode 45009: over the robot's 20 messages a minute ({message})"
                ),
            },
            93000 => Answer::Retry {
                after: retry_after,
                reason: format!(
                    "WeCom errcode 93000: invalid webhook URL: check the key in url_file ({message})"
                ),
            },
            code => Answer::Retry {
                after: retry_after,
                reason: format!("WeCom errcode {code}: {message}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::markdown::TRUNCATED;
    use super::super::markdown::testing::{any_record, finding, sink};
    use super::*;
    use crate::delivery::SinkKind;
    use proptest::prelude::*;

    const URL: &str = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx-4bc4";

    fn wecom() -> Wecom {
        Wecom::new(&sink(SinkKind::Wecom, URL, None))
    }

    fn content(composed: &Composed) -> String {
        let body: serde_json::Value = serde_json::from_slice(&composed.request.body).unwrap();
        assert_eq!(body["msgtype"], "markdown");
        body["markdown"]["content"].as_str().unwrap().to_owned()
    }

    #[test]
    fn one_finding_is_one_markdown_message_to_the_robot_url() {
        let record = finding(3, "port_unexpected", "web-01", "sshd");
        let composed = wecom().compose("oncall-3-3", &[record], SystemTime::UNIX_EPOCH);
        assert_eq!(composed.covers, 1);
        assert_eq!(composed.request.url.as_str(), URL);
        assert_eq!(
            content(&composed),
            "**cwp-portwatch: 1 event**\n\n\
             - <font color=\"warning\">critical</font> · prod · web-01 (6b6cd843…) · \
             port 22 (sshd) · rule no-ssh · port_unexpected · 2026-12-08T02:47:04Z\n\n\
             id: oncall-3-3"
        );
    }

    #[test]
    fn a_hostile_process_name_mentions_nobody_and_links_nowhere() {
        let record = finding(1, "port_unexpected", "@all", "<@U123>[x](http://evil)\n# x");
        let text = content(&wecom().compose("s-1-1", &[record], SystemTime::UNIX_EPOCH));
        assert!(text.contains("＠all (6b6cd843…) · port 22 (‹＠U123›［x］(http://evil)\\n# x)"));
        assert!(!text.contains("@all") && !text.contains("<@") && !text.contains("[x]"));
    }

    #[test]
    fn many_records_become_digests_that_together_cover_all() {
        let records: Vec<Record> = (0..200)
            .map(|i| finding(i, "port_unexpected", "web-01", "nginx: worker process"))
            .collect();
        let mut kind = wecom();
        let mut offset = 0;
        let mut messages = 0;
        while offset < records.len() {
            let composed = kind.compose("x", &records[offset..], SystemTime::UNIX_EPOCH);
            let text = content(&composed);
            assert!(text.len() <= CONTENT_LIMIT, "{}", text.len());
            assert!(composed.covers >= 1);
            let left = records.len() - offset - composed.covers;
            if left > 0 {
                assert!(text.contains(&format!("{left} more event")), "{text}");
            } else {
                assert!(!text.contains("more event"), "{text}");
            }
            offset += composed.covers;
            messages += 1;
        }
        // About 150 bytes a line: some 25 records a message.
        assert!((6..=12).contains(&messages), "{messages}");
    }

    fn retry(after: Option<Duration>, reason: &str) -> Answer {
        Answer::Retry {
            after,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn answers() {
        let k = wecom();
        let min = Some(Duration::from_secs(60));
        assert_eq!(
            k.classify(200, None, br#"{"errcode":0,"errmsg":"ok"}"#),
            Answer::Delivered
        );
        assert_eq!(
            k.classify(
                200,
                None,
                br#"{"errcode":45009,"errmsg":"api freq out of limit"}"#
            ),
            retry(
                min,
                "WeCom errcode 45009: over the robot's 20 messages a minute (api freq out of limit)"
            )
        );
        // A longer wait said by the receiver is kept, a shorter one is not.
        let long = Some(Duration::from_secs(90));
        assert!(
            matches!(k.classify(200, long, br#"{"errcode":45009}"#), Answer::Retry { after, .. } if after == long)
        );
        assert!(
            matches!(k.classify(200, Some(Duration::from_secs(1)), br#"{"errcode":45009}"#), Answer::Retry { after, .. } if after == min)
        );
        assert_eq!(
            k.classify(
                200,
                None,
                br#"{"errcode":93000,"errmsg":"invalid webhook url, hint: [1] key=693a91f6-7xxx-4bc4"}"#
            ),
            retry(
                None,
                "WeCom errcode 93000: invalid webhook URL: check the key in url_file \
                 (invalid webhook url, hint: [1] key=[redacted])"
            )
        );
        assert_eq!(
            k.classify(
                200,
                None,
                br#"{"errcode":40008,"errmsg":"invalid message type"}"#
            ),
            retry(None, "WeCom errcode 40008: invalid message type")
        );
        assert_eq!(
            k.classify(200, None, b"<html>portal</html>"),
            retry(
                None,
                "WeCom answered HTTP 200 without an errcode, not taken as delivered: <html>portal</html>"
            )
        );
        assert_eq!(
            k.classify(429, Some(Duration::from_secs(7)), b""),
            retry(Some(Duration::from_secs(7)), "WeCom answered HTTP 429: ")
        );
        assert_eq!(
            k.classify(429, None, b"slow down"),
            retry(None, "WeCom answered HTTP 429: slow down")
        );
        assert_eq!(
            k.classify(502, None, b"\x1b[2J\xff\xfe bad gateway"),
            retry(
                None,
                "WeCom answered HTTP 502: \\u{1b}[2J\u{fffd}\u{fffd} bad gateway"
            )
        );
    }

    proptest! {
        #[test]
        fn every_message_is_valid_and_within_the_limit(
            records in prop::collection::vec(any_record(), 1..12),
        ) {
            let composed = wecom().compose("oncall-1-12", &records, SystemTime::UNIX_EPOCH);
            prop_assert!(composed.covers >= 1 && composed.covers <= records.len());
            let text = content(&composed);
            prop_assert!(text.len() <= CONTENT_LIMIT, "{}", text.len());
            prop_assert!(text.ends_with("id: oncall-1-12"));
            // The worker re-sends a message (a retry, a restart) by composing again from the
            // records it covered: they must all fit again, whatever the time.
            let again = wecom().compose("oncall-1-12", &records[..composed.covers], SystemTime::UNIX_EPOCH);
            prop_assert_eq!(again.covers, composed.covers);
            // Markup is ours alone: `<` only opens our colour tags.
            prop_assert_eq!(text.matches('<').count(), 2 * composed.covers);
            prop_assert!(!text.contains('@') && !text.contains('['));
            if composed.covers == 1 && text.contains(TRUNCATED) {
                prop_assert!(text.len() > CONTENT_LIMIT / 2);
            }
        }

        #[test]
        fn any_answer_is_classified_without_panic(
            status in 100u16..600,
            body in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let answer = wecom().classify(status, None, &body);
            if let Answer::Retry { reason, .. } = answer {
                prop_assert!(!reason.contains("693a91f6-7xxx-4bc4"));
                prop_assert!(!reason.chars().any(crate::escape::is_unsafe));
            }
        }
    }
}
