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
    let mut out = Vec::new();
    for p in all.flatten().filter(|p| p.pid() != me) {
        let kinds = holds(&p, mount_point);
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
}
