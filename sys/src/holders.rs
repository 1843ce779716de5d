//! Which processes keep a mount busy: open files, working directories,
//! roots and mapped files under it, found by scanning /proc, so a failed
//! unmount can say who is in the way.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};

use procfs::process::{FDTarget, MMapPath, Process};

/// How a process holds the mount.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum HoldKind {
    /// An open file descriptor on this path.
    Fd(PathBuf),
    /// Its working directory is under the mount.
    Cwd,
    /// Its root directory is under the mount.
    Root,
    /// It maps this file (a binary or library run from there).
    Map(PathBuf),
    /// It lives in another mount namespace where the filesystem is
    /// mounted too: unmounting it here leaves it in use there.
    MountNamespace,
}

/// A process keeping a mount busy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id.
    pub pid: i32,
    /// Its command name (comm).
    pub name: String,
    /// What it holds.
    pub how: HoldKind,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}) ", self.pid, self.name)?;
        match &self.how {
            HoldKind::Fd(p) => write!(f, "has {} open", p.display()),
            HoldKind::Cwd => f.write_str("has its working directory there"),
            HoldKind::Root => f.write_str("has its root directory there"),
            HoldKind::Map(p) => write!(f, "maps {}", p.display()),
            HoldKind::MountNamespace => f.write_str("has it mounted in its own mount namespace"),
        }
    }
}

/// Every process but this one that holds something at or under
/// `mount_point`. Processes that exit or cannot be read mid-scan are
/// skipped: the answer is a best effort for a log line.
pub fn scan(mount_point: &Path) -> Vec<Holder> {
    let me = std::process::id() as i32;
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let device = crate::mountinfo::read_own().ok().and_then(|own| {
        own.into_iter()
            .rev()
            .find(|m| m.mount_point == mount_point)
            .map(|m| m.device)
    });
    let own_ns = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut out = Vec::new();
    for p in all.flatten().filter(|p| p.pid() != me) {
        let mut kinds = holds(&p, mount_point);
        if let Some(dev) = &device {
            if mounted_elsewhere(&p, dev, own_ns.as_deref()) {
                kinds.insert(HoldKind::MountNamespace);
            }
        }
        if kinds.is_empty() {
            continue;
        }
        let name = p.stat().map(|s| s.comm).unwrap_or_else(|_| "?".into());
        out.extend(kinds.into_iter().map(|how| Holder {
            pid: p.pid(),
            name: name.clone(),
            how,
        }));
    }
    out
}

/// Whether `p` is in another mount namespace that has `device` mounted.
fn mounted_elsewhere(p: &Process, device: &str, own_ns: Option<&Path>) -> bool {
    let dir = PathBuf::from(format!("/proc/{}", p.pid()));
    let ns = std::fs::read_link(dir.join("ns/mnt")).ok();
    if ns.is_none() || ns.as_deref() == own_ns {
        return false;
    }
    std::fs::read_to_string(dir.join("mountinfo"))
        .map(|text| {
            crate::mountinfo::parse(&text)
                .iter()
                .any(|m| m.device == device)
        })
        .unwrap_or(false)
}

fn holds(p: &Process, under: &Path) -> BTreeSet<HoldKind> {
    let mut kinds = BTreeSet::new();
    if p.cwd().is_ok_and(|c| c.starts_with(under)) {
        kinds.insert(HoldKind::Cwd);
    }
    if p.root().is_ok_and(|r| r.starts_with(under)) {
        kinds.insert(HoldKind::Root);
    }
    if let Ok(fds) = p.fd() {
        for fd in fds.flatten() {
            if let FDTarget::Path(path) = fd.target {
                if path.starts_with(under) {
                    kinds.insert(HoldKind::Fd(path));
                }
            }
        }
    }
    if let Ok(maps) = p.maps() {
        for m in maps {
            if let MMapPath::Path(path) = m.pathname {
                if path.starts_with(under) {
                    kinds.insert(HoldKind::Map(path));
                }
            }
        }
    }
    kinds
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    struct Reaped(std::process::Child);

    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn sleeper(cmd: &mut Command) -> Reaped {
        // spawn returns after exec, so cwd and fds are in place by then.
        Reaped(cmd.arg("3600").spawn().unwrap())
    }

    fn which_sleep() -> PathBuf {
        ["/usr/bin/sleep", "/bin/sleep"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .unwrap()
    }

    #[test]
    fn finds_a_cwd_and_an_open_file_and_not_a_process_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let file = root.join("data");
        std::fs::write(&file, b"x").unwrap();
        let in_dir = sleeper(Command::new("sleep").current_dir(&root));
        let with_file = sleeper(
            Command::new("sleep")
                .current_dir("/")
                .stdin(std::fs::File::open(&file).unwrap()),
        );
        let elsewhere = sleeper(Command::new("sleep").current_dir("/").stdin(Stdio::null()));
        // A program run from the directory maps its own file there.
        let exe = root.join("sleep2");
        std::fs::copy(which_sleep(), &exe).unwrap();
        let mapped = sleeper(Command::new(&exe).current_dir("/").stdin(Stdio::null()));
        let _mine = std::fs::File::open(&file).unwrap();
        let found = scan(&root);
        let of = |c: &Reaped| -> Vec<&Holder> {
            found.iter().filter(|h| h.pid == c.0.id() as i32).collect()
        };
        let a = of(&in_dir);
        assert_eq!(a.len(), 1, "{found:?}");
        assert_eq!(a[0].how, HoldKind::Cwd);
        assert_eq!(a[0].name, "sleep");
        let b = of(&with_file);
        assert_eq!(b.len(), 1, "{found:?}");
        assert_eq!(b[0].how, HoldKind::Fd(file.clone()));
        assert!(b[0]
            .to_string()
            .ends_with(&format!("has {} open", file.display())));
        assert!(of(&elsewhere).is_empty(), "{found:?}");
        let c = of(&mapped);
        assert_eq!(c.len(), 1, "{found:?}");
        assert_eq!(c[0].how, HoldKind::Map(exe.clone()));
        assert_eq!(c[0].name, "sleep2");
        // This process holds `file` open too, but is never listed.
        assert!(found.iter().all(|h| h.pid != std::process::id() as i32));
    }

    #[test]
    fn finds_a_process_in_a_mount_namespace_of_its_own_that_has_the_filesystem() {
        let Some(unshare) = ["/usr/bin/unshare", "/bin/unshare"]
            .into_iter()
            .find(|p| Path::new(p).exists())
        else {
            return;
        };
        if !rustix::process::geteuid().is_root() {
            return; // a mount namespace needs CAP_SYS_ADMIN
        }
        let child = sleeper(Command::new(unshare).args(["-m", "sleep"]));
        let pid = child.0.id();
        let ours = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        // spawn returns once unshare is exec'd; its unshare(2) follows.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
            .ok()
            .as_ref()
            == Some(&ours)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "never left our namespace"
            );
            std::thread::yield_now();
        }
        let found = scan(Path::new("/"));
        assert!(
            found
                .iter()
                .any(|h| h.pid == pid as i32 && h.how == HoldKind::MountNamespace),
            "{found:?}"
        );
        let me = found
            .iter()
            .find(|h| h.pid == pid as i32 && h.how == HoldKind::MountNamespace)
            .unwrap();
        assert!(
            me.to_string()
                .contains("mounted in its own mount namespace"),
            "{me}"
        );
    }

    #[test]
    fn a_missing_device_node_is_an_error_naming_it() {
        let e = crate::blockdev::in_use(Path::new("/nonexistent/dev")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/dev"), "{e}");
    }
}
