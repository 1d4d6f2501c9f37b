//! The send-rate limiter: one `governor` GCRA limiter, burst 1, on tokio's clock.
//!
//! Why burst 1: governor's `Quota::per_second(n)` has burst `n` and admits `2n - 1` requests in
//! the first second; with burst 1 requests are simply spaced, and no 1-second window can ever
//! hold more than the rate.
//!
//! Why a small margin ([`PACING_MARGIN`]): the server counts arrivals, not sends. Requests
//! spaced exactly `1/rate` apart reach it with a few milliseconds of jitter, and a strict
//! sliding window then sees `rate + 1` in some second. Spacing them 0.75 % wider leaves
//! ~7.5 ms of slack per window at 20/s and still uses 99.25 % of the quota.
//!
//! Why tokio's clock: so that tests with paused tokio time are deterministic. Waiting uses
//! `tokio::time::sleep_until`, never governor's own futures.
//!
//! Rate changes (throttling feedback) rebuild the limiter but keep the spacing since the last
//! grant: a rate change never hands out a fresh burst.

use std::ops::Add;
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::nanos::Nanos;
use governor::{Quota, RateLimiter, state::InMemoryState, state::NotKeyed};
use tokio::time::Instant;

/// Spacing is this much wider than `1 / rate`.
pub const PACING_MARGIN: f64 = 0.0075;

/// An instant on tokio's clock, as nanoseconds since the pacer was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokioInstant(u64);

impl Add<Nanos> for TokioInstant {
    type Output = Self;
    fn add(self, other: Nanos) -> Self {
        TokioInstant(self.0.saturating_add(other.as_u64()))
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        Nanos::from(self.0.saturating_sub(earlier.0))
    }
    fn saturating_sub(&self, duration: Nanos) -> Self {
        TokioInstant(self.0.saturating_sub(duration.as_u64()))
    }
}

/// governor clock reading `tokio::time::Instant` (pausable in tests).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = TokioInstant;
    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now().duration_since(self.origin).as_nanos() as u64)
    }
}

type Limiter = RateLimiter<
    NotKeyed,
    InMemoryState,
    TokioClock,
    governor::middleware::NoOpMiddleware<TokioInstant>,
>;

/// Hands out permission to send, one request at a time, at most `rate` per second.
pub struct Pacer {
    clock: TokioClock,
    limiter: Limiter,
    rate: u32,
    period: Duration,
    last_grant: Option<Instant>,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("rate", &self.rate).finish()
    }
}

/// Spacing between two sends at `rate` per second, margin included.
pub fn period(rate: u32) -> Duration {
    Duration::from_secs(1)
        .div_f64(f64::from(rate.max(1)))
        .mul_f64(1.0 + PACING_MARGIN)
}

fn limiter(clock: TokioClock, rate: u32) -> Limiter {
    let quota = Quota::with_period(period(rate))
        .expect("period is never zero")
        .allow_burst(std::num::NonZeroU32::MIN);
    RateLimiter::direct_with_clock(quota, clock)
}

impl Pacer {
    /// A pacer for `rate` requests per second (at least 1).
    pub fn new(rate: u32) -> Self {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let rate = rate.max(1);
        Pacer {
            clock,
            limiter: limiter(clock, rate),
            rate,
            period: period(rate),
            last_grant: None,
        }
    }

    /// The rate in force.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// Changes the rate. The next grant still waits one new period after the last one.
    pub fn set_rate(&mut self, rate: u32) {
        let rate = rate.max(1);
        if rate != self.rate {
            self.rate = rate;
            self.period = period(rate);
            self.limiter = limiter(self.clock, rate);
        }
    }

    /// Takes one permit if one is available now; otherwise says when to ask again.
    pub fn try_acquire(&mut self) -> Result<(), Instant> {
        let now = Instant::now();
        if let Some(last) = self.last_grant
            && now < last + self.period
        {
            return Err(last + self.period);
        }
        match self.limiter.check() {
            Ok(()) => {
                self.last_grant = Some(now);
                Ok(())
            }
            Err(not_until) => Err(now + not_until.wait_time_from(self.clock.now())),
        }
    }

    /// Waits for and takes one permit.
    pub async fn acquire(&mut self) {
        while let Err(at) = self.try_acquire() {
            tokio::time::sleep_until(at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants over `secs` seconds of paused time with constant demand.
    async fn grants(p: &mut Pacer, secs: u64) -> Vec<Instant> {
        let end = Instant::now() + Duration::from_secs(secs);
        let mut out = Vec::new();
        while Instant::now() < end {
            p.acquire().await;
            out.push(Instant::now());
        }
        out
    }

    fn max_in_any_window(times: &[Instant]) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..times.len() {
            while times[hi].duration_since(times[lo]) >= Duration::from_secs(1) {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[tokio::test(start_paused = true)]
    async fn never_more_than_the_rate_in_any_window_and_no_first_second_burst() {
        let mut p = Pacer::new(20);
        let t = grants(&mut p, 10).await;
        assert_eq!(max_in_any_window(&t), 20);
        let first_second = t
            .iter()
            .filter(|x| x.duration_since(t[0]) < Duration::from_secs(1))
            .count();
        assert_eq!(first_second, 20);
        let rate = (t.len() - 1) as f64 / t.last().unwrap().duration_since(t[0]).as_secs_f64();
        assert!((19.8..=20.0).contains(&rate), "rate {rate}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_changes_never_grant_a_burst() {
        let mut p = Pacer::new(20);
        let _ = grants(&mut p, 2).await;
        p.set_rate(10);
        let t = grants(&mut p, 3).await;
        assert!(max_in_any_window(&t) <= 10);
        p.set_rate(20);
        let before = Instant::now();
        p.acquire().await;
        p.acquire().await;
        // Two grants after raising the rate are still one full new period apart.
        assert!(Instant::now().duration_since(before) >= period(20));
    }
}
