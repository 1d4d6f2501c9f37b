//! Reading `DescribeOpenPorts` answers defensively: every row is checked before it can become
//! a port event. A missing or mistyped field, a `Port` outside 0..=65535, a negative `Pid`, a
//! row for another agent or more rows than asked for make the whole page a decode error
//! (`ClientError.Decode`, naming the field, never quoting the value), which the inventory
//! counts as a failed try and, repeated, reports as `inventory_failed`: never a phantom port.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::response::Answer;
use crate::inventory::{MAX_MACHINE_BYTES, MAX_PROCESS_BYTES, Page, Port};

/// The page of `uuid` asked for with `limit`, from a successful answer.
pub fn parse_page(answer: Answer, uuid: &str, limit: u32) -> Result<Page, ApiError> {
    let decode = |reason: String| ApiError::Decode {
        reason,
        request_id: Some(answer.request_id.clone()),
    };
    let total = match answer.fields.get("TotalCount") {
        Some(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| decode("Response.TotalCount is not a whole number ≥ 0".into()))?,
        Some(_) => return Err(decode("Response.TotalCount is not a number".into())),
        None => return Err(decode("Response.TotalCount is missing".into())),
    };
    let rows = match answer.fields.get("OpenPorts") {
        Some(Value::Array(rows)) => rows.as_slice(),
        // Some APIs send null for an empty list.
        Some(Value::Null) => &[],
        Some(_) => return Err(decode("Response.OpenPorts is not an array".into())),
        None => return Err(decode("Response.OpenPorts is missing".into())),
    };
    if rows.len() > limit as usize {
        return Err(decode(format!(
            "Response.OpenPorts has {} rows, more than the Limit {limit} asked for",
            rows.len()
        )));
    }
    let mut page = Page {
        total,
        rows: Vec::with_capacity(rows.len()),
        ids: Vec::with_capacity(rows.len()),
        machine_ip: String::new(),
        machine_name: String::new(),
        request_id: answer.request_id.clone(),
    };
    for (i, row) in rows.iter().enumerate() {
        let Value::Object(row) = row else {
            return Err(decode(format!("Response.OpenPorts[{i}] is not an object")));
        };
        let field =
            |name: &str, problem: &str| decode(format!("Response.OpenPorts[{i}].{name} {problem}"));
        let port = integer(row, "Port")
            .map_err(|p| field("Port", p))?
            .and_then(|n| u16::try_from(n).ok())
            .ok_or_else(|| field("Port", "is not a port number (0 to 65535)"))?;
        let pid = integer(row, "Pid")
            .map_err(|p| field("Pid", p))?
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| field("Pid", "is not a process id (0 to 4294967295)"))?;
        let process = text(row, "ProcessName", MAX_PROCESS_BYTES, true)
            .map_err(|p| field("ProcessName", &p))?;
        if let Some(row_uuid) = text(row, "Uuid", 64, false).map_err(|p| field("Uuid", &p))?
            && !row_uuid.is_empty()
            && !row_uuid.eq_ignore_ascii_case(uuid)
        {
            return Err(field("Uuid", "is another agent's"));
        }
        for (name, slot) in [
            ("MachineIp", &mut page.machine_ip),
            ("MachineName", &mut page.machine_name),
        ] {
            let value = text(row, name, MAX_MACHINE_BYTES, false).map_err(|p| field(name, &p))?;
            if let Some(value) = value
                && slot.is_empty()
            {
                *slot = value.to_owned();
            }
        }
        // `Id` tells a repeated row from a second row of one port (IPv4 and IPv6, TCP and
        // UDP): optional, since only repeats are looked for with it.
        let id = match row.get("Id") {
            None | Some(Value::Null) => None,
            Some(Value::Number(n)) => Some(
                n.as_i64()
                    .ok_or_else(|| field("Id", "is not a whole number"))?,
            ),
            Some(_) => return Err(field("Id", "is not a number")),
        };
        page.ids.push(id);
        page.rows.push(Port {
            port,
            process: process.unwrap_or_default().into(),
            pid,
            cwp: None,
        });
    }
    Ok(page)
}

/// An integer field: `Ok(None)` when it is a number but not an `i64` (too large).
fn integer(row: &Map<String, Value>, name: &str) -> Result<Option<i64>, &'static str> {
    match row.get(name) {
        Some(Value::Number(n)) => Ok(n.as_i64()),
        Some(_) => Err("is not a number"),
        None => Err("is missing"),
    }
}

