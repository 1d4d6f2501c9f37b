//! What the inventory does next, decided purely (no I/O, no clock: `now` comes in as Unix
//! seconds), so every rule is unit-tested on plain values:
//! - after a status answer: fetch the ports (a transition to `COMPLETE`, or `COMPLETE` with no
//!   snapshot yet and no fetch given up on since the last transition), or create a task for an
//!   agent without one (`create_missing`, at most once per `rescan_interval`, else per hour);
//! - rescans: each agent has a fixed slot in the interval (by a hash of its Uuid), so tasks
//!   are spread evenly over it, at start and after a reload as in the steady state; at its
//!   slot an agent gets a task when its last completed task is older than
//!   [`RESCAN_AGE_PERCENT`] of the interval (the rest absorbs the collection time, so an
//!   agent rescanned at its slot is due again at the next one, not every other).

use std::time::Duration;

use super::lane::Action;
use crate::config::{ApiSettings, InventorySettings};
use crate::inventory::Baseline;
use crate::status::Status;

/// How the engine keeps the inventory (from `[inventory]` and `[api]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InventoryOptions {
    /// Fetch and compare ports at all.
    pub enabled: bool,
    /// Zero: no rescans.
    pub rescan_interval: Duration,
    /// A task on `NO_TASK`.
    pub create_missing: bool,
    /// How a first snapshot is reported.
    pub baseline: Baseline,
    /// Requests per second per action, in `Action::ALL` order: `DescribeOpenPortTaskStatus`,
    /// `CreateOpenPortTask`, `DescribeOpenPorts`, `DescribeMachines`,
    /// `DescribeAssetPortInfoList` (each account's lanes take their own).
    pub action_rates: [u32; 5],
    /// Requests in flight at most per lane, in the same order: each lane's own budget, so a
    /// slow action never holds the slots of another.
    pub action_in_flight: [usize; 5],
}

impl InventoryOptions {
    /// From the validated settings.
    pub fn from_settings(api: &ApiSettings, inventory: &InventorySettings) -> Self {
        InventoryOptions {
            enabled: inventory.enabled,
            rescan_interval: inventory.rescan_for(api.service),
            create_missing: inventory.create_missing,
            baseline: inventory.baseline,
            action_rates: Action::ALL.map(|a| api.rate_of(a.api_name())),
            action_in_flight: Action::ALL.map(|a| api.in_flight_of(a.api_name())),
        }
    }
}

impl InventoryOptions {
    /// For a `cwp` account whose `[discovery]` is on: its status lane keeps
    /// [`crate::discovery::cwp::status_share`] of the `DescribeMachines` rate, discovery's own
    /// limiter the rest, so together they never exceed it.
    pub fn sharing_machines_with_discovery(mut self, discovering: bool) -> Self {
        if discovering {
            let at = Action::ListMachines.index();
            self.action_rates[at] = crate::discovery::cwp::status_share(self.action_rates[at]);
        }
        self
    }
}

/// Without `rescan_interval`, `create_missing` creates a task at most this often per agent.
pub const CREATE_MISSING_EVERY: Duration = Duration::from_secs(60 * 60);

/// At its slot, an agent whose last completed task is older than this share of
/// `rescan_interval` gets a task.
pub const RESCAN_AGE_PERCENT: u64 = 90;

/// Why a task is created (`scan_requested`'s `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    /// The last completed task is older than `rescan_interval`.
    Rescan,
    /// The agent had no task (`create_missing`).
    Missing,
}

impl Reason {
    /// The event's `reason` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rescan => "rescan",
            Reason::Missing => "missing",
        }
    }
}

/// A job the inventory wants after an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FollowUp {
    /// Page `DescribeOpenPorts` from offset 0.
    FetchPorts,
    /// `CreateOpenPortTask`.
    CreateTask(Reason),
}

/// What is known of one agent's inventory when a status answer arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Facts {
    /// The answer's status differs from the last known one.
    pub changed: bool,
    /// A complete snapshot is stored.
    pub has_snapshot: bool,
    /// A fetch is in progress.
    pub fetching: bool,
    /// A fetch failed (`inventory_failed`) since the last transition.
    pub gave_up: bool,
    /// Unix seconds of the last `CreateOpenPortTask` sent.
    pub requested_at: Option<u64>,
    /// Unix seconds now.
    pub now: u64,
}

/// The follow-up a status answer asks for, if any.
pub(crate) fn after_status(
    options: &InventoryOptions,
    status: &Status,
    facts: Facts,
) -> Option<FollowUp> {
    if !options.enabled {
        return None;
    }
    match status {
        Status::Complete if facts.fetching => None,
        Status::Complete if facts.changed => Some(FollowUp::FetchPorts),
        Status::Complete if !facts.has_snapshot && !facts.gave_up => Some(FollowUp::FetchPorts),
        Status::NoTask if options.create_missing => {
            let every = if options.rescan_interval.is_zero() {
                CREATE_MISSING_EVERY
            } else {
                options.rescan_interval
            };
            let due = facts
                .requested_at
                .is_none_or(|at| facts.now.saturating_sub(at) >= every.as_secs());
            due.then_some(FollowUp::CreateTask(Reason::Missing))
        }
        _ => None,
    }
}

