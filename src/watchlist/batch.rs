//! Where a large watchlist is split into batches of `[[agent]]` tables ([`BatchPlan`]), and
//! when it must not be.

use std::ops::Range;

/// Where to split a watchlist: the byte offsets where batches start.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct BatchPlan {
    /// Start of every batch; the first is 0, so the head (comments before the first header) is
    /// parsed with the first batch, and every other one is the start of an `[[agent]]` line.
    pub(super) starts: Vec<usize>,
    /// How many `[[agent]]` header lines the file has.
    pub(super) tables: usize,
}

impl BatchPlan {
    /// `None` unless splitting is both safe and useful: no multi-line string anywhere (a
    /// header-like line inside one is not a header), nothing but blank and comment lines before
    /// the first `[[agent]]` header (top-level keys such as `agent = []` interact with the
    /// tables), and more than one batch.
    pub(super) fn of(text: &str, batch_tables: usize) -> Option<BatchPlan> {
        if text.contains("\"\"\"") || text.contains("'''") {
            return None;
        }
        let batch_tables = batch_tables.max(1);
        let mut starts = vec![0];
        let mut tables = 0;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if is_agent_header(line) {
                if tables > 0 && tables % batch_tables == 0 {
                    starts.push(offset);
                }
                tables += 1;
            } else if tables == 0 && !is_blank_or_comment(line) {
                return None;
            }
            offset += line.len();
        }
        (starts.len() > 1).then_some(BatchPlan { starts, tables })
    }

    /// The byte ranges of the batches, in file order, covering the whole text.
    pub(super) fn batches(&self, len: usize) -> impl Iterator<Item = Range<usize>> + '_ {
        let ends = self.starts.iter().skip(1).copied().chain([len]);
        self.starts.iter().zip(ends).map(|(&start, end)| start..end)
    }
}

/// TOML whitespace.
pub(super) fn is_ws(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// The line without its line ending.
pub(super) fn line_body(line: &str) -> &str {
    let line = line.strip_suffix('\n').unwrap_or(line);
    line.strip_suffix('\r').unwrap_or(line)
}

/// `^[ \t]*\[\[[ \t]*agent[ \t]*\]\][ \t]*(#.*)?$`, the header of an `[[agent]]` table. (A
/// quoted `[["agent"]]` does not match: it stays inside its batch, which is still correct.)
pub(super) fn is_agent_header(line: &str) -> bool {
    let header = || {
        let rest = line_body(line)
            .trim_start_matches(is_ws)
            .strip_prefix("[[")?;
        let rest = rest.trim_start_matches(is_ws).strip_prefix("agent")?;
        let rest = rest.trim_start_matches(is_ws).strip_prefix("]]")?;
        let rest = rest.trim_start_matches(is_ws);
        Some(rest.is_empty() || rest.starts_with('#'))
    };
    header().unwrap_or(false)
}

pub(super) fn is_blank_or_comment(line: &str) -> bool {
    let rest = line_body(line).trim_start_matches(is_ws);
    rest.is_empty() || rest.starts_with('#')
}
