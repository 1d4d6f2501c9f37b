//! The simulator over real HTTP on `127.0.0.1:0`: signed requests made with the crate's signer,
//! checked against the answers, headers and statistics.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use cwp_tc3::{RequestParts, sign};

const AGENT: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
const OFFLINE_AGENT: &str = "00000000-0000-4000-8000-000000000002";

fn scenario() -> Scenario {
    Scenario::from_toml_str(&format!(
        r#"
[[agent]]
uuid = "{AGENT}"
timeline = [{{ at = "0s", status = "COLLECTING" }}, {{ at = "1h", status = "COMPLETE" }}]
[[agent]]
uuid = "{OFFLINE_AGENT}"
timeline = [{{ at = "0s", error = "FailedOperation.AgentOffline" }}]
"#
    ))
    .unwrap()
}

async fn start(opts: SimulatorOptions) -> RunningSimulator {
    RunningSimulator::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One request, signed as the crate's client signs, with knobs to break it.
struct Call<'a> {
    secret_id: &'a str,
    secret_key: &'a str,
    action: &'a str,
    version: &'a str,
    body: String,
    timestamp: i64,
    /// The signing service (`yunjing`; `sts` for `AssumeRole`).
    service: &'a str,
    /// `X-TC-Token`, for temporary credentials.
    token: Option<&'a str>,
}

impl Call<'_> {
    fn describe(uuid: &str) -> Call<'static> {
        Call {
            secret_id: DEFAULT_SECRET_ID,
            secret_key: DEFAULT_SECRET_KEY,
            action: DESCRIBE_ACTION,
            version: API_VERSION,
            body: format!(r#"{{"Uuid":"{uuid}"}}"#),
            timestamp: now(),
            service: "yunjing",
            token: None,
        }
    }

    async fn send(&self, sim: &RunningSimulator) -> reqwest::Result<reqwest::Response> {
        let host = sim.addr.to_string();
        let signed = sign(
            self.secret_id,
            self.secret_key,
            &RequestParts {
                method: "POST",
                host: &host,
                content_type: "application/json",
                payload: self.body.as_bytes(),
                service: self.service,
                timestamp: self.timestamp,
            },
        );
        let mut request = reqwest::Client::new().post(sim.endpoint());
        if let Some(token) = self.token {
            request = request.header("X-TC-Token", token);
        }
        request
            .header("Content-Type", "application/json")
            .header("X-TC-Action", self.action)
            .header("X-TC-Version", self.version)
            .header("X-TC-Timestamp", self.timestamp.to_string())
            .header("Authorization", signed.authorization)
            .body(self.body.clone())
            .timeout(Duration::from_secs(10))
            .send()
            .await
    }

    /// `(Status or Error.Code, whole Response object)`.
    async fn answer(&self, sim: &RunningSimulator) -> (String, serde_json::Value) {
        let resp = self.send(sim).await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        let r = v["Response"].clone();
        assert!(r["RequestId"].as_str().is_some_and(is_agent_uuid), "{r}");
        let label = r["Status"]
            .as_str()
            .or(r["Error"]["Code"].as_str())
            .unwrap()
            .to_owned();
        (label, r)
    }
}

#[tokio::test]
async fn answers_the_scripted_status_with_date_and_content_type() {
    let sim = start(SimulatorOptions::new(scenario())).await;
    let resp = Call::describe(AGENT).send(&sim).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let date = resp.headers()["date"].to_str().unwrap().to_owned();
    let date = httpdate::parse_http_date(&date).unwrap();
    let skew = date
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .abs_diff(now() as u64);
    assert!(skew <= 2, "Date is {skew}s off");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["Response"]["Status"], "COLLECTING");

    let (code, r) = Call::describe(OFFLINE_AGENT).answer(&sim).await;
    assert_eq!(code, "FailedOperation.AgentOffline");
    assert!(r["Error"]["Message"].as_str().is_some());

    let stats = sim.stats();
    assert_eq!((stats.requests, stats.ok), (2, 1));
    assert_eq!(stats.by_code["FailedOperation.AgentOffline"], 1);
    assert_eq!(stats.log[0].uuid.as_deref(), Some(AGENT));
    assert_eq!(stats.log[0].answer, "COLLECTING");
    sim.shutdown().await;
}

