//! Unit tests of `AssumeRole`: names, answers, the renewal schedule under paused time.

use std::sync::Arc;

use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::client::parse_answer;
use super::renew::{Renewable, Renewer};
use super::*;
use crate::credentials::MAX_TOKEN_CHARS;
use crate::credentials::refresh::refresh_loop;

const NOW: i64 = 1_700_000_000;
const TWO_HOURS: Duration = Duration::from_secs(7_200);

fn secs(d: Duration) -> u64 {
    d.as_secs()
}

#[test]
fn renewal_is_at_80_percent_or_300_s_before_expiry_whichever_is_earlier() {
    // 2 h: 80 % (5760 s) is earlier than 300 s before (6900 s).
    assert_eq!(secs(renew_after(NOW, NOW + 7_200, TWO_HOURS)), 5_760);
    // 12 h.
    assert_eq!(secs(renew_after(NOW, NOW + 43_200, MAX_DURATION)), 34_560);
    // 20 min: 300 s before (900 s) is earlier than 80 % (960 s).
    assert_eq!(secs(renew_after(NOW, NOW + 1_200, TWO_HOURS)), 900);
    // Both agree at 25 min.
    assert_eq!(secs(renew_after(NOW, NOW + 1_500, TWO_HOURS)), 1_200);
}

#[test]
fn short_lived_credentials_are_used_for_half_their_life_without_a_busy_loop() {
    assert_eq!(secs(renew_after(NOW, NOW + 60, TWO_HOURS)), 30);
    assert_eq!(secs(renew_after(NOW, NOW + 8, TWO_HOURS)), 4);
    assert_eq!(secs(renew_after(NOW, NOW + 1, TWO_HOURS)), 1);
    assert_eq!(secs(renew_after(NOW, NOW, TWO_HOURS)), 1);
    assert_eq!(secs(renew_after(NOW, NOW - 500, TWO_HOURS)), 1);
    assert_eq!(secs(renew_after(NOW, i64::MIN, TWO_HOURS)), 1);
    assert_eq!(secs(renew_after(i64::MAX, i64::MIN, TWO_HOURS)), 1);
}

#[test]
fn a_far_expiry_is_bounded_by_the_duration_asked_for() {
    assert_eq!(secs(renew_after(NOW, i64::MAX, TWO_HOURS)), 5_760);
    assert_eq!(secs(renew_after(i64::MIN, i64::MAX, TWO_HOURS)), 5_760);
    assert_eq!(
        secs(renew_after(NOW, NOW + 100_000, Duration::from_secs(60))),
        30
    );
    assert_eq!(secs(renew_after(NOW, i64::MAX, Duration::MAX)), {
        let left = i64::MAX - NOW;
        (left / 5 * 4 + left % 5 * 4 / 5) as u64
    });
}

#[test]
fn renewal_always_comes_before_expiry() {
    for left in 2..50_000 {
        let wait = secs(renew_after(NOW, NOW + left, MAX_DURATION)) as i64;
        assert!(wait >= 1 && wait < left, "{left}: {wait}");
    }
}

#[test]
fn role_arns_follow_the_cam_form() {
    for good in [
        "qcs::cam::uin/100000000001:roleName/cwp-reader",
        "qcs::cam::uin/1:roleName/a",
        "qcs::cam::uin/100000000001:roleName/R+=,.@_-",
    ] {
        assert!(is_role_arn(good), "{good}");
    }
    for bad in [
        "",
        "cwp-reader",
        "qcs::cam::uin/:roleName/r",
        "qcs::cam::uin/12a:roleName/r",
        "qcs::cam::uin/1:roleName/",
        "qcs::cam::uin/1:role/r",
        "qcs::cam::uin/1:roleName/a/b",
        "qcs::cam::uin/1:roleName/a b",
        "qcs::cam::uin/1:roleName/r\n",
        "QCS::cam::uin/1:roleName/r",
        "qcs::cam::uin/123456789012345678901:roleName/r",
    ] {
        assert!(!is_role_arn(bad), "{bad:?}");
    }
    let long = format!("qcs::cam::uin/1:roleName/{}", "r".repeat(129));
    assert!(!is_role_arn(&long));
}

