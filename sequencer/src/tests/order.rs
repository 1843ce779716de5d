//! The phase order of a successful upgrade, and how the loader is armed
//! for each reboot mode.

use super::fake::{bundle, contents, host_with, Call, Fail};
use super::run;
use crate::host::{NodeRole, RebootMode};
use crate::journal::{KexecProblem, Note, Phase, PhaseStatus, SkipReason};
use crate::options::{AfterInstall, DataPolicy, UpgradeOptions};
use crate::outcome::Outcome;
use bascule_boot::meta_record::SlotState;
use bascule_boot::Slot;
use bascule_bundle::PayloadKind;

fn firmware() -> UpgradeOptions {
    UpgradeOptions {
        reboot: RebootMode::Firmware,
        ..Default::default()
    }
}

#[test]
fn kexec_upgrade_runs_every_phase_in_order_and_leaves_the_loader_alone() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(RebootMode::Kexec)),
        "{}",
        done.outcome
    );
    assert_eq!(
        host.changes(),
        [
            "cordon",
            "drain",
            "stop_services",
            "unmount",
            "write_meta",
            "write_slot",
            "write_esp(kernel)",
            "write_esp(initramfs)",
            "write_meta",
            "kexec_load",
            "reboot(kexec)",
        ]
    );
    assert!(!host.calls.iter().any(|c| matches!(c, Call::SetOnce(_))));
    assert!(host
        .calls
        .contains(&Call::KexecLoad(Slot::B, "2.0.0".into())));
    let phases: Vec<Phase> = done.journal.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, Phase::UPGRADE);
    // What was written is what the bundle carries, in the inactive slot.
    assert_eq!(host.slots[&Slot::B], contents(PayloadKind::Rootfs));
    assert_eq!(
        host.esp[&(Slot::B, PayloadKind::Kernel)],
        contents(PayloadKind::Kernel)
    );
    assert!(!host.slots.contains_key(&Slot::A));
    // The try is recorded; the default is untouched.
    let t = host.meta.pending_try.clone().expect("pending try");
    assert_eq!(
        (t.slot().slot(), t.version.as_str(), t.attempts),
        (Some(Slot::B), "2.0.0", 1)
    );
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Trying);
    assert_eq!(host.meta.slot_info(Slot::B).version, "2.0.0");
    assert_eq!(host.meta.active(), Some(Slot::A));
}

#[test]
fn firmware_upgrade_sets_the_boot_once_entry_and_never_kexecs() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, firmware());
    assert!(matches!(
        done.outcome,
        Outcome::Rebooting(RebootMode::Firmware)
    ));
    let changes = host.changes();
    assert_eq!(
        &changes[changes.len() - 3..],
        ["write_meta", "set_once", "reboot(firmware)"]
    );
    assert!(host.calls.contains(&Call::SetOnce(Slot::B)));
    assert!(host.position("kexec_load").is_none());
}

#[test]
fn refused_kexec_falls_back_to_boot_once_and_firmware() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::KexecRefused);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(matches!(
        done.outcome,
        Outcome::Rebooting(RebootMode::Firmware)
    ));
    let changes = host.changes();
    assert_eq!(
        &changes[changes.len() - 3..],
        ["kexec_load", "set_once", "reboot(firmware)"]
    );
    assert!(host.position("reboot(kexec)").is_none());
    let notes = &done.journal.phase(Phase::Reboot).expect("reboot").notes;
    assert!(notes.iter().any(|n| matches!(
        n,
        Note::KexecUnavailable {
            problem: KexecProblem::Refused,
            ..
        }
    )));
}

#[test]
fn failed_kexec_reboot_falls_back_to_firmware() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::Reboot(RebootMode::Kexec));
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(matches!(
        done.outcome,
        Outcome::Rebooting(RebootMode::Firmware)
    ));
    let changes = host.changes();
    assert_eq!(
        &changes[changes.len() - 4..],
        [
            "kexec_load",
            "reboot(kexec)",
            "set_once",
            "reboot(firmware)"
        ]
    );
}

#[test]
fn a_staged_upgrade_writes_the_slot_stops_nothing_and_leaves_the_try_to_the_next_boot() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let options = UpgradeOptions {
        after: AfterInstall::Stage,
        reboot: RebootMode::Firmware,
        data: DataPolicy::Wipe,
        ..Default::default()
    };
    let (done, _) = run(&mut host, options);
    assert!(matches!(done.outcome, Outcome::Staged), "{}", done.outcome);
    assert_eq!(
        host.changes(),
        super::fake::PREPARE_CHANGES,
        "no service stopped, no loader entry, no reboot, /var kept for the boot that applies it"
    );
    let staged = host.meta.staged.clone().expect("staged in META");
    assert_eq!(
        (staged.from_slot().slot(), staged.slot().slot()),
        (Some(Slot::A), Some(Slot::B))
    );
    assert_eq!(staged.version, "2.0.0");
    assert!(staged.wipe_data && staged.firmware_reboot);
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Prepared);
    assert!(host.meta.pending_try.is_none());
    let install = done.journal.phase(Phase::Install).expect("install phase");
    assert!(install.notes.contains(&Note::Staged { slot: Slot::B }));
}

