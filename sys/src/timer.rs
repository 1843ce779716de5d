//! One timerfd armed for the earliest deadline of the event loop.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
    Timespec,
};

/// A CLOCK_MONOTONIC timerfd and the deadline it is armed for.
pub struct Timer {
    fd: OwnedFd,
    armed: Option<Instant>,
}

impl Timer {
    /// Creates a disarmed timer.
    pub fn new() -> io::Result<Self> {
        let fd = timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )?;
        Ok(Timer { fd, armed: None })
    }

    /// Arms for `deadline` (or disarms with `None`). A deadline in the past
    /// fires at once.
    pub fn arm(&mut self, deadline: Option<Instant>, now: Instant) -> io::Result<()> {
        if deadline == self.armed {
            return Ok(());
        }
        let value = match deadline {
            None => Duration::ZERO,
            // A zero value would disarm: use the smallest delay instead.
            Some(d) => d
                .saturating_duration_since(now)
                .max(Duration::from_nanos(1)),
        };
        let spec = Itimerspec {
            it_interval: Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: Timespec {
                tv_sec: value.as_secs() as _,
                tv_nsec: value.subsec_nanos() as _,
            },
        };
        timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec)?;
        self.armed = deadline;
        Ok(())
    }

    /// Consumes the expiration count after the fd became readable.
    pub fn acknowledge(&mut self) {
        let mut buf = [0u8; 8];
        let _ = rustix::io::read(&self.fd, &mut buf);
        self.armed = None;
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
