//! The `cwp` API of the simulator over real HTTP on `127.0.0.1:0`: requests signed for service
//! `cwp` with the crate's signer, checked against the answers and the statistics.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::*;
use cwp_tc3::{RequestParts, sign};

const WEB: &str = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
const WEB_QUUID: &str = "11111111-aaaa-4bbb-8ccc-000000000001";
const BIG: &str = "c0ffee00-1a2b-4c3d-8e4f-5a6b7c8d9e0f";
const LIAR: &str = "00000000-0000-4000-8000-000000000003";

/// See [`scenario_changing_at`]; web changes only after an hour.
fn scenario() -> Scenario {
    scenario_changing_at("1h")
}

/// web: an explicit Quuid, tags, a WAN address, cwp facts, an agent_status timeline and ports
/// that change at `change`; big: 25 ports with default facts and the default Quuid; liar:
/// hostile answers from the start; one `[[machine]]` without agent.
fn scenario_changing_at(change: &str) -> Scenario {
    let big: Vec<String> = (0..25)
        .map(|i| {
            format!(
                "{{ port = {}, process = \"svc-{i}\", pid = {} }}",
                1000 + i,
                5000 + i
            )
        })
        .collect();
    Scenario::from_toml_str(&format!(
        r#"
[[agent]]
uuid = "{WEB}"
quuid = "{WEB_QUUID}"
machine_name = "web-01"
machine_ip = "10.0.0.5"
machine_wan_ip = "203.0.113.10"
tags = ["web", "prod"]
timeline = []
agent_status = [{{ at = "0s", status = "ONLINE" }}, {{ at = "{change}", status = "OFFLINE" }}]
ports = [
  {{ at = "0s", open = [
    {{ port = 22, process = "sshd", pid = 812, process_path = "/usr/sbin/sshd", first_seen = "-1d" }},
    {{ port = 5432, process = "postgres", pid = 1377, bind_ip = "127.0.0.1", user = "postgres" }},
    {{ port = 53, process = "dnsmasq", pid = 600, proto = "udp", user = "nobody" }},
  ] }},
  {{ at = "{change}", open = [
    {{ port = 22, process = "sshd", pid = 812, process_path = "/usr/sbin/sshd", first_seen = "-1d" }},
    {{ port = 5432, process = "postgres", pid = 1377, bind_ip = "0.0.0.0", user = "postgres" }},
  ] }},
]
[[agent]]
uuid = "{BIG}"
timeline = []
tags = ["prod"]
ports = [{{ at = "0s", open = [{}] }}]
[[agent]]
uuid = "{LIAR}"
timeline = []
online = false
ports = [{{ at = "0s", open = [{{ port = 22, process = "sshd", pid = 1 }}, {{ port = 80, process = "nginx", pid = 2 }}] }}]
cwp_faults = {{ port = "ssh", bind_ip = "localhost", duplicate_rows = true, total_offset = 5, machine_missing_quuid = true }}
[[machine]]
machine_name = "legacy-01"
machine_ip = "10.0.0.99"
"#,
        big.join(", ")
    ))
    .unwrap()
}

/// Options with room for the many calls of one test in a second (the rate test sets its own).
fn roomy(scenario: Scenario) -> SimulatorOptions {
    SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 1000 },
        ..SimulatorOptions::new(scenario)
    }
}

async fn start(opts: SimulatorOptions) -> RunningSimulator {
    RunningSimulator::start(opts, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap()
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// One request signed for `service` with the crate's signer.
struct Call<'a> {
    action: &'a str,
    body: Value,
    service: &'a str,
    version: &'a str,
    secret_key: &'a str,
}

impl Call<'static> {
    fn cwp(action: &'static str, body: Value) -> Call<'static> {
        Call {
            action,
            body,
            service: CWP_SERVICE,
            version: API_VERSION,
            secret_key: DEFAULT_SECRET_KEY,
        }
    }

    fn ports(body: Value) -> Call<'static> {
        Call::cwp(DESCRIBE_ASSET_PORTS_ACTION, body)
    }

    fn machines(body: Value) -> Call<'static> {
        Call::cwp(DESCRIBE_MACHINES_ACTION, body)
    }
}

