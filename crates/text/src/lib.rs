//! The text rules the daemon and the simulator share, so that both read an operator's files
//! and print what they hold the same way: which characters are unsafe in human-readable output
//! ([`is_unsafe`]), which are refused in values an operator writes ([`forbidden_char`],
//! [`text_problem`]), how a value is quoted inside a message ([`shown`]), where a byte offset
//! is as 1-based line and column ([`LineIndex`]), and how large a file may be before it is
//! refused unread ([`MAX_FILE_BYTES`]). Pure code with unit tests; no I/O.

#![deny(missing_docs)]

use std::cell::OnceCell;

/// Files larger than this are refused before parsing: a watchlist of 100,000 agents is ~8 MB, so
/// anything far bigger is a wrong path (a log, a disk image, `/dev/zero`), not a config.
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// Byte offset → 1-based line and character column. The line starts are computed on first use
/// only, so a file without problems never pays for it, and a file with many problems pays once.
pub struct LineIndex<'a> {
    text: &'a str,
    starts: OnceCell<Vec<usize>>,
}

impl<'a> LineIndex<'a> {
    /// An index of `text`; nothing is computed until the first [`LineIndex::line_col`].
    pub fn new(text: &'a str) -> Self {
        LineIndex {
            text,
            starts: OnceCell::new(),
        }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end or inside a character are
    /// clamped to the nearest character boundary before it.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let starts = self.starts.get_or_init(|| {
            std::iter::once(0)
                .chain(self.text.match_indices('\n').map(|(i, _)| i + 1))
                .collect()
        });
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = starts.partition_point(|&start| start <= offset); // ≥ 1: starts[0] == 0
        // A UTF-8 BOM opens the first line invisibly (the TOML parser skips it): not a column.
        let start = match line {
            1 if self.text.starts_with('\u{feff}') => offset.min('\u{feff}'.len_utf8()),
            _ => starts[line - 1],
        };
        let column = self.text[start..offset].chars().count() + 1;
        (line, column)
    }
}

impl LineIndex<'_> {
    /// The key of a `key = value` line holding `offset`, if the line looks like one.
    pub fn key_at(&self, offset: usize) -> Option<String> {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let start = self.text[..offset].rfind('\n').map_or(0, |i| i + 1);
        let line = &self.text[start..];
        let (key, _) = line.split_once('=')?;
        let key = key.trim().trim_matches('"');
        (!key.is_empty() && !key.contains(char::is_whitespace)).then(|| key.to_string())
    }
}

/// Must this character be escaped in human-readable output? C0 controls (including `\n`,
/// `\r`, `\t`), DEL, C1 controls (U+0080–U+009F: U+009B is a CSI to some terminals), the
/// Unicode line and paragraph separators (line breaks to some viewers), and the bidi controls
/// (U+061C, U+200E/F, U+202A–U+202E, U+2066–U+2069: they reorder what is shown, "Trojan
/// Source").
pub fn is_unsafe(c: char) -> bool {
    matches!(c,
        '\u{0}'..='\u{1f}'
        | '\u{7f}'..='\u{9f}'
        | '\u{61c}'
        | '\u{200e}' | '\u{200f}'
        | '\u{2028}' | '\u{2029}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}')
}

/// Why `c` may not appear in free text that reaches output (agent names, paths, section and
/// role names), or `None` when it may. Control characters (C0, DEL, C1) break a log line or
/// drive the terminal; U+2028/U+2029 end a line in JavaScript and many viewers, so a JSON log
/// line seems to split; bidirectional controls (U+061C, U+200E/F, U+202A–U+202E,
/// U+2066–U+2069) reorder what a reader sees ("Trojan Source"), so a name could show as
/// another. None of them has a use in a name or a path, so they are refused where the value is
/// read, not escaped at every place it is printed.
pub fn forbidden_char(c: char) -> Option<&'static str> {
    match c {
        '\u{2028}' => Some("a line separator"),
        '\u{2029}' => Some("a paragraph separator"),
        '\u{061c}'
        | '\u{200e}'
        | '\u{200f}'
        | '\u{202a}'..='\u{202e}'
        | '\u{2066}'..='\u{2069}' => {
            Some("a bidirectional control, which can make text read differently from what it is")
        }
        // The same set as the output layer escapes: what is refused in input is exactly
        // what could garble output.
        c if is_unsafe(c) => Some("a control character"),
        _ => None,
    }
}

