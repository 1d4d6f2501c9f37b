//! `rate` and `cpu` (one run serves both): 2,000 agents, no latency, 30 s; the sustained
//! request rate, the densest 1-second window, throttling, and the daemon's CPU per 1,000 polls.

use std::path::Path;
use std::time::Duration;

use super::*;

/// Issue 3 targets.
pub(crate) const TARGET_RATE: f64 = 19.8;
pub(crate) const TARGET_MAX_WINDOW: usize = 20;

pub(crate) fn rate_and_cpu(
    runtime: &tokio::runtime::Runtime,
    bin: &Path,
    opts: &Options,
    summary: &mut Vec<String>,
) -> Result<()> {
    let secs = |default: u64| Duration::from_secs(opts.seconds.unwrap_or(default));
    let r = scenario(
        runtime,
        bin,
        &Setup {
            name: "rate",
            agents: 2_000,
            latency: Duration::ZERO,
            duration: secs(30),
            changes: Vec::new(),
        },
        &[Phase::DAEMON],
    )?
    .remove(0);
    r.print();
    if opts.rate {
        let rate = r.rate().unwrap_or(0.0);
        let window = r.max_window();
        summary.push(row(
            "sustained req/s, 2,000 agents, 0 latency",
            format!("{rate:.2}"),
            format!(">= {TARGET_RATE}"),
            rate >= TARGET_RATE,
        ));
        summary.push(row(
            "max requests in any sliding 1 s window",
            window.to_string(),
            format!("<= {TARGET_MAX_WINDOW}"),
            window <= TARGET_MAX_WINDOW,
        ));
        summary.push(row(
            "throttled (RequestLimitExceeded)",
            r.sim.throttled.to_string(),
            "0".into(),
            r.sim.throttled == 0,
        ));
    }
    if opts.cpu {
        let total = r.cpu_per_1000(false);
        let steady = r.cpu_per_1000(true);
        summary.push(row(
            "daemon CPU per 1,000 polls (whole run)",
            total.map_or("n/a".into(), |s| format!("{:.0} ms", s * 1000.0)),
            "-".into(),
            true,
        ));
        summary.push(row(
            "daemon CPU per 1,000 polls (after warm-up)",
            steady.map_or("n/a".into(), |s| format!("{:.0} ms", s * 1000.0)),
            "-".into(),
            true,
        ));
    }
    Ok(())
}
