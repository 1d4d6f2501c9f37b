//! Escaping for human-readable output: one record is one line, and no terminal control
//! sequence from a file, an API answer or the environment reaches a terminal.
//!
//! Values printed for people (the text log format, `status`/`once`/`demo` text, error
//! messages) come from places an attacker or a careless operator controls: an API `Message`
//! or `RequestId`, an agent name, the state file, a path. A `\n` in one of them forged a whole
//! log line, an ESC painted the terminal. Every such value goes through [`escape`] (or the
//! [`Escaped`] wrapper), which rewrites each [`is_unsafe`] character as `\n`, `\r`, `\t` or
//! `\u{…}` and leaves every other character as it is (printable text reads unchanged).
//! Backslashes are not doubled: printable input must stay the identity, so `\n` in the output
//! may also be a literal backslash-n; the output is for reading, not for parsing back.
//!
//! JSON lines are for programs: `serde_json` escapes C0 controls, and [`json_line`] also writes
//! DEL, C1, the line/paragraph separators and the bidi controls as `\uXXXX` (the same JSON
//! value, but no raw terminal control when someone `tail`s the file).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// The rule lives in `cwp_text`, shared with the simulator.
pub use cwp_text::is_unsafe;

/// `s` with every [`is_unsafe`] character escaped; borrowed (no allocation) when there is none.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        push_escaped(&mut out, c);
    }
    Cow::Owned(out)
}

/// Like [`escape`], but `\n` stays a line break: for text whose lines are its structure (a
/// list of problems, a TOML parse error with its snippet). Every other unsafe character,
/// `\r` included (it would overwrite the start of the line), is escaped.
pub fn escape_keeping_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c != '\n' && is_unsafe(c)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c == '\n' {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    Cow::Owned(out)
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

/// Displays a value escaped; honours width and alignment (`{:<16}`), so tables stay aligned.
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        f.pad(&escape(&text))
    }
}

/// One JSON value on one line, with no raw terminal control in it: `serde_json` already writes
/// C0 controls as `\u00XX`; the other [`is_unsafe`] characters (which it leaves raw) become
/// `\uXXXX` too. They can only be inside strings (JSON's structure is ASCII), and `\uXXXX` in a
/// string is the same character, so the value is unchanged.
pub fn json_line(value: &serde_json::Value) -> String {
    let text = value.to_string();
    if !text.chars().any(is_unsafe) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_unsafe(c) {
            // Every unsafe character is in the Basic Multilingual Plane: one `\uXXXX`.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn control_characters_become_visible_escapes() {
        assert_eq!(
            escape("a\nb\r\tc\u{1b}[31m\u{7f}\u{9b}"),
            "a\\nb\\r\\tc\\u{1b}[31m\\u{7f}\\u{9b}"
        );
        assert_eq!(
            escape("x\u{2028}y\u{2029}\u{202e}z\u{2066}\u{200f}\u{61c}"),
            "x\\u{2028}y\\u{2029}\\u{202e}z\\u{2066}\\u{200f}\\u{61c}"
        );
    }

    #[test]
    fn printable_text_is_borrowed_unchanged() {
        let s = "web-01 COLLECTING café 中文 \\n \u{a0}";
        assert!(matches!(escape(s), Cow::Borrowed(t) if t == s));
    }

    #[test]
    fn keeping_lines_escapes_all_but_the_line_break() {
        assert_eq!(
            escape_keeping_lines("one\u{1b}[2J\r\ntwo"),
            "one\\u{1b}[2J\\r\ntwo"
        );
    }

    #[test]
    fn escaped_pads_the_escaped_text() {
        assert_eq!(format!("[{:<6}]", Escaped("a\nb")), "[a\\nb  ]");
    }

    #[test]
    fn json_line_escapes_what_serde_json_leaves_raw_and_keeps_the_value() {
        let value = serde_json::json!({"m": "a\u{2028}b\u{7f}\u{9b}\u{202e}\n\u{1b}"});
        let line = json_line(&value);
        assert!(!line.chars().any(is_unsafe), "{line}");
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back, value);
    }

    proptest! {
        #[test]
        fn escaped_output_never_contains_an_unsafe_character(s in any::<String>()) {
            let out = escape(&s);
            prop_assert!(!out.chars().any(is_unsafe), "{out:?}");
            prop_assert!(!out.contains('\n'));
        }

        #[test]
        fn escaping_is_the_identity_on_safe_text(s in any::<String>()) {
            let safe: String = s.chars().filter(|c| !is_unsafe(*c)).collect();
            prop_assert_eq!(escape(&safe), safe.as_str());
        }

        #[test]
        fn keeping_lines_keeps_exactly_the_line_breaks(s in any::<String>()) {
            let out = escape_keeping_lines(&s);
            prop_assert!(!out.chars().any(|c| c != '\n' && is_unsafe(c)), "{out:?}");
            prop_assert_eq!(out.matches('\n').count(), s.matches('\n').count());
        }

        #[test]
        fn json_line_is_the_same_value_without_unsafe_characters(s in any::<String>()) {
            let value = serde_json::json!({ "s": s });
            let line = json_line(&value);
            prop_assert!(!line.chars().any(is_unsafe), "{line:?}");
            let back: serde_json::Value = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(back, value);
        }
    }
}
