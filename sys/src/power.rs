//! The final step of a shutdown: reboot(2), and signalling every process.

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rustix::system::{reboot, RebootCommand};

use crate::error::{Error, Op};

/// How the machine goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Restart the machine.
    Reboot,
    /// Switch it off.
    Poweroff,
    /// Jump into the kernel loaded with [`crate::kexec::load`].
    Kexec,
}

impl PowerAction {
    /// The word logged for it.
    pub fn label(self) -> &'static str {
        match self {
            PowerAction::Reboot => "reboot",
            PowerAction::Poweroff => "poweroff",
            PowerAction::Kexec => "kexec",
        }
    }
}

fn reboot_with(cmd: RebootCommand) -> Error {
    match reboot(cmd) {
        Ok(()) => Error::RebootReturned,
        Err(e) => Error::os_bare(Op::Reboot, e),
    }
}

/// Asks the kernel to reboot or power off. Returns only on failure.
pub fn execute(action: PowerAction) -> Error {
    reboot_with(match action {
        PowerAction::Reboot => RebootCommand::Restart,
        PowerAction::Poweroff => RebootCommand::PowerOff,
        PowerAction::Kexec => RebootCommand::Kexec,
    })
}

/// Jumps into the kernel loaded by [`crate::kexec::load`]
/// (reboot(LINUX_REBOOT_CMD_KEXEC)). Returns only on failure, e.g. EINVAL
/// when nothing is loaded.
pub fn kexec_reboot() -> Error {
    reboot_with(RebootCommand::Kexec)
}

/// Sends `signal` to every process but PID 1 itself (kill(-1, sig)).
/// Nothing left to signal (ESRCH) is the normal end of a shutdown, and an
/// unknown signal number sends nothing.
pub fn signal_all(signal: i32) {
    if let Ok(sig) = Signal::try_from(signal) {
        let _ = kill(Pid::from_raw(-1), sig);
    }
}

/// Flushes every filesystem's dirty data to disk.
pub fn sync() {
    rustix::fs::sync();
}
