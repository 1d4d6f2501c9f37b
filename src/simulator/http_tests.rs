//! The simulator over real HTTP on `127.0.0.1:0`: signed requests made with the crate's signer,
//! checked against the answers, headers and statistics.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::signing::{RequestParts, sign};

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
                service: "yunjing",
                timestamp: self.timestamp,
            },
        );
        reqwest::Client::new()
            .post(sim.endpoint())
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
    assert!(stats.max_in_flight_per_uuid >= 1);
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
