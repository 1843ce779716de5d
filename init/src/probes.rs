//! TCP probes in flight: each connecting socket is in the epoll set, and
//! its first writable or error event is the probe's result.

use std::collections::HashMap;
use std::os::fd::OwnedFd;

use bascule_sys::epoll::{Epoll, Interest};

use crate::log;
use crate::tokens::Source;

#[derive(Debug, Default)]
pub struct Probes {
    connecting: HashMap<u64, OwnedFd>,
}

impl Probes {
    /// Watches a connecting socket. Returns the result at once when it
    /// cannot be watched (the probe then counts as failed).
    pub fn watch(&mut self, epoll: &Epoll, id: u64, sock: OwnedFd) -> Option<bool> {
        if let Err(e) = epoll.add(&sock, Source::Probe(id).token(), Interest::OUT) {
            log!("cannot watch a TCP probe's socket: {e}");
            return Some(false);
        }
        self.connecting.insert(id, sock);
        None
    }

    pub fn cancel(&mut self, epoll: &Epoll, id: u64) {
        if let Some(sock) = self.connecting.remove(&id) {
            let _ = epoll.delete(&sock);
        }
    }

    /// The connect of probe `id` finished: Some(true) when it connected.
    pub fn on_ready(&mut self, epoll: &Epoll, id: u64) -> Option<bool> {
        let sock = self.connecting.remove(&id)?;
        let _ = epoll.delete(&sock);
        Some(matches!(
            rustix::net::sockopt::socket_error(&sock),
            Ok(Ok(()))
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};

    use rustix::net::{AddressFamily, SocketFlags, SocketType};

    use super::*;

    fn connecting(port: u16) -> Option<OwnedFd> {
        let sock = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        match rustix::net::connect(&sock, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)) {
            Err(rustix::io::Errno::INPROGRESS) => Some(sock),
            _ => None,
        }
    }

    fn result(port: u16) -> Option<bool> {
        let mut epoll = Epoll::new().unwrap();
        let mut probes = Probes::default();
        // Loopback often answers within connect(2); only a pending one is watched.
        let sock = connecting(port)?;
        assert_eq!(probes.watch(&epoll, 1, sock), None);
        let events = epoll.wait(Some(std::time::Duration::from_secs(5))).unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(Source::from_token(events[0].0), Some(Source::Probe(1)));
        probes.on_ready(&epoll, 1)
    }

    #[test]
    fn a_listening_port_connects_and_a_closed_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let open = listener.local_addr().unwrap().port();
        assert_eq!(result(open), Some(true));
        // Bound but not listening, and held: no parallel test can take the
        // port, and a connect to it is refused.
        let held = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
        rustix::net::bind(&held, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
        let closed = match rustix::net::getsockname(&held).unwrap().try_into() {
            Ok(std::net::SocketAddr::V4(a)) => a.port(),
            other => panic!("not an IPv4 address: {other:?}"),
        };
        assert_eq!(result(closed), Some(false));
    }
}
