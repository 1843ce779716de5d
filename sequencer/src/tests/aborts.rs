//! Each failure after the start: what stops, what was done, what the host
//! is told to do.

use super::fake::{bundle, bundle_with, host_with, signing_key, Call, Fail, FakeHost};
use super::run;
use crate::host::RebootMode;
use crate::journal::{Note, Phase, PhaseStatus};
use crate::options::{DataPolicy, UpgradeOptions};
use crate::outcome::{InstallTarget, Outcome, PhaseError, Recovery};
use bascule_boot::meta_record::SlotState;
use bascule_boot::Slot;
use bascule_bundle::PayloadKind;

fn aborted(
    host: &mut FakeHost,
    options: UpgradeOptions,
) -> (Phase, PhaseError, Recovery, crate::Journal) {
    let (done, _) = run(host, options);
    match done.outcome {
        Outcome::Aborted {
            phase,
            error,
            recovery,
        } => {
            let rec = done.journal.phase(phase).expect("failed phase recorded");
            assert_eq!(rec.status, PhaseStatus::Failed);
            assert_eq!(rec.error.as_deref(), Some(error.to_string().as_str()));
            assert_eq!(done.journal.phases.last().map(|p| p.phase), Some(phase));
            (phase, error, recovery, done.journal)
        }
        other => panic!("expected an abort, got {other}"),
    }
}

fn no_loader_or_reboot(host: &FakeHost) {
    for call in [
        "set_once",
        "kexec_load",
        "reboot(kexec)",
        "reboot(firmware)",
    ] {
        assert!(host.position(call).is_none(), "{call} after an abort");
    }
}

#[test]
fn a_failed_drain_resumes_and_stops_nothing_else() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::Drain);
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!((phase, recovery), (Phase::Drain, Recovery::Resume));
    assert!(error.to_string().contains("postgres"), "{error}");
    assert_eq!(host.changes(), ["cordon", "drain"]);
}

#[test]
fn a_failed_service_stop_reboots_into_the_current_slot() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::StopServices);
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::StopServices, Recovery::RebootCurrentSlot)
    );
    assert!(error.to_string().contains("etcd"), "{error}");
    assert!(host.position("unmount").is_none());
}

#[test]
fn a_mount_that_will_not_go_aborts_before_any_write() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.holders
        .insert("/var".into(), vec![super::fake::holder(99, "zfs-helper")]);
    host.ignore_term.insert(99);
    host.ignore_kill.insert(99);
    host.fail.insert(Fail::Unmount("/var".into()));
    let (phase, error, recovery, journal) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Unmount, Recovery::RebootCurrentSlot)
    );
    let text = error.to_string();
    assert!(
        text.contains("/var") && text.contains("pid 99 (zfs-helper"),
        "{text}"
    );
    assert!(host.position("write_meta").is_none());
    assert!(host.position("write_slot").is_none());
    no_loader_or_reboot(&host);
    let notes = &journal.phase(Phase::Unmount).expect("unmount").notes;
    assert!(notes
        .iter()
        .any(|n| matches!(n, Note::Survived { holder, .. } if holder.pid == 99)));
}

#[test]
fn a_disk_check_failing_after_the_unmount_aborts_before_any_write() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::VerifyDiskFrom(2));
    let (phase, _, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::VerifyDisk, Recovery::RebootCurrentSlot)
    );
    assert!(host.position("open_bundle(install)").is_none());
    assert!(host.position("write_meta").is_none());
    assert!(host.position("write_slot").is_none());
}

#[test]
fn a_slot_write_error_aborts_with_the_slot_marked_unbootable() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::WriteSlot);
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Install, Recovery::RebootCurrentSlot)
    );
    assert!(
        matches!(
            error,
            PhaseError::Write {
                target: InstallTarget::Slot(Slot::B),
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("SLOT-B"), "{error}");
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Empty);
    assert_eq!(host.meta.pending_try, None);
    no_loader_or_reboot(&host);
}

#[test]
fn an_esp_write_error_aborts() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::WriteEsp);
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Install, Recovery::RebootCurrentSlot)
    );
    assert!(error.to_string().contains("/bascule/B/vmlinuz"), "{error}");
    no_loader_or_reboot(&host);
}

