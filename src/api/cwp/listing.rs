//! Completeness of a paged `cwp` listing, pure: the pages of one fetch in, a complete
//! listing (or the next offset, or `inventory_failed`) out. The same rules as yunjing's
//! [`crate::inventory::Assembly`] (spec "Open-port inventory"), for any row type:
//!
//! - the **distinct** rows fetched = the total the answers state;
//! - that total did not change between the pages of one try;
//! - no page repeats a row of an earlier page (a server that ignores `Offset`, or a list
//!   that shifts into an overlap while paged);
//! - a short page before the total is reached ends the try (the list shrank, or the total
//!   lies).
//!
//! An inconsistent try starts the fetch over, [`FETCH_TRIES`] tries in all; a failed request
//! asks for the same page again, [`FETCH_TRIES`] failures in all; then
//! [`FetchError`] (`inventory_failed`), with the codes yunjing's inventory uses. A total
//! above the caller's bound is refused before a page is stored. A partial listing never
//! leaves this module.
//!
//! What a repeat is depends on the listing: for ports a whole row (every field, since one
//! identity may fill two rows that differ only in `Pid`: a listener per `SO_REUSEPORT`
//! worker), for machines the `Quuid`. [`Listing`] takes the key function.
//!
//! A complete port listing then goes through [`port_set`] (one entry per identity) and close
//! confirmation, shared with yunjing: [`crate::inventory::confirm::judge`] over
//! [`AssetPort::key`].

use std::collections::HashSet;
use std::hash::Hash;

use super::ports::AssetPort;
use crate::inventory::{FETCH_TRIES, FetchError};

/// What to do after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step<R> {
    /// Ask for the page at this offset.
    Next(u64),
    /// The listing is complete: every row once, in the order fetched, and the last page's
    /// `RequestId`.
    Complete(Vec<R>, String),
    /// Give up: `inventory_failed`.
    Failed(FetchError),
}

/// The pages of one fetch so far.
#[derive(Debug, Clone)]
pub struct Listing<R, K> {
    /// Rows per full page (the `Limit` asked for).
    page_limit: u64,
    /// The largest total accepted.
    max_total: u64,
    /// The total of the first page of this try.
    total: Option<u64>,
    /// The keys of this try's rows: a key already here is a repeat.
    keys: HashSet<K>,
    /// This try's rows, in the order fetched.
    rows: Vec<R>,
    /// Tries begun, the current one included.
    tries: u32,
    /// Failed requests in this fetch.
    errors: u32,
    /// 0: a fetch of its own; n: the n-th fetch in a row taken to confirm closes.
    confirming: u32,
}

impl<R, K: Eq + Hash> Listing<R, K> {
    /// A fetch about to ask for offset 0, in pages of `page_limit` rows, refusing a total
    /// above `max_total` ([`FetchError::TooMany`]).
    pub fn new(page_limit: u64, max_total: u64) -> Self {
        Listing {
            page_limit: page_limit.max(1),
            max_total,
            total: None,
            keys: HashSet::new(),
            rows: Vec::new(),
            tries: 1,
            errors: 0,
            confirming: 0,
        }
    }

    /// As [`Listing::new`], for a fetch taken to confirm closes, the `nth` in a row
    /// ([`crate::inventory::confirm::fetch_again`] bounds them).
    pub fn confirming(page_limit: u64, max_total: u64, nth: u32) -> Self {
        Listing {
            confirming: nth,
            ..Listing::new(page_limit, max_total)
        }
    }

    /// 0 for a fetch of its own, else which confirming fetch in a row this is.
    pub fn confirming_nth(&self) -> u32 {
        self.confirming
    }

    /// The offset of the next page to ask for.
    pub fn offset(&self) -> u64 {
        self.rows.len() as u64
    }

    /// Tries begun so far.
    pub fn tries(&self) -> u32 {
        self.tries
    }

    /// Starts over (an inconsistent listing), or gives up after [`FETCH_TRIES`].
    fn again(&mut self, why: String) -> Step<R> {
        if self.tries >= FETCH_TRIES {
            return Step::Failed(FetchError::Incomplete {
                tries: self.tries,
                last: why,
            });
        }
        self.tries += 1;
        self.total = None;
        self.keys.clear();
        self.rows.clear();
        Step::Next(0)
    }

