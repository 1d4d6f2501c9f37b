//! Tests of the `cwp` client side: request shapes, checked answers (hand-written hostile
//! cases and property tests: any input gives a page or a typed refusal, never a panic), and
//! a request signed for `cwp` as a real HTTP server receives it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use secrecy::SecretString;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;
use crate::api::response::parse;

const Q: &str = "24c9be55-c743-4a75-a5c7-2a2912341234";

fn quuid() -> Quuid {
    Quuid::parse(Q).unwrap()
}

fn query(offset: u64, limit: u64) -> PortsQuery {
    PortsQuery::new(quuid(), offset, limit).unwrap()
}

/// A row as the SDK's example answer has it (all fields), with `Port`, `BindIp`, `Proto`,
/// `ProcessName`, `Pid` chosen.
fn row(port: &str, bind: &str, proto: &str, process: &str, pid: &str) -> Value {
    json!({
        "MachineIp": "10.0.0.11", "MachineWanIp": "110.84.0.11", "Quuid": Q, "Uuid": Q,
        "OsInfo": "CentOs Bit64", "ProjectId": 1,
        "Tag": [{"Rid": 0, "Name": "test-name", "TagId": 1}],
        "ProcessName": process, "ProcessVersion": "0.1.1", "ProcessPath": "/usr/sbin/sshd",
        "Pid": pid, "User": "root", "StartTime": "2024-10-11 12:23:34", "Param": "null",
        "Teletype": "1", "Port": port, "GroupName": "root", "Md5": "708cae4cf814c3deda4208da228fad4e",
        "Ppid": "1", "ParentProcessName": "systemd", "Proto": proto, "BindIp": bind,
        "MachineName": "db-01", "UpdateTime": "2024-10-11 12:23:34",
        "FirstTime": "2024-10-11 12:23:34", "IsNew": 0,
        "MachineExtraInfo": {"WanIP": "110.84.0.11", "PrivateIP": "10.0.0.11",
            "NetworkType": 0, "NetworkName": "vpc-12341234", "InstanceID": "ins-aj28fjz",
            "HostName": "db-01"}
    })
}

fn sshd() -> Value {
    row("22", "0.0.0.0", "tcp", "sshd", "812")
}

fn fields(total: Value, ports: Vec<Value>) -> Map<String, Value> {
    let Value::Object(map) = json!({"Total": total, "Ports": ports, "RequestId": "r1"}) else {
        unreachable!()
    };
    map
}

fn read(total: u64, ports: Vec<Value>) -> Result<Vec<AssetPort>, BadAnswer> {
    ports::read_page(&fields(json!(total), ports), &query(0, 100)).map(|(_, rows, ..)| rows)
}

fn with(mut row: Value, name: &str, value: Value) -> Value {
    row[name] = value;
    row
}

fn without(mut row: Value, name: &str) -> Value {
    row.as_object_mut().unwrap().remove(name);
    row
}

/// The problem of the one field `field` of row 0.
fn problem_of(result: Result<Vec<AssetPort>, BadAnswer>, field: &str) -> Problem {
    match result {
        Err(BadAnswer::Field { field: f, problem }) if f == format!("Ports[0].{field}") => problem,
        other => panic!("{field}: {other:?}"),
    }
}

// ---- requests ----

#[test]
fn port_requests_have_the_api_shape_and_a_bounded_limit() {
    assert_eq!(
        query(200, 100).params(),
        json!({"Quuid": Q, "Limit": 100, "Offset": 200})
    );
    for limit in [0, 101, u64::MAX] {
        assert_eq!(
            PortsQuery::new(quuid(), 0, limit),
            Err(RequestError::Limit { limit })
        );
    }
}

