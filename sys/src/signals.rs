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
    /// SIGHUP and others we only log.
    Other(i32),
}

/// The signalfd of the handled signals.
pub struct Signals {
    fd: SignalFd,
}

const HANDLED: [Signal; 7] = [
    Signal::SIGIO,
    Signal::SIGCHLD,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGPWR,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

impl Signals {
    /// Blocks the handled signals for this thread (and threads it creates)
    /// and opens a signalfd for them. Children get a clean mask from
    /// `std::process::Command`, and from [`crate::spawn`] (services) and
    /// [`crate::spawn::clean_command`] (anything else) a clean mask and
    /// default dispositions.
    pub fn open() -> io::Result<Self> {
        let mut mask = SigSet::empty();
        for s in HANDLED {
            mask.add(s);
        }
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
