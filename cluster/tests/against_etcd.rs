//! bascule-cluster against real etcd 3.4 processes (see `support`).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use bascule_cluster::config::Role;
use bascule_cluster::desired::{self, Desired, LastFailure, NodeState, NodeStatus, Slot};
use bascule_cluster::gateway::{CreateOutcome, EndpointHealth, Error, EventKind};
use bascule_cluster::lock::{
    self, resume, Holder, LeaseLost, LockError, Release, UpgradeLock, LOCK_KEY,
};
use bascule_cluster::quorum::{self, Departure, Health, RefusalReason, UnhealthyReason};
use bascule_cluster::Etcd;
use support::{wait_until, EtcdCluster};

#[test]
fn health_status_members_and_keys() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();

    assert_eq!(etcd.health().unwrap(), EndpointHealth::Healthy);
    let status = etcd.status().unwrap();
    assert_eq!(status.version, "3.4.23");
    assert_eq!(status.leader, Some(status.header.member_id));
    assert!(status.raft_index > 0);
    let members = etcd.member_list().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].name, "cp1");
    assert_eq!(members[0].id, status.header.member_id);
    assert_eq!(members[0].client_urls, [cluster.members[0].client_url()]);

    assert_eq!(etcd.range("/t/a").unwrap(), None);
    etcd.put("/t/a", b"1", None).unwrap();
    etcd.put("/t/b", b"2", None).unwrap();
    etcd.put("/u", b"3", None).unwrap();
    let a = etcd.range("/t/a").unwrap().unwrap();
    assert_eq!(
        (a.key.as_str(), a.value.as_slice(), a.lease),
        ("/t/a", &b"1"[..], None)
    );
    assert_eq!(
        etcd.range_serializable("/t/b").unwrap().unwrap().value,
        b"2"
    );
    let keys: Vec<String> = etcd
        .range_prefix("/t/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/t/a", "/t/b"]);
    assert_eq!(etcd.delete("/t/a").unwrap(), 1);
    assert_eq!(etcd.delete("/t/a").unwrap(), 0);
    assert_eq!(etcd.range("/t/a").unwrap(), None);

    assert_eq!(
        etcd.txn_create("/t/c", b"first", None).unwrap(),
        CreateOutcome::Created
    );
    match etcd.txn_create("/t/c", b"second", None).unwrap() {
        CreateOutcome::Exists {
            value,
            lease,
            mod_revision,
        } => {
            assert_eq!(value, b"first");
            assert_eq!(lease, None);
            assert_eq!(
                mod_revision,
                etcd.range("/t/c").unwrap().unwrap().mod_revision
            );
        }
        CreateOutcome::Created => panic!("created an existing key"),
    }
}

#[test]
fn an_unreachable_endpoint_is_skipped() {
    let cluster = EtcdCluster::start(1);
    let mut endpoints = vec!["http://127.0.0.1:1".to_string()];
    endpoints.extend(cluster.endpoints());
    let etcd = bascule_cluster::Etcd::new(endpoints, Duration::from_secs(2));
    etcd.put("/k", b"v", None).unwrap();
    assert_eq!(etcd.range("/k").unwrap().unwrap().value, b"v");
}

#[test]
fn leases_keep_alive_revoke_and_expire() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();

    let (lease, ttl) = etcd.lease_grant(Duration::from_secs(30)).unwrap();
    assert_eq!(ttl, Duration::from_secs(30));
    etcd.put("/leased", b"x", Some(lease)).unwrap();
    assert_eq!(etcd.range("/leased").unwrap().unwrap().lease, Some(lease));
    assert_eq!(
        etcd.lease_keepalive(lease).unwrap(),
        Duration::from_secs(30)
    );
    let left = etcd.lease_time_to_live(lease).unwrap();
    assert_eq!(left.granted, Duration::from_secs(30));
    assert!(left.remaining <= left.granted && left.remaining >= Duration::from_secs(28));
    assert_eq!(left.keys, ["/leased"]);
    etcd.lease_revoke(lease).unwrap();
    assert_eq!(etcd.range("/leased").unwrap(), None);
    assert!(matches!(
        etcd.lease_keepalive(lease),
        Err(Error::LeaseGone { .. })
    ));
    assert!(matches!(
        etcd.lease_time_to_live(lease),
        Err(Error::LeaseGone { .. })
    ));
    let revoked = etcd.lease_revoke(lease);
    assert!(
        matches!(revoked, Err(Error::LeaseGone { .. })),
        "{revoked:?}"
    );
    assert!(matches!(
        etcd.put("/leased", b"x", Some(lease)),
        Err(Error::LeaseGone { .. })
    ));

    // Not kept alive: the lease and its key go by themselves after the TTL.
    let granted_at = Instant::now();
    let (short, _) = etcd.lease_grant(Duration::from_secs(2)).unwrap();
    etcd.put("/short", b"x", Some(short)).unwrap();
    wait_until(
        Duration::from_secs(8),
        "the unrenewed lease's key goes",
        || etcd.range("/short").unwrap().is_none(),
    );
    assert!(granted_at.elapsed() >= Duration::from_millis(1500));
    assert!(matches!(
        etcd.lease_keepalive(short),
        Err(Error::LeaseGone { .. })
    ));
}