#[test]
fn machine_requests_have_the_api_shape() {
    let q = MachinesQuery::new(MachineType::Cvm, "ap-guangzhou", 0, 100)
        .unwrap()
        .filter(Filter::new(FilterName::AgentStatus, vec!["ONLINE".into()], None).unwrap())
        .filter(Filter::new(FilterName::Quuid, vec![Q.into(), "q-2".into()], Some(true)).unwrap());
    assert_eq!(
        q.at(300).params(),
        json!({"MachineType": "CVM", "MachineRegion": "ap-guangzhou", "Limit": 100,
               "Offset": 300, "Filters": [
                   {"Name": "AgentStatus", "Values": ["ONLINE"]},
                   {"Name": "Quuid", "Values": [Q, "q-2"], "ExactMatch": true}]})
    );
    let plain = MachinesQuery::new(MachineType::Other, OTHERS_REGION_FOR_TEST, 0, 10).unwrap();
    assert_eq!(plain.params()["MachineType"], "Other");
    assert!(plain.params().get("Filters").is_none());
    assert_eq!(
        MachinesQuery::new(MachineType::Bm, "ap-guangzhou", 0, 101),
        Err(RequestError::Limit { limit: 101 })
    );
    for region in ["", "AP-GUANGZHOU", "ap guangzhou", "ap-guangzhou\n"] {
        assert_eq!(
            MachinesQuery::new(MachineType::Cvm, region, 0, 10),
            Err(RequestError::Region),
            "{region:?}"
        );
    }
    // One value per filter, except Quuid (up to 100); no empty or unprintable value.
    assert!(Filter::new(FilterName::Ips, vec!["a".into(), "b".into()], None).is_err());
    assert!(Filter::new(FilterName::Ips, vec![], None).is_err());
    assert!(Filter::new(FilterName::Quuid, vec!["q".into(); 100], None).is_ok());
    assert!(Filter::new(FilterName::Quuid, vec!["q".into(); 101], None).is_err());
    assert!(Filter::new(FilterName::Names, vec!["".into()], None).is_err());
    assert!(Filter::new(FilterName::Names, vec!["a\u{1b}".into()], None).is_err());
}

const OTHERS_REGION_FOR_TEST: &str = machines::OTHERS_REGION;

// ---- ports answers ----

#[test]
fn the_sdk_example_row_is_read_with_every_reported_field() {
    let rows = read(1, vec![row("22", "10.0.0.11", "TCP", "sshd", "1024")]).unwrap();
    let p = &rows[0];
    assert_eq!(
        p.key(),
        ("tcp", BindIp::parse("10.0.0.11").unwrap(), 22, "sshd")
    );
    assert_eq!(p.bind_ip.class(), BindClass::Private);
    assert_eq!(p.pid, Some(1024));
    assert_eq!((&*p.user, &*p.process_path), ("root", "/usr/sbin/sshd"));
    assert_eq!(p.first_seen.unwrap().rfc3339(), "2024-10-11T12:23:34+08:00");
    let page = ports::read_page(&fields(json!(1), vec![sshd()]), &query(0, 100)).unwrap();
    assert_eq!((page.2.as_str(), page.3.as_str()), ("10.0.0.11", "db-01"));
}

#[test]
fn reported_fields_may_be_unknown_identity_fields_must_be_there() {
    // Absent, null or empty: unknown.
    let sparse = ["Pid", "User", "ProcessPath", "FirstTime"]
        .iter()
        .fold(sshd(), |r, name| without(r, name));
    let nulls = ["Pid", "User", "ProcessPath", "FirstTime"]
        .iter()
        .fold(sshd(), |r, name| with(r, name, Value::Null));
    let empty = ["Pid", "User", "ProcessPath", "FirstTime"]
        .iter()
        .fold(sshd(), |r, name| with(r, name, json!("")));
    for r in [sparse, nulls, empty] {
        let p = &read(1, vec![r]).unwrap()[0];
        assert_eq!(
            (p.pid, &*p.user, &*p.process_path, p.first_seen),
            (None, "", "", None)
        );
    }
    // An empty protocol or process name is "not known", a valid identity part.
    let p = &read(1, vec![row("53", "::", "", "", "")]).unwrap()[0];
    assert_eq!(p.key(), ("", BindIp::parse("::").unwrap(), 53, ""));
    for name in ["Port", "BindIp", "Proto", "ProcessName", "Quuid"] {
        assert_eq!(
            problem_of(read(1, vec![without(sshd(), name)]), name),
            Problem::Missing
        );
        assert_eq!(
            problem_of(read(1, vec![with(sshd(), name, Value::Null)]), name),
            Problem::Missing
        );
    }
}

#[test]
fn a_port_that_is_not_a_port_is_refused() {
    for (port, want) in [
        ("abc", PortProblem::NotDigits),
        ("", PortProblem::Empty),
        ("0", PortProblem::Zero),
        ("65536", PortProblem::TooLarge),
        (" 22", PortProblem::NotDigits),
        ("22\t", PortProblem::NotDigits),
        ("-22", PortProblem::NotDigits),
        ("0022", PortProblem::LeadingZero),
    ] {
        let got = problem_of(read(1, vec![with(sshd(), "Port", json!(port))]), "Port");
        assert_eq!(got, Problem::Port(want), "{port:?}");
    }
    let huge = "9".repeat(100_000);
    assert_eq!(
        problem_of(read(1, vec![with(sshd(), "Port", json!(huge))]), "Port"),
        Problem::Port(PortProblem::TooLarge)
    );
    // A number is not what the API sends: refused, not guessed at.
    assert!(matches!(
        problem_of(read(1, vec![with(sshd(), "Port", json!(22))]), "Port"),
        Problem::WrongType {
            found: "a number",
            ..
        }
    ));
}