/// An agent's rescan slot came: create a task now? Not while a task runs (`COLLECTING`) or
/// the agent is offline (the API refuses both); else yes when it never completed one
/// (`fetched_at`, Unix seconds) or the last is older than [`RESCAN_AGE_PERCENT`] of
/// `rescan_interval`.
pub(crate) fn rescan_now(
    rescan_interval: Duration,
    status: &Status,
    fetched_at: Option<u64>,
    now: u64,
) -> bool {
    if matches!(status, Status::Collecting | Status::AgentOffline) {
        return false;
    }
    let Some(at) = fetched_at else {
        return true;
    };
    let age = now.saturating_sub(at);
    age.saturating_mul(100) >= rescan_interval.as_secs().saturating_mul(RESCAN_AGE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Baseline;

    fn options(create_missing: bool, rescan_s: u64) -> InventoryOptions {
        InventoryOptions {
            enabled: true,
            rescan_interval: Duration::from_secs(rescan_s),
            create_missing,
            baseline: Baseline::Summary,
            action_rates: [20; 5],
            action_in_flight: [32; 5],
        }
    }

    fn facts() -> Facts {
        Facts {
            changed: false,
            has_snapshot: true,
            fetching: false,
            gave_up: false,
            requested_at: None,
            now: 10_000,
        }
    }

    #[test]
    fn complete_fetches_on_a_transition_or_when_nothing_is_stored() {
        let o = options(false, 0);
        let fetch = Some(FollowUp::FetchPorts);
        assert_eq!(
            after_status(
                &o,
                &Status::Complete,
                Facts {
                    changed: true,
                    ..facts()
                }
            ),
            fetch
        );
        assert_eq!(
            after_status(&o, &Status::Complete, facts()),
            None,
            "unchanged, stored"
        );
        let empty = Facts {
            has_snapshot: false,
            ..facts()
        };
        assert_eq!(
            after_status(&o, &Status::Complete, empty),
            fetch,
            "at start, nothing stored"
        );
        assert_eq!(
            after_status(
                &o,
                &Status::Complete,
                Facts {
                    gave_up: true,
                    ..empty
                }
            ),
            None
        );
        let busy = Facts {
            fetching: true,
            changed: true,
            ..facts()
        };
        assert_eq!(
            after_status(&o, &Status::Complete, busy),
            None,
            "one fetch at a time"
        );
        assert_eq!(
            after_status(
                &o,
                &Status::Collecting,
                Facts {
                    changed: true,
                    ..facts()
                }
            ),
            None
        );
        let off = InventoryOptions {
            enabled: false,
            ..o
        };
        assert_eq!(
            after_status(
                &off,
                &Status::Complete,
                Facts {
                    changed: true,
                    ..facts()
                }
            ),
            None
        );
    }

    #[test]
    fn missing_tasks_are_created_at_most_once_per_interval_else_per_hour() {
        let missing = Some(FollowUp::CreateTask(Reason::Missing));
        assert_eq!(
            after_status(&options(false, 0), &Status::NoTask, facts()),
            None
        );
        let o = options(true, 0);
        assert_eq!(after_status(&o, &Status::NoTask, facts()), missing);
        let recent = Facts {
            requested_at: Some(10_000 - 3599),
            ..facts()
        };
        assert_eq!(after_status(&o, &Status::NoTask, recent), None);
        let hour = Facts {
            requested_at: Some(10_000 - 3600),
            ..facts()
        };
        assert_eq!(after_status(&o, &Status::NoTask, hour), missing);
        let o = options(true, 600);
        assert_eq!(
            after_status(
                &o,
                &Status::NoTask,
                Facts {
                    requested_at: Some(9_400),
                    ..facts()
                }
            ),
            missing
        );
        assert_eq!(
            after_status(
                &o,
                &Status::NoTask,
                Facts {
                    requested_at: Some(9_401),
                    ..facts()
                }
            ),
            None
        );
        // A clock that went back is not "long ago".
        assert_eq!(
            after_status(
                &o,
                &Status::NoTask,
                Facts {
                    requested_at: Some(20_000),
                    ..facts()
                }
            ),
            None
        );
    }

    #[test]
    fn rescans_wait_for_the_last_completed_task_to_age() {
        let twelve_h = Duration::from_secs(12 * 3600);
        let c = &Status::Complete;
        assert!(rescan_now(twelve_h, c, None, 100));
        assert!(rescan_now(twelve_h, &Status::NoTask, None, 100));
        assert!(
            !rescan_now(twelve_h, &Status::Collecting, None, 100),
            "a task runs"
        );
        assert!(!rescan_now(twelve_h, &Status::AgentOffline, None, 100));
        assert!(rescan_now(twelve_h, c, Some(100), 100 + 43_200));
        assert!(rescan_now(twelve_h, c, Some(100), 100 + 38_880), "90 %");
        assert!(!rescan_now(twelve_h, c, Some(100), 100 + 38_879));
        assert!(
            !rescan_now(twelve_h, c, Some(u64::MAX), 0),
            "a clock that went back"
        );
        // Saturating, not overflowing, at the extremes.
        assert!(!rescan_now(
            Duration::from_secs(u64::MAX),
            c,
            Some(0),
            1_000
        ));
        assert!(rescan_now(Duration::from_secs(100), c, Some(0), u64::MAX));
    }
}
