//! The `[metrics]` section: `listen` is an `IP:port` to serve `/metrics` and `/healthz` on
//! (empty: none), `per_agent` a bool.
//!
//! `listen` takes an IP address, not a host name: what the daemon binds must be what the
//! operator read in the file, not whatever a resolver answers at start. Port 0 is refused:
//! Prometheus needs a port it can be told. A non-loopback address is accepted (Prometheus may
//! scrape from another host) and documented in `docs/metrics.md`: the endpoint has no
//! authentication, so a firewall must keep it to the scrapers.

use std::net::SocketAddr;

use super::Check;
use crate::config::MetricsSettings;
use crate::config::raw::RawMetrics;
use crate::problems::{Reported, shown};

/// Longer than any `[IPv6%scope]:port`; a longer value is not an address and is not echoed.
const MAX_LISTEN_CHARS: usize = 64;

impl Check<'_> {
    pub(in crate::config) fn metrics(
        &mut self,
        raw: Option<&RawMetrics>,
    ) -> Result<MetricsSettings, Reported> {
        let per_agent = raw
            .and_then(|m| m.per_agent.as_ref())
            .is_some_and(|v| *v.get_ref());
        let listen = match raw.and_then(|m| m.listen.as_ref()) {
            None => None,
            Some(value) if value.get_ref().trim().is_empty() => None,
            Some(value) => {
                let text = value.get_ref().trim();
                let example = "write e.g. listen = \"127.0.0.1:9187\" (an IP address and a \
                               port; [::1]:9187 for IPv6), or listen = \"\" for no listener";
                if text.chars().count() > MAX_LISTEN_CHARS {
                    return Err(self.problems.at(
                        value.span(),
                        format!("`listen` is too long to be an address; {example}"),
                    ));
                }
                match text.parse::<SocketAddr>() {
                    Ok(addr) if addr.port() == 0 => {
                        return Err(self.problems.at(
                            value.span(),
                            format!(
                                "`listen` = {} has port 0, which picks a random port Prometheus \
                                 cannot be told; {example}",
                                shown(text)
                            ),
                        ));
                    }
                    Ok(addr) => Some(addr),
                    Err(_) => {
                        return Err(self.problems.at(
                            value.span(),
                            format!(
                                "`listen` = {} is not an IP address with a port (host names \
                                 are not resolved); {example}",
                                shown(text)
                            ),
                        ));
                    }
                }
            }
        };
        Ok(MetricsSettings { listen, per_agent })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Settings;

    fn load(metrics: &str) -> Result<Settings, String> {
        Settings::from_toml_str(
            &format!("watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n[metrics]\n{metrics}"),
            Path::new("/etc/cwp/config.toml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn absent_or_empty_means_no_listener() {
        let s = Settings::from_toml_str(
            "watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n",
            Path::new("/etc/cwp/config.toml"),
        )
        .unwrap();
        assert_eq!(s.metrics.listen, None);
        assert!(!s.metrics.per_agent);
        assert_eq!(load("listen = \"\"\n").unwrap().metrics.listen, None);
    }

    #[test]
    fn addresses_parse() {
        let s = load("listen = \"127.0.0.1:9187\"\nper_agent = true\n").unwrap();
        assert_eq!(s.metrics.listen, Some("127.0.0.1:9187".parse().unwrap()));
        assert!(s.metrics.per_agent);
        let s = load("listen = \"[::1]:9187\"\n").unwrap();
        assert_eq!(s.metrics.listen, Some("[::1]:9187".parse().unwrap()));
        // Not loopback: allowed (documented), e.g. for a Prometheus on another host.
        assert!(load("listen = \"0.0.0.0:9187\"\n").is_ok());
    }

    #[test]
    fn bad_addresses_are_placed_and_explained() {
        for (value, says) in [
            ("localhost:9187", "not an IP address with a port"),
            ("127.0.0.1", "not an IP address with a port"),
            ("127.0.0.1:99999", "not an IP address with a port"),
            ("127.0.0.1:0", "port 0"),
            ("\\u001b[2J:1", "not an IP address"),
        ] {
            let e = load(&format!("listen = \"{value}\"\n")).unwrap_err();
            assert!(e.contains("config.toml:4:10"), "{value}: {e}");
            assert!(e.contains(says), "{value}: {e}");
            assert!(e.contains("127.0.0.1:9187"), "{value}: {e}");
            assert!(!e.contains('\u{1b}'), "{value}: {e}");
        }
        let long = "1".repeat(100);
        let e = load(&format!("listen = \"{long}\"\n")).unwrap_err();
        assert!(e.contains("too long") && !e.contains(&long), "{e}");
    }

    #[test]
    fn types_and_unknown_keys_are_refused() {
        let e = load("per_agent = \"yes\"\n").unwrap_err();
        assert!(e.contains("config.toml:4"), "{e}");
        let e = load("port = 9187\n").unwrap_err();
        assert!(e.contains("port"), "{e}");
    }

    #[test]
    fn the_examples_lines_parse_when_uncommented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["config/config.example.toml", "packaging/config.toml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let (_, section) = text.split_once("\n[metrics]\n").expect(file);
            let lines: String = section
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| l.starts_with("listen =") || l.starts_with("per_agent ="))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(lines.lines().count(), 2, "{file}: {lines}");
            let s = load(&lines).unwrap();
            assert_eq!(
                s.metrics.listen,
                Some("127.0.0.1:9187".parse().unwrap()),
                "{file}"
            );
            assert!(s.metrics.listen.unwrap().ip().is_loopback());
        }
    }
}
