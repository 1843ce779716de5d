//! Reaping children: every exited child, orphans included. (rustix's
//! `waitpid(None)` waits only for the caller's process group: `wait` is waitpid(-1).)

use rustix::process::{wait, WaitOptions};

/// How a child ended, as wait(2) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    /// It called exit with this status.
    Exited(i32),
    /// This signal killed it.
    Killed(i32),
}

/// Collects every child that has exited, without blocking.
pub fn reap_all() -> Vec<(u32, WaitStatus)> {
    let mut out = Vec::new();
    // Stops when no more children have exited (Ok(None)) or there are none (ECHILD).
    while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
        let exit = if let Some(code) = status.exit_status() {
            WaitStatus::Exited(code)
        } else if let Some(sig) = status.terminating_signal() {
            WaitStatus::Killed(sig)
        } else {
            continue;
        };
        out.push((pid.as_raw_nonzero().get() as u32, exit));
    }
    out
}

/// True while this process has children (exited or not) left to reap.
/// Looks without reaping (WNOWAIT), so no exit status is lost.
pub fn has_children() -> bool {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    let opts = WaitIdOptions::NOHANG
        | WaitIdOptions::NOWAIT
        | WaitIdOptions::EXITED
        | WaitIdOptions::STOPPED
        | WaitIdOptions::CONTINUED;
    !matches!(waitid(WaitId::All, opts), Err(rustix::io::Errno::CHILD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looking_for_children_does_not_reap_them() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait until it has exited, without reaping it.
        let path = format!("/proc/{pid}/stat");
        while !std::fs::read_to_string(&path).unwrap().contains(") Z ") {
            std::thread::yield_now();
        }
        assert!(has_children());
        assert!(has_children(), "asking twice still finds the zombie");
        // Only this child: other tests of this process have their own.
        assert!(
            child.wait().unwrap().success(),
            "its status was kept for the parent"
        );
    }
}
