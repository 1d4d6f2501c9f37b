//! `cwp-portwatch simulate`: command-line options (the serving itself is `commands::simulate`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::{Faults, LimiterKind, Scenario, SimulatorError, SimulatorOptions};

/// The scenario served when `--scenario` is not given: the commented example shipped in
/// `config/`, so the built-in behaviour is documented in one place.
pub const BUILTIN_SCENARIO: &str = include_str!("../../../config/scenario-example.toml");

/// Options of `cwp-portwatch simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address to listen on; port 0 picks a free port (the first line printed names it).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8020")]
    pub listen: SocketAddr,
    /// Scenario file (TOML); without it, the built-in example scenario.
    #[arg(long, value_name = "FILE")]
    pub scenario: Option<PathBuf>,
    /// Delay added to every answer, e.g. "150ms".
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "0s")]
    pub latency: Duration,
    /// Seconds added to the simulator's clock (negative: behind), to exercise clock-skew
    /// handling.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub clock_offset: i64,
    /// Use a token bucket instead of the strict sliding 1-second window.
    #[arg(long)]
    pub token_bucket: bool,
    /// Requests per second per action.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub rate: u32,
    /// Token-bucket size (default: the rate).
    #[arg(long, value_name = "N", requires = "token_bucket")]
    pub burst: Option<u32>,
    /// Probability (0..1) of answering the API error `InternalError`.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    pub fault_internal_error: f64,
    /// Probability of an HTTP 503 with a gateway's HTML body.
    #[arg(long = "fault-503", value_name = "P", value_parser = parse_probability, default_value = "0")]
    pub fault_503: f64,
    /// Probability of closing the connection without an answer.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    pub fault_reset: f64,
    /// Probability of a truncated JSON body.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    pub fault_truncated: f64,
    /// Probability of stalling `--stall-for` before answering.
    #[arg(long, value_name = "P", value_parser = parse_probability, default_value = "0")]
    pub fault_stall: f64,
    /// How long a stall lasts.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "30s")]
    pub stall_for: Duration,
    /// Seed for the fault draws, for reproducible runs.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}: write a duration such as \"250ms\", \"5s\" or \"2m\""))
}

fn parse_probability(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(p) if (0.0..=1.0).contains(&p) => Ok(p),
        _ => Err("write a probability between 0 and 1, e.g. 0.05".to_owned()),
    }
}

impl SimulateArgs {
    /// The validated options these arguments describe (reads the scenario file).
    pub fn options(&self) -> Result<SimulatorOptions, SimulatorError> {
        if self.rate == 0 {
            return Err(SimulatorError::InvalidOption(
                "--rate must be at least 1".to_owned(),
            ));
        }
        if self.burst == Some(0) {
            return Err(SimulatorError::InvalidOption(
                "--burst must be at least 1".to_owned(),
            ));
        }
        let scenario = match &self.scenario {
            Some(path) => Scenario::load(path)?,
            None => Scenario::from_toml_str(BUILTIN_SCENARIO)?,
        };
        let limiter = if self.token_bucket {
            LimiterKind::TokenBucket {
                per_second: self.rate,
                burst: self.burst.unwrap_or(self.rate),
            }
        } else {
            LimiterKind::SlidingWindow {
                per_second: self.rate,
            }
        };
        Ok(SimulatorOptions {
            scenario,
            limiter,
            latency: self.latency,
            action_latency: Default::default(),
            clock_offset_secs: self.clock_offset,
            faults: Faults {
                internal_error: self.fault_internal_error,
                http_503: self.fault_503,
                reset: self.fault_reset,
                truncated_json: self.fault_truncated,
                stall: self.fault_stall,
                stall_for: self.stall_for,
            },
            seed: self.seed,
        })
    }
}
