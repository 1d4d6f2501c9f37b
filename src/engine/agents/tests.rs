use tokio::time::Instant;

use super::progress::TRANSITIONS;
use super::*;

fn u(i: u128) -> AgentUuid {
    AgentUuid::from_value(i)
}

fn known(status: Status) -> Known {
    Known {
        status,
        request_id: "r".into(),
        seen_at: 1,
    }
}

#[test]
fn freed_ids_are_reused_and_orphans_keep_theirs_until_the_answer() {
    let mut t = AgentTable::with_capacity(64);
    // Sized for the watchlist at once: no growth while 100,000 agents are put in.
    assert!(t.slots.capacity() >= 64 && t.by_uuid.capacity() >= 64);
    let a = t.insert(u(1), "");
    let b = t.insert(u(2), "web");
    assert_eq!((a, b), (0, 1));
    assert!(t.contains(&u(1)) && t.contains(&u(2)) && !t.contains(&u(3)));
    assert_eq!((t.id_of(&u(2)), t.id_of(&u(3))), (Some(1), None));
    assert_eq!(t.remove(&u(1), false), Some(0));
    assert_eq!(t.insert(u(3), ""), 0, "a's id reused");
    // b removed while in flight: an orphan, not watched, not reported, id kept.
    assert_eq!(t.remove(&u(2), true), Some(1));
    assert!(!t.contains(&u(2)));
    assert_eq!(t.len(), 1);
    assert_eq!(t.records().count(), 1);
    assert_eq!(t.insert(u(4), ""), 2, "an orphan's id is not free");
    // Back before its answer: same id, new name.
    assert_eq!(t.readopt(&u(2), "web-2"), Some(1));
    assert_eq!(t.name(1), "web-2");
    assert!(!t.release_orphan(1), "watched again: the answer is its own");
    // Gone again; the answer frees the id.
    t.remove(&u(2), true);
    assert!(t.release_orphan(1));
    assert!(t.get(1).is_none());
    assert_eq!(t.insert(u(5), ""), 1);
}

#[test]
fn known_statuses_live_in_the_records_and_unwatched_ones_wait() {
    let mut t = AgentTable::default();
    let a = t.insert(u(1), "");
    assert_eq!(t.get(a).unwrap().status(), &Status::Unknown);
    // A watched agent takes a seeded status when it has none, and keeps its own.
    t.seed(u(1), known(Status::Collecting));
    t.seed(u(1), known(Status::Failed));
    assert_eq!(t.get(a).unwrap().status(), &Status::Collecting);
    // An unwatched one is kept, saved, and taken over when the agent is added.
    t.seed(u(9), known(Status::Complete));
    assert_eq!(t.known().count(), 2);
    assert!(t.known_of(&u(9)).is_none(), "not watched");
    let b = t.insert(u(9), "");
    assert_eq!(t.get(b).unwrap().status(), &Status::Complete);
    assert_eq!(t.known().count(), 2);
    // Removal forgets, in flight or not.
    t.remove(&u(1), true);
    assert_eq!(t.known().map(|(u, _)| u).collect::<Vec<_>>(), [u(9)]);
    assert_eq!(t.readopt(&u(1), ""), Some(a));
    assert_eq!(t.get(a).unwrap().status(), &Status::Unknown);
    // Only unwatched statuses can be forgotten that way.
    t.seed(u(7), known(Status::Failed));
    assert!(!t.forget_unwatched(&u(9)));
    assert!(t.forget_unwatched(&u(7)));
    assert!(!t.forget_unwatched(&u(7)));
    // seed_watched gives back what it cannot place.
    assert!(t.seed_watched(u(8), known(Status::Failed)).is_some());
    assert!(t.seed_watched(u(1), known(Status::Failed)).is_none());
    assert_eq!(
        t.known_of(&u(9)).map(|k| &k.status),
        Some(&Status::Complete)
    );
    assert_eq!(t.known_of(&u(1)).map(|k| &k.status), Some(&Status::Failed));
    assert_eq!(t.known_of(&u(8)), None, "not watched");
    let mut copy = t.known_copy();
    copy.sort_by_key(|(u, _)| *u);
    let mut known: Vec<(AgentUuid, Known)> = t.known().map(|(u, k)| (u, k.clone())).collect();
    known.sort_by_key(|(u, _)| *u);
    assert_eq!(copy, known);
    assert_eq!(copy.len(), 2, "agent 9, and agent 1's seed_watched status");
    t.forget_all_known();
    assert_eq!(t.known().count(), 0);
}