#[test]
fn watch_returns_when_the_key_changes() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();
    etcd.put("/w", b"0", None).unwrap();
    let from = etcd.range("/w").unwrap().unwrap().mod_revision + 1;

    // Nothing changes: the watch ends empty at its deadline.
    let started = Instant::now();
    let events = etcd
        .watch("/w", from, Instant::now() + Duration::from_millis(400))
        .unwrap();
    assert!(events.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert!(started.elapsed() < Duration::from_secs(3));

    // Watching from `from` sees a change made after it, whenever it comes.
    let writer = {
        let etcd = etcd.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            etcd.delete("/w").unwrap();
        })
    };
    let events = etcd
        .watch("/w", from, Instant::now() + Duration::from_secs(10))
        .unwrap();
    writer.join().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::Delete);
    assert_eq!(events[0].kv.key, "/w");

    etcd.put("/w", b"1", None).unwrap();
    let events = etcd
        .watch("/w", from, Instant::now() + Duration::from_secs(10))
        .unwrap();
    assert_eq!(events[0].kind, EventKind::Delete, "history from `from` on");
}

#[test]
fn quorum_gather_check_and_membership_changes() {
    let mut cluster = EtcdCluster::start(3);
    let etcd = cluster.client();
    let deadline = Duration::from_secs(2);

    let members = quorum::gather(&etcd, deadline).unwrap();
    let mut names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["cp1", "cp2", "cp3"]);
    assert!(members.iter().all(|m| m.is_healthy()), "{members:?}");
    quorum::check(&members, "cp1", Departure::Leave, false).unwrap();
    quorum::check(&members, "cp1", Departure::Preserve, false).unwrap();

    // cp2 dies: cp1 may not go away, for it would leave cp3 alone.
    cluster.member("cp2").kill();
    // If cp2 led, the others report unhealthy until they elect a leader.
    let mut members = Vec::new();
    wait_until(Duration::from_secs(10), "cp1 and cp3 healthy", || {
        members = quorum::gather(&etcd, deadline).unwrap();
        members.iter().filter(|m| m.is_healthy()).count() == 2
    });
    let cp2 = members.iter().find(|m| m.name == "cp2").unwrap();
    assert_eq!(
        cp2.health,
        Health::Unhealthy(UnhealthyReason::Unreachable(
            "connection refused".to_string()
        ))
    );
    let refusal = quorum::check(&members, "cp1", Departure::Leave, false).unwrap_err();
    let message = refusal.to_string();
    assert!(
        message.starts_with("etcd would lose quorum (1 of 3 members available while cp1 is away"),
        "{message}"
    );
    assert!(
        message.contains(&format!("cp2 ({}) unhealthy: connection refused", cp2.id)),
        "{message}"
    );
    assert!(message.contains("cp1 healthy") && message.contains("cp3 healthy"));
    assert!(quorum::check(&members, "cp1", Departure::Preserve, false).is_err());
    quorum::check(&members, "cp1", Departure::Leave, true).unwrap();

    // Replace cp2 by cp4: remove, add (a new id), start it to join.
    let remaining = etcd.member_remove(cp2.id).unwrap();
    assert_eq!(remaining.len(), 2);
    assert!(remaining.iter().all(|m| m.id != cp2.id));
    let cp4 = cluster.prepare_member("cp4");
    let peer_url = cluster.members[cp4].peer_url();
    // etcd refuses to add a member ("unhealthy cluster") until its leader
    // has been connected to a quorum for 5 s, i.e. for a young cluster.
    let mut added = None;
    wait_until(Duration::from_secs(15), "etcd accepts member add", || {
        match etcd.member_add(vec![peer_url.clone()]) {
            Ok(answer) => added = Some(answer),
            Err(error) => assert!(error.to_string().contains("unhealthy cluster"), "{error}"),
        }
        added.is_some()
    });
    let (id, members) = added.unwrap();
    assert_ne!(id, cp2.id);
    let added = members.iter().find(|m| m.id == id).unwrap();
    assert_eq!(
        (added.name.as_str(), &added.peer_urls),
        ("", &vec![peer_url])
    );
    let pending = quorum::gather(&etcd, deadline).unwrap();
    assert_eq!(
        pending.iter().find(|m| m.id == id).unwrap().health,
        Health::NotStarted
    );

    cluster.join(cp4, &members);
    let etcd = cluster.client();
    wait_until(Duration::from_secs(10), "cp4 publishes its name", || {
        etcd.member_list()
            .unwrap()
            .iter()
            .any(|m| m.id == id && m.name == "cp4")
    });
    let members = quorum::gather(&etcd, deadline).unwrap();
    assert!(members.iter().all(|m| m.is_healthy()), "{members:?}");
    quorum::check(&members, "cp4", Departure::Leave, false).unwrap();
}

