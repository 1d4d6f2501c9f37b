//! What two accounts may not share, checked once every account has been read: one SecretId
//! and one watchlist file. Part of [`crate::config::Settings::load`], so `check`, the
//! daemon's start and every reload refuse the same configs, at the same line:column.
//!
//! Why: Tencent counts the 20 requests/s per action per SecretId, so two accounts on one key
//! share one quota and throttle each other (each engine's limiter believes it has all 20).
//! Keys are compared between accounts of one API (`service`): a yunjing and a `cwp` account
//! call different actions, so one key may serve one of each;
//! two accounts on one watchlist poll every agent twice and report every event twice.
//!
//! Credentials are compared two ways; either one is enough to refuse:
//! - as written ([`KeyOrigin`]): the same place to take the key from (the same source; the
//!   same `secret_id_file` or profile file and section, paths canonicalised; the same CVM
//!   role and metadata endpoint; for `assume-role` the same base *and* the same `role_arn`).
//!   This holds even when that place cannot be read now.
//! - as found ([`FoundKey`], [`crate::credentials::resolve`], files and environment only, no
//!   network): the SecretId itself for static keys (two files holding one key, the chain
//!   finding the key that `source = "env"` names); the CVM role asked for; for
//!   `assume-role` the base's key plus `role_arn`.
//!
//! What cannot be compared before run time, and is therefore accepted: the temporary
//! SecretIds of a CVM role or of STS. STS hands each role its own temporary keys, so one base
//! key assuming two different roles is two quotas and is fine; one base assuming the same
//! role twice is one. A CVM role named in one account and left to the metadata service in
//! another may be the same role; that is known only once the service answers.
//!
//! A SecretId is never printed whole (see [`masked_secret_id`]); a SecretKey never at all.

use std::ops::Range;
use std::path::{Path, PathBuf};

use super::Check;
use crate::credentials::{CredentialSettings, Environment, Resolved, masked_secret_id, resolve};
use crate::problems::{Reported, shown, shown_path};

/// One account as the shared-use check sees it.
pub(in crate::config) struct AccountUse<'a> {
    /// `default` or the `[[account]]` name.
    pub(in crate::config) name: &'a str,
    /// Its checked credentials.
    pub(in crate::config) credentials: &'a CredentialSettings,
    /// Where a problem with its credentials is reported: its `[credentials]` table, else its
    /// `name`, else its `[[account]]` header; `None` for the top-level account without a
    /// `[credentials]` table (it has no place of its own in the file).
    pub(in crate::config) credentials_at: Option<Range<usize>>,
    /// Its checked watchlist path and the span of the `watchlist` value.
    pub(in crate::config) watchlist: Option<(&'a Path, Range<usize>)>,
    /// Its API: the quota is per action, and yunjing's and `cwp`'s actions are not the same
    /// actions, so one key may serve one account of each.
    pub(in crate::config) service: crate::api::ApiService,
}

/// Where an account's SecretId comes from, as the config says it: two accounts with the same
/// origin get the same key, whatever it turns out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyOrigin {
    /// No `[credentials]`: the default chain, which finds the same key for every account.
    Chain,
    /// `source = "env"`.
    Env,
    /// `source = "systemd"`.
    Systemd,
    /// `source = "profile"`: the file (canonical; `None` for the default files) and section.
    Profile {
        path: Option<PathBuf>,
        profile: String,
    },
    /// `source = "file"`: the SecretId's file, canonical (the key file does not decide the
    /// quota).
    File { secret_id_file: PathBuf },
    /// `source = "cvm-role"`: the role (`None`: whichever the instance has) and the service.
    CvmRole {
        role: Option<String>,
        metadata_endpoint: String,
    },
    /// `source = "assume-role"`: the base's origin and the role assumed.
    AssumeRole {
        base: Box<KeyOrigin>,
        role_arn: String,
    },
}

impl KeyOrigin {
    /// The origin of `settings`, paths canonicalised ([`same_file_key`]).
    pub(crate) fn of(settings: &CredentialSettings) -> KeyOrigin {
        match settings {
            CredentialSettings::Chain => KeyOrigin::Chain,
            CredentialSettings::Env => KeyOrigin::Env,
            CredentialSettings::Systemd => KeyOrigin::Systemd,
            CredentialSettings::Profile { path, profile } => KeyOrigin::Profile {
                path: path.as_deref().map(same_file_key),
                profile: profile.clone(),
            },
            CredentialSettings::File { secret_id_file, .. } => KeyOrigin::File {
                secret_id_file: same_file_key(secret_id_file),
            },
            CredentialSettings::CvmRole {
                role,
                metadata_endpoint,
            } => KeyOrigin::CvmRole {
                role: role.clone(),
                metadata_endpoint: metadata_endpoint.to_string(),
            },
            CredentialSettings::AssumeRole { base, request } => KeyOrigin::AssumeRole {
                base: Box::new(KeyOrigin::of(base)),
                role_arn: request.role_arn.clone(),
            },
        }
    }

