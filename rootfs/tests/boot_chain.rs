//! Proves the image chain end to end before bascule-init exists: firmware →
//! bootloader → kernel + initramfs from the ESP → modules from
//! modules.load → slot partition found by GPT label → squashfs mounted.
//!
//! The initramfs /init here is a busybox script that does those steps,
//! prints one marker line on the serial console and powers off. Each of the
//! three boot combinations is built and booted under QEMU/TCG, plus one
//! image booting slot B by default. VMs run one at a time (two cores), each
//! bounded by a timeout, and are killed on drop.
//!
//! The script also runs the slot's own e2fsprogs (chroot into the mounted
//! slot): `mkfs.ext4 -F` on a scratch file in tmpfs, `e2fsck -p` (what
//! the init runs before mounting) and `e2fsck -fn` on it, which proves the
//! copied binaries find their shared libraries. The marker's `uptime` is
//! taken before that; `mkfs_done`, `preen_done` and `end` after each step.
//! mkfs.ext4 takes about 4 s here: the guest's CRNG is not initialised yet
//! (QEMU's default CPU has no RDRAND, and there is no virtio-rng), and
//! libuuid retries a non-blocking getrandom 8 times 125 ms for each random
//! UUID before falling back to /dev/urandom. e2fsck -p takes 0.05 s.
//!
//! Each image's loader configuration is checked on the built disk
//! (`grub-script-check`, `grub-editenv list` of grubenv copied out with
//! mcopy, the systemd-boot files), and the GRUB images booting A are booted
//! twice more: with `next_entry=B` (lands in B, and GRUB's `save_env` must
//! have recorded the try on the FAT ESP as `grubcfg::model_boot` predicts),
//! then plainly (back in A).
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_boot::grubcfg::{model_boot, GrubSlotVars};
use bascule_boot::grubenv::GrubEnv;
use bascule_rootfs::qemu::{self, QemuConfig, Serial};
use bascule_rootfs::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, SlotBuild,
};
use bascule_rootfs::{layout, Slot};
use std::path::{Path, PathBuf};
use std::process::Command;
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
e2fs=none
up=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$dev" ] && mount -t squashfs -o ro "$dev" /newroot; then
  version=$(cat /newroot/etc/bascule/version)
  mount -t proc proc /newroot/proc
  mount -t devtmpfs devtmpfs /newroot/dev
  mount -t tmpfs tmpfs /newroot/tmp
  up=$(cut -d' ' -f1 /proc/uptime)
  e2fs=failed
  if chroot /newroot /bin/truncate -s 16M /tmp/scratch.img; then
    if chroot /newroot /sbin/mkfs.ext4 -q -F -L SCRATCH /tmp/scratch.img; then
      t_mkfs=$(cut -d' ' -f1 /proc/uptime)
      if chroot /newroot /sbin/e2fsck -p /tmp/scratch.img; then
        t_preen=$(cut -d' ' -f1 /proc/uptime)
        chroot /newroot /sbin/e2fsck -fn /tmp/scratch.img && e2fs=ok
      fi
    fi
  fi
fi
echo "BASCULE-SMOKE slot=$slot version=$version root=$dev loaded=$loaded failed=[$failed ] uptime=$up e2fs=$e2fs mkfs_done=$t_mkfs preen_done=$t_preen end=$(cut -d' ' -f1 /proc/uptime)"
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
    // reads /etc/bascule/version from the slot and runs its e2fsprogs.
    SlotBuild {
        version: version.to_string(),
        init: PathBuf::from("/bin/busybox"),
        cli: PathBuf::from("/bin/busybox"),
        initramfs_init: InitramfsInit::BusyboxScript(SMOKE_INIT.to_string()),
    }
}

struct Outcome {
    line: String,
    to_marker: Duration,
}

fn build(
    dir: &Path,
    bootloader: Bootloader,
    firmware: Firmware,
    default: Slot,
) -> Result<BuiltImage, String> {
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
    build_image(&spec).map_err(|e| format!("building the image: {e}"))
}