#[tokio::test]
async fn auth_failures_have_the_real_codes() {
    let sim = start(SimulatorOptions::new(scenario())).await;
    let wrong_key = Call {
        secret_key: "not-the-key",
        ..Call::describe(AGENT)
    };
    assert_eq!(
        wrong_key.answer(&sim).await.0,
        "AuthFailure.SignatureFailure"
    );
    let wrong_id = Call {
        secret_id: "AKIDunknown",
        ..Call::describe(AGENT)
    };
    assert_eq!(
        wrong_id.answer(&sim).await.0,
        "AuthFailure.SecretIdNotFound"
    );
    let old = Call {
        timestamp: now() - 301,
        ..Call::describe(AGENT)
    };
    let (code, r) = old.answer(&sim).await;
    assert_eq!(code, "AuthFailure.SignatureExpire");
    let message = r["Error"]["Message"].as_str().unwrap();
    assert!(message.contains("server time: "), "{message}");
    // Within the 300 s tolerance is fine.
    let skewed = Call {
        timestamp: now() + 250,
        ..Call::describe(AGENT)
    };
    assert_eq!(skewed.answer(&sim).await.0, "COLLECTING");
    // Nothing that failed authentication was rate-limited or counted as accepted.
    assert_eq!(sim.stats().max_in_window, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_the_api_error_codes() {
    let sim = start(SimulatorOptions::new(scenario())).await;
    let cases = [
        (
            Call::describe("not-a-uuid"),
            "InvalidParameter.InvalidFormat",
        ),
        (
            Call::describe("11111111-2222-4333-8444-555555555555"),
            "ResourceNotFound",
        ),
        (
            Call {
                action: "DescribeNothing",
                ..Call::describe(AGENT)
            },
            "InvalidAction",
        ),
        (
            Call {
                version: "2017-03-12",
                ..Call::describe(AGENT)
            },
            "NoSuchVersion",
        ),
        (
            Call {
                body: "{not json".into(),
                ..Call::describe(AGENT)
            },
            "InvalidParameter",
        ),
        (
            Call {
                body: "{}".into(),
                ..Call::describe(AGENT)
            },
            "MissingParameter",
        ),
        (
            Call {
                body: r#"{"Uuid":"x","Limit":1}"#.into(),
                ..Call::describe(AGENT)
            },
            "UnknownParameter",
        ),
        (
            Call {
                body: r#"{"Uuid":7}"#.into(),
                ..Call::describe(AGENT)
            },
            "InvalidParameterValue",
        ),
    ];
    for (call, expected) in cases {
        assert_eq!(call.answer(&sim).await.0, expected, "body {}", call.body);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn unsigned_and_garbage_requests_never_crash_the_server() {
    let sim = start(SimulatorOptions::new(scenario())).await;
    let client = reqwest::Client::new();
    let v: serde_json::Value = client
        .get(sim.endpoint())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["Response"]["Error"]["Code"], "InvalidRequest");
    let v: serde_json::Value = client
        .post(sim.endpoint())
        .header("X-TC-Action", DESCRIBE_ACTION)
        .header("X-TC-Version", API_VERSION)
        .header("X-TC-Timestamp", "yesterday")
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["Response"]["Error"]["Code"], "InvalidParameterValue");
    let v: serde_json::Value = client
        .post(sim.endpoint())
        .header("X-TC-Action", DESCRIBE_ACTION)
        .header("X-TC-Version", API_VERSION)
        .header("X-TC-Timestamp", now().to_string())
        .header(
            "Authorization",
            reqwest::header::HeaderValue::from_bytes(b"TC3-HMAC-SHA256 Credential=\xff").unwrap(),
        )
        .body(vec![0xff, 0xfe, 0x00])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v["Response"]["Error"]["Code"],
        "AuthFailure.InvalidAuthorization"
    );

    // Not even HTTP: the connection is dropped, the server keeps serving.
    let mut raw = tokio::net::TcpStream::connect(sim.addr).await.unwrap();
    raw.write_all(b"\x00\x01garbage\r\n\r\n").await.unwrap();
    let mut sink = Vec::new();
    let _ = raw.read_to_end(&mut sink).await;
    assert_eq!(Call::describe(AGENT).answer(&sim).await.0, "COLLECTING");
    sim.shutdown().await;
}

#[tokio::test]
async fn at_most_the_rate_is_accepted_per_second_and_throttled_calls_say_so() {
    let sim = start(SimulatorOptions::new(scenario())).await;
    let calls = (0..26).map(|_| async {
        let call = Call::describe(AGENT);
        call.answer(&sim).await.0
    });
    let answers = futures_join_all(calls).await;
    let throttled = answers
        .iter()
        .filter(|a| *a == "RequestLimitExceeded")
        .count();
    // 26 requests well within one second: exactly 20 accepted.
    assert_eq!(throttled, 6, "{answers:?}");
    let stats = sim.stats();
    assert_eq!(stats.throttled, 6);
    assert_eq!(stats.max_in_window, 20);
    // Every one of the 26 arrived within the second; the limiter let exactly 20 through.
    assert_eq!(
        stats.per_action[DESCRIBE_ACTION],
        ActionStats {
            arrived: 26,
            accepted: 20,
            throttled: 6,
            max_arrivals_in_window: 26,
            max_accepted_in_window: 20,
        }
    );
    assert_eq!(stats.by_code["RequestLimitExceeded"], 6);
    assert_eq!(stats.ok, 20);
    sim.shutdown().await;
}

/// `join_all` without the futures crate: spawn-free, polls all together.
async fn futures_join_all<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futs {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = (0..set.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[tokio::test]
async fn faults_can_be_switched_on_and_off() {
    let sim = start(SimulatorOptions {
        seed: Some(7),
        ..SimulatorOptions::new(scenario())
    })
    .await;
    let one = |f: fn(&mut Faults)| {
        let mut faults = Faults::default();
        f(&mut faults);
        faults
    };

    sim.set_faults(one(|f| f.reset = 1.0));
    assert!(Call::describe(AGENT).send(&sim).await.is_err());

    sim.set_faults(one(|f| f.http_503 = 1.0));
    let resp = Call::describe(AGENT).send(&sim).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("date"));
    assert!(resp.text().await.unwrap().contains("503"));

    sim.set_faults(one(|f| f.truncated_json = 1.0));
    let resp = Call::describe(AGENT).send(&sim).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_err(),
        "{text}"
    );

    sim.set_faults(one(|f| f.internal_error = 1.0));
    assert_eq!(Call::describe(AGENT).answer(&sim).await.0, "InternalError");

    sim.set_faults(one(|f| {
        f.stall = 1.0;
        f.stall_for = Duration::from_millis(300);
    }));
    let started = std::time::Instant::now();
    assert_eq!(Call::describe(AGENT).answer(&sim).await.0, "COLLECTING");
    assert!(started.elapsed() >= Duration::from_millis(300));

    sim.set_faults(Faults::default());
    assert_eq!(Call::describe(AGENT).answer(&sim).await.0, "COLLECTING");

    let stats = sim.stats();
    for code in [
        "fault:reset",
        "fault:503",
        "fault:truncated",
        "InternalError",
        "fault:stall",
    ] {
        assert_eq!(
            stats.by_code.get(code),
            Some(&1),
            "{code}: {:?}",
            stats.by_code
        );
    }
    assert_eq!(stats.ok, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn clock_offset_moves_date_and_the_expiry_check() {
    let sim = start(SimulatorOptions {
        clock_offset_secs: 600,
        ..SimulatorOptions::new(scenario())
    })
    .await;
    let resp = Call::describe(AGENT).send(&sim).await.unwrap();
    let date = httpdate::parse_http_date(resp.headers()["date"].to_str().unwrap()).unwrap();
    let server = date.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    assert!((server - now() - 600).abs() <= 2, "{server}");
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        v["Response"]["Error"]["Code"],
        "AuthFailure.SignatureExpire"
    );
    // A client that learned the offset gets through.
    let corrected = Call {
        timestamp: now() + 600,
        ..Call::describe(AGENT)
    };
    assert_eq!(corrected.answer(&sim).await.0, "COLLECTING");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_absurd_clock_offset_gives_a_bounded_date_not_a_panic() {
    for offset in [i64::MAX, i64::MIN, 400_000_000_000, -400_000_000_000] {
        let sim = start(SimulatorOptions {
            clock_offset_secs: offset,
            ..SimulatorOptions::new(scenario())
        })
        .await;
        let resp = Call::describe(AGENT).send(&sim).await.unwrap();
        let date = httpdate::parse_http_date(resp.headers()["date"].to_str().unwrap()).unwrap();
        let year_10000 = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert!(date < year_10000, "{offset}");
        let v: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(
            v["Response"]["Error"]["Code"], "AuthFailure.SignatureExpire",
            "{offset}"
        );
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn latency_delays_every_answer_and_in_flight_is_tracked() {
    let sim = start(SimulatorOptions {
        latency: Duration::from_millis(200),
        ..SimulatorOptions::new(scenario())
    })
    .await;
    let started = std::time::Instant::now();
    let answers =
        futures_join_all((0..3).map(|_| async { Call::describe(AGENT).answer(&sim).await.0 }))
            .await;
    assert!(answers.iter().all(|a| a == "COLLECTING"), "{answers:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(sim.stats().max_in_flight_per_uuid, 3);
    sim.shutdown().await;
}

/// One slow action beside fast ones: `DescribeOpenPorts` held for a minute does not hold a
/// status poll sent after it, and the pages still answer (the order proves it, no clock).
#[tokio::test]
async fn an_actions_own_latency_slows_that_action_alone() {
    use serde_json::json;
    let sim = start(SimulatorOptions {
        action_latency: std::collections::HashMap::from([(
            DESCRIBE_PORTS_ACTION.to_owned(),
            Duration::from_secs(60),
        )]),
        ..SimulatorOptions::new(inventory_scenario())
    })
    .await;
    let slow = Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 100, "Offset": 0 }));
    let slow = slow.page(&sim);
    tokio::pin!(slow);
    let fast = Call::describe(BIG_AGENT);
    tokio::select! {
        biased;
        _ = &mut slow => panic!("the slow action answered before the fast one"),
        (status, _) = fast.answer(&sim) => assert_eq!(status, "COMPLETE"),
    }
    // Not `shutdown`: it would wait out the held page; the test's runtime ends the server.
}

// --- The open-port inventory: CreateOpenPortTask, DescribeOpenPorts, per-action windows. ---

/// No task yet; a created task collects for an hour.
const SLOW_AGENT: &str = "10000000-0000-4000-8000-000000000001";
/// No task yet; a created task completes at once.
const QUICK_AGENT: &str = "10000000-0000-4000-8000-000000000002";
/// `COMPLETE` from the start, 25 ports (ports 1000..1025, `svc-N`).
const BIG_AGENT: &str = "10000000-0000-4000-8000-000000000003";
/// Offline from the start.
const DOWN_AGENT: &str = "10000000-0000-4000-8000-000000000004";
/// `COMPLETE` from the start, but its only `ports` entry is in an hour.
const LATE_AGENT: &str = "10000000-0000-4000-8000-000000000005";

fn inventory_scenario() -> Scenario {
    let big: Vec<String> = (0..25)
        .map(|i| {
            format!(
                "{{ port = {}, process = \"svc-{i}\", pid = {} }}",
                1000 + i,
                5000 + i
            )
        })
        .collect();
    Scenario::from_toml_str(&format!(
        r#"
[[agent]]
uuid = "{SLOW_AGENT}"
collect_time = "1h"
timeline = []
ports = [{{ at = "0s", open = [{{ port = 22, process = "sshd", pid = 812 }}] }}]
[[agent]]
uuid = "{QUICK_AGENT}"
collect_time = "0s"
machine_name = "db-01"
machine_ip = "192.0.2.7"
timeline = []
ports = [{{ at = "0s", open = [{{ port = 22, process = "sshd", pid = 812 }}, {{ port = 3306, process = "mysqld", pid = 1400 }}] }}]
[[agent]]
uuid = "{BIG_AGENT}"
timeline = [{{ at = "0s", status = "COMPLETE" }}]
ports = [{{ at = "0s", open = [{}] }}]
[[agent]]
uuid = "{DOWN_AGENT}"
timeline = [{{ at = "0s", error = "FailedOperation.AgentOffline" }}]
[[agent]]
uuid = "{LATE_AGENT}"
timeline = [{{ at = "0s", status = "COMPLETE" }}]
ports = [{{ at = "1h", open = [{{ port = 22, process = "sshd", pid = 812 }}] }}]
"#,
        big.join(", ")
    ))
    .unwrap()
}

impl Call<'_> {
    fn action(action: &'static str, body: impl Into<String>) -> Call<'static> {
        Call {
            action,
            body: body.into(),
            ..Call::describe(AGENT)
        }
    }

    fn create(uuid: &str) -> Call<'static> {
        Call::action(CREATE_TASK_ACTION, format!(r#"{{"Uuid":"{uuid}"}}"#))
    }

    fn ports(body: serde_json::Value) -> Call<'static> {
        Call::action(DESCRIBE_PORTS_ACTION, body.to_string())
    }

    /// `(TotalCount, OpenPorts)` of a `DescribeOpenPorts` answer, failing on an error.
    async fn page(&self, sim: &RunningSimulator) -> (i64, Vec<serde_json::Value>) {
        let resp = self.send(sim).await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        let r = &v["Response"];
        assert!(r.get("Error").is_none(), "{r}");
        assert!(r["RequestId"].as_str().is_some_and(is_agent_uuid), "{r}");
        (
            r["TotalCount"].as_i64().unwrap(),
            r["OpenPorts"].as_array().unwrap().clone(),
        )
    }
}

fn ports_of(rows: &[serde_json::Value]) -> Vec<i64> {
    rows.iter().map(|r| r["Port"].as_i64().unwrap()).collect()
}

#[tokio::test]
async fn a_created_task_collects_then_completes_and_serves_its_ports() {
    let sim = start(SimulatorOptions::new(inventory_scenario())).await;
    let by_uuid = |u: &str| Call::ports(serde_json::json!({ "Uuid": u }));

    // No task yet: no status, no ports.
    assert_eq!(
        Call::describe(SLOW_AGENT).answer(&sim).await.0,
        BEFORE_TIMELINE_ERROR
    );
    assert_eq!(by_uuid(SLOW_AGENT).page(&sim).await, (0, vec![]));

    // The answer of CreateOpenPortTask is only its RequestId.
    let (_, r) = Call::create(SLOW_AGENT).answer_any(&sim).await;
    let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["RequestId"], "{r}");
    assert_eq!(
        Call::describe(SLOW_AGENT).answer(&sim).await.0,
        "COLLECTING"
    );
    // A running task refuses another; the ports are still those of no completed task.
    let (code, _) = Call::create(SLOW_AGENT).answer_any(&sim).await;
    assert_eq!(code, "FailedOperation.CreateOpenPortTask");
    assert_eq!(by_uuid(SLOW_AGENT).page(&sim).await, (0, vec![]));

    // collect_time = 0s: complete at once, with the rows in the API's shape.
    assert_eq!(Call::create(QUICK_AGENT).answer_any(&sim).await.0, "ok");
    assert_eq!(Call::describe(QUICK_AGENT).answer(&sim).await.0, "COMPLETE");
    let (total, rows) = by_uuid(QUICK_AGENT).page(&sim).await;
    assert_eq!(total, 2);
    let row = rows[1].as_object().unwrap();
    let keys: Vec<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Id",
            "Uuid",
            "Port",
            "MachineIp",
            "MachineName",
            "ProcessName",
            "Pid",
            "CreateTime",
            "ModifyTime"
        ]
    );
    assert_eq!(row["Uuid"], QUICK_AGENT);
    assert_eq!(row["Port"], 3306);
    assert_eq!(row["ProcessName"], "mysqld");
    assert_eq!(row["Pid"], 1400);
    assert_eq!(row["MachineName"], "db-01");
    assert_eq!(row["MachineIp"], "192.0.2.7");
    assert_ne!(rows[0]["Id"], rows[1]["Id"]);
    let time = row["ModifyTime"].as_str().unwrap();
    assert!(
        time::PrimitiveDateTime::parse(
            time,
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]")
        )
        .is_ok(),
        "{time}"
    );

    // Refusals.
    let cases = [
        (
            Call::create(DOWN_AGENT),
            "FailedOperation.CreateOpenPortTask",
        ),
        (
            Call::create("11111111-2222-4333-8444-555555555555"),
            "ResourceNotFound",
        ),
        (Call::create("web-01"), "InvalidParameter.InvalidFormat"),
        (Call::action(CREATE_TASK_ACTION, "{}"), "MissingParameter"),
        (
            Call::action(
                CREATE_TASK_ACTION,
                format!(r#"{{"Uuid":"{QUICK_AGENT}","Port":1}}"#),
            ),
            "UnknownParameter",
        ),
    ];
    for (call, expected) in cases {
        assert_eq!(call.answer_any(&sim).await.0, expected, "{}", call.body);
    }
    // The offline agent stays offline: the refused create changed nothing.
    assert_eq!(
        Call::describe(DOWN_AGENT).answer(&sim).await.0,
        "FailedOperation.AgentOffline"
    );
    let stats = sim.stats();
    let log: Vec<(&str, &str)> = sim_log_actions(&stats);
    assert!(log.contains(&(CREATE_TASK_ACTION, "ok")), "{log:?}");
    assert!(log.contains(&(DESCRIBE_PORTS_ACTION, "ok")), "{log:?}");
    sim.shutdown().await;
}

