//! The coordinator against a real etcd (`super::super::test_etcd`), TTL 3 s: one leads while
//! the other waits, takeovers after a resignation and after a crash (measured), the fence
//! through an etcd outage and restart, deposition by a deleted key or a revoked lease, and a
//! stopped campaign that leaves nothing behind.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;

use super::super::test_etcd::TestEtcd;
use super::{Coordinator, Leadership, renew};
use crate::ha::{HaError, HaSettings, election_name};

const TTL: Duration = Duration::from_secs(3);

fn settings(etcd: &TestEtcd, name: &str) -> HaSettings {
    HaSettings {
        // As the config check writes it (with the `/` path).
        etcd: vec![format!("{}/", etcd.endpoint())],
        election: "/cwp-test".into(),
        lease_ttl: TTL,
        name: name.into(),
        ca_file: None,
        cert_file: None,
        key_file: None,
        username: None,
        password_file: None,
    }
}

async fn coordinator(etcd: &TestEtcd, name: &str) -> Coordinator {
    Coordinator::connect(&settings(etcd, name)).await.unwrap()
}

/// Leads at once (nobody else is in the election).
async fn lead(coordinator: &Coordinator) -> Leadership {
    timeout(
        Duration::from_secs(5),
        coordinator.campaign(&CancellationToken::new()),
    )
    .await
    .expect("elected within 5 s")
    .unwrap()
    .expect("not stopped")
}

type Waiting = JoinHandle<(Coordinator, Result<Option<Leadership>, HaError>)>;

/// A campaign in a task, so that it stays in the election while the test goes on.
fn wait_in_election(coordinator: Coordinator, stop: CancellationToken) -> Waiting {
    tokio::spawn(async move {
        let result = coordinator.campaign(&stop).await;
        (coordinator, result)
    })
}

