//! CVM role credentials against a fake metadata service on 127.0.0.1:0: fetching, bad answers,
//! the background refresher (before expiry, on request, after failures), secrets kept out of
//! text, and end to end with the simulator.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cwp_portwatch::api::{Client, ClientOptions};
use cwp_portwatch::credentials::Credentials;
use cwp_portwatch::credentials::cvm_role::{CvmRole, run_refresher};
use cwp_simulator::SimulatorOptions;
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::support::*;

const ROLE: &str = "cwp-role";
const LIST: &str = "/latest/meta-data/cam/security-credentials/";
const CREDS: &str = "/latest/meta-data/cam/security-credentials/cwp-role";
/// A secret value that must never show up in any text.
const KEY: &str = "TmpKeyNEVERshowTHIS";
const TOKEN: &str = "TmpTokenNEVERshowTHIS";

fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Path → (status, body).
type Handler = dyn Fn(&str) -> (u16, String) + Send + Sync;

/// A minimal HTTP/1.1 responder: one request per connection, `Connection: close`.
struct FakeMetadata {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeMetadata {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeMetadata {
    async fn start(handler: impl Fn(&str) -> (u16, String) + Send + Sync + 'static) -> Self {
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = paths.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let text = String::from_utf8_lossy(&request);
                    let path = text.split(' ').nth(1).unwrap_or("").to_owned();
                    seen.lock().unwrap().push(path.clone());
                    let (status, body) = handler(&path);
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        FakeMetadata { addr, paths, task }
    }

    fn endpoint(&self) -> reqwest::Url {
        format!("http://{}/latest/meta-data/", self.addr)
            .parse()
            .unwrap()
    }

