//! `kind = "slack"`: a Slack incoming webhook (`https://hooks.slack.com/services/T…/B…/…`).
//! The body is `{"text": <the header, for notifications>, "blocks": [...]}`: a section with
//! the header, sections with one line per record (each section's text at most 3000
//! characters, Slack's limit), and a context block with how many follow and the message id.
//! At most 50 blocks and 40,000 characters in all (Slack's limit for a message's text, kept for
//! the whole message). Every text is `mrkdwn` with `"verbatim": true`, so Slack does not turn
//! names into links or mentions by itself; what comes from outside is escaped as Slack asks
//! (`&amp;`, `&lt;`, `&gt;`).
//!
//! About one message a second; over it Slack answers 429 with `Retry-After`. A message taken
//! is answered `200` with the body `ok`; errors are 4xx/5xx with a short code
//! (`invalid_payload`, `no_service`, `channel_is_archived`, …).

use std::time::{Duration, SystemTime};

use super::markdown::{self, Dialect, Measure};
use super::{Answer, Composed, Kind, Request};
use crate::delivery::{Record, ResolvedSink};

/// The most characters of one section's text (Slack's limit).
pub const SECTION_LIMIT: usize = 3000;
/// The most blocks in a message (Slack's limit).
pub const BLOCK_LIMIT: usize = 50;
/// The most characters of text in the whole message.
pub const MESSAGE_LIMIT: usize = 40_000;

/// The slack receiver.
pub struct Slack {
    url: url::Url,
    /// The URL's key parts and the URL, kept out of reasons.
    secrets: Vec<String>,
}

impl Slack {
    /// For this sink.
    pub fn new(sink: &ResolvedSink) -> Self {
        use secrecy::ExposeSecret;
        let url = url::Url::parse(sink.url.expose_secret())
            .unwrap_or_else(|_| url::Url::parse("http://127.0.0.1/").expect("a valid URL"));
        let secrets = markdown::url_secrets(&url);
        Slack { url, secrets }
    }
}

fn mrkdwn(text: String) -> serde_json::Value {
    serde_json::json!({ "type": "mrkdwn", "text": text, "verbatim": true })
}

fn section(text: String) -> serde_json::Value {
    serde_json::json!({ "type": "section", "text": mrkdwn(text) })
}

/// The records' lines packed into sections, the first records that fit, and how many.
fn sections(records: &[Record], room: usize) -> (Vec<String>, usize) {
    let measure = Measure::Utf16;
    // The header and context take two of the 50 blocks.
    let max_sections = BLOCK_LIMIT - 2;
    let mut sections: Vec<String> = Vec::new();
    let mut used = 0;
    let mut covers = 0;
    for record in records {
        let mut item = format!("• {}", markdown::line(Dialect::Slack, record));
        if covers == 0 {
            item = markdown::truncate(&item, SECTION_LIMIT.min(room), measure);
        }
        let size = measure.of(&item);
        let joins = sections
            .last()
            .is_some_and(|s| measure.of(s) + 1 + size <= SECTION_LIMIT);
        let added = if joins { size + 1 } else { size };
        let fits_here = joins || (sections.len() < max_sections && size <= SECTION_LIMIT);
        if !fits_here || used + added > room {
            break;
        }
        if joins {
            let last = sections.last_mut().expect("joins only onto a section");
            last.push('\n');
            last.push_str(&item);
        } else {
            sections.push(item);
        }
        used += added;
        covers += 1;
    }
    (sections, covers)
}

