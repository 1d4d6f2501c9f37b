//! The `[[account]]` blocks: each account's name, region, watchlist, credentials and
//! discovery, checked with the same rules as the top-level keys they mirror, plus what only
//! accounts have: a name that is valid, unique, and not `default` when the top-level account
//! is configured too.

use toml::Spanned;

use super::Check;
use crate::config::raw::RawAccount;
use crate::config::settings::AccountSettings;
use crate::credentials::CredentialSettings;
use crate::problems::{Reported, shown};

pub use crate::account_name::{DEFAULT_ACCOUNT, MAX_ACCOUNT_NAME, valid_account_name};
/// The most `[[account]]` blocks: each runs its own engine (Tencent's quota is per account);
/// more than this in one process is a configuration mistake, not a deployment.
pub const MAX_ACCOUNTS: usize = 64;

impl Check<'_> {
    /// Every `[[account]]` block; `default_configured` says whether the top-level account
    /// exists (then `default` is taken).
    pub(in crate::config) fn accounts(
        &mut self,
        raw: &[Spanned<RawAccount>],
        default_configured: bool,
    ) -> Result<Vec<AccountSettings>, Reported> {
        if let Some(extra) = raw.get(MAX_ACCOUNTS) {
            return Err(self.problems.at(
                extra.span(),
                format!(
                    "more than {MAX_ACCOUNTS} [[account]] blocks: run one daemon per group of \
                     accounts"
                ),
            ));
        }
        let mut seen: Vec<(String, usize)> = Vec::new();
        let mut out = Vec::with_capacity(raw.len());
        let mut failed = None;
        for block in raw {
            match self.account(block, default_configured, &mut seen) {
                Ok(account) => out.push(account),
                Err(reported) => failed = Some(reported),
            }
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok(out),
        }
    }

    fn account(
        &mut self,
        block: &Spanned<RawAccount>,
        default_configured: bool,
        seen: &mut Vec<(String, usize)>,
    ) -> Result<AccountSettings, Reported> {
        let raw = block.get_ref();
        let name = match &raw.name {
            None => Err(self.problems.at(
                block.span(),
                "this [[account]] has no `name`: add e.g. name = \"prod\" (lower-case letters, \
                 digits, `_` and `-`, at most 32)",
            )),
            Some(value) => {
                let text = value.get_ref();
                if !valid_account_name(text) {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "account `name` = {} is not valid: use 1 to {MAX_ACCOUNT_NAME} \
                             lower-case letters, digits, `_` and `-`, e.g. name = \"prod\"",
                            shown(text)
                        ),
                    ))
                } else if default_configured && text == DEFAULT_ACCOUNT {
                    Err(self.problems.at(
                        value.span(),
                        "account name \"default\" is taken by the top-level watchlist and \
                         [credentials]: rename this account, or move the top-level ones into it",
                    ))
                } else if let Some((_, line)) = seen.iter().find(|(n, _)| n == text) {
                    Err(self.problems.at(
                        value.span(),
                        format!(
                            "account name {} is used twice (first at line {line}): give each \
                             [[account]] its own name",
                            shown(text)
                        ),
                    ))
                } else {
                    let line = self.problems.line_of(&value.span());
                    seen.push((text.clone(), line));
                    Ok(text.clone())
                }
            }
        };
        let region = self.region(raw.region.as_ref());
        let service = self.service(raw.service.as_ref());
        let discovery = self.discovery(raw.discovery.as_ref());
        let discovering = raw
            .discovery
            .as_ref()
            .and_then(|d| d.get_ref().enabled.as_ref())
            .is_some_and(|enabled| *enabled.get_ref());
        let watchlist_path = match &raw.watchlist {
            Some(value) => self
                .path(value, "watchlist", "\"prod.watchlist.toml\"", true)
                .map(Some),
            None if discovering => Ok(None),
            None => Err(self.problems.at(
                block.span(),
                "this [[account]] has no `watchlist`: add watchlist = \"prod.watchlist.toml\" \
                 (relative to this file's folder), or turn on its [account.discovery]",
            )),
        };
        let credentials = match &raw.credentials {
            Some(section) => self.credentials(section),
            None => Ok(CredentialSettings::Chain),
        };
        Ok(AccountSettings {
            name: name?,
            region: region?,
            watchlist_path: watchlist_path?,
            credentials: credentials?,
            discovery: discovery?,
            service: service?,
        })
    }
}