#[test]
fn two_members_are_refused_unless_forced() {
    let cluster = EtcdCluster::start(2);
    let members = quorum::gather(&cluster.client(), Duration::from_secs(2)).unwrap();
    assert!(members.iter().all(|m| m.is_healthy()), "{members:?}");
    for policy in [Departure::Leave, Departure::Preserve] {
        let refusal = quorum::check(&members, "cp1", policy, false).unwrap_err();
        assert_eq!(
            refusal.reason,
            RefusalReason::WouldLoseQuorum {
                available: 1,
                needed: 2
            }
        );
        quorum::check(&members, "cp1", policy, true).unwrap();
    }
}

fn acquire(etcd: &Etcd, node: &str, ttl_s: u64, wait_s: u64) -> Result<UpgradeLock, LockError> {
    UpgradeLock::acquire(
        etcd,
        node,
        "2.0.0",
        Duration::from_secs(ttl_s),
        Instant::now() + Duration::from_secs(wait_s),
        |holder| panic!("{node} should not wait, but {holder} holds the lock"),
    )
}

/// What a node acquiring in a thread reports: whom it waits for, then the
/// lock and when it got it.
type Acquiring = (
    mpsc::Receiver<Holder>,
    mpsc::Receiver<(Result<UpgradeLock, LockError>, Instant)>,
);

/// Starts `node` acquiring the lock in a thread.
fn acquire_in_thread(etcd: &Etcd, node: &'static str, wait_s: u64) -> Acquiring {
    let (waits_tx, waits) = mpsc::channel();
    let (done_tx, done) = mpsc::channel();
    let etcd = etcd.clone();
    std::thread::spawn(move || {
        let lock = UpgradeLock::acquire(
            &etcd,
            node,
            "2.0.0",
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(wait_s),
            |holder| {
                let _ = waits_tx.send(holder.clone());
            },
        );
        let _ = done_tx.send((lock, Instant::now()));
    });
    (waits, done)
}

fn lock_holder(etcd: &Etcd) -> Option<Holder> {
    etcd.range(LOCK_KEY)
        .unwrap()
        .map(|kv| serde_json::from_slice(&kv.value).unwrap())
}

#[test]
fn the_lock_is_held_by_one_node_at_a_time() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();
    let first = acquire(&etcd, "cp1", 5, 1).unwrap();
    assert_eq!(lock_holder(&etcd).unwrap(), *first.holder());

    let (waits, done) = acquire_in_thread(&etcd, "cp2", 20);
    let waited_for = waits.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(waited_for.holder, "cp1");
    assert_eq!(waited_for.lease, first.lease());
    assert!(done.try_recv().is_err(), "cp2 got a held lock");

    let released = Instant::now();
    first
        .release(
            "cp1",
            &Release::Upgraded {
                version: "2.0.0".into(),
            },
        )
        .unwrap();
    let (second, got_it) = done.recv_timeout(Duration::from_secs(10)).unwrap();
    let second = second.unwrap();
    assert!(got_it >= released);
    assert_eq!(second.holder().holder, "cp2");
    assert_eq!(lock_holder(&etcd).unwrap().holder, "cp2");
    assert!(matches!(
        etcd.lease_time_to_live(waited_for.lease),
        Err(Error::LeaseGone { .. })
    ));

    // A third node gives up at its deadline, naming the holder.
    let refused = UpgradeLock::acquire(
        &etcd,
        "cp3",
        "2.0.0",
        Duration::from_secs(5),
        Instant::now() + Duration::from_millis(300),
        |_| {},
    )
    .unwrap_err();
    match refused {
        LockError::Timeout { holder, .. } => assert_eq!(holder.holder, "cp2"),
        other => panic!("expected a timeout, got {other}"),
    }
}

