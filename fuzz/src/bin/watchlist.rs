//! The watchlist file, read by `Watchlist::load`.
use afl::fuzz;
use cwp_portwatch::watchlist::Watchlist;
use cwp_portwatch_fuzz::file_with;

fn main() {
    fuzz!(|data: &[u8]| {
        let path = file_with("watchlist.toml", data);
        if let Err(errors) = Watchlist::load(&path) {
            let _ = errors.to_string();
        }
    });
}
