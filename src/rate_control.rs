//! Throttling feedback: what send rate to use after the API says `RequestLimitExceeded*`.
//! Pure: instants in, rates out.
//!
//! Another tool may share the account's quota, so the rate that works can be far below the
//! configured one, and it changes. The controller:
//! - on a throttling answer halves the rate (floor 1/s) and remembers one less than the rate
//!   that was throttled as the *ceiling* that seems to work; answers that arrive within a
//!   second of a cut were sent before it and do not cut again;
//! - after a cut, pauses sending for [`COOL_DOWN`] so the server's window empties before the
//!   lower rate starts (otherwise the lower rate is throttled by the higher one's leftovers);
//! - climbs back one request/s per second up to the ceiling, then probes above it one
//!   request/s every [`PROBE_EVERY`] up to the configured rate, so quota freed by the other
//!   tool is taken back gradually, never with a burst.

use std::time::Duration;

use tokio::time::Instant;

/// Cuts closer together than this come from the same episode.
pub const SAME_EPISODE: Duration = Duration::from_secs(1);
/// Below the ceiling the rate rises by one this often.
pub const CLIMB_EVERY: Duration = Duration::from_secs(1);
/// At or above the ceiling the rate rises by one this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Sending pauses this long after a cut.
pub const COOL_DOWN: Duration = Duration::from_secs(1);

/// The send rate in force and what was learned about the real limit.
#[derive(Debug, Clone)]
pub struct RateControl {
    target: u32,
    rate: u32,
    ceiling: u32,
    last_cut: Option<Instant>,
    last_step: Option<Instant>,
}

impl RateControl {
    /// Starts at the configured rate.
    pub fn new(target: u32) -> Self {
        let target = target.max(1);
        RateControl {
            target,
            rate: target,
            ceiling: target,
            last_cut: None,
            last_step: None,
        }
    }

    /// The rate in force.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The configured rate changed (reload). Never above it; a throttled rate keeps climbing
    /// from where it is.
    pub fn set_target(&mut self, target: u32) {
        self.target = target.max(1);
        self.ceiling = self.ceiling.min(self.target);
        if self.last_cut.is_none() {
            self.ceiling = self.target;
            self.rate = self.target;
        }
        self.rate = self.rate.min(self.target);
    }

    /// A throttling answer arrived. Returns the new rate when it was cut.
    pub fn on_throttled(&mut self, now: Instant) -> Option<u32> {
        if self
            .last_cut
            .is_some_and(|t| now.duration_since(t) < SAME_EPISODE)
        {
            return None;
        }
        self.ceiling = self.rate.saturating_sub(1).max(1);
        self.rate = (self.rate / 2).max(1);
        self.last_cut = Some(now);
        self.last_step = Some(now);
        Some(self.rate)
    }

    /// A request got through. Returns the new rate when it rose.
    pub fn on_success(&mut self, now: Instant) -> Option<u32> {
        if self.rate >= self.target {
            return None;
        }
        let every = if self.rate < self.ceiling {
            CLIMB_EVERY
        } else {
            PROBE_EVERY
        };
        if self
            .last_step
            .is_some_and(|t| now.duration_since(t) < every)
        {
            return None;
        }
        self.rate += 1;
        self.ceiling = self.ceiling.max(self.rate);
        self.last_step = Some(now);
        Some(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn halves_once_per_episode_with_a_floor() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        assert_eq!(r.on_throttled(t0), Some(10));
        assert_eq!(r.on_throttled(at(t0, 500)), None, "same episode");
        assert_eq!(r.on_throttled(at(t0, 1500)), Some(5));
        let mut r = RateControl::new(1);
        assert_eq!(r.on_throttled(t0), Some(1));
    }

    #[test]
    fn an_episode_ends_exactly_one_second_after_the_cut() {
        let t0 = Instant::now();
        let mut r = RateControl::new(21);
        assert_eq!(r.rate(), 21);
        assert_eq!(r.on_throttled(t0), Some(10), "21 / 2, rounded down");
        assert_eq!(r.on_throttled(at(t0, 999)), None);
        assert_eq!(r.on_throttled(at(t0, 1000)), Some(5));
        assert_eq!(r.rate(), 5);
        // After a cut, the first climb comes exactly one CLIMB_EVERY later.
        assert_eq!(r.on_success(at(t0, 1999)), None);
        assert_eq!(r.on_success(at(t0, 2000)), Some(6));
        assert_eq!(r.rate(), 6);
    }

    #[test]
    fn a_new_target_without_throttling_is_taken_at_once_and_a_throttled_rate_stays() {
        let t0 = Instant::now();
        let mut r = RateControl::new(10);
        r.set_target(30);
        assert_eq!(r.rate(), 30, "never throttled: the new rate at once");
        r.set_target(0);
        assert_eq!(r.rate(), 1, "at least 1");
        let mut r = RateControl::new(20);
        r.on_throttled(t0);
        r.set_target(30);
        assert_eq!(r.rate(), 10, "throttled: climbs from where it is");
        assert_eq!(r.on_success(at(t0, 1000)), Some(11));
    }

    #[test]
    fn climbs_to_the_ceiling_then_probes_slowly() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        r.on_throttled(t0); // 20 throttled: ceiling 19, rate 10
        r.on_success(at(t0, 2000)); // 11: throttled there
        assert_eq!(r.rate(), 11);
        assert_eq!(r.on_throttled(at(t0, 2500)), Some(5)); // ceiling 10
        let mut t = 2500;
        let mut rates = vec![];
        while t < 2500 + 40_000 {
            t += 100;
            if let Some(rate) = r.on_success(at(t0, t)) {
                rates.push((t - 2500, rate));
            }
        }
        // 6..10 one per second, then 11 only after 30 s at the ceiling.
        assert_eq!(
            rates,
            vec![
                (1000, 6),
                (2000, 7),
                (3000, 8),
                (4000, 9),
                (5000, 10),
                (35000, 11)
            ]
        );
    }

    #[test]
    fn never_above_the_configured_rate_and_untouched_without_throttling() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        assert_eq!(r.on_success(at(t0, 100_000)), None);
        r.set_target(12);
        assert_eq!(r.rate(), 12);
        r.on_throttled(t0);
        assert_eq!(r.rate(), 6);
        r.set_target(4);
        assert_eq!(r.rate(), 4);
        for s in 1..200 {
            r.on_success(at(t0, s * 1000));
        }
        assert_eq!(r.rate(), 4);
    }
}
