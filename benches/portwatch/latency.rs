//! `latency`: 2,000 agents with 1 s added to every answer, 30 s; the sustained request rate
//! with requests in flight.

use std::path::Path;
use std::time::Duration;

use super::*;

/// Issue 3 target.
pub(crate) const TARGET_RATE_LATENCY: f64 = 19.5;

pub(crate) fn latency(
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
            name: "latency",
            agents: 2_000,
            latency: Duration::from_secs(1),
            duration: secs(30),
            changes: Vec::new(),
        },
        &[Phase::DAEMON],
    )?
    .remove(0);
    r.print();
    let rate = r.rate().unwrap_or(0.0);
    summary.push(row(
        "sustained req/s, 1 s latency, max_in_flight 32",
        format!("{rate:.2}"),
        format!(">= {TARGET_RATE_LATENCY}"),
        rate >= TARGET_RATE_LATENCY,
    ));
    Ok(())
}
