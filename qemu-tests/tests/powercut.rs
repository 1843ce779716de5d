//! Power cuts in the middle of upgrades: QEMU is killed (SIGKILL, no
//! shutdown) at points chosen from PID 1's journal lines on the console.
//! After each cut the machine boots by itself to a good slot (the one the
//! record says is safe), META holds two valid copies, and the next upgrade
//! works.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_qemu_tests::answers::{slot_state, text};
use bascule_qemu_tests::upgrade as up;
use bascule_qemu_tests::{meta_both_valid, Combo, Machine};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn boot_status(m: &Machine) -> Value {
    m.cli_json(&["--json", "boot", "status"])
}

/// Starts an upgrade, cuts the power when the console shows `marker` (a
/// line PID 1 logs as the run passes that point), powers on again and
/// waits until the machine serves.
fn cut_at(m: &mut Machine, bundle: &Path, mode: &str, marker: &str) {
    let from = m.serial().len();
    let mut cli = m.cli_spawn(&[
        "upgrade",
        "--image",
        bundle.to_str().unwrap(),
        "--reboot-mode",
        mode,
    ]);
    m.wait_init_line(from, marker, Duration::from_secs(600));
    m.cut_power();
    // The CLI loses its machine with the socket: reap it.
    let _ = cli.kill();
    let _ = cli.wait();
    // A cut inside a META write may tear one copy; the boot that follows
    // must leave both valid.
    m.start();
    m.wait_ready();
    let record = meta_both_valid(m.disk())
        .unwrap_or_else(|e| panic!("after the boot that followed the cut at {marker:?}: {e}"));
    assert!(record.pending_try.is_none(), "{marker:?}: {record:?}");
}

fn upgrade_wait(m: &Machine, bundle: &Path, extra: &[&str], version: &str, slot: &str) {
    let mut args = vec![
        "upgrade",
        "--image",
        bundle.to_str().unwrap(),
        "--wait",
        "--wait-timeout",
        "600",
    ];
    args.extend_from_slice(extra);
    let out = m.cli(&args);
    assert!(
        out.status.success(),
        "the upgrade after the cut: {}",
        text(&out)
    );
    m.wait_ready();
    assert_eq!(m.running(), (version.into(), slot));
}

/// A cut while the machine runs: the next boot runs e2fsck on both
/// journals (a clean boot runs none). Cuts before the new slot runs: during
/// the slot write and between the slot write and the ESP files (the old slot boots; the half-written slot
/// is on record as empty, never bootable),
/// and right after the loader's once-entry in firmware mode (the loader
/// takes the try; the new slot boots and is confirmed).
#[test]
fn power_cuts_before_the_new_slot_runs_leave_a_bootable_machine() {
    let b2 = up::bundle("2.1.0");
    let mut m = Machine::boot(Combo::GrubBios);
    m.wait_ready();

    // STATE comes clean from the image and EPHEMERAL is created at the
    // first boot: no e2fsck. A cut leaves both journals to recover, and
    // the next boot checks both before mounting them.
    assert!(
        !m.serial().contains("e2fsck -p /dev/"),
        "e2fsck ran on clean filesystems:\n{}",
        m.serial()
    );
    let from = m.serial().len();
    m.cut_power();
    m.start();
    m.wait_ready();
    let after = m.serial()[from..].to_owned();
    for label in ["STATE", "EPHEMERAL"] {
        let line = format!(
            "partition {label}: its journal needs recovery (not unmounted last time): running /sbin/e2fsck -p"
        );
        assert!(after.contains(&line), "no {line:?} after the cut:\n{after}");
    }

    cut_at(&mut m, &b2, "kexec", "slot B marked as being written");
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    let st = boot_status(&m);
    assert_eq!(slot_state(&st, "B"), "empty", "{st}");
    assert_eq!(st["default"], "A", "{st}");
    let out = m.cli(&["boot", "once", "B"]);
    assert!(!out.status.success(), "an empty slot is not bootable");

    // The slot is written and checked; its kernel and initramfs are not
    // yet on the ESP.
    cut_at(&mut m, &b2, "kexec", "install: rootfs payload");
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    let st = boot_status(&m);
    assert_eq!(slot_state(&st, "B"), "empty", "{st}");
    assert_eq!(st["default"], "A", "{st}");

    cut_at(&mut m, &b2, "firmware", "boot-once entry set to slot B");
    assert_eq!(m.running(), ("2.1.0".into(), "B"));
    let st = boot_status(&m);
    assert_eq!(slot_state(&st, "B"), "good", "{st}");
    assert_eq!(
        st["default"], "B",
        "the confirmed try became the default: {st}"
    );
}

/// Cuts once the try is on record: right after META records it (kexec:
/// the loader's default never moved, the old slot boots and fails the try
/// that never ran), during the self-check on the new slot (the same), and
/// right after the confirmation and the default switch (the new slot
/// boots). Then a whole upgrade runs.
#[test]
fn power_cuts_after_the_try_is_recorded_leave_a_bootable_machine() {
    let b2 = up::bundle("2.1.0");
    let b3 = up::bundle("3.0.0");
    let mut m = Machine::boot(Combo::GrubUefi);
    m.wait_ready();

    cut_at(&mut m, &b2, "kexec", "try of 2.1.0 in slot B recorded");
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    assert_eq!(slot_state(&boot_status(&m), "B"), "bad");

    // During the self-check: with a slot that is never ready (its check
    // would fail only 15 s later), so the cut cannot come after a quick
    // confirmation instead.
    let held_open = up::self_check_failing_bundle("2.3.0", 15);
    cut_at(
        &mut m,
        &held_open,
        "kexec",
        "or the machine reboots into the slot it came from",
    );
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    assert_eq!(slot_state(&boot_status(&m), "B"), "bad");

    cut_at(&mut m, &b2, "kexec", "slot B confirmed: its try passed");
    assert_eq!(m.running(), ("2.1.0".into(), "B"));
    let st = boot_status(&m);
    assert_eq!(st["default"], "B", "{st}");
    assert_eq!(slot_state(&st, "B"), "good", "{st}");

    upgrade_wait(&m, &b3, &[], "3.0.0", "A");
}
