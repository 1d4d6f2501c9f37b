//! `[discovery]` as validated: which machines `DescribeMachines` is asked for, and how often.
//! The config check ([`crate::config`]) builds it; [`super::Discovery`] uses it.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Allowed values of `refresh`. Each refresh pages every type × region at the action's own
/// rate, so a short interval only keeps that lane busy; above a day the list is not kept up.
pub const REFRESH_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(24 * 60 * 60);
/// Default `refresh`.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(10 * 60);
/// Allowed values of `remove_after`: complete passes in a row a machine must be missing from
/// before its agent stops being watched (1: at the first, as before issue 20).
pub const REMOVE_AFTER_RANGE: RangeInclusive<i64> = 1..=100;
/// Default `remove_after`.
pub const DEFAULT_REMOVE_AFTER: u32 = 3;
/// Allowed values of `forget_after`: how long the last status and inventory of an agent that
/// left are kept, so that it comes back without repeating an event.
pub const FORGET_AFTER_RANGE: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(366 * 24 * 60 * 60);
/// Default `forget_after`.
pub const DEFAULT_FORGET_AFTER: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// At most this many regions: every region is paged on every refresh.
pub const MAX_REGIONS: usize = 64;
/// The longest `keywords` value, in characters.
pub const MAX_KEYWORDS_CHARS: usize = 128;

/// `DescribeMachines` `MachineType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MachineType {
    /// Cloud Virtual Machines.
    Cvm,
    /// Bare-metal servers.
    Bm,
}

impl MachineType {
    /// As the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            MachineType::Cvm => "CVM",
            MachineType::Bm => "BM",
        }
    }

    /// From the config's spelling (exact, upper case as the API).
    pub fn parse(text: &str) -> Option<MachineType> {
        match text {
            "CVM" => Some(MachineType::Cvm),
            "BM" => Some(MachineType::Bm),
            _ => None,
        }
    }
}

/// `agent_status`: the `Status` filter of `DescribeMachines`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentStatusFilter {
    /// No filter.
    All,
    /// `ONLINE`.
    Online,
    /// `OFFLINE`.
    Offline,
    /// `UNINSTALLED`.
    Uninstalled,
}

impl AgentStatusFilter {
    /// The filter value to send; `None` for [`AgentStatusFilter::All`].
    pub fn filter_value(self) -> Option<&'static str> {
        match self {
            AgentStatusFilter::All => None,
            AgentStatusFilter::Online => Some("ONLINE"),
            AgentStatusFilter::Offline => Some("OFFLINE"),
            AgentStatusFilter::Uninstalled => Some("UNINSTALLED"),
        }
    }

    /// From the config's spelling (`ALL`, `ONLINE`, `OFFLINE`, `UNINSTALLED`).
    pub fn parse(text: &str) -> Option<AgentStatusFilter> {
        match text {
            "ALL" => Some(AgentStatusFilter::All),
            "ONLINE" => Some(AgentStatusFilter::Online),
            "OFFLINE" => Some(AgentStatusFilter::Offline),
            "UNINSTALLED" => Some(AgentStatusFilter::Uninstalled),
            _ => None,
        }
    }
}

/// `[discovery]` for one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoverySettings {
    /// Default false: only the watchlist is watched.
    pub enabled: bool,
    /// Default `["CVM"]`; non-empty, no duplicates.
    pub machine_types: Vec<MachineType>,
    /// `MachineRegion`s to page; required (non-empty) when enabled, at most [`MAX_REGIONS`].
    pub regions: Vec<String>,
    /// Default [`AgentStatusFilter::All`].
    pub agent_status: AgentStatusFilter,
    /// The `Keywords` filter; `None` for `keywords = ""` (the default).
    pub keywords: Option<String>,
    /// How often the machines are listed again, within [`REFRESH_RANGE`]; default 10 minutes.
    pub refresh: Duration,
    /// A machine's agent leaves after this many complete passes in a row without it, within
    /// [`REMOVE_AFTER_RANGE`]; default [`DEFAULT_REMOVE_AFTER`].
    pub remove_after: u32,
    /// What is known of an agent that left is kept this long, within [`FORGET_AFTER_RANGE`];
    /// default [`DEFAULT_FORGET_AFTER`].
    pub forget_after: Duration,
}

impl Default for DiscoverySettings {
    /// Off, with the documented defaults for every key.
    fn default() -> Self {
        DiscoverySettings {
            enabled: false,
            machine_types: vec![MachineType::Cvm],
            regions: Vec::new(),
            agent_status: AgentStatusFilter::All,
            keywords: None,
            refresh: DEFAULT_REFRESH,
            remove_after: DEFAULT_REMOVE_AFTER,
            forget_after: DEFAULT_FORGET_AFTER,
        }
    }
}
