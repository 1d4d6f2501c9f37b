use proptest::prelude::*;

use super::*;

fn port(port: u16, process: &str, pid: u32) -> Port {
    Port {
        port,
        process: process.into(),
        pid,
        cwp: None,
    }
}

fn page(total: u64, rows: Vec<Port>) -> Page {
    Page {
        total,
        rows,
        ids: Vec::new(),
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

/// The events of `new` against `last` (with nothing awaiting confirmation).
fn events(
    who: Who<'_>,
    last: Option<&Snapshot>,
    new: &Snapshot,
    baseline: Baseline,
    request_id: &str,
) -> Vec<Event> {
    reconcile(
        who,
        last.map(|s| (s, &[][..])),
        new.clone(),
        baseline,
        request_id,
    )
    .events
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
    // Later: only opens at once, none marked baseline; the close of 3306 awaits confirmation.
    let later = Snapshot::from_rows(
        vec![port(22, "sshd", 7), port(443, "nginx", 3)],
        "ip".into(),
        "m".into(),
    );
    let e = events(who, Some(&s), &later, Baseline::Ports, "r2");
    assert!(
        matches!(
            &e[..],
            [Event::PortOpened {
                port: 443,
                baseline: false,
                ..
            }]
        ),
        "{e:?}"
    );
    assert!(events(who, Some(&later), &later, Baseline::Summary, "r3").is_empty());
}

#[test]
fn a_close_is_reported_only_when_a_second_complete_snapshot_lacks_it_too() {
    let who = Who {
        uuid: "u",
        name: "db-01",
    };
    let first = Snapshot::from_rows(
        vec![port(22, "sshd", 1), port(3306, "mysqld", 2)],
        "ip".into(),
        "m".into(),
    );
    // 3306 missing, 443 new: 443 reported, 3306 held (stored as still open, its pid kept).
    let second = Snapshot::from_rows(
        vec![port(22, "sshd", 9), port(443, "nginx", 3)],
        "ip".into(),
        "m".into(),
    );
    let r = reconcile(
        who,
        Some((&first, &[])),
        second.clone(),
        Baseline::Summary,
        "r2",
    );
    assert!(
        matches!(&r.events[..], [Event::PortOpened { port: 443, .. }]),
        "{:?}",
        r.events
    );
    let keys = |s: &Snapshot| s.ports.iter().map(|p| (p.port, p.pid)).collect::<Vec<_>>();
    assert_eq!(keys(&r.stored), [(22, 9), (443, 3), (3306, 2)]);
    assert_eq!(r.unconfirmed, [port(3306, "mysqld", 0).owned_key()]);
    // The confirming snapshot lacks it too: now it is closed, with the pid it had.
    let r2 = reconcile(
        who,
        Some((&r.stored, &r.unconfirmed)),
        second.clone(),
        Baseline::Summary,
        "r3",
    );
    assert!(
        matches!(
            &r2.events[..],
            [Event::PortClosed { port: 3306, pid: 2, request_id, .. }] if request_id == "r3"
        ),
        "{:?}",
        r2.events
    );
    assert_eq!(r2.stored, second);
    assert!(r2.unconfirmed.is_empty());
    // Or it is back in the confirming snapshot: never reported closed.
    let back = Snapshot::from_rows(
        vec![
            port(22, "sshd", 9),
            port(443, "nginx", 3),
            port(3306, "mysqld", 2),
        ],
        "ip".into(),
        "m".into(),
    );
    let r3 = reconcile(
        who,
        Some((&r.stored, &r.unconfirmed)),
        back.clone(),
        Baseline::Summary,
        "r3",
    );
    assert!(r3.events.is_empty(), "{:?}", r3.events);
    assert_eq!((r3.stored, r3.unconfirmed), (back, vec![]));
}

#[test]
fn a_transient_empty_listing_reports_nothing_and_forgets_nothing() {
    let who = Who {
        uuid: "u",
        name: "",
    };
    let all = Snapshot::from_rows(rows(150, 1), String::new(), String::new());
    let empty = Snapshot::default();
    let r = reconcile(who, Some((&all, &[])), empty, Baseline::Ports, "r0");
    assert!(r.events.is_empty(), "{:?}", r.events);
    assert_eq!(r.stored.ports, all.ports, "still reported open");
    assert_eq!(r.unconfirmed.len(), 150);
    let again = reconcile(
        who,
        Some((&r.stored, &r.unconfirmed)),
        all.clone(),
        Baseline::Ports,
        "r1",
    );
    assert!(again.events.is_empty() && again.unconfirmed.is_empty());
}

/// A page of `rows` with one `Id` per row.
fn page_with_ids(total: u64, rows: Vec<Port>, ids: Vec<i64>) -> Page {
    Page {
        ids: ids.into_iter().map(Some).collect(),
        ..page(total, rows)
    }
}

#[test]
fn a_server_that_ignores_offset_is_never_complete() {
    // TotalCount 200, and the same 100 rows for every offset: the count reaches 200 with 100
    // distinct rows. Each try is caught at its second page; after three, inventory_failed.
    let same = || page_with_ids(200, rows(100, 0), (1..=100).collect());
    let mut a = Assembly::new();
    for try_no in 1..=FETCH_TRIES {
        assert_eq!(a.page(same()), Step::Next(100), "try {try_no}");
        let step = a.page(same());
        if try_no < FETCH_TRIES {
            assert_eq!(step, Step::Next(0));
        } else {
            let Step::Failed(e) = step else {
                panic!("{step:?}")
            };
            assert_eq!(e.code(), "InventoryError.Incomplete");
            assert!(e.to_string().contains("listed before"), "{e}");
        }
    }
    // Without `Id`s the rows' contents tell the repeat.
    let mut a = Assembly::new();
    assert_eq!(a.page(page(200, rows(100, 0))), Step::Next(100));
    assert_eq!(a.page(page(200, rows(100, 0))), Step::Next(0));
}

#[test]
fn a_list_that_shifts_into_an_overlap_while_paged_is_fetched_again() {
    // 150 ports; between the pages one port sorting before the boundary replaces one after
    // it: the second page begins with the last row of the first. TotalCount stays 150, and
    // 150 rows arrive, but one twice.
    let before: Vec<Port> = rows(150, 100);
    let mut after = before.clone();
    after.remove(120);
    after.insert(10, port(1, "new", 1));
    let mut a = Assembly::new();
    assert_eq!(a.page(page(150, before[..100].to_vec())), Step::Next(100));
    assert_eq!(after[100], before[99]);
    assert_eq!(a.page(page(150, after[100..].to_vec())), Step::Next(0));
    assert_eq!(a.tries(), 2);
}

#[test]
fn two_rows_of_one_port_identity_are_two_rows_not_a_repeat() {
    // sshd on IPv4 and IPv6: the same Port, ProcessName and Pid on two rows, told apart by
    // their `Id`. Complete, as one port.
    let mut a = Assembly::new();
    let step = a.page(page_with_ids(
        2,
        vec![port(22, "sshd", 812), port(22, "sshd", 812)],
        vec![7, 8],
    ));
    let Step::Complete(s, _) = step else {
        panic!("{step:?}")
    };
    assert_eq!(s.ports, [port(22, "sshd", 812)]);
    // nginx's master and worker on one socket: two pids, one port.
    let mut a = Assembly::new();
    let step = a.page(page(2, vec![port(80, "nginx", 1), port(80, "nginx", 2)]));
    assert!(
        matches!(&step, Step::Complete(s, _) if s.ports.len() == 1),
        "{step:?}"
    );
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
