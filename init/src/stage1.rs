//! The initramfs stage: `bascule-init` as `/init` loads the kernel modules,
//! finds the booted slot's partition by the unique GUID its entry names
//! (`root=PARTUUID=`; by its GPT label for entries without one), mounts its
//! squashfs and hands over with switch_root to the same binary inside it.

use std::path::Path;
use std::time::Duration;

use bascule_boot::gpt::Gpt;
use bascule_boot::layout::{self, Guid};
use bascule_boot::slot::SlotError;
use rustix::mount::{mount, mount_move, MountFlags};

use crate::log;
use bascule_sys::blockdev::{self, PartitionInfo, Uevents};
use bascule_sys::clock;
use bascule_sys::modules;
use bascule_sys::mount::{mount_api, API_MOUNTS};

pub use crate::timeline::TIMELINE_FILE;
const MODULES_LIST: &str = layout::INITRAMFS_MODULES_LOAD;
const NEWROOT: &str = layout::INITRAMFS_NEWROOT;
/// Bound on waiting for the slot's partition to appear.
const DEVICE_WAIT: Duration = Duration::from_secs(15);

/// True when running from an initramfs built by Bascule.
pub fn is_initramfs() -> bool {
    Path::new(MODULES_LIST).exists() && Path::new(NEWROOT).is_dir()
}

#[derive(Debug, thiserror::Error)]
pub enum Stage1Error {
    #[error(
        "no bascule.slot= on the kernel command line ({0:?}): cannot tell which slot to mount"
    )]
    NoSlot(String),
    #[error(
        "partition {label} did not appear within {DEVICE_WAIT:?}: is the disk attached (virtio)?"
    )]
    NoPartition { label: String },
    #[error("kernel command line: {0}; fix the loader entry")]
    Cmdline(#[from] SlotError),
    #[error(
        "no partition with PARTUUID {partuuid} ({label}, named by root= on the kernel command line) \
         appeared within {DEVICE_WAIT:?}: is the boot disk attached? If its partition table was \
         rewritten, the loader entries must name the new GUIDs"
    )]
    NoPartuuid { partuuid: String, label: String },
    #[error(
        "partition {dev} has PARTUUID {partuuid} as root= names, but it is labelled {found:?}, \
         not {label}: the loader entry names another slot's or another disk's partition; \
         regenerate the entries"
    )]
    WrongLabel {
        dev: String,
        partuuid: String,
        found: String,
        label: String,
    },
    #[error("cannot mount {dev} ({label}) as squashfs on {NEWROOT}: {err}; the slot may be empty or corrupt")]
    MountRoot {
        dev: String,
        label: String,
        err: std::io::Error,
    },
    #[error("switch_root into {NEWROOT} failed at {step}: {err}")]
    Switch {
        step: &'static str,
        err: std::io::Error,
    },
}

/// Handles a failed initramfs stage. When this boot is the try of a slot
/// (META names it), reboot so the loader falls back to the default slot;
/// otherwise there is nothing to fall back to, and a shell is better.
pub fn fail(err: Stage1Error) -> ! {
    log!("initramfs: {err}");
    crate::pid1::fall_back_or_emergency()
}

/// Runs the initramfs stage; on success it never returns (exec of the
/// slot's init). On failure the caller keeps PID 1 alive with a shell.
pub fn run() -> Stage1Error {
    let mut watchdog = None;
    let err = stage(&mut watchdog);
    // Failed before the slot's init: a try reboots so the loader falls
    // back (fall_back_or_emergency); otherwise the emergency shell must
    // not be reset under the operator's hands.
    if let Some(wd) = watchdog {
        wd.disarm();
    }
    err
}

