//! The label sets of every family, and [`Bounded`]: label values from outside (error codes,
//! statuses) kept bounded in length, alphabet and number.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};

use crate::api::error::{KNOWN_CODES, is_known_code};
use crate::policy::Severity;

use super::{KNOWN_STATUSES, MAX_LABEL_CHARS, MAX_LABEL_VALUES};

/// Labels `{status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct StatusLabel {
    pub(super) status: String,
}

/// Labels `{from_status,to_status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ChangeLabels {
    pub(super) from_status: String,
    pub(super) to_status: String,
}

/// Labels `{action,outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct RequestLabels {
    pub(super) action: &'static str,
    pub(super) outcome: String,
}

/// Labels `{action}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ActionLabel {
    pub(super) action: &'static str,
}

/// Labels `{event}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct EventLabel {
    pub(super) event: &'static str,
}

/// Labels `{severity}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct SeverityLabel {
    pub(super) severity: &'static str,
}

/// Every severity, always exported (a zero is a value an alert can compare).
pub(super) const SEVERITIES: [Severity; 4] = [
    Severity::Info,
    Severity::Notice,
    Severity::Warning,
    Severity::Critical,
];

/// Labels `{version}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct VersionLabel {
    pub(super) version: &'static str,
}

/// Label `{account}` with several accounts; no label at all with one, so a single-account
/// daemon's series read exactly as they did before accounts existed.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct AccountLabel(pub(super) Option<Arc<str>>);

impl EncodeLabelSet for AccountLabel {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match &self.0 {
            Some(name) => ("account", name.as_ref()).encode(encoder.encode_label()),
            None => Ok(()),
        }
    }
}

/// A family's labels, preceded by the account's.
pub(super) type With<L> = (AccountLabel, L);

/// Label values from outside, bounded in length, alphabet and number.
///
/// Only values outside the build's vocabulary count against the bound: a known error code or
/// status always keeps its label, however many inventions came first, so an alert on
/// `RequestLimitExceeded` or `AuthFailure.*` still fires under a flood of unknown codes.
#[derive(Debug)]
pub(super) struct Bounded {
    pub(super) vocabulary: Vocabulary,
    pub(super) seen: Mutex<HashSet<String>>,
}

/// Which values a [`Bounded`] label knows, and where an unknown one goes past the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Vocabulary {
    /// Error codes: [`KNOWN_CODES`] keep their label; past the bound an unknown code of a
    /// known family becomes `<family>.other` (still matched by `AuthFailure.*`), any other
    /// `other`.
    Codes,
    /// Statuses: [`Status::KNOWN`] keep their label; past the bound, `other`.
    Statuses,
}

impl Vocabulary {
    pub(super) fn knows(self, value: &str) -> bool {
        match self {
            Vocabulary::Codes => is_known_code(value),
            Vocabulary::Statuses => KNOWN_STATUSES.iter().any(|s| s.as_str() == value),
        }
    }

    /// The label of a value met once the bound is reached. Bounded: one per family of the
    /// known codes, plus `other`.
    pub(super) fn overflow(self, clean: &str) -> String {
        if self == Vocabulary::Codes
            && let Some((family, _)) = clean.split_once('.')
            && KNOWN_CODES
                .iter()
                .any(|c| c.split('.').next() == Some(family))
        {
            return format!("{family}.other");
        }
        "other".to_owned()
    }
}

impl Bounded {
    pub(super) fn new(vocabulary: Vocabulary) -> Self {
        Bounded {
            vocabulary,
            seen: Mutex::default(),
        }
    }

    /// `value` as a label: a known value as it is; otherwise at most [`MAX_LABEL_CHARS`]
    /// characters from `[A-Za-z0-9._-]` (an error code or a status never needs more; anything
    /// else becomes `_`), and once [`MAX_LABEL_VALUES`] distinct unknown values were seen,
    /// the [`Vocabulary::overflow`] label.
    pub(super) fn label(&self, value: &str) -> String {
        if self.vocabulary.knows(value) {
            return value.to_owned();
        }
        let clean: String = value
            .chars()
            .take(MAX_LABEL_CHARS)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if seen.contains(&clean) {
            return clean;
        }
        if seen.len() >= MAX_LABEL_VALUES {
            return self.vocabulary.overflow(&clean);
        }
        seen.insert(clean.clone());
        clean
    }
}
