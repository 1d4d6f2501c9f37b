//! The fence: until when this process may send. Pure but for tokio's clock.
//!
//! The keep-alive moves it after each answered lease renewal ([`Fence::renewed`]), the API
//! client checks it before every request ([`Fence::may_send`]). The rule ([`Fence::deadline`]):
//! a renewal *sent* at instant `s` and answered with TTL `t` lets the leader send until
//! `s + t − margin`, margin = max(t/5, 1 s). etcd renews the lease when the request arrives,
//! at or after `s`, so it cannot expire the lease before `s + t`: a leader that stops at
//! `s + t − margin` never overlaps a successor, whatever happens to its later renewals. The
//! margin covers requests already in flight when the fence closes and timer lateness. The
//! instant of the *answer* would be wrong: a slow answer says nothing about when etcd renewed.
//!
//! The fence only moves forward while a term lasts: an answer to an older renewal that arrives
//! late cannot pull it back, and [`Fence::close`] (deposed, resigned) is final, so an answer
//! racing the close cannot reopen it. A new term gets a new fence.
//!
//! Stored as one atomic (nanoseconds since the fence's base instant, offset by 2 so that two
//! values are left for the states that are not an instant), so checks cost one load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Closed for good ([`Fence::close`]): nothing reopens it.
const RETIRED: u64 = 0;
/// Closed until a first renewal opens it ([`Fence::closed`]).
const CLOSED: u64 = 1;
/// Stored value of an instant: its nanoseconds since the base, plus this.
const OFFSET: u64 = 2;
/// Always open (no HA); never set by a renewal (those saturate one below).
const ALWAYS: u64 = u64::MAX;
/// The least margin: etcd's timers and ours are no finer than this, and a request already on
/// its way when the fence closes needs time to be answered.
const MIN_MARGIN: Duration = Duration::from_secs(1);

/// Shared between the keep-alive (which moves it) and the API client (which checks it before
/// every request). Cloning shares it.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The instant the stored nanoseconds count from.
    base: Instant,
    /// [`RETIRED`], [`CLOSED`], [`ALWAYS`] or an instant (`OFFSET` + nanoseconds since `base`).
    valid_until: AtomicU64,
}

impl Fence {
    /// A fence that is always open (no HA).
    pub fn always_open() -> Self {
        Fence::with(ALWAYS)
    }

    /// A closed fence (a leader before its first renewal, a standby).
    pub fn closed() -> Self {
        Fence::with(CLOSED)
    }

    fn with(value: u64) -> Self {
        Fence {
            inner: Arc::new(Inner {
                base: Instant::now(),
                valid_until: AtomicU64::new(value),
            }),
        }
    }

    /// May a request be sent now?
    pub fn may_send(&self) -> bool {
        let stored = self.inner.valid_until.load(Ordering::Acquire);
        match stored {
            RETIRED | CLOSED => false,
            ALWAYS => true,
            until => self.encode(Instant::now()) < until,
        }
    }

    /// Until when requests may be sent: `None` when closed, `Some(None)` when always open.
    pub fn valid_until(&self) -> Option<Option<Instant>> {
        match self.inner.valid_until.load(Ordering::Acquire) {
            RETIRED | CLOSED => None,
            ALWAYS => Some(None),
            until => {
                let nanos = until - OFFSET;
                Some(self.inner.base.checked_add(Duration::from_nanos(nanos)))
            }
        }
    }

    /// The rule: after a renewal sent at `sent` and answered with TTL `ttl`, the leader may
    /// send until `sent + ttl − max(ttl/5, 1 s)`. `None` when that leaves no time (a TTL of
    /// 1 s or less, TTL 0 = the lease is gone) or overflows.
    pub fn deadline(sent: Instant, ttl: Duration) -> Option<Instant> {
        let margin = (ttl / 5).max(MIN_MARGIN);
        let allowed = ttl.checked_sub(margin).filter(|d| !d.is_zero())?;
        sent.checked_add(allowed)
    }

    /// A renewal sent at `sent` was answered with `ttl`: opens the fence until
    /// [`Fence::deadline`], unless it is already open longer (a late answer to an older
    /// renewal) or closed for good. Returns whether the fence moved.
    pub fn renewed(&self, sent: Instant, ttl: Duration) -> bool {
        match Fence::deadline(sent, ttl) {
            Some(until) => self.open_until(until),
            None => false,
        }
    }

    /// Opens the fence until `until`; never moves it backwards, never reopens a fence closed
    /// with [`Fence::close`], never touches an always-open one. Returns whether it moved.
    pub fn open_until(&self, until: Instant) -> bool {
        let new = self.encode(until);
        self.inner
            .valid_until
            .fetch_update(
                Ordering::AcqRel,
                Ordering::Acquire,
                |current| match current {
                    RETIRED | ALWAYS => None,
                    current if new <= current => None,
                    _ => Some(new),
                },
            )
            .is_ok()
    }

    /// Closes the fence for good (deposed, resigning): from now on [`Fence::may_send`] is
    /// false in every clone.
    pub fn close(&self) {
        self.inner.valid_until.store(RETIRED, Ordering::Release);
    }

