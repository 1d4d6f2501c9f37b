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

#[cfg(test)]
mod tests {
    // Some are for the tests of a build with the `ha` feature only.
    #![cfg_attr(not(feature = "ha"), allow(unused_imports))]

    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use crate::config::{Problem, Settings};
    use crate::credentials::Environment;
    use crate::ha::HaSettings;

    const HEAD: &str = "watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n[ha]\n";

    fn load(text: &str) -> Result<Settings, Vec<Problem>> {
        Settings::from_toml_str_with(
            text,
            Path::new("/etc/cwp-portwatch/config.toml"),
            &Environment::from_pairs([("HOME", "/home/op")]),
        )
        .map_err(|e| e.problems)
    }

    fn with(ha: &str) -> Result<Settings, Vec<Problem>> {
        load(&format!("{HEAD}{ha}"))
    }

    /// Each problem as `line:col: message`.
    fn placed(problems: &[Problem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| {
                format!(
                    "{}:{}: {}",
                    p.line.unwrap_or(0),
                    p.column.unwrap_or(0),
                    p.message
                )
            })
            .collect()
    }

    #[test]
    fn absent_or_empty_etcd_means_no_ha() {
        assert_eq!(load("watchlist = \"w.toml\"\n").unwrap().ha, None);
        assert_eq!(with("").unwrap().ha, None);
        assert_eq!(with("etcd = []\nelection = \"/x\"\n").unwrap().ha, None);
        // Still checked: a mistake is found before HA is turned on.
        let e = with("etcd = []\nlease_ttl = \"1s\"\n").unwrap_err();
        assert!(placed(&e)[0].starts_with("5:13: `lease_ttl`"), "{e:?}");
    }

    #[cfg(feature = "ha")]
    #[test]
    fn every_key_is_read_with_its_defaults() {
        let s = with(
            "etcd = [\"https://10.0.0.5:2379\", \"https://10.0.0.6:2379\"]\n\
             election = \"/cwp-portwatch/prod\"\n\
             lease_ttl = \"15s\"\nname = \"cwp-a\"\n\
             ca_file = \"etcd-ca.pem\"\ncert_file = \"/etc/c.pem\"\nkey_file = \"%d/etcd.key\"\n\
             username = \"cwp\"\npassword_file = \"/etc/cwp-portwatch/etcd-password\"\n",
        )
        .unwrap()
        .ha
        .unwrap();
        assert_eq!(
            s,
            HaSettings {
                etcd: vec![
                    "https://10.0.0.5:2379/".into(),
                    "https://10.0.0.6:2379/".into()
                ],
                election: "/cwp-portwatch/prod".into(),
                lease_ttl: Duration::from_secs(15),
                name: "cwp-a".into(),
                ca_file: Some(PathBuf::from("/etc/cwp-portwatch/etcd-ca.pem")),
                cert_file: Some(PathBuf::from("/etc/c.pem")),
                key_file: Some(PathBuf::from("%d/etcd.key")),
                username: Some("cwp".into()),
                password_file: Some(PathBuf::from("/etc/cwp-portwatch/etcd-password")),
            }
        );
        // Defaults: 10 s, the host name.
        let s = with("etcd = [\"http://127.0.0.1:2379\"]\nelection = \"/p\"\n")
            .unwrap()
            .ha
            .unwrap();
        assert_eq!(s.lease_ttl, Duration::from_secs(10));
        assert_eq!(Some(s.name), HaSettings::host_name());
        assert_eq!(s.ca_file, None);
    }