#[test]
fn session_names_follow_the_sts_rule() {
    for good in ["ab", "cwp-portwatch", "a_b+c=d,e.f@g-h", &"s".repeat(128)] {
        assert!(is_role_session_name(good), "{good}");
    }
    for bad in ["", "a", "a b", "a/b", "é1", "a\u{1b}", &"s".repeat(129)] {
        assert!(!is_role_session_name(bad), "{bad:?}");
    }
}

fn response(value: Value) -> serde_json::Map<String, Value> {
    value.as_object().unwrap().clone()
}

#[test]
fn parses_an_answer_and_keeps_the_secrets_out_of_debug() {
    let (credentials, expires_at) = parse_answer(&response(json!({
        "Credentials": {"TmpSecretId": "AKIDtmp", "TmpSecretKey": "k3yS3CRET", "Token": "t0kS3CRET"},
        "ExpiredTime": 1_700_000_900,
        "Expiration": "2023-11-14T22:28:20Z",
        "RequestId": "r"
    })))
    .unwrap();
    assert_eq!(credentials.secret_id, "AKIDtmp");
    assert_eq!(expires_at, 1_700_000_900);
    let text = format!("{credentials:?}");
    assert!(!text.contains("S3CRET"), "{text}");
    // Expiration alone is enough.
    let (_, expires_at) = parse_answer(&response(json!({
        "Credentials": {"TmpSecretId": "AKIDtmp", "TmpSecretKey": "k", "Token": "t"},
        "Expiration": "2023-11-14T22:28:20Z"
    })))
    .unwrap();
    assert_eq!(expires_at, 1_700_000_900);
}

#[test]
fn bad_answers_name_the_field_never_the_value() {
    let good = json!({"TmpSecretId": "AKIDtmp", "TmpSecretKey": "S3CRET", "Token": "S3CRET"});
    let with = |name: &str, value: Value| {
        let mut c = good.clone();
        c[name] = value;
        json!({"Credentials": c, "ExpiredTime": 1_700_000_900})
    };
    let cases = [
        (json!({"ExpiredTime": 1}), "Credentials is missing"),
        (
            json!({"Credentials": "S3CRET", "ExpiredTime": 1}),
            "not an object",
        ),
        (
            with("TmpSecretKey", json!(7)),
            "TmpSecretKey is not a string",
        ),
        (
            with("Token", json!("S3CRET S3CRET")),
            "Token contains whitespace",
        ),
        (
            with("TmpSecretId", json!("A".repeat(200))),
            "TmpSecretId is longer",
        ),
        (
            with("Token", json!("S".repeat(MAX_TOKEN_CHARS + 1))),
            "Token is longer",
        ),
        (
            json!({"Credentials": good, "ExpiredTime": -5}),
            "ExpiredTime",
        ),
        (json!({"Credentials": good}), "ExpiredTime is missing"),
    ];
    for (answer, want) in cases {
        let problem = parse_answer(&response(answer)).unwrap_err();
        assert!(problem.contains(want), "{problem}");
        assert!(!problem.contains("S3CRET"), "{problem}");
    }
}

/// A role at `endpoint` with fixed base credentials.
fn role_at(endpoint: &str) -> Result<AssumeRole, AssumeRoleError> {
    AssumeRole::new(
        RoleRequest {
            role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
            role_session_name: "s1".to_owned(),
            duration: TWO_HOURS,
        },
        StsOptions {
            endpoint: Url::parse(endpoint).unwrap(),
            region: None,
            timeout: Duration::from_secs(1),
        },
        BaseCredentials::Fixed(Credentials {
            secret_id: "AKIDbase".to_owned(),
            secret_key: SecretString::from("k".to_owned()),
            token: None,
        }),
    )
}