    /// `instant` as stored: [`OFFSET`] + nanoseconds since the base (0 before it), saturating
    /// one below [`ALWAYS`].
    fn encode(&self, instant: Instant) -> u64 {
        let nanos = instant
            .saturating_duration_since(self.inner.base)
            .as_nanos();
        u64::try_from(nanos)
            .ok()
            .and_then(|n| n.checked_add(OFFSET))
            .map_or(ALWAYS - 1, |n| n.min(ALWAYS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn the_margin_is_a_fifth_of_the_ttl_and_at_least_a_second() {
        let s = Instant::now();
        // 10 s: margin 2 s.
        assert_eq!(Fence::deadline(s, 10 * S), Some(s + 8 * S));
        // 3 s: a fifth is 0.6 s, so 1 s.
        assert_eq!(Fence::deadline(s, 3 * S), Some(s + 2 * S));
        // 5 s: exactly 1 s either way.
        assert_eq!(Fence::deadline(s, 5 * S), Some(s + 4 * S));
        // 300 s: 60 s.
        assert_eq!(Fence::deadline(s, 300 * S), Some(s + 240 * S));
        // Nothing left, or the lease is gone.
        assert_eq!(Fence::deadline(s, S), None);
        assert_eq!(Fence::deadline(s, Duration::from_millis(800)), None);
        assert_eq!(Fence::deadline(s, Duration::ZERO), None);
        // Never beyond what etcd guarantees (sent + ttl), for any TTL.
        for secs in 1..=600 {
            let ttl = Duration::from_millis(secs * 500);
            if let Some(until) = Fence::deadline(s, ttl) {
                assert!(until < s + ttl, "{ttl:?}");
                assert!(until + S <= s + ttl, "{ttl:?}: the margin is at least 1 s");
            }
        }
    }

    #[test]
    fn a_deadline_that_overflows_is_none() {
        let s = Instant::now();
        assert_eq!(Fence::deadline(s, Duration::MAX), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_fence_opens_on_a_renewal_and_closes_when_its_time_passes() {
        let fence = Fence::closed();
        assert!(!fence.may_send());
        assert_eq!(fence.valid_until(), None);
        let sent = Instant::now();
        assert!(fence.renewed(sent, 3 * S));
        assert!(fence.may_send());
        assert_eq!(fence.valid_until(), Some(Some(sent + 2 * S)));
        tokio::time::advance(2 * S - Duration::from_millis(1)).await;
        assert!(fence.may_send(), "1 ms before the deadline");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!fence.may_send(), "at the deadline");
        // Clones share it.
        let clone = fence.clone();
        assert!(clone.renewed(Instant::now(), 10 * S));
        assert!(fence.may_send());
    }

    #[tokio::test(start_paused = true)]
    async fn a_late_answer_to_an_older_renewal_never_moves_it_back() {
        let fence = Fence::closed();
        let first = Instant::now();
        tokio::time::advance(S).await;
        let second = Instant::now();
        assert!(fence.renewed(second, 10 * S));
        // The first renewal's answer arrives after the second's.
        assert!(!fence.renewed(first, 10 * S));
        assert_eq!(fence.valid_until(), Some(Some(second + 8 * S)));
        // A shorter TTL later does not shorten it either (never backwards).
        assert!(!fence.renewed(second, 5 * S));
        assert_eq!(fence.valid_until(), Some(Some(second + 8 * S)));
        // A later renewal moves it on.
        tokio::time::advance(S).await;
        let third = Instant::now();
        assert!(fence.renewed(third, 10 * S));
        assert_eq!(fence.valid_until(), Some(Some(third + 8 * S)));
    }

    #[tokio::test(start_paused = true)]
    async fn close_is_final_and_a_renewal_racing_it_cannot_reopen() {
        let fence = Fence::closed();
        assert!(fence.renewed(Instant::now(), 10 * S));
        fence.close();
        assert!(!fence.may_send());
        assert!(!fence.renewed(Instant::now(), 10 * S));
        assert!(!fence.open_until(Instant::now() + 100 * S));
        assert!(!fence.may_send());
        assert_eq!(fence.valid_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn ttl_zero_or_too_short_leaves_it_as_it_was() {
        let fence = Fence::closed();
        assert!(!fence.renewed(Instant::now(), Duration::ZERO));
        assert!(!fence.renewed(Instant::now(), S));
        assert!(!fence.may_send());
    }

    #[tokio::test(start_paused = true)]
    async fn always_open_stays_open_until_closed() {
        let fence = Fence::always_open();
        assert!(fence.may_send());
        assert_eq!(fence.valid_until(), Some(None));
        tokio::time::advance(1_000_000 * S).await;
        assert!(fence.may_send());
        // A renewal does not turn it into a timed fence.
        assert!(!fence.renewed(Instant::now(), 3 * S));
        tokio::time::advance(10 * S).await;
        assert!(fence.may_send());
        fence.close();
        assert!(!fence.may_send());
    }

    #[tokio::test(start_paused = true)]
    async fn instants_before_the_base_and_far_ahead_are_clamped() {
        let early = Instant::now();
        tokio::time::advance(10 * S).await;
        let fence = Fence::closed();
        // Opened until before the fence existed: still closed.
        fence.open_until(early);
        assert!(!fence.may_send());
        // Far ahead: open, but not "always".
        let far = Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600);
        assert!(fence.open_until(far));
        assert!(fence.may_send());
        assert!(matches!(fence.valid_until(), Some(Some(_))));
    }
}
