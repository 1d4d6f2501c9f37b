//! Which agent is polled next, and when: the due queue and its priorities. Pure, no I/O.
//!
//! The engine's dispatcher asks [`DueQueue::pop_due`] for work each time the rate limiter
//! grants a request, and hands each answer back through [`DueQueue::finish`]. Rules:
//! - an agent is in exactly one place: waiting in a queue, or in flight (never two requests
//!   for one agent);
//! - among due agents, `COLLECTING` ones are served first (that is the transition users wait
//!   for), then the most overdue; a settled agent that has waited `boost` longer than the best
//!   collecting one goes first when collecting agents are themselves more than `boost` behind
//!   (they alone exceed the quota), and gets one grant in three while they keep up, so nobody
//!   starves, yet a sweep minutes behind does not delay collecting polls (issue 13);
//! - the next poll is scheduled from when the answer arrived, never from the missed deadline,
//!   so a backlog never turns into a burst of catch-up polls;
//! - first polls are phased by a stable hash of the Uuid (see [`phase`]), so start-up and
//!   reload spread over a window instead of bursting.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use tokio::time::Instant;

use crate::status::Status;

/// Index of an agent in the engine's table.
pub type AgentId = usize;

/// How often an agent is polled, following its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cadence {
    /// `COLLECTING`: the answer users wait for; served first.
    Collecting,
    /// `AGENT_OFFLINE`.
    Offline,
    /// Everything else (`COMPLETE`, `FAILED`, `NO_TASK`, `UNKNOWN`, …).
    Settled,
}

impl Cadence {
    /// The cadence of a status.
    pub fn of(status: &Status) -> Cadence {
        match status {
            Status::Collecting => Cadence::Collecting,
            Status::AgentOffline => Cadence::Offline,
            _ => Cadence::Settled,
        }
    }
}

/// Poll intervals per cadence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Intervals {
    /// Settled agents.
    pub settled: Duration,
    /// Agents in `COLLECTING`.
    pub collecting: Duration,
    /// Agents in `AGENT_OFFLINE`.
    pub offline: Duration,
}

impl Intervals {
    /// The interval for one cadence.
    pub fn of(&self, cadence: Cadence) -> Duration {
        match cadence {
            Cadence::Collecting => self.collecting,
            Cadence::Offline => self.offline,
            Cadence::Settled => self.settled,
        }
    }
}

/// How far ahead "later" can be: about 30 years, as far as tokio's own timer looks (its
/// `sleep` caps there too). An interval, backoff or timeout longer than this means "not in
/// this run" and is clamped to it, so no `Instant + Duration` can overflow and panic.
pub const FAR_FUTURE: Duration = Duration::from_secs(86_400 * 365 * 30);

/// `at + by` without overflow: `by` is clamped to [`FAR_FUTURE`]. Every instant the engine,
/// scheduler and pacer compute from a duration goes through here (durations come from
/// configuration, the API and the environment, so they may be anything up to
/// `Duration::MAX`).
pub fn later(at: Instant, by: Duration) -> Instant {
    // Adding 30 years to a monotonic clock cannot overflow on any supported platform; should
    // it ever, the latest instant we can still represent is `at` plus a day.
    at.checked_add(by.min(FAR_FUTURE))
        .or_else(|| at.checked_add(Duration::from_secs(86_400)))
        .unwrap_or(at)
}

/// Stable 64-bit FNV-1a: the same Uuid gets the same phase in every run and on every host.
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b.to_ascii_lowercase())).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The window first polls spread over: `min(interval, agents / rps)`. One full pass at the
/// rate takes `agents / rps`; spreading wider than the interval would only delay answers.
pub fn phase_window(agents: usize, requests_per_second: u32, interval: Duration) -> Duration {
    // `try_`: a float to a `Duration` must not panic (the quotient is finite and positive
    // here, but the rule holds for every float conversion).
    let pass = Duration::try_from_secs_f64(agents as f64 / f64::from(requests_per_second.max(1)))
        .unwrap_or(Duration::MAX);
    pass.min(interval)
}