fn sim_log_actions(stats: &SimStats) -> Vec<(&str, &str)> {
    stats
        .log
        .iter()
        .map(|r| (r.action.as_str(), r.answer.as_str()))
        .collect()
}

impl Call<'_> {
    /// `(Status, Error.Code, or "ok", whole Response)`: for actions whose success has no
    /// `Status`.
    async fn answer_any(&self, sim: &RunningSimulator) -> (String, serde_json::Value) {
        let resp = self.send(sim).await.unwrap();
        assert_eq!(resp.status(), 200);
        let v: serde_json::Value = resp.json().await.unwrap();
        let r = v["Response"].clone();
        assert!(r["RequestId"].as_str().is_some_and(is_agent_uuid), "{r}");
        let label = r["Status"]
            .as_str()
            .or(r["Error"]["Code"].as_str())
            .unwrap_or("ok")
            .to_owned();
        (label, r)
    }
}

#[tokio::test]
async fn the_ports_in_force_at_the_latest_completion_are_served() {
    let sim = start(SimulatorOptions::new(inventory_scenario())).await;
    // COMPLETE at 0 s, the ports entry only from 1 h: nothing was open when it completed.
    let late = Call::ports(serde_json::json!({ "Uuid": LATE_AGENT }));
    assert_eq!(late.page(&sim).await, (0, vec![]));
    let (total, rows) = Call::ports(serde_json::json!({ "Uuid": BIG_AGENT }))
        .page(&sim)
        .await;
    assert_eq!(total, 25);
    assert_eq!(ports_of(&rows), (1000..1010).collect::<Vec<_>>());
    sim.shutdown().await;
}

