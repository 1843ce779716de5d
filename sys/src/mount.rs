//! Mounting the API filesystems at boot and unmounting everything at shutdown.

use std::fmt;
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::mount::{mount, mount_remount, unmount, MountFlags, UnmountFlags};

use crate::error::{Error, Op};
use crate::mountinfo::{self, MountEntry};

/// A filesystem PID 1 mounts before anything else.
pub struct ApiMount {
    /// The source argument of mount(2) (a name for virtual filesystems).
    pub source: &'static str,
    /// Where it goes.
    pub target: &'static str,
    /// Its filesystem type.
    pub fstype: &'static str,
    /// mount(2) flags.
    pub flags: MountFlags,
    /// Filesystem-specific options.
    pub data: &'static std::ffi::CStr,
    /// Options to mount with instead when the kernel refuses `data`
    /// (EINVAL: an option it does not know).
    pub data_fallback: Option<&'static std::ffi::CStr>,
}

/// The API filesystems, parents before children.
pub const API_MOUNTS: &[ApiMount] = &[
    ApiMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
        data_fallback: None,
    },
    ApiMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
        data_fallback: None,
    },
    ApiMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
        data_fallback: None,
    },
    ApiMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=620,ptmxmode=000",
        data_fallback: None,
    },
    ApiMount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
        data_fallback: None,
    },
    ApiMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
        data_fallback: None,
    },
    ApiMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
        data_fallback: None,
    },
    ApiMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        // Moving a process into a cgroup otherwise waits for an RCU grace
        // period (the threadgroup rwsem's writer side): 8-20 ms for every
        // service start that is not right after another one. Linux 6.0+.
        data: c"favordynmods",
        data_fallback: Some(c""),
    },
];

/// Mounts one API filesystem, creating its mount point. Already mounted
/// (EBUSY) counts as success: the initramfs may have done it.
pub fn mount_api(m: &ApiMount) -> Result<(), Error> {
    let _ = std::fs::create_dir_all(m.target);
    // Already mounted (moved in from the initramfs by switch_root): a second
    // tmpfs on /run would hide what the first stage handed over.
    let mounted = mountinfo::read_own()
        .map(|all| {
            all.iter()
                .any(|e| e.mount_point == std::path::Path::new(m.target))
        })
        .unwrap_or(false);
    if mounted {
        return Ok(());
    }
    let mounted = match (
        mount(m.source, m.target, m.fstype, m.flags, Some(m.data)),
        m.data_fallback,
    ) {
        (Err(Errno::INVAL), Some(plain)) => {
            mount(m.source, m.target, m.fstype, m.flags, Some(plain))
        }
        (r, _) => r,
    };
    match mounted {
        Ok(()) | Err(Errno::BUSY) => Ok(()),
        Err(e) => Err(Error::os(Op::Mount, m.target, e)),
    }
}

/// Mount points from mountinfo text, deepest first: children before the
/// mounts they sit on, and of mounts stacked on one point the top one first.
pub fn mount_points_deepest_first(mountinfo: &str) -> Vec<PathBuf> {
    deepest_first(mountinfo::parse(mountinfo))
        .into_iter()
        .map(|m| m.mount_point)
        .collect()
}

fn deepest_first(mut entries: Vec<MountEntry>) -> Vec<MountEntry> {
    // Later lines are mounted later (on top); a stable sort by depth keeps
    // that order among equals. Depth, not line order, puts a mount moved
    // under a later one before it.
    entries.reverse();
    entries.sort_by_key(|m| std::cmp::Reverse(m.mount_point.components().count()));
    entries
}

/// A mount that could not be unmounted, and why.
#[derive(Debug)]
pub struct UnmountFailure {
    /// The mount point.
    pub mount_point: PathBuf,
    /// What failed (its message names the mount point too).
    pub error: Error,
}

impl fmt::Display for UnmountFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)
    }
}

/// Tries to unmount every mount at or under `root` that `keep` does not
/// name, deepest first, pass after pass while a pass makes progress (a
/// mount hidden under another appears once that one is gone). Returns the
/// mounts of the last pass that stayed, with the umount2 errno of each.
fn unmount_under(root: &Path, keep: &[&Path]) -> Result<Vec<(PathBuf, Errno)>, Error> {
    // Every pass removes at least one mount, so the mount count bounds the
    // passes; the fixed cap guards against mounts that come back.
    let mut failed = Vec::new();
    for _ in 0..64 {
        let targets: Vec<MountEntry> = deepest_first(mountinfo::read_own()?)
            .into_iter()
            .filter(|m| m.mount_point.starts_with(root))
            .filter(|m| !keep.contains(&m.mount_point.as_path()))
            .collect();
        failed.clear();
        let mut progress = false;
        for m in targets {
            match unmount(&m.mount_point, UnmountFlags::NOFOLLOW) {
                Ok(()) => progress = true,
                Err(e) => failed.push((m.mount_point, e)),
            }
        }
        if !progress {
            break;
        }
    }
    Ok(failed)
}

/// Unmounts every mount at or under `root` (as mountinfo spells it: an
/// absolute path without symlinks), deepest first. Each mount that stays
/// is reported with its mount point and errno; a busy one has holders
/// that [`crate::holders::scan`] can name.
pub fn unmount_tree(root: &Path) -> Vec<UnmountFailure> {
    match unmount_under(root, &[]) {
        Ok(failed) => failed
            .into_iter()
            .map(|(mount_point, errno)| UnmountFailure {
                error: Error::os(Op::Umount2, &mount_point, errno),
                mount_point,
            })
            .collect(),
        Err(error) => vec![UnmountFailure {
            mount_point: root.to_owned(),
            error,
        }],
    }
}

/// Unmounts everything but the API filesystems the kernel needs to the
/// end; what stays busy is remounted read-only so the disk is clean.
pub fn unmount_all() -> Vec<UnmountFailure> {
    let keep = ["/", "/proc", "/sys", "/dev"].map(Path::new);
    let root = Path::new("/");
    let mut failures = Vec::new();
    match unmount_under(root, &keep) {
        Ok(failed) => {
            for (point, _) in failed {
                if let Err(e) = mount_remount(&point, MountFlags::RDONLY, "") {
                    failures.push(UnmountFailure {
                        error: Error::os(Op::RemountReadOnly, &point, e),
                        mount_point: point,
                    });
                }
            }
        }
        Err(error) => failures.push(UnmountFailure {
            mount_point: root.to_owned(),
            error,
        }),
    }
    match mount_remount(root, MountFlags::RDONLY, "") {
        // A read-only squashfs root answers EBUSY/EINVAL harmlessly.
        Ok(()) | Err(Errno::INVAL) | Err(Errno::BUSY) => {}
        Err(e) => failures.push(UnmountFailure {
            mount_point: root.to_owned(),
            error: Error::os(Op::RemountReadOnly, root, e),
        }),
    }
    failures
}

#[cfg(test)]
mod tests;