#[test]
fn hostile_fields_are_typed_errors_naming_the_field() {
    let cases: Vec<(&str, Value, Problem)> = vec![
        ("BindIp", json!("*"), Problem::Ip),
        ("BindIp", json!("localhost"), Problem::Ip),
        ("BindIp", json!("0.0.0.0 "), Problem::Ip),
        ("BindIp", json!(""), Problem::Empty),
        (
            "BindIp",
            json!(["0.0.0.0"]),
            Problem::WrongType {
                found: "an array",
                expected: "a string",
            },
        ),
        ("Pid", json!("12a"), Problem::Pid),
        ("Pid", json!("-1"), Problem::Pid),
        ("Pid", json!("99999999999"), Problem::Pid),
        (
            "Pid",
            json!(812),
            Problem::WrongType {
                found: "a number",
                expected: "a string",
            },
        ),
        ("Quuid", json!(""), Problem::Empty),
        (
            "Quuid",
            json!("a".repeat(65)),
            Problem::TooLong { len: 65, max: 64 },
        ),
        (
            "Quuid",
            json!("24c9be55-c743-4a75-a5c7-000000000000"),
            Problem::OtherMachine,
        ),
        ("Quuid", json!("../x"), Problem::BadCharacter { at: 2 }),
        ("Proto", json!("tcp\n"), Problem::BadCharacter { at: 3 }),
        (
            "ProcessName",
            json!("ss\u{1b}[2Jhd"),
            Problem::BadCharacter { at: 2 },
        ),
        (
            "ProcessName",
            json!("x\u{202e}y"),
            Problem::BadCharacter { at: 1 },
        ),
        (
            "ProcessName",
            json!("x".repeat(1025)),
            Problem::TooLong {
                len: 1025,
                max: 1024,
            },
        ),
        ("User", json!("root\r"), Problem::BadCharacter { at: 4 }),
        (
            "User",
            json!("u".repeat(257)),
            Problem::TooLong { len: 257, max: 256 },
        ),
        (
            "ProcessPath",
            json!("/bin/\u{0}sh"),
            Problem::BadCharacter { at: 5 },
        ),
        ("FirstTime", json!("2024-10-11"), Problem::Time),
        (
            "FirstTime",
            json!(1_728_620_614),
            Problem::WrongType {
                found: "a number",
                expected: "a string",
            },
        ),
    ];
    for (name, value, want) in cases {
        let result = ports::read_page(
            &fields(json!(1), vec![with(sshd(), name, value.clone())]),
            &query(0, 100),
        );
        let Err(bad) = result else {
            panic!("{name} = {value}: accepted")
        };
        assert_eq!(
            bad,
            BadAnswer::field(format!("Ports[0].{name}"), want.clone()),
            "{name} = {value}"
        );
        // As the engine sees it: a decode error with the RequestId, naming the field, never
        // quoting the value.
        let e = bad.into_api("r1");
        assert_eq!(
            (e.code(), e.request_id()),
            ("ClientError.Decode", Some("r1"))
        );
        assert!(e.message().contains(name), "{e}");
        if let Some(text) = value.as_str().filter(|t| t.len() > 2) {
            assert!(!e.to_string().contains(text), "{e} quotes {text:?}");
        }
    }
}