/// The stage itself; `watchdog` holds the device armed here, so that it
/// stays open until the exec into the slot's init.
fn stage(watchdog: &mut Option<bascule_sys::watchdog::Watchdog>) -> Stage1Error {
    let mut timeline = vec![("initramfs start".to_owned(), clock::boottime_us())];
    for m in API_MOUNTS
        .iter()
        .filter(|m| matches!(m.target, "/proc" | "/sys" | "/dev" | "/run"))
    {
        if let Err(e) = mount_api(m) {
            log!("{e}");
        }
    }
    crate::pid1::open_console();
    let uevents =
        Uevents::open().map_err(|e| log!("no uevent socket ({e}); partitions are looked up once"));
    let list = std::fs::read_to_string(MODULES_LIST).unwrap_or_default();
    let (loaded, failures) = modules::load_list(&list);
    for f in &failures {
        // efivarfs has no device to bind to on BIOS machines: expected there.
        if f.error.raw_os_error() == Some(libc::ENODEV) && f.path.contains("efivarfs") {
            continue;
        }
        log!("cannot load module: {}", f.error);
    }
    timeline.push((format!("modules loaded ({loaded})"), clock::boottime_us()));
    // Armed from here on (the driver's probe just stopped any timer a
    // kexec carried over): a hang anywhere later, the slot's init never
    // starting among them, resets the machine. The fd is CLOEXEC and has no
    // magic close, so the timer keeps running across the exec until the
    // slot's PID 1 opens the device again and feeds it.
    *watchdog = crate::setup::open_watchdog();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(slot) = crate::pid1::booted_slot(&cmdline) else {
        return Stage1Error::NoSlot(cmdline.trim().to_owned());
    };
    let label = match slot.as_str() {
        "A" => layout::LABEL_SLOT_A.to_owned(),
        "B" => layout::LABEL_SLOT_B.to_owned(),
        other => return Stage1Error::NoSlot(format!("bascule.slot={other} (expected A or B)")),
    };
    let partuuid = match bascule_boot::slot::root_partuuid(&cmdline) {
        Ok(p) => p,
        Err(e) => return e.into(),
    };
    let sys = Path::new("/sys/class/block");
    let find = || match partuuid {
        Some(guid) => find_by_partuuid(sys, Path::new("/dev"), guid),
        // An entry from before root=PARTUUID=: any disk's partition of that label.
        None => blockdev::find_by_label(sys, &label, None).map(|dev| PartitionInfo {
            dev,
            label: Some(label.clone()),
        }),
    };
    let found = match &uevents {
        Ok(u) => u.wait_for(DEVICE_WAIT, find),
        Err(()) => find(),
    };
    let found = match (found, partuuid) {
        (Some(f), _) => f,
        (None, Some(g)) => {
            return Stage1Error::NoPartuuid {
                partuuid: g.lowercase(),
                label,
            }
        }
        (None, None) => return Stage1Error::NoPartition { label },
    };
    if let Some(g) = partuuid {
        if let Err(e) = check_label(&found, g, &label) {
            return e;
        }
        log!(
            "initramfs: {label} is {} (PARTUUID {})",
            found.dev.display(),
            g.lowercase()
        );
    }
    let dev = found.dev;
    let _ = std::fs::create_dir_all(NEWROOT);
    if let Err(e) = mount(&dev, NEWROOT, "squashfs", MountFlags::RDONLY, None) {
        return Stage1Error::MountRoot {
            dev: dev.display().to_string(),
            label,
            err: e.into(),
        };
    }
    timeline.push((format!("root mounted ({label})"), clock::boottime_us()));
    timeline.push(("switch_root".to_owned(), clock::boottime_us()));
    let _ = std::fs::create_dir_all("/run/bascule");
    // Every later lookup (META, STATE, EPHEMERAL, ESP) stays on this disk.
    let part_name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(disk) = blockdev::disk_of(&Path::new("/sys/class/block").join(&part_name)) {
        let _ = std::fs::write(blockdev::BOOT_DISK_FILE, disk);
    }
    let text: String = timeline.iter().map(|(n, t)| format!("{t} {n}\n")).collect();
    let _ = std::fs::write(TIMELINE_FILE, text);
    switch_root()
}