    /// The origin as the operator wrote it, for messages (paths escaped, no value read).
    fn describe(&self) -> String {
        match self {
            KeyOrigin::Chain => "the default credential chain (no [credentials] table)".to_owned(),
            KeyOrigin::Env => "source = \"env\" (TENCENTCLOUD_SECRET_ID)".to_owned(),
            KeyOrigin::Systemd => "source = \"systemd\" ($CREDENTIALS_DIRECTORY)".to_owned(),
            KeyOrigin::Profile { path, profile } => match path {
                Some(path) => format!(
                    "section [{}] of the profile file {}",
                    shown(profile),
                    shown_path(path)
                ),
                None => format!("section [{}] of the default profile files", shown(profile)),
            },
            KeyOrigin::File { secret_id_file } => {
                format!("secret_id_file {}", shown_path(secret_id_file))
            }
            KeyOrigin::CvmRole {
                role,
                metadata_endpoint,
            } => match role {
                Some(role) => format!("the CVM role {} via {metadata_endpoint}", shown(role)),
                None => format!("the CVM instance's role via {metadata_endpoint}"),
            },
            KeyOrigin::AssumeRole { base, role_arn } => format!(
                "AssumeRole of {} with base credentials from {}",
                shown(role_arn),
                base.describe()
            ),
        }
    }
}

/// An account's key as far as it can be known without the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FoundKey {
    /// A static SecretId, as read.
    SecretId(String),
    /// Temporary keys of this CVM role (`None`: the instance's) from this service.
    CvmRole {
        role: Option<String>,
        metadata_endpoint: String,
    },
    /// Temporary keys of `role_arn`, asked for with the base's key.
    AssumeRole {
        base: Box<FoundKey>,
        role_arn: String,
    },
}

impl FoundKey {
    /// The key [`resolve`] found.
    pub(crate) fn of(resolved: &Resolved) -> FoundKey {
        match resolved {
            Resolved::Static(credentials, _) => FoundKey::SecretId(credentials.secret_id.clone()),
            Resolved::CvmRole {
                role,
                metadata_endpoint,
            } => FoundKey::CvmRole {
                role: role.clone(),
                metadata_endpoint: metadata_endpoint.to_string(),
            },
            Resolved::AssumeRole { base, request, .. } => FoundKey::AssumeRole {
                base: Box::new(FoundKey::of(base)),
                role_arn: request.role_arn.clone(),
            },
        }
    }

    /// The SecretId that decides the quota, masked, when it is a static one.
    fn describe(&self) -> String {
        match self {
            FoundKey::SecretId(id) => format!("the same SecretId {}", masked_secret_id(id)),
            FoundKey::CvmRole { .. } => "the same CVM role (one set of temporary keys)".to_owned(),
            FoundKey::AssumeRole { base, role_arn } => format!(
                "the same role {} assumed with {}",
                shown(role_arn),
                base.describe().trim_start_matches("the same ")
            ),
        }
    }
}

