//! The services' sd_notify sockets: one datagram socket per service, so a
//! message's sender is known by the socket it arrives on.

use std::collections::HashMap;
use std::os::unix::net::UnixDatagram;

use bascule_sys::epoll::{Epoll, Interest};

use crate::log;
use crate::tokens::{Ids, Source};

/// The longest notify message taken, as systemd (PIPE_BUF): a longer one is
/// refused whole, never cut and half-applied.
pub const NOTIFY_MAX: usize = 4096;

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
        let mut buf = [0u8; NOTIFY_MAX];
        let mut out = Vec::new();
        // Bounded, so one chatty service cannot hold the loop.
        for _ in 0..64 {
            // TRUNC: the datagram's real length, even when it did not fit.
            let flags = rustix::net::RecvFlags::TRUNC | rustix::net::RecvFlags::DONTWAIT;
            match rustix::net::recv(sock, &mut buf, flags) {
                Ok((_, len)) if len > NOTIFY_MAX => log!(
                    "service {name}: a notify message of {len} bytes is over the {NOTIFY_MAX}-byte limit: ignored whole"
                ),
                Ok((got, _)) => out.push((
                    name.clone(),
                    String::from_utf8_lossy(&buf[..got]).into_owned(),
                )),
                Err(_) => break,
            }
        }
        out
    }
}