/// Offset of an agent's first poll within `window`, from a hash of its Uuid.
pub fn phase(uuid: &str, window: Duration) -> Duration {
    // A window beyond u64 nanoseconds (584 years) saturates instead of wrapping.
    let nanos = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(fnv1a(uuid) % nanos)
}

/// Delay before retrying an agent after `failures` consecutive transient failures:
/// exponential from 1 s, capped at `cap`, with full jitter (`unit` is a uniform draw in
/// `[0, 1)`, passed in so this stays pure and testable; anything else, NaN included, is taken
/// as 1 rather than panicking in `mul_f64`). Never below 100 ms, so a failing agent cannot
/// spin.
pub fn backoff(failures: u32, cap: Duration, unit: f64) -> Duration {
    let exp = Duration::from_secs(1).saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let ceiling = exp.min(cap);
    let unit = if unit.is_finite() {
        unit.clamp(0.0, 1.0)
    } else {
        1.0
    };
    ceiling
        .mul_f64(unit)
        .max(Duration::from_millis(100).min(ceiling))
}

/// One agent's place in the queue, in 8 bytes (issue 13: 100,000 of them): the sequence
/// number of its live queue entry (0: not queued) in the low 62 bits, in flight and present
/// in the top two.
#[derive(Debug, Clone, Copy, Default)]
struct Slot(u64);

const IN_FLIGHT: u64 = 1 << 63;
const PRESENT: u64 = 1 << 62;
const SEQ: u64 = PRESENT - 1;

impl Slot {
    fn queued(self) -> u64 {
        self.0 & SEQ
    }
    fn set_queued(&mut self, seq: u64) {
        self.0 = (self.0 & !SEQ) | (seq & SEQ);
    }
    fn in_flight(self) -> bool {
        self.0 & IN_FLIGHT != 0
    }
    fn set_in_flight(&mut self, on: bool) {
        self.set(IN_FLIGHT, on);
    }
    fn present(self) -> bool {
        self.0 & PRESENT != 0
    }
    fn set_present(&mut self, on: bool) {
        self.set(PRESENT, on);
    }
    fn set(&mut self, bit: u64, on: bool) {
        if on {
            self.0 |= bit;
        } else {
            self.0 &= !bit;
        }
    }
}

/// A queue entry, 24 bytes: due time (nanoseconds from the queue's epoch), sequence number
/// (first come, first served among equal due times; stale when the slot moved on), agent.
type Entry = Reverse<(i64, u64, u32)>;

/// The earliest-deadline due queue with collecting-first priority.
#[derive(Debug)]
pub struct DueQueue {
    collecting: BinaryHeap<Entry>,
    others: BinaryHeap<Entry>,
    slots: Vec<Slot>,
    /// Due times are kept relative to this (a `u64` instead of a 16-byte `Instant`).
    epoch: Instant,
    seq: u64,
    boost: Duration,
    in_flight: usize,
    /// Grants in a row to collecting agents while a settled one had waited `boost` longer.
    run: u32,
}

/// While collecting agents keep up with their interval, at most this many grants in a row go
/// to them ahead of a settled agent that waited `boost` longer.
const COLLECTING_RUN: u32 = 2;

impl DueQueue {
    /// A settled agent overdue by more than `boost` beyond the best collecting agent is
    /// served before it: that bounds how long collecting agents can starve the rest.
    pub fn new(boost: Duration) -> Self {
        DueQueue {
            collecting: BinaryHeap::new(),
            others: BinaryHeap::new(),
            slots: Vec::new(),
            epoch: Instant::now(),
            seq: 0,
            boost,
            in_flight: 0,
            run: 0,
        }
    }

    /// Room for `additional` more agents, allocated at once and exactly (a start with
    /// 100,000 agents would otherwise grow the heap to the next power of two).
    pub fn reserve(&mut self, additional: usize) {
        self.others.reserve_exact(additional);
        self.slots.reserve_exact(additional);
    }

    fn slot_mut(&mut self, id: AgentId) -> &mut Slot {
        if id >= self.slots.len() {
            self.slots.resize(id + 1, Slot::default());
        }
        &mut self.slots[id]
    }

