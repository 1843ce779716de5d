//! A new slot that fails comes back on the old one by itself: a kernel
//! that panics (the full kexec × firmware × loader matrix) and a slot that
//! fails its self-check. Each ends on the old slot and version, with the
//! failed slot marked bad, the reason in `boot status` and `upgrade
//! status`, and the slot refused for a boot without `--force`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_qemu_tests::answers::{last_json, slot_state, tail, text};
use bascule_qemu_tests::upgrade as up;
use bascule_qemu_tests::{Combo, Machine};
use serde_json::Value;
use std::path::Path;

const WAIT: &str = "600";

/// `bascule upgrade` exit code for "the new slot failed and the machine
/// rolled back".
const ROLLED_BACK: i32 = 8;

/// Upgrades to `bundle` with `--wait` and checks the machine came back on
/// A 1.0.0 by itself, saying why; returns the rollback reason.
fn upgrade_rolls_back(m: &Machine, bundle: &Path, mode: &str, version: &str) -> String {
    let out = m.cli(&[
        "--json",
        "upgrade",
        "--image",
        bundle.to_str().unwrap(),
        "--reboot-mode",
        mode,
        "--wait",
        "--wait-timeout",
        WAIT,
    ]);
    let r: Value =
        last_json(&out.stdout).unwrap_or_else(|| panic!("no JSON from upgrade: {}", text(&out)));
    assert_eq!(
        out.status.code(),
        Some(ROLLED_BACK),
        "{mode}: the upgrade reports the rollback: {}",
        text(&out)
    );
    assert_eq!(r["result"], "rolled_back", "{r}");
    assert_eq!(r["booted_slot"], "A", "{r}");
    assert_eq!(r["image_version"], "1.0.0", "{r}");
    m.wait_ready();
    assert_eq!(m.running(), ("1.0.0".into(), "A"));

    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(
        slot_state(&st, "B"),
        "bad",
        "{mode}: the failed slot is bad: {st}"
    );
    assert_eq!(st["default"], "A", "{st}");
    assert_eq!(st["pending_try"], "-", "{st}");
    let failure = &st["last_failure"];
    assert_eq!(failure["slot"], "B", "{st}");
    assert_eq!(failure["version"], version, "{st}");
    let reason = failure["reason"].as_str().unwrap().to_owned();
    assert_eq!(r["message"], reason.as_str(), "the CLI says why: {r}");

    let status = m.cli_json(&["--json", "upgrade", "status"]);
    let run = status["runs"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(run["target_version"], version, "{run}");
    let after = run["after_boot"].as_str().unwrap();
    assert!(
        after.starts_with("rolled back to slot A") && after.contains(&reason),
        "{mode}: upgrade status says what happened after the boot: {after:?}"
    );

    let out = m.cli(&["boot", "once", "B"]);
    assert!(
        !out.status.success() && text(&out).contains("marked bad"),
        "a bad slot is not tried again without --force: {}",
        text(&out)
    );
    reason
}

/// The kernel of the new slot panics (no /init in its initramfs): with
/// `panic=` it resets, and the loader, whose default never left slot A,
/// boots A. Once through kexec, once through the firmware.
fn panic_falls_back(combo: Combo) {
    let bundle = up::panicking_bundle("2.2.0");
    let m = Machine::boot(combo);
    m.wait_ready();
    for mode in ["kexec", "firmware"] {
        let panics_before = m.serial().matches("Kernel panic").count();
        let reason = upgrade_rolls_back(&m, &bundle, mode, "2.2.0");
        assert!(
            reason.contains("did not complete: slot A booted instead"),
            "{mode}: {reason}"
        );
        assert!(
            m.serial().matches("Kernel panic").count() > panics_before,
            "{mode}: the new kernel did panic"
        );
    }
}

#[test]
fn grub_bios_a_kernel_panic_falls_back() {
    panic_falls_back(Combo::GrubBios);
}

#[test]
fn grub_uefi_a_kernel_panic_falls_back() {
    panic_falls_back(Combo::GrubUefi);
}

#[test]
fn sdboot_uefi_a_kernel_panic_falls_back() {
    panic_falls_back(Combo::SdBootUefi);
}

/// The new slot boots, but its `gate` service never becomes ready: past
/// the slot's self-check deadline the try fails naming `gate`, and the
/// machine reboots into A by itself; once through kexec, once through the
/// firmware.
#[test]
fn sdboot_uefi_a_failed_self_check_rolls_back() {
    let bundle = up::self_check_failing_bundle("2.3.0", 15);
    let m = Machine::boot(Combo::SdBootUefi);
    m.wait_ready();
    for mode in ["kexec", "firmware"] {
        let reason = upgrade_rolls_back(&m, &bundle, mode, "2.3.0");
        assert!(
            reason.contains("self-check of slot B failed") && reason.contains("gate (not ready)"),
            "{mode}: {reason}\n{}",
            tail(&m.serial())
        );
    }
}

/// The new slot's init never starts (it only sleeps): the watchdog the
/// new initramfs armed resets the machine, also after a kexec (the timer
/// survives it with `stop_on_reboot=0`), and the loader boots A.
#[test]
fn grub_uefi_a_hang_after_the_kernel_resets_and_falls_back() {
    let bundle = up::hanging_bundle("2.4.0");
    let m = Machine::boot(Combo::GrubUefi);
    m.wait_ready();
    for mode in ["kexec", "firmware"] {
        let hung_before = m.serial().matches("hanging init: feeding nothing").count();
        let reason = upgrade_rolls_back(&m, &bundle, mode, "2.4.0");
        assert!(
            reason.contains("did not complete: slot A booted instead"),
            "{mode}: {reason}"
        );
        assert!(
            m.serial().matches("hanging init: feeding nothing").count() > hung_before,
            "{mode}: the new slot's init ran and hung"
        );
    }
}
