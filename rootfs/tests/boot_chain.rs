//! Proves the image chain end to end before bascule-init exists: firmware →
//! bootloader → kernel + initramfs from the ESP → modules from
//! modules.load → slot partition found by GPT label → squashfs mounted.
//!
//! The initramfs /init here is a busybox script that does those steps,
//! prints one marker line on the serial console and powers off. Each of the
//! three boot combinations is built and booted under QEMU/TCG, plus one
//! image booting slot B by default. VMs run one at a time (two cores), each
//! bounded by a timeout, and are killed on drop.

use bascule_rootfs::qemu::{self, QemuConfig, Serial};
use bascule_rootfs::Slot;
use bascule_rootfs::{build_image, Bootloader, Firmware, ImageSpec, InitramfsInit, SlotBuild};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// About 10 s under TCG; generous for a loaded two-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

const MARKER: &str = "BASCULE-SMOKE";

const SMOKE_INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
export PATH=/bin
loaded=0
failed=""
while read -r ko params; do
  case "$ko" in ''|'#'*) continue ;; esac
  if insmod "$ko" $params 2>/dev/null; then loaded=$((loaded + 1)); else failed="$failed $(basename "$ko" .ko)"; fi
done < /etc/bascule/modules.load
slot=$(sed -n 's/.*bascule\.slot=\([AB]\).*/\1/p' /proc/cmdline)
dev=""
for try in 1 2 3 4 5 6 7 8 9 10; do
  for u in /sys/class/block/*/uevent; do
    if grep -qx "PARTNAME=SLOT-$slot" "$u"; then dev=/dev/$(sed -n 's/^DEVNAME=//p' "$u"); fi
  done
  [ -n "$dev" ] && break
  sleep 0.2
done
version=none
if [ -n "$dev" ] && mount -t squashfs -o ro "$dev" /newroot; then version=$(cat /newroot/etc/bascule/version); fi
echo "BASCULE-SMOKE slot=$slot version=$version root=$dev loaded=$loaded failed=[$failed ] uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
"#;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn slot(version: &str) -> SlotBuild {
    // Any static binary stands in for the init and the CLI: this test only
    // reads /etc/bascule/version from the slot.
    SlotBuild {
        version: version.to_string(),
        init: PathBuf::from("/bin/busybox"),
        cli: PathBuf::from("/bin/busybox"),
        initramfs_init: InitramfsInit::BusyboxScript(SMOKE_INIT.to_string()),
    }
}

struct Outcome {
    line: String,
    build: Duration,
    to_marker: Duration,
}

fn boot(
    dir: &Path,
    bootloader: Bootloader,
    firmware: Firmware,
    default: Slot,
) -> Result<Outcome, String> {
    let out = dir.join(format!("{bootloader}-{firmware}-{default}"));
    let mut spec = ImageSpec::new(
        bootloader,
        firmware,
        slot("smoke-a"),
        &out,
        &bascule_rootfs::image::default_cache_dir(&workspace()),
    );
    spec.slot_b = Some(slot("smoke-b"));
    spec.default_slot = default;
    let t0 = Instant::now();
    let image = build_image(&spec).map_err(|e| format!("building the image: {e}"))?;
    let build = t0.elapsed();

    let log = out.join("serial.log");
    let mut config: QemuConfig = image.qemu_config();
    config.serial = Serial::File(log.clone());
    config.no_reboot = true;
    if let Some(vars) = &config.ovmf_vars {
        qemu::fresh_ovmf_vars(vars).map_err(|e| e.to_string())?;
    }
    let t1 = Instant::now();
    let mut vm = config.spawn().map_err(|e| e.to_string())?;
    let mut to_marker = None;
    let deadline = t1 + BOOT_TIMEOUT;
    let exited = loop {
        if to_marker.is_none() && read(&log).contains(MARKER) {
            to_marker = Some(t1.elapsed());
        }
        match vm.wait_timeout(Duration::from_millis(100)) {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => break None,
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let serial = read(&log);
    let tail: String = serial
        .lines()
        .rev()
        .take(30)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
        .join("\n");
    let Some(line) = serial
        .lines()
        .find_map(|l| l.find(MARKER).map(|i| l[i..].trim_end().to_string()))
    else {
        return Err(format!(
            "no {MARKER} line (QEMU {}); serial log tail:\n{tail}\nQEMU stderr:\n{}",
            if exited.is_some() {
                "exited"
            } else {
                "timed out"
            },
            vm.stderr()
        ));
    };
    if exited.is_none() {
        return Err(format!("marker seen but QEMU did not power off: {line}"));
    }
    Ok(Outcome {
        line,
        build,
        to_marker: to_marker.unwrap_or_else(|| t1.elapsed()),
    })
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .unwrap_or("")
}

fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}

#[test]
fn every_boot_combination_reaches_the_initramfs_and_mounts_its_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        (Bootloader::Grub, Firmware::Bios, Slot::A),
        (Bootloader::Grub, Firmware::Uefi, Slot::A),
        (Bootloader::SdBoot, Firmware::Uefi, Slot::A),
        (Bootloader::Grub, Firmware::Bios, Slot::B),
    ];
    let mut failures = Vec::new();
    for (bootloader, firmware, default) in cases {
        let name = format!("{bootloader}+{firmware} slot {default}");
        match boot(dir.path(), bootloader, firmware, default) {
            Ok(o) => {
                eprintln!(
                    "{name}: image built in {:.1}s, marker after {:.1}s: {}",
                    o.build.as_secs_f64(),
                    o.to_marker.as_secs_f64(),
                    o.line
                );
                let want_version = if default == Slot::A {
                    "smoke-a"
                } else {
                    "smoke-b"
                };
                // efivarfs refuses to load without EFI runtime services.
                let allowed_failures = if firmware == Firmware::Bios {
                    "[ efivarfs ]"
                } else {
                    "[ ]"
                };
                let checks = [
                    (
                        field(&o.line, "slot") == default.as_str(),
                        "slot from the command line",
                    ),
                    (
                        field(&o.line, "version") == want_version,
                        "version read from the mounted slot",
                    ),
                    (
                        field(&o.line, "root").starts_with("/dev/vda"),
                        "slot partition found by label",
                    ),
                    (
                        o.line.contains(&format!("failed={allowed_failures}")),
                        "every module loaded",
                    ),
                ];
                for (ok, what) in checks {
                    if !ok {
                        failures.push(format!("{name}: wrong {what}: {}", o.line));
                    }
                }
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
