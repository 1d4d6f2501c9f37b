//! `service`: which CWP API (and so which engine backend) an account uses, at `[api]` and per
//! `[[account]]`, and what each backend cannot be combined with:
//! - an `[api] endpoint` that names the other service's host (the API would refuse every
//!   signature: [`ApiService::endpoint_problem`]), placed at the endpoint, or at the
//!   account's `service` when only that account differs;
//! - `[discovery]` with `cwp`: `keywords` (`cwp` has no such filter), and a
//!   `DescribeMachines` rate below 2 (discovery and the status lane split it);
//! - `rescan_interval = "0s"` with `cwp`: its ports are fetched only at rescans.

use toml::Spanned;

use super::Check;
use crate::api::ApiService;
use crate::config::raw::RawConfig;
use crate::config::{AccountSettings, ApiSettings, InventorySettings};
use crate::problems::{Reported, shown};

impl Check<'_> {
    /// `service`: `None` when absent, else `yunjing` or `cwp`.
    pub(super) fn service(
        &mut self,
        value: Option<&Spanned<String>>,
    ) -> Result<Option<ApiService>, Reported> {
        let Some(value) = value else {
            return Ok(None);
        };
        match ApiService::from_name(value.get_ref().trim()) {
            Some(service) => Ok(Some(service)),
            None => Err(self.problems.at(
                value.span(),
                format!(
                    "`service` = {} is not a CWP API; write service = \"yunjing\" (the \
                     open-port task workflow, the default) or service = \"cwp\" (the live API: \
                     bind address, protocol and user of every port; see docs/cwp-backend.md)",
                    shown(value.get_ref())
                ),
            )),
        }
    }

    /// The rules of the module docs, for the top-level account (when `default_configured`)
    /// and each `[[account]]`.
    pub(in crate::config) fn backends(
        &mut self,
        raw: &RawConfig,
        api: &ApiSettings,
        accounts: &[AccountSettings],
        inventory: &InventorySettings,
        default_configured: bool,
    ) -> Result<(), Reported> {
        let mut failed = None;
        let mut told: Vec<std::ops::Range<usize>> = Vec::new();
        let raw_api = raw.api.as_ref();
        let endpoint_at = raw_api.and_then(|a| a.endpoint.as_ref()).map(Spanned::span);
        let top_service_at = raw_api.and_then(|a| a.service.as_ref()).map(Spanned::span);
        let rescan_zero_at = raw
            .inventory
            .as_ref()
            .and_then(|i| i.rescan_interval.as_ref())
            .filter(|_| inventory.rescan_interval_set && inventory.rescan_interval.is_zero())
            .map(Spanned::span);
        // (service, where its service is written, its discovery's span when enabled, its
        // region, where to place a missing region)
        let mut uses = Vec::new();
        let api_at = raw_api
            .and_then(|a| a.service.as_ref().or(a.endpoint.as_ref()))
            .map(Spanned::span);
        if default_configured {
            let discovery = raw
                .discovery
                .as_ref()
                .filter(|_| enabled(raw.discovery.as_ref()));
            uses.push((
                api.service,
                top_service_at.clone(),
                discovery,
                api.region.is_some(),
                api_at.clone(),
            ));
        }
        let raw_accounts = raw.account.as_deref().unwrap_or_default();
        for (account, block) in accounts.iter().zip(raw_accounts) {
            let block_raw = block.get_ref();
            let service_at = block_raw
                .service
                .as_ref()
                .map(Spanned::span)
                .or_else(|| top_service_at.clone());
            let discovery = block_raw
                .discovery
                .as_ref()
                .filter(|_| account.discovery.enabled);
            uses.push((
                account.service.unwrap_or(api.service),
                service_at,
                discovery,
                account.region.is_some() || api.region.is_some(),
                Some(block.span()),
            ));
        }
        for (service, service_at, discovery, has_region, block_at) in uses {
            if api.endpoint_set
                && let Some(problem) = service.endpoint_problem(&api.endpoint)
            {
                // Where the mismatch was written: an account's own `service`, else the
                // endpoint.
                let at = service_at
                    .filter(|_| service != api.service)
                    .or_else(|| endpoint_at.clone());
                // Several accounts on one mismatched endpoint: told once.
                if let Some(at) = at
                    && !told.contains(&at)
                {
                    told.push(at.clone());
                    failed = Some(self.problems.at(at, problem));
                }
            }
            if service != ApiService::Cwp {
                continue;
            }
            if !has_region {
                let message = "a service = \"cwp\" account needs its `region` (e.g. region = \
                               \"ap-guangzhou\"): DescribeMachines lists the machines of one \
                               region (and those outside Tencent Cloud, ap-others)";
                failed = Some(match block_at {
                    Some(at) => self.problems.at(at, message),
                    None => self.problems.general(message),
                });
            }
            if let Some(section) = discovery {
                // `cwp` `DescribeMachines` has no `Keywords` filter: refused, not ignored.
                if let Some(keywords) = section.get_ref().keywords.as_ref() {
                    failed = Some(self.problems.at(
                        keywords.span(),
                        "`keywords` cannot be used with service = \"cwp\": its \
                         DescribeMachines has no Keywords filter; remove it (agent_status, \
                         machine_types and regions still narrow the listing)",
                    ));
                }
                // Discovery and the status lane share the action's rate: each needs 1.
                if api.rate_of("DescribeMachines") < 2 {
                    failed = Some(self.problems.at(
                        section.span(),
                        "with service = \"cwp\", [discovery] and the status listings share \
                         DescribeMachines' rate, which must then be at least 2 requests/s: \
                         raise requests_per_second (or [api.actions.DescribeMachines] \
                         requests_per_second)",
                    ));
                }
            }
            if let Some(at) = rescan_zero_at.clone()
                && !told.contains(&at)
            {
                told.push(at.clone());
                failed = Some(self.problems.at(
                    at,
                    "`rescan_interval` = \"0s\" would never fetch the ports of a \
                     service = \"cwp\" account (its port list is read at each rescan): leave \
                     it out (10m) or write e.g. rescan_interval = \"10m\"",
                ));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

/// A `[discovery]` section turned on as written.
fn enabled(section: Option<&Spanned<crate::config::raw::RawDiscovery>>) -> bool {
    section
        .and_then(|d| d.get_ref().enabled.as_ref())
        .is_some_and(|enabled| *enabled.get_ref())
}
