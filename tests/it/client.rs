//! The signed client against the simulator: statuses, error classes, faults. (Throttling at
//! the strict window is a real-clock rate test: `tests/rate`.)

use std::time::Duration;

use cwp_portwatch::api::{ApiError, ErrorClass};
use cwp_portwatch::simulator::{Faults, SimulatorOptions};
use cwp_portwatch::status::PollOutcome;

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
        ("UnauthorizedOperation", Err(ErrorClass::Fatal)),
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
    let c = client_for(&sim, cwp_portwatch::simulator::DEFAULT_SECRET_KEY, timeout);
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
