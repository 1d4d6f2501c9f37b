//! `ratio` (issue 13): the daemon, a floor client (this executable, re-run) and the official
//! Python SDK, side by side at the same pacing: CPU per poll, and the daemon's ratio to the
//! floor.

use super::*;

/// The argument that makes this executable the floor client.
pub(crate) const FLOOR_ARG: &str = "__floor-client";
/// Issue 13 targets.
pub(crate) const TARGET_RATIO: f64 = 1.2;
/// `ratio`: rounds of (daemon, floor, Python); each figure is the median over the rounds.
pub(crate) const ROUNDS: usize = 3;
/// Both clients pace like the daemon: one request per 1/20 s + 0.75 % (src/pacing.rs).
pub(crate) const PERIOD: Duration = Duration::from_nanos(50_375_000);

/// The floor of our HTTP stack at this pacing: per request, the JSON body, the TC3 signature,
/// one reqwest POST on a current-thread runtime, and the answer parsed; nothing else (no
/// limiter, no queue, no log, no state). Uuids are formatted once, before the loop. Runs until
/// killed. Arguments: `ADDR AGENTS`.
pub(crate) fn floor_client(mut args: impl Iterator<Item = String>) -> Result<()> {
    let addr: SocketAddr = args.next().ok_or("no address")?.parse()?;
    let agents: usize = args.next().ok_or("no agent count")?.parse()?;
    let uuids: Vec<String> = (0..agents.max(1)).map(uuid).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(32)
            .build()?;
        let host = addr.to_string();
        let url = reqwest::Url::parse(&format!("http://{addr}/"))?;
        let mut next = tokio::time::Instant::now();
        let mut failures = 0u64;
        for i in 0.. {
            tokio::time::sleep_until(next).await;
            // Like the daemon's pacer: more than 3 ms late starts a new schedule.
            let now = tokio::time::Instant::now();
            if now.duration_since(next) > Duration::from_millis(3) {
                next = now;
            }
            next += PERIOD;
            let body = serde_json::to_vec(&serde_json::json!({ "Uuid": uuids[i % uuids.len()] }))?;
            let timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_secs() as i64;
            let signed = cwp_portwatch::signing::sign(
                SECRET_ID,
                SECRET_KEY,
                &cwp_portwatch::signing::RequestParts {
                    method: "POST",
                    host: &host,
                    content_type: "application/json",
                    payload: &body,
                    service: "yunjing",
                    timestamp,
                },
            );
            let sent = http
                .post(url.clone())
                .header("Host", &host)
                .header("Content-Type", "application/json")
                .header("X-TC-Action", "DescribeOpenPortTaskStatus")
                .header("X-TC-Version", "2018-02-28")
                .header("X-TC-Timestamp", timestamp.to_string())
                .header("Authorization", signed.authorization)
                .body(body)
                .send()
                .await;
            let answer = match sent {
                Ok(r) => r.bytes().await,
                Err(e) => Err(e),
            };
            let status = answer.map_err(BoxError::from).and_then(|a| {
                let v: serde_json::Value = serde_json::from_slice(&a)?;
                match v["Response"]["Status"].as_str() {
                    Some(_) => Ok(()),
                    None => Err(format!("no Status in {v}").into()),
                }
            });
            if let Err(e) = status {
                failures += 1;
                if failures <= 3 {
                    eprintln!("floor client: {e}");
                }
            }
        }
        Ok::<(), BoxError>(())
    })
}

/// The official SDK (`tencentcloud-sdk-python-yunjing`) in the loop a Python user would
/// write, paced like the daemon. Arguments: `HOST:PORT AGENTS`.
pub(crate) const PYTHON_LOOP: &str = r#"
import sys, time
from tencentcloud.common import credential
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.yunjing.v20180228 import models, yunjing_client

endpoint, agents = sys.argv[1], int(sys.argv[2])
http = HttpProfile(endpoint=endpoint, protocol="http", reqTimeout=10)
http.scheme = "http"
c = yunjing_client.YunjingClient(
    credential.Credential("AKIDcwpportwatchSIMULATOR000000000000", "cwpportwatchSimulatorSecretKey00"),
    "", ClientProfile(httpProfile=http))
uuids = ["%08x-%04x-4%03x-8%03x-%012x" % (i, i % 0xffff, i % 0xfff, (i * 7) % 0xfff, i)
         for i in range(agents)]
