//! Bringing the loopback interface up: services and readiness probes use
//! 127.0.0.1, and nothing else configures `lo` on a Bascule machine (the
//! kernel assigns 127.0.0.1/8 itself once the link is up).

use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};

use crate::error::{last_errno, Error, Op};

/// One interface ioctl on the `ifreq` named `lo`.
fn ifreq_ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    name: &'static str,
    ifr: &mut libc::ifreq,
) -> Result<(), Error> {
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write only the ifreq,
    // a live exclusive borrow for the whole call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(Error::os(Op::Ioctl(name), "lo", last_errno()));
    }
    Ok(())
}

/// Sets IFF_UP and IFF_RUNNING on `lo`.
pub fn loopback_up() -> Result<(), Error> {
    let sock = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::os_bare(Op::Socket, e))?;
    // SAFETY: ifreq is plain old data (arrays and a union of integers), so
    // all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // "lo\0" fits in IFNAMSIZ.
    for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    ifreq_ioctl(&sock, libc::SIOCGIFFLAGS, "SIOCGIFFLAGS", &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ifreq_ioctl(&sock, libc::SIOCSIFFLAGS, "SIOCSIFFLAGS", &mut ifr)
}