#[test]
fn duplicate_rows_and_lying_totals_are_refused() {
    // The same row twice in one page.
    let e = read(2, vec![sshd(), sshd()]).unwrap_err();
    assert_eq!(
        e,
        BadAnswer::field("Ports[1]", Problem::Repeated { first: 0 })
    );
    // One identity, two pids: two rows, both kept (one port in the set).
    let rows = read(2, vec![sshd(), row("22", "0.0.0.0", "tcp", "sshd", "813")]).unwrap();
    assert_eq!(port_set(rows).len(), 1);
    // Respelled addresses are one address: a repeat.
    let e = read(
        2,
        vec![
            row("22", "::1", "tcp", "sshd", "1"),
            row("22", "0:0::1", "tcp", "sshd", "1"),
        ],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            BadAnswer::Field {
                problem: Problem::Repeated { first: 0 },
                ..
            }
        ),
        "{e:?}"
    );
    // More rows than the total says.
    assert_eq!(
        read(1, vec![sshd(), row("80", "::", "tcp", "nginx", "1")]).unwrap_err(),
        BadAnswer::PastTotal {
            list: "Ports",
            total: 1,
            offset: 0,
            rows: 2
        }
    );
    let at = ports::read_page(&fields(json!(150), vec![sshd()]), &query(150, 100));
    assert!(
        matches!(at, Err(BadAnswer::PastTotal { offset: 150, .. })),
        "{at:?}"
    );
    // An empty page past the total is a list that shrank while paged: the listing's to judge.
    let shrunk = ports::read_page(&fields(json!(99), vec![]), &query(100, 100)).unwrap();
    assert_eq!((shrunk.0, shrunk.1.len()), (99, 0));
    // More rows than the Limit.
    let many: Vec<Value> = (1..=3)
        .map(|p| row(&p.to_string(), "::", "tcp", "x", "1"))
        .collect();
    assert_eq!(
        ports::read_page(&fields(json!(3), many), &query(0, 2)).unwrap_err(),
        BadAnswer::TooManyRows {
            list: "Ports",
            rows: 3,
            limit: 2
        }
    );
    // A total that is not a count.
    for total in [json!(-1), json!(1.5), json!("1"), Value::Null] {
        let e = ports::read_page(&fields(total.clone(), vec![]), &query(0, 100)).unwrap_err();
        assert!(
            matches!(&e, BadAnswer::Field { field, .. } if field == "Total"),
            "{total}: {e:?}"
        );
    }
    // Not a list, not objects.
    let mut f = fields(json!(1), vec![]);
    f.insert("Ports".into(), json!({"0": sshd()}));
    assert!(ports::read_page(&f, &query(0, 100)).is_err());
    assert_eq!(
        read(1, vec![json!("22")]).unwrap_err(),
        BadAnswer::field(
            "Ports[0]",
            Problem::WrongType {
                found: "a string",
                expected: "an object"
            }
        )
    );
}

#[test]
fn a_paged_listing_with_a_lying_total_ends_in_inventory_failed() {
    // Total says 150 on every page; the server has 120 rows: each try ends short, the third
    // gives up. What the engine would feed the listing, page by page.
    let all: Vec<Value> = (1..=120)
        .map(|p| row(&p.to_string(), "0.0.0.0", "tcp", "srv", "1"))
        .collect();
    let mut listing: Listing<AssetPort, AssetPort> = Listing::new(MAX_LIMIT, 20_000);
    let mut offset = 0;
    let failed = loop {
        let start = usize::try_from(offset).unwrap();
        let page: Vec<Value> = all.iter().skip(start).take(100).cloned().collect();
        let (total, rows, ..) =
            ports::read_page(&fields(json!(150), page), &query(offset, 100)).unwrap();
        match listing.page(total, rows, "r".into(), AssetPort::clone) {
            Step::Next(next) => offset = next,
            Step::Complete(..) => panic!("a partial listing completed"),
            Step::Failed(e) => break e,
        }
    };
    assert_eq!(failed.code(), "InventoryError.Incomplete");
}

// ---- machines answers ----

fn machine(quuid: &str, uuid: &str, status: &str) -> Value {
    json!({"Quuid": quuid, "Uuid": uuid, "AgentStatus": status, "MachineStatus": "RUNNING",
           "MachineName": "web-01", "MachineIp": "10.0.0.5", "MachineWanIp": "203.0.113.7",
           "InstanceId": "ins-aj28fjz", "MachineOs": "linux",
           "Tag": [{"Rid": 1, "Name": "web", "TagId": 11}],
           "RegionInfo": {"Region": "ap-guangzhou", "RegionName": "广州", "RegionId": 1}})
}

fn machines_read(total: u64, rows: Vec<Value>) -> Result<Vec<Machine>, BadAnswer> {
    let Value::Object(f) = json!({"TotalCount": total, "Machines": rows}) else {
        unreachable!()
    };
    let q = MachinesQuery::new(MachineType::Cvm, "ap-guangzhou", 0, 100).unwrap();
    machines::read_page(&f, &q).map(|(_, m)| m)
}