/// Boots `image` once (fresh OVMF variables), bounded by [`BOOT_TIMEOUT`],
/// and returns the marker line.
fn boot(image: &BuiltImage, log: &Path) -> Result<Outcome, String> {
    let _ = std::fs::remove_file(log);
    let mut config: QemuConfig = image.qemu_config();
    config.serial = Serial::File(log.to_path_buf());
    config.no_reboot = true;
    if let Some(vars) = &config.ovmf_vars {
        qemu::fresh_ovmf_vars(vars).map_err(|e| e.to_string())?;
    }
    let t1 = Instant::now();
    let mut vm = config.spawn().map_err(|e| e.to_string())?;
    let mut to_marker = None;
    let deadline = t1 + BOOT_TIMEOUT;
    let exited = loop {
        if to_marker.is_none() && read(log).contains(MARKER) {
            to_marker = Some(t1.elapsed());
        }
        match vm.wait_timeout(Duration::from_millis(100)) {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => {}
            Ok(None) => break None,
            Err(e) => return Err(format!("waiting for QEMU: {e}")),
        }
    };
    let serial = read(log);
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
        to_marker: to_marker.unwrap_or_else(|| t1.elapsed()),
    })
}

/// What a boot must show: the slot, its version, the device, the modules.
fn check_boot(o: &Outcome, firmware: Firmware, slot: Slot) -> Vec<String> {
    let want_version = if slot == Slot::A {
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
            field(&o.line, "slot") == slot.as_str(),
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
        (
            field(&o.line, "e2fs") == "ok",
            "result of mkfs.ext4 -F and e2fsck -fn on a scratch file inside the slot",
        ),
    ];
    checks
        .iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, what)| format!("wrong {what} (want slot {slot}): {}", o.line))
        .collect()
}

/// The ESP inside the disk image, as mtools names it.
fn esp_of(disk: &Path) -> String {
    let offset = layout::partition_offset(layout::ESP_PARTITION_NUMBER - 1);
    format!("{}@@{offset}", disk.display())
}

fn mtools(program: &str, disk: &Path) -> Command {
    let mut c = Command::new(program);
    c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(esp_of(disk));
    c
}

