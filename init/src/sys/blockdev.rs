//! Finding partitions by GPT label through sysfs, waiting for the kernel's
//! uevents (not polling) while block devices are still being probed.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::net::{bind, netlink, socket_with, AddressFamily, SocketFlags, SocketType};

/// The /dev node of the partition whose GPT name is `label`, from
/// `/sys/class/block/*/uevent` (`PARTNAME=` and `DEVNAME=` lines).
pub fn find_by_label(sys_class_block: &Path, label: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(sys_class_block).ok()?;
    for e in entries.flatten() {
        let Ok(uevent) = std::fs::read_to_string(e.path().join("uevent")) else {
            continue;
        };
        if let Some(dev) = devname_for_label(&uevent, label) {
            return Some(PathBuf::from("/dev").join(dev));
        }
    }
    None
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
    pub fn open() -> io::Result<Self> {
        let fd = socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        bind(&fd, &netlink::SocketAddrNetlink::new(0, 1))?;
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