    /// `due` as kept: signed nanoseconds from the epoch (exact within 292 years either way,
    /// clamped beyond).
    fn ticks(&self, due: Instant) -> i64 {
        let nanos = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        if due >= self.epoch {
            nanos(due.duration_since(self.epoch))
        } else {
            -nanos(self.epoch.duration_since(due))
        }
    }

    fn instant(&self, ticks: i64) -> Instant {
        let by = Duration::from_nanos(ticks.unsigned_abs());
        if ticks >= 0 {
            later(self.epoch, by)
        } else {
            self.epoch.checked_sub(by).unwrap_or(self.epoch)
        }
    }

    /// Queues an agent (new, or rescheduled while idle) to be due at `due`.
    pub fn schedule(&mut self, id: AgentId, due: Instant, cadence: Cadence) {
        // Ids index the agent table: fewer than 2^32 (that would be 400 GB of records).
        let Ok(small_id) = u32::try_from(id) else {
            return;
        };
        self.seq += 1;
        let seq = self.seq;
        let ticks = self.ticks(due);
        let slot = self.slot_mut(id);
        slot.set_present(true);
        if slot.in_flight() {
            // The answer will reschedule it; a second queue entry would allow a second
            // request in flight.
            return;
        }
        slot.set_queued(seq);
        let heap = match cadence {
            Cadence::Collecting => &mut self.collecting,
            _ => &mut self.others,
        };
        heap.push(Reverse((ticks, seq, small_id)));
    }

    /// Forgets an agent (removed from the watchlist). A request still in flight keeps
    /// counting against `max_in_flight` until [`DueQueue::finish`] drops its answer: the
    /// connection is busy until then, and a re-added agent must not get a second one.
    pub fn remove(&mut self, id: AgentId) {
        if let Some(slot) = self.slots.get_mut(id) {
            slot.set_queued(0);
            slot.set_present(false);
        }
    }

    fn is_live(slots: &[Slot], entry: &Entry) -> bool {
        let Reverse((_, seq, id)) = *entry;
        slots
            .get(id as usize)
            .is_some_and(|s| s.queued() == seq & SEQ)
    }

    fn clean(&mut self) {
        while let Some(top) = self.collecting.peek() {
            if Self::is_live(&self.slots, top) {
                break;
            }
            self.collecting.pop();
        }
        while let Some(top) = self.others.peek() {
            if Self::is_live(&self.slots, top) {
                break;
            }
            self.others.pop();
        }
    }

    /// When the next agent becomes due (it may already be).
    pub fn next_due(&mut self) -> Option<Instant> {
        self.clean();
        let a = self.collecting.peek().map(|Reverse((d, _, _))| *d);
        let b = self.others.peek().map(|Reverse((d, _, _))| *d);
        let ticks = match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        ticks.map(|t| self.instant(t))
    }

    /// Takes the agent to poll now, if any is due, and marks it in flight.
    pub fn pop_due(&mut self, now: Instant) -> Option<AgentId> {
        self.clean();
        let c = self
            .collecting
            .peek()
            .map(|Reverse((d, _, _))| self.instant(*d))
            .filter(|d| *d <= now);
        let o = self
            .others
            .peek()
            .map(|Reverse((d, _, _))| self.instant(*d))
            .filter(|d| *d <= now);
        let heap = match (c, o) {
            (None, None) => return None,
            (Some(_), None) => &mut self.collecting,
            (None, Some(_)) => &mut self.others,
            (Some(c), Some(o)) => {
                // `checked`: a boost of `Duration::MAX` (a collecting interval nobody
                // validated) means collecting agents always go first, not a panic.
                let settled_waited = o.checked_add(self.boost).is_some_and(|o| o < c);
                // Collecting agents within `boost` of their due time are keeping up: they go
                // first, except one grant in `COLLECTING_RUN + 1` for a settled agent that
                // waited `boost` longer, so they cannot take the whole quota by staying just
                // on time. Behind by more (they alone exceed the quota), the longer wait wins.
                // Before issue 13 the longer wait always won: a sweep minutes behind (10,000
                // agents at 20/s) then delayed every collecting poll by as much.
                let collecting_behind = now.saturating_duration_since(c) > self.boost;
                if settled_waited && (collecting_behind || self.run >= COLLECTING_RUN) {
                    self.run = 0;
                    &mut self.others
                } else {
                    if settled_waited {
                        self.run = self.run.saturating_add(1);
                    }
                    &mut self.collecting
                }
            }
        };
        let Reverse((_, _, id)) = heap.pop()?;
        let id = id as usize;
        let slot = self.slots.get_mut(id)?;
        slot.set_queued(0);
        slot.set_in_flight(true);
        self.in_flight += 1;
        Some(id)
    }

