//! The scenario's unit tests: parsing, validation messages (with line:column), timeline and
//! port lookup, the shipped example scenarios.

use super::*;

const GOOD: &str = r#"
secret_id = "AKIDtest"
secret_key = "keytest"

[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = [
  { at = "45s", error = "FailedOperation.AgentOffline" },
  { at = "0s",  status = "COLLECTING" },
  { at = "20s", status = "COMPLETE" },
]

[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = [{ at = "5s", status = "FAILED" }]
"#;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn invalid_at(text: &str) -> (usize, usize, String) {
    match Scenario::from_toml_str(text) {
        Err(ScenarioError::Invalid {
            line,
            column,
            message,
            ..
        }) => (line, column, message),
        other => panic!("expected an Invalid error, got {other:?}"),
    }
}

#[test]
fn parses_the_spec_example_and_sorts_entries() {
    let s = Scenario::from_toml_str(GOOD).unwrap();
    assert_eq!(s.secret_id, "AKIDtest");
    assert_eq!(s.secret_key, "keytest");
    assert_eq!(s.agents.len(), 2);
    let ats: Vec<_> = s.agents[0].timeline.iter().map(|e| e.at).collect();
    assert_eq!(ats, vec![secs(0), secs(20), secs(45)]);
    assert_eq!(
        s.agents[0].timeline[2].answer,
        ScriptedAnswer::Error("FailedOperation.AgentOffline".into())
    );
}

#[test]
fn credentials_default_to_the_documented_test_values() {
    let s = Scenario::from_toml_str("").unwrap();
    assert_eq!(s.secret_id, DEFAULT_SECRET_ID);
    assert_eq!(s.secret_key, DEFAULT_SECRET_KEY);
    assert!(s.agents.is_empty());
    assert!(!format!("{s:?}").contains(DEFAULT_SECRET_KEY));
}

#[test]
fn answer_at_takes_the_last_entry_at_or_before_now() {
    let s = Scenario::from_toml_str(GOOD).unwrap();
    let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    let status = |t| s.answer_at(u, t).cloned();
    assert_eq!(
        status(secs(0)),
        Some(ScriptedAnswer::Status("COLLECTING".into()))
    );
    assert_eq!(
        status(secs(19)),
        Some(ScriptedAnswer::Status("COLLECTING".into()))
    );
    assert_eq!(
        status(secs(20)),
        Some(ScriptedAnswer::Status("COMPLETE".into()))
    );
    assert_eq!(
        status(secs(3600)),
        Some(ScriptedAnswer::Error("FailedOperation.AgentOffline".into()))
    );
    assert_eq!(
        s.answer_at("00000000-0000-4000-8000-000000000009", secs(1)),
        None
    );
    // Before the first entry: no task yet.
    assert_eq!(
        s.answer_at("00000000-0000-4000-8000-000000000002", secs(4)),
        Some(&ScriptedAnswer::Error(BEFORE_TIMELINE_ERROR.into()))
    );
}

#[test]
fn answer_at_copes_with_hand_built_unsorted_timelines() {
    let entry = |at, s: &str| TimelineEntry {
        at: secs(at),
        answer: ScriptedAnswer::Status(s.into()),
    };
    let s = Scenario {
        agents: vec![ScenarioAgent::new("u", vec![entry(10, "B"), entry(0, "A")])],
        ..Scenario::default()
    };
    assert_eq!(
        s.answer_at("u", secs(5)),
        Some(&ScriptedAnswer::Status("A".into()))
    );
    assert_eq!(
        s.answer_at("u", secs(10)),
        Some(&ScriptedAnswer::Status("B".into()))
    );
}

#[test]
fn answer_at_index_follows_changes_to_agents() {
    let mut s = Scenario::from_toml_str(GOOD).unwrap();
    let u = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1";
    let other = "00000000-0000-4000-8000-000000000002";
    assert!(s.answer_at(u, secs(0)).is_some()); // builds the index
    let added = ScenarioAgent::new(
        "00000000-0000-4000-8000-000000000003",
        vec![TimelineEntry {
            at: secs(0),
            answer: ScriptedAnswer::Status("NEW".into()),
        }],
    );
    s.agents.insert(0, added.clone()); // every index shifts; the length differs
    assert_eq!(
        s.answer_at(&added.uuid, secs(0)),
        Some(&ScriptedAnswer::Status("NEW".into()))
    );
    assert_eq!(
        s.answer_at(other, secs(5)),
        Some(&ScriptedAnswer::Status("FAILED".into()))
    );
    s.reindex();
    s.agents.remove(0);
    s.agents[0].uuid = "00000000-0000-4000-8000-000000000004".into();
    assert_eq!(s.answer_at(u, secs(0)), None);
    assert!(
        s.answer_at("00000000-0000-4000-8000-000000000004", secs(0))
            .is_some()
    );
    // Comparisons ignore the index but not the agents: a scenario whose index is built
    // equals a fresh copy of its agents, and differs once one answer differs.
    let mut fresh = Scenario {
        agents: s.agents.clone(),
        ..Scenario::default()
    };
    fresh.secret_id.clone_from(&s.secret_id);
    fresh.secret_key.clone_from(&s.secret_key);
    assert!(fresh.index.0.get().is_none() && s.index.0.get().is_some());
    assert_eq!(fresh, s);
    fresh.agents[0].timeline[0].answer = ScriptedAnswer::Status("OTHER".into());
    assert_ne!(fresh, s);
    fresh.agents[0].timeline[0].answer = s.agents[0].timeline[0].answer.clone();
    fresh.secret_key.push('x');
    assert_ne!(fresh, s);
    // A clone carries its own index: changing the original does not stale the clone's.
    let copy = s.clone();
    s.agents.clear();
    s.reindex();
    assert_eq!(s.answer_at(u, secs(0)), None);
    assert!(
        copy.answer_at("00000000-0000-4000-8000-000000000004", secs(0))
            .is_some()
    );

    // Hand-built duplicates: the first wins, as with a scan.
    let entry = |s: &str| TimelineEntry {
        at: secs(0),
        answer: ScriptedAnswer::Status(s.into()),
    };
    let s = Scenario {
        agents: vec![
            ScenarioAgent::new("u", vec![entry("first")]),
            ScenarioAgent::new("u", vec![entry("second")]),
        ],
        ..Scenario::default()
    };
    assert_eq!(
        s.answer_at("u", secs(0)),
        Some(&ScriptedAnswer::Status("first".into()))
    );
}

#[test]
fn twenty_thousand_agents_load_and_a_late_duplicate_names_the_first() {
    use std::fmt::Write;
    let count = 20_000;
    let mut text = String::with_capacity(count * 100);
    for i in 0..count {
        let _ = write!(
            text,
            "[[agent]]\nuuid = \"{i:08x}-0000-4000-8000-{i:012x}\"\n\
             timeline = [{{ at = \"0s\", status = \"COMPLETE\" }}]\n\n"
        );
    }
    let s = Scenario::from_toml_str(&text).unwrap();
    assert_eq!(s.agents.len(), count);
    let last = format!("{:08x}-0000-4000-8000-{:012x}", count - 1, count - 1);
    assert_eq!(
        s.answer_at(&last, secs(1)),
        Some(&ScriptedAnswer::Status("COMPLETE".into()))
    );
    assert_eq!(s.agents[count - 1].uuid, last);
    let _ = write!(
        text,
        "[[agent]]\nuuid = \"{:08x}-0000-4000-8000-{:012x}\"\ntimeline = []\n",
        7, 7
    );
    let (line, _, msg) = invalid_at(&text);
    assert_eq!(line, count * 4 + 2);
    assert!(msg.contains("already used on line 30"), "{msg}");
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let (line, col, msg) = invalid_at(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [{ at = \"0s\", stauts = \"X\" }]\n",
    );
    assert_eq!(line, 3);
    assert!(col > 1, "{col}");
    assert!(msg.contains("stauts"), "{msg}");
    let (line, _, msg) = invalid_at("secret_id = \"a\"\nsecret_key = \"b\"\nagents = []\n");
    assert_eq!(line, 3);
    assert!(msg.contains("agents"), "{msg}");
}

#[test]
fn bad_durations_say_what_to_write() {
    let (line, col, msg) = invalid_at(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = [\n  { at = \"soon\", status = \"X\" },\n]\n",
    );
    assert_eq!((line, col), (4, 10));
    assert!(msg.contains("\"20s\""), "{msg}");
}

#[test]
fn each_entry_has_exactly_one_answer() {
    let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n";
    let (line, _, msg) = invalid_at(&format!(
        "{head}timeline = [{{ at = \"0s\", status = \"A\", error = \"B\" }}]\n"
    ));
    assert_eq!(line, 3);
    assert!(msg.contains("exactly one"), "{msg}");
    let (line, _, msg) = invalid_at(&format!("{head}timeline = [{{ at = \"0s\" }}]\n"));
    assert_eq!(line, 3);
    assert!(msg.contains("status = "), "{msg}");
    let (_, _, msg) = invalid_at(&format!(
        "{head}timeline = [{{ at = \"1s\", status = \"A\" }},\n {{ at = \"1000ms\", status = \"B\" }}]\n"
    ));
    assert!(msg.contains("line 3"), "{msg}");
}

#[test]
fn bad_and_duplicate_uuids_are_rejected() {
    let (line, col, msg) = invalid_at("[[agent]]\nuuid = \"web-01\"\ntimeline = []\n");
    assert_eq!((line, col), (2, 8));
    assert!(msg.contains("8-4-4-4-12"), "{msg}");
    let one = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
    let (line, _, msg) = invalid_at(&format!("{one}{one}"));
    assert_eq!(line, 5);
    assert!(msg.contains("line 2"), "{msg}");
}

#[test]
fn missing_timeline_and_half_credentials_are_rejected() {
    let (line, _, msg) = invalid_at("[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("timeline"), "{msg}");
    let (line, _, msg) = invalid_at("\nsecret_id = \"AKIDx\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("both"), "{msg}");
}

#[test]
fn syntax_errors_have_a_position() {
    let (line, _, _) = invalid_at("secret_id = \"a\"\nsecret_key = \n");
    assert_eq!(line, 2);
    let err = Scenario::from_toml_str("x = [").unwrap_err();
    assert_eq!(err.code(), "scenario_invalid");
    assert!(err.to_string().starts_with("scenario:1:"), "{err}");
}

#[test]
fn uuid_format() {
    assert!(is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
    assert!(is_agent_uuid("6B6CD843-6BC1-4011-A74C-DC3FD26A7DD1"));
    assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd"));
    assert!(!is_agent_uuid("6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1-"));
    assert!(!is_agent_uuid("6b6cd843x6bc1-4011-a74c-dc3fd26a7dd1"));
    assert!(!is_agent_uuid("g b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"));
    assert!(!is_agent_uuid(""));
}

#[test]
fn an_endless_file_is_refused_not_read_whole() {
    let path = Path::new("/dev/zero");
    if path.exists() {
        let err = Scenario::load(path).unwrap_err();
        assert!(err.to_string().contains("larger than 64 MiB"), "{err}");
    }
}

const PORTS: &str = r#"
[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
collect_time = "2s"
machine_name = "db-01"
machine_ip = "192.0.2.7"
timeline = []
ports = [
  { at = "60s", open = [ { port = 22, process = "sshd", pid = 812 }, { port = 3306, process = "mysqld", pid = 1400 } ] },
  { at = "0s",  open = [ { port = 22, process = "sshd", pid = 812 } ] },
]
[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = []
"#;

#[test]
fn ports_collect_time_and_machine_parse_and_sort() {
    let s = Scenario::from_toml_str(PORTS).unwrap();
    let a = &s.agents[0];
    assert_eq!(a.collect_time, secs(2));
    assert_eq!(a.machine_name.as_deref(), Some("db-01"));
    assert_eq!(a.machine_ip.as_deref(), Some("192.0.2.7"));
    let ats: Vec<_> = a.ports.iter().map(|e| e.at).collect();
    assert_eq!(ats, vec![secs(0), secs(60)]);
    assert_eq!(
        a.ports[1].open[1],
        OpenPortSpec {
            port: 3306,
            process: "mysqld".into(),
            pid: 1400
        }
    );
    // Defaults.
    let b = &s.agents[1];
    assert_eq!(b.collect_time, DEFAULT_COLLECT_TIME);
    assert_eq!(b.collect_time, secs(5));
    assert!(b.ports.is_empty());
    assert_eq!(
        (b.machine_name.as_ref(), b.machine_ip.as_ref()),
        (None, None)
    );
}

#[test]
fn bad_ports_say_where_and_what_to_write() {
    let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
    let case = |ports: &str| invalid_at(&format!("{head}{ports}\n"));
    let (line, col, msg) =
        case("ports = [{ at = \"0s\", open = [{ port = 65536, process = \"x\", pid = 1 }] }]");
    assert_eq!((line, col), (4, 40));
    assert!(msg.contains("0 to 65535"), "{msg}");
    let (_, _, msg) =
        case("ports = [{ at = \"0s\", open = [{ port = -1, process = \"x\", pid = 1 }] }]");
    assert!(msg.contains("port = -1"), "{msg}");
    let (line, col, msg) =
        case("ports = [{ at = \"0s\", open = [{ port = 1, process = \"x\", pid = -5 }] }]");
    assert_eq!((line, col), (4, 64));
    assert!(msg.contains("pid = -5"), "{msg}");
    let (_, col, msg) = case(
        "ports = [{ at = \"0s\", open = [{ port = 1, process = \"a\\u001b[31mb\", pid = 1 }] }]",
    );
    assert_eq!(col, 53);
    assert!(msg.contains("U+001B"), "{msg}");
    assert!(!msg.contains('\u{1b}'), "{msg}");
    let (_, _, msg) =
        case("ports = [{ at = \"0s\", open = [{ port = 1, process = \" \", pid = 1 }] }]");
    assert!(msg.contains("must not be empty"), "{msg}");
    let long = "p".repeat(MAX_PROCESS_CHARS + 1);
    let (_, _, msg) = case(&format!(
        "ports = [{{ at = \"0s\", open = [{{ port = 1, process = \"{long}\", pid = 1 }}] }}]"
    ));
    assert!(msg.contains("at most 256"), "{msg}");
    let (line, _, msg) = case("ports = [{ at = \"0s\", open = [] },\n { at = \"0s\", open = [] }]");
    assert_eq!(line, 5);
    assert!(msg.contains("line 4"), "{msg}");
    let (_, _, msg) = case("ports = [{ at = \"later\", open = [] }]");
    assert!(msg.contains("\"20s\""), "{msg}");
    let (_, _, msg) = case("ports = [{ at = \"0s\", open = [{ port = 1, pid = 1 }] }]");
    assert!(msg.contains("process"), "{msg}");
    let (_, _, msg) = case(
        "ports = [{ at = \"0s\", open = [{ port = 1, process = \"x\", pid = 1, protocol = \"tcp\" }] }]",
    );
    // `proto` is a key (the `cwp` facts); a near miss is still refused by name.
    assert!(msg.contains("protocol"), "{msg}");
    let (line, col, msg) = case("collect_time = \"2d\"");
    assert_eq!((line, col), (4, 16));
    assert!(msg.contains("longer than a day"), "{msg}");
    let (_, _, msg) = case("machine_ip = \"10.0.0.300\"");
    assert!(msg.contains("not an IP address"), "{msg}");
    let (_, _, msg) = case("machine_name = \"a\\u202eb\"");
    assert!(msg.contains("bidirectional"), "{msg}");
}

#[test]
fn port_lists_are_bounded() {
    use std::fmt::Write;
    let mut open = String::new();
    for i in 0..=MAX_OPEN_PORTS {
        let _ = write!(open, "{{port={},process=\"p\",pid=1}},", i % 65_536);
    }
    let text = format!(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\nports = [{{ at = \"0s\", open = [{open}] }}]\n"
    );
    let (line, _, msg) = invalid_at(&text);
    assert_eq!(line, 4);
    assert!(msg.contains(&format!("at most {MAX_OPEN_PORTS}")), "{msg}");
}

#[test]
fn the_shipped_scenarios_parse_with_their_port_timelines() {
    let example =
        Scenario::from_toml_str(include_str!("../../../../config/scenario-example.toml")).unwrap();
    let inv = example
        .agents
        .iter()
        .find(|a| a.machine_name.as_deref() == Some("inv-01"))
        .unwrap();
    assert_eq!(inv.collect_time, secs(2));
    let sizes: Vec<usize> = inv.ports.iter().map(|e| e.open.len()).collect();
    assert_eq!(sizes, [5, 6]);
    let demo =
        Scenario::from_toml_str(include_str!("../../../../config/demo-scenario.toml")).unwrap();
    let web02 = &demo.agents[1];
    let has_8080: Vec<bool> = web02
        .ports
        .iter()
        .map(|e| e.open.iter().any(|p| p.port == 8080))
        .collect();
    // The demo's port opens, then closes.
    assert_eq!(has_8080, [false, true, false]);
}

#[test]
fn accounts_and_machines_parse_with_defaults() {
    let s = Scenario::from_toml_str(
        r#"
[[credential]]
secret_id = "AKIDsecond"
secret_key = "second-key"
[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = []
machine_type = "BM"
region = "ap-shanghai"
online = false
[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
timeline = []
[[machine]]
machine_name = "legacy-01"
machine_ip = "10.9.9.9"
"#,
    )
    .unwrap();
    assert_eq!(
        s.extra_credentials,
        [ScenarioCredential {
            secret_id: "AKIDsecond".into(),
            secret_key: "second-key".into()
        }]
    );
    assert!(!format!("{s:?}").contains("second-key"));
    let a = &s.agents[0];
    assert_eq!(
        (
            a.placement.machine_type.as_str(),
            a.placement.region.as_str(),
            a.online
        ),
        ("BM", "ap-shanghai", false)
    );
    assert_eq!(s.agents[1].placement, Placement::default());
    assert!(s.agents[1].online);
    assert_eq!(
        s.machines,
        [ScenarioMachine {
            machine_name: "legacy-01".into(),
            machine_ip: "10.9.9.9".into(),
            placement: Placement {
                machine_type: "CVM".into(),
                region: DEFAULT_REGION.into()
            },
        }]
    );
}

#[test]
fn bad_accounts_and_machines_say_where() {
    let (line, col, msg) = invalid_at(
        "[[credential]]\nsecret_id = \"AKIDcwpportwatchSIMULATOR000000000000\"\nsecret_key = \"k\"\n",
    );
    assert_eq!((line, col), (2, 13));
    assert!(msg.contains("already used"), "{msg}");
    let (line, _, msg) = invalid_at("[[credential]]\nsecret_id = \"a b\"\nsecret_key = \"k\"\n");
    assert_eq!(line, 2);
    assert!(msg.contains("without"), "{msg}");
    let (line, _, msg) = invalid_at("[[credential]]\nsecret_id = \"AKIDx\"\nsecret_key = \"\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("must not be empty"), "{msg}");
    let (line, _, msg) = invalid_at("[[credential]]\nsecret_id = \"AKIDx\"\n");
    assert_eq!(line, 1);
    assert!(msg.contains("secret_key"), "{msg}");
    let (line, col, msg) = invalid_at("[[machine]]\nmachine_name = \"m\"\nmachine_type = \"VM\"\n");
    assert_eq!((line, col), (3, 16));
    assert!(msg.contains("\"CVM\" or \"BM\""), "{msg}");
    let (line, _, msg) =
        invalid_at("[[machine]]\nmachine_name = \"m\"\nregion = \"Ap Guangzhou\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("ap-shanghai"), "{msg}");
    let (_, _, msg) = invalid_at("[[machine]]\nmachine_name = \"\"\n");
    assert!(msg.contains("must not be empty"), "{msg}");
    let (line, _, msg) = invalid_at("[[machine]]\nmachine_name = \"m\"\nmachine_ip = \"x\"\n");
    assert_eq!(line, 3);
    assert!(msg.contains("not an IP address"), "{msg}");
    let (_, _, msg) = invalid_at(
        "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\nonline = \"yes\"\n",
    );
    assert!(msg.contains("bool"), "{msg}");
}

#[test]
fn tags_and_wan_ip_parse_and_bad_ones_say_where() {
    let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
    let s = Scenario::from_toml_str(&format!(
        "{head}tags = [\"web\", \"prod\"]\nmachine_wan_ip = \"203.0.113.9\"\n"
    ))
    .unwrap();
    assert_eq!(s.agents[0].tags, ["web", "prod"]);
    assert_eq!(s.agents[0].machine_wan_ip.as_deref(), Some("203.0.113.9"));
    let plain = Scenario::from_toml_str(head).unwrap();
    assert!(plain.agents[0].tags.is_empty() && plain.agents[0].machine_wan_ip.is_none());
    let (line, col, msg) = invalid_at(&format!("{head}tags = [\"ok\", \"\"]\n"));
    assert_eq!((line, col), (4, 15));
    assert!(msg.contains("must not be empty"), "{msg}");
    let (line, col, msg) = invalid_at(&format!("{head}tags = [\"a\\u202eb\"]\n"));
    assert_eq!((line, col), (4, 9));
    assert!(msg.contains("U+202E"), "{msg}");
    let (_, _, msg) = invalid_at(&format!("{head}tags = [\"{}\"]\n", "t".repeat(65)));
    assert!(msg.contains("at most 64"), "{msg}");
    let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("\"t{i}\"")).collect();
    let (line, col, msg) = invalid_at(&format!("{head}tags = [{}]\n", many.join(",")));
    assert_eq!((line, col), (4, 8));
    assert!(msg.contains("at most 16"), "{msg}");
    let (line, col, msg) = invalid_at(&format!("{head}machine_wan_ip = \"x.y\"\n"));
    assert_eq!((line, col), (4, 18));
    assert!(
        msg.contains("machine_wan_ip = \"x.y\" is not an IP address"),
        "{msg}"
    );
}

const CWP: &str = r#"
[[agent]]
uuid = "6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1"
timeline = []
agent_status = [
  { at = "2m", status = "UNINSTALLED" },
  { at = "0s", status = "ONLINE" },
  { at = "1m", status = "OFFLINE" },
]
ports = [
  { at = "1m", open = [
    { port = 22, process = "sshd", pid = 812, first_seen = "-3d" },
    { port = 80, process = "nginx", pid = 900, user = "www-data" },
    { port = 80, process = "nginx", pid = 900, user = "www-data" },
    { port = 5432, process = "postgres", pid = 1377, bind_ip = "0.0.0.0" },
  ] },
  { at = "0s", open = [
    { port = 80, process = "nginx", pid = 900 },
    { port = 5432, process = "postgres", pid = 1377, bind_ip = "127.0.0.1", proto = "tcp" },
    { port = 53, process = "/usr/sbin/dnsmasq", pid = 600, proto = "udp", user = "nobody", process_path = "/opt/dnsmasq" },
  ] },
  { at = "2m", open = [
    { port = 80, process = "nginx", pid = 900 },
  ] },
  { at = "3m", open = [
    { port = 80, process = "nginx", pid = 900 },
    { port = 53, process = "/usr/sbin/dnsmasq", pid = 600, proto = "udp", user = "nobody" },
  ] },
]
[[agent]]
uuid = "00000000-0000-4000-8000-000000000002"
quuid = "machine-two"
online = false
timeline = []
cwp_faults = { from = "30s", port = "http", bind_ip = "localhost", missing = "Quuid", duplicate_rows = true, total_offset = -2, ignore_offset = true, machine_missing_quuid = true }
"#;

#[test]
fn cwp_facts_parse_with_their_defaults() {
    let s = Scenario::from_toml_str(CWP).unwrap();
    let a = &s.agents[0];
    // The default Quuid: every hex digit d as f-d.
    assert_eq!(a.quuid, "949327bc-943e-bfee-58b3-23c02d95822e");
    assert_eq!(a.quuid, default_quuid(&a.uuid));
    assert_eq!(s.agents[1].quuid, "machine-two");
    // agent_status: sorted, the latest at or before a time holds, ONLINE before any entry.
    let status = |t| a.agent_status_at(secs(t));
    assert_eq!(
        (status(0), status(59), status(60), status(500)),
        ("ONLINE", "ONLINE", "OFFLINE", "UNINSTALLED")
    );
    let b = &s.agents[1];
    assert_eq!(b.agent_status_at(secs(0)), "OFFLINE", "online = false");
    assert!(b.agent_status.is_empty());

    // Ports: one fact per open port, in the same order.
    let e0 = &a.ports[0];
    assert_eq!(e0.cwp.len(), e0.open.len());
    let facts = |e: &PortsEntry| -> Vec<(String, String, String, String, i64)> {
        e.cwp
            .iter()
            .map(|c| {
                (
                    c.proto.clone(),
                    c.bind_ip.clone(),
                    c.user.clone(),
                    c.process_path.clone(),
                    c.first_seen,
                )
            })
            .collect()
    };
    let f = |p: &str, b: &str, u: &str, path: &str, first: i64| {
        (
            p.to_owned(),
            b.to_owned(),
            u.to_owned(),
            path.to_owned(),
            first,
        )
    };
    assert_eq!(
        facts(&a.ports[0]),
        [
            f("tcp", "0.0.0.0", "root", "/usr/bin/nginx", 0),
            f("tcp", "127.0.0.1", "root", "/usr/bin/postgres", 0),
            f("udp", "0.0.0.0", "nobody", "/opt/dnsmasq", 0),
        ]
    );
    assert_eq!(
        facts(&a.ports[1]),
        [
            // Explicit, before the start.
            f("tcp", "0.0.0.0", "root", "/usr/bin/sshd", -3 * 86_400),
            // Open since 0 s (its user changed; not its identity).
            f("tcp", "0.0.0.0", "www-data", "/usr/bin/nginx", 0),
            // Listed again: IPv6, new at 1 m.
            f("tcp", "::", "www-data", "/usr/bin/nginx", 60),
            // Now on every address: another port than the loopback one, new at 1 m.
            f("tcp", "0.0.0.0", "root", "/usr/bin/postgres", 60),
        ]
    );
    // dnsmasq closed at 2 m and opened again at 3 m: first seen anew, its path a path already.
    assert_eq!(
        facts(&a.ports[3])[1],
        f("udp", "0.0.0.0", "nobody", "/usr/sbin/dnsmasq", 180)
    );
    assert_eq!(facts(&a.ports[3])[0].4, 0, "nginx never closed");

    // The switch, and when it holds.
    assert!(a.cwp_faults.is_none());
    let lies = b.cwp_faults.as_ref().unwrap();
    assert_eq!(lies.from, secs(30));
    assert_eq!(lies.ports.first_port.as_deref(), Some("http"));
    assert_eq!(lies.ports.first_bind_ip.as_deref(), Some("localhost"));
    assert_eq!(lies.ports.missing_field.as_deref(), Some("Quuid"));
    assert!(lies.ports.duplicate_rows && lies.ports.ignore_offset && lies.machine_missing_quuid);
    assert_eq!(lies.ports.total_offset, -2);
    assert!(b.cwp_faults_at(secs(29)).is_none());
    assert!(b.cwp_faults_at(secs(30)).is_some());
}

#[test]
fn bad_cwp_facts_say_where_and_what_to_write() {
    let head = "[[agent]]\nuuid = \"6b6cd843-6bc1-4011-a74c-dc3fd26a7dd1\"\ntimeline = []\n";
    let case = |rest: &str| invalid_at(&format!("{head}{rest}\n"));
    let port = |extra: &str| {
        case(&format!(
            "ports = [{{ at = \"0s\", open = [{{ port = 1, process = \"x\", pid = 1, {extra} }}] }}]"
        ))
    };
    let (line, col, msg) = port("bind_ip = \"localhost\"");
    assert_eq!((line, col), (4, 77));
    assert!(
        msg.contains("bind_ip = \"localhost\" is not an IP address"),
        "{msg}"
    );
    let (_, _, msg) = port("first_seen = \"yesterday\"");
    assert!(msg.contains("before the simulator's start"), "{msg}");
    let (_, _, msg) = port("first_seen = \"-200y\"");
    assert!(msg.contains("more than 100 years"), "{msg}");
    let (_, _, msg) = port("proto = \"\"");
    assert!(msg.contains("proto must not be empty"), "{msg}");
    let (_, _, msg) = port("user = \"a\\u001b[31m\"");
    assert!(msg.contains("U+001B"), "{msg}");
    let (_, _, msg) = port(&format!(
        "process_path = \"/{}\"",
        "p".repeat(MAX_PATH_CHARS)
    ));
    assert!(msg.contains("at most 1024"), "{msg}");
    let (line, _, msg) = case(
        "agent_status = [{ at = \"0s\", status = \"ONLINE\" },\n { at = \"0s\", status = \"OFFLINE\" }]",
    );
    assert_eq!(line, 5);
    assert!(msg.contains("line 4"), "{msg}");
    let (_, _, msg) = case("agent_status = [{ at = \"0s\", status = \"on line\" }]");
    assert!(msg.contains("not a status word"), "{msg}");
    let (_, _, msg) = case("agent_status = [{ at = \"0s\" }]");
    assert!(msg.contains("status"), "{msg}");
    let (_, _, msg) = case("quuid = \"\"");
    assert!(msg.contains("quuid must not be empty"), "{msg}");
    let (_, _, msg) = case("cwp_faults = { port = \"x\", lie = true }");
    assert!(msg.contains("lie"), "{msg}");
    let (_, _, msg) = case("cwp_faults = { from = \"soon\" }");
    assert!(msg.contains("from = \"soon\""), "{msg}");
    // Two agents with one Quuid (an explicit one equal to another's default).
    let (line, _, msg) = invalid_at(&format!(
        "{head}[[agent]]\nuuid = \"00000000-0000-4000-8000-000000000002\"\ntimeline = []\nquuid = \"949327bc-943e-bfee-58b3-23c02d95822e\"\n"
    ));
    assert_eq!(line, 5);
    assert!(
        msg.contains("already the Quuid of the agent on line 2"),
        "{msg}"
    );
}

#[test]
fn the_shipped_example_has_cwp_facts() {
    let example =
        Scenario::from_toml_str(include_str!("../../../../config/scenario-example.toml")).unwrap();
    let inv = example
        .agents
        .iter()
        .find(|a| a.machine_name.as_deref() == Some("inv-01"))
        .unwrap();
    assert_eq!(inv.quuid, "9f3e2a10-7c4d-4e5f-8a6b-1c2d3e4f5a6b");
    let postgres = |e: &PortsEntry| {
        let i = e.open.iter().position(|p| p.port == 5432).unwrap();
        (e.cwp[i].bind_ip.clone(), e.cwp[i].first_seen)
    };
    // Loopback only, and the same port at 1 m as at 0 s (not a new one).
    assert_eq!(postgres(&inv.ports[0]), ("127.0.0.1".to_owned(), 0));
    assert_eq!(postgres(&inv.ports[1]), ("127.0.0.1".to_owned(), 0));
    let web = &example.agents[0];
    assert_eq!(web.agent_status_at(secs(50)), "OFFLINE");
    assert_eq!(web.agent_status_at(secs(130)), "ONLINE");
}
