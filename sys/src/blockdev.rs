//! Finding partitions by GPT label through sysfs, waiting for the kernel's
//! uevents (not polling) while block devices are still being probed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{bind, netlink, socket_with, AddressFamily, SocketFlags, SocketType};

use crate::error::{Error, Op};

/// Where PID 1 records the disk it booted from, for every later lookup.
pub const BOOT_DISK_FILE: &str = "/run/bascule/boot-disk";

/// The /dev node of the partition whose GPT name is `label`, from
/// `/sys/class/block/*/uevent` (`PARTNAME=` and `DEVNAME=` lines). With
/// `disk`, only partitions of that disk count: a second disk carrying the
/// same labels (upgrade media, another image) must not supply META or /var.
pub fn find_by_label(sys_class_block: &Path, label: &str, disk: Option<&str>) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys_class_block).ok()?;
    for e in entries.flatten() {
        let Ok(uevent) = std::fs::read_to_string(e.path().join("uevent")) else {
            continue;
        };
        if let Some(dev) = devname_for_label(&uevent, label) {
            if disk.is_some_and(|d| disk_of(&e.path()).as_deref() != Some(d)) {
                continue;
            }
            return Some(PathBuf::from("/dev").join(dev));
        }
    }
    None
}

/// The disk a partition's sysfs entry belongs to: its parent directory in
/// /sys/devices (`.../block/vda/vda4` gives `vda`).
pub fn disk_of(partition_sysfs: &Path) -> Option<String> {
    let real = std::fs::canonicalize(partition_sysfs).ok()?;
    Some(real.parent()?.file_name()?.to_string_lossy().into_owned())
}

/// The boot disk recorded by the initramfs stage, if any.
pub fn boot_disk() -> Option<String> {
    std::fs::read_to_string(BOOT_DISK_FILE)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// A partition of the boot disk (of any disk while it is not known).
pub fn find_on_boot_disk(label: &str) -> Option<PathBuf> {
    find_by_label(Path::new("/sys/class/block"), label, boot_disk().as_deref())
}

fn devname_for_label(uevent: &str, label: &str) -> Option<String> {
    let mut name = None;
    let mut matched = false;
    for line in uevent.lines() {
        if let Some(v) = line.strip_prefix("DEVNAME=") {
            name = Some(v.to_owned());
        } else if line.strip_prefix("PARTNAME=") == Some(label) {
            matched = true;
        }
    }
    if matched {
        name
    } else {
        None
    }
}

/// A kernel uevent socket: readable whenever a device appears.
pub struct Uevents {
    fd: OwnedFd,
}

impl Uevents {
    /// Opens a NETLINK_KOBJECT_UEVENT socket on the kernel's multicast group.
    pub fn open() -> Result<Self, Error> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )
        .map_err(|e| Error::os_bare(Op::Socket, e))?;
        bind(&fd, &netlink::SocketAddrNetlink::new(0, 1))
            .map_err(|e| Error::os_bare(Op::Bind, e))?;
        Ok(Uevents { fd })
    }

    /// Waits until `find` succeeds, re-checking after every uevent, for at most `limit`.
    pub fn wait_for<T>(&self, limit: Duration, mut find: impl FnMut() -> Option<T>) -> Option<T> {
        let start = Instant::now();
        loop {
            if let Some(v) = find() {
                return Some(v);
            }
            let left = limit.checked_sub(start.elapsed())?;
            let ts = Timespec {
                tv_sec: left.as_secs() as _,
                tv_nsec: left.subsec_nanos() as _,
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match poll(&mut fds, Some(&ts)) {
                Ok(0) => return find(),
                Ok(_) => self.drain(),
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => return find(),
            }
        }
    }

    fn drain(&self) {
        let mut buf = [0u8; 8192];
        while rustix::io::read(self.fd.as_fd(), &mut buf).is_ok_and(|n| n > 0) {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_can_be_limited_to_one_disk() {
        // A fake /sys: class/block entries are symlinks into devices/.
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("class");
        std::fs::create_dir(&class).unwrap();
        for (disk, part) in [("vda", "vda6"), ("vdb", "vdb6")] {
            let dir = root.path().join("devices").join(disk).join(part);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("uevent"),
                format!("DEVNAME={part}\nPARTNAME=STATE\n"),
            )
            .unwrap();
            std::os::unix::fs::symlink(&dir, class.join(part)).unwrap();
        }
        assert_eq!(
            find_by_label(&class, "STATE", Some("vdb")),
            Some(PathBuf::from("/dev/vdb6"))
        );
        assert_eq!(
            find_by_label(&class, "STATE", Some("vda")),
            Some(PathBuf::from("/dev/vda6"))
        );
        assert_eq!(find_by_label(&class, "STATE", Some("vdc")), None);
        assert!(find_by_label(&class, "STATE", None).is_some());
        assert_eq!(disk_of(&class.join("vdb6")).as_deref(), Some("vdb"));
    }

    #[test]
    fn matches_partname() {
        let u = "MAJOR=254\nMINOR=3\nDEVNAME=vda3\nDEVTYPE=partition\nPARTN=3\nPARTNAME=SLOT-A\n";
        assert_eq!(devname_for_label(u, "SLOT-A"), Some("vda3".into()));
        assert_eq!(devname_for_label(u, "SLOT-B"), None);
        assert_eq!(
            devname_for_label("DEVNAME=vda\nDEVTYPE=disk\n", "SLOT-A"),
            None
        );
    }
}
