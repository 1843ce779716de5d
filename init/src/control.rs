//! The control server: the Unix socket (with peer-credential checks and a
//! cap on clients), the virtio-serial port, and each connection's framing
//! and back-pressure. It decodes requests and queues replies; what a
//! request means is `requests`' business.

use std::collections::{BTreeSet, HashMap};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bascule_api::pb;
use bascule_services::logs::LogRing;
use bascule_sys::epoll::{Epoll, Interest};

use crate::conn::{self, Conn, Flow, Follow, Input, ReadOutcome, Watch};
use crate::log;
use crate::tokens::{Ids, Source};

/// Control clients served at once; more get an error and are closed.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections one non-root uid may hold at once.
pub const MAX_PER_UID: usize = MAX_CONNECTIONS / 2;
/// Connections only root may take: other uids together hold the rest.
pub const ROOT_RESERVED: usize = 16;
/// A connection without a complete request for this long is closed,
/// unless it is busy (following logs, waiting for a reply, upgrading).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The virtio-serial port's connection id (never given to a socket client).
pub const PORT_CONN: u64 = 0;
/// Longest chunk of log lines in one follow frame.
const FOLLOW_CHUNK_BYTES: usize = 64 * 1024;

/// What a readable connection brought.
#[derive(Debug, Default)]
pub struct Incoming {
    /// A bad frame ended the input: answered after the requests before it.
    pub refusal: Option<(pb::ErrorCode, String)>,
    /// The peer shut down its sending side: answer these, then close.
    pub half_closed: bool,
}

pub struct ControlServer {
    listener: UnixListener,
    socket: PathBuf,
    api_group: Option<u32>,
    conns: HashMap<u64, Conn>,
    /// The port's fd is in the epoll set (only while the host is attached).
    port_registered: bool,
    listener_paused: bool,
    /// Connections closed since the loop last asked (their waiters go).
    dropped: Vec<u64>,
    /// Connections that stopped taking requests (see [`Self::next_request`]).
    stalled: BTreeSet<u64>,
    /// The port's host client went away since the loop last asked.
    port_left: bool,
    /// When the next idle connection times out.
    idle_deadline: Option<Instant>,
}

pub fn error_response(id: u64, code: pb::ErrorCode, message: impl Into<String>) -> pb::Response {
    pb::Response {
        id,
        more: false,
        result: Some(pb::response::Result::Error(pb::Error::new(code, message))),
    }
}

impl ControlServer {
    pub fn new(
        epoll: &Epoll,
        listener: UnixListener,
        socket: PathBuf,
        api_group: Option<u32>,
        port: Option<&Path>,
        now: Instant,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        epoll.add(&listener, Source::Listener.token(), Interest::IN)?;
        let mut server = ControlServer {
            listener,
            socket,
            api_group,
            conns: HashMap::new(),
            port_registered: false,
            listener_paused: false,
            dropped: Vec::new(),
            stalled: BTreeSet::new(),
            port_left: false,
            idle_deadline: None,
        };
        if let Some(path) = port {
            match bascule_sys::vport::open_port(path) {
                Ok(fd) => {
                    server.conns.insert(PORT_CONN, Conn::new(fd, None, now));
                    server.port_check(epoll);
                    log!("serving the API on {}", path.display());
                }
                Err(e) => log!("cannot open the API port {}: {e}", path.display()),
            }
        }
        Ok(server)
    }

    /// Watches the port while a host client is attached, and only then:
    /// a detached port reports HUP without end.
    ///
    /// Attached or not is what the guest kernel last heard from QEMU, and
    /// it lags: the next client's first bytes can be read while the port
    /// still counts as detached from the last one. So neither state drops
    /// what was read or queued: sessions begin at the client's marker
    /// (`Conn::read_some`), and the client skips what precedes ours.
    pub fn port_check(&mut self, epoll: &Epoll) {
        let Some(conn) = self.conns.get_mut(&PORT_CONN) else {
            return;
        };
        let connected = bascule_sys::vport::host_connected(&conn.stream);
        let tok = Source::Conn(PORT_CONN).token();
        if connected && !self.port_registered {
            if epoll.add(&conn.stream, tok, interest(conn.watch)).is_ok() {
                self.port_registered = true;
            }
            // Replies queued while it was away go out now.
            self.service(epoll, PORT_CONN);
        } else if !connected && self.port_registered {
            self.port_detached(epoll);
        }
    }

    /// The port's host side went away (end of file, or HUP): stop watching
    /// it until the next client, keep what is queued.
    fn port_detached(&mut self, epoll: &Epoll) {
        if let Some(conn) = self.conns.get(&PORT_CONN) {
            if self.port_registered {
                let _ = epoll.delete(&conn.stream);
            }
        }
        self.port_registered = false;
        self.port_left = true;
        // It may be back already, its SIGIO consumed before this.
        self.port_check(epoll);
    }

