//! `kind = "alertmanager"` against a real Alertmanager (Debian's `prometheus-alertmanager`,
//! started here on loopback with its own storage and config, clustering off): what the kind
//! composes is posted as the worker posts it, and Alertmanager's own API
//! (`GET /api/v2/alerts`) must show the alert firing with exactly our labels, then resolved;
//! re-posts must keep it firing past its first `endsAt` (and without them it must resolve);
//! a silence or an inhibition made in Alertmanager suppresses it there while our side keeps
//! posting (we never read them); the route example of `docs/delivery-alertmanager.md` loads
//! and routes as that page says.
//!
//! [`RealAlertmanager`] is for any test that needs one (the daemon → Alertmanager tests).
//! Alertmanager is required: without it these tests fail and say how to install it
//! (`scripts/test` and `.ci/run` do), never skip.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cwp_portwatch::delivery::kinds::alertmanager::{Alertmanager, Timing};
use cwp_portwatch::delivery::kinds::{Answer, Kind, Request};
use cwp_portwatch::delivery::{EventSelector, Record};
use cwp_portwatch::events::{Event, FindingEvent, FindingKind};
use cwp_portwatch::policy::Severity;
use cwp_portwatch::status::Status;
use serde_json::{Value, json};

/// Generous: Alertmanager starts in well under a second, but the machine may be busy.
const WAIT: Duration = Duration::from_secs(60);

/// The binary of Debian's package.
const BINARY: &str = "/usr/bin/prometheus-alertmanager";

/// A config whose one receiver sends nothing: what most tests need.
pub(crate) const QUIET_CONFIG: &str = "route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n";

