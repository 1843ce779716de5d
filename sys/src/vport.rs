//! The virtio-serial port on which the API is also served. A port has one
//! reader in the guest and is "connected" only while the host side (QEMU's
//! chardev socket) has a client; the kernel sends SIGIO when that changes,
//! so reconnection is event-driven too.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::{fcntl_getfl, fcntl_setfl, open, Mode, OFlags};

use crate::error::{last_errno, Context, Error, Op};

/// The /dev node of the virtio-serial port named `name`, from
/// /sys/class/virtio-ports/*/name (there is no udev to make symlinks).
pub fn find(sys_class: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(sys_class).ok()?.flatten() {
        let Ok(n) = std::fs::read_to_string(e.path().join("name")) else {
            continue;
        };
        if n.trim() == name {
            return Some(PathBuf::from("/dev").join(e.file_name()));
        }
    }
    None
}

/// Opens the port non-blocking, with SIGIO on host connect and disconnect.
pub fn open_port(path: &Path) -> Result<OwnedFd, Error> {
    let fd = open(
        path,
        OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .at(Op::Open, path)?;
    // SAFETY: F_SETOWN takes an integer pid, no pointers, on an fd we own.
    let rc = unsafe {
        libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETOWN,
            rustix::process::getpid().as_raw_nonzero().get(),
        )
    };
    if rc < 0 {
        return Err(Error::os(Op::Fcntl("F_SETOWN"), path, last_errno()));
    }
    let flags = fcntl_getfl(&fd).at(Op::Fcntl("F_GETFL"), path)?;
    fcntl_setfl(&fd, flags | OFlags::ASYNC).at(Op::Fcntl("F_SETFL"), path)?;
    Ok(fd)
}

/// True while a host client is attached (the port does not report HUP).
pub fn host_connected(fd: impl AsFd) -> bool {
    let mut fds = [PollFd::new(&fd, PollFlags::IN)];
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    match poll(&mut fds, Some(&zero)) {
        Ok(_) => !fds[0].revents().contains(PollFlags::HUP),
        Err(_) => false,
    }
}