/// The partition whose unique GUID is `guid`: from the kernel's uevents when
/// they carry PARTUUID (mainline Linux's do not), else from each disk's GPT
/// (read from `dev_dir`), whose entry number gives the partition's sysfs
/// entry. The label comes from the GPT, for [`check_label`].
fn find_by_partuuid(sys_class_block: &Path, dev_dir: &Path, guid: Guid) -> Option<PartitionInfo> {
    if let Some(found) = blockdev::find_by_partuuid(sys_class_block, &guid.lowercase()) {
        return Some(found);
    }
    for disk in blockdev::disks(sys_class_block) {
        // Disks without a GPT (or without a medium) are not ours.
        let Ok(report) = Gpt::read_path(&dev_dir.join(&disk)) else {
            continue;
        };
        let Some(part) = report.gpt.partitions.iter().find(|p| p.unique_guid == guid) else {
            continue;
        };
        // None while the kernel has not announced the partition yet: the
        // caller waits for the next uevent.
        return blockdev::partition_number(sys_class_block, &disk, part.number).map(|p| {
            PartitionInfo {
                dev: p.dev,
                label: Some(part.label.clone()),
            }
        });
    }
    None
}

/// The partition root= names must be the booted slot's: a GUID copied from
/// another slot or disk would otherwise boot the wrong root.
fn check_label(found: &PartitionInfo, guid: Guid, label: &str) -> Result<(), Stage1Error> {
    if found.label.as_deref() == Some(label) {
        return Ok(());
    }
    Err(Stage1Error::WrongLabel {
        dev: found.dev.display().to_string(),
        partuuid: guid.lowercase(),
        found: found.label.clone().unwrap_or_default(),
        label: label.to_owned(),
    })
}

fn switch_root() -> Stage1Error {
    let step = |step: &'static str| {
        move |e: rustix::io::Errno| Stage1Error::Switch {
            step,
            err: e.into(),
        }
    };
    // Keep the API filesystems: move them under the new root.
    for dir in ["/dev", "/proc", "/sys", "/run"] {
        let target = format!("{NEWROOT}{dir}");
        if let Err(e) = mount_move(dir, target.as_str()) {
            log!("cannot move {dir} into the new root: {e}");
        }
    }
    // The initramfs lives in RAM until its files are deleted: free it
    // (the init binary and the kernel modules) before leaving it behind.
    free_initramfs();
    if let Err(e) = rustix::process::chdir(NEWROOT) {
        return step("chdir")(e);
    }
    if let Err(e) = mount_move(".", "/") {
        return step("mount --move . /")(e);
    }
    if let Err(e) = rustix::process::chroot(".") {
        return step("chroot")(e);
    }
    if let Err(e) = rustix::process::chdir("/") {
        return step("chdir /")(e);
    }
    use std::os::unix::process::CommandExt;
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let next = slot_init(&cmdline, |p| Path::new(p).exists());
    let err = std::process::Command::new(next).exec();
    Stage1Error::Switch {
        step: "exec the slot's init",
        err,
    }
}

/// The program to run as the slot's PID 1: `init=` from the kernel command
/// line when the slot has it (as initramfs-tools and dracut honour it),
/// else the slot's own copy of this binary, by its real name so that
/// /proc/1/comm says bascule-init, else /sbin/init.
fn slot_init(cmdline: &str, exists: impl Fn(&str) -> bool) -> String {
    let asked = cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("init="))
        .next_back();
    match asked {
        Some(p) if exists(p) => return p.to_owned(),
        Some(p) => log!("initramfs: init={p} is not in the slot; starting its own init"),
        None => {}
    }
    ["/sbin/bascule-init", "/sbin/init"]
        .into_iter()
        .find(|p| exists(p))
        .unwrap_or("/sbin/init")
        .to_owned()
}

