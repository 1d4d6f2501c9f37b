//! Throttling feedback: what send rate to use after the API says `RequestLimitExceeded*`.
//! Pure: instants in, rates out.
//!
//! Another tool may share the account's quota, so the rate that works can be far below the
//! configured one, and it changes. The controller:
//! - on an *isolated* throttling answer (the lane at its configured rate, no cut in the last
//!   [`REPEAT_WINDOW`]) lowers the rate by [`NUDGE_PERCENT`] % (at least 1/s) and nothing more: the ceiling stays, so
//!   the rate is back one [`CLIMB_EVERY`] later, and there is no pause;
//! - on any other (a throttle soon after a cut, or on a lane already below its configured
//!   rate) halves the rate (floor 1/s), remembers one less than the rate that was throttled
//!   as the *ceiling* that seems to work, and pauses sending for [`COOL_DOWN`] so the
//!   server's window empties before the lower rate starts (otherwise the lower rate is
//!   throttled by the higher one's leftovers);
//! - answers that arrive within [`SAME_EPISODE`] of a cut were sent before it and do not cut
//!   again;
//! - climbs back one request/s per second up to the ceiling, then probes above it one
//!   request/s every [`PROBE_EVERY`] up to the configured rate, so quota freed by the other
//!   tool is taken back gradually, never with a burst.
//!
//! Why two steps (issue 27). The pacer ([`crate::pacing`]) never grants more than the rate in
//! any 1-s window of *sends*; the server counts *arrivals*, and with 4.5–7.5 ms of slack per
//! window, jitter between a send and its arrival (a busy thread, a loaded machine) now and
//! then puts 21 arrivals in one second: one throttled answer, then nothing for minutes. Halving
//! for that cost a lane about 100 requests (a second of pause, ten of climbing, thirty at the
//! ceiling before probing): at 50 accounts, one `RequestLimitExceeded` left its lane at
//! 17.9–18.5 requests/s for the rest of a 30-s run. The strict limit does not depend on this
//! module (the pacer guards it whatever the rate), so an isolated throttle can be answered
//! gently: 19/s for one second costs about one request, and each slot in that second is 2.6 ms
//! wider, which is the room the jitter took. A tool that really shares the quota throttles
//! again as soon as the episode ends (one second later): that is a repeat, and the lane halves
//! as before, one second later than it used to, at the cost of one more throttled episode.

use std::time::Duration;

use tokio::time::Instant;

/// Cuts closer together than this come from the same episode.
pub const SAME_EPISODE: Duration = Duration::from_secs(1);
/// Below the ceiling the rate rises by one this often.
pub const CLIMB_EVERY: Duration = Duration::from_secs(1);
/// At or above the ceiling the rate rises by one this often.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// Sending pauses this long after a halving.
pub const COOL_DOWN: Duration = Duration::from_secs(1);
/// A throttle with no cut in this long before it, on a lane at its configured rate, is
/// isolated (jitter, not a shared quota): the rate is only nudged.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(10);
/// An isolated throttle lowers the rate by this share (at least 1/s): 20 → 19.
pub const NUDGE_PERCENT: u32 = 5;

