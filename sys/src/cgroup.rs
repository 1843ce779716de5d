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

    /// True when `pid` is in the service's group.
    pub fn contains(&self, service: &str, pid: u32) -> bool {
        fs::read_to_string(self.service_dir(service).join("cgroup.procs"))
            .map(|procs| procs.lines().any(|l| l.trim().parse() == Ok(pid)))
            .unwrap_or(false)
    }

    /// SIGKILLs every process in the service's group.
    pub fn kill(&self, service: &str) -> Result<(), Error> {
        match kill_group_dir(&self.service_dir(service)) {
            // Never started: nothing to kill.
            Err(e) if e.errno() == Some(Errno::NOENT) => Ok(()),
            other => other,
        }
    }

    /// Removes the service groups and the root (supervise mode, on exit):
    /// what is left in a group is killed, and the group removed once the
    /// kernel reports it empty (a killed process lingers until reaped).
    pub fn remove_all(&self) {
        remove_tree(&self.dir, EMPTY_WAIT);
    }

    /// Groups left by earlier instances of this supervisor (siblings named
    /// `<prefix><pid>` whose pid no longer runs, after a SIGKILL): their
    /// processes are killed and the groups removed, so a rerun of the
    /// same configuration does not run every service twice. Returns the
    /// groups reclaimed.
    pub fn reclaim_stale_siblings(&self, prefix: &str) -> Vec<PathBuf> {
        let Some(parent) = self.dir.parent() else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir(parent) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let path = e.path();
            let pid = e
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(prefix))
                .and_then(|p| p.parse::<u32>().ok());
            let Some(pid) = pid else {
                continue;
            };
            if path == self.dir || Path::new(&format!("/proc/{pid}")).exists() {
                continue;
            }
            remove_tree(&path, EMPTY_WAIT);
            out.push(path);
        }
        out
    }
}

/// How long a removal waits for killed processes to be reaped.
const EMPTY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Kills what is in each group under `root` (and in `root`), waits for
/// each to empty, and removes them, children first.
fn remove_tree(root: &Path, wait: std::time::Duration) {
    if let Ok(entries) = fs::read_dir(root) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path(), wait);
            }
        }
    }
    if populated(root) {
        let _ = kill_group_dir(root);
        wait_empty(root, wait);
    }
    let _ = fs::remove_dir(root);
}

/// `cgroup.events` says `populated 1`.
fn populated(dir: &Path) -> bool {
    fs::read_to_string(dir.join("cgroup.events"))
        .map(|t| t.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Waits until the group is empty: the kernel signals each change of
/// `cgroup.events` as POLLPRI on it.
fn wait_empty(dir: &Path, wait: std::time::Duration) {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let deadline = std::time::Instant::now() + wait;
    let Ok(events) = fs::File::open(dir.join("cgroup.events")) else {
        return;
    };
    // Reading through the polled fd is what re-arms its POLLPRI.
    let still_populated = || {
        let mut buf = [0u8; 256];
        std::os::unix::fs::FileExt::read_at(&events, &mut buf, 0)
            .map(|n| {
                String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "populated 1")
            })
            .unwrap_or(false)
    };
    while still_populated() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let mut fds = [PollFd::new(&events, PollFlags::PRI)];
        let timeout = Timespec {
            tv_sec: left.as_secs() as i64,
            tv_nsec: i64::from(left.subsec_nanos()),
        };
        if poll(&mut fds, Some(&timeout)).is_err() {
            return;
        }
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
