//! Discovery for a `cwp` account: the same passes, membership and merge as yunjing's, its
//! pages read from `cwp` `DescribeMachines` ([`CwpMachines`]) and turned into the rows
//! discovery knows (Uuid, name, Quuid, host facts). A machine whose agent has no Uuid is a
//! row without one, skipped and counted as for yunjing.
//!
//! The quota: a `cwp` account's status lane pages `cwp` `DescribeMachines` too, so the
//! action's rate is split: discovery's own strict limiter takes [`discovery_share`], the
//! status lane the rest ([`status_share`]); both strict, so the two together never exceed the
//! action's rate in any 1-second window.

use std::future::Future;

use super::MachineSource;
use crate::api::cwp::{CwpClient, Filter, FilterName, MachineType, MachinesQuery};
use crate::api::machines::{MachineRow, MachinesPage};
use crate::api::{ApiError, Client};

/// `DescribeMachines` of the `cwp` API, as discovery asks for pages.
#[derive(Debug, Clone)]
pub struct CwpMachines(pub Client);

/// Discovery's share of the `DescribeMachines` rate of a `cwp` account (half, at least 1).
pub fn discovery_share(rate: u32) -> u32 {
    (rate / 2).max(1)
}

/// The status lane's share: the rest, at least 1 (`check` refuses a rate below 2 with
/// discovery on a `cwp` account, so the two never add up to more than the rate).
pub fn status_share(rate: u32) -> u32 {
    rate.saturating_sub(discovery_share(rate)).max(1)
}

impl MachineSource for CwpMachines {
    fn page(
        &self,
        query: &crate::api::machines::MachinesQuery,
    ) -> impl Future<Output = Result<MachinesPage, ApiError>> + Send {
        let client = CwpClient::from_client(self.0.clone());
        let query = query.clone();
        async move {
            let Some(client) = client else {
                return Err(ApiError::Transport("not a cwp client".into()));
            };
            let machine_type = match query.machine_type {
                "BM" => MachineType::Bm,
                _ => MachineType::Cvm,
            };
            let request = |e: crate::api::cwp::RequestError| ApiError::Transport(e.to_string());
            let mut cwp_query =
                MachinesQuery::new(machine_type, &query.region, query.offset, query.limit)
                    .map_err(request)?;
            if let Some(status) = query.status {
                cwp_query = cwp_query.filter(
                    Filter::new(FilterName::AgentStatus, vec![status.to_owned()], None)
                        .map_err(request)?,
                );
            }
            let page = client.describe_machines(&cwp_query).await?;
            Ok(MachinesPage {
                total: page.total,
                rows: page
                    .machines
                    .into_iter()
                    .map(|m| MachineRow {
                        uuid: m.uuid,
                        name: m.name.map(String::from),
                        quuid: Some(m.quuid.to_string()),
                        facts: m.facts,
                    })
                    .collect(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_split_never_exceeded() {
        for rate in 2..=20 {
            assert!(discovery_share(rate) + status_share(rate) <= rate, "{rate}");
            assert!(discovery_share(rate) >= 1 && status_share(rate) >= 1);
        }
        assert_eq!((discovery_share(20), status_share(20)), (10, 10));
        assert_eq!((discovery_share(5), status_share(5)), (2, 3));
    }
}
