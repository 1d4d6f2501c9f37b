//! What the three chat robots (`wecom`, `dingtalk`, `slack`) share: escaping text from outside
//! for their markup, one line per record, a digest that fits the receiver's size limit, and
//! reading their answers. Pure.
//!
//! Escaping. Agent names come from the watchlist or from discovery, process names from the
//! hosts themselves: a process named `<@U123>` or `[pay here](http://…)` must not become a
//! mention or a link in an on-call channel, nor a `\n# …` a forged line. Every value from
//! outside goes through [`escape`]: control and bidi characters first become visible escapes
//! (`crate::escape::escape`: `\n`, `\u{1b}`), then the characters that open a construct in the
//! receiver's markup are neutralised. The robots' renderers are not CommonMark (WeCom and
//! DingTalk honour neither backslash escapes nor entities reliably), so for them such a
//! character is replaced by a look-alike that opens nothing (`<` → `‹`, `[` → `［`, `@` → `＠`,
//! …, the table in `docs/delivery-robots.md`); Slack documents `&amp;`, `&lt;`, `&gt;` and
//! those are used. The exact bytes are in the journal, which every truncated message points to.
//!
//! Sizes. A message carries as many records as fit, oldest first (never a record cut in two
//! while others follow): a header `cwp-portwatch: N events`, a line per record, then how many
//! follow in the next message, then the message's stable id. A single record too long for the
//! receiver alone is cut at a character boundary (never inside an escape) and ends with
//! [`TRUNCATED`]. Composing again from just the records a message covered covers them all
//! again (the room kept for the header and footer is for the largest counts), so a retry or a
//! restart re-sends the same message with the same id; only DingTalk's signature changes,
//! since it carries the sending time (DingTalk refuses one over an hour old: compose again
//! for every attempt).

use std::fmt::Write as _;

use crate::delivery::Record;

/// The note ending a line that was cut to fit.
pub const TRUNCATED: &str = " … (truncated, see the journal)";

/// Whose markup a text is escaped for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// WeCom group robot markdown (`<font color>`, `<@userid>` mentions, links, code).
    Wecom,
    /// DingTalk robot markdown (links, images, `@mobile` mentions).
    Dingtalk,
    /// Slack `mrkdwn` (`<@U…>`, `<!channel>`, `<url|text>`, `*bold*`, `` `code` ``).
    Slack,
}

/// How a receiver counts its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measure {
    /// UTF-8 bytes (WeCom, DingTalk).
    Bytes,
    /// UTF-16 code units (Slack counts characters; an emoji outside the BMP counts as two
    /// here, so this never undercounts).
    Utf16,
}

impl Measure {
    /// The size of `text`.
    pub fn of(self, text: &str) -> usize {
        match self {
            Measure::Bytes => text.len(),
            Measure::Utf16 => text.encode_utf16().count(),
        }
    }

    fn of_char(self, c: char) -> usize {
        match self {
            Measure::Bytes => c.len_utf8(),
            Measure::Utf16 => c.len_utf16(),
        }
    }
}

/// `text` from outside, safe to put in a `dialect` message: one line, no markup of its own.
pub fn escape(dialect: Dialect, text: &str) -> String {
    let visible = crate::escape::escape(text);
    let mut out = String::with_capacity(visible.len() + 8);
    for c in visible.chars() {
        match (dialect, c) {
            (Dialect::Slack, '&') => out.push_str("&amp;"),
            (Dialect::Slack, '<') => out.push_str("&lt;"),
            (Dialect::Slack, '>') => out.push_str("&gt;"),
            (Dialect::Wecom | Dialect::Dingtalk, '&') => out.push('＆'),
            (Dialect::Wecom | Dialect::Dingtalk, '<') => out.push('‹'),
            (Dialect::Wecom | Dialect::Dingtalk, '>') => out.push('›'),
            (_, '[') => out.push('［'),
            (_, ']') => out.push('］'),
            (_, '@') => out.push('＠'),
            (_, '`') => out.push('ˋ'),
            (_, '*') => out.push('∗'),
            (_, c) => out.push(c),
        }
    }
    out
}

