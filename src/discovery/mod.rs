//! Agent discovery: the account's machines from `DescribeMachines` instead of (or on top of)
//! a watchlist file. This module owns what `[discovery]` means ([`settings`]), the paging of
//! `DescribeMachines` with its completeness rules ([`paging`]), how the result merges with the
//! listed agents and when it changed ([`mod@merge`]), which agents stay and for how long what
//! is known of those that left is kept ([`membership`], saved by [`remembered`]), and the
//! refresh loop ([`refresh`]).
//!
//! One [`Discovery`] serves one account: it holds its own source of pages and its own strict
//! limiter (`DescribeMachines` has a quota of its own, so discovery never takes slots of the
//! status lane), and no global state, so several accounts can each run one.
//!
//! The result is applied by the daemon through the same engine path as a SIGHUP watchlist
//! reload, so phasing, orphans, state and exactly-once stay the engine's.

pub mod cwp;
pub mod membership;
pub mod merge;
pub mod paging;
pub mod refresh;
pub mod remembered;
pub mod settings;

use std::future::Future;

use crate::api::machines::{MAX_PAGE, MachinesPage, MachinesQuery};
use crate::api::{ApiError, Client};
use crate::pacing::Pacer;
use crate::watchlist::Agent;

pub use self::merge::{Discovered, merge, same_list};
pub use self::paging::{Paging, Step, Suspect};
pub use self::settings::{
    AgentStatusFilter, DEFAULT_FORGET_AFTER, DEFAULT_REFRESH, DEFAULT_REMOVE_AFTER,
    DiscoverySettings, FORGET_AFTER_RANGE, MAX_KEYWORDS_CHARS, MAX_REGIONS, MachineType,
    REFRESH_RANGE, REMOVE_AFTER_RANGE,
};

/// At most this many machines over all types and regions: the watchlist's scale (100,000
/// agents), so a runaway `TotalCount` cannot grow memory without bound.
pub const MAX_MACHINES: u64 = 100_000;
/// A type × region whose listing is suspect (`TotalCount` changed while it was paged, or a
/// page repeated a machine: see [`paging`]) is listed again from the start, at most this many
/// times in all.
pub const MAX_TRIES: u32 = 3;

/// Why one discovery pass failed. The last good list stays in force.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DiscoveryError {
    /// A `DescribeMachines` call failed.
    #[error("DescribeMachines {machine_type} in {region}: {source}")]
    Api {
        /// `MachineType` asked.
        machine_type: &'static str,
        /// `MachineRegion` asked.
        region: String,
        /// The call's error.
        source: ApiError,
    },
    /// The list kept changing while it was paged, or its pages kept repeating machines.
    #[error(
        "DescribeMachines {machine_type} in {region}: no complete listing in {tries} tries \
         (last: {why})"
    )]
    Incomplete {
        /// `MachineType` asked.
        machine_type: &'static str,
        /// `MachineRegion` asked.
        region: String,
        /// Tries made.
        tries: u32,
        /// What was wrong with the last try.
        why: &'static str,
    },
    /// More machines than [`MAX_MACHINES`].
    #[error(
        "DescribeMachines announces more than {MAX_MACHINES} machines; narrow [discovery] with \
         regions, agent_status or keywords"
    )]
    TooMany,
}

impl DiscoveryError {
    /// Stable code: the API's (or `ClientError.*`) for a failed call, else `Discovery.*`.
    pub fn code(&self) -> &str {
        match self {
            DiscoveryError::Api { source, .. } => source.code(),
            DiscoveryError::Incomplete { .. } => "Discovery.Incomplete",
            DiscoveryError::TooMany => "Discovery.TooManyMachines",
        }
    }
}

/// Whatever answers `DescribeMachines` pages: the API client, or a fake under paused time.
pub trait MachineSource: Send + Sync + 'static {
    /// One page.
    fn page(
        &self,
        query: &MachinesQuery,
    ) -> impl Future<Output = Result<MachinesPage, ApiError>> + Send;
}

impl MachineSource for Client {
    fn page(
        &self,
        query: &MachinesQuery,
    ) -> impl Future<Output = Result<MachinesPage, ApiError>> + Send {
        let client = self.clone();
        let query = query.clone();
        async move { client.describe_machines(&query).await }
    }
}

/// Discovery for one account.
pub struct Discovery<S> {
    source: S,
    settings: DiscoverySettings,
    pacer: Pacer,
}

impl<S: MachineSource> Discovery<S> {
    /// Discovery through `source`, at most `rate` `DescribeMachines` requests per second.
    pub fn new(source: S, settings: DiscoverySettings, rate: u32) -> Self {
        Discovery {
            source,
            settings,
            pacer: Pacer::new(rate),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &DiscoverySettings {
        &self.settings
    }

    /// One full pass: every machine type × region, every page, complete or an error.
    pub async fn discover(&mut self) -> Result<Discovered, DiscoveryError> {
        let mut found = Discovered::default();
        let mut budget = MAX_MACHINES;
        let types = self.settings.machine_types.clone();
        let regions = self.settings.regions.clone();
        for machine_type in types {
            for region in &regions {
                let rows = self.list_one(machine_type.as_str(), region, budget).await?;
                budget = budget.saturating_sub(rows.len() as u64);
                found.add(rows);
            }
        }
        Ok(found)
    }

    /// Every row of one type × region, listed again when it changed under us.
    async fn list_one(
        &mut self,
        machine_type: &'static str,
        region: &str,
        budget: u64,
    ) -> Result<Vec<crate::api::machines::MachineRow>, DiscoveryError> {
        let mut tries = 0;
        let mut why = "";
        'again: while tries < MAX_TRIES {
            tries += 1;
            let mut paging = Paging::new(budget);
            let mut offset = 0;
            loop {
                let query = MachinesQuery {
                    machine_type,
                    region: region.to_owned(),
                    status: self.settings.agent_status.filter_value(),
                    keywords: self.settings.keywords.clone(),
                    offset,
                    limit: MAX_PAGE,
                };
                self.pacer.acquire().await;
                let page =
                    self.source
                        .page(&query)
                        .await
                        .map_err(|source| DiscoveryError::Api {
                            machine_type,
                            region: region.to_owned(),
                            source,
                        })?;
                match paging.take(page)? {
                    Step::Next { offset: next } => offset = next,
                    Step::Done(mut rows) => {
                        // A row that does not say its region is in the one asked for.
                        for row in &mut rows {
                            row.facts = std::mem::take(&mut row.facts).or_region(region);
                        }
                        return Ok(rows);
                    }
                    Step::Restart(suspect) => {
                        why = suspect.describe();
                        continue 'again;
                    }
                }
            }
        }
        Err(DiscoveryError::Incomplete {
            machine_type,
            region: region.to_owned(),
            tries,
            why,
        })
    }
}

/// The agents to watch: the listed ones, plus what discovery found (see [`merge()`]).
pub fn agents_to_watch(listed: &[Agent], discovered: Option<&Discovered>) -> Vec<Agent> {
    match discovered {
        Some(d) => merge(listed, &d.agents),
        None => listed.to_vec(),
    }
}

#[cfg(test)]
mod tests;
