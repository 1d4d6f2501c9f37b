//! Which accounts a config runs: the top-level `watchlist` + `[credentials]` + `[discovery]`
//! as the account [`DEFAULT_ACCOUNT`] (when configured), then every `[[account]]` block in file
//! order, each turned into the [`Settings`] that one engine needs (its own region,
//! credentials, watchlist and discovery over the shared settings). The daemon runs one engine
//! per plan: see `crate::engine` ("Adding accounts").

use super::{AccountSettings, DEFAULT_ACCOUNT, Settings};

/// One account to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountPlan {
    /// `default` or the `[[account]]` name.
    pub name: String,
    /// The settings as one account sees them; `accounts` is empty.
    pub settings: Settings,
}

impl Settings {
    /// The top-level account exists: a top-level `watchlist` or an enabled `[discovery]`.
    pub fn has_default_account(&self) -> bool {
        self.watchlist_path.is_some() || self.discovery.enabled
    }

    /// What the policy may ask of these accounts' inventories
    /// ([`crate::policy::Capabilities::of_deployment`]): the table keys `proto`, `bind` and
    /// `user` only when every account uses the `cwp` backend.
    pub fn policy_capabilities(&self) -> crate::policy::Capabilities {
        let plans = self.account_plans();
        let every_account_cwp = !plans.is_empty()
            && plans
                .iter()
                .all(|plan| plan.settings.api.service == crate::api::ApiService::Cwp);
        crate::policy::Capabilities::of_deployment(every_account_cwp)
    }

    /// The accounts to run, the default one first.
    pub fn account_plans(&self) -> Vec<AccountPlan> {
        let mut plans = Vec::with_capacity(self.accounts.len() + 1);
        if self.has_default_account() {
            let mut settings = self.clone();
            settings.accounts = Vec::new();
            plans.push(AccountPlan {
                name: DEFAULT_ACCOUNT.to_owned(),
                settings,
            });
        }
        plans.extend(self.accounts.iter().map(|a| AccountPlan {
            name: a.name.clone(),
            settings: self.for_account(a),
        }));
        plans
    }

    /// More than one account: events and metrics then say which one.
    pub fn several_accounts(&self) -> bool {
        self.accounts.len() + usize::from(self.has_default_account()) > 1
    }

    /// `account` over the shared settings.
    fn for_account(&self, account: &AccountSettings) -> Settings {
        let mut settings = self.clone();
        settings.accounts = Vec::new();
        settings.watchlist_path = account.watchlist_path.clone();
        settings.credentials = account.credentials.clone();
        settings.discovery = account.discovery.clone();
        if account.region.is_some() {
            settings.api.region = account.region.clone();
        }
        if let Some(service) = account.service {
            settings.api.service = service;
            if !settings.api.endpoint_set {
                settings.api.endpoint = service.endpoint(None);
            }
        }
        settings
    }
}