/// `text` (already escaped) cut so that it and [`TRUNCATED`] fit in `max`, or unchanged when
/// it fits. The cut is at a character boundary and never inside an entity (`&lt;`).
pub fn truncate(text: &str, max: usize, measure: Measure) -> String {
    if measure.of(text) <= max {
        return text.to_owned();
    }
    if measure.of(TRUNCATED) > max {
        // A limit smaller than the note itself: no receiver has one; still never over it.
        return truncate_plain(TRUNCATED, max, measure);
    }
    let room = max.saturating_sub(measure.of(TRUNCATED));
    let mut end = 0;
    let mut used = 0;
    for (i, c) in text.char_indices() {
        let size = measure.of_char(c);
        if used + size > room {
            break;
        }
        used += size;
        end = i + c.len_utf8();
    }
    let mut kept = &text[..end];
    // Every `&` in Slack's escaped text opens an entity (a raw one is `&amp;`, the longest):
    // never keep the first four characters of one. (Elsewhere this drops at most four
    // characters after a plain `&` just before the cut.)
    if let Some(amp) = kept.rfind('&')
        && kept.len() - amp < "&amp;".len()
        && !kept[amp..].contains(';')
    {
        kept = &kept[..amp];
    }
    format!("{kept}{TRUNCATED}")
}

fn truncate_plain(text: &str, max: usize, measure: Measure) -> String {
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += measure.of_char(c);
        if used > max {
            break;
        }
        out.push(c);
    }
    out
}

/// A field of `record` as text: strings as they are, numbers and booleans written out; absent,
/// null and empty strings are `None`.
pub fn field(record: &Record, name: &str) -> Option<String> {
    match record.fields.get(name)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) if s.is_empty() => None,
        serde_json::Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// `at_ms` as `2026-12-08T02:47:04Z` (UTC, seconds), or the raw number for a time no calendar
/// holds.
pub fn time_of(at_ms: u64) -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i128::from(at_ms)
        .checked_mul(1_000_000)
        .and_then(|ns| time::OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("at_ms={at_ms}"))
}

/// One record as one line of a `dialect` message (without the list marker): severity (or
/// `resolved`), account, agent, port and process, rule, what happened, time. Everything from
/// outside is escaped; only the severity carries markup (ours).
pub fn line(dialect: Dialect, record: &Record) -> String {
    let e = |text: &str| escape(dialect, text);
    // An end is said as such: "critical" beside a port that closed would page for nothing.
    let severity = if record.resolves {
        "resolved"
    } else {
        record.severity.as_str()
    };
    let mut out = match dialect {
        Dialect::Wecom => {
            // WeCom's three colours: green for an end, orange for a finding worth a look.
            let color = if record.resolves {
                "info"
            } else if record.severity >= crate::policy::Severity::Warning {
                "warning"
            } else {
                "comment"
            };
            format!("<font color=\"{color}\">{severity}</font>")
        }
        Dialect::Dingtalk => format!("**{severity}**"),
        Dialect::Slack => format!("*{severity}*"),
    };
    let mut part = |text: String| {
        out.push_str(" · ");
        out.push_str(&text);
    };
    if let Some(account) = &record.account {
        part(e(account));
    }
    let uuid = field(record, "uuid");
    let name = field(record, "agent_name");
    match (name, uuid) {
        (Some(name), Some(uuid)) => {
            let short: String = uuid.chars().take(8).collect();
            part(format!("{} ({}…)", e(&name), e(&short)));
        }
        (Some(name), None) => part(e(&name)),
        (None, Some(uuid)) => {
            let short: String = uuid.chars().take(8).collect();
            part(format!("{}…", e(&short)));
        }
        (None, None) => {}
    }
    if let Some(port) = field(record, "port") {
        match field(record, "process_name") {
            Some(process) => part(format!("port {} ({})", e(&port), e(&process))),
            None => part(format!("port {}", e(&port))),
        }
    }
    if let Some(rule) = field(record, "rule") {
        part(format!("rule {}", e(&rule)));
    }
    part(what(dialect, record));
    part(time_of(record.at_ms));
    out
}

/// What happened: the event's name, with what makes it readable (a clear's reason, a missing
/// port's spec, a status change's ends); an event outside the findings and status changes
/// brings its sentence.
fn what(dialect: Dialect, record: &Record) -> String {
    let e = |text: &str| escape(dialect, text);
    let mut out = e(&record.event);
    match record.event.as_str() {
        "port_unexpected" => {}
        "port_unexpected_cleared" => {
            if let Some(reason) = field(record, "reason") {
                let _ = write!(out, " ({})", e(&reason));
            }
        }
        "port_missing" | "port_missing_cleared" => {
            if let Some(spec) = field(record, "spec") {
                let _ = write!(out, " {}", e(&spec));
            }
            if let Some(reason) = field(record, "reason") {
                let _ = write!(out, " ({})", e(&reason));
            }
        }
        "status_changed" => {
            let from = field(record, "from_status").unwrap_or_default();
            let to = field(record, "to_status").unwrap_or_default();
            let _ = write!(out, " {} → {}", e(&from), e(&to));
        }
        _ => {
            if !record.message.is_empty() {
                let _ = write!(out, ": {}", e(&record.message));
            }
        }
    }
    out
}

