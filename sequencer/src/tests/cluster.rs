//! The cluster's upgrade lease around an upgrade of a control-plane node.

use super::fake::{bundle, host_with, Fail};
use super::run;
use crate::host::{LeaseHolder, NodeRole};
use crate::journal::{Note, Phase};
use crate::options::{AfterInstall, QuorumPolicy, RunMode, UpgradeOptions};
use crate::outcome::{Outcome, Recovery, Refusal};
use crate::progress::Event;

fn control_plane() -> (super::fake::FakeHost, super::fake::Bundle) {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.role = NodeRole::ControlPlane;
    (host, b)
}

#[test]
fn the_lease_is_taken_after_the_checks_and_before_the_first_disruptive_phase() {
    let (mut host, _b) = control_plane();
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(matches!(done.outcome, Outcome::Rebooting(_)));
    let lock = host.position("cluster_lock").expect("lease taken");
    assert!(host.position("open_bundle(verify)").expect("verified") < lock);
    assert!(lock < host.position("cordon").expect("cordon"));
    // Held across the reboot: the new slot releases it, not this run.
    assert!(host.position("cluster_release").is_none());
    let verify = done.journal.phase(Phase::Verify).expect("verify");
    assert!(verify.notes.contains(&Note::LeaseTaken {
        lease: "694d77aa9e38260f".into()
    }));
}

#[test]
fn a_node_waiting_for_the_lease_says_for_whom_once_per_holder() {
    let (mut host, _b) = control_plane();
    host.lease_holders = vec![
        LeaseHolder {
            node: "cp1".into(),
            target: "2.0.0".into(),
        },
        LeaseHolder {
            node: "cp2".into(),
            target: "2.0.0".into(),
        },
    ];
    let (done, events) = run(&mut host, UpgradeOptions::default());
    let waits: Vec<&Note> = events
        .0
        .iter()
        .filter_map(|e| match e {
            Event::Note { note, .. } if matches!(note, Note::WaitingForLease { .. }) => Some(note),
            _ => None,
        })
        .collect();
    assert_eq!(waits.len(), 2, "{waits:?}");
    let verify = done.journal.phase(Phase::Verify).expect("verify");
    let recorded: Vec<&Note> = verify
        .notes
        .iter()
        .filter(|n| matches!(n, Note::WaitingForLease { .. } | Note::LeaseTaken { .. }))
        .collect();
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    assert_eq!(
        recorded[0],
        &Note::WaitingForLease {
            holder: "cp1".into(),
            target: "2.0.0".into()
        }
    );
}

#[test]
fn a_quorum_refusal_changes_nothing_and_force_overrides_it() {
    let (mut host, _b) = control_plane();
    host.fail.insert(Fail::ClusterLock);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    match &done.outcome {
        Outcome::Refused(Refusal::Cluster(e)) => {
            assert!(e.to_string().contains("quorum"), "{e}")
        }
        other => panic!("expected a cluster refusal, got {other:?}"),
    }
    assert_eq!(host.changes(), Vec::<&str>::new());

    let (mut forced, _b) = control_plane();
    forced.fail.insert(Fail::ClusterLock);
    let options = UpgradeOptions {
        quorum: QuorumPolicy::Force,
        ..Default::default()
    };
    let (done, _) = run(&mut forced, options);
    assert!(matches!(done.outcome, Outcome::Rebooting(_)));
}

#[test]
fn a_run_that_stops_before_the_reboot_releases_the_lease_with_its_failure() {
    let (mut host, _b) = control_plane();
    host.fail.insert(Fail::Drain);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(matches!(
        done.outcome,
        Outcome::Aborted {
            recovery: Recovery::Resume,
            ..
        }
    ));
    let released = host
        .calls
        .iter()
        .find_map(|c| match c {
            super::fake::Call::ClusterRelease(why) => Some(why.clone()),
            _ => None,
        })
        .expect("released");
    assert!(released.starts_with("drain: "), "{released}");
    let drain = done.journal.phase(Phase::Drain).expect("drain");
    assert!(drain.notes.contains(&Note::LeaseReleased));
}

#[test]
fn an_abort_that_reboots_the_current_slot_leaves_the_release_to_that_boot() {
    let (mut host, _b) = control_plane();
    host.fail.insert(Fail::WriteSlot);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(matches!(
        done.outcome,
        Outcome::Aborted {
            recovery: Recovery::RebootCurrentSlot,
            ..
        }
    ));
    assert!(host.position("cluster_release").is_none());
}

#[test]
fn workers_prepares_and_stages_take_no_lease() {
    let b = bundle("2.0.0");
    let mut worker = host_with(&b);
    run(&mut worker, UpgradeOptions::default());
    assert!(worker.position("cluster_lock").is_none());
    for options in [
        UpgradeOptions {
            run: RunMode::Prepare,
            ..Default::default()
        },
        UpgradeOptions {
            after: AfterInstall::Stage,
            ..Default::default()
        },
        UpgradeOptions {
            run: RunMode::DryRun,
            ..Default::default()
        },
    ] {
        let (mut cp, _b) = control_plane();
        run(&mut cp, options);
        assert!(cp.position("cluster_lock").is_none(), "{options:?}");
    }
}
