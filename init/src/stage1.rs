//! The initramfs stage: `bascule-init` as `/init` loads the kernel modules,
//! finds the booted slot's partition by its GPT label, mounts its squashfs
//! and hands over with switch_root to the same binary inside it.

use std::path::Path;
use std::time::Duration;

use bascule_boot::layout;
use rustix::mount::{mount, mount_move, MountFlags};

use crate::log;
use bascule_sys::blockdev::{self, Uevents};
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
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let Some(slot) = crate::pid1::booted_slot(&cmdline) else {
        return Stage1Error::NoSlot(cmdline.trim().to_owned());
    };
    let label = match slot.as_str() {
        "A" => layout::LABEL_SLOT_A.to_owned(),
        "B" => layout::LABEL_SLOT_B.to_owned(),
        other => return Stage1Error::NoSlot(format!("bascule.slot={other} (expected A or B)")),
    };
    let find = || blockdev::find_by_label(Path::new("/sys/class/block"), &label, None);
    let dev = match &uevents {
        Ok(u) => u.wait_for(DEVICE_WAIT, find),
        Err(()) => find(),
    };
    let Some(dev) = dev else {
        return Stage1Error::NoPartition { label };
    };
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
    // The slot's own copy of this binary, by its real name so that
    // /proc/1/comm says bascule-init; /sbin/init for roots without it.
    let next = ["/sbin/bascule-init", "/sbin/init"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("/sbin/init");
    let err = std::process::Command::new(next).exec();
    Stage1Error::Switch {
        step: "exec the slot's init",
        err,
    }
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