    /// A request of this fetch failed (on the wire, or its answer was refused): the same
    /// page is asked again, up to [`FETCH_TRIES`] failures in all.
    pub fn failed(&mut self, code: &str, message: &str) -> Step<R> {
        self.errors = self.errors.saturating_add(1);
        if self.errors >= FETCH_TRIES {
            return Step::Failed(FetchError::Api {
                code: code.to_owned(),
                message: message.to_owned(),
            });
        }
        Step::Next(self.offset())
    }

    /// The page asked for at [`Listing::offset`] arrived: its stated `total`, its rows (each
    /// already checked, none repeated within the page) and its `RequestId`.
    pub fn page(
        &mut self,
        total: u64,
        rows: Vec<R>,
        request_id: String,
        key: impl Fn(&R) -> K,
    ) -> Step<R> {
        if total > self.max_total {
            return Step::Failed(FetchError::TooMany { total });
        }
        match self.total {
            None => self.total = Some(total),
            Some(first) if first != total => {
                return self.again(format!(
                    "the total changed from {first} to {total} while paging"
                ));
            }
            Some(_) => {}
        }
        let at = self.offset();
        let got = rows.len() as u64;
        let mut repeated = 0usize;
        for row in rows {
            if self.keys.insert(key(&row)) {
                self.rows.push(row);
            } else {
                repeated += 1;
            }
        }
        if repeated > 0 {
            return self.again(format!(
                "{repeated} rows of the page at offset {at} were listed before (Offset \
                 ignored, or the list shifted while paged)"
            ));
        }
        let have = self.offset();
        if have > total {
            return self.again(format!("{have} rows for a total of {total}"));
        }
        if have == total {
            self.keys = HashSet::new();
            return Step::Complete(std::mem::take(&mut self.rows), request_id);
        }
        if got < self.page_limit {
            return self.again(format!(
                "a page of {got} rows ended the listing at {have} of a total of {total}"
            ));
        }
        Step::Next(have)
    }
}

