//! The simulator's rate limit: N accepted requests per second per action, either as a strict
//! sliding 1-second window (the default: the tightest reading of "20 per second", so a client
//! that passes here passes any real window) or as a token bucket (a looser reading some
//! gateways use). Pure code over explicit instants, so tests need no clock.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const WINDOW: Duration = Duration::from_secs(1);

/// Which limiter the simulator applies to each action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterKind {
    /// At most `per_second` accepted requests in any 1-second window.
    SlidingWindow {
        /// Requests per second.
        per_second: u32,
    },
    /// A bucket of `burst` tokens refilled at `per_second`; starts full.
    TokenBucket {
        /// Refill rate, tokens per second.
        per_second: u32,
        /// Bucket size: the most requests accepted back to back.
        burst: u32,
    },
}

impl Default for LimiterKind {
    /// The documented API limit: 20 per second, strict sliding window.
    fn default() -> Self {
        LimiterKind::SlidingWindow { per_second: 20 }
    }
}

/// One action's limiter state.
#[derive(Debug)]
pub enum Limiter {
    /// See [`LimiterKind::SlidingWindow`].
    SlidingWindow(SlidingWindow),
    /// See [`LimiterKind::TokenBucket`].
    TokenBucket(TokenBucket),
}

impl Limiter {
    /// A fresh limiter of the given kind.
    pub fn new(kind: LimiterKind, now: Instant) -> Limiter {
        match kind {
            LimiterKind::SlidingWindow { per_second } => {
                Limiter::SlidingWindow(SlidingWindow::new(per_second))
            }
            LimiterKind::TokenBucket { per_second, burst } => {
                Limiter::TokenBucket(TokenBucket::new(per_second, burst, now))
            }
        }
    }

    /// Accepts (and counts) a request at `now`, or refuses it without counting it.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        match self {
            Limiter::SlidingWindow(w) => w.try_acquire(now),
            Limiter::TokenBucket(b) => b.try_acquire(now),
        }
    }
}

/// Strict sliding window: remembers the instants of the accepted requests of the last second.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: u32,
    accepted: VecDeque<Instant>,
}

impl SlidingWindow {
    /// At most `limit` per 1-second window.
    pub fn new(limit: u32) -> SlidingWindow {
        SlidingWindow {
            limit,
            accepted: VecDeque::with_capacity(limit as usize),
        }
    }

    /// A request at `now` is accepted when fewer than `limit` were accepted in `(now - 1s, now]`.
    /// Then every half-open window `[t, t + 1s)` holds at most `limit` accepted requests.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        while let Some(&first) = self.accepted.front() {
            // Instants never go backwards with a monotonic clock; saturating keeps an
            // out-of-order caller from panicking.
            if now.saturating_duration_since(first) >= WINDOW {
                self.accepted.pop_front();
            } else {
                break;
            }
        }
        if (self.accepted.len() as u64) < u64::from(self.limit) {
            self.accepted.push_back(now);
            true
        } else {
            false
        }
    }
}

/// Token bucket with fractional refill.
#[derive(Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Full bucket of `burst` (at least 1) tokens, refilled at `per_second`.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> TokenBucket {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        // A tiny epsilon so that float rounding of exact refills (e.g. 50 ms at 20/s) does not
        // refuse a request that is due.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Tracks the most accepted requests seen in any 1-second window (for [`super::SimStats`]),
/// independent of the limiter kind.
#[derive(Debug, Default)]
pub struct WindowMeter {
    recent: VecDeque<Instant>,
    max: u32,
}

impl WindowMeter {
    /// Records an accepted request; returns the running maximum.
    pub fn record(&mut self, now: Instant) -> u32 {
        while let Some(&first) = self.recent.front() {
            if now.saturating_duration_since(first) >= WINDOW {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.max = self.max.max(self.recent.len() as u32);
        self.max
    }
}

/// What one action saw: the counts behind [`super::SimStats::per_action`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActionStats {
    /// Requests that named this action with a known SecretId, counted on arrival: before the
    /// signature check and the limiter, so a client's own pacing is measured, not the
    /// simulator's.
    pub arrived: u64,
    /// Requests the limiter accepted.
    pub accepted: u64,
    /// Requests the limiter refused (`RequestLimitExceeded`).
    pub throttled: u64,
    /// The most arrivals in any 1-second window: a client that keeps to the limit keeps this
    /// at or under it, whatever the limiter does.
    pub max_arrivals_in_window: u32,
    /// The most accepted requests in any 1-second window (never above the limit).
    pub max_accepted_in_window: u32,
}

/// One action's limiter, with meters of its arrivals and acceptances.
#[derive(Debug)]
pub struct ActionWindow {
    limiter: Limiter,
    arrivals: WindowMeter,
    accepted: WindowMeter,
    stats: ActionStats,
}

impl ActionWindow {
    /// A fresh window of the given kind.
    pub fn new(kind: LimiterKind, now: Instant) -> ActionWindow {
        ActionWindow {
            limiter: Limiter::new(kind, now),
            arrivals: WindowMeter::default(),
            accepted: WindowMeter::default(),
            stats: ActionStats::default(),
        }
    }

    /// Counts a request that arrived at `now`.
    pub fn arrive(&mut self, now: Instant) {
        self.stats.arrived = self.stats.arrived.saturating_add(1);
        self.stats.max_arrivals_in_window = self.arrivals.record(now);
    }

