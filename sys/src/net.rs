//! Bringing the loopback interface up: services and readiness probes use
//! 127.0.0.1, and nothing else configures `lo` on a Bascule machine (the
//! kernel assigns 127.0.0.1/8 itself once the link is up).

use std::io;
use std::os::fd::AsRawFd;

use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};

pub fn loopback_up() -> io::Result<()> {
    let sock = socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data, so all-zero is a valid value; "lo\0"
    // fits in IFNAMSIZ; both ioctls read and write only that struct, which
    // lives on this stack frame for the duration of the calls.
    unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (dst, src) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
