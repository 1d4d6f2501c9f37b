//! What the `cwp` backend keeps while an engine runs ([`CwpState`]: the listing cursors, each
//! watched agent's Quuid, the port listings in progress), apart from the dispatcher's code
//! that drives it (`cwp.rs`), so the dispatcher can own the state without depending on that
//! code (as `inventory_state.rs` is to `inventory.rs`).

use std::collections::HashMap;

use tokio::time::Instant;

use crate::api::cwp::{self, AssetPort, Listing, MachineType, Quuid};
use crate::inventory::MAX_PORTS_PER_AGENT;
use crate::scheduler::AgentId;

/// Rows per page, both actions (the API's maximum `Limit`).
pub const PAGE: u64 = cwp::MAX_LIMIT;
/// One `DescribeMachines` listing: a machine type in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CwpListing {
    /// `MachineType`.
    pub machine_type: MachineType,
    /// `MachineRegion`.
    pub region: String,
}

/// The listings of an account in `region`: every machine type there, and the hosts outside
/// Tencent Cloud (`Other` in `ap-others`).
pub fn cwp_listings(region: &str) -> Vec<CwpListing> {
    MachineType::ALL
        .into_iter()
        .map(|machine_type| CwpListing {
            machine_type,
            region: if machine_type == MachineType::Other {
                cwp::machines::OTHERS_REGION.to_owned()
            } else {
                region.to_owned()
            },
        })
        .collect()
}

/// One listing's progress through its pass.
#[derive(Debug)]
pub(super) struct Cursor {
    pub(super) listing: CwpListing,
    /// The next page's `Offset`.
    pub(super) offset: u64,
    /// When the pass's first page was sent.
    pub(super) pass_start: Option<Instant>,
    /// Pages of this pass, from the last `TotalCount` (≥ 1).
    pub(super) pages: u64,
    /// Failed requests in a row.
    pub(super) errors: u32,
    /// Passes completed in this run.
    pub(super) passes: u32,
}

/// One machine's port listing in progress.
#[derive(Debug)]
pub(super) struct AssetFetch {
    pub(super) listing: Listing<AssetPort, AssetPort>,
    pub(super) machine_ip: String,
    pub(super) machine_name: String,
}

impl AssetFetch {
    pub(super) fn new(confirming: u32) -> Self {
        AssetFetch {
            listing: if confirming == 0 {
                Listing::new(PAGE, MAX_PORTS_PER_AGENT)
            } else {
                Listing::confirming(PAGE, MAX_PORTS_PER_AGENT, confirming)
            },
            machine_ip: String::new(),
            machine_name: String::new(),
        }
    }
}

/// What the `cwp` backend keeps while the engine runs.
#[derive(Debug, Default)]
pub(crate) struct CwpState {
    pub(super) cursors: Vec<Cursor>,
    /// Each watched agent's machine, from the listings.
    pub(super) quuids: HashMap<AgentId, Quuid>,
    /// Port listings in progress (a confirming one waits here between fetches).
    pub(super) fetches: HashMap<AgentId, AssetFetch>,
}

impl CwpState {
    /// An agent no longer watched: its machine and its fetch are forgotten.
    pub(super) fn forget(&mut self, id: AgentId) {
        self.quuids.remove(&id);
        self.fetches.remove(&id);
    }
}
