//! Finding partitions by GPT label or unique GUID through sysfs, waiting for
//! the kernel's uevents (not polling) while block devices are still being
//! probed.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{bind, netlink, socket_with, AddressFamily, SocketFlags, SocketType};

use crate::error::{Error, Op};

/// The /dev node of block device `major:minor` (as mountinfo writes it),
/// from `/sys/dev/block/M:m/uevent`.
pub fn node_of(device: &str) -> Option<PathBuf> {
    let uevent = std::fs::read_to_string(format!("/sys/dev/block/{device}/uevent")).ok()?;
    uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .map(|n| Path::new("/dev").join(n))
}

/// Whether the block device at `node` is still claimed: mounted in any
/// mount namespace (or opened exclusively). An exclusive open is refused
/// with EBUSY then; it is closed again at once.
pub fn in_use(node: &Path) -> Result<bool, Error> {
    use rustix::fs::{open, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NONBLOCK;
    match open(node, flags, Mode::empty()) {
        Ok(_) => Ok(false),
        Err(rustix::io::Errno::BUSY) => Ok(true),
        Err(errno) => Err(Error::Os {
            op: Op::Open,
            path: Some(node.to_path_buf()),
            errno,
        }),
    }
}

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

/// A partition found through sysfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Its /dev node, e.g. `/dev/vda4`.
    pub dev: PathBuf,
    /// Its GPT name (`PARTNAME=`), when the table gives one.
    pub label: Option<String>,
}

impl PartitionInfo {
    fn from_uevent(uevent: &str) -> Option<PartitionInfo> {
        Some(PartitionInfo {
            dev: PathBuf::from("/dev").join(uevent_value(uevent, "DEVNAME")?),
            label: uevent_value(uevent, "PARTNAME").map(str::to_owned),
        })
    }
}

/// The value of `KEY=` in a uevent file.
fn uevent_value<'a>(uevent: &'a str, key: &str) -> Option<&'a str> {
    uevent
        .lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// Every `(sysfs entry, uevent text)` under /sys/class/block.
fn uevents(sys_class_block: &Path) -> Vec<(PathBuf, String)> {
    let Ok(entries) = std::fs::read_dir(sys_class_block) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let text = std::fs::read_to_string(e.path().join("uevent")).ok()?;
            Some((e.path(), text))
        })
        .collect()
}

/// The partition whose GPT unique GUID is `partuuid` (either case), from
/// the `PARTUUID=` line of its uevent. Kernels that do not put PARTUUID in
/// partition uevents (mainline Linux does not) find nothing here: the
/// caller then reads the disks' partition tables itself, with [`disks`]
/// and [`partition_number`].
pub fn find_by_partuuid(sys_class_block: &Path, partuuid: &str) -> Option<PartitionInfo> {
    uevents(sys_class_block)
        .into_iter()
        .find(|(_, u)| {
            uevent_value(u, "PARTUUID").is_some_and(|v| v.eq_ignore_ascii_case(partuuid))
        })
        .and_then(|(_, u)| PartitionInfo::from_uevent(&u))
}

/// The names of the whole disks (`DEVTYPE=disk`: `vda`, `sr0`...), sorted.
pub fn disks(sys_class_block: &Path) -> Vec<String> {
    let mut out: Vec<String> = uevents(sys_class_block)
        .into_iter()
        .filter(|(_, u)| uevent_value(u, "DEVTYPE") == Some("disk"))
        .filter_map(|(_, u)| uevent_value(&u, "DEVNAME").map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// Partition `number` (`PARTN=`, the 1-based GPT entry) of `disk`.
pub fn partition_number(sys_class_block: &Path, disk: &str, number: u32) -> Option<PartitionInfo> {
    let n = number.to_string();
    uevents(sys_class_block)
        .into_iter()
        .find(|(path, u)| {
            uevent_value(u, "PARTN") == Some(n.as_str()) && disk_of(path).as_deref() == Some(disk)
        })
        .and_then(|(_, u)| PartitionInfo::from_uevent(&u))
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

    /// A fake /sys with disks `vda` and `vdb`, each with SLOT-A as
    /// partition 4; only vdb's uevent carries a PARTUUID line.
    fn two_disks() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let class = root.path().join("class");
        std::fs::create_dir(&class).unwrap();
        for (disk, partuuid) in [
            ("vda", None),
            ("vdb", Some("5A459BA4-29FA-43C8-B52F-62D1CEBE971D")),
        ] {
            let disk_dir = root.path().join("devices").join(disk);
            let part_dir = disk_dir.join(format!("{disk}4"));
            std::fs::create_dir_all(&part_dir).unwrap();
            std::fs::write(
                disk_dir.join("uevent"),
                format!("MAJOR=254\nDEVNAME={disk}\nDEVTYPE=disk\n"),
            )
            .unwrap();
            let mut u = format!("DEVNAME={disk}4\nDEVTYPE=partition\nPARTN=4\nPARTNAME=SLOT-A\n");
            if let Some(g) = partuuid {
                u.push_str(&format!("PARTUUID={}\n", g.to_ascii_lowercase()));
            }
            std::fs::write(part_dir.join("uevent"), u).unwrap();
            std::os::unix::fs::symlink(&disk_dir, class.join(disk)).unwrap();
            std::os::unix::fs::symlink(&part_dir, class.join(format!("{disk}4"))).unwrap();
        }
        (root, class)
    }

    #[test]
    fn finds_by_partuuid_in_uevents() {
        let (_root, class) = two_disks();
        let found = find_by_partuuid(&class, "5A459BA4-29FA-43C8-B52F-62D1CEBE971D");
        assert_eq!(
            found,
            Some(PartitionInfo {
                dev: PathBuf::from("/dev/vdb4"),
                label: Some("SLOT-A".into()),
            })
        );
        assert_eq!(
            find_by_partuuid(&class, "0fc63daf-8483-4772-8e79-3d69d8477de4"),
            None
        );
    }

    #[test]
    fn lists_disks_and_numbers_partitions() {
        let (_root, class) = two_disks();
        assert_eq!(disks(&class), ["vda", "vdb"]);
        assert_eq!(
            partition_number(&class, "vda", 4).map(|p| p.dev),
            Some(PathBuf::from("/dev/vda4"))
        );
        assert_eq!(partition_number(&class, "vda", 3), None);
        assert_eq!(partition_number(&class, "vdc", 4), None);
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
