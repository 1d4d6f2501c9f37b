//! The signed client against the simulator: statuses, error classes, faults. (Throttling at
//! the strict window is a real-clock rate test: `tests/rate`.)

use std::time::Duration;

use cwp_portwatch::api::{ApiError, ErrorClass};
use cwp_portwatch::status::PollOutcome;
use cwp_simulator::{Faults, SimulatorOptions};

use crate::support::*;

const U1: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

fn every_status() -> String {
    let answers = [
        ("status", "COLLECTING"),
        ("status", "COMPLETE"),
        ("status", "AGENT_OFFLINE"),
        ("status", "FAILED"),
        ("status", "SOMETHING_NEW"),
        ("error", "FailedOperation.AgentOffline"),
        ("error", "FailedOperation.OpenPortTaskNotFound"),
        ("error", "InternalError"),
        ("error", "RequestLimitExceeded.UinLimitExceeded"),
        ("error", "AuthFailure.UnauthorizedOperation"),
        ("error", "FailedOperation.Other"),
    ];
    let mut s = String::new();
    for (i, (kind, value)) in answers.iter().enumerate() {
        s.push_str(&format!(
            "[[agent]]\nuuid = \"{}\"\ntimeline = [{{ at = \"0s\", {kind} = \"{value}\" }}]\n",
            uuid(i)
        ));
    }
    s
}

#[tokio::test]
async fn every_scripted_answer_maps_to_its_status_or_class() {
    let sim = start(SimulatorOptions::new(scenario(&every_status()))).await;
    let c = good_client(&sim);
    let expect: Vec<(&str, Result<&str, ErrorClass>)> = vec![
        ("COLLECTING", Ok("COLLECTING")),
        ("COMPLETE", Ok("COMPLETE")),
        ("AGENT_OFFLINE", Ok("AGENT_OFFLINE")),
        ("FAILED", Ok("FAILED")),
        ("SOMETHING_NEW", Ok("SOMETHING_NEW")),
        ("AgentOffline", Ok("AGENT_OFFLINE")),
        ("OpenPortTaskNotFound", Ok("NO_TASK")),
        ("InternalError", Err(ErrorClass::Transient)),
        ("UinLimitExceeded", Err(ErrorClass::Throttled)),
        ("UnauthorizedOperation", Err(ErrorClass::Denied)),
        ("FailedOperation.Other", Err(ErrorClass::Request)),
    ];
    for (i, (what, want)) in expect.into_iter().enumerate() {
        let result = c.describe_open_port_task_status(&uuid(i)).await;
        match (PollOutcome::from_result(result), want) {
            (
                PollOutcome::Status {
                    status, request_id, ..
                },
                Ok(s),
            ) => {
                assert_eq!(status, s, "{what}");
                assert!(!request_id.is_empty(), "{what}: RequestId kept");
            }
            (PollOutcome::Failed(e), Err(class)) => {
                assert_eq!(e.class(), class, "{what}: {e}");
                assert!(e.request_id().is_some(), "{what}: RequestId kept");
            }
            (other, want) => panic!("{what}: got {other:?}, want {want:?}"),
        }
    }
    // Not in the scenario, and malformed.
    let e = c.describe_open_port_task_status(U1).await.unwrap_err();
    assert_eq!(e.code(), "ResourceNotFound");
    assert_eq!(e.class(), ErrorClass::AgentStatus("NOT_FOUND"));
    let e = c
        .describe_open_port_task_status("not-a-uuid")
        .await
        .unwrap_err();
    assert_eq!(e.class(), ErrorClass::AgentStatus("INVALID"));
    // The generic call reaches other actions' checks too.
    let e = c
        .call("NoSuchAction", &serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.class()), ("InvalidAction", ErrorClass::Fatal));
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_key_is_a_fatal_signature_failure() {
    let sim = start(SimulatorOptions::new(scenario(&every_status()))).await;
    let c = client_for(&sim, "not-the-key", Duration::from_secs(5));
    let e = c
        .describe_open_port_task_status(&uuid(0))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "AuthFailure.SignatureFailure");
    assert_eq!(e.class(), ErrorClass::Fatal);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_skewed_clock_is_learned_from_the_date_header() {
    for offset in [900i64, -900] {
        let mut opts = SimulatorOptions::new(scenario(&every_status()));
        opts.clock_offset_secs = offset;
        let sim = start(opts).await;
        let c = good_client(&sim);
        let first = c
            .describe_open_port_task_status(&uuid(0))
            .await
            .unwrap_err();
        assert_eq!(first.code(), "AuthFailure.SignatureExpire");
        assert_eq!(first.class(), ErrorClass::Clock);
        let learned = c.clock_offset_ms() / 1000;
        assert!(
            (learned - offset).abs() <= 2,
            "learned {learned} s, server is {offset} s off"
        );
        let again = c.describe_open_port_task_status(&uuid(0)).await.unwrap();
        assert_eq!(again.status, "COLLECTING");
        sim.shutdown().await;
    }
}