impl Call<'_> {
    /// `(Error.Code or "ok", the Response object)`.
    async fn answer(&self, sim: &RunningSimulator) -> (String, Value) {
        let host = sim.addr.to_string();
        let body = self.body.to_string();
        let timestamp = now();
        let signed = sign(
            DEFAULT_SECRET_ID,
            self.secret_key,
            &RequestParts {
                method: "POST",
                host: &host,
                content_type: "application/json",
                payload: body.as_bytes(),
                service: self.service,
                timestamp,
            },
        );
        let resp = reqwest::Client::new()
            .post(sim.endpoint())
            .header("Content-Type", "application/json")
            .header("X-TC-Action", self.action)
            .header("X-TC-Version", self.version)
            .header("X-TC-Timestamp", timestamp.to_string())
            .header("Authorization", signed.authorization)
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        let r = v["Response"].clone();
        assert!(r["RequestId"].as_str().is_some_and(is_agent_uuid), "{r}");
        let label = r["Error"]["Code"].as_str().unwrap_or("ok").to_owned();
        (label, r)
    }

    /// The answer's `(total, rows)` under the given names, failing on an error.
    async fn list(&self, sim: &RunningSimulator, total: &str, rows: &str) -> (i64, Vec<Value>) {
        let (label, r) = self.answer(sim).await;
        assert_eq!(label, "ok", "{r}");
        (
            r[total].as_i64().unwrap(),
            r[rows].as_array().unwrap().clone(),
        )
    }

    async fn ports_page(&self, sim: &RunningSimulator) -> (i64, Vec<Value>) {
        self.list(sim, "Total", "Ports").await
    }

    async fn machines_page(&self, sim: &RunningSimulator) -> (i64, Vec<Value>) {
        self.list(sim, "TotalCount", "Machines").await
    }
}

/// `Port` of each row, which must be a string.
fn ports_of(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["Port"].as_str().unwrap()).collect()
}

fn cvm(extra: Value) -> Value {
    let mut body = json!({ "MachineType": "CVM", "MachineRegion": "ap-guangzhou" });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body
}

