//! The CWP API answers of every action, and STS `AssumeRole`'s (the same envelope, parsed by the
//! same `response::parse`): the bytes are an answer's body, decoded as the daemon does after
//! `Client::call` read it.
use afl::fuzz;
use cwp_portwatch::api::{TaskStatus, machines, ports, response};
use cwp_portwatch::credentials::assume_role;
use cwp_portwatch::status::PollOutcome;
use serde_json::Value;

fn main() {
    fuzz!(|data: &[u8]| {
        // An error answer is read for its code and RequestId whatever the HTTP status.
        for status in [400, 500, 503] {
            let _ = response::parse(status, data).map_err(response::without_body);
        }
        let parsed = response::parse(200, data);
        // DescribeOpenPortTaskStatus: the Status field, then the spec's Statuses table.
        let task = parsed.as_ref().map_err(Clone::clone).and_then(|answer| {
            Ok(TaskStatus {
                status: answer.status_field("Status")?.to_owned(),
                request_id: answer.request_id.clone(),
            })
        });
        let _ = PollOutcome::from_result(task);
        let Ok(answer) = parsed else { return };
        // CreateOpenPortTask: the answer's RequestId is all that is read (`parse` checked it).
        // DescribeMachines.
        let _ = machines::parse_page(&answer, machines::MAX_PAGE);
        // STS AssumeRole.
        let _ = assume_role::parse_answer(&answer.fields);
        // DescribeOpenPorts: the rows must be the agent asked for; ask for the first row's.
        let uuid = answer
            .fields
            .get("OpenPorts")
            .and_then(|rows| rows.get(0))
            .and_then(|row| row.get("Uuid"))
            .and_then(Value::as_str)
            .unwrap_or("00000000-0000-0000-0000-000000000000")
            .to_owned();
        let _ = ports::parse_page(answer, &uuid, 100);
    });
}