async fn with_fault(faults: Faults, timeout: Duration) -> ApiError {
    let mut opts = SimulatorOptions::new(scenario(&every_status()));
    opts.faults = faults;
    let sim = start(opts).await;
    let c = client_for(&sim, cwp_simulator::DEFAULT_SECRET_KEY, timeout);
    let e = c
        .describe_open_port_task_status(&uuid(1))
        .await
        .unwrap_err();
    sim.shutdown().await;
    e
}

#[tokio::test]
async fn faults_give_typed_transient_errors() {
    let stall = Faults {
        stall: 1.0,
        stall_for: Duration::from_secs(5),
        ..Faults::default()
    };
    let e = with_fault(stall, Duration::from_millis(300)).await;
    assert_eq!(e.code(), "ClientError.Timeout");
    let e = with_fault(
        Faults {
            truncated_json: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(e.code(), "ClientError.Decode");
    let e = with_fault(
        Faults {
            reset: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(e.code(), "ClientError.Transport", "{e}");
    let e = with_fault(
        Faults {
            http_503: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(e.code(), "ClientError.HttpStatus");
    assert_eq!(e.class(), ErrorClass::Transient);
    let e = with_fault(
        Faults {
            internal_error: 1.0,
            ..Faults::default()
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(
        (e.code(), e.class()),
        ("InternalError", ErrorClass::Transient)
    );
}

#[test]
fn http_is_refused_for_non_loopback_hosts() {
    let make = |url: &str| {
        cwp_portwatch::api::Client::new(
            cwp_portwatch::api::ClientOptions {
                endpoint: url.parse().unwrap(),
                region: None,
                timeout: Duration::from_secs(1),
                max_idle_connections: 1,
            },
            creds("k"),
        )
    };
    let e = make("http://yunjing.tencentcloudapi.com").unwrap_err();
    assert!(e.to_string().contains("loopback"), "{e}");
    assert!(make("http://127.0.0.1:9/").is_ok());
    assert!(make("http://[::1]:9/").is_ok());
    assert!(make("https://yunjing.tencentcloudapi.com").is_ok());
}

/// What a [`RawServer`] answers to every request.
#[derive(Clone)]
enum Raw {
    /// HTTP 200 with this body and its `Content-Length`.
    Sized(String),
    /// A valid `COMPLETE` answer padded with spaces to `n` bytes, with `Content-Length`.
    PaddedSized(usize),
    /// The same, chunked (no `Content-Length`).
    PaddedChunked(usize),
    /// `Content-Length: n`, a few bytes, then nothing (the connection stays open).
    Declared(u64),
    /// Chunked, endless.
    Endless,
}

/// A tiny HTTP/1.1 server on 127.0.0.1:0 that sends hostile answers the simulator never would.
struct RawServer {
    endpoint: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const PADDED_HEAD: &str = r#"{"Response":{"Status":"COMPLETE","RequestId":"r-big"}"#;

fn padded(n: usize) -> Vec<u8> {
    let mut body = PADDED_HEAD.as_bytes().to_vec();
    body.resize(n - 1, b' ');
    body.push(b'}');
    body
}

impl RawServer {
    async fn start(answer: Raw) -> RawServer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n";
                    let chunk = |data: &[u8]| {
                        let mut c = format!("{:x}\r\n", data.len()).into_bytes();
                        c.extend_from_slice(data);
                        c.extend_from_slice(b"\r\n");
                        c
                    };
                    let _ = match answer {
                        Raw::Sized(ref body) => {
                            let text =
                                format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
                            stream.write_all(text.as_bytes()).await
                        }
                        Raw::PaddedSized(n) => {
                            let mut text =
                                format!("{head}Content-Length: {n}\r\n\r\n").into_bytes();
                            text.extend_from_slice(&padded(n));
                            stream.write_all(&text).await
                        }
                        Raw::PaddedChunked(n) => {
                            let text = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
                            let mut out = text.into_bytes();
                            for part in padded(n).chunks(64 * 1024) {
                                out.extend_from_slice(&chunk(part));
                            }
                            out.extend_from_slice(b"0\r\n\r\n");
                            stream.write_all(&out).await
                        }
                        Raw::Declared(n) => {
                            let text = format!("{head}Content-Length: {n}\r\n\r\n{PADDED_HEAD}");
                            let _ = stream.write_all(text.as_bytes()).await;
                            tokio::time::sleep(Duration::from_secs(30)).await;
                            Ok(())
                        }
                        Raw::Endless => {
                            let text = format!("{head}Transfer-Encoding: chunked\r\n\r\n");
                            let mut result = stream.write_all(text.as_bytes()).await;
                            let part = chunk(&[b' '; 16 * 1024]);
                            while result.is_ok() {
                                result = stream.write_all(&part).await;
                            }
                            result
                        }
                    };
                    let _ = stream.shutdown().await;
                });
            }
        });
        RawServer { endpoint, task }
    }

    fn client(&self, timeout: Duration) -> cwp_portwatch::api::Client {
        cwp_portwatch::api::Client::new(
            cwp_portwatch::api::ClientOptions {
                endpoint: self.endpoint.parse().unwrap(),
                region: None,
                timeout,
                max_idle_connections: 1,
            },
            creds("k"),
        )
        .unwrap()
    }
}

#[tokio::test]
async fn an_oversized_answer_is_a_transient_error_never_a_status() {
    const TWO_MIB: usize = 2 << 20;
    for (what, answer) in [
        ("2 MiB with Content-Length", Raw::PaddedSized(TWO_MIB)),
        ("2 MiB chunked", Raw::PaddedChunked(TWO_MIB)),
        ("100 MiB declared, not sent", Raw::Declared(100 << 20)),
        ("endless chunked", Raw::Endless),
    ] {
        let server = RawServer::start(answer).await;
        let started = std::time::Instant::now();
        let result = server
            .client(Duration::from_secs(10))
            .describe_open_port_task_status(U1)
            .await;
        let e = match result {
            Ok(status) => panic!("{what}: accepted as {status:?}"),
            Err(e) => e,
        };
        assert_eq!(e.code(), "ClientError.BodyTooLarge", "{what}: {e}");
        assert_eq!(e.class(), ErrorClass::Transient, "{what}");
        assert!(e.to_string().contains("1048576"), "{what}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{what}: stopped reading only after {:?}",
            started.elapsed()
        );
    }
    // Just under the cap is read as usual.
    let server = RawServer::start(Raw::PaddedSized(1 << 20)).await;
    let status = server
        .client(Duration::from_secs(10))
        .describe_open_port_task_status(U1)
        .await
        .unwrap();
    assert_eq!(status.status, "COMPLETE");
}

#[tokio::test]
async fn hostile_fields_are_decode_errors_not_statuses() {
    let cases: [(&str, &str); 8] = [
        (
            "empty Status",
            r#"{"Response":{"Status":"","RequestId":"r1"}}"#,
        ),
        (
            "empty RequestId",
            r#"{"Response":{"Status":"COMPLETE","RequestId":""}}"#,
        ),
        (
            "Status with a newline",
            r#"{"Response":{"Status":"COMPLETE\nFAKE","RequestId":"r1"}}"#,
        ),
        (
            "Status with an escape",
            r#"{"Response":{"Status":"\u001b[31mRED","RequestId":"r1"}}"#,
        ),
        (
            "Status with a space",
            r#"{"Response":{"Status":"COMPLETE NOW","RequestId":"r1"}}"#,
        ),
        (
            "RequestId with a newline",
            r#"{"Response":{"Status":"COMPLETE","RequestId":"r1\nstatus=FAKE"}}"#,
        ),
        (
            "a 65-byte Status",
            r#"{"Response":{"Status":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","RequestId":"r1"}}"#,
        ),
        (
            "a non-ASCII Status",
            r#"{"Response":{"Status":"COMPLÉTÉ","RequestId":"r1"}}"#,
        ),
    ];
    for (what, body) in cases {
        let server = RawServer::start(Raw::Sized(body.to_owned())).await;
        let result = server
            .client(Duration::from_secs(5))
            .describe_open_port_task_status(U1)
            .await;
        match result {
            Ok(status) => panic!("{what}: accepted as {status:?}"),
            Err(e) => {
                assert_eq!(e.code(), "ClientError.Decode", "{what}: {e}");
                assert!(!e.to_string().contains('\n'), "{what}: {e:?}");
            }
        }
    }
    // A huge Status is refused too (within the body cap).
    let big = format!(
        r#"{{"Response":{{"Status":"{}","RequestId":"r1"}}}}"#,
        "A".repeat(512 * 1024)
    );
    let server = RawServer::start(Raw::Sized(big)).await;
    let e = server
        .client(Duration::from_secs(5))
        .describe_open_port_task_status(U1)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ClientError.Decode", "{e}");
    assert!(e.to_string().len() < 400, "the message quotes the value");
    // The longest Status we accept, and unknown statuses still pass.
    for status in [
        "SOMETHING_NEW".to_owned(),
        format!("LONG_{}", "A".repeat(59)),
    ] {
        let body = format!(r#"{{"Response":{{"Status":"{status}","RequestId":"r1"}}}}"#);
        let server = RawServer::start(Raw::Sized(body)).await;
        let got = server
            .client(Duration::from_secs(5))
            .describe_open_port_task_status(U1)
            .await
            .unwrap();
        assert_eq!(got.status, status);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_in_the_environment_is_never_used_for_a_loopback_endpoint() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::support::app::{App, agents, run_within};

    // The "proxy": counts connections, answers nothing.
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", proxy.local_addr().unwrap());
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let proxy_task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = proxy.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            held.push(stream);
        }
    });

    let sim = start_scenario(&steady(2, "COMPLETE")).await;
    let app = App::for_simulator(&sim.endpoint(), &agents(0..2, "p"));
    let mut cmd = app.with_config(&["once"]);
    for var in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env(var, &proxy_url);
    }
    cmd.env_remove("NO_PROXY").env_remove("no_proxy");
    let out = tokio::task::spawn_blocking(move || run_within(cmd, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the signed request went through the proxy: {}",
        out.stderr
    );
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.matches("COMPLETE").count(), 2, "{}", out.stdout);
    proxy_task.abort();
    sim.shutdown().await;
}
