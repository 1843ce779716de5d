//! Prepared upgrades: the slot written while everything runs, then only
//! the disruptive phases, from META alone or from the same bundle.

use super::fake::{bundle, contents, host_with, Call, Fail};
use super::run;
use crate::host::{Pass, RebootMode};
use crate::journal::{Note, Phase};
use crate::options::{DataPolicy, RunMode, UpgradeOptions};
use crate::outcome::{Outcome, Recovery, Refusal};
use bascule_boot::meta_record::SlotState;
use bascule_boot::Slot;
use bascule_bundle::PayloadKind;

fn mode(run: RunMode) -> UpgradeOptions {
    UpgradeOptions {
        run,
        data: DataPolicy::Wipe,
        ..Default::default()
    }
}

fn notes(done: &crate::outcome::Finished, phase: Phase) -> Vec<Note> {
    done.journal
        .phases
        .iter()
        .find(|p| p.phase == phase)
        .map(|p| p.notes.clone())
        .unwrap_or_default()
}

#[test]
fn prepare_writes_the_slot_and_stops_nothing() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, mode(RunMode::Prepare));
    assert!(
        matches!(done.outcome, Outcome::Prepared),
        "{}",
        done.outcome
    );
    // No service is touched, /var is kept for the apply, nothing reboots.
    assert_eq!(host.changes(), super::fake::PREPARE_CHANGES);
    let phases: Vec<Phase> = done.journal.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, [Phase::Verify, Phase::VerifyDisk, Phase::Install]);
    assert_eq!(host.slots[&Slot::B], contents(PayloadKind::Rootfs));
    let info = host.meta.slot_info(Slot::B);
    assert_eq!(info.state(), SlotState::Prepared);
    assert_eq!(info.version, "2.0.0");
    assert_eq!(info.prepared, b.manifest.fingerprint().to_vec());
    assert!(host.meta.pending_try.is_none());
    assert!(notes(&done, Phase::Install).contains(&Note::SlotPrepared {
        slot: Slot::B,
        version: "2.0.0".into()
    }));
}

#[test]
fn applying_a_prepared_slot_reads_no_bundle_and_writes_no_payload() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    run(&mut host, mode(RunMode::Prepare));
    host.calls.clear();
    let (done, _) = run(&mut host, mode(RunMode::ApplyPrepared));
    assert!(
        matches!(done.outcome, Outcome::Rebooting(RebootMode::Kexec)),
        "{}",
        done.outcome
    );
    assert!(!host.calls.iter().any(|c| matches!(c, Call::OpenBundle(_))));
    assert_eq!(
        host.changes(),
        [
            // The prepared kernel is loaded while every service still runs.
            "kexec_load",
            "cordon",
            "drain",
            "stop_services",
            "unmount",
            "wipe_ephemeral",
            "write_meta",
            "reboot(kexec)",
        ]
    );
    assert!(notes(&done, Phase::Verify).contains(&Note::KexecPreloaded { slot: Slot::B }));
    assert_eq!(done.journal.to_version.as_deref(), Some("2.0.0"));
    assert!(
        notes(&done, Phase::Install).contains(&Note::AlreadyPrepared {
            slot: Slot::B,
            version: "2.0.0".into()
        })
    );
    let t = host.meta.pending_try.clone().expect("pending try");
    assert_eq!(
        (t.slot().slot(), t.version.as_str()),
        (Some(Slot::B), "2.0.0")
    );
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Trying);
    assert!(host.meta.slot_info(Slot::B).prepared.is_empty());
}

#[test]
fn a_prepared_kernel_that_kexec_refuses_is_tried_again_then_booted_by_the_firmware() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    run(&mut host, mode(RunMode::Prepare));
    host.calls.clear();
    host.fail.insert(Fail::KexecRefused);
    let (done, _) = run(&mut host, mode(RunMode::ApplyPrepared));
    assert!(
        matches!(done.outcome, Outcome::Rebooting(RebootMode::Firmware)),
        "{}",
        done.outcome
    );
    assert!(notes(&done, Phase::Verify).is_empty(), "no preload noted");
    let changes = host.changes();
    assert_eq!(changes[0], "kexec_load", "{changes:?}");
    assert_eq!(
        &changes[changes.len() - 3..],
        ["kexec_load", "set_once", "reboot(firmware)"]
    );
}

#[test]
fn the_same_bundle_again_skips_the_write_and_its_second_pass() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    run(&mut host, mode(RunMode::Prepare));
    host.calls.clear();
    let (done, _) = run(&mut host, mode(RunMode::Apply));
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
    assert!(host.calls.contains(&Call::OpenBundle(Pass::Verify)));
    assert!(!host.calls.contains(&Call::OpenBundle(Pass::Install)));
    assert!(!host
        .calls
        .iter()
        .any(|c| matches!(c, Call::WriteSlot(..) | Call::WriteEsp(..))));
}

#[test]
fn another_bundle_after_a_prepare_is_written_in_full() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    run(&mut host, mode(RunMode::Prepare));
    let newer = bundle("2.1.0");
    host.verify_bytes = newer.bytes.clone();
    host.install_bytes = None;
    host.calls.clear();
    let (done, _) = run(&mut host, mode(RunMode::Apply));
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
    assert!(host.calls.contains(&Call::OpenBundle(Pass::Install)));
    assert!(host
        .calls
        .iter()
        .any(|c| matches!(c, Call::WriteSlot(Slot::B, _))));
}

#[test]
fn apply_without_a_prepared_slot_is_refused_and_changes_nothing() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    let (done, _) = run(&mut host, mode(RunMode::ApplyPrepared));
    assert!(
        matches!(
            done.outcome,
            Outcome::Refused(Refusal::NothingPrepared {
                slot: Slot::B,
                state: SlotState::Good
            })
        ),
        "{}",
        done.outcome
    );
    assert!(done.outcome.to_string().contains("--prepare"));
    assert!(host.changes().is_empty(), "{:?}", host.changes());
}

#[test]
fn a_failed_prepare_keeps_everything_running() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.install_bytes = Some(b.corrupt(PayloadKind::Kernel));
    let (done, _) = run(&mut host, mode(RunMode::Prepare));
    assert!(
        matches!(
            done.outcome,
            Outcome::Aborted {
                phase: Phase::Install,
                recovery: Recovery::KeepRunning,
                ..
            }
        ),
        "{}",
        done.outcome
    );
    assert!(!host.calls.iter().any(|c| matches!(
        c,
        Call::Cordon | Call::Drain | Call::StopServices | Call::Reboot(_)
    )));
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Empty);
}