    /// The answer for `id` arrived: it is no longer in flight and is due again at `next`.
    /// Returns false when the agent was removed meanwhile (the answer should be dropped).
    pub fn finish(&mut self, id: AgentId, next: Instant, cadence: Cadence) -> bool {
        let Some(slot) = self.slots.get_mut(id) else {
            return false;
        };
        if !slot.in_flight() {
            return false;
        }
        slot.set_in_flight(false);
        self.in_flight -= 1;
        if !slot.present() {
            return false;
        }
        self.schedule(id, next, cadence);
        true
    }

    /// Sets the collecting priority window (see [`DueQueue::new`]).
    pub fn set_boost(&mut self, boost: Duration) {
        self.boost = boost;
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Is this agent's request in flight?
    pub fn is_in_flight(&self, id: AgentId) -> bool {
        self.slots.get(id).is_some_and(|s| s.in_flight())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 8 #4: durations up to `Duration::MAX` and hostile floats never panic.
    #[test]
    fn huge_durations_and_bad_floats_saturate_instead_of_panicking() {
        let t0 = Instant::now();
        assert_eq!(later(t0, Duration::MAX), t0 + FAR_FUTURE);
        assert_eq!(later(t0, Duration::from_secs(u64::MAX)), t0 + FAR_FUTURE);
        assert_eq!(
            later(t0, Duration::from_secs(5)),
            t0 + Duration::from_secs(5)
        );
        for unit in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0, 7.0] {
            let d = backoff(3, Duration::MAX, unit);
            assert!(d <= Duration::from_secs(4), "{unit}: {d:?}");
        }
        assert_eq!(
            backoff(u32::MAX, Duration::MAX, 1.0),
            Duration::from_secs(1 << 20)
        );
        assert_eq!(
            phase_window(usize::MAX, 0, Duration::MAX).as_secs(),
            usize::MAX as u64
        );
        assert!(phase("x", Duration::MAX) < Duration::MAX);
        // A boost of Duration::MAX: collecting first, no overflow.
        let mut q = DueQueue::new(Duration::MAX);
        q.schedule(0, t0, Cadence::Settled);
        q.schedule(1, t0 + Duration::from_secs(1), Cadence::Collecting);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)), Some(1));
    }

    fn q() -> DueQueue {
        DueQueue::new(Duration::from_secs(60))
    }

    #[test]
    fn cadence_follows_status() {
        assert_eq!(Cadence::of(&Status::Collecting), Cadence::Collecting);
        assert_eq!(Cadence::of(&Status::AgentOffline), Cadence::Offline);
        for s in ["COMPLETE", "FAILED", "NO_TASK", "UNKNOWN", "SOMETHING_NEW"] {
            assert_eq!(Cadence::of(&Status::new(s)), Cadence::Settled);
        }
    }

    #[test]
    fn most_overdue_first_and_fifo_on_ties() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(0, t0 + Duration::from_secs(3), Cadence::Settled);
        q.schedule(1, t0 + Duration::from_secs(1), Cadence::Settled);
        q.schedule(2, t0 + Duration::from_secs(1), Cadence::Offline);
        let now = t0 + Duration::from_secs(5);
        assert_eq!(q.pop_due(now), Some(1));
        assert_eq!(q.pop_due(now), Some(2));
        assert_eq!(q.pop_due(now), Some(0));
        assert_eq!(q.pop_due(now), None);
    }

    #[test]
    fn nothing_before_it_is_due() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(0, t0 + Duration::from_secs(3), Cadence::Collecting);
        assert_eq!(q.pop_due(t0), None);
        assert_eq!(q.next_due(), Some(t0 + Duration::from_secs(3)));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(3)), Some(0));
    }

    #[test]
    fn collecting_first_unless_others_waited_boost_longer() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(0, t0, Cadence::Settled);
        q.schedule(1, t0 + Duration::from_secs(10), Cadence::Collecting);
        let now = t0 + Duration::from_secs(20);
        assert_eq!(q.pop_due(now), Some(1), "collecting first");
        assert_eq!(q.pop_due(now), Some(0));
        // Collecting agents more than `boost` behind (they alone exceed the quota): a settled
        // agent 61 s more overdue than the collecting one goes first.
        q.schedule(2, t0, Cadence::Settled);
        q.schedule(3, t0 + Duration::from_secs(61), Cadence::Collecting);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(130)), Some(2));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(130)), Some(3));
        // Exactly `boost` (60 s) more overdue is not longer: collecting still first.
        q.schedule(4, t0, Cadence::Settled);
        q.schedule(5, t0 + Duration::from_secs(60), Cadence::Collecting);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(130)), Some(5));
    }

    /// Issue 13: a sweep far behind must not delay collecting agents that keep up with their
    /// interval, beyond one grant in `COLLECTING_RUN + 1` (detection latency at 10,000
    /// agents); the sweep still gets that share.
    #[test]
    fn collecting_agents_that_keep_up_go_first_however_far_behind_the_sweep_is() {
        let t0 = Instant::now();
        let mut q = q();
        for id in 0..100 {
            q.schedule(id, t0, Cadence::Settled);
        }
        let now = t0 + Duration::from_secs(600);
        let mut order = Vec::new();
        for id in 100..106 {
            q.schedule(id, now - Duration::from_secs(1), Cadence::Collecting);
        }
        for _ in 0..9 {
            order.push(q.pop_due(now).unwrap() >= 100);
        }
        // Two collecting, one settled, and again; then the rest of the sweep.
        assert_eq!(
            order,
            [true, true, false, true, true, false, true, true, false]
        );
        // Collecting agents more than `boost` behind: the longer wait wins.
        q.schedule(200, now - Duration::from_secs(61), Cadence::Collecting);
        assert_ne!(q.pop_due(now), Some(200));
    }

    #[test]
    fn due_times_are_kept_exactly_before_and_after_the_epoch_in_small_entries() {
        let before = Instant::now();
        let q = q();
        for due in [
            before,
            q.epoch,
            q.epoch + Duration::from_nanos(1),
            q.epoch + Duration::from_secs(86_400 * 365),
        ] {
            assert_eq!(q.instant(q.ticks(due)), due);
        }
        assert!(q.ticks(before) <= 0 && q.ticks(q.epoch + Duration::from_nanos(1)) == 1);
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        assert_eq!(std::mem::size_of::<Slot>(), 8);
        let mut slot = Slot::default();
        slot.set_queued(SEQ);
        slot.set_in_flight(true);
        assert_eq!(
            (slot.queued(), slot.in_flight(), slot.present()),
            (SEQ, true, false)
        );
        slot.set_present(true);
        slot.set_in_flight(false);
        slot.set_queued(5);
        assert_eq!(
            (slot.queued(), slot.in_flight(), slot.present()),
            (5, false, true)
        );
    }

    #[test]
    fn never_two_in_flight_for_one_agent() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(7, t0, Cadence::Settled);
        assert!(!q.is_in_flight(7), "queued, not in flight");
        assert!(!q.is_in_flight(8), "never seen");
        assert_eq!(q.pop_due(t0), Some(7));
        assert!(q.is_in_flight(7));
        // Rescheduling while in flight (e.g. a reload) must not create a second entry.
        q.schedule(7, t0, Cadence::Collecting);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(1)), None);
        assert_eq!(q.in_flight(), 1);
        assert!(q.finish(7, t0 + Duration::from_secs(5), Cadence::Collecting));
        assert_eq!(q.in_flight(), 0);
        assert!(!q.is_in_flight(7), "answered");
        assert_eq!(q.pop_due(t0 + Duration::from_secs(4)), None);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(5)), Some(7));
    }

    #[test]
    fn removed_agents_are_never_due_and_their_answers_dropped() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(0, t0, Cadence::Settled);
        q.schedule(1, t0, Cadence::Settled);
        assert_eq!(q.pop_due(t0), Some(0));
        q.remove(0);
        q.remove(1);
        assert_eq!(q.in_flight(), 1, "the request in flight still counts");
        assert!(!q.finish(0, t0, Cadence::Settled));
        assert_eq!(q.in_flight(), 0);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(100)), None);
        assert_eq!(q.next_due(), None);
    }

    #[test]
    fn an_agent_re_added_while_in_flight_waits_for_its_answer() {
        let t0 = Instant::now();
        let mut q = q();
        q.schedule(3, t0, Cadence::Settled);
        assert_eq!(q.pop_due(t0), Some(3));
        q.remove(3);
        q.schedule(3, t0, Cadence::Settled); // back in the watchlist
        assert_eq!(
            q.pop_due(t0 + Duration::from_secs(1)),
            None,
            "still in flight"
        );
        assert!(q.finish(3, t0 + Duration::from_secs(2), Cadence::Settled));
        assert_eq!(q.pop_due(t0 + Duration::from_secs(2)), Some(3));
    }

    /// Changes the collecting priority window (reload of `collecting_interval`).
    #[test]
    fn boost_can_change() {
        let t0 = Instant::now();
        let mut q = q();
        q.set_boost(Duration::from_secs(1));
        q.schedule(0, t0, Cadence::Settled);
        q.schedule(1, t0 + Duration::from_secs(5), Cadence::Collecting);
        assert_eq!(q.pop_due(t0 + Duration::from_secs(10)), Some(0));
    }

    #[test]
    fn phases_are_stable_and_spread() {
        let w = Duration::from_secs(60);
        let a = phase("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1", w);
        assert_eq!(a, phase("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1", w));
        assert!(a < w);
        let mut buckets = [0u32; 10];
        for i in 0..10_000u32 {
            let p = phase(&format!("00000000-0000-0000-0000-{i:012x}"), w);
            buckets[(p.as_secs_f64() / 6.0) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
        assert_eq!(phase("x", Duration::ZERO), Duration::ZERO);
    }

    #[test]
    fn far_future_is_about_thirty_years_and_nearer_instants_are_exact() {
        let year = Duration::from_secs(86_400 * 365);
        assert!(
            FAR_FUTURE >= year * 29 && FAR_FUTURE <= year * 31,
            "{FAR_FUTURE:?}"
        );
        let t0 = Instant::now();
        assert_eq!(later(t0, year), t0 + year, "a year is not clamped");
    }

    /// The published FNV-1a 64-bit test vectors: the phase of an agent must not change
    /// between versions (or hosts), or every restart would reshuffle the schedule.
    #[test]
    fn the_phase_hash_is_fnv1a() {
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a("foobar"), 0x8594_4171_f739_67e8);
        // Case-insensitive, as Uuids are.
        assert_eq!(fnv1a("FOOBAR"), fnv1a("foobar"));
        assert_eq!(
            phase("a", Duration::from_nanos(1_000_000_007)),
            Duration::from_nanos(0xaf63_dc4c_8601_ec8c % 1_000_000_007)
        );
    }

    #[test]
    fn phase_window_is_one_pass_or_the_interval() {
        let i = Duration::from_secs(60);
        assert_eq!(phase_window(100, 20, i), Duration::from_secs(5));
        assert_eq!(phase_window(100_000, 20, i), i);
        assert_eq!(phase_window(0, 20, i), Duration::ZERO);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cap = Duration::from_secs(60);
        assert_eq!(backoff(1, cap, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(3, cap, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(30, cap, 1.0), cap);
        assert_eq!(backoff(3, cap, 0.5), Duration::from_secs(2));
        assert_eq!(backoff(3, cap, 0.0), Duration::from_millis(100));
        assert_eq!(
            backoff(u32::MAX, Duration::from_millis(50), 0.0),
            Duration::from_millis(50)
        );
    }
}