#[tokio::test(start_paused = true)]
async fn the_renewer_stops_with_the_shutdown_even_mid_sleep() {
    // Nothing listens on port 9: every fetch fails at once; the renewer backs off.
    let role = role_at("http://127.0.0.1:9/").unwrap();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_renewer(
        role,
        Some(NOW),
        |_| panic!("nothing to hand out"),
        Arc::new(Notify::new()),
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(3_600)).await;
    shutdown.cancel();
    task.await.unwrap();
}

#[test]
fn new_refuses_a_plain_http_endpoint_off_loopback() {
    let error = role_at("http://sts.example.com/").unwrap_err();
    assert_eq!(error.code(), "AssumeRoleError.Setup");
}

/// A fake STS on paused time: STS's clock is `EPOCH` + the paused time elapsed; each fetch
/// is recorded (seconds since start) and answers credentials valid for `lifetime`, or
/// fails while `failures_left` is not zero.
struct FakeSts {
    start: tokio::time::Instant,
    request: RoleRequest,
    /// Seconds the next answer's credentials are valid for (negative: expired already).
    lifetime: Arc<std::sync::Mutex<i64>>,
    failures_left: Arc<std::sync::Mutex<u32>>,
    fetches: Arc<std::sync::Mutex<Vec<u64>>>,
}

const EPOCH: i64 = 1_800_000_000;

impl FakeSts {
    fn new(lifetime: i64, failures: u32) -> Self {
        FakeSts {
            start: tokio::time::Instant::now(),
            request: RoleRequest {
                role_arn: "qcs::cam::uin/1:roleName/r".to_owned(),
                role_session_name: "s1".to_owned(),
                duration: Duration::from_secs(lifetime as u64),
            },
            lifetime: Arc::new(std::sync::Mutex::new(lifetime)),
            failures_left: Arc::new(std::sync::Mutex::new(failures)),
            fetches: Arc::new(std::sync::Mutex::new(Vec::new())),
        }
    }
}

impl Renewable for FakeSts {
    fn fetch(&self) -> impl Future<Output = Result<AssumedCredentials, AssumeRoleError>> + Send {
        let at = self.start.elapsed().as_secs();
        self.fetches.lock().unwrap().push(at);
        let mut failures = self.failures_left.lock().unwrap();
        let result = if *failures > 0 {
            *failures -= 1;
            Err(AssumeRoleError::BadAnswer {
                role_arn: self.request.role_arn.clone(),
                problem: "scripted failure".to_owned(),
            })
        } else {
            Ok(AssumedCredentials {
                credentials: Credentials {
                    secret_id: format!("AKIDtmp{at}"),
                    secret_key: SecretString::from("k".to_owned()),
                    token: Some(SecretString::from("t".to_owned())),
                },
                expires_at: self.server_now() + *self.lifetime.lock().unwrap(),
                request_id: "r".to_owned(),
            })
        };
        async move { result }
    }

    fn server_now(&self) -> i64 {
        EPOCH + self.start.elapsed().as_secs() as i64
    }

    fn request(&self) -> &RoleRequest {
        &self.request
    }
}

/// Runs the loop on `sts` for `run` of paused time, asking for a renewal at each of
/// `pokes` (seconds); the fetch times and the SecretIds handed out.
async fn run_for(
    sts: FakeSts,
    in_use_until: Option<i64>,
    run: Duration,
    pokes: &[u64],
) -> (Vec<u64>, Vec<String>) {
    let fetches = sts.fetches.clone();
    let updates = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = updates.clone();
    let refresh_now = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let first_wait = in_use_until
        .map(|expires_at| renew_after(sts.server_now(), expires_at, sts.request().duration));
    let task = tokio::spawn(refresh_loop(
        Renewer(sts),
        first_wait,
        move |c: Credentials| seen.lock().unwrap().push(c.secret_id),
        refresh_now.clone(),
        shutdown.clone(),
    ));
    for poke in pokes {
        tokio::time::sleep_until(start + Duration::from_secs(*poke)).await;
        refresh_now.notify_one();
    }
    tokio::time::sleep_until(start + run).await;
    shutdown.cancel();
    task.await.unwrap();
    let fetches = fetches.lock().unwrap().clone();
    let updates = updates.lock().unwrap().clone();
    (fetches, updates)
}

