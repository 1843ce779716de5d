//! The services' sd_notify sockets: one datagram socket per service, so a
//! message's sender is known by the socket it arrives on.

use std::collections::HashMap;
use std::io::IoSliceMut;
use std::mem::MaybeUninit;
use std::os::unix::net::UnixDatagram;

use bascule_services::Sender;
use bascule_sys::epoll::{Epoll, Interest};
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

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

    /// Every message waiting on every socket.
    pub fn read_all(&mut self) -> Vec<(String, Option<Sender>, String)> {
        let ids: Vec<u64> = self.socks.keys().copied().collect();
        ids.into_iter().flat_map(|id| self.read(id)).collect()
    }

    /// Every message waiting on socket `id`: the service it is for, the
    /// sending process (from SCM_CREDENTIALS) and the text.
    pub fn read(&mut self, id: u64) -> Vec<(String, Option<Sender>, String)> {
        let Some((name, sock)) = self.socks.get(&id) else {
            return Vec::new();
        };
        let mut buf = [0u8; NOTIFY_MAX];
        let mut out = Vec::new();
        // Bounded, so one chatty service cannot hold the loop.
        for _ in 0..64 {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            // TRUNC: the datagram's real length, even when it did not fit.
            let flags = RecvFlags::TRUNC | RecvFlags::DONTWAIT;
            let got =
                rustix::net::recvmsg(sock, &mut [IoSliceMut::new(&mut buf)], &mut control, flags);
            let sender = control.drain().find_map(|m| match m {
                RecvAncillaryMessage::ScmCredentials(c) => Some(Sender {
                    pid: c.pid.as_raw_nonzero().get() as u32,
                    uid: c.uid.as_raw(),
                }),
                _ => None,
            });
            match got {
                Ok(m) if m.bytes > NOTIFY_MAX => log!(
                    "service {name}: a notify message of {} bytes is over the {NOTIFY_MAX}-byte limit: ignored whole",
                    m.bytes
                ),
                Ok(m) => out.push((
                    name.clone(),
                    sender,
                    String::from_utf8_lossy(&buf[..m.bytes]).into_owned(),
                )),
                Err(_) => break,
            }
        }
        out
    }
}
