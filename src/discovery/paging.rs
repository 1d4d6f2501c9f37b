//! Completeness of one paged `DescribeMachines` listing (one type × region), pure.
//!
//! A listing is complete when the rows collected equal `TotalCount` and `TotalCount` stayed the
//! same on every page. Anything else means machines came or went while we paged (offsets
//! shift: a row may be skipped or seen twice), so the listing starts again
//! ([`Step::Restart`]); a list that is not complete is never used, because a missing machine
//! would stop its agent's polling.

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
    /// Complete: every row.
    Done(Vec<MachineRow>),
    /// The list changed while paged: start again from offset 0.
    Restart,
}

/// The pages of one listing so far.
#[derive(Debug)]
pub struct Paging {
    budget: u64,
    total: Option<u64>,
    rows: Vec<MachineRow>,
}

impl Paging {
    /// A listing that may hold at most `budget` rows.
    pub fn new(budget: u64) -> Self {
        Paging {
            budget,
            total: None,
            rows: Vec::new(),
        }
    }

    /// Takes the next page (the one at the offset last returned, 0 first).
    pub fn take(&mut self, page: MachinesPage) -> Result<Step, DiscoveryError> {
        if page.total > self.budget {
            return Err(DiscoveryError::TooMany);
        }
        match self.total {
            Some(total) if total != page.total => return Ok(Step::Restart),
            Some(_) => {}
            None => self.total = Some(page.total),
        }
        let total = page.total;
        let had = self.rows.len() as u64;
        let got = page.rows.len() as u64;
        // More rows than announced, or an empty page before the end: offsets moved.
        if had.saturating_add(got) > total || (got == 0 && had < total) {
            return Ok(Step::Restart);
        }
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

    fn rows(from: u32, n: u32) -> Vec<MachineRow> {
        (from..from + n)
            .map(|i| MachineRow {
                uuid: Some(AgentUuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap()),
                name: None,
            })
            .collect()
    }

    fn page(total: u64, from: u32, n: u32) -> MachinesPage {
        MachinesPage {
            total,
            rows: rows(from, n),
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
        assert_eq!(p.take(page(149, 100, 49)).unwrap(), Step::Restart);
    }

    #[test]
    fn a_short_or_long_page_restarts() {
        let mut p = Paging::new(1_000);
        p.take(page(150, 0, 100)).unwrap();
        assert_eq!(p.take(page(150, 100, 0)).unwrap(), Step::Restart);
        let mut p = Paging::new(1_000);
        assert_eq!(p.take(page(2, 0, 3)).unwrap(), Step::Restart);
    }

    #[test]
    fn a_total_over_the_budget_is_an_error() {
        let e = Paging::new(99).take(page(100, 0, 0)).unwrap_err();
        assert_eq!(e.code(), "Discovery.TooManyMachines");
        let e = Paging::new(u64::MAX).take(page(u64::MAX, 0, 1));
        assert!(matches!(e, Ok(Step::Next { offset: 1 })));
    }
}
