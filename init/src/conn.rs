//! One control connection: non-blocking, with an input frame decoder and a
//! bounded output buffer, so a slow or stuck client never blocks PID 1. The
//! transport is any stream fd: an accepted Unix socket or the virtio-serial
//! port (read(2)/write(2) through `File` serve both).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::time::Instant;

use bascule_api::frame::{self, FrameDecoder};
use bascule_api::pb;

/// Output a client may leave unread before it is disconnected.
pub const MAX_PENDING_OUTPUT: usize = 8 << 20;
/// Replies pending above which no further request of the client is taken
/// until it reads: pipelined requests then wait in the socket (the
/// client's writes block) instead of their replies piling up.
pub const REPLY_HIGH_WATER: usize = 1 << 20;
/// Output above which follow streams drop lines for this client.
pub const FOLLOW_BACKPRESSURE: usize = 256 * 1024;

pub struct Follow {
    pub request_id: u64,
    pub service: String,
    pub cursor: u64,
    pub dropped: u64,
}

pub struct Conn {
    pub stream: File,
    pub decoder: FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    pub input: Input,
    /// The peer shut down its sending side: what it sent is answered, then
    /// the connection closes.
    pub peer_closed: bool,
    pub follows: Vec<Follow>,
    /// What the connection is registered for in the epoll set.
    pub watch: Watch,
    pub flow: Flow,
    /// The peer's uid (None: the virtio-serial port, whose peer is the host).
    pub uid: Option<u32>,
    /// When the connection last brought a complete request, or was last
    /// busy (a follow, a waiting reply, an upgrade): idle time counts from here.
    pub active_at: Instant,
}

/// Whether requests are still read from a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    Open,
    /// No more requests are read; it closes once its output is flushed.
    Closing,
}

/// The epoll interest of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    Read,
    /// Output is pending too.
    ReadWrite,
    /// Input is paused (an upgrade's bundle bytes are ahead of the disk):
    /// only output and hang-ups are watched.
    Paused,
    PausedWrite,
}

/// Whether the server reads what the client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Reading,
    /// Back-pressure: the socket fills up and the client's writes block.
    Paused,
}

pub enum ReadOutcome {
    Open,
    Closed,
}

impl Conn {
    /// `fd` must already be non-blocking.
    pub fn new(fd: OwnedFd, uid: Option<u32>, now: Instant) -> Self {
        Conn {
            stream: File::from(fd),
            decoder: FrameDecoder::new(),
            out: Vec::new(),
            out_pos: 0,
            input: Input::Open,
            peer_closed: false,
            follows: Vec::new(),
            watch: Watch::Read,
            flow: Flow::Reading,
            uid,
            active_at: now,
        }
    }

    /// Forgets everything in flight: the peer on the other end of a
    /// long-lived transport (the virtio-serial port) has changed.
    pub fn reset(&mut self) {
        self.decoder = FrameDecoder::new();
        self.new_session();
        self.watch = Watch::Read;
    }

    /// Forgets the last client's session; the decoder keeps what the new
    /// client sent.
    fn new_session(&mut self) {
        self.out.clear();
        self.out_pos = 0;
        self.input = Input::Open;
        self.peer_closed = false;
        self.follows.clear();
        // `watch` is what epoll has: the next `service` adjusts it.
        self.flow = Flow::Reading;
    }

    pub fn pending_output(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// More replies wait than [`REPLY_HIGH_WATER`].
    pub fn backlogged(&self) -> bool {
        self.pending_output() > REPLY_HIGH_WATER
    }

    /// Whether requests are taken from this connection now.
    pub fn takes_requests(&self) -> bool {
        self.input == Input::Open && self.flow == Flow::Reading && !self.backlogged()
    }

    /// Queues [`frame::SESSION_START`]: the client drops what it reads
    /// before it (a previous client's replies, left in the port).
    pub fn send_session_start(&mut self) {
        self.out.extend_from_slice(&frame::SESSION_START);
    }

    /// Queues a response. Returns false when the client has let too much
    /// output pile up and must be dropped.
    pub fn send(&mut self, resp: &pb::Response) -> bool {
        match frame::encode(resp) {
            Ok(bytes) => {
                if self.pending_output() + bytes.len() > MAX_PENDING_OUTPUT {
                    return false;
                }
                self.out.extend_from_slice(&bytes);
                true
            }
            Err(e) => {
                // Only a reply over the frame limit gets here: say so instead.
                let err = pb::Response {
                    id: resp.id,
                    more: false,
                    result: Some(pb::response::Result::Error(pb::Error::new(
                        pb::ErrorCode::Failed,
                        format!("reply to request {} is too large to send: {e}", resp.id),
                    ))),
                };
                match frame::encode(&err) {
                    Ok(b) => {
                        self.out.extend_from_slice(&b);
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    }

    /// Reads what is available into the decoder (bounded per call, so one
    /// busy client cannot starve the others).
    pub fn read_some(&mut self) -> io::Result<ReadOutcome> {
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..64 {
            match self.stream.read(&mut buf) {
                Ok(0) => return Ok(ReadOutcome::Closed),
                Ok(n) => {
                    if self.decoder.push_watching_sessions(&buf[..n]) {
                        // A new client took over the stream: nothing of
                        // the last one's (replies, follows) goes to it,
                        // and our marker tells it where our bytes start.
                        self.new_session();
                        self.send_session_start();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(ReadOutcome::Open)
    }

    /// Writes as much queued output as the socket takes.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.out_pos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > (1 << 20) {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        Ok(())
    }
}

/// May this peer use the API? Root always; others only as members of the
/// configured group.
pub fn authorize(uid: u32, gid: u32, pid: u32, allowed_group: Option<u32>) -> Result<(), String> {
    if uid == 0 {
        return Ok(());
    }
    if let Some(g) = allowed_group {
        if gid == g || supplementary_groups(pid).contains(&g) {
            return Ok(());
        }
        return Err(format!(
            "permission denied: uid {uid} is neither root nor a member of group {g}, which may use this socket"
        ));
    }
    Err(format!(
        "permission denied: the control socket accepts root only (you are uid {uid})"
    ))
}

fn supplementary_groups(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("Groups:")).map(|g| {
                g.split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect()
            })
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_only_unless_group() {
        assert!(authorize(0, 0, 1, None).is_ok());
        let e = authorize(1000, 1000, 1, None).unwrap_err();
        assert!(e.contains("root only") && e.contains("1000"), "{e}");
        assert!(authorize(1000, 50, 1, Some(50)).is_ok());
        assert!(authorize(1000, 51, u32::MAX, Some(50))
            .unwrap_err()
            .contains("group 50"));
    }
}
