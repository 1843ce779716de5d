//! Mounting the API filesystems at boot and unmounting everything at shutdown.

use std::io;
use std::path::Path;

use rustix::mount::{mount, mount_remount, unmount, MountFlags, UnmountFlags};

/// A filesystem PID 1 mounts before anything else.
pub struct ApiMount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: MountFlags,
    pub data: &'static std::ffi::CStr,
}

pub const API_MOUNTS: &[ApiMount] = &[
    ApiMount {
        source: "proc",
        target: "/proc",
        fstype: "proc",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
    },
    ApiMount {
        source: "sysfs",
        target: "/sys",
        fstype: "sysfs",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
    },
    ApiMount {
        source: "devtmpfs",
        target: "/dev",
        fstype: "devtmpfs",
        flags: MountFlags::NOSUID,
        data: c"mode=0755",
    },
    ApiMount {
        source: "devpts",
        target: "/dev/pts",
        fstype: "devpts",
        flags: MountFlags::NOSUID.union(MountFlags::NOEXEC),
        data: c"gid=5,mode=620,ptmxmode=000",
    },
    ApiMount {
        source: "tmpfs",
        target: "/dev/shm",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
    },
    ApiMount {
        source: "tmpfs",
        target: "/run",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
    },
    ApiMount {
        source: "tmpfs",
        target: "/tmp",
        fstype: "tmpfs",
        flags: MountFlags::NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
    },
    ApiMount {
        source: "cgroup2",
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        flags: MountFlags::NOSUID
            .union(MountFlags::NODEV)
            .union(MountFlags::NOEXEC),
        data: c"",
    },
];

/// Mounts one API filesystem, creating its mount point. Already mounted
/// (EBUSY) counts as success: the initramfs may have done it.
pub fn mount_api(m: &ApiMount) -> io::Result<()> {
    let _ = std::fs::create_dir_all(m.target);
    match mount(m.source, m.target, m.fstype, m.flags, Some(m.data)) {
        Ok(()) | Err(rustix::io::Errno::BUSY) => Ok(()),
        Err(e) => Err(io::Error::new(
            io::Error::from(e).kind(),
            format!("mount {} on {}: {e}", m.fstype, m.target),
        )),
    }
}

/// Mount points from /proc/self/mountinfo, deepest (latest) first.
pub fn mount_points_deepest_first(mountinfo: &str) -> Vec<std::path::PathBuf> {
    let mut points: Vec<std::path::PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(unescape))
        .collect();
    points.reverse();
    points
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> std::path::PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    // Bytes, not chars: mount points need not be UTF-8.
    std::path::PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Unmounts everything but the API filesystems the kernel needs to the
/// end; what stays busy is remounted read-only so the disk is clean.
pub fn unmount_all() -> Vec<String> {
    let mut failures = Vec::new();
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return vec!["cannot read /proc/self/mountinfo".into()];
    };
    for point in mount_points_deepest_first(&mi) {
        if ["/", "/proc", "/sys", "/dev"]
            .iter()
            .any(|p| point == Path::new(p))
        {
            continue;
        }
        if unmount(&point, UnmountFlags::empty()).is_err() {
            if let Err(e) = mount_remount(&point, MountFlags::RDONLY, "") {
                failures.push(format!(
                    "{}: busy and cannot be made read-only: {e}",
                    point.display()
                ));
            }
        }
    }
    if let Err(e) = mount_remount(Path::new("/"), MountFlags::RDONLY, "") {
        // A read-only squashfs root answers EBUSY/EINVAL harmlessly.
        if e != rustix::io::Errno::INVAL && e != rustix::io::Errno::BUSY {
            failures.push(format!("/: cannot remount read-only: {e}"));
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_escapes() {
        let mi = "1 0 0:1 / / rw - ext4 /dev/vda rw\n2 1 0:2 / /var rw - ext4 /dev/vdb rw\n3 2 0:3 / /var/my\\040dir rw - tmpfs t rw\n";
        let want: Vec<std::path::PathBuf> = ["/var/my dir", "/var", "/"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(mount_points_deepest_first(mi), want);
        // Not UTF-8: \377 is the byte 0xff.
        let odd = mount_points_deepest_first("1 0 0:1 / /mnt/\\377x rw - ext4 d rw\n");
        assert_eq!(
            std::os::unix::ffi::OsStrExt::as_bytes(odd[0].as_os_str()),
            b"/mnt/\xffx"
        );
    }
}