/// An Alertmanager process on a free loopback port, in its own temporary folder, killed on
/// drop.
pub(crate) struct RealAlertmanager {
    child: Child,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for RealAlertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on right now (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RealAlertmanager {
    /// Alertmanager with [`QUIET_CONFIG`], ready.
    pub(crate) async fn start() -> RealAlertmanager {
        Self::start_with(QUIET_CONFIG).await
    }

    /// Alertmanager with `config` (YAML), ready (`/-/ready` answers 200). A port taken by
    /// someone else between our probe and its bind is retried on another one.
    pub(crate) async fn start_with(config: &str) -> RealAlertmanager {
        assert!(
            std::path::Path::new(BINARY).is_file(),
            "{BINARY} is not installed: these tests need Debian's prometheus-alertmanager \
             package (apt-get install prometheus-alertmanager; scripts/test and .ci/run \
             install it)"
        );
        let mut last_log = String::new();
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("alertmanager.yml");
            std::fs::write(&file, config).unwrap();
            let log = dir.path().join("alertmanager.log");
            let port = free_port();
            let child = Command::new(BINARY)
                .arg(format!("--config.file={}", file.display()))
                .arg(format!(
                    "--storage.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                // Empty: no gossip, no second port, no peers found on the machine.
                .arg("--cluster.listen-address=")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("prometheus-alertmanager starts");
            let mut am = RealAlertmanager {
                child,
                base: format!("http://127.0.0.1:{port}"),
                log,
                _dir: dir,
            };
            if am.wait_ready().await {
                return am;
            }
            last_log = am.log();
        }
        panic!("Alertmanager did not become ready three times; its last log:\n{last_log}");
    }

    /// Whether it became ready (false: it exited, e.g. its port was taken).
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        let client = reqwest::Client::new();
        loop {
            let ready = client.get(format!("{}/-/ready", self.base)).send().await;
            if ready.is_ok_and(|answer| answer.status().is_success()) {
                return true;
            }
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager not ready after {WAIT:?}; its log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Its base URL (`http://127.0.0.1:PORT`): a sink's `url`.
    pub(crate) fn url(&self) -> &str {
        &self.base
    }

    /// Its log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET /api/v2/alerts`: every alert it holds that has not ended (active, silenced,
    /// inhibited and unprocessed alike).
    pub(crate) async fn alerts(&self) -> Vec<Value> {
        let answer = reqwest::Client::new()
            .get(format!("{}/api/v2/alerts", self.base))
            .send()
            .await
            .expect("GET /api/v2/alerts");
        assert!(answer.status().is_success(), "{answer:?}");
        let body: Value = answer.json().await.unwrap();
        body.as_array().expect("an array of alerts").clone()
    }

    /// Waits until `holds` for the alerts; fails with them and the log after [`WAIT`].
    pub(crate) async fn wait_for(
        &self,
        what: &str,
        holds: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + WAIT;
        loop {
            let alerts = self.alerts().await;
            if holds(&alerts) {
                return alerts;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager: not {what} after {WAIT:?}: {alerts:#?}\nits log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A silence of `matchers` (name = value) for an hour, made through its API; its id.
    pub(crate) async fn silence(&self, matchers: &[(&str, &str)]) -> String {
        let now = time::OffsetDateTime::now_utc();
        let format = time::format_description::well_known::Rfc3339;
        let body = json!({
            "matchers": matchers.iter().map(|(name, value)| json!({
                "name": name, "value": value, "isRegex": false, "isEqual": true,
            })).collect::<Vec<_>>(),
            "startsAt": now.format(&format).unwrap(),
            "endsAt": (now + time::Duration::hours(1)).format(&format).unwrap(),
            "createdBy": "tests/it/alertmanager.rs",
            "comment": "maintenance",
        });
        let answer = reqwest::Client::new()
            .post(format!("{}/api/v2/silences", self.base))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(answer.status().is_success(), "{answer:?}");
        let body: Value = answer.json().await.unwrap();
        body["silenceID"].as_str().expect("a silence id").to_owned()
    }
}

/// Posts `request` as the worker does; Alertmanager's answer as our kind reads it.
async fn post(kind: &Alertmanager, request: &Request) -> Answer {
    let mut builder = reqwest::Client::new()
        .post(request.url.clone())
        .header("Content-Type", "application/json")
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(*name, value);
    }
    let answer = builder.send().await.expect("Alertmanager answers");
    let status = answer.status().as_u16();
    let body = answer.bytes().await.unwrap();
    kind.classify(status, None, &body)
}

/// Composes `records` now, posts them, and marks them delivered; what was posted.
async fn deliver(kind: &mut Alertmanager, id: &str, records: &[Record]) -> Vec<Value> {
    let now = SystemTime::now();
    let composed = kind.compose(id, records, now);
    assert_eq!(composed.covers, records.len());
    assert_eq!(post(kind, &composed.request).await, Answer::Delivered);
    kind.delivered(records, now);
    serde_json::from_slice::<Value>(&composed.request.body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A record as the outbox keeps it, its fields named as in `docs/events.md`.
fn record(seq: u64, event: &str, key: &str, resolves: bool, fields: Value) -> Record {
    Record {
        seq,
        at_ms: now_ms(),
        event: event.to_owned(),
        account: Some("prod".to_owned()),
        severity: Severity::Critical,
        key: key.to_owned(),
        resolves,
        ends: None,
        message: format!("web-01 (6b6cd843…): {event}"),
        fields: fields.as_object().unwrap().clone(),
    }
}

/// A `port_unexpected` (or, resolving, its clear) for port `port` of agent `uuid`.
fn finding(seq: u64, uuid: &str, port: u16, resolves: bool) -> Record {
    let event = if resolves {
        "port_unexpected_cleared"
    } else {
        "port_unexpected"
    };
    record(
        seq,
        event,
        &format!("finding/{uuid}/{port}"),
        resolves,
        json!({
            "uuid": uuid, "agent_name": "web-01", "port": port, "process_name": "sshd",
            "pid": 812, "machine_ip": "10.0.0.7", "rule": "web tier", "severity": "critical",
        }),
    )
}

/// The record the daemon keeps of `event` on account `prod` for a sink taking findings and
/// agents going offline (`Record::for_sink`, as `Delivery::emit` makes it).
fn daemon_record(seq: u64, event: Event) -> Record {
    let selectors: Vec<EventSelector> = [
        "port_unexpected",
        "port_missing",
        "status_changed:AGENT_OFFLINE",
    ]
    .iter()
    .map(|s| EventSelector::parse(s).unwrap())
    .collect();
    Record::for_sink(
        &event,
        Some("prod"),
        seq,
        now_ms(),
        &selectors,
        Severity::Warning,
    )
    .expect("the sink takes it")
}

/// The labels of an alert Alertmanager shows.
fn labels(alert: &Value) -> BTreeMap<String, String> {
    serde_json::from_value(alert["labels"].clone()).unwrap()
}

/// The alert with exactly `want` as its labels, if Alertmanager holds it.
fn find<'a>(alerts: &'a [Value], want: &BTreeMap<String, String>) -> Option<&'a Value> {
    alerts.iter().find(|a| labels(a) == *want)
}

fn state(alert: &Value) -> &str {
    alert["status"]["state"].as_str().unwrap_or("")
}

/// A kind for `am` with the default timing (re-posts every minute: none in a short test).
fn kind_for(am: &RealAlertmanager, timing: Timing) -> Alertmanager {
    Alertmanager::for_url(&url::Url::parse(am.url()).unwrap(), timing)
}

#[tokio::test]
async fn a_finding_fires_in_alertmanager_with_exactly_our_labels_and_its_clear_resolves_it() {
    let am = RealAlertmanager::start().await;
    let mut kind = kind_for(&am, Timing::default());
    let posted = deliver(&mut kind, "oncall-1-1", &[finding(1, "u-1", 22, false)]).await;
    let want = labels(&posted[0]);
    assert_eq!(
        want,
        [
            ("alertname", "CwpPortUnexpected"),
            ("account", "prod"),
            ("agent", "web-01"),
            ("uuid", "u-1"),
            ("port", "22"),
            ("process", "sshd"),
            ("severity", "critical"),
            ("rule", "web tier"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect::<BTreeMap<_, _>>()
    );
    let alerts = am
        .wait_for("firing", |a| {
            find(a, &want).is_some_and(|a| state(a) == "active")
        })
        .await;
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let alert = &alerts[0];
    assert_eq!(alert["annotations"]["message_id"], "oncall-1-1");
    assert_eq!(
        alert["annotations"]["summary"],
        "web-01 (6b6cd843…): port_unexpected"
    );
    assert_eq!(alert["startsAt"], posted[0]["startsAt"]);
    assert_eq!(alert["endsAt"], posted[0]["endsAt"]);
    assert_eq!(kind.firing(), 1);

    deliver(&mut kind, "oncall-2-2", &[finding(2, "u-1", 22, true)]).await;
    am.wait_for("resolved (gone from the alerts that have not ended)", |a| {
        find(a, &want).is_none()
    })
    .await;
    assert_eq!(kind.firing(), 0);
    assert_eq!(kind.next_periodic(), None);
}

#[tokio::test]
async fn re_posts_keep_an_alert_firing_past_its_first_ends_at_and_without_them_it_resolves() {
    let am = RealAlertmanager::start().await;
    // Seconds instead of minutes: valid for 3 s, re-posted every second.
    let timing = Timing {
        validity: Duration::from_secs(3),
        repost_every: Duration::from_secs(1),
    };
    let mut kind = kind_for(&am, timing);
    let posted = deliver(&mut kind, "oncall-1-1", &[finding(1, "u-2", 8080, false)]).await;
    let want = labels(&posted[0]);
    let first_ends = posted[0]["endsAt"].as_str().unwrap().to_owned();
    am.wait_for("firing", |a| find(a, &want).is_some()).await;

    // Twice the validity, re-posting whenever the kind says one is due.
    let until = Instant::now() + Duration::from_secs(6);
    let mut reposts = 0;
    while Instant::now() < until {
        let now = SystemTime::now();
        if kind.next_periodic().is_some_and(|due| due <= now) {
            let request = kind.periodic(now).expect("due");
            assert_eq!(post(&kind, &request).await, Answer::Delivered);
            reposts += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (3..=8).contains(&reposts),
        "{reposts} re-posts in 6 s, one due each second"
    );
    let alerts = am.alerts().await;
    let alert = find(&alerts, &want)
        .unwrap_or_else(|| panic!("resolved although re-posted: {alerts:#?}\n{}", am.log()));
    assert_eq!(state(alert), "active");
    assert_eq!(
        alert["startsAt"], posted[0]["startsAt"],
        "still the alert that started"
    );
    // RFC 3339 in UTC with the same precision: the text orders like the time.
    assert!(
        alert["endsAt"].as_str().unwrap() > first_ends.as_str(),
        "endsAt moved on: {} vs the first {first_ends}",
        alert["endsAt"]
    );

    // The daemon stops re-posting (it died): Alertmanager resolves the alert by itself.
    let stopped = Instant::now();
    am.wait_for("resolved by its endsAt", |a| find(a, &want).is_none())
        .await;
    assert!(
        stopped.elapsed() <= Duration::from_secs(3 + 3),
        "resolved {:?} after the last re-post, validity 3 s",
        stopped.elapsed()
    );
}

#[tokio::test]
async fn a_silence_suppresses_the_alert_in_alertmanager_while_we_keep_posting_it() {
    let am = RealAlertmanager::start().await;
    let timing = Timing {
        validity: Duration::from_secs(30),
        repost_every: Duration::from_secs(1),
    };
    let mut kind = kind_for(&am, timing);
    let posted = deliver(&mut kind, "oncall-1-1", &[finding(1, "u-3", 22, false)]).await;
    let want = labels(&posted[0]);
    am.wait_for("firing", |a| {
        find(a, &want).is_some_and(|a| state(a) == "active")
    })
    .await;

    let id = am
        .silence(&[("alertname", "CwpPortUnexpected"), ("uuid", "u-3")])
        .await;
    let alerts = am
        .wait_for("suppressed by the silence", |a| {
            find(a, &want).is_some_and(|a| state(a) == "suppressed")
        })
        .await;
    assert_eq!(
        find(&alerts, &want).unwrap()["status"]["silencedBy"],
        json!([id])
    );

    // Our side does not know about silences: the alert is still ours to keep alive.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let now = SystemTime::now();
    let request = kind
        .periodic(now)
        .expect("a silenced alert is still re-posted");
    let reposted: Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(labels(&reposted[0]), want);
    assert_eq!(post(&kind, &request).await, Answer::Delivered);
    let alerts = am.alerts().await;
    let alert = find(&alerts, &want).expect("still held, silenced");
    assert_eq!(state(alert), "suppressed");
    assert_eq!(alert["endsAt"], reposted[0]["endsAt"]);

    // And its clear resolves it, silenced or not.
    deliver(&mut kind, "oncall-2-2", &[finding(2, "u-3", 22, true)]).await;
    am.wait_for("resolved", |a| find(a, &want).is_none()).await;
}

#[tokio::test]
async fn alertmanager_refuses_an_invalid_alert_and_the_retry_says_why() {
    let am = RealAlertmanager::start().await;
    let kind = kind_for(&am, Timing::default());
    // What no compose makes (an empty label name), to see the real answer's reading.
    let request = Request {
        url: kind.url().clone(),
        headers: Vec::new(),
        body: br#"[{"labels":{"alertname":"X","":"v"},"startsAt":"2026-01-01T00:00:00Z"}]"#
            .to_vec(),
    };
    let Answer::Retry { after, reason } = post(&kind, &request).await else {
        panic!("an invalid alert is not delivered")
    };
    assert_eq!(after, None);
    assert!(
        reason.starts_with("HTTP 400: Alertmanager refused the alerts: invalid label set"),
        "{reason}"
    );
}

/// The route example of `docs/delivery-alertmanager.md` (its only ```yaml block).
fn documented_route() -> String {
    let page = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/delivery-alertmanager.md"),
    )
    .unwrap();
    let start = page.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let end = start + page[start..].find("```").expect("its end");
    page[start..end].to_owned()
}

#[tokio::test]
async fn the_documented_route_loads_routes_by_severity_and_inhibits_as_the_page_says() {
    let am = RealAlertmanager::start_with(&documented_route()).await;
    let mut kind = kind_for(&am, Timing::default());
    // What the daemon keeps of real events (`Record::for_sink`), as the page's route sees them.
    let unexpected = |port, process: &str, severity| FindingEvent {
        kind: FindingKind::Unexpected,
        uuid: "u-4".into(),
        agent_name: "web-01".into(),
        port,
        process_name: process.into(),
        pid: Some(812),
        machine_ip: "10.0.0.7".into(),
        machine_name: "web-01.prod".into(),
        request_id: Some("req-1".into()),
        rule: "web tier".into(),
        severity,
        spec: None,
    };
    let critical = daemon_record(
        1,
        Event::Finding(Box::new(unexpected(22, "sshd", Severity::Critical))),
    );
    let warning = daemon_record(
        2,
        Event::Finding(Box::new(unexpected(3306, "mysqld", Severity::Warning))),
    );
    let offline = daemon_record(
        3,
        Event::StatusChanged {
            uuid: "u-5".into(),
            agent_name: "db-01".into(),
            from_status: Status::new("COMPLETE"),
            to_status: Status::new("AGENT_OFFLINE"),
            request_id: "req-2".into(),
            error_code: None,
        },
    );
    let missing = daemon_record(
        4,
        Event::Finding(Box::new(FindingEvent {
            kind: FindingKind::Missing,
            uuid: "u-5".into(),
            agent_name: "db-01".into(),
            port: 5432,
            process_name: "postgres".into(),
            pid: None,
            machine_ip: "10.0.0.9".into(),
            machine_name: "db-01.prod".into(),
            request_id: None,
            rule: "db".into(),
            severity: Severity::Warning,
            spec: Some("5432/postgres".into()),
        })),
    );
    let posted = deliver(
        &mut kind,
        "oncall-1-4",
        &[critical, warning, offline, missing],
    )
    .await;
    assert_eq!(posted.len(), 4);
    let alerts = am
        .wait_for("all four processed", |a| {
            a.len() == 4 && a.iter().all(|a| state(a) != "unprocessed")
        })
        .await;
    let receivers = |i: usize| {
        let alert = find(&alerts, &labels(&posted[i])).expect("held");
        (
            alert["receivers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>(),
            state(alert).to_owned(),
        )
    };
    assert_eq!(
        receivers(0),
        (vec!["oncall-pager".to_owned()], "active".to_owned())
    );
    assert_eq!(
        receivers(1),
        (vec!["team-chat".to_owned()], "active".to_owned())
    );
    assert_eq!(
        receivers(2),
        (vec!["team-chat".to_owned()], "active".to_owned())
    );
    // The offline agent's missing port is inhibited by its status alert.
    let inhibited = find(&alerts, &labels(&posted[3])).unwrap();
    assert_eq!(state(inhibited), "suppressed", "{inhibited:#}");
    assert_eq!(
        inhibited["status"]["inhibitedBy"].as_array().unwrap().len(),
        1
    );
}

#[tokio::test]
async fn after_a_restart_the_saved_firing_set_is_posted_at_once_and_fires_again() {
    let am = RealAlertmanager::start().await;
    let timing = Timing {
        validity: Duration::from_secs(2),
        repost_every: Duration::from_secs(1),
    };
    let mut kind = kind_for(&am, timing);
    let posted = deliver(&mut kind, "oncall-1-1", &[finding(1, "u-6", 22, false)]).await;
    let want = labels(&posted[0]);
    am.wait_for("firing", |a| find(a, &want).is_some()).await;
    // Saved in the outbox file (its JSON text); then the daemon is down long enough for
    // Alertmanager to resolve the alert by its endsAt.
    let saved: Value = serde_json::from_str(&kind.save().to_string()).unwrap();
    drop(kind);
    am.wait_for("resolved while we were down", |a| find(a, &want).is_none())
        .await;

    let mut restarted = kind_for(&am, timing);
    restarted.restore(&saved);
    let now = SystemTime::now();
    assert!(
        restarted.next_periodic().is_some_and(|due| due <= now),
        "due at once"
    );
    let request = restarted.periodic(now).expect("the restored set");
    assert_eq!(post(&restarted, &request).await, Answer::Delivered);
    let alerts = am
        .wait_for("firing again", |a| {
            find(a, &want).is_some_and(|a| state(a) == "active")
        })
        .await;
    assert_eq!(
        find(&alerts, &want).unwrap()["startsAt"],
        posted[0]["startsAt"],
        "the condition started when it first did"
    );
}

#[tokio::test]
async fn hostile_values_from_hosts_reach_alertmanager_as_valid_bounded_labels() {
    let am = RealAlertmanager::start().await;
    let mut kind = kind_for(&am, Timing::default());
    let mut r = finding(1, "u-7", 22, false);
    let name = format!("web\n\u{1b}[31m\u{0}\u{202e}{}", "名".repeat(400));
    r.fields.insert("agent_name".into(), json!(name));
    r.fields.insert("process_name".into(), json!(""));
    r.message = format!("{}\r\n", "x".repeat(10_000));
    let posted = deliver(&mut kind, "oncall-1-1", &[r]).await;
    let want = labels(&posted[0]);
    let agent = &want["agent"];
    assert!(
        agent.starts_with("web\\n\\u{1b}[31m\\u{0}\\u{202e}名"),
        "{agent}"
    );
    assert!(agent.len() <= 256, "{}", agent.len());
    assert!(!want.contains_key("process"), "empty: left out");
    let alerts = am.wait_for("firing", |a| find(a, &want).is_some()).await;
    let summary = find(&alerts, &want).unwrap()["annotations"]["summary"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        summary.len() <= 1024 && summary.ends_with('…'),
        "{}",
        summary.len()
    );
}
