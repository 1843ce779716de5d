//! Boot slots end to end, for each boot chain: boot-once lands in the other
//! slot once, a default sticks, a lost grubenv still boots the default, and
//! a failed try falls back and is not retried.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_qemu_tests::{Combo, Machine};
use bascule_rootfs::layout;
use std::path::Path;

fn booted(m: &Machine) -> String {
    match m.call(Call::Version(pb::VersionRequest {})) {
        Ok(Reply::Version(v)) => match pb::Slot::try_from(v.booted_slot) {
            Ok(pb::Slot::A) => "A".into(),
            Ok(pb::Slot::B) => "B".into(),
            other => panic!("booted slot {other:?}"),
        },
        other => panic!("version: {other:?}"),
    }
}

/// Reboots through the API and waits until a new boot is ready.
fn reboot(m: &Machine) {
    m.reboot_and_wait();
}

fn slot_state(status: &serde_json::Value, slot: &str) -> String {
    status["slots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["slot"] == slot)
        .unwrap()["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn slots(combo: Combo) {
    let m = Machine::boot(combo);
    m.wait_ready();
    let s = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(s["booted"], "A");
    assert_eq!(s["default"], "A");
    assert_eq!(slot_state(&s, "A"), "good");
    assert_eq!(slot_state(&s, "B"), "good");

    // Boot once B: B this time, A the time after.
    let s = m.cli_json(&["--json", "boot", "once", "B"]);
    assert_eq!(s["once"], "B");
    assert_eq!(s["pending_try"], "B");
    reboot(&m);
    assert_eq!(booted(&m), "B");
    let s = m.cli_json(&["--json", "boot", "status"]);
    if combo == Combo::SdBootUefi {
        assert_eq!(
            s["loader_entry"], "bascule-b+1.conf",
            "LoaderEntrySelected names the counted entry it booted"
        );
    }
    assert_eq!(s["default"], "A", "boot-once leaves the default alone");
    assert_eq!(
        s["pending_try"], "-",
        "the try was confirmed once every service was ready"
    );
    assert_eq!(slot_state(&s, "B"), "good");
    reboot(&m);
    assert_eq!(booted(&m), "A");

    // A default sticks across reboots.
    let s = m.cli_json(&["--json", "boot", "set-default", "B"]);
    assert_eq!(s["default"], "B");
    reboot(&m);
    assert_eq!(booted(&m), "B");
    if combo == Combo::SdBootUefi {
        reboot(&m);
    } else {
        // A zeroed grubenv: GRUB boots the default baked into grub.cfg.
        m.console_run(
            &format!(
                "dd if=/dev/zero of={} bs=1024 count=1 conv=notrunc 2>/dev/null; sync; echo grubenv-zeroed",
                layout::on_esp(Path::new(layout::MOUNT_ESP), layout::ESP_GRUBENV).display()
            ),
            "grubenv-zeroed",
        );
        reboot(&m);
    }
    assert_eq!(booted(&m), "B", "B boots every time once it is the default");

    // A failed try: slot B's root is destroyed, B is tried once, the
    // loader falls back to A, and B is not tried again.
    m.cli_json(&["--json", "boot", "set-default", "A"]);
    let slot_b = layout::index_of(layout::LABEL_SLOT_B).unwrap() + 1;
    m.cli_json(&["--json", "boot", "once", "B"]);
    m.console_run(&format!("dd if=/dev/zero of=/dev/vda{slot_b} bs=1M count=4 2>/dev/null; sync; echo slot-b-destroyed"), "slot-b-destroyed");
    reboot(&m);
    assert_eq!(booted(&m), "A", "the loader fell back to A");
    assert!(
        m.serial()
            .contains("this boot was the try of slot B: rebooting"),
        "B's initramfs gave up and rebooted"
    );
    let s = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(slot_state(&s, "B"), "bad");
    assert_eq!(s["pending_try"], "-");
    assert!(
        s["last_failure"]["reason"]
            .as_str()
            .unwrap()
            .contains("slot A booted instead"),
        "{s}"
    );
    let out = m.cli(&["boot", "once", "B"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("marked bad"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    reboot(&m);
    assert_eq!(booted(&m), "A", "a failed try is not retried");
}

#[test]
fn grub_bios_slots() {
    slots(Combo::GrubBios);
}

#[test]
fn grub_uefi_slots() {
    slots(Combo::GrubUefi);
}

#[test]
fn sdboot_uefi_slots() {
    slots(Combo::SdBootUefi);
}
