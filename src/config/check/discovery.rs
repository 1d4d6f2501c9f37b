//! The `[discovery]` section (`crate::discovery` owns what it means): machine types and
//! agent status are closed word lists, regions are region names, `keywords` is free text
//! sent to the API, `refresh` a bounded duration. Only an enabled section needs `regions`.

use std::collections::HashSet;

use toml::Spanned;

use super::{Check, MAX_REGION_CHARS};
use crate::config::raw::RawDiscovery;
use crate::discovery::{
    AgentStatusFilter, DiscoverySettings, FORGET_AFTER_RANGE, MAX_KEYWORDS_CHARS, MAX_REGIONS,
    MachineType, REFRESH_RANGE, REMOVE_AFTER_RANGE,
};
use crate::problems::{Reported, shown, text_problem};

impl Check<'_> {
    pub(in crate::config) fn discovery(
        &mut self,
        raw: Option<&Spanned<RawDiscovery>>,
    ) -> Result<DiscoverySettings, Reported> {
        let defaults = DiscoverySettings::default();
        let Some(section) = raw else {
            return Ok(defaults);
        };
        let span = section.span();
        let raw = section.get_ref();
        let enabled = raw.enabled.as_ref().is_some_and(|v| *v.get_ref());
        // Every key is checked even when one fails, so `check` lists all problems at once.
        let machine_types = self.machine_types(raw.machine_types.as_ref(), defaults.machine_types);
        let regions = self.regions(raw.regions.as_ref(), enabled, span);
        let agent_status = match &raw.agent_status {
            None => Ok(defaults.agent_status),
            Some(value) => AgentStatusFilter::parse(value.get_ref()).ok_or_else(|| {
                self.problems.at(
                    value.span(),
                    format!(
                        "`agent_status` = {} is not a status filter: write one of \"ALL\", \
                         \"ONLINE\", \"OFFLINE\", \"UNINSTALLED\", e.g. agent_status = \"ALL\"",
                        shown(value.get_ref())
                    ),
                )
            }),
        };
        let keywords = match &raw.keywords {
            None => Ok(None),
            Some(value) if value.get_ref().is_empty() => Ok(None),
            Some(value) => match text_problem("keywords", value.get_ref(), MAX_KEYWORDS_CHARS) {
                Some(message) => Err(self.problems.at(value.span(), message)),
                None => Ok(Some(value.get_ref().clone())),
            },
        };
        let refresh = self.duration(
            raw.refresh.as_ref(),
            "refresh",
            defaults.refresh,
            &REFRESH_RANGE,
        );
        let remove_after = self.integer_in(
            raw.remove_after.as_ref(),
            "remove_after",
            REMOVE_AFTER_RANGE,
            defaults.remove_after,
            " (complete passes in a row a machine is missing from before its agent leaves)",
        );
        let forget_after = self.duration(
            raw.forget_after.as_ref(),
            "forget_after",
            defaults.forget_after,
            &FORGET_AFTER_RANGE,
        );
        Ok(DiscoverySettings {
            enabled,
            machine_types: machine_types?,
            regions: regions?,
            agent_status: agent_status?,
            keywords: keywords?,
            refresh: refresh?,
            remove_after: remove_after?,
            forget_after: forget_after?,
        })
    }

    fn machine_types(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        default: Vec<MachineType>,
    ) -> Result<Vec<MachineType>, Reported> {
        let Some(list) = raw else {
            return Ok(default);
        };
        if list.get_ref().is_empty() {
            return Err(self.problems.at(
                list.span(),
                "`machine_types` is empty: write machine_types = [\"CVM\"] (CVM, BM or both), \
                 or remove the line for the default",
            ));
        }
        let mut types = Vec::new();
        let mut failed = None;
        for value in list.get_ref() {
            match MachineType::parse(value.get_ref()) {
                Some(t) if types.contains(&t) => {
                    failed = Some(self.problems.at(
                        value.span(),
                        format!(
                            "`machine_types` lists {} twice; remove one",
                            shown(value.get_ref())
                        ),
                    ));
                }
                Some(t) => types.push(t),
                None => {
                    failed = Some(self.problems.at(
                        value.span(),
                        format!(
                            "{} is not a machine type: write \"CVM\" or \"BM\", e.g. \
                             machine_types = [\"CVM\", \"BM\"]",
                            shown(value.get_ref())
                        ),
                    ));
                }
            }
        }
        failed.map_or(Ok(types), Err)
    }

    fn regions(
        &mut self,
        raw: Option<&Spanned<Vec<Spanned<String>>>>,
        enabled: bool,
        section: std::ops::Range<usize>,
    ) -> Result<Vec<String>, Reported> {
        let example = "regions = [\"ap-guangzhou\"]";
        let Some(list) = raw else {
            if enabled {
                return Err(self.problems.at(
                    section,
                    format!(
                        "[discovery] is enabled but has no `regions`: add {example} (the \
                         MachineRegion of the machines to discover)"
                    ),
                ));
            }
            return Ok(Vec::new());
        };
        if enabled && list.get_ref().is_empty() {
            return Err(self.problems.at(
                list.span(),
                format!("`regions` is empty, so nothing would be discovered: write e.g. {example}"),
            ));
        }
        if list.get_ref().len() > MAX_REGIONS {
            return Err(self.problems.at(
                list.span(),
                format!("`regions` lists more than {MAX_REGIONS} regions; keep the ones in use"),
            ));
        }
        let mut seen = HashSet::new();
        let mut regions = Vec::new();
        let mut failed = None;
        for value in list.get_ref() {
            let text = value.get_ref();
            let valid = !text.is_empty()
                && text.len() <= MAX_REGION_CHARS
                && text.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
            if !valid {
                failed = Some(self.problems.at(
                    value.span(),
                    format!(
                        "{} is not a region name (at most {MAX_REGION_CHARS} letters, digits \
                         and `-`); write e.g. {example}",
                        shown(text)
                    ),
                ));
            } else if !seen.insert(text.as_str()) {
                failed = Some(self.problems.at(
                    value.span(),
                    format!("`regions` lists {} twice; remove one", shown(text)),
                ));
            } else {
                regions.push(text.clone());
            }
        }
        failed.map_or(Ok(regions), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use crate::config::Settings;
    use crate::discovery::{AgentStatusFilter, DiscoverySettings, MachineType};

    fn load(text: &str) -> Result<Settings, String> {
        Settings::from_toml_str(text, Path::new("/etc/cwp/config.toml")).map_err(|e| e.to_string())
    }

    fn with(discovery: &str) -> Result<Settings, String> {
        load(&format!(
            "watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n[discovery]\n{discovery}"
        ))
    }

    #[test]
    fn absent_means_off_with_defaults() {
        let s = load("watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n").unwrap();
        assert_eq!(s.discovery, DiscoverySettings::default());
        assert!(!s.discovery.enabled);
    }

    #[test]
    fn every_key_parses() {
        let s = with(
            "enabled = true\nmachine_types = [\"CVM\", \"BM\"]\nregions = [\"ap-guangzhou\", \
             \"ap-beijing\"]\nagent_status = \"ONLINE\"\nkeywords = \"web\"\nrefresh = \"5m\"\n\
             remove_after = 5\nforget_after = \"2d\"\n",
        )
        .unwrap();
        let d = s.discovery;
        assert!(d.enabled);
        assert_eq!(d.machine_types, [MachineType::Cvm, MachineType::Bm]);
        assert_eq!(d.regions, ["ap-guangzhou", "ap-beijing"]);
        assert_eq!(d.agent_status, AgentStatusFilter::Online);
        assert_eq!(d.keywords.as_deref(), Some("web"));
        assert_eq!(d.refresh, Duration::from_secs(300));
        assert_eq!(d.remove_after, 5);
        assert_eq!(d.forget_after, Duration::from_secs(2 * 24 * 3600));
        let d = with("").unwrap().discovery;
        assert_eq!(
            (d.remove_after, d.forget_after),
            (3, Duration::from_secs(7 * 24 * 3600)),
            "the documented defaults"
        );
    }

    #[test]
    fn with_discovery_on_the_watchlist_is_optional() {
        let s = load(
            "state_dir = \"/tmp/s\"\n[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\n",
        )
        .unwrap();
        assert_eq!(s.watchlist_path, None);
        // Off: still required, and the message says discovery is the other way.
        let e = load("state_dir = \"/tmp/s\"\n[discovery]\nregions = [\"ap-guangzhou\"]\n")
            .unwrap_err();
        assert!(
            e.contains("`watchlist` is missing") && e.contains("[discovery]"),
            "{e}"
        );
    }

    #[test]
    fn bad_values_are_placed_at_line_and_column() {
        for (text, place, says) in [
            ("enabled = true\n", "config.toml:3:1", "no `regions`"),
            (
                "enabled = true\nregions = []\n",
                "config.toml:5:11",
                "`regions` is empty",
            ),
            (
                "regions = [\"ap guangzhou\"]\n",
                "config.toml:4:12",
                "not a region name",
            ),
            ("regions = [\"a\", \"a\"]\n", "config.toml:4:17", "twice"),
            (
                "machine_types = [\"VM\"]\n",
                "config.toml:4:18",
                "not a machine type",
            ),
            (
                "machine_types = []\n",
                "config.toml:4:17",
                "`machine_types` is empty",
            ),
            (
                "agent_status = \"online\"\n",
                "config.toml:4:16",
                "not a status filter",
            ),
            ("keywords = \"a\\u001bb\"\n", "config.toml:4:12", "keywords"),
            (
                "refresh = \"0s\"\n",
                "config.toml:4:11",
                "greater than zero",
            ),
            ("refresh = \"2d\"\n", "config.toml:4:11", "out of range"),
            ("refresh = 10\n", "config.toml:4:11", "no unit"),
            ("regoins = [\"x\"]\n", "config.toml:4:1", "regoins"),
            ("remove_after = 0\n", "config.toml:4:16", "from 1 to 100"),
            ("remove_after = \"3\"\n", "config.toml:4:16", "whole number"),
            (
                "forget_after = \"400d\"\n",
                "config.toml:4:16",
                "out of range",
            ),
            ("forget_after = 7\n", "config.toml:4:16", "no unit"),
        ] {
            let e = with(text).unwrap_err();
            assert!(e.contains(place), "{text}: {e}");
            assert!(e.contains(says), "{text}: {e}");
            assert!(!e.contains('\u{1b}'), "{text}: {e}");
        }
        // Enabled but invalid: only its own problem, no demand for a watchlist.
        let e = load("state_dir = \"/tmp/s\"\n[discovery]\nenabled = true\nregions = [\"\"]\n")
            .unwrap_err();
        assert!(
            e.contains("not a region name") && !e.contains("`watchlist`"),
            "{e}"
        );
        // Every problem at once.
        let e =
            with("machine_types = [\"VM\"]\nagent_status = \"x\"\nrefresh = \"0s\"\n").unwrap_err();
        assert_eq!(
            e.lines().filter(|l| l.contains("config.toml:")).count(),
            3,
            "{e}"
        );
    }
}

#[cfg(test)]
mod example_tests {
    use std::path::Path;

    use crate::config::Settings;
    use crate::discovery::DiscoverySettings;

    /// The shipped examples' commented lines are the defaults (with the example region), and
    /// parse when uncommented.
    #[test]
    fn the_examples_lines_parse_when_uncommented() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for file in ["config/config.example.toml", "packaging/config.toml"] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            let (_, section) = text.split_once("\n[discovery]\n").expect(file);
            // Up to the next section (`[policy]` follows it in the example).
            let section = section.split("\n[").next().unwrap_or(section);
            let lines: String = section
                .lines()
                .filter_map(|l| l.strip_prefix("# "))
                .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(lines.lines().count(), 8, "{file}: {lines}");
            let s = Settings::from_toml_str(
                &format!("watchlist = \"w.toml\"\nstate_dir = \"/tmp/s\"\n[discovery]\n{lines}"),
                Path::new("/etc/cwp/config.toml"),
            )
            .unwrap();
            let expected = DiscoverySettings {
                regions: vec!["ap-guangzhou".into()],
                ..DiscoverySettings::default()
            };
            assert_eq!(s.discovery, expected, "{file}");
        }
    }
}