/// A path as compared for "the same file": canonical when it exists (symlinks, `..`),
/// else made absolute with its `.` parts dropped; a file that does not exist is reported on
/// its own by whatever reads it.
pub(crate) fn same_file_key(path: &Path) -> PathBuf {
    std::fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// For each item, the index of an earlier one equal to it under `same`, if any.
fn first_equal<T>(items: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<Option<usize>> {
    items
        .iter()
        .enumerate()
        .map(|(j, b)| items[..j].iter().position(|a| same(a, b)))
        .collect()
}

impl Check<'_> {
    /// Refuses two accounts with one SecretId or one watchlist file, at the later account.
    pub(in crate::config) fn shared(
        &mut self,
        accounts: &[AccountUse<'_>],
        env: &Environment,
    ) -> Result<(), Reported> {
        if accounts.len() < 2 {
            return Ok(());
        }
        let mut failed = None;
        // Keys are compared within one API: the quota is per action, and a yunjing and a
        // `cwp` account on one key call different actions.
        let origins: Vec<(crate::api::ApiService, KeyOrigin)> = accounts
            .iter()
            .map(|a| (a.service, KeyOrigin::of(a.credentials)))
            .collect();
        // A key that cannot be found now is reported by whatever needs it (`check`, the
        // account's start); here it only cannot be compared.
        let found: Vec<(crate::api::ApiService, Option<FoundKey>)> = accounts
            .iter()
            .map(|a| {
                let key = resolve(a.credentials, env).ok().map(|r| FoundKey::of(&r));
                (a.service, key)
            })
            .collect();
        let same_origin = first_equal(&origins, PartialEq::eq);
        let same_key = first_equal(&found, |a, b| a.1.is_some() && a == b);
        for (j, b) in accounts.iter().enumerate() {
            let (i, what) = match (same_origin[j], same_key[j]) {
                (Some(i), _) => (
                    i,
                    format!("take their credentials from {}", origins[j].1.describe()),
                ),
                (None, Some(i)) => match &found[j].1 {
                    Some(key) => (i, format!("use {}", key.describe())),
                    None => continue,
                },
                (None, None) => continue,
            };
            let a = &accounts[i];
            let first = self.first_at(a.credentials_at.as_ref());
            let message = format!(
                "accounts `{}`{first} and `{}` {what}: Tencent counts the request quota per \
                 SecretId, so the two accounts would share one 20 requests/s quota and throttle \
                 each other; give each account its own sub-account key ([account.credentials]), \
                 or merge them into one account",
                a.name, b.name
            );
            failed = Some(self.report(b.credentials_at.clone(), message));
        }
        let watchlists: Vec<Option<PathBuf>> = accounts
            .iter()
            .map(|a| a.watchlist.as_ref().map(|(path, _)| same_file_key(path)))
            .collect();
        let same_watchlist = first_equal(&watchlists, |a, b| a.is_some() && a == b);
        for (j, b) in accounts.iter().enumerate() {
            let (Some(i), Some((path, at))) = (same_watchlist[j], &b.watchlist) else {
                continue;
            };
            let a = &accounts[i];
            let first = self.first_at(a.watchlist.as_ref().map(|(_, at)| at));
            let message = format!(
                "accounts `{}`{first} and `{}` use the same watchlist {}: every agent in it \
                 would be polled twice and every event reported twice; give each account its \
                 own watchlist file (an agent may also move to an account with account = \"{}\" \
                 in its table)",
                a.name,
                b.name,
                shown_path(path),
                b.name
            );
            failed = Some(self.problems.at(at.clone(), message));
        }
        match failed {
            Some(reported) => Err(reported),
            None => Ok(()),
        }
    }

    /// " (line N)" for the first of two accounts, when it has a place in the file.
    fn first_at(&self, at: Option<&Range<usize>>) -> String {
        at.map(|at| format!(" (line {})", self.problems.line_of(at)))
            .unwrap_or_default()
    }

    fn report(&mut self, at: Option<Range<usize>>, message: String) -> Reported {
        match at {
            Some(at) => self.problems.at(at, message),
            None => self.problems.general(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masked_secret_ids_keep_at_most_eight_characters() {
        let id = "AKIDcwpportwatchALPHA000000000000000";
        let masked = masked_secret_id(id);
        assert_eq!(masked, "AKID…0000 (masked)");
        assert!(!masked.contains("cwpportwatch"));
        // Short values: never more than half of them.
        assert_eq!(masked_secret_id("AKIDshort"), "AKID… (masked)");
        assert_eq!(masked_secret_id("AK"), "A… (masked)");
        assert_eq!(masked_secret_id(""), "… (masked)");
    }

    #[test]
    fn same_file_key_sees_through_dot_parts_and_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("w.toml");
        std::fs::write(&file, "").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(
            same_file_key(&dir.path().join("./w.toml")),
            same_file_key(&file)
        );
        assert_eq!(same_file_key(&link), same_file_key(&file));
        // Missing: still compared, as written but absolute.
        assert_eq!(
            same_file_key(&dir.path().join("./gone.toml")),
            same_file_key(&dir.path().join("gone.toml"))
        );
        assert_ne!(
            same_file_key(&file),
            same_file_key(&dir.path().join("x.toml"))
        );
    }

    #[test]
    fn first_equal_names_the_earliest_match() {
        assert_eq!(
            first_equal(&[1, 2, 1, 1, 3], PartialEq::eq),
            [None, None, Some(0), Some(0), None]
        );
    }
}