/// The candidates' keys under the election.
async fn candidates(etcd: &TestEtcd) -> usize {
    let mut client = etcd.client().await;
    let prefix = format!("{}/", election_name("/cwp-test"));
    let answer = client
        .get(
            prefix.clone(),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .unwrap();
    answer.kvs().len()
}

#[tokio::test]
async fn one_leads_the_other_waits_and_takes_over_at_once_when_it_resigns() {
    let etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let leadership = lead(&a).await;
    assert!(
        leadership.fence().may_send(),
        "a new leader's fence is open"
    );
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-a"));
    let guard = leadership.guard();
    assert!(
        guard.key.starts_with(b"/cwp-test/leader/"),
        "{:?}",
        String::from_utf8_lossy(&guard.key)
    );

    let b = wait_in_election(coordinator(&etcd, "host-b").await, CancellationToken::new());
    // Two TTLs: the keep-alive holds the first leadership, the second waits.
    sleep(2 * TTL).await;
    assert!(!b.is_finished(), "the standby must still wait");
    assert!(leadership.fence().may_send(), "renewed all along");
    assert_eq!(candidates(&etcd).await, 2);

    let fence = leadership.fence();
    let resigned = Instant::now();
    leadership.resign().await;
    assert!(!fence.may_send(), "closed before resigning");
    let (b, result) = timeout(Duration::from_secs(1), b)
        .await
        .expect("the standby leads within 1 s of a resignation")
        .unwrap();
    let b_leads = result.unwrap().expect("elected");
    println!("takeover after a resignation: {:?}", resigned.elapsed());
    assert!(b_leads.fence().may_send());
    assert_eq!(b.leader().await.unwrap().as_deref(), Some("host-b"));
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-b"));
    assert_eq!(candidates(&etcd).await, 1, "the first's key is gone");
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_within_the_ttl_plus_2s() {
    let etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let leadership = lead(&a).await;
    let b = wait_in_election(coordinator(&etcd, "host-b").await, CancellationToken::new());
    sleep(Duration::from_millis(500)).await;
    assert!(!b.is_finished());
    // A crash: its tasks stop (no resignation, no revocation), etcd must expire the lease.
    let crashed = Instant::now();
    drop(leadership);
    let (_, result) = timeout(TTL + Duration::from_secs(2), b)
        .await
        .expect("the standby leads within lease_ttl + 2 s")
        .unwrap();
    let took = crashed.elapsed();
    println!("takeover after a crash: {took:?} (lease_ttl {TTL:?})");
    assert!(result.unwrap().is_some());
    // Not before the lease could expire: the last renewal was at most ttl/3 before the crash.
    assert!(
        took >= TTL - TTL / 3 - Duration::from_millis(100),
        "{took:?}"
    );
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-b"));
}

#[tokio::test]
async fn an_etcd_outage_closes_the_fence_in_time_and_a_restart_reopens_it() {
    let mut etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let mut leadership = lead(&a).await;
    let fence = leadership.fence();
    let b = coordinator(&etcd, "host-b").await;
    let b_health = b.health.clone();
    let b = wait_in_election(b, CancellationToken::new());
    sleep(Duration::from_millis(1500)).await;

    let stopped = Instant::now();
    etcd.stop();
    // No renewal can be answered from here on: what the fence says now is the last word.
    sleep(Duration::from_millis(100)).await;
    let until = fence.valid_until().expect("open").expect("timed");
    // The last renewal was sent before the stop: its deadline is before stop + ttl − 1 s, so
    // before etcd could expire the lease (≥ that renewal + ttl).
    assert!(
        until <= stopped + TTL - Duration::from_secs(1),
        "{:?}",
        until - stopped
    );
    while fence.may_send() {
        sleep(Duration::from_millis(10)).await;
    }
    let closed = Instant::now();
    println!(
        "fence closed {:?} after etcd stopped (deadline {:?} after)",
        closed - stopped,
        until - stopped
    );
    assert!(closed <= until + Duration::from_millis(50), "closed late");

    // Back within the TTL of the stop (etcd renews every lease when it starts anyway).
    etcd.start().await;
    let restarted = Instant::now();
    let reopened = timeout(Duration::from_secs(5), async {
        while !fence.may_send() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(
        reopened.is_ok(),
        "the fence reopens once a renewal is answered"
    );
    println!(
        "fence reopened {:?} after etcd answered again (down {:?})",
        restarted.elapsed(),
        restarted - stopped
    );
    // Still the leader: not deposed, the standby still waits.
    assert!(
        timeout(TTL, leadership.deposed()).await.is_err(),
        "not deposed by an outage"
    );
    assert!(fence.may_send());
    assert!(!b.is_finished(), "the standby did not take over");
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-a"));
    // Once each per outage, however many requests failed (leader and standby say their own).
    assert_eq!(
        *a.health.said.lock().unwrap(),
        [renew::LEADER_OUTAGE, renew::LEADER_BACK]
    );
    assert_eq!(
        *b_health.said.lock().unwrap(),
        [renew::STANDBY_OUTAGE, renew::STANDBY_BACK]
    );
}

/// etcd 3.4 keeps leases in its data and renews every one when it starts: after an outage
/// longer than the TTL the same process still leads (its fence was closed meanwhile).
#[tokio::test]
async fn after_an_outage_longer_than_the_ttl_the_same_process_still_leads() {
    let mut etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let mut leadership = lead(&a).await;
    let fence = leadership.fence();
    let b = wait_in_election(coordinator(&etcd, "host-b").await, CancellationToken::new());
    sleep(Duration::from_millis(500)).await;
    etcd.stop();
    sleep(TTL + Duration::from_secs(1)).await;
    assert!(!fence.may_send(), "closed while etcd is away");
    etcd.start().await;
    let reopened = timeout(Duration::from_secs(5), async {
        while !fence.may_send() {
            sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "the lease survived the restart");
    assert!(timeout(TTL, leadership.deposed()).await.is_err());
    assert!(!b.is_finished());
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-a"));
}

#[tokio::test]
async fn a_deleted_key_or_a_revoked_lease_deposes_and_names_the_new_leader() {
    let etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let mut leadership = lead(&a).await;
    let fence = leadership.fence();
    let b = wait_in_election(coordinator(&etcd, "host-b").await, CancellationToken::new());
    sleep(Duration::from_millis(300)).await;

    let mut client = etcd.client().await;
    client.delete(leadership.guard().key, None).await.unwrap();
    let lost = timeout(Duration::from_secs(1), leadership.deposed())
        .await
        .expect("deposed within 1 s of the deletion");
    assert!(lost.reason.contains("deleted"), "{}", lost.reason);
    assert_eq!(lost.holder.as_deref(), Some("host-b"));
    assert!(!fence.may_send());

    // The new leader's lease revoked: deposed too (the lease is gone, the key with it).
    let (_, result) = timeout(Duration::from_secs(2), b).await.unwrap().unwrap();
    let mut b_leads = result.unwrap().unwrap();
    let b_fence = b_leads.fence();
    client.lease_revoke(b_leads.guard().lease).await.unwrap();
    let lost = timeout(Duration::from_secs(2), b_leads.deposed())
        .await
        .expect("deposed within 2 s of the revocation");
    assert!(
        lost.reason.contains("deleted") || lost.reason.contains("lease expired"),
        "{}",
        lost.reason
    );
    assert_eq!(lost.holder, None, "nobody leads");
    assert!(!b_fence.may_send());
}

#[tokio::test]
async fn a_stopped_campaign_returns_none_and_leaves_no_key_or_lease() {
    let etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    let _leadership = lead(&a).await;
    let stop = CancellationToken::new();
    let b = wait_in_election(coordinator(&etcd, "host-b").await, stop.clone());
    sleep(Duration::from_millis(500)).await;
    assert_eq!(candidates(&etcd).await, 2);
    let mut client = etcd.client().await;
    assert_eq!(client.leases().await.unwrap().leases().len(), 2);

    stop.cancel();
    let (_, result) = timeout(Duration::from_secs(2), b).await.unwrap().unwrap();
    assert!(result.unwrap().is_none(), "stopped: Ok(None)");
    assert_eq!(candidates(&etcd).await, 1, "its key is gone at once");
    assert_eq!(
        client.leases().await.unwrap().leases().len(),
        1,
        "its lease is revoked"
    );
}

#[tokio::test]
async fn campaign_while_etcd_is_down_waits_and_leads_when_it_starts() {
    let mut etcd = TestEtcd::new().await;
    let a = coordinator(&etcd, "host-a").await;
    etcd.stop();
    let waiting = wait_in_election(a, CancellationToken::new());
    sleep(Duration::from_secs(2)).await;
    assert!(!waiting.is_finished(), "retries, does not give up");
    etcd.start().await;
    let (a, result) = timeout(Duration::from_secs(5), waiting)
        .await
        .expect("elected once etcd answers")
        .unwrap();
    assert!(result.unwrap().unwrap().fence().may_send());
    assert_eq!(a.leader().await.unwrap().as_deref(), Some("host-a"));
}