/// What is wrong with the free-text value of `key`, if anything: more than `max_chars`
/// characters, or a character [`forbidden_char`] refuses (the first one, by its position).
/// The message says what to write instead and never echoes more than [`shown`] does.
pub fn text_problem(key: &str, value: &str, max_chars: usize) -> Option<String> {
    if let Some((at, c, what)) = value
        .chars()
        .enumerate()
        .find_map(|(at, c)| forbidden_char(c).map(|what| (at + 1, c, what)))
    {
        return Some(format!(
            "`{key}` = {} contains U+{:04X} ({what}) at character {at}, which would garble \
             log lines or disguise the value; write it without that character",
            shown(value),
            u32::from(c)
        ));
    }
    if value.chars().nth(max_chars).is_some() {
        return Some(format!(
            "`{key}` is {} characters long; write at most {max_chars} (it starts {})",
            value.chars().count(),
            shown(value)
        ));
    }
    None
}

/// A value as shown inside a message: quoted, escaped, and cut short when long.
pub fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 60;
    if value.chars().count() <= MAX_CHARS {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX_CHARS).collect();
        format!("{:?}…", head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_characters() {
        let index = LineIndex::new("a\nbé c\n\nd");
        assert_eq!(index.line_col(0), (1, 1));
        assert_eq!(index.line_col(2), (2, 1));
        assert_eq!(index.line_col(5), (2, 3)); // after "bé" (é is 2 bytes)
        assert_eq!(index.line_col(4), (2, 2)); // inside é: clamped to its start
        assert_eq!(index.line_col(8), (3, 1));
        assert_eq!(index.line_col(100), (4, 2));
        // Formerly the simulator scenario's own `line_column`.
        assert_eq!(LineIndex::new("ab\ncé d").line_col(6), (2, 3));
        assert_eq!(LineIndex::new("").line_col(10), (1, 1));
    }

    /// A UTF-8 BOM (which the TOML parser skips) is not a column an editor shows.
    #[test]
    fn a_bom_is_not_counted_as_a_column() {
        let index = LineIndex::new("\u{feff}ab = 1\nc");
        assert_eq!(index.line_col(3), (1, 1));
        assert_eq!(index.line_col(8), (1, 6));
        assert_eq!(index.line_col(10), (2, 1));
        assert_eq!(index.line_col(1), (1, 1)); // inside the BOM
        assert_eq!(index.line_col(0), (1, 1));
    }

    #[test]
    fn forbidden_characters_are_exactly_controls_separators_and_bidi() {
        for c in (0..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert_eq!(forbidden_char(c), Some("a control character"), "{c:?}");
        }
        for c in [
            '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202b}', '\u{202c}', '\u{202d}',
            '\u{202e}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
        ] {
            assert!(
                forbidden_char(c).unwrap().contains("bidirectional"),
                "{c:?}"
            );
        }
        assert!(
            forbidden_char('\u{2028}')
                .unwrap()
                .contains("line separator")
        );
        assert!(
            forbidden_char('\u{2029}')
                .unwrap()
                .contains("paragraph separator")
        );
        // Neighbours and ordinary text stay allowed: emoji joiners, no-break space, CJK.
        for c in [
            'a', ' ', '\u{a0}', '\u{200d}', '\u{2027}', '\u{202f}', '\u{2065}', '主', 'é',
        ] {
            assert_eq!(forbidden_char(c), None, "{c:?}");
        }
        assert_eq!(text_problem("k", &"x".repeat(10), 10), None);
        let long = text_problem("k", &"x".repeat(11), 10).unwrap();
        assert!(
            long.contains("`k` is 11 characters long; write at most 10"),
            "{long}"
        );
    }
}
