//! A second disk carrying Bascule labels is never taken for the boot disk:
//! the loader entry names the slot's partition by its PARTUUID, and the
//! initramfs mounts that partition and no other disk's SLOT-A.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_qemu_tests::{image, Combo, Machine};
use bascule_rootfs::gpt::Gpt;
use bascule_rootfs::layout;

/// Prints `PREFIX<value>` from a console command and returns the value.
fn console_value(m: &Machine, prefix: &str, command: &str) -> String {
    let line = m.console_line(&format!("echo {prefix}$({command})"), prefix, |l| {
        l.starts_with(prefix)
    });
    line[prefix.len()..].trim().to_owned()
}

#[test]
fn a_second_disk_with_bascule_labels_is_not_the_boot_disk() {
    let mut m = Machine::new(Combo::GrubBios);
    // Another Bascule image (its own random GUIDs), enumerated first: vda.
    // Its META is blanked, so a META read from it would show no versions.
    let decoy = m.attach_disk_before(&image(Combo::GrubUefi).disk);
    {
        use std::os::unix::fs::FileExt;
        let idx = layout::index_of(layout::LABEL_META).unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&decoy)
            .unwrap();
        f.write_all_at(
            &vec![0u8; layout::partition_size(idx) as usize],
            layout::partition_offset(idx),
        )
        .unwrap();
    }
    let own = Gpt::read_path(m.disk()).unwrap().gpt;
    let other = Gpt::read_path(&decoy).unwrap().gpt;
    let own_a = own
        .find(layout::LABEL_SLOT_A)
        .unwrap()
        .unique_guid
        .lowercase();
    assert_ne!(
        own_a,
        other
            .find(layout::LABEL_SLOT_A)
            .unwrap()
            .unique_guid
            .lowercase(),
        "the two images must differ in their GUIDs"
    );
    m.start();
    m.wait_ready();

    // The entry GRUB booted names the boot disk's SLOT-A.
    let cmdline = console_value(&m, "cmdline=", "cat /proc/cmdline");
    assert!(
        cmdline.contains(&format!("root=PARTUUID={own_a} ")),
        "{cmdline}"
    );
    // The decoy is vda, the boot disk vdb: the root and every later lookup
    // are on vdb.
    let boot_disk = console_value(&m, "boot-disk=", "cat /run/bascule/boot-disk");
    assert_eq!(boot_disk, "vdb");
    let root = console_value(
        &m,
        "root-dev=",
        "grep ' / squashfs ' /proc/mounts | cut -d' ' -f1",
    );
    assert_eq!(root, "/dev/vdb4");
    let esp = console_value(
        &m,
        "esp-dev=",
        "grep ' /boot ' /proc/mounts | cut -d' ' -f1",
    );
    assert_eq!(esp, "/dev/vdb2");
    // Whether this kernel puts PARTUUID in partition uevents (the initramfs
    // reads the GPT when it does not): recorded for whoever reads the log.
    let uevent = console_value(
        &m,
        "uevent-partuuid=",
        "grep PARTUUID= /sys/class/block/vdb4/uevent || echo none",
    );
    eprintln!("PARTUUID in vdb4's uevent: {uevent}");

    // META comes from the boot disk: the decoy's is blank.
    let s = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(s["booted"], "A", "{s}");
    let versions: Vec<(String, String)> = s["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["slot"].as_str().unwrap().to_owned(),
                x["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("A".to_owned(), "1.0.0".to_owned()),
            ("B".to_owned(), "2.0.0".to_owned())
        ],
        "{s}"
    );
}
