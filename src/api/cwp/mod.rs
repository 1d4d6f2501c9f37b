//! The `cwp` API's client side (service `cwp`, version `2018-02-28`, endpoint
//! `cwp.tencentcloudapi.com`): typed requests and checked answers for `DescribeMachines`
//! ([`machines`]) and `DescribeAssetPortInfoList` ([`ports`]), the checked field types
//! ([`fields`]: port and pid strings, bind address and its class, protocol, Quuid, first
//! sighting), the typed refusal of a bad answer ([`answer`]) and the completeness of a paged
//! listing ([`listing`]).
//!
//! Why here, under `api`: the same signed [`Client`] sends these requests (signed for `cwp`,
//! [`CwpClient`] is a typed view of it that offers only the `cwp` actions), and like
//! yunjing's parsers ([`crate::api::ports`], [`crate::api::machines`]) these turn an answer
//! into checked values or a `ClientError.Decode`. What the engine makes of them (statuses,
//! snapshots, events) is the engine's and the inventory's; [`listing`] holds the one piece of
//! inventory logic that is specific to these answers (generic over the row, so it can serve
//! both backends).
//!
//! Errors: `cwp` answers the common error codes, classified by [`crate::api::classify`];
//! [`class`] adjusts the one difference ([`class`]'s docs). Every refused answer is
//! `ClientError.Decode` naming the field, with the `RequestId`.

pub mod answer;
pub use crate::port_facts as fields;
pub mod listing;
pub mod machines;
pub mod ports;

use super::client::{Client, ClientBuildError, ClientOptions};
use super::error::{ApiError, ErrorClass};
use super::service::ApiService;
use crate::signing::Credentials;
use crate::tls::TlsTrust;

pub use answer::BadAnswer;
pub use fields::{BindClass, BindIp, FirstSeen, PortProblem, Problem, Proto, Quuid};
pub use listing::{Listing, Step, port_set};
pub use machines::{Filter, FilterName, Machine, MachineType, MachinesPage, MachinesQuery};
pub use ports::{AssetPort, AssetPortKey, PortsPage, PortsQuery};

/// The signing service.
pub const SERVICE: &str = "cwp";
/// `X-TC-Version`.
pub const API_VERSION: &str = "2018-02-28";
/// The endpoint when `[api] endpoint` is not set.
pub const DEFAULT_ENDPOINT: &str = "https://cwp.tencentcloudapi.com";
/// The API's largest `Limit` (both actions).
pub const MAX_LIMIT: u64 = 100;

/// A request that must not be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// `Limit` outside 1..=[`MAX_LIMIT`] (the API answers `InvalidParameter` above 100).
    #[error("Limit {limit} is outside 1 to {MAX_LIMIT}")]
    Limit {
        /// What was asked.
        limit: u64,
    },
    /// `MachineRegion` is not a region id.
    #[error("MachineRegion must be a region id such as ap-guangzhou (or ap-others)")]
    Region,
    /// Too many or no values for a filter.
    #[error("filter {name} takes 1 to {max} values, not {count}")]
    FilterValues {
        /// The filter.
        name: &'static str,
        /// Values given.
        count: usize,
        /// Values allowed.
        max: usize,
    },
    /// An empty, oversized or control-character value.
    #[error("filter {name} has an empty, oversized or unprintable value")]
    FilterValue {
        /// The filter.
        name: &'static str,
    },
}

impl RequestError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        "ClientError.Request"
    }
}

/// The [`Client`] of an account whose service is `cwp`: only the `cwp` actions, so a yunjing
/// action can never be signed for `cwp` by mistake. Cheap to clone; clones share the client.
#[derive(Debug, Clone)]
pub struct CwpClient {
    client: Client,
}

impl CwpClient {
    /// A client signing for `cwp` to `options.endpoint` (build it with
    /// [`ApiService::endpoint`]: the configured `[api] endpoint`, else [`DEFAULT_ENDPOINT`]),
    /// with the same endpoint rules as every client (https, or http on loopback).
    pub fn new(
        options: ClientOptions,
        credentials: Credentials,
        trust: &TlsTrust,
    ) -> Result<CwpClient, ClientBuildError> {
        Client::for_api(options, credentials, trust, ApiService::Cwp)
            .map(|client| CwpClient { client })
    }

    /// A `cwp` view of `client`, when it signs for `cwp`.
    pub fn from_client(client: Client) -> Option<CwpClient> {
        (client.service() == SERVICE && client.version() == API_VERSION)
            .then_some(CwpClient { client })
    }

    /// The client underneath: credentials refresh, clock offset, generic calls.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// The class of a `cwp` call's error. As [`ApiError::class`], except that no error code of a
/// `cwp` call is an agent's status: yunjing reads `FailedOperation.AgentOffline`,
/// `ResourceNotFound` and `InvalidParameter.InvalidFormat` of `DescribeOpenPortTaskStatus` as
/// statuses, while a `cwp` agent's status comes only from `DescribeMachines`' `AgentStatus`.
/// For `DescribeAssetPortInfoList` they are a failed fetch of that machine.
pub fn class(error: &ApiError) -> ErrorClass {
    match error.class() {
        ErrorClass::AgentStatus(_) => ErrorClass::Request,
        other => other,
    }
}

#[cfg(test)]
mod tests;