#[test]
fn machines_are_read_with_status_ids_and_facts() {
    let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    let list = machines_read(
        3,
        vec![
            machine(Q, u, "ONLINE"),
            machine("q-2", "", "OFFLINE"),
            without(machine("q-3", "", "UNINStALLED"), "Uuid"),
        ],
    )
    .unwrap();
    assert_eq!(list[0].quuid, quuid());
    assert_eq!(
        list[0].uuid.as_ref().map(|u| u.text().to_string()),
        Some(u.to_owned())
    );
    assert_eq!(&*list[0].agent_status, "ONLINE");
    assert_eq!(list[0].machine_status.as_deref(), Some("RUNNING"));
    assert_eq!(list[0].name.as_deref(), Some("web-01"));
    assert_eq!(list[0].machine_ip, Some("10.0.0.5".parse().unwrap()));
    assert_eq!(list[0].wan_ip, Some("203.0.113.7".parse().unwrap()));
    assert_eq!(list[0].instance_id.as_deref(), Some("ins-aj28fjz"));
    assert_eq!(list[0].facts.region(), Some("ap-guangzhou"));
    assert!(list[0].facts.wan());
    assert_eq!(list[1].uuid, None, "long offline: no Uuid");
    assert_eq!(
        &*list[2].agent_status, "UNINStALLED",
        "passed through as sent"
    );
    // Labels that are bad are dropped, the machine stays.
    let m = &machines_read(
        1,
        vec![with(
            with(
                with(machine(Q, "", "ONLINE"), "MachineName", json!("a\u{1b}[2J")),
                "MachineIp",
                json!("10.0.0.300"),
            ),
            "MachineStatus",
            json!("RUN NING"),
        )],
    )
    .unwrap()[0];
    assert_eq!(
        (&m.name, m.machine_ip, &m.machine_status),
        (&None, None, &None)
    );
}

#[test]
fn hostile_machines_are_typed_errors() {
    let cases: Vec<(Value, &str, Problem)> = vec![
        (
            without(machine(Q, "", "ONLINE"), "Quuid"),
            "Quuid",
            Problem::Missing,
        ),
        (machine("", "", "ONLINE"), "Quuid", Problem::Empty),
        (
            machine(&"q".repeat(65), "", "ONLINE"),
            "Quuid",
            Problem::TooLong { len: 65, max: 64 },
        ),
        (
            machine("q/1", "", "ONLINE"),
            "Quuid",
            Problem::BadCharacter { at: 1 },
        ),
        (machine(Q, "../../etc", "ONLINE"), "Uuid", Problem::Uuid),
        (machine(Q, "", ""), "AgentStatus", Problem::Empty),
        (
            machine(Q, "", "ON LINE"),
            "AgentStatus",
            Problem::BadCharacter { at: 2 },
        ),
        (
            without(machine(Q, "", "ONLINE"), "AgentStatus"),
            "AgentStatus",
            Problem::Missing,
        ),
        (
            with(machine(Q, "", "ONLINE"), "AgentStatus", json!(1)),
            "AgentStatus",
            Problem::WrongType {
                found: "a number",
                expected: "a string",
            },
        ),
    ];
    for (m, field, want) in cases {
        assert_eq!(
            machines_read(1, vec![m.clone()]).unwrap_err(),
            BadAnswer::field(format!("Machines[0].{field}"), want),
            "{m}"
        );
    }
    assert_eq!(
        machines_read(2, vec![machine(Q, "", "ONLINE"), machine(Q, "", "OFFLINE")]).unwrap_err(),
        BadAnswer::field("Machines[1].Quuid", Problem::Repeated { first: 0 })
    );
    assert!(matches!(
        machines_read(
            1,
            vec![machine(Q, "", "ONLINE"), machine("q-2", "", "ONLINE")]
        ),
        Err(BadAnswer::PastTotal { .. })
    ));
}

#[test]
fn agent_status_codes_of_yunjing_are_failed_fetches_for_cwp() {
    let api = |code: &str| ApiError::Api {
        code: code.into(),
        message: String::new(),
        request_id: None,
    };
    assert!(matches!(
        api("ResourceNotFound").class(),
        ErrorClass::AgentStatus(_)
    ));
    assert_eq!(class(&api("ResourceNotFound")), ErrorClass::Request);
    assert_eq!(
        class(&api("FailedOperation.AgentOffline")),
        ErrorClass::Request
    );
    assert_eq!(class(&api("RequestLimitExceeded")), ErrorClass::Throttled);
    assert_eq!(
        class(&api("AuthFailure.SignatureFailure")),
        ErrorClass::Fatal
    );
}

