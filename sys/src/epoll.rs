//! epoll with a 64-bit token per registration.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use rustix::event::epoll::{self, CreateFlags, Event, EventData, EventFlags};
use rustix::event::Timespec;

pub use rustix::event::epoll::EventFlags as Interest;

/// An epoll instance and its event buffer.
pub struct Epoll {
    fd: OwnedFd,
    buf: Vec<Event>,
}

impl Epoll {
    /// Creates the epoll fd.
    pub fn new() -> io::Result<Self> {
        Ok(Epoll {
            fd: epoll::create(CreateFlags::CLOEXEC)?,
            buf: Vec::with_capacity(64),
        })
    }

    /// Registers `fd` under `token`.
    pub fn add(&self, fd: impl AsFd, token: u64, interest: EventFlags) -> io::Result<()> {
        Ok(epoll::add(
            &self.fd,
            fd,
            EventData::new_u64(token),
            interest,
        )?)
    }

    /// Changes what `fd` is watched for.
    pub fn modify(&self, fd: impl AsFd, token: u64, interest: EventFlags) -> io::Result<()> {
        Ok(epoll::modify(
            &self.fd,
            fd,
            EventData::new_u64(token),
            interest,
        )?)
    }

    /// Stops watching `fd`.
    pub fn delete(&self, fd: impl AsFd) -> io::Result<()> {
        Ok(epoll::delete(&self.fd, fd)?)
    }

    /// Waits for events; `None` waits until one arrives. EINTR yields no events.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<Vec<(u64, EventFlags)>> {
        self.buf.clear();
        let ts = timeout.map(|d| Timespec {
            tv_sec: d.as_secs() as _,
            tv_nsec: d.subsec_nanos() as _,
        });
        match epoll::wait(
            &self.fd,
            rustix::buffer::spare_capacity(&mut self.buf),
            ts.as_ref(),
        ) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
        Ok(self.buf.iter().map(|e| (e.data.u64(), e.flags)).collect())
    }
}