/// Deletes the initramfs's own files (what `switch_root` does), staying on
/// its filesystem: mount points, the new root included, are not entered.
fn free_initramfs() {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata("/") else {
        return;
    };
    fn remove_tree(dir: &Path, dev: u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                remove_tree(&path, dev);
                let _ = std::fs::remove_dir(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    remove_tree(Path::new("/"), root.dev());
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn init_on_the_command_line_picks_the_slots_pid_1() {
        let has = |p: &str| ["/sbin/bascule-init", "/sbin/init", "/bin/sh"].contains(&p);
        assert_eq!(slot_init("quiet bascule.slot=A", has), "/sbin/bascule-init");
        assert_eq!(slot_init("init=/sbin/init quiet", has), "/sbin/init");
        assert_eq!(
            slot_init("init=/x init=/bin/sh", has),
            "/bin/sh",
            "the last wins"
        );
        assert_eq!(
            slot_init("init=/nope", has),
            "/sbin/bascule-init",
            "missing: ours"
        );
        assert_eq!(slot_init("", |p| p == "/sbin/init"), "/sbin/init");
    }
    use std::path::PathBuf;

    /// A fake /sys/class/block and /dev: `vda` and `vdb` carry the same
    /// labels (as two Bascule disks do) with their own GUIDs; the uevents
    /// carry no PARTUUID, as on mainline kernels.
    fn two_disks() -> (tempfile::TempDir, PathBuf, PathBuf, Vec<Gpt>) {
        let root = tempfile::tempdir().unwrap();
        let (class, dev) = (root.path().join("class"), root.path().join("dev"));
        std::fs::create_dir_all(&class).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let mut tables = Vec::new();
        for (i, disk) in ["vda", "vdb"].into_iter().enumerate() {
            let mut n = 0u8;
            let gpt = Gpt::for_layout(layout::DISK_SIZE, || {
                n += 1;
                [n + 16 * i as u8; 16]
            })
            .unwrap();
            let img = std::fs::File::create(dev.join(disk)).unwrap();
            img.set_len(layout::DISK_SIZE).unwrap();
            gpt.write(&mut &img).unwrap();
            let disk_dir = root.path().join("devices").join(disk);
            std::fs::create_dir_all(&disk_dir).unwrap();
            std::fs::write(
                disk_dir.join("uevent"),
                format!("DEVNAME={disk}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(&disk_dir, class.join(disk)).unwrap();
            for p in &gpt.partitions {
                let name = format!("{disk}{}", p.number);
                let dir = disk_dir.join(&name);
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(
                    dir.join("uevent"),
                    format!(
                        "DEVNAME={name}\nDEVTYPE=partition\nPARTN={}\nPARTNAME={}\n",
                        p.number, p.label
                    ),
                )
                .unwrap();
                std::os::unix::fs::symlink(&dir, class.join(&name)).unwrap();
            }
            tables.push(gpt);
        }
        (root, class, dev, tables)
    }

    #[test]
    fn partuuid_picks_the_partition_of_its_own_disk() {
        let (_root, class, dev, tables) = two_disks();
        for (disk, gpt) in ["vda", "vdb"].iter().zip(&tables) {
            for label in [layout::LABEL_SLOT_A, layout::LABEL_SLOT_B] {
                let part = gpt.find(label).unwrap();
                let found = find_by_partuuid(&class, &dev, part.unique_guid).unwrap();
                assert_eq!(
                    found.dev,
                    PathBuf::from(format!("/dev/{disk}{}", part.number))
                );
                assert_eq!(found.label.as_deref(), Some(label));
                assert!(check_label(&found, part.unique_guid, label).is_ok());
            }
        }
        assert_eq!(
            find_by_partuuid(&class, &dev, Guid::from_random_bytes([0xee; 16])),
            None
        );
    }

    #[test]
    fn a_partuuid_of_another_slot_is_refused() {
        let (_root, class, dev, tables) = two_disks();
        let b = tables[1].find(layout::LABEL_SLOT_B).unwrap().unique_guid;
        let found = find_by_partuuid(&class, &dev, b).unwrap();
        let err = check_label(&found, b, layout::LABEL_SLOT_A).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("/dev/vdb5")
                && text.contains("\"SLOT-B\"")
                && text.contains("not SLOT-A"),
            "{text}"
        );
    }
}