#[tokio::test(start_paused = true)]
async fn two_hour_credentials_are_renewed_every_96_minutes() {
    let sts = FakeSts::new(7_200, 0);
    let (fetches, updates) = run_for(
        sts,
        Some(EPOCH + 7_200),
        Duration::from_secs(5 * 3_600),
        &[],
    )
    .await;
    assert_eq!(fetches, [5_760, 11_520, 17_280]);
    assert_eq!(updates, ["AKIDtmp5760", "AKIDtmp11520", "AKIDtmp17280"]);
}

#[tokio::test(start_paused = true)]
async fn sixty_second_credentials_are_renewed_every_30_s_and_at_once_without_any() {
    let sts = FakeSts::new(60, 0);
    let (fetches, _) = run_for(sts, None, Duration::from_secs(100), &[]).await;
    assert_eq!(fetches, [0, 30, 60, 90]);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_hand_out_nothing_until_a_success() {
    let sts = FakeSts::new(7_200, 4);
    let (fetches, updates) = run_for(sts, None, Duration::from_secs(20), &[]).await;
    // At once, then after 1, 2, 4 and 8 s.
    assert_eq!(fetches, [0, 1, 3, 7, 15]);
    assert_eq!(updates, ["AKIDtmp15"]);
}

/// What `tracing` writes on this thread, for the tests that count warnings.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// Issue 20 item 8: an `ExpiredTime` already past meant a call every second, forever, at
// debug level only. Current-thread runtime: the loop logs under this thread's subscriber.
#[tokio::test(start_paused = true)]
async fn credentials_that_arrive_expired_back_off_from_30_s_and_warn_once() {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    // Every answer expired 10 s before it was given.
    let sts = FakeSts::new(7_200, 0);
    *sts.lifetime.lock().unwrap() = -10;
    // The engine asks for fresh credentials now and then (refused requests): no bypass.
    let (fetches, updates) = run_for(sts, None, Duration::from_secs(1_800), &[5, 6, 40, 100]).await;
    // 30 s, then doubling (60, 120, 240, 480) up to 10 min.
    assert_eq!(fetches, [0, 30, 90, 210, 450, 930, 1_530]);
    // Handed on all the same: the API decides whether they work.
    assert_eq!(updates.len(), fetches.len());
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    let warnings = text
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("expired already"))
        .count();
    assert_eq!(warnings, 1, "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_good_answer_after_expired_ones_brings_back_the_normal_schedule() {
    let sts = FakeSts::new(60, 0);
    let lifetime = sts.lifetime.clone();
    *lifetime.lock().unwrap() = -10;
    let task = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(35)).await;
        *lifetime.lock().unwrap() = 60;
    });
    let (fetches, _) = run_for(sts, None, Duration::from_secs(140), &[]).await;
    task.await.unwrap();
    // Expired at 0 (next in 30 s), expired at 30 (next in 60 s); good at 90: every 30 s.
    assert_eq!(fetches, [0, 30, 90, 120]);
}

#[tokio::test(start_paused = true)]
async fn a_request_renews_at_once_but_never_twice_within_a_second() {
    let sts = FakeSts::new(7_200, 0);
    let (fetches, _) = run_for(
        sts,
        Some(EPOCH + 7_200),
        Duration::from_secs(100),
        &[10, 10, 50],
    )
    .await;
    // The second request at 10 s waits for the 1-s gap after the fetch it caused.
    assert_eq!(fetches, [10, 11, 50]);
}
