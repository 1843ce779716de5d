//! The hardware watchdog (/dev/watchdog0; i6300esb under QEMU). PID 1 feeds
//! it from its event loop, so a hung loop resets the machine.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{open, Mode, OFlags};

use crate::error::{last_errno, Context, Error, Op};

/// WDIOC_SETTIMEOUT = _IOWR('W', 6, int).
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
/// WDIOC_GETTIMEOUT = _IOR('W', 7, int).
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

/// An open, armed watchdog device.
pub struct Watchdog {
    fd: OwnedFd,
    path: PathBuf,
    /// The timeout the driver runs with.
    pub timeout: Duration,
}

/// One watchdog ioctl that reads and writes a c_int of seconds.
fn ioctl_secs(fd: &OwnedFd, request: libc::c_ulong, secs: &mut libc::c_int) -> bool {
    // SAFETY: both watchdog requests read and/or write exactly one c_int
    // through the pointer, which is a live exclusive borrow for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), request, secs as *mut libc::c_int) };
    rc == 0
}

impl Watchdog {
    /// Opens (and so arms) the watchdog with `timeout`. Where the driver
    /// refuses that timeout its own is used; if it tells neither, the
    /// device is disarmed again and the ioctl error returned, since feeding
    /// at an unknown interval could reset a healthy machine.
    pub fn open(path: &Path, timeout: Duration) -> Result<Self, Error> {
        let fd = open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty()).at(Op::Open, path)?;
        let mut secs: libc::c_int = timeout.as_secs().clamp(1, 3600) as libc::c_int;
        if !ioctl_secs(&fd, WDIOC_SETTIMEOUT, &mut secs) {
            secs = 0;
            if !ioctl_secs(&fd, WDIOC_GETTIMEOUT, &mut secs) {
                let errno = last_errno();
                let _ = rustix::io::write(&fd, b"V");
                return Err(Error::os(Op::Ioctl("WDIOC_GETTIMEOUT"), path, errno));
            }
        }
        let timeout = if secs > 0 {
            Duration::from_secs(secs as u64)
        } else {
            timeout
        };
        Ok(Watchdog {
            fd,
            path: path.to_owned(),
            timeout,
        })
    }

    /// How often to feed: well inside the timeout.
    pub fn interval(&self) -> Duration {
        self.timeout / 3
    }

    /// Resets the countdown.
    pub fn feed(&self) -> Result<(), Error> {
        rustix::io::write(&self.fd, b"k").at(Op::Write, &self.path)?;
        Ok(())
    }

    /// Magic close: the driver disarms when 'V' is written before closing.
    pub fn disarm(self) {
        let _ = rustix::io::write(&self.fd, b"V");
    }
}
