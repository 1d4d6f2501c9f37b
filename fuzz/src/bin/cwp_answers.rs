//! The `cwp` API's answers (`DescribeMachines`, `DescribeAssetPortInfoList`): the bytes are an
//! answer's body, decoded as the daemon does after `Client::call` read it, with every field
//! check of `api::cwp` (port and pid strings, bind address, protocol, Quuid, first sighting,
//! repeated rows, rows past the total). The port listing is asked for the first row's Quuid,
//! so the rows get past the "another machine's" check.
use afl::fuzz;
use cwp_portwatch::api::cwp::{MachineType, MachinesQuery, PortsQuery, Quuid, machines, ports};
use cwp_portwatch::api::response;
use serde_json::Value;

fn main() {
    fuzz!(|data: &[u8]| {
        let Ok(answer) = response::parse(200, data) else {
            return;
        };
        for offset in [0, 100] {
            if let Ok(query) = MachinesQuery::new(MachineType::Cvm, "ap-guangzhou", offset, 100) {
                let _ = machines::parse_page(&answer, &query);
            }
        }
        let quuid = answer
            .fields
            .get("Ports")
            .and_then(|rows| rows.get(0))
            .and_then(|row| row.get("Quuid"))
            .and_then(Value::as_str)
            .and_then(|q| Quuid::parse(q).ok())
            .or_else(|| Quuid::parse("q-1").ok());
        if let Some(quuid) = quuid {
            for (offset, limit) in [(0, 100), (100, 100), (0, 1)] {
                if let Ok(query) = PortsQuery::new(quuid.clone(), offset, limit) {
                    let _ = ports::parse_page(&answer, &query);
                }
            }
        }
    });
}
