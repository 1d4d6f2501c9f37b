//! The simulator's scenario file, read by `Scenario::load`.
use afl::fuzz;
use cwp_portwatch_fuzz::file_with;
use cwp_simulator::Scenario;

fn main() {
    fuzz!(|data: &[u8]| {
        let path = file_with("scenario.toml", data);
        if let Err(error) = Scenario::load(&path) {
            let _ = error.to_string();
        }
    });
}