period = 0.050375
next_t = time.monotonic()
i = 0
failures = 0
while True:
    wait = next_t - time.monotonic()
    if wait > 0:
        time.sleep(wait)
    # Like the daemon's pacer: more than 3 ms late starts a new schedule (no catch-up burst).
    now = time.monotonic()
    if now - next_t > 0.003:
        next_t = now
    next_t += period
    req = models.DescribeOpenPortTaskStatusRequest()
    req.Uuid = uuids[i % agents]
    i += 1
    try:
        c.DescribeOpenPortTaskStatus(req)
    except TencentCloudSDKException as e:
        failures += 1
        if failures <= 3:
            print(e, file=sys.stderr, flush=True)
"#;

/// The venv `tests/sdk_crosscheck.sh` makes, when it exists.
pub(crate) fn python_venv() -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let python = target.join("sdk-crosscheck-venv/bin/python");
    let ok = Command::new(&python)
        .args(["-c", "import tencentcloud.yunjing"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then_some(python)
}

pub(crate) fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| v[v.len() / 2])
}

/// Issue 13: CPU per poll of the daemon, the floor client and the Python SDK loop, in
/// [`ROUNDS`] rounds of one run each against one simulator (same pacing, same proxy, same
/// agents); medians over the rounds, and the daemon/floor ratio of each round.
pub(crate) fn ratio(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    opts: &Options,
    summary: &mut Vec<String>,
) -> Result<()> {
    let python = python_venv();
    if python.is_none() {
        println!(
            "ratio: no SDK venv (run tests/sdk_crosscheck.sh once to create it); \
             the Python SDK loop is left out"
        );
    }
    // The daemon in a steady state: a state file that knows every agent, as after its first
    // pass, so no answer is a change (no event, no state write); then its first pass (every
    // answer a `status_changed` event and a state save per second), for comparison.
    let mut round = vec![
        Phase::SEEDED,
        Phase {
            runner: Runner::Floor,
            seeded: false,
        },
    ];
    if !opts.pair {
        round.push(Phase::DAEMON);
    }
    if std::env::var_os("PORTWATCH_BENCH_BEFORE").is_some() {
        round.push(Phase {
            runner: Runner::DaemonBefore,
            seeded: true,
        });
    }
    if python.is_some() && !opts.pair {
        round.push(Phase {
            runner: Runner::Python,
            seeded: false,
        });
    }
    let rounds = opts.rounds.unwrap_or(ROUNDS).max(1);
    let phases: Vec<Phase> = round
        .iter()
        .copied()
        .cycle()
        .take(round.len() * rounds)
        .collect();
    let agents = opts.agents.unwrap_or(2_000);
    let runs = scenario(
        rt,
        bin,
        &Setup {
            name: "ratio",
            agents,
            latency: Duration::ZERO,
            duration: Duration::from_secs(opts.seconds.unwrap_or(20)),
            changes: Vec::new(),
        },
        &phases,
    )?;
    let per_poll_us = |o: &Outcome| o.cpu_per_1000(true).map_or(f64::NAN, |s| s * 1000.0);
    println!("\n== ratio: {agents} agents, {rounds} rounds, CPU per poll after warm-up ==");
    let mut by: std::collections::HashMap<&str, Vec<f64>> = Default::default();
    let mut ratios = Vec::new();
    let label = |o: &Outcome| match (o.runner, o.seeded) {
        (Runner::Daemon, false) => "daemon, first pass",
        (Runner::Daemon, true) => "daemon",
        (r, _) => r.name(),
    };
    for (i, chunk) in runs.chunks(round.len()).enumerate() {
        let mut line = format!("round {}:", i + 1);
        for o in chunk {
            let us = per_poll_us(o);
            let _ = write!(
                line,
                " {} {us:.0} µs ({:.2} req/s, {} polls);",
                label(o),
                rate_of(o.steady_times()).unwrap_or(0.0),
                o.times.len()
            );
            by.entry(label(o)).or_default().push(us);
        }
        let r = per_poll_us(&chunk[0]) / per_poll_us(&chunk[1]);
        let _ = write!(line, " daemon/floor {r:.2}");
        ratios.push(r);
        println!("{line}");
    }
    println!("simulator: {}", runs[0].sim.line);
    for name in [
        "daemon",
        "floor client",
        "daemon, first pass",
        "daemon (before)",
        "Python SDK loop",
    ] {
        if let Some(m) = by.get(name).cloned().and_then(median) {
            summary.push(row(
                &format!("CPU per poll, {name}, {agents} agents (median of {rounds})"),
                format!("{m:.0} µs"),
                "-".into(),
                true,
            ));
        }
    }
    let r = median(ratios).unwrap_or(f64::NAN);
    summary.push(row(
        &format!("daemon / floor CPU per poll, {agents} agents (median of {rounds} rounds)"),
        format!("{r:.2}"),
        format!("<= {TARGET_RATIO}"),
        r <= TARGET_RATIO,
    ));
    Ok(())
}