    #[cfg(feature = "ha")]
    #[test]
    fn every_mistake_is_placed_at_its_line_and_column() {
        let ok = "etcd = [\"https://10.0.0.5:2379\"]\nelection = \"/p\"\n";
        for (text, place, says) in [
            (
                "etcd = [\"10.0.0.5:2379\"]\nelection = \"/p\"\n",
                "4:9:",
                "not a URL",
            ),
            (
                "etcd = [\"ftp://h:2379\"]\nelection = \"/p\"\n",
                "4:9:",
                "scheme `ftp`",
            ),
            (
                "etcd = [\"https://h:2379/v3\"]\nelection = \"/p\"\n",
                "4:9:",
                "path",
            ),
            (
                "etcd = [\"https://u:pw@h:2379\"]\nelection = \"/p\"\n",
                "4:9:",
                "without user",
            ),
            (
                "etcd = [\"https://h:1\", \"https://h:1\"]\nelection = \"/p\"\n",
                "4:24:",
                "twice",
            ),
            (
                "etcd = [\"https://h:1\", \"http://h:2\"]\nelection = \"/p\"\n",
                "4:24:",
                "mixes",
            ),
            ("etcd = [\"\"]\nelection = \"/p\"\n", "4:9:", "is empty"),
            ("etcd = [\"https://h:1\"]\n", "3:1:", "no `election`"),
            (
                "etcd = [\"https://h:1\"]\nelection = \"p\"\n",
                "5:12:",
                "start with `/`",
            ),
            (
                "etcd = [\"https://h:1\"]\nelection = \"/p/\"\n",
                "5:12:",
                "ends with `/`",
            ),
            (
                "etcd = [\"https://h:1\"]\nelection = \"/a b\"\n",
                "5:12:",
                "whitespace",
            ),
            (
                "etcd = [\"https://h:1\"]\nelection = \"/a\\u001b\"\n",
                "5:12:",
                "election",
            ),
            (
                "etcd = [\"https://h:1\"]\nelection = \"\"\n",
                "5:12:",
                "is empty",
            ),
            (
                &format!("{ok}lease_ttl = \"2s\"\n"),
                "6:13:",
                "from 3s to 5m",
            ),
            (
                &format!("{ok}lease_ttl = \"6m\"\n"),
                "6:13:",
                "out of range",
            ),
            (&format!("{ok}lease_ttl = 10\n"), "6:13:", "no unit"),
            (&format!("{ok}name = \"\"\n"), "6:8:", "`name` is empty"),
            (&format!("{ok}name = \"a\\u202eb\"\n"), "6:8:", "name"),
            (
                &format!("{ok}cert_file = \"/c.pem\"\n"),
                "6:13:",
                "`key_file` is not",
            ),
            (
                &format!("{ok}key_file = \"/c.key\"\n"),
                "6:12:",
                "`cert_file` is not",
            ),
            (
                &format!("{ok}username = \"u\"\n"),
                "6:12:",
                "`password_file` is not",
            ),
            (
                &format!("{ok}password_file = \"/p\"\n"),
                "6:17:",
                "`username` is not",
            ),
            (
                &format!("{ok}password_file = \"%d/a/b\"\nusername = \"u\"\n"),
                "6:17:",
                "systemd credential",
            ),
            (
                &format!("{ok}ca_file = \"~/ca.pem\"\n"),
                "6:11:",
                "`~` is not expanded",
            ),
            (
                "etcd = [\"http://10.0.0.5:2379\"]\nelection = \"/p\"\nca_file = \"/ca.pem\"\n",
                "6:11:",
                "http://",
            ),
            (
                "etcd = [\"http://10.0.0.5:2379\"]\nelection = \"/p\"\nusername = \"u\"\n\
                 password_file = \"/p\"\n",
                "7:17:",
                "unencrypted",
            ),
            (&format!("{ok}etdc = 1\n"), "6:1:", "etdc"),
            (
                "etcd = \"https://h:1\"\nelection = \"/p\"\n",
                "4:8:",
                "list of URLs",
            ),
        ] {
            let e = placed(&with(text).unwrap_err());
            assert!(
                e.iter().any(|p| p.starts_with(place) && p.contains(says)),
                "{text:?}: want {place} {says:?} in {e:#?}"
            );
            assert!(
                !e.iter()
                    .any(|p| p.contains('\u{1b}') || p.contains('\u{202e}')),
                "{e:?}"
            );
        }
        // A password on http:// to loopback is fine (the connection never leaves the host).
        let s = with(
            "etcd = [\"http://127.0.0.1:2379\"]\nelection = \"/p\"\nusername = \"u\"\n\
             password_file = \"/p\"\n",
        )
        .unwrap();
        assert!(s.ha.is_some());
        // Every problem at once.
        let e =
            with("etcd = [\"https://h:1/x\"]\nlease_ttl = \"1s\"\nusername = \"u\"\n").unwrap_err();
        assert_eq!(e.len(), 4, "{:#?}", placed(&e));
    }

