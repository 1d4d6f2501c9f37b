//! Close confirmation, pure: which changes of a complete listing are reported now and which
//! wait for a second complete listing (spec "Open-port inventory").
//!
//! A listing can be complete by every check page assembly makes and still miss an item: a
//! list that shifts while it is paged can skip a row without repeating one, and an API can
//! answer an empty list for a moment (`TotalCount = 0`). Reporting such a gap as a close is a
//! phantom event, so:
//! - an item new to the listing is reported at once (it was open, whatever else happened);
//! - an item missing for the first time is held: still reported open, and a second complete
//!   fetch, taken after this one, is asked for;
//! - an item missing from that fetch too is reported closed; one that is back was never
//!   closed.
//!
//! "Most items lost at once" needs no rule of its own: every close goes through the same
//! confirmation. Generic over the item and its identity, so that every backend that pages a
//! listing (`DescribeOpenPorts` today, `DescribeAssetPortInfoList` later) and discovery can
//! share it.

use std::collections::BTreeSet;
use std::time::Duration;

/// A confirming fetch starts this long after the fetch that missed an item: a listing being
/// rewritten (a transient empty answer) gets a moment to settle, and a close is still
/// reported within seconds.
pub const CONFIRM_AFTER: Duration = Duration::from_secs(2);

/// Confirming fetches in a row for one agent, at most. A listing that misses other items at
/// every fetch (a flapping server) would otherwise be paged without end; past this, what is
/// still unconfirmed stays held (never reported closed) until the agent's next fetch.
pub const CONFIRMING_FETCHES: u32 = 3;

/// What a complete listing changes, judged against the last stored one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judged<'a, T> {
    /// In the new listing only: reported now.
    pub opened: Vec<&'a T>,
    /// Missing from the new listing and already missing from the one before: reported now.
    pub closed: Vec<&'a T>,
    /// Missing from the new listing for the first time: held until a second fetch.
    pub unconfirmed: Vec<&'a T>,
}

/// Judges `new` against `last` by `key`; `was_missing(key)` says whether an item of `last`
/// was already missing from the previous complete listing (awaiting confirmation). Items come
/// out in their listing's order.
pub fn judge<'a, T, K: Ord>(
    last: &'a [T],
    new: &'a [T],
    key: impl Fn(&'a T) -> K,
    was_missing: impl Fn(&K) -> bool,
) -> Judged<'a, T> {
    let before: BTreeSet<K> = last.iter().map(&key).collect();
    let after: BTreeSet<K> = new.iter().map(&key).collect();
    let opened = new.iter().filter(|t| !before.contains(&key(t))).collect();
    let (mut closed, mut unconfirmed) = (Vec::new(), Vec::new());
    for item in last {
        let k = key(item);
        if after.contains(&k) {
            continue;
        }
        if was_missing(&k) {
            closed.push(item);
        } else {
            unconfirmed.push(item);
        }
    }
    Judged {
        opened,
        closed,
        unconfirmed,
    }
}

/// Whether a listing that left `unconfirmed` items, taken as the `nth` confirming fetch in a
/// row (0: a fetch of its own), asks for another fetch.
pub fn fetch_again(unconfirmed: usize, nth: u32) -> bool {
    unconfirmed > 0 && nth < CONFIRMING_FETCHES
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(last: &[u16], new: &[u16], missing: &[u16]) -> (Vec<u16>, Vec<u16>, Vec<u16>) {
        let j = judge(last, new, |p| *p, |k| missing.contains(k));
        let v = |x: Vec<&u16>| x.into_iter().copied().collect::<Vec<_>>();
        (v(j.opened), v(j.closed), v(j.unconfirmed))
    }

    #[test]
    fn an_open_is_reported_at_once_a_close_only_when_missing_twice() {
        // 80 disappears: held. 443 appears: reported.
        assert_eq!(
            judged(&[22, 80], &[22, 443], &[]),
            (vec![443], vec![], vec![80])
        );
        // The confirming fetch lacks 80 too: closed.
        assert_eq!(
            judged(&[22, 80, 443], &[22, 443], &[80]),
            (vec![], vec![80], vec![])
        );
        // The confirming fetch has 80 again: never closed, nothing held.
        assert_eq!(
            judged(&[22, 80, 443], &[22, 80, 443], &[80]),
            (vec![], vec![], vec![])
        );
        // A held item that is not missing now, and another one missing for the first time.
        assert_eq!(
            judged(&[22, 80, 443], &[80, 443], &[80]),
            (vec![], vec![], vec![22])
        );
    }

    #[test]
    fn a_listing_that_loses_everything_is_confirmed_like_any_close() {
        // A transient TotalCount = 0: every port held, none reported.
        let all: Vec<u16> = (1..=200).collect();
        let (opened, closed, held) = judged(&all, &[], &[]);
        assert!(opened.is_empty() && closed.is_empty());
        assert_eq!(held, all);
        // The listing is back: nothing reported, nothing held.
        assert_eq!(judged(&all, &all, &all), (vec![], vec![], vec![]));
        // Gone for real (a second complete listing is empty too): every port closed.
        assert_eq!(judged(&all, &[], &all).1, all);
    }

    #[test]
    fn confirming_fetches_in_a_row_are_bounded() {
        assert!(!fetch_again(0, 0), "nothing held: no fetch");
        assert!(fetch_again(1, 0));
        assert!(fetch_again(5, CONFIRMING_FETCHES - 1));
        assert!(!fetch_again(5, CONFIRMING_FETCHES), "a flapping server");
    }
}