// ---- property tests: any answer gives a page or a typed refusal ----

const PORT_FIELDS: [&str; 12] = [
    "Quuid",
    "Port",
    "Proto",
    "BindIp",
    "ProcessName",
    "Pid",
    "User",
    "ProcessPath",
    "FirstTime",
    "MachineIp",
    "MachineName",
    "Uuid",
];

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "\\PC{0,24}".prop_map(Value::from),
        "[0-9]{0,7}".prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
        prop::sample::select(vec![
            "22",
            "0",
            "065",
            "65535",
            "65536",
            "0.0.0.0",
            "::",
            "::1",
            "127.0.0.1",
            "fe80::1%2",
            "tcp",
            "UDP",
            "",
            "2024-10-11 12:23:34",
            "0000-00-00 00:00:00",
            Q,
        ])
        .prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

fn hostile_row() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::collection::btree_map(prop::sample::select(PORT_FIELDS.to_vec()), field_value(), 0..12)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        // A good row with one field replaced.
        4 => (prop::sample::select(PORT_FIELDS.to_vec()), field_value())
            .prop_map(|(name, value)| with(sshd(), name, value)),
        1 => field_value(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn any_port_answer_is_a_page_or_a_typed_refusal(
        rows in prop::collection::vec(hostile_row(), 0..6),
        total in prop_oneof![(0u64..8).prop_map(Value::from), field_value()],
        offset in 0u64..4,
        limit in 1u64..=100,
    ) {
        let query = query(offset, limit);
        if let Ok((total, rows, ip, name)) = ports::read_page(&fields(total, rows), &query) {
            // Whatever passed holds only what the fields may mean.
            prop_assert!(rows.len() as u64 <= limit && (rows.is_empty() || offset + rows.len() as u64 <= total));
            prop_assert!(ip.len() <= crate::inventory::MAX_MACHINE_BYTES);
            prop_assert!(name.len() <= crate::inventory::MAX_MACHINE_BYTES);
            for p in &rows {
                prop_assert!(p.port >= 1);
                prop_assert!(p.process.chars().all(|c| crate::problems::forbidden_char(c).is_none()));
                prop_assert!(p.user.chars().all(|c| crate::problems::forbidden_char(c).is_none()));
                prop_assert!(p.proto.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            }
            let mut distinct = rows.clone();
            distinct.sort();
            distinct.dedup();
            prop_assert_eq!(distinct.len(), rows.len());
        }
    }

    #[test]
    fn any_body_is_an_answer_or_an_error(body in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Ok(answer) = parse(200, &body) {
            let _ = ports::parse_page(&answer, &query(0, 100));
            let q = MachinesQuery::new(MachineType::Cvm, "ap-guangzhou", 0, 100).unwrap();
            let _ = machines::parse_page(&answer, &q);
        }
    }

    #[test]
    fn any_machines_answer_is_a_page_or_a_typed_refusal(
        rows in prop::collection::vec(
            prop_oneof![
                prop::collection::btree_map(
                    prop::sample::select(vec!["Quuid", "Uuid", "AgentStatus", "MachineName",
                        "MachineIp", "MachineWanIp", "MachineStatus", "InstanceId", "Tag",
                        "RegionInfo"]),
                    field_value(), 0..10)
                    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
                (prop::sample::select(vec!["Quuid", "Uuid", "AgentStatus"]), field_value())
                    .prop_map(|(name, value)| with(machine(Q, "", "ONLINE"), name, value)),
            ],
            0..5),
        total in 0u64..6,
    ) {
        if let Ok(list) = machines_read(total, rows) {
            for m in &list {
                prop_assert!(!m.agent_status.is_empty() && m.agent_status.len() <= 64);
                prop_assert!(!m.quuid.as_str().is_empty());
            }
        }
    }

    /// A row built from valid parts reads back as those parts.
    #[test]
    fn a_valid_row_reads_back(
        port in 1u16..,
        bind in prop_oneof![any::<u32>().prop_map(|v| std::net::IpAddr::from(std::net::Ipv4Addr::from(v))),
                            any::<u128>().prop_map(|v| std::net::IpAddr::from(std::net::Ipv6Addr::from(v)))],
        proto in "[a-z0-9]{0,16}",
        process in "[a-zA-Z0-9_./-]{0,40}",
        pid in any::<u32>(),
    ) {
        let r = row(&port.to_string(), &bind.to_string(), &proto, &process, &pid.to_string());
        let rows = read(1, vec![r]).unwrap();
        prop_assert_eq!(rows[0].key(), (proto.as_str(), BindIp::from(bind), port, process.as_str()));
        prop_assert_eq!(rows[0].pid, Some(pid));
    }
}

// ---- signing: a request as a real server receives it ----

/// What the server received: the request's headers and body.
struct Received {
    headers: hyper::HeaderMap,
    body: Bytes,
}

/// A server on 127.0.0.1:0 answering every request with `answer`, handing each request to
/// the test.
async fn server(answer: String) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tx, answer) = (tx.clone(), answer.clone());
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let (tx, answer) = (tx.clone(), answer.clone());
                    async move {
                        let (parts, body) = request.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let _ = tx.send(Received {
                            headers: parts.headers,
                            body,
                        });
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, rx)
}

