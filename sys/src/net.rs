//! Bringing interfaces up: services and readiness probes use 127.0.0.1, and
//! nothing else configures `lo` on a Bascule machine (the kernel assigns
//! 127.0.0.1/8 itself once the link is up); a machine in a cluster also
//! gives its NICs the static IPv4 addresses of its machine configuration.
//! The classic interface ioctls are enough for one address per interface,
//! without a netlink client.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{socket_with, AddressFamily, SocketFlags, SocketType};

use crate::error::{last_errno, Error, Op};

/// One interface ioctl on `ifr` (whose name is `name`).
fn ifreq_ioctl(
    sock: &OwnedFd,
    request: libc::c_ulong,
    op: &'static str,
    name: &str,
    ifr: &mut libc::ifreq,
) -> Result<(), Error> {
    // SAFETY: the SIOC[GS]IF* requests used here read and write only the
    // ifreq, a live exclusive borrow for the whole call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request, ifr as *mut libc::ifreq) };
    if rc < 0 {
        return Err(Error::os(Op::Ioctl(op), name, last_errno()));
    }
    Ok(())
}

fn inet_socket() -> Result<OwnedFd, Error> {
    socket_with(
        AddressFamily::INET,
        SocketType::DGRAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::os_bare(Op::Socket, e))
}

/// An all-zero ifreq naming `name`, or `None` if it does not fit IFNAMSIZ.
fn named_ifreq(name: &str) -> Option<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return None;
    }
    // SAFETY: ifreq is plain old data (arrays and a union of integers), so
    // all-zero is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    Some(ifr)
}

fn bad_name(name: &str) -> Error {
    Error::os(Op::Ioctl("SIOCGIFFLAGS"), name, rustix::io::Errno::INVAL)
}

/// Sets IFF_UP and IFF_RUNNING on `name`.
fn link_up(sock: &OwnedFd, name: &str) -> Result<(), Error> {
    let mut ifr = named_ifreq(name).ok_or_else(|| bad_name(name))?;
    ifreq_ioctl(sock, libc::SIOCGIFFLAGS, "SIOCGIFFLAGS", name, &mut ifr)?;
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    ifr.ifr_ifru.ifru_flags = flags | (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    ifreq_ioctl(sock, libc::SIOCSIFFLAGS, "SIOCSIFFLAGS", name, &mut ifr)
}

/// Sets IFF_UP and IFF_RUNNING on `lo`.
pub fn loopback_up() -> Result<(), Error> {
    link_up(&inet_socket()?, "lo")
}

/// An IPv4 `sockaddr_in` as the ifreq's address member holds it: the
/// family, then (in `sa_data`) the port (0) and the address, both in
/// network byte order.
fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let mut sa_data = [0 as libc::c_char; 14];
    for (dst, src) in sa_data[2..6].iter_mut().zip(addr.octets()) {
        *dst = src as libc::c_char;
    }
    libc::sockaddr {
        sa_family: libc::AF_INET as libc::sa_family_t,
        sa_data,
    }
}

/// The netmask of a prefix length (0-32).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    Ipv4Addr::from(bits)
}

/// Gives `name` the address `addr/prefix` (replacing the one it had) and
/// brings it up. The kernel adds the connected route itself.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> Result<(), Error> {
    let sock = inet_socket()?;
    let mut ifr = named_ifreq(name).ok_or_else(|| bad_name(name))?;
    ifr.ifr_ifru.ifru_addr = sockaddr(addr);
    ifreq_ioctl(&sock, libc::SIOCSIFADDR, "SIOCSIFADDR", name, &mut ifr)?;
    let mut ifr = named_ifreq(name).ok_or_else(|| bad_name(name))?;
    ifr.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix));
    ifreq_ioctl(
        &sock,
        libc::SIOCSIFNETMASK,
        "SIOCSIFNETMASK",
        name,
        &mut ifr,
    )?;
    link_up(&sock, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn netmasks_of_prefixes() {
        assert_eq!(netmask(16), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(0), Ipv4Addr::new(0, 0, 0, 0));
        assert_eq!(netmask(32), Ipv4Addr::new(255, 255, 255, 255));
    }

    #[test]
    fn an_interface_that_does_not_exist_is_named_in_the_error() {
        let e = set_ipv4("nosuchif0", Ipv4Addr::new(169, 254, 1, 1), 16).unwrap_err();
        assert!(e.to_string().contains("nosuchif0"), "{e}");
        assert!(set_ipv4("a-name-far-too-long-for-ifnamsiz", Ipv4Addr::LOCALHOST, 8).is_err());
    }
}