impl Kind for Slack {
    fn compose(&mut self, id: &str, records: &[Record], _now: SystemTime) -> Composed {
        let measure = Measure::Utf16;
        let more_max = markdown::more_text(records.len());
        let id_text = markdown::id_text(Dialect::Slack, id);
        let header_max = markdown::header_text(records.len());
        // The fallback `text` and the header section each hold the header (with `*…*`); the
        // context holds "N more …" and the id.
        let reserved =
            2 * (measure.of(&header_max) + 2) + measure.of(&more_max) + 1 + measure.of(&id_text);
        let room = MESSAGE_LIMIT.saturating_sub(reserved);
        let (lines, covers) = sections(records, room);
        let header = markdown::header_text(covers);
        let mut context = id_text;
        if covers < records.len() {
            context = format!("{} {context}", markdown::more_text(records.len() - covers));
        }
        let mut blocks = vec![section(format!("*{header}*"))];
        blocks.extend(lines.into_iter().map(section));
        blocks.push(serde_json::json!({ "type": "context", "elements": [mrkdwn(context)] }));
        let body = serde_json::json!({ "text": header, "blocks": blocks });
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
        if (200..300).contains(&status) && body.trim_ascii() == b"ok" {
            return Answer::Delivered;
        }
        let text = markdown::excerpt(body, &self.secrets);
        let reason = if (200..300).contains(&status) {
            format!("Slack answered HTTP {status} without `ok`, not taken as delivered: {text}")
        } else {
            format!("Slack answered HTTP {status}: {text}")
        };
        Answer::Retry {
            after: retry_after,
            reason,
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

    const URL: &str =
        "https://hooks.slack.com/services/T0000AAAA/B0000BBBB/XXXXXXXXXXXXXXXXXXXXXXXX";

    fn slack() -> Slack {
        Slack::new(&sink(SinkKind::Slack, URL, None))
    }

    fn body(composed: &Composed) -> serde_json::Value {
        serde_json::from_slice(&composed.request.body).unwrap()
    }

    /// Every mrkdwn text of the message, the fallback `text` first.
    fn texts(body: &serde_json::Value) -> Vec<String> {
        let mut out = vec![body["text"].as_str().unwrap().to_owned()];
        for block in body["blocks"].as_array().unwrap() {
            if block["type"] == "section" {
                out.push(block["text"]["text"].as_str().unwrap().to_owned());
            } else {
                assert_eq!(block["type"], "context");
                for e in block["elements"].as_array().unwrap() {
                    out.push(e["text"].as_str().unwrap().to_owned());
                }
            }
        }
        out
    }

    #[test]
    fn one_finding() {
        let composed = slack().compose(
            "oncall-9-9",
            &[finding(9, "port_unexpected", "web-01", "sshd")],
            SystemTime::UNIX_EPOCH,
        );
        assert_eq!(composed.covers, 1);
        assert_eq!(composed.request.url.as_str(), URL);
        assert_eq!(
            texts(&body(&composed)),
            [
                "cwp-portwatch: 1 event",
                "*cwp-portwatch: 1 event*",
                "• *critical* · prod · web-01 (6b6cd843…) · port 22 (sshd) · rule no-ssh · \
                 port_unexpected · 2026-12-08T02:47:04Z",
                "id: oncall-9-9",
            ]
        );
        let body = body(&composed);
        assert!(
            body["blocks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|b| b["type"] == "context" || b["text"]["verbatim"] == true)
        );
    }

    #[test]
    fn slack_markup_from_a_host_stays_text() {
        let composed = slack().compose(
            "s-1-1",
            &[finding(
                1,
                "port_unexpected",
                "<!channel>",
                "<@U123|boss> & co",
            )],
            SystemTime::UNIX_EPOCH,
        );
        let line = &texts(&body(&composed))[2];
        assert!(
            line.contains("&lt;!channel&gt; (6b6cd843…) · port 22 (&lt;＠U123|boss&gt; &amp; co)"),
            "{line}"
        );
    }

    #[test]
    fn many_records_fill_sections_up_to_the_limits() {
        let records: Vec<Record> = (0..2000)
            .map(|i| finding(i, "port_unexpected", "web-01", "sshd"))
            .collect();
        let composed = slack().compose("x", &records, SystemTime::UNIX_EPOCH);
        let body = body(&composed);
        let blocks = body["blocks"].as_array().unwrap();
        assert!(blocks.len() <= BLOCK_LIMIT);
        let texts = texts(&body);
        let total: usize = texts.iter().map(|t| Measure::Utf16.of(t)).sum();
        assert!(total <= MESSAGE_LIMIT, "{total}");
        // About 110 characters a line: some 350 records in 40,000 characters.
        assert!((300..450).contains(&composed.covers), "{}", composed.covers);
        assert!(
            texts
                .last()
                .unwrap()
                .starts_with(&format!("{} more events follow", 2000 - composed.covers))
        );
        let lines: usize = texts[2..texts.len() - 1]
            .iter()
            .map(|s| s.lines().count())
            .sum();
        assert_eq!(lines, composed.covers);
    }

    #[test]
    fn a_huge_record_is_cut_to_one_section() {
        let record = finding(1, "port_unexpected", &"名".repeat(5000), "x");
        let composed = slack().compose("x", &[record], SystemTime::UNIX_EPOCH);
        let texts = texts(&body(&composed));
        assert_eq!(composed.covers, 1);
        assert!(texts[2].ends_with(TRUNCATED));
        assert!(Measure::Utf16.of(&texts[2]) <= SECTION_LIMIT);
    }

    fn retry(after: Option<Duration>, reason: &str) -> Answer {
        Answer::Retry {
            after,
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn answers() {
        let k = slack();
        assert_eq!(k.classify(200, None, b"ok"), Answer::Delivered);
        assert_eq!(k.classify(200, None, b"ok\n"), Answer::Delivered);
        assert_eq!(
            k.classify(200, None, b""),
            retry(
                None,
                "Slack answered HTTP 200 without `ok`, not taken as delivered: "
            )
        );
        assert_eq!(
            k.classify(429, Some(Duration::from_secs(30)), b"rate_limited"),
            retry(
                Some(Duration::from_secs(30)),
                "Slack answered HTTP 429: rate_limited"
            )
        );
        assert_eq!(
            k.classify(429, None, b""),
            retry(None, "Slack answered HTTP 429: ")
        );
        assert_eq!(
            k.classify(400, None, b"invalid_payload"),
            retry(None, "Slack answered HTTP 400: invalid_payload")
        );
        assert_eq!(
            k.classify(404, None, b"no_service XXXXXXXXXXXXXXXXXXXXXXXX"),
            retry(None, "Slack answered HTTP 404: no_service [redacted]")
        );
        assert_eq!(
            k.classify(503, Some(Duration::from_secs(5)), &[0xff; 300]),
            retry(
                Some(Duration::from_secs(5)),
                &format!("Slack answered HTTP 503: {}…", "\u{fffd}".repeat(120))
            )
        );
    }

    proptest! {
        #[test]
        fn every_message_is_valid_and_within_slacks_limits(
            records in prop::collection::vec(any_record(), 1..40),
        ) {
            let composed = slack().compose("oncall-1-40", &records, SystemTime::UNIX_EPOCH);
            prop_assert!(composed.covers >= 1 && composed.covers <= records.len());
            let body = body(&composed);
            prop_assert!(body["blocks"].as_array().unwrap().len() <= BLOCK_LIMIT);
            let texts = texts(&body);
            let mut total = 0;
            for text in &texts {
                let size = Measure::Utf16.of(text);
                prop_assert!(size <= SECTION_LIMIT, "{}", size);
                total += size;
                prop_assert!(!text.contains(['<', '>', '@']), "{text:?}");
            }
            prop_assert!(total <= MESSAGE_LIMIT);
            prop_assert!(texts.last().unwrap().ends_with("id: oncall-1-40"));
            // The worker re-sends a message (a retry, a restart) by composing again from the
            // records it covered: they must all fit again, whatever the time.
            let again = slack().compose("oncall-1-40", &records[..composed.covers], SystemTime::UNIX_EPOCH);
            prop_assert_eq!(again.covers, composed.covers);
        }
    }
}