    /// Whether the port's host client went away since the last call.
    pub fn take_port_left(&mut self) -> bool {
        std::mem::take(&mut self.port_left)
    }

    pub fn accept(&mut self, epoll: &Epoll, ids: &mut Ids, now: Instant) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of fds (EMFILE/ENFILE): the listener would stay
                    // readable and spin the loop. Stop watching it until a
                    // connection closes.
                    log!(
                        "accept on {}: {e}; not accepting until a client leaves",
                        self.socket.display()
                    );
                    if !self.listener_paused && epoll.delete(&self.listener).is_ok() {
                        self.listener_paused = true;
                    }
                    return;
                }
            };
            let cred = rustix::net::sockopt::socket_peercred(&stream);
            let uid = cred.as_ref().ok().map(|c| c.uid.as_raw());
            if let Some(msg) = self.no_slot_for(uid) {
                let mut conn = Conn::new(OwnedFd::from(stream), uid, now);
                // Refused before its marker is read: ours goes first all
                // the same, so the client reads the reason.
                conn.send_session_start();
                conn.send(&error_response(0, pb::ErrorCode::Unavailable, msg));
                let _ = conn.flush();
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log!("control connection setup failed: {e}");
                continue;
            }
            let verdict = match cred {
                Ok(cred) => conn::authorize(
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                    cred.pid.as_raw_nonzero().get() as u32,
                    self.api_group,
                ),
                Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
            };
            let mut conn = Conn::new(OwnedFd::from(stream), uid, now);
            if let Err(msg) = verdict {
                log!("refused a control client: {msg}");
                conn.send_session_start();
                conn.send(&error_response(0, pb::ErrorCode::PermissionDenied, msg));
                conn.input = Input::Closing;
            }
            let id = ids.next();
            if let Err(e) = epoll.add(
                &conn.stream,
                Source::Conn(id).token(),
                Interest::IN | Interest::RDHUP,
            ) {
                log!("cannot watch a control connection: {e}");
                continue;
            }
            self.conns.insert(id, conn);
            self.service(epoll, id);
        }
    }

    /// Why a client of `uid` gets no slot, if it does not: all slots are
    /// taken, or (not root) the slots others may hold are, or its uid
    /// holds its share already. Root always finds one of the reserved.
    fn no_slot_for(&self, uid: Option<u32>) -> Option<String> {
        let clients = || self.conns.iter().filter(|(id, _)| **id != PORT_CONN);
        let total = clients().count();
        if total >= MAX_CONNECTIONS {
            return Some(format!(
                "too many control clients ({MAX_CONNECTIONS}); try again later"
            ));
        }
        if uid == Some(0) {
            return None;
        }
        let others = clients().filter(|(_, c)| c.uid != Some(0)).count();
        if others >= MAX_CONNECTIONS - ROOT_RESERVED {
            return Some(format!(
                "too many control clients ({others}); the last {ROOT_RESERVED} slots are kept for root; try again later"
            ));
        }
        let own = clients().filter(|(_, c)| c.uid == uid).count();
        if own >= MAX_PER_UID {
            let who = uid.map_or_else(|| "an unknown uid".to_owned(), |u| format!("uid {u}"));
            return Some(format!(
                "{who} already holds {own} control connections, its limit ({MAX_PER_UID}); close some and try again"
            ));
        }
        None
    }

    /// Closes connections idle for [`IDLE_TIMEOUT`]: no complete request
    /// and nothing in progress. A connection in `busy` (a reply waits for
    /// it, or it runs an upgrade), following logs or with its input paused
    /// counts as active now. Remembers when the next one is due.
    pub fn expire_idle(&mut self, epoll: &Epoll, now: Instant, busy: &BTreeSet<u64>) {
        let mut expired = Vec::new();
        let mut next: Option<Instant> = None;
        for (id, c) in self.conns.iter_mut() {
            if *id == PORT_CONN || c.input == Input::Closing {
                continue;
            }
            if busy.contains(id) || !c.follows.is_empty() || c.flow == Flow::Paused {
                c.active_at = now;
                continue;
            }
            let due = c.active_at + IDLE_TIMEOUT;
            if due <= now {
                expired.push(*id);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        self.idle_deadline = next;
        if expired.is_empty() {
            return;
        }
        log!(
            "closing {} control connection(s) idle for {} s without a complete request",
            expired.len(),
            IDLE_TIMEOUT.as_secs()
        );
        for id in expired {
            if let Some(conn) = self.conns.get_mut(&id) {
                conn.send(&error_response(
                    0,
                    pb::ErrorCode::Unavailable,
                    format!(
                        "idle for {} s without a complete request; closing the connection",
                        IDLE_TIMEOUT.as_secs()
                    ),
                ));
                conn.input = Input::Closing;
            }
            self.service(epoll, id);
        }
    }

    /// When [`Self::expire_idle`] next has a connection to close.
    pub fn idle_deadline(&self) -> Option<Instant> {
        self.idle_deadline
    }

    /// Reads what a connection sent into its decoder, while it takes
    /// requests; [`Self::next_request`] decodes them.
    pub fn on_readable(&mut self, epoll: &Epoll, id: u64, flags: Interest) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if flags.intersects(Interest::IN | Interest::RDHUP | Interest::HUP | Interest::ERR)
            && conn.takes_requests()
            && !conn.peer_closed
        {
            let outcome = conn.read_some();
            match outcome {
                Ok(ReadOutcome::Open) => {}
                // What was read before the end is answered all the same:
                // it may be the next client's (see `port_check`).
                Ok(ReadOutcome::Closed) | Err(_) if id == PORT_CONN => self.port_detached(epoll),
                Ok(ReadOutcome::Closed) => conn.peer_closed = true,
                Err(_) => {
                    // The connection broke: answer nothing more.
                    self.drop_conn(epoll, id);
                }
            }
        } else if flags.intersects(Interest::HUP | Interest::ERR) {
            if id == PORT_CONN {
                self.port_detached(epoll);
            } else {
                self.drop_conn(epoll, id);
            }
        }
    }

    /// The connection's next request, while it takes requests (see
    /// [`Conn::takes_requests`]). One that stops taking them with requests
    /// possibly left in its decoder is remembered for
    /// [`Self::take_resumable`].
    pub fn next_request(
        &mut self,
        id: u64,
        incoming: &mut Incoming,
        now: Instant,
    ) -> Option<pb::Request> {
        let conn = self.conns.get_mut(&id)?;
        if incoming.refusal.is_some() || conn.input != Input::Open {
            return None;
        }
        if !conn.takes_requests() {
            self.stalled.insert(id);
            return None;
        }
        match decode_one(conn) {
            Ok(Some(req)) => {
                conn.active_at = now;
                Some(req)
            }
            Ok(None) => {
                incoming.half_closed = conn.peer_closed;
                None
            }
            Err(refusal) => {
                incoming.refusal = Some(refusal);
                None
            }
        }
    }

    /// Connections that stopped taking requests (input paused, replies
    /// piling up) and take them again now: their decoders may hold some.
    pub fn take_resumable(&mut self) -> Vec<u64> {
        if self.stalled.is_empty() {
            return Vec::new();
        }
        let conns = &self.conns;
        let ready: Vec<u64> = self
            .stalled
            .iter()
            .copied()
            .filter(|id| conns.get(id).is_some_and(|c| c.takes_requests()))
            .collect();
        self.stalled
            .retain(|id| conns.contains_key(id) && !ready.contains(id));
        ready
    }

    /// After the requests of [`Self::on_readable`] were answered: sends the
    /// refusal of a bad frame, closes a half-closed connection once its
    /// replies are out, and flushes.
    pub fn settle(&mut self, epoll: &Epoll, id: u64, incoming: Incoming) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if let Some((code, what)) = incoming.refusal {
                log!("closing a control connection: {what}");
                conn.send(&error_response(
                    0,
                    code,
                    format!("{what}; closing the connection"),
                ));
                conn.input = Input::Closing;
            }
            if incoming.half_closed {
                conn.input = Input::Closing;
                conn.follows.clear();
                self.dropped.push(id);
            }
        }
        self.service(epoll, id);
    }

    /// Queues one reply; a client that does not read its replies is dropped.
    pub fn reply(&mut self, epoll: &Epoll, id: u64, resp: &pb::Response) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if !conn.send(resp) {
                log!("dropping a control client that does not read its replies");
                self.drop_conn(epoll, id);
                return;
            }
        }
        self.service(epoll, id);
    }

    /// The open connections, by id.
    #[cfg(any(test, feature = "fuzzing"))]
    pub fn conn_ids(&self) -> Vec<u64> {
        self.conns.keys().copied().collect()
    }

    pub fn conn_mut(&mut self, id: u64) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// Flushes a connection's output and sets its epoll interest; closes it
    /// when it is done or hopelessly behind.
    pub fn service(&mut self, epoll: &Epoll, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.flush().is_err() || (conn.input == Input::Closing && conn.pending_output() == 0) {
            self.drop_conn(epoll, id);
            return;
        }
        let reading = conn.takes_requests() && !conn.peer_closed;
        let watch = match (reading, conn.pending_output() > 0) {
            (true, true) => Watch::ReadWrite,
            (true, false) => Watch::Read,
            (false, true) => Watch::PausedWrite,
            (false, false) => Watch::Paused,
        };
        if watch != conn.watch {
            conn.watch = watch;
            // A detached port is out of the epoll set: this fails, and
            // `port_check` adds it back with the interest just recorded.
            let _ = epoll.modify(&conn.stream, Source::Conn(id).token(), interest(watch));
        }
    }

    fn drop_conn(&mut self, epoll: &Epoll, id: u64) {
        self.dropped.push(id);
        if id == PORT_CONN {
            // The port stays open: end this session (a bad frame, a client
            // that does not read); the next client's marker starts anew.
            if let Some(conn) = self.conns.get_mut(&PORT_CONN) {
                conn.reset();
            }
            self.service(epoll, PORT_CONN);
            return;
        }
        if let Some(conn) = self.conns.remove(&id) {
            let _ = epoll.delete(&conn.stream);
        }
        if self.listener_paused
            && epoll
                .add(&self.listener, Source::Listener.token(), Interest::IN)
                .is_ok()
        {
            self.listener_paused = false;
        }
    }

    /// Stops or resumes reading a connection (back-pressure).
    pub fn set_flow(&mut self, epoll: &Epoll, id: u64, flow: Flow) {
        if let Some(conn) = self.conns.get_mut(&id) {
            if conn.flow != flow {
                conn.flow = flow;
                // Frames that arrived while paused are still in the socket:
                // level-triggered epoll reports them once IN is back.
                self.service(epoll, id);
            }
        }
    }

    /// Connections closed since the last call.
    pub fn take_dropped(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.dropped)
    }

    /// Sends new log lines of `service` to every client following it.
    pub fn push_follows(&mut self, epoll: &Epoll, service: &str, ring: &LogRing) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.follows.iter().any(|f| f.service == service))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(conn) = self.conns.get_mut(&id) else {
                continue;
            };
            let backlogged = conn.pending_output() > conn::FOLLOW_BACKPRESSURE;
            let mut frames = Vec::new();
            for f in conn.follows.iter_mut().filter(|f| f.service == service) {
                if let Some(frame) = follow_frame(f, ring, backlogged) {
                    frames.push(frame);
                }
            }
            for fr in frames {
                conn.send(&fr);
            }
            self.service(epoll, id);
        }
    }

    pub fn flush_all(&mut self) {
        for conn in self.conns.values_mut() {
            let _ = conn.flush();
        }
    }

    pub fn remove_socket(&self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// What epoll watches for a connection in `watch`.
fn interest(watch: Watch) -> Interest {
    match watch {
        Watch::ReadWrite => Interest::IN | Interest::OUT | Interest::RDHUP,
        Watch::Read => Interest::IN | Interest::RDHUP,
        Watch::PausedWrite => Interest::OUT,
        Watch::Paused => Interest::empty(),
    }
}

/// The next frame of one follow, or None when there is nothing to send.
fn follow_frame(f: &mut Follow, ring: &LogRing, backlogged: bool) -> Option<pb::Response> {
    if backlogged {
        // The client is not reading: skip ahead rather than buffer without
        // bound, and without copying what it will never get.
        let (next, skipped) = ring.skip_to_end(f.cursor);
        f.dropped += skipped;
        f.cursor = next;
        return None;
    }
    let (lines, next, lost) = ring.since(f.cursor, FOLLOW_CHUNK_BYTES);
    f.dropped += lost;
    f.cursor = next;
    if lines.is_empty() {
        return None;
    }
    let frame = pb::Response {
        id: f.request_id,
        more: true,
        result: Some(pb::response::Result::Log(pb::LogChunk {
            lines: crate::wire::log_lines(lines),
            dropped: f.dropped,
        })),
    };
    f.dropped = 0;
    Some(frame)
}

/// Every complete request in the connection's input, and the refusal of
/// the bad frame that ended it, if one did.
fn decode_one(conn: &mut Conn) -> Result<Option<pb::Request>, (pb::ErrorCode, String)> {
    let payload = match conn.decoder.next_frame() {
        Ok(Some(p)) => p,
        Ok(None) => return Ok(None),
        Err(e) => {
            let code = match e {
                bascule_api::FrameError::TooLarge { .. } => pb::ErrorCode::FrameTooLarge,
                _ => pb::ErrorCode::Malformed,
            };
            return Err((code, e.to_string()));
        }
    };
    bascule_api::frame::decode::<pb::Request>(&payload, "bascule.v1.Request")
        .map(Some)
        .map_err(|e| (pb::ErrorCode::Malformed, e.to_string()))
}
