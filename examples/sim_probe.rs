//! Runs the simulator exactly as `cwp-portwatch simulate` does (same arguments, same output),
//! for trying it out without the main binary: `cargo run --example sim_probe -- --listen
//! 127.0.0.1:0`. Stops on Ctrl-C or SIGTERM.

use clap::Parser;
use cwp_portwatch::simulator::cli::{SimulateArgs, run};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "The cwp-portwatch CWP API simulator")]
struct Probe {
    #[command(flatten)]
    args: SimulateArgs,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let probe = Probe::parse();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        stop.cancel();
    });
    match run(probe.args, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error [{}]: {e}", e.code());
            std::process::ExitCode::FAILURE
        }
    }
}
