//! Signals as events: the ones PID 1 handles are blocked and read from a
//! signalfd in the event loop, so there is no handler and no race.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What a signal asks PID 1 to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGCHLD: reap.
    ChildExited,
    /// SIGTERM, SIGPWR, SIGUSR2.
    Poweroff,
    /// SIGINT (ctrl-alt-del), SIGUSR1.
    Reboot,
    /// SIGIO: the virtio-serial port's host side connected or left.
    PortChanged,
    /// SIGHUP: an admin asks for the service directory to be reread.
    Reload,
    /// Every other catchable signal (SIGQUIT, SIGALRM, real-time signals,
    /// ...): read and logged, never acted on, so none of them kills PID 1
    /// or the supervisor.
    Other(i32),
}

/// The signalfd of the handled signals.
pub struct Signals {
    fd: SignalFd,
}

/// Signals left to the kernel's default: SIGKILL and SIGSTOP cannot be
/// caught; faults (SEGV, BUS, ILL, FPE, TRAP, SYS) are the process's own
/// errors and must end it (Rust's stack-overflow report needs SIGSEGV);
/// SIGCONT, SIGWINCH and SIGURG do nothing by default; SIGPIPE is ignored
/// by the Rust runtime (a write to a closed pipe returns EPIPE).
const LEFT_ALONE: [Signal; 12] = [
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGSEGV,
    Signal::SIGBUS,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGTRAP,
    Signal::SIGSYS,
    Signal::SIGCONT,
    Signal::SIGWINCH,
    Signal::SIGURG,
    Signal::SIGPIPE,
];

/// Every signal read from the signalfd: all standard ones but
/// [`LEFT_ALONE`], and the real-time ones libc does not keep for itself.
fn handled_mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in Signal::iterator().filter(|s| !LEFT_ALONE.contains(s)) {
        mask.add(s);
    }
    let mut raw: libc::sigset_t = *mask.as_ref();
    for n in libc::SIGRTMIN()..=libc::SIGRTMAX() {
        // SAFETY: `raw` is a valid, initialised sigset_t owned by this
        // frame (copied from a SigSet, which sigemptyset initialised);
        // sigaddset only sets one bit in it, and rejects a number out of
        // range with EINVAL, which leaves it unchanged.
        unsafe { libc::sigaddset(&mut raw, n) };
    }
    // SAFETY: `raw` was initialised by sigemptyset (through SigSet::empty)
    // and only changed by sigaddset, as the function requires.
    unsafe { SigSet::from_sigset_t_unchecked(raw) }
}

impl Signals {
    /// Blocks the handled signals for this thread (and threads it creates)
    /// and opens a signalfd for them. Children get a clean mask from
    /// `std::process::Command`, and from [`crate::spawn`] (services) and
    /// [`crate::spawn::clean_command`] (anything else) a clean mask and
    /// default dispositions.
    pub fn open() -> io::Result<Self> {
        let mask = handled_mask();
        mask.thread_block().map_err(io::Error::from)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Signals { fd })
    }

    /// Reads every pending signal.
    pub fn read(&mut self) -> Vec<SignalEvent> {
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            let signo = info.ssi_signo as i32;
            out.push(match Signal::try_from(signo) {
                Ok(Signal::SIGCHLD) => SignalEvent::ChildExited,
                Ok(Signal::SIGIO) => SignalEvent::PortChanged,
                // The kernel sends SIGINT to PID 1 on ctrl-alt-del: reboot.
                Ok(Signal::SIGINT) => SignalEvent::Reboot,
                Ok(Signal::SIGTERM) | Ok(Signal::SIGPWR) | Ok(Signal::SIGUSR2) => {
                    SignalEvent::Poweroff
                }
                // SIGUSR1 asks for a reboot, as busybox init does.
                Ok(Signal::SIGUSR1) => SignalEvent::Reboot,
                Ok(Signal::SIGHUP) => SignalEvent::Reload,
                _ => SignalEvent::Other(signo),
            });
        }
        out
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catchable_signal_but_faults_is_read() {
        let mask = handled_mask();
        for s in [
            Signal::SIGHUP,
            Signal::SIGQUIT,
            Signal::SIGALRM,
            Signal::SIGVTALRM,
            Signal::SIGPROF,
            Signal::SIGXCPU,
            Signal::SIGTSTP,
            Signal::SIGABRT,
            Signal::SIGCHLD,
        ] {
            assert!(mask.contains(s), "{s:?}");
        }
        for s in [Signal::SIGSEGV, Signal::SIGKILL, Signal::SIGPIPE] {
            assert!(!mask.contains(s), "{s:?}");
        }
        let rt = libc::SIGRTMAX();
        // SAFETY: the mask is an initialised sigset_t; sigismember only reads it.
        assert_eq!(unsafe { libc::sigismember(mask.as_ref(), rt) }, 1);
    }
}
