//! cgroup v2: one group per service so a stop reaches every descendant.
//! Where no cgroup2 hierarchy is mounted, callers fall back to process groups.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::io::Errno;

use crate::error::{Context, Error, Op};
use crate::mountinfo;

/// Finds the cgroup2 mount point in a mountinfo text.
pub fn find_cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo::parse(mountinfo)
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.mount_point)
}

/// This process's own group in the v2 hierarchy (the `0::` line).
pub fn own_group(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(|p| p.trim_start_matches('/'))
}

/// The directory under which service groups are created.
#[derive(Debug, Clone)]
pub struct CgroupRoot {
    /// `<cgroup2 mount>/<own group>/<leaf>`.
    pub dir: PathBuf,
}

/// mkdir that finds an existing directory fine.
fn ensure_dir(dir: &Path) -> Result<(), Error> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(Error::io(Op::Mkdir, dir, &e)),
        _ => Ok(()),
    }
}

impl CgroupRoot {
    /// Creates `<cgroup2 mount>/<own group>/<leaf>`. Fails when cgroup2 is
    /// not mounted or not writable (the caller logs it and uses process groups).
    pub fn create(leaf: &str) -> Result<CgroupRoot, Error> {
        let mount = mountinfo::read_own()?
            .into_iter()
            .find(|m| m.fstype == "cgroup2")
            .map(|m| m.mount_point)
            .ok_or(Error::NoCgroup2)?;
        let own_path = Path::new("/proc/self/cgroup");
        let own = fs::read_to_string(own_path).at(Op::Read, own_path)?;
        let own = own_group(&own).unwrap_or("").to_owned();
        let dir = mount.join(own).join(leaf);
        ensure_dir(&dir)?;
        Ok(CgroupRoot { dir })
    }

    /// The group of one service.
    pub fn service_dir(&self, service: &str) -> PathBuf {
        self.dir.join(service)
    }

    /// Creates the service's group and opens its `cgroup.procs` for the
    /// child to join between fork and exec.
    pub fn prepare(&self, service: &str) -> Result<OwnedFd, Error> {
        let dir = self.service_dir(service);
        ensure_dir(&dir)?;
        let procs = dir.join("cgroup.procs");
        let f = OpenOptions::new()
            .write(true)
            .open(&procs)
            .at(Op::Open, &procs)?;
        Ok(OwnedFd::from(f))
    }

    /// SIGKILLs every process in the service's group.
    pub fn kill(&self, service: &str) -> Result<(), Error> {
        match kill_group_dir(&self.service_dir(service)) {
            // Never started: nothing to kill.
            Err(e) if e.errno() == Some(Errno::NOENT) => Ok(()),
            other => other,
        }
    }

    /// Removes empty service groups and the root (supervise mode, on exit).
    pub fn remove_all(&self) {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                if e.path().is_dir() {
                    let _ = fs::remove_dir(e.path());
                }
            }
        }
        let _ = fs::remove_dir(&self.dir);
    }
}

fn kill_group_dir(dir: &Path) -> Result<(), Error> {
    // cgroup.kill (Linux 5.14+) kills the whole group atomically, new forks included.
    let kill = dir.join("cgroup.kill");
    match OpenOptions::new().write(true).open(&kill) {
        Ok(mut f) => f.write_all(b"1").at(Op::Write, &kill),
        Err(_) => {
            let procs_path = dir.join("cgroup.procs");
            let procs = fs::read_to_string(&procs_path).at(Op::Read, &procs_path)?;
            for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                if let Some(pid) = rustix::process::Pid::from_raw(pid) {
                    // Already gone (ESRCH) is what we want anyway.
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_cgroup2_in_hybrid_layout() {
        let mi = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                  32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
                  41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_cgroup2_mount(mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            find_cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    #[test]
    fn own_group_is_the_v2_line() {
        assert_eq!(
            own_group("4:memory:/x\n0::/user.slice/a\n"),
            Some("user.slice/a")
        );
        assert_eq!(own_group("0::/\n"), Some(""));
        assert_eq!(own_group("1:cpu:/\n"), None);
    }
}