#[test]
fn a_holder_that_stops_renewing_loses_the_lock_after_the_ttl() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();
    let first = acquire(&etcd, "cp1", 2, 1).unwrap();
    let lease = first.lease();
    // Renewed once more at the detach at the latest, so it lasts ~2 s more.
    let stopped = Instant::now();
    first.detach().unwrap();

    let (waits, done) = acquire_in_thread(&etcd, "cp2", 20);
    assert_eq!(
        waits.recv_timeout(Duration::from_secs(10)).unwrap().holder,
        "cp1"
    );
    let (second, got_it) = done.recv_timeout(Duration::from_secs(15)).unwrap();
    assert_eq!(second.unwrap().holder().holder, "cp2");
    assert!(got_it - stopped >= Duration::from_millis(1000));
    assert!(matches!(
        resume(&etcd, lease),
        Err(LockError::LeaseGone { .. })
    ));

    // A kept lease revoked behind the keeper's back is reported lost.
    let (other, _) = etcd.lease_grant(Duration::from_secs(3)).unwrap();
    let keeper = resume(&etcd, other).unwrap();
    assert_eq!(keeper.lost(), None);
    etcd.lease_revoke(other).unwrap();
    assert_eq!(
        keeper.wait_lost(Duration::from_secs(5)),
        Some(LeaseLost::Gone { lease: other })
    );
}

#[test]
fn a_rebooted_holder_adopts_resumes_and_records_its_failure() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();
    let before = acquire(&etcd, "cp1", 3, 1).unwrap().detach().unwrap();

    // The next boot keeps the recorded lease alive past its TTL.
    let keeper = resume(&etcd, before.lease).unwrap();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(keeper.lost(), None);
    assert_eq!(lock_holder(&etcd).unwrap(), before);
    keeper.stop().unwrap();

    // Acquiring again under the same name adopts the lease at once.
    let again = UpgradeLock::acquire(
        &etcd,
        "cp1",
        "3.0.0",
        Duration::from_secs(3),
        Instant::now() + Duration::from_secs(1),
        |holder| panic!("waited for {holder}"),
    )
    .unwrap();
    assert_eq!(again.lease(), before.lease);
    assert_eq!(lock_holder(&etcd).unwrap().target, "3.0.0");

    again
        .release(
            "cp1",
            &Release::Failed {
                version: "3.0.0".into(),
                reason: "the new slot did not confirm".into(),
            },
        )
        .unwrap();
    assert_eq!(lock_holder(&etcd), None);
    let failure = desired::get_last_failure(&etcd, "cp1").unwrap().unwrap();
    assert_eq!(failure.version, "3.0.0");
    assert_eq!(failure.reason, "the new slot did not confirm");
    assert!(failure.unix > 1_600_000_000);
    let kv = etcd
        .range(&desired::last_failure_key("cp1"))
        .unwrap()
        .unwrap();
    assert_eq!(kv.lease, None, "the failure outlives the lock");
    // Releasing a lease already gone is fine.
    lock::release(
        &etcd,
        "cp1",
        before.lease,
        &Release::Upgraded {
            version: "3.0.0".into(),
        },
    )
    .unwrap();
}

#[test]
fn rollout_keys() {
    let cluster = EtcdCluster::start(1);
    let etcd = cluster.client();
    assert_eq!(desired::get_desired(&etcd).unwrap(), None);
    let wanted = Desired {
        version: "2.0.0".into(),
        url: "http://10.0.0.1/b.bundle".into(),
        sha256: "ab".repeat(32),
    };
    desired::set_desired(&etcd, &wanted).unwrap();
    assert_eq!(desired::get_desired(&etcd).unwrap(), Some(wanted));

    let status = |state| NodeStatus {
        role: Role::ControlPlane,
        version: "1.0.0".into(),
        slot: Slot::A,
        state,
        progress: String::new(),
        last_failure: None,
        updated_unix: desired::unix_now(),
    };
    desired::put_node_status(&etcd, "cp2", &status(NodeState::Waiting)).unwrap();
    desired::put_node_status(&etcd, "cp1", &status(NodeState::Upgrading)).unwrap();
    let failure = LastFailure {
        version: "2.0.0".into(),
        reason: "x".into(),
        unix: 1,
    };
    desired::put_last_failure(&etcd, "cp1", &failure).unwrap();
    let listed = desired::list_node_status(&etcd).unwrap();
    assert_eq!(
        listed,
        [
            ("cp1".to_string(), status(NodeState::Upgrading)),
            ("cp2".to_string(), status(NodeState::Waiting)),
        ]
    );

    assert_eq!(desired::rollout_paused(&etcd).unwrap(), None);
    desired::pause_rollout(&etcd, "cp1").unwrap();
    assert_eq!(
        desired::rollout_paused(&etcd).unwrap().as_deref(),
        Some("cp1")
    );
    desired::resume(&etcd).unwrap();
    assert_eq!(desired::rollout_paused(&etcd).unwrap(), None);

    etcd.put(desired::DESIRED_KEY, b"not json", None).unwrap();
    let garbled = desired::get_desired(&etcd).unwrap_err().to_string();
    assert!(
        garbled.contains("etcdctl del /bascule/desired"),
        "{garbled}"
    );
}