/// A complete port listing as a set: sorted by identity, one entry per identity (the
/// first by [`AssetPort`]'s order, i.e. the lowest `Pid`, wins: two workers on one socket
/// address are one open port).
pub fn port_set(mut rows: Vec<AssetPort>) -> Vec<AssetPort> {
    rows.sort();
    rows.dedup_by(|b, a| a.key() == b.key());
    rows.shrink_to_fit();
    rows
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::api::cwp::fields::{BindIp, Proto};
    use crate::api::cwp::ports::PortKeyRef;
    use crate::inventory::confirm;

    fn port(proto: &str, bind: &str, port: u16, process: &str, pid: u32) -> AssetPort {
        AssetPort {
            proto: Proto::parse(proto).unwrap(),
            bind_ip: BindIp::parse(bind).unwrap(),
            port,
            process: process.into(),
            pid: Some(pid),
            user: "root".into(),
            process_path: "".into(),
            first_seen: None,
        }
    }

    fn ports(n: u16) -> Vec<AssetPort> {
        (1..=n)
            .map(|p| port("tcp", "0.0.0.0", p, "srv", 100))
            .collect()
    }

    fn whole(r: &AssetPort) -> AssetPort {
        r.clone()
    }

    fn complete(step: Step<AssetPort>) -> Vec<AssetPort> {
        match step {
            Step::Complete(rows, _) => rows,
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn a_listing_paged_to_its_total_is_complete() {
        let all = ports(250);
        let mut l = Listing::new(100, 20_000);
        assert_eq!(l.offset(), 0);
        assert_eq!(
            l.page(250, all[..100].to_vec(), "r1".into(), whole),
            Step::Next(100)
        );
        assert_eq!(
            l.page(250, all[100..200].to_vec(), "r2".into(), whole),
            Step::Next(200)
        );
        let step = l.page(250, all[200..].to_vec(), "r3".into(), whole);
        assert_eq!(step, Step::Complete(all.clone(), "r3".into()));
        // An empty listing is complete at once.
        let mut l: Listing<AssetPort, AssetPort> = Listing::new(100, 20_000);
        assert_eq!(complete(l.page(0, vec![], "r".into(), whole)), vec![]);
    }

    #[test]
    fn a_total_that_changes_between_pages_starts_over() {
        let all = ports(150);
        let mut l = Listing::new(100, 20_000);
        assert_eq!(
            l.page(150, all[..100].to_vec(), "r".into(), whole),
            Step::Next(100)
        );
        assert_eq!(
            l.page(151, all[100..].to_vec(), "r".into(), whole),
            Step::Next(0)
        );
        assert_eq!((l.tries(), l.offset()), (2, 0));
        // The second try is consistent: complete.
        assert_eq!(
            l.page(150, all[..100].to_vec(), "r".into(), whole),
            Step::Next(100)
        );
        assert_eq!(
            complete(l.page(150, all[100..].to_vec(), "r".into(), whole)),
            all
        );
    }

    #[test]
    fn a_server_that_ignores_offset_never_completes() {
        let all = ports(150);
        let mut l = Listing::new(100, 20_000);
        let mut steps = Vec::new();
        for _ in 0..FETCH_TRIES {
            assert_eq!(
                l.page(150, all[..100].to_vec(), "r".into(), whole),
                Step::Next(100)
            );
            steps.push(l.page(150, all[..100].to_vec(), "r".into(), whole));
        }
        assert_eq!(&steps[..2], [Step::Next(0), Step::Next(0)]);
        let Step::Failed(e) = &steps[2] else {
            panic!("{steps:?}")
        };
        assert_eq!(e.code(), "InventoryError.Incomplete");
        assert!(e.to_string().contains("listed before"), "{e}");
    }

    #[test]
    fn a_total_that_lies_never_completes() {
        // Says 150, sends 120: the short page ends every try.
        let all = ports(120);
        let mut l = Listing::new(100, 20_000);
        let mut last = None;
        for _ in 0..FETCH_TRIES {
            assert_eq!(
                l.page(150, all[..100].to_vec(), "r".into(), whole),
                Step::Next(100)
            );
            last = Some(l.page(150, all[100..].to_vec(), "r".into(), whole));
        }
        let Some(Step::Failed(e)) = last else {
            panic!("{last:?}")
        };
        assert!(
            e.to_string()
                .contains("ended the listing at 120 of a total of 150"),
            "{e}"
        );
        // Says 50, sends 100 in a full page: more rows than the total.
        let mut l = Listing::new(100, 20_000);
        assert_eq!(l.page(50, ports(100), "r".into(), whole), Step::Next(0));
        // Says 0 and sends an empty page after a page of rows: the total changed.
        let mut l = Listing::new(100, 20_000);
        assert_eq!(l.page(150, ports(100), "r".into(), whole), Step::Next(100));
        assert_eq!(l.page(0, vec![], "r".into(), whole), Step::Next(0));
    }

    #[test]
    fn a_huge_total_is_refused_before_paging() {
        let mut l: Listing<AssetPort, AssetPort> = Listing::new(100, 20_000);
        let Step::Failed(e) = l.page(u64::MAX, vec![], "r".into(), whole) else {
            panic!()
        };
        assert_eq!(e.code(), "InventoryError.TooMany");
    }

    #[test]
    fn a_confirming_fetch_keeps_its_place_in_the_row_across_tries() {
        let mut l: Listing<AssetPort, AssetPort> = Listing::confirming(100, 20_000, 2);
        assert_eq!(l.page(150, ports(100), "r".into(), whole), Step::Next(100));
        assert_eq!(l.page(151, vec![], "r".into(), whole), Step::Next(0));
        assert_eq!((l.confirming_nth(), l.tries()), (2, 2));
        assert_eq!(Listing::<u8, u8>::new(100, 1).confirming_nth(), 0);
    }

    #[test]
    fn failed_requests_ask_again_then_fail_with_their_code() {
        let mut l: Listing<AssetPort, AssetPort> = Listing::new(100, 20_000);
        assert_eq!(l.page(150, ports(100), "r".into(), whole), Step::Next(100));
        assert_eq!(
            l.failed("ClientError.Decode", "Ports[3].Port"),
            Step::Next(100)
        );
        assert_eq!(l.failed("ClientError.Timeout", "slow"), Step::Next(100));
        let Step::Failed(e) = l.failed("ClientError.Decode", "Ports[3].BindIp") else {
            panic!()
        };
        assert_eq!(e.code(), "ClientError.Decode");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Whatever pages a server sends (repeats, shifting and lying totals, short and
        /// empty pages), a listing completes only with distinct rows, as many as the total
        /// every page of that try stated.
        #[test]
        fn a_listing_completes_only_when_consistent(
            pages in proptest::collection::vec(
                (0u64..7, proptest::collection::vec(0u8..8, 0..=3)),
                1..12,
            ),
        ) {
            let mut l: Listing<u8, u8> = Listing::new(3, 6);
            let mut totals: Vec<u64> = Vec::new();
            for (total, rows) in pages {
                totals.push(total);
                match l.page(total, rows, "r".into(), |r| *r) {
                    Step::Next(0) => totals.clear(),
                    Step::Next(offset) => proptest::prop_assert_eq!(offset, l.offset()),
                    Step::Complete(rows, _) => {
                        let distinct: BTreeSet<u8> = rows.iter().copied().collect();
                        proptest::prop_assert_eq!(distinct.len(), rows.len());
                        proptest::prop_assert!(totals.iter().all(|t| *t == rows.len() as u64));
                        break;
                    }
                    Step::Failed(e) => {
                        let expected = matches!(
                            e,
                            FetchError::Incomplete { tries: FETCH_TRIES, .. }
                                | FetchError::TooMany { total: 7.. }
                        );
                        proptest::prop_assert!(expected, "{e:?}");
                        break;
                    }
                }
            }
        }
    }

    #[test]
    fn machines_are_distinct_by_their_own_key() {
        // Two rows of one key with other contents (a status changed while paged) are a
        // repeat when the key says so.
        let mut l = Listing::new(2, 100);
        let rows = vec![("q-1", "ONLINE"), ("q-2", "ONLINE")];
        assert_eq!(l.page(3, rows, "r".into(), |r| r.0), Step::Next(2));
        assert_eq!(
            l.page(3, vec![("q-1", "OFFLINE")], "r".into(), |r| r.0),
            Step::Next(0)
        );
    }

    #[test]
    fn one_identity_in_two_rows_is_one_port() {
        // nginx workers with SO_REUSEPORT: one socket address, two pids. Distinct rows (the
        // listing counts both), one port.
        let rows = vec![
            port("tcp", "0.0.0.0", 80, "nginx", 1402),
            port("tcp", "0.0.0.0", 80, "nginx", 1401),
            port("tcp", "::", 80, "nginx", 1401),
            port("udp", "0.0.0.0", 80, "nginx", 1401),
        ];
        let mut l = Listing::new(100, 100);
        let all = complete(l.page(4, rows, "r".into(), whole));
        let set = port_set(all);
        assert_eq!(set.len(), 3);
        assert_eq!(set[0].pid, Some(1401), "the lowest pid stands for the port");
    }

    /// The close confirmation of yunjing's inventory works on cwp identities: a bind address
    /// or protocol change is a close and an open, a new pid is nothing, a close waits for a
    /// second listing.
    #[test]
    fn close_confirmation_is_shared_with_yunjing() {
        let last = port_set(vec![
            port("tcp", "0.0.0.0", 22, "sshd", 812),
            port("tcp", "127.0.0.1", 3306, "mysqld", 1400),
            port("udp", "0.0.0.0", 53, "named", 600),
        ]);
        let new = port_set(vec![
            port("tcp", "0.0.0.0", 22, "sshd", 9999),
            port("tcp", "0.0.0.0", 3306, "mysqld", 1400),
        ]);
        let awaiting: BTreeSet<PortKeyRef<'_>> = BTreeSet::new();
        let j = confirm::judge(&last, &new, AssetPort::key, |k| awaiting.contains(k));
        fn keys<'a>(v: &[&'a AssetPort]) -> Vec<PortKeyRef<'a>> {
            v.iter().map(|p| p.key()).collect()
        }
        let any = BindIp::parse("0.0.0.0").unwrap();
        let lo = BindIp::parse("127.0.0.1").unwrap();
        assert_eq!(keys(&j.opened), [("tcp", any, 3306, "mysqld")]);
        assert!(j.closed.is_empty());
        assert_eq!(
            keys(&j.unconfirmed),
            [("tcp", lo, 3306, "mysqld"), ("udp", any, 53, "named")]
        );
        // The second listing lacks them too: closed.
        let held: Vec<_> = j.unconfirmed.iter().map(|p| p.owned_key()).collect();
        let awaiting: BTreeSet<PortKeyRef<'_>> = held.iter().map(|k| k.key()).collect();
        let j = confirm::judge(&last, &new, AssetPort::key, |k| awaiting.contains(k));
        assert_eq!(j.closed.len(), 2);
        assert!(j.unconfirmed.is_empty());
    }
}