#[test]
fn progress_round_trips_and_boxes_only_what_failing_agents_use() {
    let ok = Progress {
        failures: 0,
        transitions: 3,
        polled_once: true,
        ..Progress::default()
    };
    let stored = StoredProgress::from(ok.clone());
    assert!(stored.rare.is_none());
    assert_eq!(Progress::from(stored), ok);
    let failing = Progress {
        failures: 2,
        last_error: Some("InternalError: m".into()),
        request_id: Some("r".into()),
        last_failed_event: Some(Instant::now()),
        ..ok
    };
    // Any one of the rare fields is kept.
    for one in [
        Progress {
            last_error: Some("e".into()),
            ..Progress::default()
        },
        Progress {
            request_id: Some("r".into()),
            ..Progress::default()
        },
        Progress {
            last_failed_event: Some(Instant::now()),
            ..Progress::default()
        },
    ] {
        assert_eq!(Progress::from(StoredProgress::from(one.clone())), one);
    }
    let stored = StoredProgress::from(failing.clone());
    assert_eq!(stored.last_error(), Some("InternalError: m"));
    assert_eq!(stored.request_id(), Some("r"));
    assert_eq!(
        (
            stored.transitions(),
            stored.polled_once(),
            stored.done_once()
        ),
        (3, true, false)
    );
    assert_eq!(Progress::from(stored), failing);
    assert_eq!(std::mem::size_of::<StoredProgress>(), 16);
    // Flags and a huge count do not bleed into each other.
    let many = Progress {
        transitions: u32::MAX,
        done_once: true,
        ..Progress::default()
    };
    let stored = StoredProgress::from(many);
    assert!(stored.done_once() && !stored.polled_once());
    let back = Progress::from(stored);
    assert_eq!(
        (back.transitions, back.polled_once, back.done_once),
        (TRANSITIONS, false, true)
    );
    assert!(
        std::mem::size_of::<AgentRecord>() <= 88,
        "{}",
        std::mem::size_of::<AgentRecord>()
    );
}

fn facts(tags: &[&str], region: Option<&str>, wan: bool) -> Option<Arc<Facts>> {
    Facts::new(tags.iter().copied(), region.map(Into::into), wan).shared()
}