const SECRET_ID: &str = "AKIDcwpportwatchSIMULATOR000000000000";
const SECRET_KEY: &str = "cwpportwatchSimulatorSecretKey00";

fn cwp_client(addr: SocketAddr) -> CwpClient {
    let endpoint = format!("http://{addr}/").parse().unwrap();
    CwpClient::new(
        ClientOptions {
            endpoint: ApiService::Cwp.endpoint(Some(&endpoint)),
            region: None,
            timeout: Duration::from_secs(5),
            max_idle_connections: 1,
        },
        Credentials {
            secret_id: SECRET_ID.into(),
            secret_key: SecretString::from(SECRET_KEY.to_owned()),
            token: None,
        },
        &TlsTrust::system(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_cwp_request_is_signed_for_cwp_and_its_answer_checked() {
    let answer = json!({"Response": {"Total": 1, "Ports": [sshd()], "RequestId": "rid-cwp-1"}});
    let (addr, mut received) = server(answer.to_string()).await;
    let client = cwp_client(addr);
    assert_eq!(
        (client.client().service(), client.client().version()),
        ("cwp", "2018-02-28")
    );

    let page = client
        .describe_asset_port_info_list(&query(0, 100))
        .await
        .unwrap();
    assert_eq!(
        (page.total, page.rows.len(), page.request_id.as_str()),
        (1, 1, "rid-cwp-1")
    );
    assert_eq!(
        page.rows[0].key(),
        ("tcp", BindIp::parse("0.0.0.0").unwrap(), 22, "sshd")
    );

    let got = received.recv().await.unwrap();
    let header = |name: &str| got.headers.get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("x-tc-action"), "DescribeAssetPortInfoList");
    assert_eq!(header("x-tc-version"), "2018-02-28");
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body, json!({"Quuid": Q, "Limit": 100, "Offset": 0}));

    // The credential scope names cwp, and the signature is what TC3 computes for cwp — and
    // not what it computes for yunjing.
    let timestamp: i64 = header("x-tc-timestamp").parse().unwrap();
    let date = crate::signing::utc_date(timestamp);
    let authorization = header("authorization");
    let scope = format!("{date}/cwp/tc3_request");
    assert!(
        authorization.starts_with(&format!(
            "TC3-HMAC-SHA256 Credential={SECRET_ID}/{scope}, SignedHeaders=content-type;host, Signature="
        )),
        "{authorization}"
    );
    let signature = authorization.rsplit("Signature=").next().unwrap();
    let canonical_headers = format!(
        "content-type:{}\nhost:{}\n",
        header("content-type"),
        header("host")
    );
    assert_eq!(header("host"), addr.to_string());
    let hash = crate::signing::canonical_request_hash(
        "POST",
        "/",
        "",
        &canonical_headers,
        "content-type;host",
        &got.body,
    );
    let for_service = |service: &str| {
        let scope = crate::signing::credential_scope(timestamp, service);
        let to_sign = crate::signing::string_to_sign(timestamp, &scope, &hash);
        crate::signing::signature(SECRET_KEY, &date, service, &to_sign)
    };
    assert_eq!(signature, for_service("cwp"));
    assert_ne!(signature, for_service("yunjing"));

    // DescribeMachines goes the same way.
    let q = MachinesQuery::new(MachineType::Cvm, "ap-guangzhou", 0, 100).unwrap();
    let e = client.describe_machines(&q).await.unwrap_err();
    assert_eq!(
        e.code(),
        "ClientError.Decode",
        "the port answer is no machines answer: {e}"
    );
    assert_eq!(e.request_id(), Some("rid-cwp-1"));
    let got = received.recv().await.unwrap();
    assert_eq!(got.headers["x-tc-action"], "DescribeMachines");
    assert!(
        got.headers["authorization"]
            .to_str()
            .unwrap()
            .contains("/cwp/tc3_request")
    );
}

#[tokio::test]
async fn a_hostile_answer_is_a_decode_error_with_its_request_id() {
    let bad = with(sshd(), "BindIp", json!("not-an-ip"));
    let answer = json!({"Response": {"Total": 1, "Ports": [bad], "RequestId": "rid-bad"}});
    let (addr, _received) = server(answer.to_string()).await;
    let e = cwp_client(addr)
        .describe_asset_port_info_list(&query(0, 100))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.request_id()),
        ("ClientError.Decode", Some("rid-bad"))
    );
    assert!(e.message().contains("Ports[0].BindIp"), "{e}");
    assert!(!e.to_string().contains("not-an-ip"), "{e}");
}

