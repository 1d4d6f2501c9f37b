//! Peak memory and time of loading a large watchlist or simulator scenario.
//!
//! ```sh
//! cargo run --release --example load_100k -- watchlist [AGENTS]
//! cargo run --release --example load_100k -- scenario [AGENTS]
//! ```
//!
//! Writes the file (streamed, so writing adds nothing to the peak) to a temporary folder, then
//! loads it with the real loader and prints the time and `VmHWM` / `VmRSS` from
//! `/proc/self/status`. Run one kind per process: `VmHWM` is the process's peak.

use std::io::{BufWriter, Write};
use std::time::Instant;

use cwp_portwatch::watchlist::Watchlist;
use cwp_simulator::Scenario;

fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .map(|l| l[field.len()..].trim().to_owned())
        .unwrap_or_else(|| "?".to_owned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kind = args.next().unwrap_or_else(|| "watchlist".to_owned());
    let agents: usize = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let dir = std::env::temp_dir().join(format!("portwatch-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{kind}.toml"));
    {
        let mut out = BufWriter::new(std::fs::File::create(&path)?);
        for i in 0..agents {
            let u = format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                i,
                i % 0xffff,
                i % 0xfff,
                (i * 7) % 0xfff,
                i
            );
            match kind.as_str() {
                "watchlist" => write!(
                    out,
                    "[[agent]]\nuuid = \"{u}\"\nname = \"bench-{i:06}\"\n\n"
                )?,
                "scenario" => write!(
                    out,
                    "[[agent]]\nuuid = \"{u}\"\ntimeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n\n"
                )?,
                other => {
                    return Err(format!("unknown kind {other:?}: watchlist or scenario").into());
                }
            }
        }
        out.flush()?;
    }
    let bytes = std::fs::metadata(&path)?.len();
    let before = status("VmHWM:");
    let started = Instant::now();
    let loaded = match kind.as_str() {
        "watchlist" => Watchlist::load(&path)
            .map_err(|e| e.to_string())?
            .agents
            .len(),
        _ => Scenario::load(&path)?.agents.len(),
    };
    let elapsed = started.elapsed();
    println!(
        "{kind}: {loaded} agents, {:.1} MB file, loaded in {elapsed:.2?}; VmHWM before {before}, \
         after {}; VmRSS {}",
        bytes as f64 / 1e6,
        status("VmHWM:"),
        status("VmRSS:")
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
