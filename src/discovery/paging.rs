//! Completeness of one paged `DescribeMachines` listing (one type × region), pure.
//!
//! A listing is complete when the *distinct* machines collected equal `TotalCount` and
//! `TotalCount` stayed the same on every page; a row count that merely reaches `TotalCount`
//! proves nothing (a server that ignores `Offset` sends the same rows again, a list that
//! shifts while paged shows a row twice and skips another). So every row must be new: a row
//! seen before in this listing, on this page or an earlier one, makes the listing suspect and
//! it starts again ([`Step::Restart`]), as when `TotalCount` changes, a page is longer than
//! what is left or one is empty before the end. A list that is not complete is never used,
//! because a missing machine would count towards its agent's removal.
//!
//! Identity of a row: its agent `Uuid`; for a machine without one (its agent long offline:
//! skipped, but counted in `TotalCount`) its `Quuid`, the machine's own id, which the API
//! gives for every machine. A row with neither has nothing that tells it from another such
//! row, so it counts by number: it is never watched, and refusing it would refuse real
//! listings.

use std::collections::HashSet;

use crate::api::machines::{MachineRow, MachinesPage};

use super::DiscoveryError;

/// What to do after a page.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Ask for the page at this offset.
    Next {
        /// `Offset` of the next page.
        offset: u64,
    },
    /// Complete: every row, each machine once.
    Done(Vec<MachineRow>),
    /// The list changed while paged, or the server repeated rows: start again from offset 0.
    Restart(Suspect),
}

/// Why a listing starts again (named in `Discovery.Incomplete` when it never completes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suspect {
    /// `TotalCount` differs from the first page's.
    TotalChanged,
    /// A row of a machine already listed (same `Uuid`, or same `Quuid` without one).
    Repeated,
    /// More rows than `TotalCount`, or an empty page before it was reached.
    Count,
}

impl Suspect {
    /// For the error message.
    pub fn describe(self) -> &'static str {
        match self {
            Suspect::TotalChanged => "TotalCount changed while it was paged",
            Suspect::Repeated => "a page repeated a machine already listed",
            Suspect::Count => "the pages did not add up to TotalCount",
        }
    }
}

/// The pages of one listing so far.
#[derive(Debug)]
pub struct Paging {
    budget: u64,
    total: Option<u64>,
    rows: Vec<MachineRow>,
    uuids: HashSet<u128>,
    quuids: HashSet<String>,
}

impl Paging {
    /// A listing that may hold at most `budget` rows.
    pub fn new(budget: u64) -> Self {
        Paging {
            budget,
            total: None,
            rows: Vec::new(),
            uuids: HashSet::new(),
            quuids: HashSet::new(),
        }
    }