#[tokio::test]
async fn describe_open_ports_pages_filters_and_refuses_bad_parameters() {
    use serde_json::json;
    // More than 20 calls in a second: a roomy limit, this test is not about it.
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 1000 },
        ..SimulatorOptions::new(inventory_scenario())
    })
    .await;
    // Paging to the end gives every row once, in order.
    let mut all = Vec::new();
    for offset in [0, 7, 14, 21] {
        let (total, rows) = Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 7, "Offset": offset }))
            .page(&sim)
            .await;
        assert_eq!(total, 25);
        all.extend(ports_of(&rows));
    }
    assert_eq!(all, (1000..1025).collect::<Vec<_>>());
    let (total, rows) = Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 100, "Offset": 20 }))
        .page(&sim)
        .await;
    assert_eq!((total, ports_of(&rows)), (25, (1020..1025).collect()));
    let (total, rows) = Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 100, "Offset": 25 }))
        .page(&sim)
        .await;
    assert_eq!((total, rows.len()), (25, 0));
    let (total, rows) = Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 0 }))
        .page(&sim)
        .await;
    assert_eq!((total, rows.len()), (25, 0));

    // Port alone: every agent with that port open at its latest completion.
    assert_eq!(Call::create(QUICK_AGENT).answer_any(&sim).await.0, "ok");
    let (total, rows) = Call::ports(json!({ "Port": 22 })).page(&sim).await;
    assert_eq!(total, 1);
    assert_eq!(rows[0]["Uuid"], QUICK_AGENT);
    let (total, _) = Call::ports(json!({ "Port": 1003, "Uuid": BIG_AGENT }))
        .page(&sim)
        .await;
    assert_eq!(total, 1);
    // Filters: ANDed, values ORed.
    let filtered = json!({ "Uuid": BIG_AGENT, "Filters": [
        { "Name": "ProcessName", "Values": ["svc-3", "svc-4", "svc-9"] },
        { "Name": "Port", "Values": ["1003", "1009"] },
    ]});
    let (total, rows) = Call::ports(filtered).page(&sim).await;
    assert_eq!((total, ports_of(&rows)), (2, vec![1003, 1009]));

    let cases = [
        (
            json!({ "Uuid": BIG_AGENT, "Limit": 101 }),
            "InvalidParameter.InvalidFormat",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Limit": -1 }),
            "InvalidParameter.InvalidFormat",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Offset": -1 }),
            "InvalidParameter.InvalidFormat",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Limit": "10" }),
            "InvalidParameterValue",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Limit": 1.5 }),
            "InvalidParameterValue",
        ),
        (json!({}), "MissingParameter"),
        (json!({ "Limit": 10, "Offset": 0 }), "MissingParameter"),
        (json!({ "Port": 65536 }), "InvalidParameter.InvalidFormat"),
        (
            json!({ "Uuid": "web-01" }),
            "InvalidParameter.InvalidFormat",
        ),
        (
            json!({ "Uuid": "11111111-2222-4333-8444-555555555555" }),
            "ResourceNotFound",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Protocol": "tcp" }),
            "UnknownParameter",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Filters": [{ "Name": "Pid", "Values": ["1"] }] }),
            "InvalidParameter.InvalidFormat",
        ),
        (
            json!({ "Uuid": BIG_AGENT, "Filters": [{ "Name": "Port", "Values": [1003] }] }),
            "InvalidParameter.InvalidFormat",
        ),
    ];
    for (body, expected) in cases {
        let call = Call::ports(body);
        assert_eq!(call.answer_any(&sim).await.0, expected, "{}", call.body);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn hostile_port_answers_can_be_switched_on_per_agent() {
    use serde_json::json;
    let sim = start(SimulatorOptions::new(inventory_scenario())).await;
    let page = |uuid: &str| Call::ports(json!({ "Uuid": uuid, "Limit": 5 }));
    assert_eq!(Call::create(QUICK_AGENT).answer_any(&sim).await.0, "ok");

    sim.set_port_faults(PortFaults {
        uuid: Some(BIG_AGENT.into()),
        total_count_offset: 3,
        ..PortFaults::default()
    });
    assert_eq!(page(BIG_AGENT).page(&sim).await.0, 28);
    // Only the named agent lies.
    assert_eq!(page(QUICK_AGENT).page(&sim).await.0, 2);

    for bad in [-1, 70_000] {
        sim.set_port_faults(PortFaults {
            first_port: Some(bad),
            ..PortFaults::default()
        });
        let (total, rows) = page(BIG_AGENT).page(&sim).await;
        assert_eq!(total, 25);
        assert_eq!(ports_of(&rows), [bad, 1001, 1002, 1003, 1004]);
    }

    sim.set_port_faults(PortFaults {
        missing_field: Some("ProcessName".into()),
        ..PortFaults::default()
    });
    let (_, rows) = page(QUICK_AGENT).page(&sim).await;
    assert!(rows[0].get("ProcessName").is_none(), "{}", rows[0]);
    assert_eq!(rows[1]["ProcessName"], "mysqld");

    // A server that ignores Offset: the first rows at every offset, under the true total.
    sim.set_port_faults(PortFaults {
        ignore_offset: true,
        ..PortFaults::default()
    });
    let at = |offset: u32| Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 5, "Offset": offset }));
    let (total, rows) = at(10).page(&sim).await;
    assert_eq!(
        (total, ports_of(&rows)),
        (25, vec![1000, 1001, 1002, 1003, 1004])
    );

    // A transient empty answer: the next 2 answers for the agent list nothing, then honest.
    sim.set_port_faults(PortFaults {
        uuid: Some(BIG_AGENT.into()),
        empty_answers: 2,
        ..PortFaults::default()
    });
    assert_eq!(
        page(QUICK_AGENT).page(&sim).await.0,
        2,
        "another agent: honest"
    );
    for _ in 0..2 {
        let (total, rows) = page(BIG_AGENT).page(&sim).await;
        assert_eq!((total, rows.len()), (0, 0));
    }
    assert_eq!(at(10).page(&sim).await.0, 25);
    assert_eq!(
        ports_of(&at(10).page(&sim).await.1),
        [1010, 1011, 1012, 1013, 1014]
    );

    sim.set_port_faults(PortFaults::default());
    let (total, rows) = page(BIG_AGENT).page(&sim).await;
    assert_eq!(
        (total, ports_of(&rows)),
        (25, vec![1000, 1001, 1002, 1003, 1004])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_port_list_can_change_while_it_is_paged() {
    use serde_json::json;
    let sim = start(SimulatorOptions::new(inventory_scenario())).await;
    let page =
        |offset: i64| Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 10, "Offset": offset }));
    let grown: Vec<OpenPortSpec> = (0..30)
        .map(|i| OpenPortSpec {
            port: 2000 + i,
            process: format!("new-{i}"),
            pid: 1,
        })
        .collect();
    assert!(sim.set_ports_after_next_page(BIG_AGENT, grown.clone()));
    let (first_total, first) = page(0).page(&sim).await;
    let (second_total, second) = page(10).page(&sim).await;
    assert_eq!((first_total, second_total), (25, 30));
    assert_eq!(ports_of(&first)[0], 1000);
    assert_eq!(ports_of(&second), (2010..2020).collect::<Vec<_>>());
    // The change stays.
    assert_eq!(page(0).page(&sim).await.0, 30);

    // set_ports: at once; clear_ports: back to the scenario.
    assert!(sim.set_ports(BIG_AGENT, grown[..3].to_vec()));
    assert_eq!(page(0).page(&sim).await, {
        let (_, rows) = page(0).page(&sim).await;
        (3, rows)
    });
    sim.clear_ports(BIG_AGENT);
    assert_eq!(page(0).page(&sim).await.0, 25);
    assert!(!sim.set_ports("11111111-2222-4333-8444-555555555555", grown));
    sim.shutdown().await;
}