    #[cfg(feature = "ha")]
    #[test]
    fn a_host_name_that_cannot_be_a_name_asks_for_one() {
        use toml::Spanned;
        let text = format!("{HEAD}etcd = [\"https://h:1\"]\nelection = \"/p\"\n");
        let raw: crate::config::raw::RawConfig = toml::from_str(&text).unwrap();
        let section: &Spanned<crate::config::raw::RawHa> = raw.ha.as_ref().unwrap();
        let path = Path::new("/etc/cwp-portwatch/config.toml");
        for host in [None, Some("bad\u{7}name".to_owned()), Some("x".repeat(300))] {
            let mut check = super::Check::new(
                crate::problems::ProblemList::new(path, &text),
                PathBuf::from("/etc/cwp-portwatch"),
            );
            assert!(check.ha_with(section, || host.clone()).is_err());
            let e = check.problems.finish().unwrap_err().to_string();
            assert!(
                e.contains("config.toml:3:1") && e.contains("add name ="),
                "{e}"
            );
            assert!(!e.contains('\u{7}'), "{e}");
        }
    }

    #[cfg(not(feature = "ha"))]
    #[test]
    fn a_build_without_ha_refuses_etcd_at_its_line_and_says_what_to_do() {
        let e = placed(&with("election = \"/p\"\netcd = [\"https://h:1\"]\n").unwrap_err());
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with("5:8: [ha] sets `etcd`"), "{e:?}");
        assert!(
            e[0].contains("no HA support")
                && e[0].contains("install the cwp-portwatch package")
                && e[0].contains("--features ha"),
            "{e:?}"
        );
        // Without etcd, nothing to refuse.
        assert_eq!(with("election = \"/p\"\n").unwrap().ha, None);
    }

    /// The shipped example's commented [ha] lines parse when uncommented (with the feature;
    /// without it, they are refused at `etcd` only).
    #[test]
    fn the_examples_ha_lines_parse_when_uncommented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(root.join("config/config.example.toml")).unwrap();
        let (_, section) = text.split_once("\n# [ha]\n").expect("an [ha] example");
        let lines: String = section
            .lines()
            .take_while(|l| !l.starts_with("# [") && !l.is_empty())
            .filter_map(|l| l.strip_prefix("# "))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(lines.lines().count(), 9, "{lines}");
        let dir = tempfile::tempdir().unwrap();
        let result = Settings::from_toml_str(
            &format!("watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n[ha]\n{lines}"),
            &dir.path().join("config.toml"),
        );
        #[cfg(feature = "ha")]
        {
            let ha = result.unwrap().ha.unwrap();
            assert_eq!(ha.etcd.len(), 3);
            assert_eq!(ha.lease_ttl, HaSettings::DEFAULT_LEASE_TTL);
            assert_eq!(ha.name, "cwp-a");
        }
        #[cfg(not(feature = "ha"))]
        {
            let e = result.unwrap_err();
            assert_eq!(e.problems.len(), 1, "{e}");
            assert!(e.to_string().contains("no HA support"), "{e}");
        }
    }

    #[cfg(feature = "ha")]
    #[test]
    fn check_reports_the_section_without_secrets() {
        let s = HaSettings {
            etcd: vec!["https://10.0.0.5:2379/".into()],
            election: "/cwp/prod".into(),
            lease_ttl: Duration::from_secs(10),
            name: "cwp-a".into(),
            ca_file: Some("/etc/ca.pem".into()),
            cert_file: None,
            key_file: None,
            username: Some("cwp".into()),
            password_file: Some("%d/etcd-password".into()),
        };
        assert_eq!(
            s.summary(),
            "etcd https://10.0.0.5:2379/, election /cwp/prod, lease_ttl 10s, name cwp-a, tls ca \
             /etc/ca.pem, user cwp (password from %d/etcd-password)"
        );
    }
}
