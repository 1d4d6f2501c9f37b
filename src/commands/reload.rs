//! What a SIGHUP may change in a running daemon, decided without I/O.
//!
//! The watchlist, the rate and the poll intervals go to the running engine, and so do the
//! `[inventory]` settings and per-action rates (but whether the inventory is kept), and the
//! expected-ports policy (`[policy] file`, re-read at each SIGHUP and sent to every engine,
//! which evaluates the stored inventories again: `commands::run`); the
//! client's service (`[api] service`: the backend), endpoint, region and timeout, the STS
//! endpoint, the credentials, the state folder,
//! logging, `[discovery]`, `[metrics]` and the `[[sink]]` blocks were wired in at start and
//! stay as they run until a restart.
//! The async side (re-reading the files, telling systemd, sending the engine its new work) is
//! in [`super::run`].

use crate::config::Settings;

/// The settings to run with after a reload from `current` to `new`, and what of `new` waits
/// for a restart (named as the operator writes them in the config). The result keeps the
/// running values for those, so the next reload compares against what really runs.
pub fn apply_reload(current: &Settings, new: Settings) -> (Settings, Vec<&'static str>) {
    let mut settings = new;
    let mut not_applied = Vec::new();
    // The backend decides the engine's lanes and its client's signing service: both were
    // built at start.
    if settings.api.service != current.api.service {
        not_applied.push("api.service");
        settings.api.service = current.api.service;
        settings.api.endpoint_set = current.api.endpoint_set;
    }
    if settings.api.endpoint != current.api.endpoint
        || settings.api.region != current.api.region
        || settings.api.timeout != current.api.timeout
    {
        not_applied.push("api.endpoint/region/timeout");
        settings.api.endpoint = current.api.endpoint.clone();
        settings.api.region = current.api.region.clone();
        settings.api.timeout = current.api.timeout;
    }
    // The assume-role renewer was built with it at start.
    if settings.api.sts_endpoint != current.api.sts_endpoint {
        not_applied.push("api.sts_endpoint");
        settings.api.sts_endpoint = current.api.sts_endpoint.clone();
    }
    // Every client was built trusting it at start.
    if settings.api.ca_file != current.api.ca_file {
        not_applied.push("api.ca_file");
        settings.api.ca_file = current.api.ca_file.clone();
    }
    if settings.credentials != current.credentials {
        not_applied.push("[credentials]");
        settings.credentials = current.credentials.clone();
    }
    if settings.state_dir != current.state_dir {
        not_applied.push("state_dir");
        settings.state_dir = current.state_dir.clone();
    }
    if settings.log != current.log {
        not_applied.push("[log]");
        settings.log = current.log.clone();
    }
    // The listener is bound and the registry built at start.
    if settings.metrics != current.metrics {
        not_applied.push("[metrics]");
        settings.metrics = current.metrics.clone();
    }
    // The refresh loop runs with the settings it started with.
    if settings.discovery != current.discovery {
        not_applied.push("[discovery]");
        settings.discovery = current.discovery.clone();
    }
    // Whether the inventory is kept (its file read and written) is decided at start; its
    // other settings and the per-action rates apply now.
    if settings.inventory.enabled != current.inventory.enabled {
        not_applied.push("inventory.enabled");
        settings.inventory.enabled = current.inventory.enabled;
    }
    // Each sink's outbox, worker and client were set up at start.
    if settings.sinks != current.sinks {
        not_applied.push("[[sink]]");
        settings.sinks = current.sinks.clone();
    }
    (settings, not_applied)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn settings(text: &str) -> Settings {
        let base = "watchlist = \"w.toml\"\nstate_dir = \"/var/lib/a\"\n";
        Settings::from_toml_str(&format!("{base}{text}"), Path::new("/etc/cwp/config.toml"))
            .expect("test config is valid")
    }

    #[test]
    fn the_same_settings_apply_with_nothing_deferred() {
        let current = settings("");
        let (applied, deferred) = apply_reload(&current, current.clone());
        assert_eq!(applied, current);
        assert!(deferred.is_empty());
    }

    #[test]
    fn rate_and_intervals_apply_now() {
        let current = settings("");
        let new = settings(
            "[api]\nrequests_per_second = 5\nmax_in_flight = 4\n[poll]\ninterval = \"2m\"\n\
             collecting_interval = \"1s\"\noffline_interval = \"9s\"\n",
        );
        let (applied, deferred) = apply_reload(&current, new.clone());
        assert_eq!(applied, new);
        assert!(deferred.is_empty(), "{deferred:?}");
        assert_eq!(applied.api.requests_per_second, 5);
        assert_eq!(applied.poll.collecting_interval, Duration::from_secs(1));
    }

    #[test]
    fn what_was_wired_at_start_keeps_running_and_is_named() {
        let current = settings("");
        let new = Settings::from_toml_str(
            "watchlist = \"w.toml\"\nstate_dir = \"/var/lib/b\"\n[api]\n\
             endpoint = \"http://127.0.0.1:8020\"\nregion = \"ap-guangzhou\"\ntimeout = \"3s\"\n\
             requests_per_second = 7\n[credentials]\nsource = \"env\"\n[log]\nlevel = \"debug\"\n",
            Path::new("/etc/cwp/config.toml"),
        )
        .unwrap();
        let (applied, deferred) = apply_reload(&current, new);
        assert_eq!(
            deferred,
            [
                "api.endpoint/region/timeout",
                "[credentials]",
                "state_dir",
                "[log]"
            ]
        );
        assert_eq!(applied.api.endpoint, current.api.endpoint);
        assert_eq!(applied.api.region, current.api.region);
        assert_eq!(applied.api.timeout, current.api.timeout);
        assert_eq!(applied.credentials, current.credentials);
        assert_eq!(applied.state_dir, current.state_dir);
        assert_eq!(applied.log, current.log);
        // ...while what can change, does.
        assert_eq!(applied.api.requests_per_second, 7);
    }

    #[test]
    fn a_changed_service_waits_for_a_restart() {
        let current = settings("");
        let (applied, deferred) = apply_reload(
            &current,
            settings("[api]\nservice = \"cwp\"\nregion = \"ap-guangzhou\"\n"),
        );
        assert_eq!(deferred, ["api.service", "api.endpoint/region/timeout"]);
        assert_eq!(applied.api.service, current.api.service);
        assert_eq!(applied.api.endpoint, current.api.endpoint);
    }

    #[test]
    fn a_second_reload_compares_against_what_runs() {
        let running = settings("");
        let edited = settings("[log]\nlevel = \"debug\"\n");
        let (after_first, deferred) = apply_reload(&running, edited.clone());
        assert_eq!(deferred, ["[log]"]);
        // The file still says debug: still not applied, still reported.
        let (_, deferred) = apply_reload(&after_first, edited);
        assert_eq!(deferred, ["[log]"]);
    }

    #[test]
    fn only_the_timeout_changing_is_deferred_too() {
        let current = settings("");
        let (applied, deferred) = apply_reload(&current, settings("[api]\ntimeout = \"1s\"\n"));
        assert_eq!(deferred, ["api.endpoint/region/timeout"]);
        assert_eq!(applied.api.timeout, current.api.timeout);
    }

    #[test]
    fn a_changed_metrics_section_waits_for_a_restart() {
        let current = settings("[metrics]\nlisten = \"127.0.0.1:9187\"\n");
        let new = settings("[metrics]\nlisten = \"127.0.0.1:9188\"\nper_agent = true\n");
        let (applied, deferred) = apply_reload(&current, new);
        assert_eq!(deferred, ["[metrics]"]);
        assert_eq!(applied.metrics, current.metrics);
    }

    #[test]
    fn inventory_settings_apply_now_but_enabling_waits_for_a_restart() {
        let current = settings("");
        let new = settings(
            "[api.actions.DescribeOpenPorts]\nrequests_per_second = 3\n[inventory]\nenabled = true\n\
             rescan_interval = \"12h\"\n",
        );
        let (applied, deferred) = apply_reload(&current, new.clone());
        assert_eq!(deferred, vec!["inventory.enabled"]);
        assert!(!applied.inventory.enabled);
        assert_eq!(
            applied.inventory.rescan_interval,
            Duration::from_secs(12 * 3600)
        );
        assert_eq!(applied.api.rate_of("DescribeOpenPorts"), 3);
        // Running with it on, the same file applies with nothing deferred.
        let (_, deferred) = apply_reload(&new, new.clone());
        assert!(deferred.is_empty());
    }

    #[test]
    fn a_changed_discovery_section_waits_for_a_restart() {
        let current = settings("[discovery]\nenabled = true\nregions = [\"ap-guangzhou\"]\n");
        let new = settings("[discovery]\nenabled = true\nregions = [\"ap-beijing\"]\n");
        let (applied, deferred) = apply_reload(&current, new);
        assert_eq!(deferred, ["[discovery]"]);
        assert_eq!(applied.discovery, current.discovery);
    }

    #[test]
    fn a_policy_file_named_or_changed_applies_now() {
        let current = settings("");
        let new = settings("[policy]\nfile = \"policy.toml\"\n");
        let (applied, deferred) = apply_reload(&current, new.clone());
        assert!(deferred.is_empty(), "{deferred:?}");
        assert_eq!(applied.policy, new.policy);
    }

    #[test]
    fn the_sts_endpoint_waits_for_a_restart() {
        let current = settings("");
        let (applied, deferred) = apply_reload(
            &current,
            settings("[api]\nsts_endpoint = \"http://127.0.0.1:9\"\n"),
        );
        assert_eq!(deferred, ["api.sts_endpoint"]);
        assert_eq!(applied.api.sts_endpoint, current.api.sts_endpoint);
    }

    #[test]
    fn a_changed_ca_file_waits_for_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, crate::tls::test_server::TestCa::new("CA").pem()).unwrap();
        let current = settings("");
        let new = settings(&format!("[api]\nca_file = {:?}\n", pem.to_str().unwrap()));
        assert!(new.api.ca_file.is_some());
        let (applied, deferred) = apply_reload(&current, new);
        assert_eq!(deferred, ["api.ca_file"]);
        assert_eq!(applied.api.ca_file, None);
    }

    #[test]
    fn changed_sinks_wait_for_a_restart() {
        let current = settings("");
        let mut new = settings("");
        new.sinks.push(crate::delivery::SinkSettings {
            name: "oncall".into(),
            kind: crate::delivery::SinkKind::Alertmanager,
            url: crate::delivery::UrlSource::Inline("http://127.0.0.1:9093".parse().unwrap()),
            secret_file: None,
            events: crate::delivery::select::default_selectors(),
            min_severity: crate::policy::Severity::Warning,
            max_age: crate::delivery::settings::DEFAULT_MAX_AGE,
            per_minute: 120,
            outbox_limit: 100,
        });
        let (applied, deferred) = apply_reload(&current, new);
        assert_eq!(deferred, ["[[sink]]"]);
        assert!(applied.sinks.is_empty(), "the running sinks stay");
    }
}
