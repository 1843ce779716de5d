//! The final step of a shutdown: reboot(2).

use rustix::system::{reboot, RebootCommand};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    Reboot,
    Poweroff,
}

impl PowerAction {
    pub fn label(self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
        }
    }
}

/// Asks the kernel to reboot or power off. Returns only on failure.
pub fn execute(action: PowerAction) -> std::io::Error {
    let cmd = match action {
        PowerAction::Reboot => RebootCommand::Restart,
        PowerAction::Poweroff => RebootCommand::PowerOff,
    };
    match reboot(cmd) {
        Ok(()) => std::io::Error::other("reboot(2) returned"),
        Err(e) => e.into(),
    }
}

/// Sends `signal` to every process but PID 1 itself (kill(-1, sig)).
pub fn signal_all(signal: i32) {
    // SAFETY: kill(2) takes no pointers; -1 addresses every process the
    // caller may signal except itself, which is what shutdown intends.
    unsafe {
        libc::kill(-1, signal);
    }
}

/// Flushes every filesystem's dirty data to disk.
pub fn sync() {
    rustix::fs::sync();
}
