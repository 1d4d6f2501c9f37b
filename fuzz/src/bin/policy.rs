//! The expected-ports policy file, read by `Policy::load` for yunjing's capabilities.
use afl::fuzz;
use cwp_portwatch::policy::{Capabilities, Policy};
use cwp_portwatch_fuzz::file_with;

fn main() {
    fuzz!(|data: &[u8]| {
        let path = file_with("policy.toml", data);
        if let Err(errors) = Policy::load(&path, Capabilities::YUNJING) {
            let _ = errors.to_string();
        }
    });
}