#[tokio::test]
async fn each_action_has_its_own_strict_window_and_arrivals_are_counted() {
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 3 },
        ..SimulatorOptions::new(inventory_scenario())
    })
    .await;
    let calls = (0..5)
        .map(|_| Call::describe(BIG_AGENT))
        .chain((0..5).map(|_| Call::ports(serde_json::json!({ "Uuid": BIG_AGENT }))))
        .chain((0..5).map(|_| Call::create(BIG_AGENT)))
        // Arrives, but fails its signature before the limiter.
        .chain(std::iter::once(Call {
            secret_key: "not-the-key",
            ..Call::describe(BIG_AGENT)
        }))
        .collect::<Vec<_>>();
    let answers =
        futures_join_all(calls.iter().map(|c| async { c.answer_any(&sim).await.0 })).await;
    let throttled = |range: std::ops::Range<usize>| {
        answers[range]
            .iter()
            .filter(|a| *a == "RequestLimitExceeded")
            .count()
    };
    // Each action got its own 3, whatever the others did.
    assert_eq!(
        (throttled(0..5), throttled(5..10), throttled(10..15)),
        (2, 2, 2),
        "{answers:?}"
    );
    assert_eq!(answers[15], "AuthFailure.SignatureFailure");
    let stats = sim.stats();
    let per = |action: &str| stats.per_action[action].clone();
    assert_eq!(
        per(DESCRIBE_ACTION),
        ActionStats {
            arrived: 6,
            accepted: 3,
            throttled: 2,
            max_arrivals_in_window: 6,
            max_accepted_in_window: 3,
        }
    );
    for action in [DESCRIBE_PORTS_ACTION, CREATE_TASK_ACTION] {
        assert_eq!(
            per(action),
            ActionStats {
                arrived: 5,
                accepted: 3,
                throttled: 2,
                max_arrivals_in_window: 5,
                max_accepted_in_window: 3,
            },
            "{action}"
        );
    }
    assert_eq!(stats.per_action.len(), 3, "{:?}", stats.per_action);
    assert_eq!(stats.max_in_window, 3);
    assert_eq!(stats.throttled, 6);
    sim.shutdown().await;
}

