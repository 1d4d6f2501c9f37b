//! The config file, read by `Settings::load` as `run` and `check` read it.
use afl::fuzz;
use cwp_portwatch::config::Settings;
use cwp_portwatch_fuzz::file_with;

fn main() {
    fuzz!(|data: &[u8]| {
        let path = file_with("config.toml", data);
        if let Err(errors) = Settings::load(&path) {
            // The report is what a user sees: rendering it is part of the decode path.
            let _ = errors.to_string();
        }
    });
}