#[tokio::test]
async fn a_request_signed_for_cwp_reaches_the_cwp_api_and_only_it() {
    let sim = start(roomy(scenario())).await;
    let body = json!({ "Quuid": WEB_QUUID });
    assert_eq!(Call::ports(body.clone()).answer(&sim).await.0, "ok");
    let cases = [
        // The key must sign for service cwp: a yunjing signature does not verify for it.
        (
            Call {
                secret_key: "wrong-key",
                ..Call::ports(body.clone())
            },
            "AuthFailure.SignatureFailure",
        ),
        // Signed for yunjing: yunjing has no such action.
        (
            Call {
                service: SERVICE,
                ..Call::ports(body.clone())
            },
            "InvalidAction",
        ),
        // Signed for cwp: the task actions are yunjing's.
        (
            Call::cwp(DESCRIBE_ACTION, json!({ "Uuid": WEB })),
            "InvalidAction",
        ),
        (
            Call::cwp("ScanAsset", json!({ "Quuids": [WEB_QUUID] })),
            "UnsupportedOperation",
        ),
        (
            Call {
                version: "2017-03-12",
                ..Call::ports(body.clone())
            },
            "NoSuchVersion",
        ),
        (
            Call::ports(json!({ "Quuid": WEB_QUUID, "Uuid": WEB })),
            "UnknownParameter",
        ),
        (Call::ports(json!({ "Quuid": 7 })), "InvalidParameterValue"),
    ];
    for (call, expected) in cases {
        assert_eq!(
            call.answer(&sim).await.0,
            expected,
            "{} {}",
            call.action,
            call.body
        );
    }
    // One action name, two APIs: the scope decides the shape.
    let (_, cwp_rows) = Call::machines(cvm(json!({}))).machines_page(&sim).await;
    assert_eq!(cwp_rows[0]["AgentStatus"], "ONLINE");
    let (label, yunjing) = Call {
        service: SERVICE,
        ..Call::machines(cvm(json!({})))
    }
    .answer(&sim)
    .await;
    assert_eq!(label, "ok");
    assert!(
        yunjing["Machines"][0].get("AgentStatus").is_none(),
        "{yunjing}"
    );
    // The log names the cwp actions apart, with the Quuid asked for.
    let stats = sim.stats();
    assert_eq!(stats.log[0].action, "cwp:DescribeAssetPortInfoList");
    assert_eq!(stats.log[0].uuid.as_deref(), Some(WEB_QUUID));
    let actions: Vec<&str> = stats.log.iter().map(|r| r.action.as_str()).collect();
    assert!(actions.contains(&"cwp:DescribeMachines"), "{actions:?}");
    assert!(actions.contains(&"DescribeMachines"), "{actions:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn asset_ports_have_the_sdks_fields_with_port_and_pid_as_strings() {
    let sim = start(roomy(scenario())).await;
    let (total, rows) = Call::ports(json!({ "Quuid": WEB_QUUID, "Limit": 100 }))
        .ports_page(&sim)
        .await;
    assert_eq!(total, 3);
    let keys: Vec<&str> = rows[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "MachineIp",
            "MachineWanIp",
            "Quuid",
            "Uuid",
            "OsInfo",
            "ProjectId",
            "Tag",
            "ProcessName",
            "ProcessVersion",
            "ProcessPath",
            "Pid",
            "User",
            "StartTime",
            "Param",
            "Teletype",
            "Port",
            "GroupName",
            "Md5",
            "Ppid",
            "ParentProcessName",
            "Proto",
            "BindIp",
            "MachineName",
            "UpdateTime",
            "FirstTime",
            "IsNew",
            "MachineExtraInfo"
        ]
    );
    let fields = |r: &Value| {
        (
            r["Port"].as_str().unwrap().to_owned(),
            r["Pid"].as_str().unwrap().to_owned(),
            r["Proto"].as_str().unwrap().to_owned(),
            r["BindIp"].as_str().unwrap().to_owned(),
            r["User"].as_str().unwrap().to_owned(),
            r["ProcessPath"].as_str().unwrap().to_owned(),
        )
    };
    let s = |v: &str| v.to_owned();
    assert_eq!(
        rows.iter().map(fields).collect::<Vec<_>>(),
        [
            (
                s("22"),
                s("812"),
                s("tcp"),
                s("0.0.0.0"),
                s("root"),
                s("/usr/sbin/sshd")
            ),
            (
                s("5432"),
                s("1377"),
                s("tcp"),
                s("127.0.0.1"),
                s("postgres"),
                s("/usr/bin/postgres")
            ),
            (
                s("53"),
                s("600"),
                s("udp"),
                s("0.0.0.0"),
                s("nobody"),
                s("/usr/bin/dnsmasq")
            ),
        ]
    );
    let sshd = &rows[0];
    assert_eq!(
        (&sshd["Quuid"], &sshd["Uuid"], &sshd["MachineName"]),
        (&json!(WEB_QUUID), &json!(WEB), &json!("web-01"))
    );
    assert_eq!(
        (&sshd["MachineIp"], &sshd["MachineWanIp"]),
        (&json!("10.0.0.5"), &json!("203.0.113.10"))
    );
    assert_eq!(sshd["Tag"][1]["Name"], "prod");
    assert_eq!(sshd["MachineExtraInfo"]["InstanceID"], "ins-6b6cd843");
    // First seen a day before the start (explicit), the others at the start: none is new.
    // Times are Beijing time without a zone, as the cwp API writes them.
    let wall = |v: &Value| {
        time::PrimitiveDateTime::parse(
            v.as_str().unwrap(),
            time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]"),
        )
        .unwrap()
        .assume_offset(time::macros::offset!(+8))
        .unix_timestamp()
    };
    let day = wall(&rows[1]["FirstTime"]) - wall(&sshd["FirstTime"]);
    assert_eq!(day, 86_400);
    assert!((wall(&rows[1]["FirstTime"]) - now()).abs() <= 2);
    assert_eq!(sshd["StartTime"], sshd["FirstTime"]);
    assert_eq!(rows[1]["UpdateTime"], rows[1]["FirstTime"]);
    assert!(rows.iter().all(|r| r["IsNew"] == 0), "{rows:?}");

    // Default facts: tcp on 0.0.0.0 as root, the default Quuid.
    let (_, rows) = Call::ports(json!({ "Quuid": default_quuid(BIG), "Limit": 1 }))
        .ports_page(&sim)
        .await;
    assert_eq!(
        (
            &rows[0]["Proto"],
            &rows[0]["BindIp"],
            &rows[0]["User"],
            &rows[0]["Uuid"]
        ),
        (
            &json!("tcp"),
            &json!("0.0.0.0"),
            &json!("root"),
            &json!(BIG)
        )
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn asset_ports_page_and_refuse_a_limit_over_100() {
    let sim = start(roomy(scenario())).await;
    let quuid = default_quuid(BIG);
    let page = |limit: Option<i64>, offset: i64| {
        let mut body = json!({ "Quuid": quuid, "Offset": offset });
        if let Some(l) = limit {
            body["Limit"] = json!(l);
        }
        Call::ports(body)
    };
    // Default Limit 10; the pages add up to Total, in order.
    let mut seen = Vec::new();
    for offset in [0, 10, 20] {
        let (total, rows) = page(None, offset).ports_page(&sim).await;
        assert_eq!(total, 25);
        seen.extend(ports_of(&rows).into_iter().map(str::to_owned));
    }
    let expected: Vec<String> = (1000..1025).map(|p: i32| p.to_string()).collect();
    assert_eq!(seen, expected);
    assert_eq!(page(Some(100), 0).ports_page(&sim).await.1.len(), 25);
    assert_eq!(page(Some(0), 0).ports_page(&sim).await, (25, vec![]));
    assert_eq!(page(Some(5), 30).ports_page(&sim).await, (25, vec![]));
    for (limit, offset, code) in [
        (101, 0, "InvalidParameter"),
        (-1, 0, "InvalidParameter"),
        (10, -1, "InvalidParameter"),
    ] {
        assert_eq!(
            page(Some(limit), offset).answer(&sim).await.0,
            code,
            "Limit {limit} Offset {offset}"
        );
    }
    let (code, r) = Call::ports(json!({ "Quuid": quuid, "Limit": "10" }))
        .answer(&sim)
        .await;
    assert_eq!(code, "InvalidParameterValue", "{r}");
    // No Quuid: every machine's ports; an unknown one: nothing.
    // (The liar's scenario lies are about its own Quuid: a listing of all is honest.)
    assert_eq!(Call::ports(json!({})).ports_page(&sim).await.0, 3 + 25 + 2);
    assert_eq!(
        Call::ports(json!({ "Quuid": "no-such-machine" }))
            .ports_page(&sim)
            .await,
        (0, vec![])
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn asset_port_filters_order_and_by() {
    let sim = start(roomy(scenario())).await;
    let with = |filters: Value| Call::ports(json!({ "Quuid": WEB_QUUID, "Filters": filters }));
    let cases = [
        (
            json!([{ "Name": "Port", "Values": ["5432", "53"] }]),
            vec!["5432", "53"],
        ),
        (json!([{ "Name": "Proto", "Values": ["UDP"] }]), vec!["53"]),
        (
            json!([{ "Name": "Proto", "Values": ["tcp"] }, { "Name": "User", "Values": ["post"] }]),
            vec!["5432"],
        ),
        (
            json!([{ "Name": "User", "Values": ["post"], "ExactMatch": true }]),
            vec![],
        ),
        (
            json!([{ "Name": "ProcessName", "Values": ["ss"] }]),
            vec!["22"],
        ),
        (
            json!([{ "Name": "ProcessName", "Values": ["ss"], "ExactMatch": true }]),
            vec![],
        ),
        (json!([{ "Name": "Pid", "Values": ["600"] }]), vec!["53"]),
        (
            json!([{ "Name": "IP", "Values": ["203.0.113"] }]),
            vec!["22", "5432", "53"],
        ),
        (json!([{ "Name": "IP", "Values": ["10.9."] }]), vec![]),
        (
            json!([{ "Name": "MachineName", "Values": ["web"] }]),
            vec!["22", "5432", "53"],
        ),
        (json!([{ "Name": "OsType", "Values": ["windows"] }]), vec![]),
        (
            json!([{ "Name": "InstanceID", "Values": ["ins-6b6cd843"] }]),
            vec!["22", "5432", "53"],
        ),
        (
            json!([{ "Name": "RunTimeStart", "Values": ["2000-01-01 00:00:00"] }]),
            vec!["22", "5432", "53"],
        ),
        (
            json!([{ "Name": "RunTimeEnd", "Values": ["2000-01-01 00:00:00"] }]),
            vec![],
        ),
    ];
    for (filters, expected) in cases {
        let (total, rows) = with(filters.clone()).ports_page(&sim).await;
        assert_eq!(ports_of(&rows), expected, "{filters}");
        assert_eq!(total as usize, expected.len(), "{filters}");
    }
    let six: Vec<Value> = (0..6)
        .map(|_| json!({ "Name": "Port", "Values": ["1"] }))
        .collect();
    let refused = [
        (
            json!([{ "Name": "Colour", "Values": ["red"] }]),
            "InvalidParameter",
        ),
        (json!(six), "InvalidParameter"),
        (
            json!([{ "Name": "Port", "Values": [] }]),
            "InvalidParameter",
        ),
        (
            json!([{ "Name": "Port", "Values": [22] }]),
            "InvalidParameter",
        ),
        (
            json!([{ "Name": "Port", "Values": ["ssh"] }]),
            "InvalidParameterValue",
        ),
        (
            json!([{ "Name": "RunTimeEnd", "Values": ["yesterday"] }]),
            "InvalidParameterValue",
        ),
        (
            json!([{ "Name": "Port", "Values": ["22"], "ExactMatch": "yes" }]),
            "InvalidParameter",
        ),
        (json!({ "Name": "Port" }), "InvalidParameter"),
    ];
    for (filters, code) in refused {
        assert_eq!(
            with(filters.clone()).answer(&sim).await.0,
            code,
            "{filters}"
        );
    }
    // By sorts (ties in scenario order), Order ASC by default.
    let sorted = |order: Option<&str>, by: &str| {
        let mut body = json!({ "Quuid": WEB_QUUID, "By": by });
        if let Some(o) = order {
            body["Order"] = json!(o);
        }
        Call::ports(body)
    };
    let rows = sorted(None, "FirstTime").ports_page(&sim).await.1;
    assert_eq!(ports_of(&rows), ["22", "5432", "53"]);
    let rows = sorted(Some("desc"), "StartTime").ports_page(&sim).await.1;
    assert_eq!(ports_of(&rows), ["5432", "53", "22"]);
    assert_eq!(
        sorted(Some("UP"), "FirstTime").answer(&sim).await.0,
        "InvalidParameter"
    );
    assert_eq!(
        sorted(None, "Port").answer(&sim).await.0,
        "InvalidParameter"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn cwp_machines_list_quuid_agent_status_and_filter() {
    let sim = start(roomy(scenario())).await;
    let (total, rows) = Call::machines(cvm(json!({ "Limit": 100 })))
        .machines_page(&sim)
        .await;
    assert_eq!(total, 4);
    let ids: Vec<(&str, &str, &str)> = rows
        .iter()
        .map(|m| {
            (
                m["Uuid"].as_str().unwrap(),
                m["Quuid"].as_str().unwrap_or("<none>"),
                m["AgentStatus"].as_str().unwrap(),
            )
        })
        .collect();
    let big_quuid = default_quuid(BIG);
    assert_eq!(
        ids[..3],
        [
            (WEB, WEB_QUUID, "ONLINE"),
            (BIG, big_quuid.as_str(), "ONLINE"),
            // online = false; its scenario lies: no Quuid.
            (LIAR, "<none>", "OFFLINE"),
        ]
    );
    assert_eq!((ids[3].0, ids[3].2), ("", "OFFLINE"));
    assert!(!ids[3].1.is_empty() && ids[3].1 != "<none>");
    let web = &rows[0];
    // The SDK's `Machine`, field for field and in its order.
    let keys: Vec<&str> = web
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "MachineName",
            "MachineOs",
            "MachineStatus",
            "AgentStatus",
            "InstanceStatus",
            "Uuid",
            "Quuid",
            "VulNum",
            "MachineIp",
            "IsProVersion",
            "MachineWanIp",
            "PayMode",
            "MalwareNum",
            "Tag",
            "BaselineNum",
            "CyberAttackNum",
            "SecurityStatus",
            "InvasionNum",
            "RegionInfo",
            "InstanceState",
            "LicenseStatus",
            "ProjectId",
            "HasAssetScan",
            "MachineType",
            "KernelVersion",
            "ProtectType",
            "CloudTags",
            "IsAddedOnTheFifteen",
            "IpList",
            "VpcId",
            "MachineExtraInfo",
            "InstanceId",
            "Remark",
            "AgentVersion",
            "AppId",
            "CSIPProtectType"
        ]
    );
    assert_eq!(web["MachineStatus"], "ONLINE");
    assert_eq!(web["InstanceId"], "ins-6b6cd843");
    assert_eq!(web["ProjectId"], 0);
    assert_eq!(web["MachineWanIp"], "203.0.113.10");
    // One TagId per tag name across machines.
    assert_eq!(
        web["Tag"][1],
        json!({ "Rid": 2, "Name": "prod", "TagId": 2 })
    );
    assert_eq!(rows[1]["Tag"][0]["TagId"], 2);

    let filtered = |filters: Value| Call::machines(cvm(json!({ "Filters": filters })));
    let cases = [
        (
            json!([{ "Name": "Quuid", "Values": [WEB_QUUID, big_quuid] }]),
            2,
        ),
        (json!([{ "Name": "AgentStatus", "Values": ["OFFLINE"] }]), 2),
        (json!([{ "Name": "AgentStatus", "Values": ["ALL"] }]), 4),
        (json!([{ "Name": "Names", "Values": ["web"] }]), 1),
        (
            json!([{ "Name": "Names", "Values": ["web"], "ExactMatch": true }]),
            0,
        ),
        (json!([{ "Name": "Ips", "Values": ["203.0.113.10"] }]), 1),
        (
            json!([{ "Name": "InstanceIds", "Values": ["ins-6b6cd843"] }]),
            1,
        ),
        (json!([{ "Name": "TagId", "Values": ["2"] }]), 2),
        (json!([{ "Name": "Version", "Values": ["PRO_VERSION"] }]), 0),
        (
            json!([{ "Name": "MachineStatus", "Values": ["RUNNING"] }]),
            4,
        ),
    ];
    for (filters, expected) in cases {
        assert_eq!(
            filtered(filters.clone()).machines_page(&sim).await.0,
            expected,
            "{filters}"
        );
    }
    let refused = [
        (cvm(json!({ "Limit": 101 })), "InvalidParameter"),
        (cvm(json!({ "Offset": -1 })), "InvalidParameter"),
        (
            json!({ "MachineRegion": "ap-guangzhou" }),
            "MissingParameter",
        ),
        (
            json!({ "MachineType": "VM", "MachineRegion": "ap-guangzhou" }),
            "InvalidParameterValue",
        ),
        (
            cvm(json!({ "Filters": [{ "Name": "Keywords", "Values": ["web"] }] })),
            "InvalidParameter",
        ),
        (
            cvm(json!({ "Filters": [{ "Name": "Os", "Values": ["linux", "windows"] }] })),
            "InvalidParameter",
        ),
        (
            cvm(json!({ "Filters": [{ "Name": "MachineStatus", "Values": ["ON"] }] })),
            "InvalidParameterValue",
        ),
        (cvm(json!({ "ProjectIds": ["a"] })), "InvalidParameterValue"),
    ];
    for (body, code) in refused {
        assert_eq!(
            Call::machines(body.clone()).answer(&sim).await.0,
            code,
            "{body}"
        );
    }
    assert_eq!(
        Call::machines(cvm(json!({ "ProjectIds": [3] })))
            .machines_page(&sim)
            .await
            .0,
        0
    );
    // Its own hooks: hiding a machine from cwp leaves yunjing's listing alone.
    sim.cwp_machine_hooks().hide(BIG);
    assert_eq!(
        Call::machines(cvm(json!({}))).machines_page(&sim).await.0,
        3
    );
    let (_, yunjing) = Call {
        service: SERVICE,
        ..Call::machines(cvm(json!({})))
    }
    .answer(&sim)
    .await;
    assert_eq!(yunjing["TotalCount"], 4);
    sim.cwp_machine_hooks().set_failing(true);
    assert_eq!(
        Call::machines(cvm(json!({}))).answer(&sim).await.0,
        "InternalError"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn timelines_move_agent_status_and_ports_and_first_seen_follows() {
    let sim = start(roomy(scenario_changing_at("1s"))).await;
    let web = || Call::ports(json!({ "Quuid": WEB_QUUID }));
    let status = || {
        Call::machines(cvm(
            json!({ "Filters": [{ "Name": "Quuid", "Values": [WEB_QUUID] }] }),
        ))
    };
    let (_, before) = web().ports_page(&sim).await;
    assert_eq!(ports_of(&before), ["22", "5432", "53"]);
    assert_eq!(
        status().machines_page(&sim).await.1[0]["AgentStatus"],
        "ONLINE"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (total, after) = web().ports_page(&sim).await;
    // At 1 s: offline, and its asset list is its last report (kept while offline).
    let machine = &status().machines_page(&sim).await.1[0];
    assert_eq!(
        (&machine["AgentStatus"], &machine["MachineStatus"]),
        (&json!("OFFLINE"), &json!("OFFLINE"))
    );
    assert_eq!((total, ports_of(&after)), (2, vec!["22", "5432"]));
    // sshd kept its explicit first sighting; postgres now binds 0.0.0.0: a new port since 1 s,
    // reported at 1 s.
    assert_eq!(after[0]["FirstTime"], before[0]["FirstTime"]);
    assert_ne!(after[1]["FirstTime"], before[1]["FirstTime"]);
    assert_eq!(after[1]["FirstTime"], after[1]["UpdateTime"]);
    assert_eq!(after[1]["IsNew"], 1);
    assert_eq!(after[0]["IsNew"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn each_cwp_action_has_its_own_window_apart_from_yunjings() {
    let sim = start(SimulatorOptions {
        limiter: LimiterKind::SlidingWindow { per_second: 3 },
        ..SimulatorOptions::new(scenario())
    })
    .await;
    let calls: Vec<Call<'static>> = (0..5)
        .map(|_| Call::ports(json!({ "Quuid": WEB_QUUID })))
        .chain((0..5).map(|_| Call::machines(cvm(json!({})))))
        .chain((0..5).map(|_| Call {
            service: SERVICE,
            ..Call::machines(cvm(json!({})))
        }))
        .collect();
    let mut answers = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let sim = std::sync::Arc::new(sim);
    for (i, call) in calls.into_iter().enumerate() {
        let sim = sim.clone();
        set.spawn(async move { (i, call.answer(&sim).await.0) });
    }
    while let Some(done) = set.join_next().await {
        answers.push(done.unwrap());
    }
    answers.sort();
    let throttled = |range: std::ops::Range<usize>| {
        answers[range]
            .iter()
            .filter(|(_, a)| a == "RequestLimitExceeded")
            .count()
    };
    assert_eq!(
        (throttled(0..5), throttled(5..10), throttled(10..15)),
        (2, 2, 2),
        "{answers:?}"
    );
    let stats = sim.stats();
    for action in [
        cwp_action_key(DESCRIBE_ASSET_PORTS_ACTION),
        cwp_action_key(DESCRIBE_MACHINES_ACTION),
        DESCRIBE_MACHINES_ACTION.to_owned(),
    ] {
        assert_eq!(
            stats.per_action[&action],
            ActionStats {
                arrived: 5,
                accepted: 3,
                throttled: 2,
                max_arrivals_in_window: 5,
                max_accepted_in_window: 3,
            },
            "{action}"
        );
    }
    assert_eq!(stats.per_action.len(), 3, "{:?}", stats.per_action);
    assert_eq!(
        stats.per_account[DEFAULT_SECRET_ID].len(),
        3,
        "{:?}",
        stats.per_account
    );
    match std::sync::Arc::try_unwrap(sim) {
        Ok(sim) => sim.shutdown().await,
        Err(_) => panic!("a request task still holds the simulator"),
    }
}

#[tokio::test]
async fn hostile_cwp_answers_from_the_scenario_and_at_run_time() {
    let sim = start(roomy(scenario())).await;
    let liar = || Call::ports(json!({ "Quuid": default_quuid(LIAR), "Limit": 2 }));
    // The scenario's switch: a Port that is no port, a BindIp that is no address, the first
    // port twice, a Total 5 too high.
    let (total, rows) = liar().ports_page(&sim).await;
    assert_eq!(total, 3 + 5);
    assert_eq!(
        (&rows[0]["Port"], &rows[0]["BindIp"]),
        (&json!("ssh"), &json!("localhost"))
    );
    assert_eq!(rows[1]["Port"], "22");
    assert_eq!(rows[1]["BindIp"], "0.0.0.0");
    let (_, next) = Call::ports(json!({ "Quuid": default_quuid(LIAR), "Limit": 2, "Offset": 2 }))
        .ports_page(&sim)
        .await;
    // Every page's first row lies.
    assert_eq!(ports_of(&next), ["ssh"]);
    // Honest agents stay honest.
    let (total, _) = Call::ports(json!({ "Quuid": WEB_QUUID }))
        .ports_page(&sim)
        .await;
    assert_eq!(total, 3);

    // Run-time lies, for one Quuid: they replace the scenario's while set.
    sim.set_asset_port_faults(AssetPortFaults {
        quuid: Some(WEB_QUUID.into()),
        missing_field: Some("Quuid".into()),
        total_offset: -1,
        ..AssetPortFaults::default()
    });
    let (total, rows) = Call::ports(json!({ "Quuid": WEB_QUUID }))
        .ports_page(&sim)
        .await;
    assert_eq!(total, 2);
    assert!(rows[0].get("Quuid").is_none(), "{}", rows[0]);
    assert_eq!(rows[1]["Quuid"], WEB_QUUID);
    assert_eq!(
        liar().ports_page(&sim).await.0,
        8,
        "another Quuid: its own lies"
    );
    sim.set_asset_port_faults(AssetPortFaults {
        ignore_offset: true,
        empty_answers: 1,
        ..AssetPortFaults::default()
    });
    let big = |offset: i64| Call::ports(json!({ "Quuid": default_quuid(BIG), "Offset": offset }));
    assert_eq!(big(10).ports_page(&sim).await, (0, vec![]));
    let (total, rows) = big(10).ports_page(&sim).await;
    assert_eq!((total, ports_of(&rows)[0]), (25, "1000"));
    sim.set_asset_port_faults(AssetPortFaults::default());
    assert_eq!(ports_of(&big(10).ports_page(&sim).await.1)[0], "1010");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_tests_port_overrides_reach_the_cwp_api_with_default_or_given_facts() {
    let sim = start(roomy(scenario())).await;
    let open = |port| OpenPortSpec {
        port,
        process: "svc".into(),
        pid: 9,
    };
    assert!(sim.set_ports(WEB, vec![open(8080)]));
    let call = || Call::ports(json!({ "Quuid": WEB_QUUID }));
    let (total, rows) = call().ports_page(&sim).await;
    assert_eq!((total, ports_of(&rows)), (1, vec!["8080"]));
    assert_eq!(
        (&rows[0]["BindIp"], &rows[0]["ProcessPath"], &rows[0]["Pid"]),
        (&json!("0.0.0.0"), &json!("/usr/bin/svc"), &json!("9"))
    );
    // A change after the next page: a cwp page of the agent counts.
    assert!(sim.set_ports_after_next_page(WEB, vec![open(8080), open(8081)]));
    assert_eq!(call().ports_page(&sim).await.0, 1);
    assert_eq!(call().ports_page(&sim).await.0, 2);
    sim.clear_ports(WEB);
    assert_eq!(call().ports_page(&sim).await.0, 3);

    // With facts: mysqld on loopback, then (after the next page) on every address.
    let mysqld = |bind: &str| {
        let open = OpenPortSpec {
            port: 3306,
            process: "mysqld".into(),
            pid: 77,
        };
        let facts = CwpPortFacts {
            bind_ip: bind.into(),
            user: "mysql".into(),
            first_seen: -600,
            ..CwpPortFacts::defaults(&open, 0)
        };
        (open, facts)
    };
    assert!(sim.set_cwp_ports(WEB, vec![mysqld("127.0.0.1")]));
    assert!(sim.set_cwp_ports_after_next_page(WEB, vec![mysqld("0.0.0.0")]));
    let binds = |rows: &[Value]| -> Vec<(String, String)> {
        rows.iter()
            .map(|r| {
                (
                    r["BindIp"].as_str().unwrap().to_owned(),
                    r["User"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (_, rows) = call().ports_page(&sim).await;
    assert_eq!(binds(&rows), [("127.0.0.1".to_owned(), "mysql".to_owned())]);
    assert_eq!(rows[0]["IsNew"], 0, "first seen 10 min before the start");
    let (_, rows) = call().ports_page(&sim).await;
    assert_eq!(binds(&rows), [("0.0.0.0".to_owned(), "mysql".to_owned())]);
    assert!(!sim.set_cwp_ports("11111111-2222-4333-8444-555555555555", vec![]));
    sim.shutdown().await;
}
