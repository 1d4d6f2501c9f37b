//! The files the daemon persists and reads back at start: the state (`state.json`), the
//! inventory and the discovery memory (`discovery.json`), each read by its own loader from
//! a real file (size checks and streaming included).
use afl::fuzz;
use cwp_portwatch::config::DEFAULT_ACCOUNT;
use cwp_portwatch::discovery::remembered::DiscoveryFile;
use cwp_portwatch::inventory::store::InventoryFile;
use cwp_portwatch::state::StateFile;
use cwp_portwatch_fuzz::scratch;

fn main() {
    let dir = scratch();
    let state = StateFile::in_dir(dir);
    let inventory = InventoryFile::in_dir(dir);
    let discovery = DiscoveryFile::for_account(dir, DEFAULT_ACCOUNT);
    fuzz!(|data: &[u8]| {
        for path in [state.path(), inventory.path(), discovery.path()] {
            std::fs::write(path, data).expect("the scratch file can be written");
        }
        let _ = state.load();
        let _ = inventory.load();
        let _ = discovery.load();
    });
}