/// The official TC3 vector, signed for `cwp`: the canonical request does not depend on the
/// service (its hash is the documented one), the credential scope and signature do.
#[test]
fn the_official_vector_signed_for_cwp_changes_only_scope_and_signature() {
    let body = br#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
    let canonical_headers =
        "content-type:application/json; charset=utf-8\nhost:cvm.tencentcloudapi.com\n";
    let hash = crate::signing::canonical_request_hash(
        "POST",
        "/",
        "",
        canonical_headers,
        "content-type;host",
        body,
    );
    assert_eq!(
        hash,
        "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031"
    );
    let parts = |service| crate::signing::RequestParts {
        method: "POST",
        host: "cvm.tencentcloudapi.com",
        content_type: "application/json; charset=utf-8",
        payload: body,
        service,
        timestamp: 1_551_113_065,
    };
    let key = "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE";
    let id = "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE";
    let cvm = crate::signing::sign(id, key, &parts("cvm"));
    assert_eq!(
        cvm.signature,
        "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
    );
    let cwp = crate::signing::sign(id, key, &parts(SERVICE));
    assert!(
        cwp.authorization.contains(
            "Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cwp/tc3_request,"
        )
    );
    assert_ne!(cwp.signature, cvm.signature);
    let scope = crate::signing::credential_scope(1_551_113_065, "cwp");
    let to_sign = crate::signing::string_to_sign(1_551_113_065, &scope, &hash);
    assert_eq!(
        cwp.signature,
        crate::signing::signature(key, "2019-02-25", "cwp", &to_sign)
    );
}

#[test]
fn a_cwp_view_only_of_a_cwp_client() {
    let options = |endpoint: &str| ClientOptions {
        endpoint: endpoint.parse().unwrap(),
        region: None,
        timeout: Duration::from_secs(1),
        max_idle_connections: 1,
    };
    let credentials = || Credentials {
        secret_id: "AKIDtest".into(),
        secret_key: SecretString::from("k".to_owned()),
        token: None,
    };
    let trust = TlsTrust::system();
    let yunjing = Client::for_api(
        options("http://127.0.0.1:9/"),
        credentials(),
        &trust,
        ApiService::Yunjing,
    )
    .unwrap();
    assert_eq!(yunjing.service(), "yunjing");
    assert!(CwpClient::from_client(yunjing).is_none());
    let cwp = Client::for_api(
        options("http://127.0.0.1:9/"),
        credentials(),
        &trust,
        ApiService::Cwp,
    )
    .unwrap();
    assert!(CwpClient::from_client(cwp).is_some());
    // The same endpoint rules as every client: http only on loopback.
    let e = CwpClient::new(
        options("http://cwp.tencentcloudapi.com/"),
        credentials(),
        &trust,
    )
    .unwrap_err();
    assert_eq!(e.code(), "ClientError.Endpoint");
    assert_eq!(ApiService::Cwp.default_endpoint(), DEFAULT_ENDPOINT);
}

/// Answers are bounded before they are parsed: an oversized one never reaches the parser.
#[tokio::test]
async fn an_oversized_answer_is_refused_unread() {
    let many: Vec<Value> = (0..6000).map(|_| sshd()).collect();
    let answer = json!({"Response": {"Total": 6000, "Ports": many, "RequestId": "r"}}).to_string();
    assert!(answer.len() > crate::api::body::MAX_API_BODY_BYTES);
    let (addr, _received) = server(answer).await;
    let e = cwp_client(addr)
        .describe_asset_port_info_list(&query(0, 100))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ClientError.BodyTooLarge");
}