#[test]
fn preserve_keeps_ephemeral_and_wipe_recreates_it_after_the_install() {
    let b = bundle("2.0.0");
    let mut kept = host_with(&b);
    run(&mut kept, UpgradeOptions::default());
    assert!(kept.position("wipe_ephemeral").is_none());

    let mut wiped = host_with(&b);
    let options = UpgradeOptions {
        data: DataPolicy::Wipe,
        ..Default::default()
    };
    let (done, _) = run(&mut wiped, options);
    assert!(matches!(done.outcome, Outcome::Rebooting(_)));
    let wipe = wiped.position("wipe_ephemeral").expect("wiped");
    assert!(wiped.position("write_esp(initramfs)").expect("esp") < wipe);
    assert!(wipe < wiped.position("kexec_load").expect("kexec"));
    // A worker has no cluster to leave, even when wiping.
    assert!(wiped.position("leave_cluster").is_none());
}

#[test]
fn only_a_control_plane_node_that_wipes_leaves_the_cluster() {
    let b = bundle("2.0.0");
    let wipe = UpgradeOptions {
        data: DataPolicy::Wipe,
        ..Default::default()
    };
    let mut cp = host_with(&b);
    cp.role = NodeRole::ControlPlane;
    let (done, _) = run(&mut cp, wipe);
    let leave = cp.position("leave_cluster").expect("left");
    assert!(cp.position("drain").expect("drain") < leave);
    assert!(leave < cp.position("stop_services").expect("stop"));
    let rec = done.journal.phase(Phase::LeaveCluster).expect("phase");
    assert_eq!(rec.status, PhaseStatus::Done);

    let mut preserving = host_with(&b);
    preserving.role = NodeRole::ControlPlane;
    let (done, _) = run(&mut preserving, UpgradeOptions::default());
    assert!(preserving.position("leave_cluster").is_none());
    let rec = done.journal.phase(Phase::LeaveCluster).expect("phase");
    assert_eq!(rec.status, PhaseStatus::Skipped);
    assert_eq!(
        rec.notes,
        [Note::Skipped {
            reason: SkipReason::PreservingData
        }]
    );
}

#[test]
fn meta_marks_the_slot_as_being_written_before_its_first_byte() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    run(&mut host, UpgradeOptions::default());
    let first_write = host.position("write_slot").expect("slot written");
    let marked = host.calls[..first_write].iter().find_map(|c| match c {
        Call::WriteMeta(m) => Some((**m).clone()),
        _ => None,
    });
    let marked = marked.expect("META written before the slot");
    // B held 0.9.0 and was good: now it is empty with no version, and
    // nothing else changed.
    assert_eq!(marked.slot_info(Slot::B).state(), SlotState::Empty);
    assert_eq!(marked.slot_info(Slot::B).version, "");
    assert_eq!(marked.slot_info(Slot::A).state(), SlotState::Good);
    assert_eq!(marked.pending_try, None);
    assert_eq!(marked.active(), Some(Slot::A));
    // And no ESP file of the slot changes before the mark either.
    let esp = host.position("write_esp(kernel)").expect("esp");
    assert!(host.position("write_meta").expect("meta") < esp);
}

#[test]
fn holders_get_term_then_kill_and_are_named_in_the_journal() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.mounts = vec!["/var/lib/data".into(), "/var".into()];
    host.holders.insert(
        "/var".into(),
        vec![
            super::fake::holder(41, "sleepy"),
            super::fake::holder(42, "stubborn"),
        ],
    );
    host.ignore_term.insert(42);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
    let sig: Vec<&str> = host
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Signal(..) | Call::Unmount(_) | Call::WaitExit(_)))
        .map(Call::name)
        .collect();
    assert_eq!(
        sig,
        [
            "unmount",
            "term",
            "term",
            "wait_exit",
            "kill",
            "wait_exit",
            "unmount"
        ]
    );
    assert!(host
        .calls
        .contains(&Call::Signal(42, crate::host::Signal::Kill)));
    assert!(!host
        .calls
        .contains(&Call::Signal(41, crate::host::Signal::Kill)));
    // Deepest first, as the host listed them.
    let unmounts: Vec<&Call> = host
        .calls
        .iter()
        .filter(|c| matches!(c, Call::Unmount(_)))
        .collect();
    assert_eq!(
        unmounts,
        [
            &Call::Unmount("/var/lib/data".into()),
            &Call::Unmount("/var".into())
        ]
    );
    let notes = &done.journal.phase(Phase::Unmount).expect("unmount").notes;
    let found: Vec<(u32, &str)> = notes
        .iter()
        .filter_map(|n| match n {
            Note::HolderFound { holder, .. } => Some((holder.pid, holder.name.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(found, [(41, "sleepy"), (42, "stubborn")]);
}

#[test]
fn progress_reports_every_phase_and_the_bytes_of_both_passes() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (_, events) = run(&mut host, UpgradeOptions::default());
    let started: Vec<Phase> = events
        .0
        .iter()
        .filter_map(|e| match e {
            crate::Event::PhaseStarted { phase } => Some(*phase),
            _ => None,
        })
        .collect();
    assert_eq!(started, Phase::UPGRADE);
    let total: u64 = b.manifest.payloads.iter().map(|p| p.size).sum();
    for phase in [Phase::Verify, Phase::Install] {
        let last = events.0.iter().rev().find_map(|e| match e {
            crate::Event::Bytes {
                phase: p,
                done,
                total,
                ..
            } if *p == phase => Some((*done, *total)),
            _ => None,
        });
        assert_eq!(last, Some((total, total)), "{phase}");
    }
}