    fn role(&self, role: Option<&str>) -> CvmRole {
        CvmRole::new(self.endpoint(), role.map(str::to_owned)).unwrap()
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().unwrap().clone()
    }
}

fn answer(id: &str, key: &str, token: &str, expires_at: i64) -> String {
    format!(
        r#"{{"TmpSecretId":"{id}","TmpSecretKey":"{key}","Token":"{token}","ExpiredTime":{expires_at},"Expiration":"2030-01-01T00:00:00Z","Code":"Success"}}"#
    )
}

/// (SecretId, ExpiredTime) of every set handed out, in order.
type Issued = Arc<Mutex<Vec<(String, i64)>>>;
/// An update seen by the refresher's callback, with its arrival time.
type Updates = mpsc::UnboundedReceiver<(Instant, Credentials)>;

/// A metadata service handing out a new set at each fetch: `AKIDtmp1`, `AKIDtmp2`, …, each
/// valid for `lifetime` seconds. Also returns the expiry of each set by SecretId.
fn rotating(lifetime: i64) -> (impl Fn(&str) -> (u16, String), Issued) {
    let counter = AtomicUsize::new(0);
    let issued = Arc::new(Mutex::new(Vec::new()));
    let log = issued.clone();
    let handler = move |path: &str| match path {
        LIST => (200, format!("{ROLE}\n")),
        CREDS => {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            let id = format!("AKIDtmp{n}");
            let expires_at = now_unix() + lifetime;
            log.lock().unwrap().push((id.clone(), expires_at));
            (200, answer(&id, KEY, &format!("{TOKEN}{n}"), expires_at))
        }
        _ => (404, "not found".to_owned()),
    };
    (handler, issued)
}

/// Starts the refresher; updates arrive on the channel with their arrival time.
fn spawn_refresher(
    role: CvmRole,
) -> (
    Updates,
    Arc<Notify>,
    CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let refresh_now = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(run_refresher(
        role,
        move |c| {
            let _ = tx.send((Instant::now(), c));
        },
        refresh_now.clone(),
        shutdown.clone(),
    ));
    (rx, refresh_now, shutdown, task)
}

async fn next_update(rx: &mut Updates, within: Duration) -> (Instant, Credentials) {
    tokio::time::timeout(within, rx.recv())
        .await
        .expect("an update in time")
        .expect("refresher alive")
}

#[tokio::test]
async fn fetch_returns_the_credentials_token_and_expiry() {
    let (handler, issued) = rotating(7_200);
    let meta = FakeMetadata::start(handler).await;

    let got = meta.role(None).fetch().await.unwrap();
    assert_eq!(got.role, ROLE);
    assert_eq!(got.credentials.secret_id, "AKIDtmp1");
    assert_eq!(got.credentials.secret_key.expose_secret(), KEY);
    let token = got.credentials.token.as_ref().expect("a token");
    assert_eq!(token.expose_secret(), format!("{TOKEN}1"));
    assert_eq!(got.expires_at, issued.lock().unwrap()[0].1);
    assert_eq!(meta.paths(), [LIST, CREDS]);

    // A configured role skips the discovery.
    let got = meta.role(Some(ROLE)).fetch().await.unwrap();
    assert_eq!(got.credentials.secret_id, "AKIDtmp2");
    assert_eq!(meta.paths(), [LIST, CREDS, CREDS]);
}

#[tokio::test]
async fn bad_answers_give_the_right_codes() {
    let with_creds = |status: u16, body: String| {
        move |path: &str| match path {
            LIST => (200, format!("{ROLE}\n")),
            CREDS => (status, body.clone()),
            _ => (404, String::new()),
        }
    };
    let now = now_unix();
    let cases: Vec<(&str, Box<Handler>, &str)> = vec![
        (
            "Code is not Success",
            Box::new(with_creds(
                200,
                answer("AKIDx", KEY, TOKEN, now + 900).replace("Success", "Failed"),
            )),
            "CvmRoleError.BadAnswer",
        ),
        (
            "TmpSecretKey missing",
            Box::new(with_creds(
                200,
                format!(
                    r#"{{"TmpSecretId":"AKIDx","Token":"{TOKEN}","ExpiredTime":{now},"Code":"Success"}}"#
                ),
            )),
            "CvmRoleError.BadAnswer",
        ),
        (
            "not JSON",
            Box::new(with_creds(200, format!("TmpSecretKey={KEY}"))),
            "CvmRoleError.BadAnswer",
        ),
        (
            "500",
            Box::new(with_creds(500, format!("oops {KEY}"))),
            "CvmRoleError.BadAnswer",
        ),
        (
            "404 on the role",
            Box::new(with_creds(404, String::new())),
            "CvmRoleError.NoRole",
        ),
        (
            "404 on the list",
            Box::new(|_: &str| (404, String::new())),
            "CvmRoleError.NoRole",
        ),
        (
            "empty role list",
            Box::new(|_: &str| (200, "\n  \n".to_owned())),
            "CvmRoleError.NoRole",
        ),
    ];
    for (what, handler, code) in cases {
        let meta = FakeMetadata::start(handler).await;
        let error = meta.role(None).fetch().await.unwrap_err();
        assert_eq!(error.code(), code, "{what}: {error}");
        for text in [error.to_string(), format!("{error:?}")] {
            assert!(!text.contains(KEY), "{what}: {text}");
            assert!(!text.contains(TOKEN), "{what}: {text}");
        }
    }

    // Nothing listens on that port any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let role = CvmRole::new(
        format!("http://127.0.0.1:{port}/latest/meta-data/")
            .parse()
            .unwrap(),
        None,
    )
    .unwrap();
    let error = role.fetch().await.unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.Unreachable", "{error}");
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

#[tokio::test]
async fn refresher_refreshes_before_expiry() {
    // 303 s of validity: refresh_at says 300 s before expiry, so about 3 s later.
    let (handler, issued) = rotating(303);
    let meta = FakeMetadata::start(handler).await;
    let (mut rx, _refresh_now, shutdown, task) = spawn_refresher(meta.role(None));

    let (first_at, first) = next_update(&mut rx, Duration::from_secs(2)).await;
    let (second_at, second) = next_update(&mut rx, Duration::from_secs(5)).await;
    assert_eq!(first.secret_id, "AKIDtmp1");
    assert_eq!(second.secret_id, "AKIDtmp2");
    assert_eq!(second.token.unwrap().expose_secret(), format!("{TOKEN}2"));
    let gap = second_at - first_at;
    assert!(
        gap >= Duration::from_millis(1_500) && gap <= Duration::from_millis(4_500),
        "refreshed after {gap:?}, expected about 3 s (expiry − 300 s)"
    );
    let issued = issued.lock().unwrap().clone();
    let first_expiry = issued.iter().find(|(id, _)| id == "AKIDtmp1").unwrap().1;
    assert!(
        now_unix() < first_expiry,
        "the new set arrived before the old one expired"
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

#[tokio::test]
async fn refresh_now_triggers_an_immediate_refresh() {
    // An hour of validity: without a request the next fetch would be 55 minutes away.
    let (handler, _issued) = rotating(3_600);
    let meta = FakeMetadata::start(handler).await;
    let (mut rx, refresh_now, shutdown, task) = spawn_refresher(meta.role(Some(ROLE)));

    let (_, first) = next_update(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(first.secret_id, "AKIDtmp1");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert!(rx.try_recv().is_err(), "no refresh without a request");

    let asked = Instant::now();
    refresh_now.notify_one();
    let (at, second) = next_update(&mut rx, Duration::from_secs(2)).await;
    assert_eq!(second.secret_id, "AKIDtmp2");
    assert!(
        at - asked < Duration::from_millis(1_000),
        "{:?}",
        at - asked
    );

    // A request right after a fetch waits the minimum gap (1 s), then is served.
    let asked = Instant::now();
    refresh_now.notify_one();
    let (at, third) = next_update(&mut rx, Duration::from_secs(3)).await;
    assert_eq!(third.secret_id, "AKIDtmp3");
    assert!(at - asked >= Duration::from_millis(700), "{:?}", at - asked);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

/// Collects what `tracing` writes, for the current thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

// Current-thread runtime: the refresher task runs on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn failures_are_retried_with_backoff_and_logged_without_secrets() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    // Two bad answers (which contain the secret), then a good one.
    let calls = AtomicUsize::new(0);
    let meta = FakeMetadata::start(move |path: &str| match path {
        CREDS if calls.fetch_add(1, Ordering::SeqCst) < 2 => (
            200,
            answer("AKIDbad", KEY, TOKEN, now_unix() + 900).replace("Success", "Failure"),
        ),
        CREDS => (200, answer("AKIDgood", KEY, TOKEN, now_unix() + 7_200)),
        _ => (404, String::new()),
    })
    .await;
    let started = Instant::now();
    let (mut rx, refresh_now, shutdown, task) = spawn_refresher(meta.role(Some(ROLE)));
    // Requests during the retries do not bypass the backoff.
    refresh_now.notify_one();
    let (at, creds) = next_update(&mut rx, Duration::from_secs(6)).await;
    assert_eq!(creds.secret_id, "AKIDgood");
    // Retried after 1 s, then 2 s.
    let waited = at - started;
    assert!(
        waited >= Duration::from_millis(2_800) && waited < Duration::from_millis(5_000),
        "{waited:?}"
    );
    shutdown.cancel();
    task.await.unwrap();

    let logs = captured.text();
    assert_eq!(
        logs.matches("error_code=\"CvmRoleError.BadAnswer\"")
            .count()
            + logs.matches("error_code=CvmRoleError.BadAnswer").count(),
        2,
        "{logs}"
    );
    assert!(logs.contains("WARN"), "{logs}");
    assert!(logs.contains("cwp_portwatch::cvm_role"), "{logs}");
    // The SecretId is shown masked, as `check` shows it: enough to tell which key, never
    // the whole value.
    assert!(
        logs.contains(&cwp_portwatch::credentials::masked_secret_id("AKIDgood")),
        "the masked SecretId is logged: {logs}"
    );
    assert!(
        !logs.contains("AKIDgood"),
        "the whole SecretId is logged: {logs}"
    );
    assert!(!logs.contains(KEY), "{logs}");
    assert!(!logs.contains(TOKEN), "{logs}");
}

#[tokio::test]
async fn secrets_never_appear_in_debug_text() {
    let (handler, _) = rotating(7_200);
    let meta = FakeMetadata::start(handler).await;
    let role = meta.role(None);
    let got = role.fetch().await.unwrap();
    for text in [
        format!("{got:?}"),
        format!("{got:#?}"),
        format!("{:?}", got.credentials),
        format!("{role:?}"),
    ] {
        assert!(!text.contains(KEY), "{text}");
        assert!(!text.contains(TOKEN), "{text}");
    }
    assert!(format!("{got:?}").contains("AKIDtmp1"));
}

#[tokio::test]
async fn end_to_end_with_the_simulator() {
    const ID: &str = "AKIDroleE2E";
    const SECRET: &str = "roleE2EsecretKey";
    let agent = uuid(1);
    let sim = start(SimulatorOptions::new(scenario(&format!(
        "secret_id = \"{ID}\"\nsecret_key = \"{SECRET}\"\n\n[[agent]]\nuuid = \"{agent}\"\n\
         timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n"
    ))))
    .await;
    let meta = FakeMetadata::start(|path: &str| match path {
        LIST => (200, format!("{ROLE}\n")),
        CREDS => (200, answer(ID, SECRET, TOKEN, now_unix() + 7_200)),
        _ => (404, String::new()),
    })
    .await;

    let client = Client::new(
        ClientOptions {
            endpoint: sim.endpoint().parse().unwrap(),
            region: None,
            timeout: Duration::from_secs(5),
            max_idle_connections: 4,
        },
        Credentials {
            secret_id: "AKIDplaceholder".to_owned(),
            secret_key: SecretString::from("placeholder".to_owned()),
            token: None,
        },
    )
    .unwrap();
    let before = client
        .describe_open_port_task_status(&agent)
        .await
        .unwrap_err();
    assert!(before.code().starts_with("AuthFailure"), "{before}");

    let (tx, mut rx) = mpsc::unbounded_channel();
    let refresh_now = Arc::new(Notify::new());
    let shutdown = CancellationToken::new();
    let updated = client.clone();
    let task = tokio::spawn(run_refresher(
        CvmRole::new(meta.endpoint(), None).unwrap(),
        move |c| {
            updated.set_credentials(c);
            let _ = tx.send(());
        },
        refresh_now,
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("credentials fetched")
        .unwrap();
    assert_eq!(client.secret_id(), ID);

    let status = client.describe_open_port_task_status(&agent).await.unwrap();
    assert_eq!(status.status, "COMPLETE");
    assert!(!status.request_id.is_empty());

    shutdown.cancel();
    task.await.unwrap();
    sim.shutdown().await;
}

/// A metadata service whose every answer is endless (chunked, never finished).
async fn endless_metadata() -> (reqwest::Url, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!(
        "http://{}/latest/meta-data/",
        listener.local_addr().unwrap()
    )
    .parse()
    .unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
                let mut result = stream.write_all(head.as_bytes()).await;
                let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
                while result.is_ok() {
                    result = stream.write_all(chunk.as_bytes()).await;
                }
            });
        }
    });
    (endpoint, task)
}

#[tokio::test]
async fn an_oversized_metadata_answer_is_refused_with_its_own_code() {
    let huge = format!(
        "{}{}",
        answer("AKIDbig", KEY, TOKEN, now_unix() + 7_200),
        " ".repeat(2 << 20)
    );
    let meta = FakeMetadata::start(move |path: &str| match path {
        LIST => (200, format!("{ROLE}\n{}", "x".repeat(2 << 20))),
        CREDS => (200, huge.clone()),
        _ => (404, String::new()),
    })
    .await;
    for role in [None, Some(ROLE)] {
        let error = meta.role(role).fetch().await.unwrap_err();
        assert_eq!(
            error.code(),
            "CvmRoleError.BodyTooLarge",
            "{role:?}: {error}"
        );
        let text = error.to_string();
        assert!(text.contains("65536"), "{text}");
        assert!(!text.contains(KEY) && !text.contains(TOKEN), "{text}");
    }

    let (endpoint, task) = endless_metadata().await;
    let started = Instant::now();
    let error = CvmRole::new(endpoint, Some(ROLE.to_owned()))
        .unwrap()
        .fetch()
        .await
        .unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.BodyTooLarge", "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    task.abort();
}

#[test]
fn absurd_expiry_times_are_refused_or_bounded_never_a_panic() {
    use cwp_portwatch::credentials::cvm_role::{refresh_at, retry_delay};
    for expires_at in [i64::MIN, -1, 0, 1, i64::MAX - 1, i64::MAX] {
        for now in [i64::MIN, -1, 0, now_unix(), i64::MAX] {
            let wait = refresh_at(now, expires_at);
            assert!(wait >= Duration::from_secs(1) && wait <= Duration::from_secs(3_600));
        }
    }
    for failures in [0, 1, 63, 64, 65, u32::MAX] {
        assert!(retry_delay(failures) <= Duration::from_secs(60));
    }
}

// Issue 20 item 7, the metadata service's side of the class: an error status whose body holds
// the credentials shows the status only.
#[tokio::test]
async fn a_failed_metadata_answer_shows_its_status_never_its_body() {
    let meta = FakeMetadata::start(|path: &str| match path {
        CREDS => (500, answer("AKIDx", KEY, TOKEN, now_unix() + 900)),
        _ => (404, String::new()),
    })
    .await;
    let error = meta.role(Some(ROLE)).fetch().await.unwrap_err();
    assert_eq!(error.code(), "CvmRoleError.BadAnswer", "{error}");
    let text = format!("{error} {error:?}");
    assert!(text.contains("500"), "{text}");
    assert!(!text.contains(KEY) && !text.contains(TOKEN), "{text}");
}
