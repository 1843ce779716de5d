//! Every refusal leaves the machine exactly as it was: no call that
//! changes anything (journal saves aside) happens before it.

use super::fake::{bundle, bundle_with, host_with, other_key, signing_key, Call, Fail, FakeHost};
use super::run;
use crate::journal::{Phase, PhaseStatus, SkipReason};
use crate::options::{RunMode, UpgradeOptions, VersionPolicy};
use crate::outcome::{Outcome, PlannedStep, Recovery, Refusal};
use bascule_boot::meta_record::{PendingTry, SlotId, SlotInfo, SlotState};
use bascule_boot::Slot;
use bascule_bundle::{BundleError, PayloadKind};

/// Runs the upgrade and returns the refusal, checking nothing changed.
fn refused(host: &mut FakeHost, options: UpgradeOptions) -> Refusal {
    let before = host.meta.clone();
    let (done, _) = run(host, options);
    assert_eq!(host.changes(), Vec::<&str>::new(), "{}", done.outcome);
    assert_eq!(host.meta, before);
    let rec = done.journal.phase(Phase::Verify).expect("verify phase");
    assert_eq!(rec.status, PhaseStatus::Failed);
    assert_eq!(done.journal.phases.len(), 1);
    match done.outcome {
        Outcome::Refused(r) => {
            assert_eq!(rec.error.as_deref(), Some(r.to_string().as_str()));
            r
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn a_pending_try_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.meta.pending_try = Some(PendingTry {
        slot: SlotId::B as i32,
        version: "1.5.0".into(),
        attempts: 1,
        kind: 0,
    });
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(&r, Refusal::TryPending { slot: Slot::B, version } if version == "1.5.0"),
        "{r}"
    );
    assert!(r.to_string().contains("slot B is still being tried"), "{r}");
    // Refused before the bundle was even opened.
    assert!(host.position("open_bundle(verify)").is_none());
}

#[test]
fn an_unreadable_reference_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::OpenBundle);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(matches!(r, Refusal::Unreadable(_)), "{r}");
    assert!(r.to_string().contains("file:///nope"), "{r}");
}

#[test]
fn overwriting_the_only_good_slot_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    // A was picked by hand and is not confirmed; B is the good image.
    host.meta.slot_info_mut(Slot::A).set_state(SlotState::Bad);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            r,
            Refusal::OnlyGoodSlot {
                target: Slot::B,
                booted: Slot::A,
                booted_state: SlotState::Bad,
                ..
            }
        ),
        "{r}"
    );
    assert!(r.to_string().contains("Roll back to slot B first"), "{r}");
    // Force does not override it.
    let force = UpgradeOptions {
        versions: VersionPolicy::AllowAny,
        ..Default::default()
    };
    assert!(matches!(
        refused(&mut host, force),
        Refusal::OnlyGoodSlot { .. }
    ));
}

#[test]
fn an_empty_other_slot_is_no_reason_to_refuse() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    *host.meta.slot_info_mut(Slot::B) = SlotInfo {
        version: String::new(),
        state: SlotState::Empty as i32,
        ..Default::default()
    };
    host.meta
        .slot_info_mut(Slot::A)
        .set_state(SlotState::Trying);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
}

#[test]
fn older_and_equal_versions_are_refused_unless_forced() {
    for (version, older) in [("0.9.10", true), ("1.0.0", false), ("1.0", false)] {
        let b = bundle(version);
        let mut host = host_with(&b);
        let r = refused(&mut host, UpgradeOptions::default());
        match (older, &r) {
            (true, Refusal::Older { running, image }) => {
                assert_eq!((running.as_str(), image.as_str()), ("1.0.0", version))
            }
            (false, Refusal::SameVersion { .. }) => {}
            _ => panic!("{version}: {r}"),
        }
        let mut forced = host_with(&b);
        let options = UpgradeOptions {
            versions: VersionPolicy::AllowAny,
            ..Default::default()
        };
        let (done, _) = run(&mut forced, options);
        assert!(
            matches!(done.outcome, Outcome::Rebooting(_)),
            "{version}: {}",
            done.outcome
        );
    }
    // Numeric order, not text order: 1.10 is newer than 1.9.
    let b = bundle("1.10.0");
    let mut host = host_with(&b);
    host.running.version = "1.9.0".into();
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
}

#[test]
fn a_bundle_not_for_the_running_version_is_refused() {
    let b = bundle_with("2.0.0", &["1.5.0"], &PayloadKind::ALL, &signing_key());
    let mut host = host_with(&b);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(r, Refusal::Bundle(BundleError::UpgradeRefused { .. })),
        "{r}"
    );
}

#[test]
fn an_untrusted_signer_is_refused() {
    let b = bundle_with("2.0.0", &[], &PayloadKind::ALL, &other_key());
    let mut host = host_with(&b);
    host.keys = vec![signing_key().verifying_key()];
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(r, Refusal::Bundle(BundleError::UntrustedKey { .. })),
        "{r}"
    );
}