/// What a throttling answer did to the rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    /// The rate in force now.
    pub rate: u32,
    /// Send nothing for this long ([`COOL_DOWN`] after a halving, zero after a nudge).
    pub pause: Duration,
}

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

    /// A throttling answer arrived. Returns the cut when there was one (none within
    /// [`SAME_EPISODE`] of the last).
    pub fn on_throttled(&mut self, now: Instant) -> Option<Cut> {
        let since_cut = self.last_cut.map(|t| now.saturating_duration_since(t));
        if since_cut.is_some_and(|d| d < SAME_EPISODE) {
            return None;
        }
        let isolated = self.rate >= self.target && since_cut.is_none_or(|d| d >= REPEAT_WINDOW);
        let cut = if isolated {
            // The ceiling stays where it is: the rate climbs back one CLIMB_EVERY later.
            let step = (self.rate.saturating_mul(NUDGE_PERCENT) / 100).max(1);
            self.rate = self.rate.saturating_sub(step).max(1);
            Cut {
                rate: self.rate,
                pause: Duration::ZERO,
            }
        } else {
            self.ceiling = self.rate.saturating_sub(1).max(1);
            self.rate = (self.rate / 2).max(1);
            Cut {
                rate: self.rate,
                pause: COOL_DOWN,
            }
        };
        self.last_cut = Some(now);
        self.last_step = Some(now);
        Some(cut)
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

    /// The rate after a throttle at `ms` (`None`: no cut).
    fn cut(r: &mut RateControl, t0: Instant, ms: u64) -> Option<u32> {
        r.on_throttled(at(t0, ms)).map(|c| c.rate)
    }

    #[test]
    fn an_isolated_throttle_nudges_the_rate_and_it_is_back_a_second_later() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        assert_eq!(
            r.on_throttled(t0),
            Some(Cut {
                rate: 19,
                pause: Duration::ZERO
            }),
            "5 %, no pause"
        );
        assert_eq!(cut(&mut r, t0, 999), None, "same episode");
        assert_eq!(r.on_success(at(t0, 999)), None);
        assert_eq!(
            r.on_success(at(t0, 1000)),
            Some(20),
            "the ceiling stayed at 20"
        );
        assert_eq!(r.on_success(at(t0, 60_000)), None, "at the target");
        // Isolated again (more than REPEAT_WINDOW after the last cut): a nudge again.
        assert_eq!(cut(&mut r, t0, 1000 + 10_000), Some(19));
        // A rate of 1: still 1.
        let mut r = RateControl::new(1);
        assert_eq!(cut(&mut r, t0, 0), Some(1));
        // 5 % of 100 is 5.
        let mut r = RateControl::new(100);
        assert_eq!(cut(&mut r, t0, 0), Some(95));
    }

    #[test]
    fn a_throttle_soon_after_a_cut_halves_and_pauses() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        assert_eq!(cut(&mut r, t0, 0), Some(19));
        // The episode is over but the throttling is not: a shared quota. Halved, paused.
        assert_eq!(
            r.on_throttled(at(t0, 1000)),
            Some(Cut {
                rate: 9,
                pause: COOL_DOWN
            })
        );
        assert_eq!(cut(&mut r, t0, 1500), None, "same episode");
        // Below the target, any throttle halves, however long after the last cut.
        assert_eq!(cut(&mut r, t0, 60_000), Some(4));
        // Back at the target after a halving (one per second to the ceiling of 18, then a
        // probe every 30 s): a throttle there, long after the last cut, is isolated again.
        let mut r = RateControl::new(20);
        r.on_throttled(t0);
        r.on_throttled(at(t0, 1000)); // 9, ceiling 18
        let mut t = 1000;
        while r.rate() < 20 {
            t += 1000;
            r.on_success(at(t0, t));
        }
        assert_eq!(t, 1000 + 9_000 + 2 * 30_000);
        assert_eq!(cut(&mut r, t0, t), Some(19));
        let mut r = RateControl::new(20);
        r.on_throttled(t0);
        assert_eq!(cut(&mut r, t0, 9_999), Some(9), "a nudge is a cut too");
    }

    #[test]
    fn an_episode_ends_exactly_one_second_after_the_cut() {
        let t0 = Instant::now();
        let mut r = RateControl::new(21);
        assert_eq!(r.rate(), 21);
        assert_eq!(cut(&mut r, t0, 0), Some(20), "21 - 5 %, at least 1");
        assert_eq!(cut(&mut r, t0, 999), None);
        assert_eq!(cut(&mut r, t0, 1000), Some(10), "20 / 2");
        assert_eq!(cut(&mut r, t0, 1999), None);
        assert_eq!(cut(&mut r, t0, 2000), Some(5));
        assert_eq!(r.rate(), 5);
        // After a cut, the first climb comes exactly one CLIMB_EVERY later.
        assert_eq!(r.on_success(at(t0, 2999)), None);
        assert_eq!(r.on_success(at(t0, 3000)), Some(6));
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
        r.on_throttled(at(t0, 1000));
        r.set_target(30);
        assert_eq!(r.rate(), 9, "throttled: climbs from where it is");
        assert_eq!(r.on_success(at(t0, 2000)), Some(10));
    }

    #[test]
    fn climbs_to_the_ceiling_then_probes_slowly() {
        let t0 = Instant::now();
        let mut r = RateControl::new(20);
        r.on_throttled(t0); // 19
        r.on_throttled(at(t0, 1000)); // 19 throttled: ceiling 18, rate 9
        r.on_success(at(t0, 2000)); // 10
        r.on_success(at(t0, 3000)); // 11: throttled there
        assert_eq!(r.rate(), 11);
        assert_eq!(cut(&mut r, t0, 3500), Some(5)); // ceiling 10
        let mut t = 3500;
        let mut rates = vec![];
        while t < 3500 + 40_000 {
            t += 100;
            if let Some(rate) = r.on_success(at(t0, t)) {
                rates.push((t - 3500, rate));
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
        assert_eq!(r.rate(), 11);
        r.set_target(4);
        assert_eq!(r.rate(), 4);
        for s in 1..200 {
            r.on_success(at(t0, s * 1000));
        }
        assert_eq!(r.rate(), 4);
    }
}
