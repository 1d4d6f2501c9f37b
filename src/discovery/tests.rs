//! Discovery passes and the refresh loop against a scripted page source, under paused time.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::refresh::{FIRST_RETRY, retry_delay, run};
use super::*;
use crate::agent_uuid::AgentUuid;
use crate::api::machines::MachineRow;
use crate::events::{CollectingSink, Event};

fn row(i: u64) -> MachineRow {
    MachineRow {
        uuid: Some(AgentUuid::parse(&format!("00000000-0000-4000-8000-{i:012x}")).unwrap()),
        name: Some(format!("m{i}")),
        quuid: None,
        facts: Default::default(),
    }
}

/// Answers from a script, recording every query and when it came.
#[derive(Clone, Default)]
struct Script {
    answers: Arc<Mutex<VecDeque<Result<MachinesPage, ApiError>>>>,
    asked: Arc<Mutex<Vec<(MachinesQuery, Instant)>>>,
}

impl Script {
    fn push(&self, answer: Result<MachinesPage, ApiError>) {
        self.answers.lock().unwrap().push_back(answer);
    }
    fn page(&self, total: u64, rows: std::ops::Range<u64>) {
        self.push(Ok(MachinesPage {
            total,
            rows: rows.map(row).collect(),
        }));
    }
    fn asked(&self) -> Vec<(MachinesQuery, Instant)> {
        self.asked.lock().unwrap().clone()
    }
}

impl MachineSource for Script {
    fn page(
        &self,
        query: &MachinesQuery,
    ) -> impl Future<Output = Result<MachinesPage, ApiError>> + Send {
        self.asked
            .lock()
            .unwrap()
            .push((query.clone(), Instant::now()));
        let next = self.answers.lock().unwrap().pop_front();
        async move { next.unwrap_or_else(|| Err(ApiError::Transport("script ended".into()))) }
    }
}