#[test]
fn a_bad_signature_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    // A byte inside the signed manifest (after the 32-byte header).
    host.verify_bytes[40] ^= 0x01;
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(r, Refusal::Bundle(BundleError::BadSignature { .. })),
        "{r}"
    );
}

#[test]
fn a_corrupt_payload_is_refused_in_the_verify_pass() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.verify_bytes = b.corrupt(PayloadKind::Initramfs);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            r,
            Refusal::Bundle(BundleError::PayloadDigest {
                kind: PayloadKind::Initramfs,
                ..
            })
        ),
        "{r}"
    );
    // Only one pass: the install pass never opened.
    assert!(host.position("open_bundle(install)").is_none());
}

#[test]
fn a_truncated_bundle_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.verify_bytes.truncate(b.bytes.len() - 10);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(r, Refusal::Bundle(BundleError::PayloadTruncated { .. })),
        "{r}"
    );
}

#[test]
fn a_bundle_missing_a_payload_is_refused() {
    let b = bundle_with(
        "2.0.0",
        &[],
        &[PayloadKind::Rootfs, PayloadKind::Kernel],
        &signing_key(),
    );
    let mut host = host_with(&b);
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            r,
            Refusal::MissingPayload {
                kind: PayloadKind::Initramfs
            }
        ),
        "{r}"
    );
}

#[test]
fn a_rootfs_larger_than_the_slot_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.capacity = 9_999;
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            r,
            Refusal::TooLargeForSlot {
                slot: Slot::B,
                size: 10_000,
                capacity: 9_999,
                ..
            }
        ),
        "{r}"
    );
}

#[test]
fn an_esp_too_full_for_kernel_and_initramfs_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.esp_free = 7_999;
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            r,
            Refusal::EspTooSmall {
                needed: 8_000,
                free: 7_999,
                ..
            }
        ),
        "{r}"
    );
    host.esp_free = 8_000;
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(done.outcome, Outcome::Rebooting(_)),
        "{}",
        done.outcome
    );
}

#[test]
fn a_bad_partition_table_is_refused_before_anything_stops() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::VerifyDiskFrom(1));
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(matches!(r, Refusal::Disk { slot: Slot::B, .. }), "{r}");
    assert!(r.to_string().contains("CRC mismatch"), "{r}");
}

#[test]
fn a_machine_not_booted_from_a_slot_is_refused() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.running.slot = None;
    let r = refused(&mut host, UpgradeOptions::default());
    assert!(matches!(r, Refusal::NotBootedFromSlot), "{r}");
}

#[test]
fn a_meta_read_error_aborts_with_nothing_changed() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.fail.insert(Fail::ReadMeta);
    let (done, _) = run(&mut host, UpgradeOptions::default());
    assert!(
        matches!(
            done.outcome,
            Outcome::Aborted {
                phase: Phase::Verify,
                recovery: Recovery::NothingChanged,
                ..
            }
        ),
        "{}",
        done.outcome
    );
    assert_eq!(host.changes(), Vec::<&str>::new());
}

#[test]
fn a_dry_run_checks_everything_and_changes_nothing() {
    let b = bundle("2.0.0");
    let mut host = host_with(&b);
    host.holders
        .insert("/var".into(), vec![super::fake::holder(7, "postgres")]);
    let options = UpgradeOptions {
        run: RunMode::DryRun,
        ..Default::default()
    };
    let before = host.meta.clone();
    let (done, _) = run(&mut host, options);
    let mutating: Vec<&Call> = host.calls.iter().filter(|c| c.mutating()).collect();
    assert_eq!(mutating, Vec::<&Call>::new());
    assert_eq!(host.meta, before);
    assert!(host.position("open_bundle(install)").is_none());
    // The checks that need no service stopped all ran.
    for call in [
        "open_bundle(verify)",
        "verify_disk",
        "slot_capacity",
        "esp_free",
        "holders",
    ] {
        assert!(host.position(call).is_some(), "{call}");
    }
    let Outcome::DryRun(report) = done.outcome else {
        panic!("expected a dry run, got {}", done.outcome);
    };
    assert_eq!((report.from_slot, report.target), (Slot::A, Slot::B));
    assert_eq!(report.image_version, "2.0.0");
    assert_eq!(
        report.mounts,
        [("/var".into(), vec![super::fake::holder(7, "postgres")])]
    );
    assert_eq!(report.phases.len(), 10);
    assert!(report.phases.contains(&(
        Phase::LeaveCluster,
        PlannedStep::Skip(SkipReason::WorkerNode)
    )));
    assert!(report
        .phases
        .contains(&(Phase::Reboot, PlannedStep::Reboot(crate::RebootMode::Kexec))));

    // A dry run refuses what a real run would.
    let mut bad = host_with(&b);
    bad.verify_bytes = b.corrupt(PayloadKind::Rootfs);
    let (done, _) = run(&mut bad, options);
    assert!(matches!(done.outcome, Outcome::Refused(Refusal::Bundle(_))));
    assert!(bad.calls.iter().all(|c| !c.mutating()));
}
