//! The services' sd_notify sockets: one datagram socket per service, so a
//! message's sender is known by the socket it arrives on.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;

use bascule_sys::epoll::{Epoll, Interest};

use crate::log;
use crate::tokens::{Ids, Source};

#[derive(Debug, Default)]
pub struct NotifySockets {
    socks: HashMap<u64, (String, UnixDatagram)>,
}

impl NotifySockets {
    pub fn watch(&mut self, epoll: &Epoll, ids: &mut Ids, service: String, sock: UnixDatagram) {
        let id = ids.next();
        if let Err(e) = epoll.add(&sock, Source::Notify(id).token(), Interest::IN) {
            log!("service {service}: cannot watch its notify socket: {e}");
            return;
        }
        self.socks.insert(id, (service, sock));
    }

    /// Every message waiting on socket `id`, with the service it is for.
    pub fn read(&mut self, id: u64) -> Vec<(String, String)> {
        let Some((name, sock)) = self.socks.get(&id) else {
            return Vec::new();
        };
        let mut buf = [0u8; 4096];
        let mut out = Vec::new();
        // Bounded, so one chatty service cannot hold the loop.
        for _ in 0..64 {
            match sock.recv(&mut buf) {
                Ok(n) => out.push((
                    name.clone(),
                    String::from_utf8_lossy(&buf[..n]).into_owned(),
                )),
                Err(_) => break,
            }
        }
        out
    }
}
