//! What this run has seen of one agent's polls ([`Progress`]), and the 16-byte form the
//! table keeps it in ([`StoredProgress`]).

use tokio::time::Instant;

/// What this run has seen of one agent's polls: the part of its record that
/// [`super::super::decide::decide`] reads and rewrites (stored as [`StoredProgress`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// Failed polls in a row.
    pub failures: u32,
    /// When the last `poll_failed` was emitted (they are throttled per agent).
    pub last_failed_event: Option<Instant>,
    /// Status changes seen in this run.
    pub transitions: u32,
    /// The error of the last poll, when it failed (for the report).
    pub last_error: Option<String>,
    /// RequestId of the last answer (kept in `once` mode only: the daemon finds it in the
    /// agent's known status).
    pub request_id: Option<String>,
    /// Answered at least once in this run (`once` mode counts them).
    pub polled_once: bool,
    /// `once`: no more polls for this agent (a status, or a final failure).
    pub done_once: bool,
}

/// [`Progress`] as the table keeps it, in 16 bytes: the fields only failing agents (and
/// `once`) use live in a box, and `once`'s two flags in the top bits of `transitions`
/// (which saturates below them).
#[derive(Debug, Default)]
pub(crate) struct StoredProgress {
    pub(super) failures: u32,
    pub(super) transitions: u32,
    pub(super) rare: Option<Box<Rare>>,
}

pub(super) const POLLED_ONCE: u32 = 1 << 31;
pub(super) const DONE_ONCE: u32 = 1 << 30;
pub(super) const TRANSITIONS: u32 = DONE_ONCE - 1;

#[derive(Debug)]
pub(super) struct Rare {
    pub(super) last_failed_event: Option<Instant>,
    pub(super) last_error: Option<String>,
    pub(super) request_id: Option<String>,
}

impl From<Progress> for StoredProgress {
    fn from(p: Progress) -> Self {
        let rare =
            (p.last_failed_event.is_some() || p.last_error.is_some() || p.request_id.is_some())
                .then(|| {
                    Box::new(Rare {
                        last_failed_event: p.last_failed_event,
                        last_error: p.last_error,
                        request_id: p.request_id,
                    })
                });
        let flags =
            if p.polled_once { POLLED_ONCE } else { 0 } | if p.done_once { DONE_ONCE } else { 0 };
        StoredProgress {
            failures: p.failures,
            transitions: p.transitions.min(TRANSITIONS) | flags,
            rare,
        }
    }
}

impl From<StoredProgress> for Progress {
    fn from(s: StoredProgress) -> Self {
        let (last_failed_event, last_error, request_id) = match s.rare {
            Some(r) => (r.last_failed_event, r.last_error, r.request_id),
            None => (None, None, None),
        };
        Progress {
            failures: s.failures,
            last_failed_event,
            transitions: s.transitions & TRANSITIONS,
            last_error,
            request_id,
            polled_once: s.transitions & POLLED_ONCE != 0,
            done_once: s.transitions & DONE_ONCE != 0,
        }
    }
}

impl StoredProgress {
    /// Status changes seen in this run.
    pub fn transitions(&self) -> u32 {
        self.transitions & TRANSITIONS
    }

    /// Answered at least once in this run.
    pub fn polled_once(&self) -> bool {
        self.transitions & POLLED_ONCE != 0
    }

    /// `once`: no more polls for this agent.
    pub fn done_once(&self) -> bool {
        self.transitions & DONE_ONCE != 0
    }

    /// The error of the last poll, when it failed.
    pub fn last_error(&self) -> Option<&str> {
        self.rare.as_ref()?.last_error.as_deref()
    }

    /// `once`: RequestId of the last answer.
    pub fn request_id(&self) -> Option<&str> {
        self.rare.as_ref()?.request_id.as_deref()
    }
}
