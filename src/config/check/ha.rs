//! The `[ha]` section (`crate::ha` owns what it means, `docs/ha.md`): the etcd endpoints,
//! the election prefix, the lease TTL, this process's name, TLS files and the etcd user.
//!
//! `etcd` empty or absent means no HA; every key is still checked, so a mistake is found
//! before the day HA is turned on. The files are only named here: the TLS files and the
//! password file are read when the coordinator connects (`ha::Coordinator::connect`), never by
//! the config check, so the password lives in memory only as long as the connection needs it
//! and `check` does not depend on being able to read it.
//!
//! A build without the `ha` feature refuses an `[ha]` with `etcd` set, at the `etcd` line:
//! running alone where the operator asked for a standby pair would poll twice.

use std::ops::Range;

use toml::Spanned;

use super::Check;
use crate::config::raw::RawHa;
use crate::ha::HaSettings;
use crate::problems::{Reported, shown, text_problem};

/// The example endpoint of messages.
const EXAMPLE_ETCD: &str = "https://10.0.0.5:2379";

impl Check<'_> {
    /// `[ha]`: `None` when absent or `etcd` is empty.
    pub(in crate::config) fn ha(
        &mut self,
        raw: Option<&Spanned<RawHa>>,
    ) -> Result<Option<HaSettings>, Reported> {
        let Some(section) = raw else {
            return Ok(None);
        };
        self.ha_with(section, HaSettings::host_name)
    }

    /// [`Check::ha`] with the host name given (for tests).
    pub(in crate::config) fn ha_with(
        &mut self,
        section: &Spanned<RawHa>,
        host_name: impl FnOnce() -> Option<String>,
    ) -> Result<Option<HaSettings>, Reported> {
        let raw = section.get_ref();
        let etcd = self.etcd_endpoints(raw.etcd.as_ref());
        let enabled = raw.etcd.as_ref().is_some_and(|l| !l.get_ref().is_empty());
        let built = self.ha_built(raw.etcd.as_ref().filter(|_| enabled));
        let election = self.election(raw.election.as_ref(), enabled, section.span());
        let lease_ttl = self.duration(
            raw.lease_ttl.as_ref(),
            "lease_ttl",
            HaSettings::DEFAULT_LEASE_TTL,
            &HaSettings::LEASE_TTL_RANGE,
        );
        let name = match &raw.name {
            Some(value) => self
                .text(
                    value,
                    "name",
                    "\"cwp-a\"",
                    false,
                    HaSettings::MAX_NAME_CHARS,
                )
                .map(|n| n.trim().to_owned()),
            None if !enabled => Ok(String::new()),
            None => match host_name()
                .filter(|n| text_problem("name", n, HaSettings::MAX_NAME_CHARS).is_none())
            {
                Some(name) => Ok(name),
                None => Err(self.problems.at(
                    section.span(),
                    "[ha] has no `name` and this host's name cannot be used for it (none, or \
                     too long or not printable): add name = \"cwp-a\" (what the other hosts \
                     show as the leader)",
                )),
            },
        };
        let ca_file = raw
            .ca_file
            .as_ref()
            .map(|v| self.path(v, "ca_file", "\"/etc/cwp-portwatch/etcd-ca.pem\"", false))
            .transpose();
        let client_cert = self.ha_pair(
            (raw.cert_file.as_ref(), "cert_file"),
            (raw.key_file.as_ref(), "key_file"),
            "the TLS client certificate and its key",
        );
        let cert_file = raw
            .cert_file
            .as_ref()
            .map(|v| {
                self.path(
                    v,
                    "cert_file",
                    "\"/etc/cwp-portwatch/etcd-client.pem\"",
                    false,
                )
            })
            .transpose();
        let key_file = raw
            .key_file
            .as_ref()
            .map(|v| self.secret_path(v, "key_file", "\"%d/etcd-client.key\""))
            .transpose();
        let user = self.ha_pair(
            (raw.username.as_ref(), "username"),
            (raw.password_file.as_ref(), "password_file"),
            "the etcd user and the file holding its password",
        );
        let username = raw
            .username
            .as_ref()
            .map(|v| {
                self.text(
                    v,
                    "username",
                    "\"cwp-portwatch\"",
                    false,
                    HaSettings::MAX_USERNAME_CHARS,
                )
                .map(|u| u.trim().to_owned())
            })
            .transpose();
        let password_file = raw
            .password_file
            .as_ref()
            .map(|v| self.secret_path(v, "password_file", "\"%d/etcd-password\""))
            .transpose();
        // What the endpoints' scheme says about the rest.
        let transport = match &etcd {
            Ok(urls) if !urls.is_empty() => self.ha_transport(raw, urls),
            _ => Ok(()),
        };
        let settings = HaSettings {
            etcd: etcd?.into_iter().map(|url| url.to_string()).collect(),
            election: election?,
            lease_ttl: lease_ttl?,
            name: name?,
            ca_file: ca_file?,
            cert_file: cert_file?,
            key_file: key_file?,
            username: username?,
            password_file: password_file?,
        };
        built?;
        client_cert?;
        user?;
        transport?;
        Ok(enabled.then_some(settings))
    }

    /// A build without the `ha` feature refuses `etcd` set.
    fn ha_built(&mut self, etcd: Option<&Spanned<Vec<Spanned<String>>>>) -> Result<(), Reported> {
        #[cfg(not(feature = "ha"))]
        if let Some(list) = etcd {
            return Err(self.problems.at(
                list.span(),
                "[ha] sets `etcd`, but this build of cwp-portwatch has no HA support (it was \
                 built without the `ha` feature): install the cwp-portwatch package (built with \
                 it), or build with `cargo build --release --features ha` (needs protoc); or \
                 remove the `etcd` line to run without a standby",
            ));
        }
        let _ = etcd;
        Ok(())
    }

    /// `etcd`: at most [`HaSettings::MAX_ENDPOINTS`] http(s) URLs with a host and no path, user, query or
    /// fragment, each once, all of one scheme.
    fn etcd_endpoints(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
    ) -> Result<Vec<url::Url>, Reported> {
        let Some(list) = raw else {
            return Ok(Vec::new());
        };
        if list.get_ref().len() > HaSettings::MAX_ENDPOINTS {
            return Err(self.problems.at(
                list.span(),
                format!(
                    "`etcd` lists more than {} endpoints; list the cluster's members (3, 5 \
                     or 7)",
                    HaSettings::MAX_ENDPOINTS
                ),
            ));
        }
        let mut urls: Vec<url::Url> = Vec::new();
        let mut failed = None;
        for value in list.get_ref() {
            let url = match self.endpoint(value, "etcd", false, EXAMPLE_ETCD) {
                Ok(url) => url,
                Err(reported) => {
                    failed = Some(reported);
                    continue;
                }
            };
            let problem = if url.path() != "/" {
                Some(format!(
                    "`etcd` endpoint {} has the path {}: etcd is served at `/`; write only \
                     scheme, host and port, e.g. {EXAMPLE_ETCD:?}",
                    shown(value.get_ref()),
                    shown(url.path())
                ))
            } else if urls.contains(&url) {
                Some(format!(
                    "`etcd` lists {} twice; remove one",
                    shown(value.get_ref())
                ))
            } else if urls
                .first()
                .is_some_and(|first| first.scheme() != url.scheme())
            {
                Some(format!(
                    "`etcd` mixes http:// and https:// endpoints; one cluster is reached one \
                     way: write every endpoint as {}://",
                    urls[0].scheme()
                ))
            } else {
                None
            };
            match problem {
                Some(message) => failed = Some(self.problems.at(value.span(), message)),
                None => urls.push(url),
            }
        }
        failed.map_or(Ok(urls), Err)
    }

    /// `election`: required with `etcd`; `/`, then printable text without a trailing `/`.
    fn election(
        &mut self,
        raw: Option<&Spanned<String>>,
        enabled: bool,
        section: Range<usize>,
    ) -> Result<String, Reported> {
        let example = "election = \"/cwp-portwatch/prod\"";
        let Some(value) = raw else {
            if enabled {
                return Err(self.problems.at(
                    section,
                    format!(
                        "[ha] sets `etcd` but has no `election`: add {example} (the key prefix \
                         of this deployment; every host of one deployment writes the same, \
                         another deployment on the same etcd another)"
                    ),
                ));
            }
            return Ok(String::new());
        };
        let text = self
            .text(
                value,
                "election",
                "\"/cwp-portwatch/prod\"",
                true,
                HaSettings::MAX_ELECTION_CHARS,
            )?
            .to_owned();
        let problem = if !text.starts_with('/') {
            Some("does not start with `/`")
        } else if text.ends_with('/') {
            Some("ends with `/` (the keys under it are made with their own `/`)")
        } else if text.chars().any(char::is_whitespace) {
            Some("contains whitespace")
        } else {
            None
        };
        match problem {
            Some(problem) => Err(self.problems.at(
                value.span(),
                format!(
                    "`election` = {} {problem}: write a key prefix such as {example}",
                    shown(&text)
                ),
            )),
            None => Ok(text),
        }
    }

    /// Two keys that go together: both or neither, placed at the one that is alone.
    fn ha_pair(
        &mut self,
        (a, a_key): (Option<&Spanned<String>>, &str),
        (b, b_key): (Option<&Spanned<String>>, &str),
        what: &str,
    ) -> Result<(), Reported> {
        let (alone, key, missing) = match (a, b) {
            (Some(a), None) => (a, a_key, b_key),
            (None, Some(b)) => (b, b_key, a_key),
            _ => return Ok(()),
        };
        Err(self.problems.at(
            alone.span(),
            format!(
                "`{key}` is set but `{missing}` is not: they go together ({what}); add \
                 `{missing}` or remove `{key}`"
            ),
        ))
    }

    /// TLS files need https:// endpoints; a password is not sent over plain http beyond
    /// this host.
    fn ha_transport(&mut self, raw: &RawHa, urls: &[url::Url]) -> Result<(), Reported> {
        let https = urls.iter().all(|u| u.scheme() == "https");
        let mut failed = None;
        if !https {
            for (value, key) in [
                (&raw.ca_file, "ca_file"),
                (&raw.cert_file, "cert_file"),
                (&raw.key_file, "key_file"),
            ] {
                if let Some(value) = value {
                    failed = Some(self.problems.at(
                        value.span(),
                        format!(
                            "`{key}` is for TLS, but the `etcd` endpoints are http://: write \
                             them as https:// (e.g. {EXAMPLE_ETCD:?}), or remove `{key}`"
                        ),
                    ));
                }
            }
            if let Some(value) = &raw.password_file
                && urls.iter().any(|u| !crate::endpoint::is_loopback(u))
            {
                failed = Some(self.problems.at(
                    value.span(),
                    "`password_file`: the `etcd` endpoints are http:// on a host that is not \
                     loopback, which would send the password unencrypted; use https:// \
                     endpoints (with ca_file)",
                ));
            }
        }
        failed.map_or(Ok(()), Err)
    }
}
