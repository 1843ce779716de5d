//! A blocking client for the control socket. Every wait is bounded by the
//! client's timeout, so a missing reply is an error, never a hang; only a
//! follow stream waits indefinitely for new log lines, by request.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::frame::{self, FrameDecoder, FrameError};
use crate::pb;

mod upgrade;
pub use upgrade::{BundleReader, UpgradeError, UpgradeOptions, UpgradeSource, UPGRADE_CHUNK};

/// Default bound on waiting for each reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server lets a start, stop or restart settle before it
/// answers anyway (with ERROR_CODE_TIMEOUT); clients wait a little longer.
pub const CONTROL_SETTLE: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {path}: {source} (is bascule-init running? set --socket or BASCULE_SOCKET)")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no reply from the server within {0:?}")]
    Timeout(Duration),
    #[error("the server closed the connection before replying")]
    Closed,
    #[error("i/o error on the control socket: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error("{0}")]
    Server(pb::Error),
    #[error("the server answered request {expected} with an unexpected reply")]
    Unexpected { expected: u64 },
}

impl ClientError {
    /// The server's error code, when the server refused the request.
    pub fn server_code(&self) -> Option<pb::ErrorCode> {
        match self {
            ClientError::Server(e) => pb::ErrorCode::try_from(e.code).ok(),
            _ => None,
        }
    }
}

/// Request ids unique across the clients of a process and unlikely to
/// repeat across processes, so a stale reply is never taken for ours.
fn first_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        ^ (u64::from(std::process::id()) << 40);
    let _ = NEXT.compare_exchange(
        0,
        seed.max(1) & (u64::MAX >> 1),
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    NEXT.fetch_add(1 << 20, Ordering::Relaxed)
}

pub struct Client {
    stream: UnixStream,
    decoder: FrameDecoder,
    /// The server's [`frame::SESSION_START`] has arrived: what came before
    /// it was a previous client's (the virtio-serial port hands a new host
    /// client what the last one left unread, half frames included).
    synced: bool,
    next_id: u64,
    timeout: Duration,
}

impl Client {
    pub fn connect(path: impl AsRef<Path>, timeout: Duration) -> Result<Self, ClientError> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.to_owned(),
            source,
        })?;
        Self::from_stream(stream, timeout)
    }

    /// Wraps an already connected stream (e.g. QEMU's chardev socket for the
    /// virtio-serial port).
    pub fn from_stream(stream: UnixStream, timeout: Duration) -> Result<Self, ClientError> {
        stream.set_write_timeout(Some(timeout))?;
        stream.set_read_timeout(Some(timeout))?;
        // Marks where this client's bytes begin, for a server reading a
        // stream that clients share one after another. A server that has
        // already refused us (and closed) says why in its reply, which the
        // first call reads: a failed write here is not the error to report.
        let _ = (&stream).write_all(&frame::SESSION_START);
        Ok(Client {
            stream,
            decoder: FrameDecoder::new(),
            synced: false,
            next_id: first_id(),
            timeout,
        })
    }

    /// Changes how long to wait for each reply (e.g. for a service stop,
    /// which the server answers only once the service has stopped).
    pub fn set_reply_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Sends `call` and returns the single reply, or the server's error.
    pub fn call(&mut self, call: pb::request::Call) -> Result<pb::response::Result, ClientError> {
        let id = self.send_or_explain(call)?;
        let resp = self.recv_for(id, Some(self.timeout))?;
        Self::check(id, resp).map(|(result, _)| result)
    }

    /// The next response for request `id` (or about the connection, id 0).
    /// Others are stale: replies to requests a previous client of the same
    /// transport left behind (a virtio-serial port outlives its host clients).
    fn recv_for(&mut self, id: u64, wait: Option<Duration>) -> Result<pb::Response, ClientError> {
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        loop {
            let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return Err(ClientError::Timeout(wait.unwrap_or(self.timeout)));
            }
            let resp = self.recv(left)?;
            if resp.id == id || resp.id == 0 {
                return Ok(resp);
            }
        }
    }

    /// Sends `call` and hands each streamed reply to `on_reply` until the
    /// server ends the stream or `on_reply` returns false. `idle` bounds the
    /// wait between frames; `None` waits as long as the stream stays open.
    pub fn stream(
        &mut self,
        call: pb::request::Call,
        idle: Option<Duration>,
        mut on_reply: impl FnMut(pb::response::Result) -> bool,
    ) -> Result<(), ClientError> {
        let id = self.send_or_explain(call)?;
        loop {
            let resp = self.recv_for(id, idle)?;
            let (result, more) = Self::check(id, resp)?;
            if !on_reply(result) || !more {
                return Ok(());
            }
        }
    }

    /// Writes raw bytes: for tests that exercise the server's error handling.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads one response frame whatever its id.
    pub fn recv_any(&mut self) -> Result<pb::Response, ClientError> {
        self.recv(Some(self.timeout))
    }

    /// Sends; when the server has already closed the connection (it
    /// refuses a client by answering at once and closing), its reason is
    /// waiting in our receive buffer: return that rather than EPIPE.
    fn send_or_explain(&mut self, call: pb::request::Call) -> Result<u64, ClientError> {
        match self.send(call) {
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
                ) =>
            {
                match self.recv(Some(self.timeout)) {
                    Ok(pb::Response {
                        result: Some(pb::response::Result::Error(err)),
                        ..
                    }) => Err(ClientError::Server(err)),
                    _ => Err(ClientError::Io(e)),
                }
            }
            other => other,
        }
    }

    fn send(&mut self, call: pb::request::Call) -> Result<u64, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let bytes = frame::encode(&pb::Request {
            id,
            call: Some(call),
        })?;
        self.stream.write_all(&bytes)?;
        Ok(id)
    }

    /// One response frame, within `wait` in all (not per read: a server
    /// trickling bytes cannot stretch it).
    fn recv(&mut self, wait: Option<Duration>) -> Result<pb::Response, ClientError> {
        let deadline = wait.map(|w| std::time::Instant::now() + w);
        let mut buf = [0u8; 64 * 1024];
        loop {
            if self.synced {
                if let Some(payload) = self.decoder.next_frame()? {
                    return Ok(frame::decode(&payload, "Response")?);
                }
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(ClientError::Timeout(wait.unwrap_or(self.timeout)));
                }
                self.stream.set_read_timeout(Some(left))?;
            } else {
                self.stream.set_read_timeout(None)?;
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(ClientError::Closed),
                Ok(n) => {
                    if self.decoder.push_watching_sessions(&buf[..n]) {
                        self.synced = true;
                    } else if !self.synced {
                        self.decoder.discard_buffered();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(ClientError::Timeout(wait.unwrap_or(self.timeout)))
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn check(id: u64, resp: pb::Response) -> Result<(pb::response::Result, bool), ClientError> {
        match resp.result {
            Some(pb::response::Result::Error(e)) => Err(ClientError::Server(e)),
            // Errors about the connection itself (bad frame) carry id 0.
            Some(result) if resp.id == id => Ok((result, resp.more)),
            _ => Err(ClientError::Unexpected { expected: id }),
        }
    }
}

#[cfg(test)]
#[path = "client/session_tests.rs"]
mod session_tests;