fn run(c: &mut Command) -> Result<String, String> {
    let out = c.output().map_err(|e| format!("{c:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{c:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// grubenv on the disk's ESP, copied out to `tmp` and parsed.
fn read_grubenv(disk: &Path, tmp: &Path) -> Result<GrubEnv, String> {
    run(mtools("mcopy", disk)
        .arg("-o")
        .arg(format!("::{}", layout::ESP_GRUBENV))
        .arg(tmp))?;
    let block = std::fs::read(tmp).map_err(|e| e.to_string())?;
    if block.len() != 1024 {
        return Err(format!("grubenv on the ESP is {} bytes", block.len()));
    }
    GrubEnv::parse(&block).map_err(|e| format!("grubenv on the ESP: {e}"))
}

/// Replaces grubenv on the disk's ESP (as the running system would set
/// `next_entry`).
fn write_grubenv(disk: &Path, env: &GrubEnv, tmp: &Path) -> Result<(), String> {
    let block = env.to_block().map_err(|e| e.to_string())?;
    std::fs::write(tmp, block).map_err(|e| e.to_string())?;
    run(mtools("mcopy", disk)
        .arg("-o")
        .arg(tmp)
        .arg(format!("::{}", layout::ESP_GRUBENV)))
    .map(drop)
}

/// The loader configuration on the built disk is what the real tools accept.
fn check_esp_config(image: &BuiltImage, default: Slot, work: &Path) -> Result<(), String> {
    match image.bootloader {
        Bootloader::Grub => {
            let cfg = work.join("grub.cfg");
            run(mtools("mcopy", &image.disk)
                .arg("-o")
                .arg(format!("::{}", layout::ESP_GRUB_CFG))
                .arg(&cfg))?;
            run(Command::new("grub-script-check").arg(&cfg))?;
            let env = work.join("grubenv");
            read_grubenv(&image.disk, &env)?;
            let listed = run(Command::new("grub-editenv").arg(&env).arg("list"))?;
            let want = format!("saved_entry={default}\nnext_entry=\nbascule_trying=\n");
            if listed != want {
                return Err(format!("grub-editenv lists {listed:?}, want {want:?}"));
            }
        }
        Bootloader::SdBoot => {
            let conf =
                run(mtools("mtype", &image.disk).arg(format!("::{}", layout::ESP_LOADER_CONF)))?;
            if !conf.contains("default bascule-*\n") {
                return Err(format!("loader.conf: {conf:?}"));
            }
            for slot in Slot::ALL {
                let entry = run(mtools("mtype", &image.disk).arg(format!(
                    "::{}/bascule-{}.conf",
                    layout::ESP_LOADER_ENTRIES,
                    slot.lower()
                )))?;
                let key = if slot == default {
                    "bascule-0-default"
                } else {
                    "bascule-1-standby"
                };
                if !entry.contains(&format!("sort-key {key}\n")) {
                    return Err(format!("entry of slot {slot}: {entry:?}"));
                }
            }
        }
    }
    Ok(())
}

/// GRUB boot-once on the real firmware: `next_entry=B` boots B once, GRUB's
/// `save_env` records the try on the FAT ESP exactly as `model_boot` says,
/// and the next boot is the default again.
fn boot_once(image: &BuiltImage, name: &str, work: &Path) -> Vec<String> {
    let tmp = work.join("grubenv-once");
    let mut armed = GrubEnv::new();
    let vars = GrubSlotVars {
        saved_entry: Some(Slot::A),
        next_entry: Some(Slot::B),
        trying: None,
    };
    if let Err(e) = vars.apply_to(&mut armed) {
        return vec![format!("{name}: {e}")];
    }
    let want_after = model_boot(Some(&armed), Slot::A, true).env_after;
    let mut failures = Vec::new();
    let result = write_grubenv(&image.disk, &armed, &tmp)
        .and_then(|()| boot(image, &work.join("serial-once.log")));
    match result {
        Ok(o) => {
            eprintln!(
                "{name} boot once B: marker after {:.1}s: {}",
                o.to_marker.as_secs_f64(),
                o.line
            );
            failures.extend(check_boot(&o, image.firmware, Slot::B));
        }
        Err(e) => failures.push(e),
    }
    match read_grubenv(&image.disk, &tmp) {
        Ok(after) if Some(&after) == want_after.as_ref() => {}
        Ok(after) => failures.push(format!(
            "grubenv after the boot-once: {after:?}, want {want_after:?}"
        )),
        Err(e) => failures.push(e),
    }
    match boot(image, &work.join("serial-after.log")) {
        Ok(o) => {
            eprintln!(
                "{name} after the try: marker after {:.1}s: {}",
                o.to_marker.as_secs_f64(),
                o.line
            );
            failures.extend(check_boot(&o, image.firmware, Slot::A));
        }
        Err(e) => failures.push(e),
    }
    failures
        .into_iter()
        .map(|f| format!("{name} boot-once: {f}"))
        .collect()
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
        let t0 = Instant::now();
        let image = match build(dir.path(), bootloader, firmware, default) {
            Ok(i) => i,
            Err(e) => {
                failures.push(format!("{name}: {e}"));
                continue;
            }
        };
        let built = t0.elapsed();
        let work = image
            .disk
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        if let Err(e) = check_esp_config(&image, default, &work) {
            failures.push(format!("{name}: loader configuration on the ESP: {e}"));
        }
        match boot(&image, &work.join("serial.log")) {
            Ok(o) => {
                eprintln!(
                    "{name}: image built in {:.1}s, marker after {:.1}s: {}",
                    built.as_secs_f64(),
                    o.to_marker.as_secs_f64(),
                    o.line
                );
                failures.extend(
                    check_boot(&o, firmware, default)
                        .into_iter()
                        .map(|f| format!("{name}: {f}")),
                );
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
        if bootloader == Bootloader::Grub && default == Slot::A {
            failures.extend(boot_once(&image, &name, &work));
        }
        // Each image is about 30 MB on disk; keep only what is needed.
        let _ = std::fs::remove_file(&image.disk);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
