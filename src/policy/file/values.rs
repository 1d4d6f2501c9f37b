//! The small typed readers of toml values, each recording its problem where the value is
//! wrong: a problem at a span, an unknown key, a wrong type, a string, a bounded list, a glob.

use std::ops::Range;

use toml::Spanned;
use toml::de::DeValue;

use super::{MAX_LIST_ENTRIES, Reader, Refused, Value};
use crate::policy::spec::{MAX_GLOB_CHARS, glob_problem};
use crate::problems::{shown, text_problem};

impl Reader<'_> {
    /// Records a problem at `span`.
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) -> Refused {
        self.problems.at(span, message);
        Refused
    }

    pub(super) fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<'_, str>>,
        place: &str,
        known: &[&str],
    ) {
        let known = known
            .iter()
            .map(|k| format!("`{k}`"))
            .collect::<Vec<_>>()
            .join(", ");
        self.at(
            key.span(),
            format!(
                "unknown key {} {place}; the keys here are {known} (config/policy.example.toml \
                 shows each)",
                shown(key.get_ref())
            ),
        );
    }

    pub(super) fn wrong_type(&mut self, value: &Value<'_>, key: &str, wanted: &str) -> Refused {
        self.at(
            value.span(),
            format!(
                "`{key}` must be {wanted}, not a {}",
                value.get_ref().type_str()
            ),
        )
    }

    pub(super) fn string<'v>(
        &mut self,
        value: &'v Value<'_>,
        key: &str,
        wanted: &str,
    ) -> Result<&'v str, Refused> {
        match value.get_ref() {
            DeValue::String(text) => Ok(text.as_ref()),
            _ => Err(self.wrong_type(value, key, wanted)),
        }
    }

    /// The items of an array, refused when empty (`empty` says why that is a mistake) or longer
    /// than [`MAX_LIST_ENTRIES`].
    pub(super) fn list<'v, 'i>(
        &mut self,
        value: &'v Value<'i>,
        key: &str,
        wanted: &str,
        empty: &str,
    ) -> Result<&'v [Value<'i>], Refused> {
        let DeValue::Array(items) = value.get_ref() else {
            return Err(self.wrong_type(value, key, wanted));
        };
        if items.is_empty() {
            return Err(self.at(value.span(), format!("`{key}` is empty: {empty}")));
        }
        if items.len() > MAX_LIST_ENTRIES {
            return Err(self.at(
                value.span(),
                format!(
                    "`{key}` has {} entries; a list may have at most {MAX_LIST_ENTRIES} (select \
                     hosts by tag or name glob instead of listing them, or use port ranges)",
                    items.len()
                ),
            ));
        }
        Ok(items)
    }
    /// A glob's text checked: length, white space around it, forbidden characters.
    pub(super) fn glob<'s>(
        &mut self,
        text: &'s str,
        span: Range<usize>,
        what: &str,
    ) -> Result<&'s str, Refused> {
        // Forbidden characters first: they are the worse news (and U+0085 is white space too).
        if let Some(message) = text_problem(what, text, MAX_GLOB_CHARS) {
            return Err(self.at(span, message));
        }
        if let Some(message) = glob_problem(what, text) {
            return Err(self.at(span, message));
        }
        Ok(text)
    }
}
