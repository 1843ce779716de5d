//! Clocks: monotonic `Instant` for the state machines, boot time and wall
//! time for the timeline and log stamps.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// The source of "now" for the event loop, so tests can substitute time.
pub trait Clock {
    /// The current monotonic time.
    fn now(&self) -> Instant;
}

/// The real monotonic clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// Microseconds since the kernel started (CLOCK_BOOTTIME).
pub fn boottime_us() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// Microseconds since the Unix epoch, 0 if the clock is before it.
pub fn wall_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}