    /// Takes the next page (the one at the offset last returned, 0 first).
    pub fn take(&mut self, page: MachinesPage) -> Result<Step, DiscoveryError> {
        if page.total > self.budget {
            return Err(DiscoveryError::TooMany);
        }
        match self.total {
            Some(total) if total != page.total => return Ok(Step::Restart(Suspect::TotalChanged)),
            Some(_) => {}
            None => self.total = Some(page.total),
        }
        let total = page.total;
        let had = self.rows.len() as u64;
        let got = page.rows.len() as u64;
        // More rows than announced, or an empty page before the end: offsets moved.
        if had.saturating_add(got) > total || (got == 0 && had < total) {
            return Ok(Step::Restart(Suspect::Count));
        }
        for row in &page.rows {
            let new = match (&row.uuid, &row.quuid) {
                (Some(uuid), _) => self.uuids.insert(uuid.value()),
                (None, Some(quuid)) => self.quuids.insert(quuid.clone()),
                (None, None) => true,
            };
            if !new {
                return Ok(Step::Restart(Suspect::Repeated));
            }
        }
        // Every row is a distinct machine: the count of rows is the count of machines.
        self.rows.extend(page.rows);
        let now = had + got;
        if now == total {
            Ok(Step::Done(std::mem::take(&mut self.rows)))
        } else {
            Ok(Step::Next { offset: now })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent_uuid::AgentUuid;

    fn uuid_row(i: u32) -> MachineRow {
        MachineRow {
            uuid: Some(AgentUuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap()),
            name: None,
            quuid: None,
            facts: Default::default(),
        }
    }

    fn rows(from: u32, n: u32) -> Vec<MachineRow> {
        (from..from + n).map(uuid_row).collect()
    }

    fn page(total: u64, from: u32, n: u32) -> MachinesPage {
        MachinesPage {
            total,
            rows: rows(from, n),
        }
    }

    /// A machine without a Uuid, with `Quuid` `q-i` (or none).
    fn anonymous(quuid: Option<u32>) -> MachineRow {
        MachineRow {
            uuid: None,
            name: None,
            quuid: quuid.map(|q| format!("q-{q}")),
            facts: Default::default(),
        }
    }

    #[test]
    fn pages_until_total_then_done_with_every_row() {
        let mut p = Paging::new(1_000);
        assert_eq!(
            p.take(page(250, 0, 100)).unwrap(),
            Step::Next { offset: 100 }
        );
        assert_eq!(
            p.take(page(250, 100, 100)).unwrap(),
            Step::Next { offset: 200 }
        );
        assert_eq!(
            p.take(page(250, 200, 50)).unwrap(),
            Step::Done(rows(0, 250))
        );
    }

    #[test]
    fn empty_listing_is_complete_at_once() {
        assert_eq!(
            Paging::new(10).take(page(0, 0, 0)).unwrap(),
            Step::Done(vec![])
        );
    }

    #[test]
    fn a_changed_total_restarts() {
        let mut p = Paging::new(1_000);
        p.take(page(150, 0, 100)).unwrap();
        assert_eq!(
            p.take(page(149, 100, 49)).unwrap(),
            Step::Restart(Suspect::TotalChanged)
        );
    }

    #[test]
    fn a_short_or_long_page_restarts() {
        let mut p = Paging::new(1_000);
        p.take(page(150, 0, 100)).unwrap();
        assert_eq!(
            p.take(page(150, 100, 0)).unwrap(),
            Step::Restart(Suspect::Count)
        );
        let mut p = Paging::new(1_000);
        assert_eq!(
            p.take(page(2, 0, 3)).unwrap(),
            Step::Restart(Suspect::Count)
        );
    }

    #[test]
    fn rows_count_by_distinct_machine_never_by_row() {
        // The review's case: 150 rows of 2 Uuids (TotalCount 150) is not 150 machines.
        let mut p = Paging::new(1_000);
        let two = MachinesPage {
            total: 150,
            rows: (0..100).map(|i| uuid_row(i % 2)).collect(),
        };
        assert_eq!(p.take(two).unwrap(), Step::Restart(Suspect::Repeated));
        // A server that ignores Offset: the same 100 rows again for TotalCount 200.
        let mut p = Paging::new(1_000);
        assert_eq!(
            p.take(page(200, 0, 100)).unwrap(),
            Step::Next { offset: 100 }
        );
        assert_eq!(
            p.take(page(200, 0, 100)).unwrap(),
            Step::Restart(Suspect::Repeated)
        );
        // A list that shifted by one while paged: row 99 shows again on the second page
        // (and another machine is never seen), the row count still adds up to 150.
        let mut p = Paging::new(1_000);
        p.take(page(150, 0, 100)).unwrap();
        assert_eq!(
            p.take(page(150, 99, 50)).unwrap(),
            Step::Restart(Suspect::Repeated)
        );
    }

    #[test]
    fn machines_without_uuid_count_by_quuid_else_by_number() {
        // Distinct Quuids: three machines, one of them with a Uuid.
        let mut p = Paging::new(10);
        let rows = vec![anonymous(Some(1)), anonymous(Some(2)), uuid_row(7)];
        let done = p
            .take(MachinesPage {
                total: 3,
                rows: rows.clone(),
            })
            .unwrap();
        assert_eq!(done, Step::Done(rows));
        // The same Quuid twice is one machine listed twice.
        let mut p = Paging::new(10);
        let twice = MachinesPage {
            total: 2,
            rows: vec![anonymous(Some(1)), anonymous(Some(1))],
        };
        assert_eq!(p.take(twice).unwrap(), Step::Restart(Suspect::Repeated));
        // Repeated across pages too.
        let mut p = Paging::new(10);
        let first = MachinesPage {
            total: 2,
            rows: vec![anonymous(Some(1))],
        };
        assert_eq!(p.take(first.clone()).unwrap(), Step::Next { offset: 1 });
        assert_eq!(p.take(first).unwrap(), Step::Restart(Suspect::Repeated));
        // Without any identity, rows count by number.
        let mut p = Paging::new(10);
        let bare = vec![anonymous(None), anonymous(None), uuid_row(1)];
        assert_eq!(
            p.take(MachinesPage {
                total: 3,
                rows: bare.clone()
            })
            .unwrap(),
            Step::Done(bare)
        );
    }

    #[test]
    fn a_total_over_the_budget_is_an_error() {
        let e = Paging::new(99).take(page(100, 0, 0)).unwrap_err();
        assert_eq!(e.code(), "Discovery.TooManyMachines");
        let e = Paging::new(u64::MAX).take(page(u64::MAX, 0, 1));
        assert!(matches!(e, Ok(Step::Next { offset: 1 })));
    }
}