#[test]
fn a_read_back_mismatch_aborts() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::SlotReadBack);
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Install, Recovery::RebootCurrentSlot)
    );
    assert!(
        matches!(
            error,
            PhaseError::ReadBackMismatch {
                kind: PayloadKind::Rootfs,
                ..
            }
        ),
        "{error}"
    );
    assert!(host.position("write_esp(kernel)").is_none());
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Empty);
    no_loader_or_reboot(&host);
}

#[test]
fn a_source_that_changes_between_passes_aborts_the_install() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.install_bytes = Some(b.corrupt(PayloadKind::Rootfs));
    let (phase, error, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Install, Recovery::RebootCurrentSlot)
    );
    // The bytes are hashed once, on the read-back, which names both
    // possible causes.
    assert!(
        matches!(
            error,
            PhaseError::ReadBackMismatch {
                kind: PayloadKind::Rootfs,
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("verify pass"), "{error}");
    // The slot was marked before it was touched, and nothing armed it.
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Empty);
    assert_eq!(host.meta.pending_try, None);
    no_loader_or_reboot(&host);
}

#[test]
fn a_different_manifest_in_the_install_pass_aborts_before_meta_changes() {
    let b = bundle("2.0.0");
    let other = bundle_with("2.0.1", &[], &PayloadKind::ALL, &signing_key());
    let mut host = host_with(&b);
    host.install_bytes = Some(other.bytes);
    let (phase, error, _, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(phase, Phase::Install);
    assert!(matches!(error, PhaseError::BundleChanged { .. }), "{error}");
    assert!(host.position("write_meta").is_none());
}

#[test]
fn a_failed_wipe_aborts_before_the_try_is_recorded() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::Wipe);
    let options = UpgradeOptions {
        data: DataPolicy::Wipe,
        ..Default::default()
    };
    let (phase, _, recovery, _) = aborted(&mut host, options);
    assert_eq!(
        (phase, recovery),
        (Phase::Install, Recovery::RebootCurrentSlot)
    );
    assert_eq!(host.meta.pending_try, None);
    no_loader_or_reboot(&host);
}

#[test]
fn a_failed_boot_once_entry_withdraws_the_try() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::SetOnce);
    let options = UpgradeOptions {
        reboot: RebootMode::Firmware,
        ..Default::default()
    };
    let (phase, _, recovery, journal) = aborted(&mut host, options);
    assert_eq!(
        (phase, recovery),
        (Phase::BootOnce, Recovery::RebootCurrentSlot)
    );
    assert_eq!(host.meta.pending_try, None);
    assert_eq!(host.meta.slot_info(Slot::B).state(), SlotState::Empty);
    let notes = &journal.phase(Phase::BootOnce).expect("boot once").notes;
    assert!(notes.contains(&Note::TryWithdrawn { slot: Slot::B }));
    assert!(host.position("reboot(firmware)").is_none());
}

#[test]
fn a_failed_try_record_aborts_without_arming_the_loader() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::RecordTry);
    let options = UpgradeOptions {
        reboot: RebootMode::Firmware,
        ..Default::default()
    };
    let (phase, _, recovery, _) = aborted(&mut host, options);
    assert_eq!(
        (phase, recovery),
        (Phase::BootOnce, Recovery::RebootCurrentSlot)
    );
    no_loader_or_reboot(&host);
}

#[test]
fn a_refused_reboot_after_arming_says_the_next_boot_takes_the_try() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::Reboot(RebootMode::Firmware));
    let options = UpgradeOptions {
        reboot: RebootMode::Firmware,
        ..Default::default()
    };
    let (phase, _, recovery, _) = aborted(&mut host, options);
    assert_eq!((phase, recovery), (Phase::Reboot, Recovery::RebootPending));
    assert!(host.meta.pending_try.is_some());
    assert!(host.calls.contains(&Call::SetOnce(Slot::B)));
}

#[test]
fn a_kexec_fallback_whose_boot_once_fails_reboots_the_current_slot() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::KexecRefused);
    host.fail.insert(Fail::SetOnce);
    let (phase, _, recovery, _) = aborted(&mut host, UpgradeOptions::default());
    assert_eq!(
        (phase, recovery),
        (Phase::Reboot, Recovery::RebootCurrentSlot)
    );
    assert_eq!(host.meta.pending_try, None);
    assert!(host.position("reboot(firmware)").is_none());
}