// --- Several accounts: SecretIds, AssumeRole, DescribeMachines. ---

const SECOND_ID: &str = "AKIDsecondaccount0000000000000000000";
const SECOND_KEY: &str = "second-account-key";
const ROLE: &str = "qcs::cam::uin/100000000001:roleName/cwp-reader";

fn accounts_scenario() -> Scenario {
    Scenario::from_toml_str(&format!(
        r#"
[[credential]]
secret_id = "{SECOND_ID}"
secret_key = "{SECOND_KEY}"
[[agent]]
uuid = "{AGENT}"
machine_name = "web-01"
machine_ip = "10.1.0.1"
timeline = [{{ at = "0s", status = "COMPLETE" }}]
[[agent]]
uuid = "{OFFLINE_AGENT}"
machine_name = "web-02"
online = false
timeline = [{{ at = "0s", error = "FailedOperation.AgentOffline" }}]
[[agent]]
uuid = "20000000-0000-4000-8000-000000000003"
machine_name = "db-01"
machine_type = "BM"
timeline = []
[[agent]]
uuid = "20000000-0000-4000-8000-000000000004"
machine_name = "sh-01"
region = "ap-shanghai"
timeline = []
[[machine]]
machine_name = "legacy-web"
machine_ip = "10.1.0.9"
"#
    ))
    .unwrap()
}

impl Call<'_> {
    fn assume_role(body: serde_json::Value) -> Call<'static> {
        Call {
            service: STS_SERVICE,
            version: STS_VERSION,
            ..Call::action(ASSUME_ROLE_ACTION, body.to_string())
        }
    }
}