/// A string field of at most `max` bytes; `None` when absent and not `required`.
fn text<'a>(
    row: &'a Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<&'a str>, String> {
    match row.get(name) {
        Some(Value::String(s)) if s.len() <= max => Ok(Some(s)),
        Some(Value::String(s)) => Err(format!("is {} bytes long (at most {max})", s.len())),
        Some(Value::Null) | None if !required => Ok(None),
        Some(_) => Err("is not a string".to_owned()),
        None => Err("is missing".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::response::parse;

    const U: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";

    fn page_of(rows: &str, total: &str) -> Result<Page, ApiError> {
        let body = format!(
            r#"{{"Response":{{"TotalCount":{total},"OpenPorts":[{rows}],"RequestId":"r1"}}}}"#
        );
        parse_page(parse(200, body.as_bytes()).unwrap(), U, 100)
    }

    fn row(port: &str, pid: &str) -> String {
        format!(
            r#"{{"Id":1,"Uuid":"{U}","Port":{port},"MachineIp":"10.0.0.1","MachineName":"db-01","ProcessName":"mysqld","Pid":{pid},"CreateTime":"","ModifyTime":""}}"#
        )
    }

    #[test]
    fn a_good_page_is_read() {
        let p = page_of(
            &format!("{},{}", row("3306", "1400"), row("22", "812")),
            "2",
        )
        .unwrap();
        assert_eq!((p.total, p.rows.len()), (2, 2));
        assert_eq!(p.ids, [Some(1), Some(1)]);
        // `Id` is optional: absent or null, none.
        let none = page_of(
            &format!(
                "{},{}",
                row("22", "1").replace(r#""Id":1,"#, ""),
                row("23", "1").replace(r#""Id":1"#, r#""Id":null"#)
            ),
            "2",
        )
        .unwrap();
        assert_eq!(none.ids, [None, None]);
        assert_eq!(
            (p.rows[0].port, &*p.rows[0].process, p.rows[0].pid),
            (3306, "mysqld", 1400)
        );
        assert_eq!(
            (p.machine_ip.as_str(), p.machine_name.as_str()),
            ("10.0.0.1", "db-01")
        );
        assert_eq!(p.request_id, "r1");
    }

    #[test]
    fn hostile_rows_are_decode_errors_naming_the_field() {
        let cases = [
            (row("-1", "1"), "Port"),
            (row("65536", "1"), "Port"),
            (row("\"22\"", "1"), "Port"),
            (row("22", "-5"), "Pid"),
            (
                row("22", "1").replace(r#""Port":22,"#, ""),
                "Port is missing",
            ),
            (row("22", "1").replace(r#","Pid":1"#, ""), "Pid is missing"),
            (
                row("22", "1").replace(r#""ProcessName":"mysqld","#, ""),
                "ProcessName is missing",
            ),
            (
                row("22", "1").replace("mysqld", &"x".repeat(MAX_PROCESS_BYTES + 1)),
                "ProcessName is",
            ),
            (
                row("22", "1").replace(U, "11111111-2222-3333-4444-555555555555"),
                "another agent",
            ),
            ("7".to_owned(), "not an object"),
            (
                row("22", "1").replace(r#""Id":1"#, r#""Id":"1""#),
                "Id is not",
            ),
            (
                row("22", "1").replace(r#""Id":1"#, r#""Id":1.5"#),
                "Id is not",
            ),
        ];
        for (rows, want) in cases {
            let e = page_of(&rows, "1").unwrap_err();
            assert_eq!(e.code(), "ClientError.Decode");
            assert_eq!(e.request_id(), Some("r1"));
            assert!(e.to_string().contains(want), "{want}: {e}");
        }
        for total in ["-1", "1.5", "\"3\"", "null"] {
            let e = page_of(&row("22", "1"), total).unwrap_err();
            assert!(e.to_string().contains("TotalCount"), "{total}: {e}");
        }
        let body = br#"{"Response":{"TotalCount":1,"RequestId":"r"}}"#;
        let e = parse_page(parse(200, body).unwrap(), U, 100).unwrap_err();
        assert!(e.to_string().contains("OpenPorts is missing"), "{e}");
        let rows = vec![row("1", "1"); 3].join(",");
        let e = parse_page(
            parse(
                200,
                format!(
                    r#"{{"Response":{{"TotalCount":3,"OpenPorts":[{rows}],"RequestId":"r"}}}}"#
                )
                .as_bytes(),
            )
            .unwrap(),
            U,
            2,
        )
        .unwrap_err();
        assert!(e.to_string().contains("more than the Limit"), "{e}");
    }
}