fn settings(types: &[MachineType], regions: &[&str]) -> DiscoverySettings {
    DiscoverySettings {
        enabled: true,
        machine_types: types.to_vec(),
        regions: regions.iter().map(|r| r.to_string()).collect(),
        agent_status: AgentStatusFilter::Online,
        keywords: Some("web".into()),
        refresh: Duration::from_secs(600),
        ..DiscoverySettings::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_pass_pages_every_type_and_region_at_the_rate() {
    let script = Script::default();
    script.page(150, 0..100);
    script.page(150, 100..150);
    script.page(1, 500..501);
    let mut d = Discovery::new(
        script.clone(),
        settings(&[MachineType::Cvm, MachineType::Bm], &["ap-guangzhou"]),
        20,
    );
    let found = d.discover().await.unwrap();
    assert_eq!(found.agents.len(), 151);
    let asked = script.asked();
    let shape: Vec<_> = asked
        .iter()
        .map(|(q, _)| (q.machine_type, q.region.as_str(), q.offset, q.limit))
        .collect();
    assert_eq!(
        shape,
        [
            ("CVM", "ap-guangzhou", 0, 100),
            ("CVM", "ap-guangzhou", 100, 100),
            ("BM", "ap-guangzhou", 0, 100)
        ]
    );
    assert!(
        asked
            .iter()
            .all(|(q, _)| q.status == Some("ONLINE") && q.keywords.as_deref() == Some("web"))
    );
    // Its own strict limiter: no two requests closer than 1/20 s.
    for pair in asked.windows(2) {
        assert!(
            pair[1].1 - pair[0].1 >= Duration::from_millis(50),
            "{pair:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_list_that_changes_while_paged_is_listed_again_then_given_up() {
    let script = Script::default();
    script.page(150, 0..100);
    script.page(149, 100..149); // changed: start again
    script.page(149, 0..100);
    script.page(149, 100..149);
    let mut d = Discovery::new(script.clone(), settings(&[MachineType::Cvm], &["r"]), 20);
    assert_eq!(d.discover().await.unwrap().agents.len(), 149);

    for _ in 0..MAX_TRIES {
        script.page(150, 0..100);
        script.page(151, 100..151);
    }
    let e = d.discover().await.unwrap_err();
    assert_eq!(e.code(), "Discovery.Incomplete");
}

#[tokio::test(start_paused = true)]
async fn a_failed_call_fails_the_pass_with_the_api_code() {
    let script = Script::default();
    script.push(Err(ApiError::Api {
        code: "RequestLimitExceeded".into(),
        message: "slow down".into(),
        request_id: None,
    }));
    let mut d = Discovery::new(script, settings(&[MachineType::Cvm], &["r"]), 20);
    let e = d.discover().await.unwrap_err();
    assert_eq!(e.code(), "RequestLimitExceeded");
    assert!(e.to_string().contains("DescribeMachines CVM in r"), "{e}");
}

#[test]
fn retry_delays_double_and_stay_within_refresh() {
    let refresh = Duration::from_secs(60);
    assert_eq!(retry_delay(1, refresh), FIRST_RETRY);
    assert_eq!(retry_delay(2, refresh), FIRST_RETRY * 2);
    assert_eq!(retry_delay(4, refresh), FIRST_RETRY * 8);
    assert_eq!(retry_delay(5, refresh), refresh);
    assert_eq!(retry_delay(u32::MAX, refresh), refresh);
    assert_eq!(
        retry_delay(1, Duration::from_secs(1)),
        Duration::from_secs(1)
    );
}

#[tokio::test(start_paused = true)]
async fn the_loop_keeps_the_last_list_on_failure_and_retries_with_backoff() {
    let script = Script::default();
    script.page(2, 0..2);
    script.push(Err(ApiError::Transport("reset".into())));
    script.push(Err(ApiError::Transport("reset".into())));
    script.page(1, 0..1);
    let sink = Arc::new(CollectingSink::default());
    let (tx, mut rx) = watch::channel(None);
    let cancel = CancellationToken::new();
    let start = Instant::now();
    let task = tokio::spawn(run(
        Discovery::new(script.clone(), settings(&[MachineType::Cvm], &["r"]), 20),
        tx,
        sink.clone(),
        cancel.clone(),
    ));
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().agents.len(), 2);
    // Two failures, then the next good pass: the last list stayed until then.
    rx.changed().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().agents.len(), 1);
    let times: Vec<Duration> = script.asked().iter().map(|(_, t)| *t - start).collect();
    assert_eq!(times.len(), 4);
    let refresh = Duration::from_secs(600);
    assert!(times[1] >= refresh, "{times:?}");
    assert!(times[2] - times[1] >= FIRST_RETRY, "{times:?}");
    assert!(times[3] - times[2] >= FIRST_RETRY * 2, "{times:?}");
    assert!(times[3] - times[2] < FIRST_RETRY * 3, "{times:?}");
    let failed: Vec<Event> = sink
        .events()
        .into_iter()
        .filter(|e| e.name() == "discovery_failed")
        .collect();
    assert_eq!(failed.len(), 2);
    assert!(
        matches!(&failed[0], Event::DiscoveryFailed { error_code, retry_in_seconds: 5, .. }
        if error_code == "ClientError.Transport")
    );
    cancel.cancel();
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_server_that_ignores_offset_never_gives_a_complete_pass() {
    // TotalCount 200, the same 100 rows at every offset: 200 rows of 100 machines. Each try
    // is caught at its second page; after MAX_TRIES the pass fails and the last list stays.
    let script = Script::default();
    for _ in 0..MAX_TRIES {
        script.page(200, 0..100);
        script.page(200, 0..100);
    }
    let mut d = Discovery::new(script.clone(), settings(&[MachineType::Cvm], &["r"]), 20);
    let e = d.discover().await.unwrap_err();
    assert_eq!(e.code(), "Discovery.Incomplete");
    assert!(e.to_string().contains("repeated a machine"), "{e}");
    assert_eq!(script.asked().len(), 2 * MAX_TRIES as usize);
    // One listing that repeats, then a good one: the pass completes with every machine.
    script.page(150, 0..100);
    script.page(150, 99..149);
    script.page(150, 0..100);
    script.page(150, 100..150);
    assert_eq!(d.discover().await.unwrap().agents.len(), 150);
}

/// Host facts (issue 22) reach the agents of a pass; a row that does not say its region is
/// in the region its listing asked for.
#[tokio::test(start_paused = true)]
async fn a_pass_carries_facts_and_rows_without_a_region_take_the_one_asked() {
    let script = Script::default();
    let mut with_facts = row(1);
    with_facts.facts = crate::watchlist::Facts::new(["web"], Some("ap-shanghai".into()), true);
    let mut bare = row(2);
    bare.facts = crate::watchlist::Facts::new(["db"], None, false);
    script.push(Ok(MachinesPage {
        total: 3,
        rows: vec![with_facts, bare, row(3)],
    }));
    let mut d = Discovery::new(script, settings(&[MachineType::Cvm], &["ap-guangzhou"]), 20);
    let found = d.discover().await.unwrap();
    let facts: Vec<_> = found
        .agents
        .iter()
        .map(|a| {
            let f = a.facts.as_deref().expect("every row has a region at least");
            (a.tags().to_vec(), f.region().map(str::to_owned), f.wan())
        })
        .collect();
    assert_eq!(
        facts,
        [
            (vec!["web".into()], Some("ap-shanghai".into()), true),
            (vec!["db".into()], Some("ap-guangzhou".into()), false),
            (vec![], Some("ap-guangzhou".into()), false),
        ]
    );
}