/// `cwp-portwatch: N events` (the words of the header, without markup).
pub fn header_text(events: usize) -> String {
    let noun = if events == 1 { "event" } else { "events" };
    format!("cwp-portwatch: {events} {noun}")
}

/// `N more events follow in the next message.`
pub fn more_text(more: usize) -> String {
    if more == 1 {
        "1 more event follows in the next message.".to_owned()
    } else {
        format!("{more} more events follow in the next message.")
    }
}

/// The longest id shown (the worker's ids are far shorter: `{sink}-{first}-{last}`).
const MAX_ID: usize = 200;

/// `id: …`, escaped and bounded.
pub fn id_text(dialect: Dialect, id: &str) -> String {
    let short: String = id.chars().take(MAX_ID).collect();
    format!("id: {}", escape(dialect, &short))
}

/// A markdown digest (WeCom, DingTalk) of the first records that fit in `limit` bytes, and how
/// many it covers (at least one):
///
/// ```text
/// **cwp-portwatch: 2 events**
///
/// - <line>
/// - <line>
///
/// 3 more events follow in the next message.
///
/// id: <id>
/// ```
pub fn digest(dialect: Dialect, id: &str, records: &[Record], limit: usize) -> (String, usize) {
    let measure = Measure::Bytes;
    let head = |n: usize| format!("**{}**\n\n", header_text(n));
    let foot = |more: usize| {
        let mut f = String::from("\n");
        if more > 0 {
            let _ = write!(f, "\n{}\n", more_text(more));
        }
        let _ = write!(f, "\n{}", id_text(dialect, id));
        f
    };
    // Room for the longest header and footer this message can have: the counts in them are at
    // most `records.len()`, so the real ones are never longer.
    let reserved = head(records.len()).len() + foot(records.len()).len();
    let room = limit.saturating_sub(reserved);
    let mut body = String::new();
    let mut covers = 0;
    for record in records {
        let item = format!("- {}", line(dialect, record));
        let sep = usize::from(covers > 0);
        if body.len() + sep + item.len() <= room {
            if covers > 0 {
                body.push('\n');
            }
            body.push_str(&item);
            covers += 1;
        } else {
            if covers == 0 {
                body = truncate(&item, room, measure);
                covers = 1;
            }
            break;
        }
    }
    let text = format!("{}{}{}", head(covers), body, foot(records.len() - covers));
    (text, covers)
}

/// The longest excerpt of an answer's body put in a reason.
const EXCERPT: usize = 120;

/// The most bytes of an answer looked at for a reason (more would only be cut off).
const EXCERPT_INPUT: usize = 4096;

/// The first characters of an answer's `body`, for a reason: every `secret` (the URL's key,
/// a signing secret) replaced by `[redacted]` first, then escaped and bounded.
pub fn excerpt(body: &[u8], secrets: &[String]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(EXCERPT_INPUT)]);
    let mut text = text.into_owned();
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        text = text.replace(secret.as_str(), "[redacted]");
    }
    let short: String = text.trim().chars().take(EXCERPT).collect();
    let escaped = crate::escape::escape(&short);
    let mut out: String = escaped.chars().take(EXCERPT).collect();
    if text.trim().chars().nth(EXCERPT).is_some() || escaped.chars().nth(EXCERPT).is_some() {
        out.push('…');
    }
    out
}

/// The parts of a robot URL that are its key (query values, long path segments: Slack's
/// `/services/T…/B…/XXXX`), to keep them out of reasons even when an answer echoes them.
pub fn url_secrets(url: &url::Url) -> Vec<String> {
    // Shorter parts are words (`services`, `send`), not keys: replacing them would garble
    // the reason and hide nothing.
    let mut out: Vec<String> = url
        .query_pairs()
        .map(|(_, v)| v.into_owned())
        .filter(|v| v.len() >= 8)
        .collect();
    if let Some(segments) = url.path_segments() {
        out.extend(segments.filter(|s| s.len() >= 16).map(str::to_owned));
    }
    out.push(url.as_str().to_owned());
    // The longest first, so a key inside the whole URL is not half-replaced.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out
}

