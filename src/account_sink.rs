//! Which account an event belongs to, when the daemon runs several (`[[account]]`).
//!
//! Each account's engine, discovery and renewer emit through an [`AccountSink`] wrapping the
//! shared sink. It marks the account for the duration of one `emit` (a thread-local, set and
//! restored around the inner call), and the shared sinks read it with [`current_account`]:
//! [`crate::events::TracingSink`] adds the `account` field (journald `ACCOUNT`), and the
//! metrics registry the `account` label. Why not a field on every [`Event`] variant: the
//! engine emits dozens of them and does not know which account it serves; the one place
//! that knows is the sink it was given, so the engine stays unchanged. With one account no
//! `AccountSink` is used, and the output stays exactly as before.

use std::cell::RefCell;
use std::sync::Arc;

use crate::events::{Event, EventSink};

thread_local! {
    /// The account of the event being emitted on this thread, if any.
    static CURRENT: RefCell<Option<Arc<str>>> = const { RefCell::new(None) };
}

/// The account of the event now being emitted on this thread (`None` with one account).
pub fn current_account() -> Option<Arc<str>> {
    CURRENT.with(|c| c.borrow().clone())
}

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

/// Restores the previous mark even if the inner sink panics.
struct Restore(Option<Arc<str>>);

impl Drop for Restore {
    fn drop(&mut self) {
        let previous = self.0.take();
        CURRENT.with(|c| *c.borrow_mut() = previous);
    }
}

impl EventSink for AccountSink {
    fn emit(&self, event: &Event) {
        let previous = CURRENT.with(|c| c.borrow_mut().replace(self.account.clone()));
        let _restore = Restore(previous);
        self.inner.emit(event);
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
            self.0.lock().unwrap().push(current_account());
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
        assert_eq!(current_account(), None);
    }
}