/// What the policy sees of an agent: its Uuid's text, name, account and facts; facts in a
/// side map shared from a pool, updated and dropped with the agent.
#[test]
fn hosts_carry_name_uuid_account_and_facts_shared_and_released() {
    let mut t = AgentTable::default();
    let a = t.insert(u(1), "web-01");
    let b = t.insert(u(2), "");
    let c = t.insert(u(3), "web-03");
    let seen = |t: &AgentTable, id| {
        t.with_host(id, "prod", |h| {
            let tags: Vec<String> = h.tags.iter().map(|t| t.to_string()).collect();
            (
                h.uuid.to_owned(),
                h.name.to_owned(),
                h.account.to_owned(),
                tags,
                h.region.to_owned(),
                h.wan,
            )
        })
    };
    assert_eq!(
        seen(&t, a).unwrap(),
        (
            "00000000-0000-0000-0000-000000000001".to_owned(),
            "web-01".to_owned(),
            "prod".to_owned(),
            vec![],
            String::new(),
            false
        )
    );
    assert_eq!(seen(&t, b).unwrap().1, "", "no name");
    assert_eq!(seen(&t, 99), None);

    // Two agents with equal facts (separate allocations) share the table's one copy.
    t.set_facts(
        a,
        facts(&["web", "prod"], Some("ap-guangzhou"), true).as_ref(),
    );
    t.set_facts(
        c,
        facts(&["prod", "web"], Some("ap-guangzhou"), true).as_ref(),
    );
    let (_, _, _, tags, region, wan) = seen(&t, a).unwrap();
    assert_eq!(
        (tags, region.as_str(), wan),
        (
            vec!["prod".to_owned(), "web".to_owned()],
            "ap-guangzhou",
            true
        )
    );
    assert_eq!(t.facts_pool.len(), 1);
    assert!(Arc::ptr_eq(&t.facts[&0], &t.facts[&2]));
    assert!(t.facts(b).is_none() && t.facts.len() == 2);

    // New facts replace the old; the old set leaves the pool with its last agent.
    t.set_facts(a, facts(&["db"], None, false).as_ref());
    assert_eq!(seen(&t, a).unwrap().3, ["db"]);
    assert_eq!(t.facts_pool.len(), 2);
    t.set_facts(c, None);
    assert_eq!(seen(&t, c).unwrap().3, Vec::<String>::new());
    assert_eq!(t.facts_pool.len(), 1, "web/prod is no one's any more");
    // Empty facts are none.
    t.set_facts(b, Some(&Arc::new(Facts::default())));
    assert!(t.facts(b).is_none());

    // An orphan keeps its facts until its slot is freed; a reused id starts without.
    t.remove(&u(1), true);
    assert_eq!(seen(&t, a).unwrap().3, ["db"]);
    assert!(t.release_orphan(a));
    assert!(t.facts.is_empty() && t.facts_pool.is_empty());
    let d = t.insert(u(4), "new");
    assert_eq!(d, a, "the freed id");
    assert_eq!(seen(&t, d).unwrap().3, Vec::<String>::new());
    // A removed agent (not in flight) drops them at once; set_facts on no record is a no-op.
    t.set_facts(d, facts(&["x"], None, false).as_ref());
    t.remove(&u(4), false);
    assert!(t.facts.is_empty() && t.facts_pool.is_empty());
    t.set_facts(d, facts(&["x"], None, false).as_ref());
    assert!(t.facts.is_empty());
    // The record itself did not grow.
    assert!(std::mem::size_of::<AgentRecord>() <= 88);
}

#[test]
fn names_live_in_one_buffer_rebuilt_when_mostly_unused() {
    let mut t = AgentTable::default();
    let long = "n".repeat(200);
    let ids: Vec<AgentId> = (0..100)
        .map(|i| t.insert(u(i), &format!("{long}{i}")))
        .collect();
    let empty = t.insert(u(1000), "");
    assert_eq!(t.name(empty), "");
    assert_eq!(t.name(ids[7]), format!("{long}7"));
    let full = t.names.len();
    // Renaming to the same name keeps the bytes; a new name appends.
    t.rename(ids[7], &format!("{long}7"));
    assert_eq!(t.names.len(), full);
    t.rename(ids[7], "web");
    assert_eq!(t.name(ids[7]), "web");
    // Removing agents leaves their bytes until they are more than half of the buffer
    // (and more than 4 KiB); then the buffer is rebuilt with the live names only.
    let mut i = 99;
    while t.names_unused + 203 <= t.names.len() / 2 {
        t.remove(&u(i), false);
        i -= 1;
    }
    let before = t.names.len();
    assert_eq!(before, full + 3, "nothing rebuilt at half or less");
    t.remove(&u(i), false);
    assert!(t.names.len() < before / 2, "{} of {before}", t.names.len());
    assert_eq!(t.names_unused, 0);
    for i in 10..i {
        t.remove(&u(i), false);
    }
    assert!(t.names.len() < full / 2, "{} of {full}", t.names.len());
    // A small buffer is never rebuilt: 4 KiB unused is not worth a pass.
    let mut small = AgentTable::default();
    let a = small.insert(u(1), "a");
    small.insert(u(2), "b");
    small.rename(a, "c");
    small.rename(a, "d");
    assert_eq!((small.names.as_str(), small.names_unused), ("abcd", 2));
    for (i, &id) in ids.iter().enumerate().take(10) {
        let want = if i == 7 {
            "web".to_string()
        } else {
            format!("{long}{i}")
        };
        assert_eq!(t.name(id), want);
    }
    // An orphan keeps its name until readopted under a new one.
    t.remove(&u(3), true);
    assert_eq!(t.name(ids[3]), format!("{long}3"));
    t.readopt(&u(3), "back");
    assert_eq!(t.name(ids[3]), "back");
    let named: Vec<&str> = t.named_records().map(|(_, n)| n).take(2).collect();
    assert_eq!(named[0], format!("{long}0"));
}