/// `{"errcode": N, "errmsg": "…"}`, the answer of WeCom and DingTalk robots, when `body` is one.
pub fn errcode(body: &[u8]) -> Option<(i64, String)> {
    #[derive(serde::Deserialize)]
    struct Answer {
        errcode: i64,
        #[serde(default)]
        errmsg: Option<String>,
    }
    let answer: Answer = serde_json::from_slice(body).ok()?;
    Some((answer.errcode, answer.errmsg.unwrap_or_default()))
}

/// The part of a WeCom or DingTalk robot's answer both read alike: a non-2xx status, or a 2xx
/// without an `errcode`, is a retry (never taken as delivered); otherwise the `errcode` and
/// its `errmsg`, excerpted with `secrets` removed, for the kind's own codes. `robot` names the
/// receiver in the reason.
pub fn robot_errcode(
    robot: &str,
    status: u16,
    retry_after: Option<std::time::Duration>,
    body: &[u8],
    secrets: &[String],
) -> Result<(i64, String), super::Answer> {
    if !(200..300).contains(&status) {
        let text = excerpt(body, secrets);
        return Err(super::Answer::Retry {
            after: retry_after,
            reason: format!("{robot} answered HTTP {status}: {text}"),
        });
    }
    let Some((code, message)) = errcode(body) else {
        let text = excerpt(body, secrets);
        return Err(super::Answer::Retry {
            after: retry_after,
            reason: format!(
                "{robot} answered HTTP {status} without an errcode, not taken as delivered: {text}"
            ),
        });
    };
    Ok((code, excerpt(message.as_bytes(), secrets)))
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod docs_example;

#[cfg(test)]
mod tests {
    use super::testing::{finding, hostile};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn markup_from_outside_opens_nothing_in_wecom_and_dingtalk() {
        for dialect in [Dialect::Wecom, Dialect::Dingtalk] {
            let out = escape(
                dialect,
                "<@U123> @all [x](http://evil) ![i](http://e/i.png) `c` **b** &lt;font&gt;",
            );
            assert_eq!(
                out,
                "‹＠U123› ＠all ［x］(http://evil) !［i］(http://e/i.png) ˋcˋ ∗∗b∗∗ ＆lt;font＆gt;"
            );
        }
    }

    #[test]
    fn slack_gets_its_entities_and_no_mention_or_link() {
        assert_eq!(
            escape(
                Dialect::Slack,
                "<!channel> <@U1> <http://e|x> a&b `c` *b* @here"
            ),
            "&lt;!channel&gt; &lt;＠U1&gt; &lt;http://e|x&gt; a&amp;b ˋcˋ ∗b∗ ＠here"
        );
    }

    #[test]
    fn control_characters_become_visible_and_the_line_stays_one() {
        let out = escape(Dialect::Wecom, "web\n# forged\r\u{1b}[31m\u{202e}");
        assert_eq!(out, "web\\n# forged\\r\\u{1b}［31m\\u{202e}");
    }

    #[test]
    fn truncation_cuts_at_a_character_and_never_inside_an_entity() {
        let text = "中".repeat(100);
        let cut = truncate(&text, 64, Measure::Bytes);
        assert!(cut.len() <= 64, "{}", cut.len());
        assert!(cut.ends_with(TRUNCATED));
        assert!(cut.starts_with("中中中"));
        // 30 bytes of room before the note: `aaaa…&lt;` would be cut inside the entity.
        let text = format!("{}&lt;{}", "a".repeat(27), "b".repeat(50));
        let room = 30 + Measure::Utf16.of(TRUNCATED);
        let cut = truncate(&text, room, Measure::Utf16);
        assert_eq!(cut, format!("{}{TRUNCATED}", "a".repeat(27)));
        assert_eq!(truncate("short", 10, Measure::Bytes), "short");
        // A plain `&` well before the cut stays.
        let text = format!("AT&T {}", "x".repeat(100));
        let cut = truncate(&text, 60, Measure::Bytes);
        assert!(cut.starts_with("AT&T xxx"), "{cut}");
        assert_eq!(cut.len(), 60);
    }

    #[test]
    fn a_finding_line_has_every_part() {
        let record = finding(7, "port_unexpected", "web-01", "sshd");
        assert_eq!(
            line(Dialect::Dingtalk, &record),
            "**critical** · prod · web-01 (6b6cd843…) · port 22 (sshd) · rule no-ssh · \
             port_unexpected · 2026-12-08T02:47:04Z"
        );
    }

    #[test]
    fn a_digest_says_how_many_follow_when_not_all_fit() {
        let records: Vec<Record> = (0..50)
            .map(|i| finding(i, "port_unexpected", "web-01", "sshd"))
            .collect();
        let (text, covers) = digest(Dialect::Wecom, "oncall-0-49", &records, 4096);
        assert!(text.len() <= 4096);
        assert!(covers > 1 && covers < 50, "{covers}");
        assert!(text.starts_with(&format!("**cwp-portwatch: {covers} events**\n\n- ")));
        assert!(text.contains(&format!("\n\n{} more events follow", 50 - covers)));
        assert!(text.ends_with("\n\nid: oncall-0-49"));
        assert_eq!(text.matches("\n- ").count(), covers);
    }

    #[test]
    fn a_single_record_too_big_is_cut_with_the_note() {
        let record = finding(1, "port_unexpected", &"x".repeat(10_000), "sshd");
        let (text, covers) = digest(Dialect::Wecom, "s-1-1", &[record.clone(), record], 4096);
        assert_eq!(covers, 1);
        assert!(text.len() <= 4096, "{}", text.len());
        assert!(text.contains(TRUNCATED));
        assert!(text.contains("1 more event follows in the next message."));
    }

    #[test]
    fn errcode_reads_robot_answers_only() {
        assert_eq!(
            errcode(br#"{"errcode":0,"errmsg":"ok"}"#),
            Some((0, "ok".into()))
        );
        assert_eq!(
            errcode(br#"{"errcode":45009}"#),
            Some((45009, String::new()))
        );
        assert_eq!(errcode(b"ok"), None);
        assert_eq!(errcode(br#"{"errcode":"x"}"#), None);
        assert_eq!(errcode(b"{\"errcode\":0,"), None);
    }

    #[test]
    fn excerpts_hide_the_key_and_stay_short() {
        let url = url::Url::parse(
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=0123-4567-secret",
        )
        .unwrap();
        let secrets = url_secrets(&url);
        let body = format!("bad key 0123-4567-secret for {url}\n{}", "z".repeat(500));
        let out = excerpt(body.as_bytes(), &secrets);
        assert!(!out.contains("0123-4567-secret"), "{out}");
        assert!(
            out.starts_with("bad key [redacted] for [redacted]\\n"),
            "{out}"
        );
        assert!(out.chars().count() <= EXCERPT + 1);
        // Slack's key is the last path segment; the words around it stay readable.
        let url = url::Url::parse(
            "https://hooks.slack.com/services/T0AAAA/B0BBBB/k3yk3yk3yk3yk3yk3yk3yk3y",
        )
        .unwrap();
        assert_eq!(
            excerpt(
                b"no_service for services/T0AAAA/B0BBBB/k3yk3yk3yk3yk3yk3yk3yk3y",
                &url_secrets(&url)
            ),
            "no_service for services/T0AAAA/B0BBBB/[redacted]"
        );
        // A body of control characters escapes to more characters than it had: still bounded.
        let out = excerpt(&[0x1b; 5000], &[]);
        assert_eq!(out.chars().count(), EXCERPT + 1, "{out}");
    }

    proptest! {
        #[test]
        fn escaped_text_opens_no_construct(s in hostile()) {
            for dialect in [Dialect::Wecom, Dialect::Dingtalk] {
                let out = escape(dialect, &s);
                prop_assert!(!out.contains(['<', '>', '[', ']', '@', '`', '*', '&', '\n', '\r']), "{out:?}");
            }
            let out = escape(Dialect::Slack, &s);
            prop_assert!(!out.contains(['<', '>', '[', ']', '@', '`', '*', '\n', '\r']), "{out:?}");
            prop_assert!(!out.chars().any(crate::escape::is_unsafe));
        }

        #[test]
        fn truncation_stays_within_the_limit(s in hostile(), max in 0usize..200) {
            for measure in [Measure::Bytes, Measure::Utf16] {
                let cut = truncate(&s, max, measure);
                prop_assert!(measure.of(&cut) <= max, "{} > {max}", measure.of(&cut));
                if measure.of(&s) <= max {
                    prop_assert_eq!(&cut, &s);
                } else {
                    prop_assert!(cut.ends_with(TRUNCATED) || max < measure.of(TRUNCATED));
                }
            }
        }
    }
}
