//! `process_cpu_seconds_total`, `process_resident_memory_bytes` and
//! `process_start_time_seconds`, read from `/proc/self` at scrape time, as Prometheus's own
//! client libraries define them (unprefixed, so stock dashboards and alerts work).
//!
//! Read by hand: two small files, and no maintained crate does it without pulling in far more
//! than it reads. `/proc/stat` (boot time, for the start time) is hidden by the unit's
//! `ProcSubset=pid`; then the start time is when the registry was built, at start-up. Reads are bounded; a file that cannot be read or parsed leaves its series
//! out of that scrape (logged at debug) rather than failing the scrape.

use std::io::Read;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The most read of a `/proc` file: `stat` and `statm` are one short line each (the command
/// name in `stat` is at most 16 bytes).
const MAX_PROC_BYTES: u64 = 4096;

/// The process metrics collector.
#[derive(Debug)]
pub(super) struct ProcessCollector {
    /// Clock ticks per second (`sysconf(_SC_CLK_TCK)`), for `stat`'s times.
    ticks: f64,
    /// Page size in bytes, for `statm`.
    page: f64,
    /// Boot time, Unix seconds (`/proc/stat` `btime`), for the start time.
    boot_time: Option<f64>,
    /// When this collector was built, Unix seconds: the start time when `/proc/stat` cannot
    /// be read (the unit's `ProcSubset=pid` hides it), milliseconds after the real start.
    built_at: f64,
}

impl ProcessCollector {
    pub(super) fn new() -> Self {
        // SAFETY: sysconf only reads configuration values.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let boot_time = read_bounded("/proc/stat", 64 * 1024).and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        });
        ProcessCollector {
            ticks: if ticks > 0 { ticks as f64 } else { 100.0 },
            page: if page > 0 { page as f64 } else { 4096.0 },
            boot_time,
            built_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

/// A `/proc` file's text, at most `limit` bytes.
fn read_bounded(path: &str, limit: u64) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let mut text = String::new();
    match file.take(limit).read_to_string(&mut text) {
        Ok(_) => Some(text),
        Err(e) => {
            tracing::debug!("cannot read {path}: {e}");
            None
        }
    }
}

/// From `/proc/self/stat`: (utime + stime in ticks, starttime in ticks since boot). The
/// command name, field 2, may hold spaces and parentheses: fields are counted after its
/// last `)`.
fn parse_stat(text: &str) -> Option<(u64, u64)> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime 15, starttime 22.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some((field(14)?.checked_add(field(15)?)?, field(22)?))
}

/// From `/proc/self/statm`: resident pages (field 2).
fn parse_statm(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some((cpu, start)) =
            read_bounded("/proc/self/stat", MAX_PROC_BYTES).and_then(|t| parse_stat(&t))
        {
            let counter = ConstCounter::new(cpu as f64 / self.ticks);
            let m = encoder.encode_descriptor(
                "process_cpu",
                "Total user and system CPU time spent",
                Some(&Unit::Seconds),
                counter.metric_type(),
            )?;
            counter.encode(m)?;
            let started = self
                .boot_time
                .map_or(self.built_at, |boot| boot + start as f64 / self.ticks);
            let m = encoder.encode_descriptor(
                "process_start_time",
                "Start time of the process since the Unix epoch",
                Some(&Unit::Seconds),
                MetricType::Gauge,
            )?;
            ConstGauge::new(started).encode(m)?;
        }
        if let Some(pages) =
            read_bounded("/proc/self/statm", MAX_PROC_BYTES).and_then(|t| parse_statm(&t))
        {
            let gauge = ConstGauge::new(pages as f64 * self.page);
            let m = encoder.encode_descriptor(
                "process_resident_memory",
                "Resident memory size",
                Some(&Unit::Bytes),
                MetricType::Gauge,
            )?;
            gauge.encode(m)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        // A command name with a space and a `)`, as a hostile process name could be.
        let line = "4242 (cwp) port) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 \
                    123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some((300, 123456)));
        assert_eq!(parse_stat("4242 (cwp) S 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(parse_statm("1000 250 100 10 0 200 0\n"), Some(250));
        assert_eq!(parse_statm(""), None);
    }

    #[test]
    fn this_process_reads() {
        let stat = read_bounded("/proc/self/stat", MAX_PROC_BYTES).unwrap();
        let (_, start) = parse_stat(&stat).expect("our own stat parses");
        assert!(start > 0);
        let statm = read_bounded("/proc/self/statm", MAX_PROC_BYTES).unwrap();
        assert!(parse_statm(&statm).unwrap() > 0);
    }
}