    /// Asks the limiter; counts the request as accepted or throttled.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        if self.limiter.try_acquire(now) {
            self.stats.accepted = self.stats.accepted.saturating_add(1);
            self.stats.max_accepted_in_window = self.accepted.record(now);
            true
        } else {
            self.stats.throttled = self.stats.throttled.saturating_add(1);
            false
        }
    }

    /// The counts so far.
    pub fn stats(&self) -> &ActionStats {
        &self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The most instants in any half-open 1-second window.
    fn max_in_any_window(accepted: &[Instant]) -> usize {
        accepted
            .iter()
            .map(|&start| {
                accepted
                    .iter()
                    .filter(|&&t| t >= start && t < start + WINDOW)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn sliding_window_never_admits_more_than_n_in_any_second() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(20);
        let mut accepted = Vec::new();
        // Offered load: one request every 7 ms for 5 s (~143/s), plus a burst at the start.
        let mut offers: Vec<Instant> = (0..50).map(|_| t0).collect();
        offers.extend((0..715).map(|i| t0 + ms(7 * i)));
        for t in offers {
            if w.try_acquire(t) {
                accepted.push(t);
            }
        }
        assert_eq!(max_in_any_window(&accepted), 20);
        // And it does use the quota: 20 in each of the 5 seconds the offers span, each second's
        // 20 starting as soon as the previous second's slots free.
        assert_eq!(accepted.len(), 100);
        let per_second: Vec<usize> = (0..5)
            .map(|s| {
                accepted
                    .iter()
                    .filter(|&&t| t >= t0 + ms(1000 * s) && t < t0 + ms(1000 * (s + 1)))
                    .count()
            })
            .collect();
        assert_eq!(per_second, [20; 5]);
        assert_eq!(accepted[20], t0 + ms(1001));
    }

    #[test]
    fn the_window_oracle_counts_half_open_seconds() {
        let t0 = Instant::now();
        assert_eq!(max_in_any_window(&[]), 0);
        // 1 s apart: never in one half-open window.
        assert_eq!(max_in_any_window(&[t0, t0 + ms(1000), t0 + ms(2000)]), 1);
        // 999 ms apart: together.
        assert_eq!(max_in_any_window(&[t0, t0 + ms(999)]), 2);
        // The densest window need not start at the first instant, and order does not matter.
        let times = [
            t0 + ms(1500),
            t0,
            t0 + ms(900),
            t0 + ms(1200),
            t0 + ms(1899),
        ];
        assert_eq!(max_in_any_window(&times), 4);
    }

    #[test]
    fn sliding_window_frees_a_slot_exactly_one_second_later() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(2);
        assert!(w.try_acquire(t0));
        assert!(w.try_acquire(t0 + ms(10)));
        assert!(!w.try_acquire(t0 + ms(999)));
        assert!(w.try_acquire(t0 + ms(1000)));
        assert!(!w.try_acquire(t0 + ms(1009)));
        assert!(w.try_acquire(t0 + ms(1010)));
    }

    #[test]
    fn refused_requests_do_not_count() {
        let t0 = Instant::now();
        let mut w = SlidingWindow::new(1);
        assert!(w.try_acquire(t0));
        for i in 1..100 {
            assert!(!w.try_acquire(t0 + ms(i * 5)));
        }
        assert!(w.try_acquire(t0 + ms(1000)));
    }

    #[test]
    fn token_bucket_allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(20, 5, t0);
        let first: usize = (0..10).filter(|_| b.try_acquire(t0)).count();
        assert_eq!(first, 5);
        // 50 ms later one token has come back, not two.
        assert!(b.try_acquire(t0 + ms(50)));
        assert!(!b.try_acquire(t0 + ms(50)));
        // Over 10 s of saturating offers: burst + rate * time.
        let mut n = 0;
        for i in 1..=10_000u64 {
            if b.try_acquire(t0 + ms(50 + i)) {
                n += 1;
            }
        }
        assert_eq!(n, 200);
        // Idle time never fills beyond the burst.
        let later = t0 + Duration::from_secs(100);
        assert_eq!((0..10).filter(|_| b.try_acquire(later)).count(), 5);
    }

    #[test]
    fn token_bucket_burst_one_spaces_requests() {
        let t0 = Instant::now();
        let mut l = Limiter::new(
            LimiterKind::TokenBucket {
                per_second: 10,
                burst: 1,
            },
            t0,
        );
        assert!(l.try_acquire(t0));
        assert!(!l.try_acquire(t0 + ms(99)));
        assert!(l.try_acquire(t0 + ms(100)));
    }

    #[test]
    fn window_meter_reports_the_densest_second() {
        let t0 = Instant::now();
        let mut m = WindowMeter::default();
        for i in 0..5 {
            m.record(t0 + ms(i * 100));
        }
        assert_eq!(m.record(t0 + ms(1500)), 5);
        for i in 0..7 {
            m.record(t0 + ms(2600 + i));
        }
        assert_eq!(m.record(t0 + ms(5000)), 7);
    }

    #[test]
    fn action_window_counts_arrivals_apart_from_acceptances() {
        let t0 = Instant::now();
        let mut w = ActionWindow::new(LimiterKind::SlidingWindow { per_second: 2 }, t0);
        let mut answers = Vec::new();
        for i in 0..5 {
            let t = t0 + ms(i * 100);
            w.arrive(t);
            answers.push(w.try_acquire(t));
        }
        assert_eq!(answers, [true, true, false, false, false]);
        // Arrivals that never reach the limiter (e.g. a bad signature) count too.
        w.arrive(t0 + ms(600));
        assert_eq!(
            w.stats(),
            &ActionStats {
                arrived: 6,
                accepted: 2,
                throttled: 3,
                max_arrivals_in_window: 6,
                max_accepted_in_window: 2,
            }
        );
    }
}
