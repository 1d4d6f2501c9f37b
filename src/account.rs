//! What an account is beyond its config (`[[account]]`): the rule for its name, and which
//! account an event belongs to when the daemon runs several.
//!
//! Each account's engine, discovery and renewer emit through an [`AccountSink`] wrapping the
//! shared sink. It marks the account for the duration of one `emit`
//! ([`crate::events::emitted_as`]), and [`crate::events::TracingSink`] reads the mark to add
//! the `account` field (journald `ACCOUNT`). The metrics registry labels by account through
//! its per-account handles instead (`crate::metrics::Metrics::for_accounts`). Why not a field on every [`Event`] variant: the
//! engine emits dozens of them and does not know which account it serves; the one place
//! that knows is the sink it was given, so the engine stays unchanged. With one account no
//! `AccountSink` is used, and the output stays exactly as before.

use std::sync::Arc;

use crate::events::{Event, EventSink};

pub use crate::account_name::{MAX_ACCOUNT_NAME, valid_account_name};

/// Emits into `inner` with the account marked.
pub struct AccountSink {
    inner: Arc<dyn EventSink>,
    account: Arc<str>,
}

impl AccountSink {
    /// `inner`'s events, marked as `account`'s.
    pub fn new(inner: Arc<dyn EventSink>, account: &str) -> Self {
        AccountSink {
            inner,
            account: Arc::from(account),
        }
    }
}

impl EventSink for AccountSink {
    fn emit(&self, event: &Event) {
        crate::events::emitted_as(&self.account, || self.inner.emit(event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the account marked while each event is emitted.
    #[derive(Default)]
    struct Marks(std::sync::Mutex<Vec<Option<Arc<str>>>>);

    impl EventSink for Marks {
        fn emit(&self, _event: &Event) {
            self.0
                .lock()
                .unwrap()
                .push(crate::events::current_account());
        }
    }

    #[test]
    fn the_account_is_marked_only_during_its_emit() {
        let marks = Arc::new(Marks::default());
        let prod = AccountSink::new(marks.clone(), "prod");
        let event = Event::DaemonStarted {
            version: "1".into(),
            agents: 1,
        };
        prod.emit(&event);
        marks.emit(&event);
        AccountSink::new(Arc::new(AccountSink::new(marks.clone(), "inner")), "outer").emit(&event);
        let seen: Vec<Option<String>> = marks
            .0
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.as_deref().map(str::to_owned))
            .collect();
        assert_eq!(
            seen,
            [Some("prod".into()), None, Some("inner".into())],
            "the innermost account wins, and nothing leaks past an emit"
        );
        assert_eq!(crate::events::current_account(), None);
    }
}
