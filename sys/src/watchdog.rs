//! The hardware watchdog (/dev/watchdog0; i6300esb under QEMU). PID 1 feeds
//! it from its event loop, so a hung loop resets the machine.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use rustix::fs::{open, Mode, OFlags};

/// WDIOC_SETTIMEOUT = _IOWR('W', 6, int).
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;

pub struct Watchdog {
    fd: OwnedFd,
    pub timeout: Duration,
}

impl Watchdog {
    /// Opens (and so arms) the watchdog with `timeout`.
    pub fn open(path: &Path, timeout: Duration) -> io::Result<Self> {
        let fd = open(path, OFlags::WRONLY | OFlags::CLOEXEC, Mode::empty())?;
        let mut secs: libc::c_int = timeout.as_secs().clamp(1, 3600) as libc::c_int;
        // SAFETY: WDIOC_SETTIMEOUT reads and writes one c_int through the
        // pointer, which points at a live local for the whole call.
        let rc = unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                WDIOC_SETTIMEOUT,
                &mut secs as *mut libc::c_int,
            )
        };
        let timeout = if rc == 0 && secs > 0 {
            Duration::from_secs(secs as u64)
        } else {
            timeout
        };
        Ok(Watchdog { fd, timeout })
    }

    /// How often to feed: well inside the timeout.
    pub fn interval(&self) -> Duration {
        self.timeout / 3
    }

    pub fn feed(&self) -> io::Result<()> {
        rustix::io::write(&self.fd, b"k")?;
        Ok(())
    }

    /// Magic close: the driver disarms when 'V' is written before closing.
    pub fn disarm(self) {
        let _ = rustix::io::write(&self.fd, b"V");
    }
}
