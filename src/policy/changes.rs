//! The changes between two evaluations of one agent: which findings cleared (and why), which
//! were raised. Findings are compared by their identity, not by every field:
//!
//! - `Unexpected`: (port, process). A reload that only moves a still-unexpected port to another
//!   rule or severity changes no state, so it emits nothing; the stored finding takes the new
//!   rule and severity (metrics follow at once, and the clear event names them).
//! - `Missing`: (rule, spec). Renaming a rule clears its findings (`allowed`: that rule no
//!   longer requires anything) and raises them under the new name.
//!
//! Both identities are a prefix of [`Finding`]'s derived order (the variant, then the fields in
//! declaration order), so a [`Findings`] set is sorted by identity and two sets are compared in
//! one merge walk, without allocating.

use std::cmp::Ordering;

use super::{Change, ClearReason, Finding, Findings};

/// What a finding is, whatever rule or severity it carries now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Identity<'a> {
    Unexpected(u16, &'a str),
    Missing(&'a str, &'a str),
}

fn identity(finding: &Finding) -> Identity<'_> {
    match finding {
        Finding::Unexpected { port, process, .. } => Identity::Unexpected(*port, process),
        Finding::Missing { rule, spec, .. } => Identity::Missing(rule, spec),
    }
}

/// The findings of `of` whose identity is in no finding of `other`, in `of`'s order. Both are
/// sorted by identity (see the module doc), so one walk over each does.
fn not_in<'a>(of: &'a Findings, other: &'a Findings) -> impl Iterator<Item = &'a Finding> {
    let mut others = other.0.iter().map(identity).peekable();
    of.0.iter().filter(move |finding| {
        let id = identity(finding);
        while let Some(next) = others.peek() {
            match next.cmp(&id) {
                Ordering::Less => {
                    others.next();
                }
                Ordering::Equal => return false,
                Ordering::Greater => return true,
            }
        }
        true
    })
}

/// See [`super::changes`].
pub(crate) fn changes<'a>(
    old: &'a Findings,
    new: &'a Findings,
    still_open: impl Fn(u16, &str) -> bool,
    still_required: impl Fn(&str, &str) -> bool,
) -> Vec<Change<'a>> {
    let mut out: Vec<Change<'a>> = not_in(old, new)
        .map(|finding| {
            let reason = match finding {
                Finding::Unexpected { port, process, .. } => {
                    if still_open(*port, process) {
                        ClearReason::Allowed
                    } else {
                        ClearReason::Closed
                    }
                }
                Finding::Missing { rule, spec, .. } => {
                    if still_required(rule, spec) {
                        ClearReason::Opened
                    } else {
                        ClearReason::Allowed
                    }
                }
            };
            Change::Cleared(finding, reason)
        })
        .collect();
    out.extend(not_in(new, old).map(Change::Raised));
    out
}