#[tokio::test]
async fn each_secret_id_has_its_own_windows() {
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 3 },
        ..SimulatorOptions::new(accounts_scenario())
    })
    .await;
    let second = || Call {
        secret_id: SECOND_ID,
        secret_key: SECOND_KEY,
        ..Call::describe(AGENT)
    };
    let calls: Vec<Call<'_>> = (0..5)
        .map(|_| Call::describe(AGENT))
        .chain((0..4).map(|_| second()))
        .collect();
    let answers = futures_join_all(calls.iter().map(|c| async { c.answer(&sim).await.0 })).await;
    let ok =
        |range: std::ops::Range<usize>| answers[range].iter().filter(|a| *a == "COMPLETE").count();
    // Each account got its own 3, whatever the other did.
    assert_eq!((ok(0..5), ok(5..9)), (3, 3), "{answers:?}");
    let stats = sim.stats();
    let of = |account: &str| stats.per_account[account][DESCRIBE_ACTION].clone();
    assert_eq!(
        (
            of(DEFAULT_SECRET_ID).arrived,
            of(DEFAULT_SECRET_ID).max_accepted_in_window
        ),
        (5, 3)
    );
    assert_eq!(
        of(SECOND_ID),
        ActionStats {
            arrived: 4,
            accepted: 3,
            throttled: 1,
            max_arrivals_in_window: 4,
            max_accepted_in_window: 3,
        }
    );
    // Summed over accounts; the densest windows are the busiest account's.
    let all = &stats.per_action[DESCRIBE_ACTION];
    assert_eq!(
        (
            all.arrived,
            all.accepted,
            all.throttled,
            all.max_arrivals_in_window,
            all.max_accepted_in_window
        ),
        (9, 6, 3, 5, 3)
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn assume_role_issues_credentials_that_sign_with_their_token_until_they_expire() {
    use serde_json::json;
    let sim = start(SimulatorOptions::new(accounts_scenario())).await;
    let (code, r) = Call::assume_role(json!({
        "RoleArn": ROLE, "RoleSessionName": "cwp-portwatch", "DurationSeconds": 900
    }))
    .answer_any(&sim)
    .await;
    assert_eq!(code, "ok", "{r}");
    let creds = &r["Credentials"];
    let (id, key, token) = (
        creds["TmpSecretId"].as_str().unwrap().to_owned(),
        creds["TmpSecretKey"].as_str().unwrap().to_owned(),
        creds["Token"].as_str().unwrap().to_owned(),
    );
    let expires = r["ExpiredTime"].as_i64().unwrap();
    assert!((expires - now() - 900).abs() <= 2, "{r}");
    let expiration = time::OffsetDateTime::parse(
        r["Expiration"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expiration.unix_timestamp(), expires);

    let temp = |token: Option<&'static str>| Call {
        secret_id: Box::leak(id.clone().into_boxed_str()),
        secret_key: Box::leak(key.clone().into_boxed_str()),
        token,
        ..Call::describe(AGENT)
    };
    let token: &'static str = Box::leak(token.into_boxed_str());
    assert_eq!(temp(Some(token)).answer(&sim).await.0, "COMPLETE");
    assert_eq!(temp(None).answer(&sim).await.0, "AuthFailure.TokenFailure");
    assert_eq!(
        temp(Some("not-the-token")).answer(&sim).await.0,
        "AuthFailure.TokenFailure"
    );
    // Temporary credentials count against their role, not against a SecretId.
    let stats = sim.stats();
    assert_eq!(
        stats.per_account[&format!("role:{ROLE}")][DESCRIBE_ACTION].accepted,
        1
    );
    assert_eq!(
        stats.per_account[DEFAULT_SECRET_ID][ASSUME_ROLE_ACTION].accepted,
        1
    );

    // Granted less than asked: expired at once.
    sim.cap_assume_role_duration(Some(Duration::ZERO));
    let (_, r) = Call::assume_role(json!({ "RoleArn": ROLE, "RoleSessionName": "s" }))
        .answer_any(&sim)
        .await;
    assert!(r["ExpiredTime"].as_i64().unwrap() <= now(), "{r}");
    let short = Call {
        secret_id: Box::leak(
            r["Credentials"]["TmpSecretId"]
                .as_str()
                .unwrap()
                .to_owned()
                .into_boxed_str(),
        ),
        secret_key: Box::leak(
            r["Credentials"]["TmpSecretKey"]
                .as_str()
                .unwrap()
                .to_owned()
                .into_boxed_str(),
        ),
        token: Some(Box::leak(
            r["Credentials"]["Token"]
                .as_str()
                .unwrap()
                .to_owned()
                .into_boxed_str(),
        )),
        ..Call::describe(AGENT)
    };
    let (code, r) = short.answer(&sim).await;
    assert_eq!(code, "AuthFailure.TokenFailure");
    assert!(
        r["Error"]["Message"].as_str().unwrap().contains("expired"),
        "{r}"
    );

    // Revoked: unknown from then on.
    sim.revoke_temporary_credentials();
    assert_eq!(
        temp(Some(token)).answer(&sim).await.0,
        "AuthFailure.SecretIdNotFound"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn assume_role_checks_service_version_and_parameters() {
    use serde_json::json;
    let sim = start(SimulatorOptions::new(accounts_scenario())).await;
    let good = json!({ "RoleArn": ROLE, "RoleSessionName": "s" });
    let cases = [
        (
            Call {
                service: "yunjing",
                ..Call::assume_role(good.clone())
            },
            "AuthFailure.InvalidAuthorization",
        ),
        (
            Call {
                version: API_VERSION,
                ..Call::assume_role(good.clone())
            },
            "NoSuchVersion",
        ),
        (
            Call {
                version: STS_VERSION,
                ..Call::describe(AGENT)
            },
            "NoSuchVersion",
        ),
        (
            Call::assume_role(json!({ "RoleSessionName": "s" })),
            "MissingParameter",
        ),
        (
            Call::assume_role(json!({ "RoleArn": ROLE })),
            "MissingParameter",
        ),
        (
            Call::assume_role(
                json!({ "RoleArn": ROLE, "RoleSessionName": "s", "DurationSeconds": 43_201 }),
            ),
            "InvalidParameterValue",
        ),
        (
            Call::assume_role(json!({ "RoleArn": "a\u{1b}[31m", "RoleSessionName": "s" })),
            "InvalidParameterValue",
        ),
        (
            Call::assume_role(json!({ "RoleArn": ROLE, "RoleSessionName": "s", "Uuid": AGENT })),
            "UnknownParameter",
        ),
    ];
    for (call, expected) in cases {
        assert_eq!(call.answer_any(&sim).await.0, expected, "{}", call.body);
    }
    // The default duration is the real API's 7200 s.
    let (_, r) = Call::assume_role(good).answer_any(&sim).await;
    assert!(
        (r["ExpiredTime"].as_i64().unwrap() - now() - 7200).abs() <= 2,
        "{r}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn describe_machines_lists_the_scenario_by_type_region_and_filters() {
    use serde_json::json;
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 1000 },
        ..SimulatorOptions::new(accounts_scenario())
    })
    .await;
    let machines =
        |body: serde_json::Value| Call::action(DESCRIBE_MACHINES_ACTION, body.to_string());
    let names = |r: &serde_json::Value| -> Vec<String> {
        r["Machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["MachineName"].as_str().unwrap().to_owned())
            .collect()
    };
    let gz = json!({ "MachineType": "CVM", "MachineRegion": "ap-guangzhou" });
    let (code, r) = machines(gz.clone()).answer_any(&sim).await;
    assert_eq!(code, "ok", "{r}");
    assert_eq!(r["TotalCount"], 3);
    assert_eq!(names(&r), ["web-01", "web-02", "legacy-web"]);
    let m = &r["Machines"];
    assert_eq!(
        (
            m[0]["Uuid"].as_str(),
            m[0]["MachineStatus"].as_str(),
            m[0]["MachineIp"].as_str()
        ),
        (Some(AGENT), Some("ONLINE"), Some("10.1.0.1"))
    );
    assert_eq!(m[1]["MachineStatus"], "OFFLINE");
    // A machine long offline has an empty Uuid.
    assert_eq!(
        (m[2]["Uuid"].as_str(), m[2]["MachineStatus"].as_str()),
        (Some(""), Some("OFFLINE"))
    );
    assert_eq!(m[0]["RegionInfo"]["Region"], "ap-guangzhou");
    assert_ne!(m[0]["Quuid"], m[1]["Quuid"]);

    let with = |extra: serde_json::Value| {
        let mut body = gz.clone();
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let page = machines(with(json!({ "Limit": 2, "Offset": 1 })))
        .answer_any(&sim)
        .await
        .1;
    assert_eq!(
        (page["TotalCount"].as_i64(), names(&page)),
        (Some(3), vec!["web-02".to_owned(), "legacy-web".to_owned()])
    );
    let filter =
        |name: &str, value: &str| with(json!({ "Filters": [{ "Name": name, "Values": [value] }] }));
    assert_eq!(
        names(
            &machines(filter("Status", "ONLINE"))
                .answer_any(&sim)
                .await
                .1
        ),
        ["web-01"]
    );
    assert_eq!(
        names(
            &machines(filter("Status", "OFFLINE"))
                .answer_any(&sim)
                .await
                .1
        ),
        ["web-02", "legacy-web"]
    );
    assert_eq!(
        names(
            &machines(filter("Keywords", "WEB-0"))
                .answer_any(&sim)
                .await
                .1
        ),
        ["web-01", "web-02"]
    );
    assert_eq!(
        names(
            &machines(filter("Keywords", "10.1.0.9"))
                .answer_any(&sim)
                .await
                .1
        ),
        ["legacy-web"]
    );
    assert_eq!(
        machines(filter("Version", "PRO_VERSION"))
            .answer_any(&sim)
            .await
            .1["TotalCount"],
        0
    );
    let bm = machines(json!({ "MachineType": "BM", "MachineRegion": "ap-guangzhou" }))
        .answer_any(&sim)
        .await
        .1;
    assert_eq!(names(&bm), ["db-01"]);
    let sh = machines(json!({ "MachineType": "CVM", "MachineRegion": "ap-shanghai" }))
        .answer_any(&sim)
        .await
        .1;
    assert_eq!(names(&sh), ["sh-01"]);

    let cases = [
        (
            json!({ "MachineRegion": "ap-guangzhou" }),
            "MissingParameter",
        ),
        (json!({ "MachineType": "CVM" }), "MissingParameter"),
        (
            json!({ "MachineType": "VM", "MachineRegion": "ap-guangzhou" }),
            "InvalidParameterValue",
        ),
        (
            with(json!({ "Limit": 101 })),
            "InvalidParameter.InvalidFormat",
        ),
        (
            with(json!({ "Filters": [{ "Name": "Status", "Values": ["ONLINE", "OFFLINE"] }] })),
            "InvalidParameter.InvalidFormat",
        ),
        (
            with(json!({ "Filters": [{ "Name": "Status", "Values": ["SLEEPING"] }] })),
            "InvalidParameterValue",
        ),
        (
            with(json!({ "Filters": [{ "Name": "Tag", "Values": ["x"] }] })),
            "InvalidParameter.InvalidFormat",
        ),
        (with(json!({ "Uuid": AGENT })), "UnknownParameter"),
    ];
    for (body, expected) in cases {
        let call = machines(body);
        assert_eq!(call.answer_any(&sim).await.0, expected, "{}", call.body);
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_ten_thousand_port_inventory_pages_completely_and_in_order() {
    use serde_json::json;
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 1000 },
        ..SimulatorOptions::new(inventory_scenario())
    })
    .await;
    // Every port twice (IPv4 and IPv6 listeners of one process): 10,000 rows, pairs alike.
    let ports: Vec<OpenPortSpec> = (0..10_000u32)
        .map(|i| OpenPortSpec {
            port: 10_000 + (i / 2) as u16,
            process: format!("svc-{}", i / 2),
            pid: 20_000 + i / 2,
        })
        .collect();
    assert!(sim.set_ports(BIG_AGENT, ports.clone()));
    let mut rows = Vec::with_capacity(ports.len());
    let mut offset = 0;
    loop {
        let (total, page) =
            Call::ports(json!({ "Uuid": BIG_AGENT, "Limit": 100, "Offset": offset }))
                .page(&sim)
                .await;
        assert_eq!(total, 10_000);
        assert_eq!(page.len(), 100.min(10_000 - offset as usize));
        rows.extend(page);
        offset += 100;
        if offset >= total {
            break;
        }
    }
    let got: Vec<(u16, String, u32)> = rows
        .iter()
        .map(|r| {
            (
                r["Port"].as_u64().unwrap() as u16,
                r["ProcessName"].as_str().unwrap().to_owned(),
                r["Pid"].as_u64().unwrap() as u32,
            )
        })
        .collect();
    let want: Vec<(u16, String, u32)> = ports
        .into_iter()
        .map(|p| (p.port, p.process, p.pid))
        .collect();
    assert_eq!(got, want);
    let ids: std::collections::HashSet<&serde_json::Value> =
        rows.iter().map(|r| &r["Id"]).collect();
    assert_eq!(ids.len(), 10_000, "row Ids are unique");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_flapping_machine_is_in_every_other_listing_and_its_pages_agree() {
    use serde_json::json;
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 1000 },
        ..SimulatorOptions::new(accounts_scenario())
    })
    .await;
    let listing = |offset: i64| {
        Call::action(
            DESCRIBE_MACHINES_ACTION,
            json!({ "MachineType": "CVM", "MachineRegion": "ap-guangzhou", "Limit": 1,
                    "Offset": offset })
            .to_string(),
        )
    };
    let first = |r: &serde_json::Value| r["Machines"][0]["MachineName"].as_str().map(str::to_owned);
    sim.machine_hooks().flap(AGENT);
    for round in 0..2 {
        // Listed: web-01 first, 3 in all; the next page of the same listing agrees.
        let r = listing(0).answer_any(&sim).await.1;
        assert_eq!(
            (r["TotalCount"].as_i64(), first(&r)),
            (Some(3), Some("web-01".into())),
            "{round}"
        );
        let r = listing(1).answer_any(&sim).await.1;
        assert_eq!(first(&r).as_deref(), Some("web-02"));
        // Not listed: 2 in all, at every offset of that listing.
        let r = listing(0).answer_any(&sim).await.1;
        assert_eq!(
            (r["TotalCount"].as_i64(), first(&r)),
            (Some(2), Some("web-02".into()))
        );
        let r = listing(1).answer_any(&sim).await.1;
        assert_eq!(first(&r).as_deref(), Some("legacy-web"));
    }
    // show ends it.
    sim.machine_hooks().show(AGENT);
    for _ in 0..2 {
        assert_eq!(listing(0).answer_any(&sim).await.1["TotalCount"], 3);
    }
    sim.shutdown().await;
}
