use proptest::prelude::*;

use super::*;

fn port(port: u16, process: &str, pid: u32) -> Port {
    Port {
        port,
        process: process.into(),
        pid,
    }
}

fn page(total: u64, rows: Vec<Port>) -> Page {
    Page {
        total,
        rows,
        machine_ip: "10.0.0.1".into(),
        machine_name: "db-01".into(),
        request_id: format!("r{total}"),
    }
}

fn rows(n: usize, from: u16) -> Vec<Port> {
    (0..n).map(|i| port(from + i as u16, "p", 1)).collect()
}

#[test]
fn pages_assemble_into_a_complete_snapshot() {
    let mut a = Assembly::new();
    assert_eq!(a.offset(), 0);
    assert_eq!(a.page(page(250, rows(100, 0))), Step::Next(100));
    assert_eq!(a.page(page(250, rows(100, 100))), Step::Next(200));
    let Step::Complete(s, rid) = a.page(page(250, rows(50, 200))) else {
        panic!("not complete")
    };
    assert_eq!((s.ports.len(), rid.as_str()), (250, "r250"));
    assert_eq!(s.machine_name, "db-01");
    // An empty inventory is complete at once.
    let mut a = Assembly::new();
    assert!(matches!(a.page(page(0, vec![])), Step::Complete(s, _) if s.ports.is_empty()));
}

#[test]
fn a_total_that_changes_or_lies_restarts_and_fails_after_three_tries() {
    let mut a = Assembly::new();
    assert_eq!(a.page(page(150, rows(100, 0))), Step::Next(100));
    // The listing grew while paged: start over.
    assert_eq!(a.page(page(151, rows(51, 100))), Step::Next(0));
    assert_eq!(a.tries(), 2);
    // TotalCount lies: a short page before the end.
    assert_eq!(a.page(page(300, rows(100, 0))), Step::Next(100));
    assert_eq!(a.page(page(300, rows(10, 100))), Step::Next(0));
    assert_eq!(a.tries(), 3);
    // More rows than TotalCount on the third try: given up.
    match a.page(page(5, rows(6, 0))) {
        Step::Failed(e) => {
            assert_eq!(e.code(), "InventoryError.Incomplete");
            assert!(e.to_string().contains("3 tries"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn errors_retry_the_same_page_then_fail_with_their_code() {
    let mut a = Assembly::new();
    assert_eq!(a.page(page(150, rows(100, 0))), Step::Next(100));
    assert_eq!(a.failed("InternalError", "x"), Step::Next(100));
    assert_eq!(a.failed("ClientError.Decode", "y"), Step::Next(100));
    let Step::Failed(e) = a.failed("ClientError.Decode", "Port is -1") else {
        panic!()
    };
    assert_eq!(e.code(), "ClientError.Decode");
}

#[test]
fn an_absurd_total_is_refused_before_paging() {
    let mut a = Assembly::new();
    let Step::Failed(e) = a.page(page(MAX_PORTS_PER_AGENT + 1, rows(100, 0))) else {
        panic!()
    };
    assert_eq!(e.code(), "InventoryError.TooMany");
}

#[test]
fn identity_is_port_and_process_a_new_pid_is_no_event() {
    let old = Snapshot::from_rows(
        vec![port(22, "sshd", 1), port(80, "nginx", 2)],
        "".into(),
        "".into(),
    );
    let new = Snapshot::from_rows(
        vec![
            port(22, "sshd", 99),
            port(80, "httpd", 3),
            port(3306, "mysqld", 4),
        ],
        "".into(),
        "".into(),
    );
    let d = diff(&old, &new);
    let keys = |v: &[&Port]| {
        v.iter()
            .map(|p| (p.port, p.process.to_string()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        keys(&d.opened),
        vec![(80, "httpd".into()), (3306, "mysqld".into())]
    );
    assert_eq!(keys(&d.closed), vec![(80, "nginx".into())]);
}

#[test]
fn baseline_is_a_summary_or_one_marked_event_per_port() {
    let who = Who {
        uuid: "u",
        name: "db-01",
    };
    let s = Snapshot::from_rows(
        vec![port(22, "sshd", 1), port(3306, "mysqld", 2)],
        "ip".into(),
        "m".into(),
    );
    let e = events(who, None, &s, Baseline::Summary, "r1");
    assert_eq!(e.len(), 1);
    assert!(
        matches!(&e[0], Event::InventoryBaseline { ports: 2, request_id, .. } if request_id == "r1")
    );
    let e = events(who, None, &s, Baseline::Ports, "r1");
    assert_eq!(e.len(), 2);
    assert!(
        e.iter()
            .all(|e| matches!(e, Event::PortOpened { baseline: true, .. }))
    );
    // Later: only differences, closed first, none marked baseline.
    let later = Snapshot::from_rows(
        vec![port(22, "sshd", 7), port(443, "nginx", 3)],
        "ip".into(),
        "m".into(),
    );
    let e = events(who, Some(&s), &later, Baseline::Ports, "r2");
    assert!(
        matches!(&e[0], Event::PortClosed { port: 3306, .. }),
        "{e:?}"
    );
    assert!(
        matches!(
            &e[1],
            Event::PortOpened {
                port: 443,
                baseline: false,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.len(), 2);
    assert!(events(who, Some(&later), &later, Baseline::Summary, "r3").is_empty());
}

fn arb_snapshot() -> impl Strategy<Value = Snapshot> {
    proptest::collection::vec((0u16..40, prop_oneof!["a", "b", "c"], 0u32..5), 0..30).prop_map(
        |v| {
            Snapshot::from_rows(
                v.into_iter().map(|(p, n, pid)| port(p, &n, pid)).collect(),
                String::new(),
                String::new(),
            )
        },
    )
}

proptest! {
    /// Applying the diff to the old identities gives the new ones exactly; nothing is both
    /// opened and closed; identical identities give no events.
    #[test]
    fn the_diff_transforms_old_into_new(old in arb_snapshot(), new in arb_snapshot()) {
        let d = diff(&old, &new);
        let mut ids: BTreeSet<(u16, String)> =
            old.ports.iter().map(|p| (p.port, p.process.to_string())).collect();
        for p in &d.closed {
            prop_assert!(ids.remove(&(p.port, p.process.to_string())));
        }
        for p in &d.opened {
            prop_assert!(ids.insert((p.port, p.process.to_string())));
        }
        let want: BTreeSet<(u16, String)> =
            new.ports.iter().map(|p| (p.port, p.process.to_string())).collect();
        prop_assert_eq!(ids, want);
        prop_assert!(diff(&new, &new).opened.is_empty() && diff(&new, &new).closed.is_empty());
    }

    /// Any listing paged at [`PAGE_LIMIT`] with a steady TotalCount assembles into exactly
    /// its rows.
    #[test]
    fn a_steady_listing_always_completes(n in 0usize..450) {
        let all = rows(n, 0);
        let mut a = Assembly::new();
        let mut step = Step::Next(0);
        for _ in 0..10 {
            let Step::Next(offset) = step else { break };
            let at = offset as usize;
            let chunk = all[at..(at + PAGE_LIMIT as usize).min(n)].to_vec();
            step = a.page(page(n as u64, chunk));
        }
        let Step::Complete(s, _) = step else { panic!("{step:?}") };
        prop_assert_eq!(s.ports, all);
    }
}
