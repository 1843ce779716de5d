//! Framing: every message is a 4-byte big-endian length followed by that many
//! bytes of protobuf. The decoder is incremental so a non-blocking server can
//! feed it whatever a read returned.

use prost::Message;

/// Largest frame either side accepts. Larger frames are refused before any
/// allocation, so a hostile length cannot exhaust PID 1's memory.
pub const MAX_FRAME_LEN: usize = 1 << 20;

const HEADER_LEN: usize = 4;

/// What a client sends first on every connection, and what the server
/// sends back first when it sees it. A length of 0xffffffff is over
/// [`MAX_FRAME_LEN`], so it is never the start of a frame. On a stream
/// that clients share one after another (the virtio-serial port, which
/// keeps what one client left unread, either way, for the next) each side
/// drops everything before the other's marker and starts afresh; see
/// [`FrameDecoder::push_watching_sessions`].
pub const SESSION_START: [u8; 20] = *b"\xff\xff\xff\xffbascule-session1";

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("frame does not decode as {what}: {source}")]
    Malformed {
        what: &'static str,
        #[source]
        source: prost::DecodeError,
    },
}

/// Encodes `msg` as one frame. Fails only when the message exceeds the limit.
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, FrameError> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(FrameError::TooLarge {
            len,
            max: MAX_FRAME_LEN,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + len);
    // The limit above keeps `len` well inside u32.
    out.extend_from_slice(&(len as u32).to_be_bytes());
    msg.encode_raw(&mut out);
    Ok(out)
}

/// Decodes a frame's payload as `M`.
pub fn decode<M: Message + Default>(payload: &[u8], what: &'static str) -> Result<M, FrameError> {
    M::decode(payload).map_err(|source| FrameError::Malformed { what, source })
}

/// Accumulates bytes and yields complete frame payloads.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes: frames are taken without moving the
    /// rest, which is compacted once per push (no quadratic copying).
    start: usize,
    /// The last bytes pushed (fewer than a [`SESSION_START`]), so a marker
    /// split across two pushes is still seen.
    tail: Vec<u8>,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, data: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Like [`Self::push`], and watches for [`SESSION_START`] anywhere in
    /// the stream, also across pushes and inside what looked like a frame.
    /// When one arrives, everything before it (buffered bytes, a partial
    /// frame) is dropped, the bytes after the last one are kept, and the
    /// result is true: a new client took over the stream.
    pub fn push_watching_sessions(&mut self, data: &[u8]) -> bool {
        let mut window = std::mem::take(&mut self.tail);
        window.extend_from_slice(data);
        let found = window
            .windows(SESSION_START.len())
            .rposition(|w| w == SESSION_START);
        let keep_from = window.len().saturating_sub(SESSION_START.len() - 1);
        self.tail = window[keep_from..].to_vec();
        match found {
            Some(p) => {
                // The tail is shorter than the marker: it ends inside `data`.
                let after = p + SESSION_START.len() - (window.len() - data.len());
                self.buf.clear();
                self.start = 0;
                self.buf.extend_from_slice(&data[after..]);
                true
            }
            None => {
                self.push(data);
                false
            }
        }
    }

    /// Drops the bytes buffered so far, keeping what a marker split across
    /// pushes needs: for a client that waits for the server's marker.
    pub fn discard_buffered(&mut self) {
        self.buf.clear();
        self.start = 0;
    }

    /// Bytes received but not yet part of a complete frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete payload, `None` when more bytes are needed.
    /// A length above [`MAX_FRAME_LEN`] is an error as soon as the header is in.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        let buf = &self.buf[self.start..];
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(&buf[..HEADER_LEN]);
        let len = u32::from_be_bytes(header) as usize;
        // The start of a session marker whose rest has not arrived yet:
        // not a frame, but not an error before the marker is whole.
        if buf.len() < SESSION_START.len() && SESSION_START.starts_with(buf) {
            return Ok(None);
        }
        if len > MAX_FRAME_LEN {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_FRAME_LEN,
            });
        }
        if buf.len() < HEADER_LEN + len {
            return Ok(None);
        }
        let payload = buf[HEADER_LEN..HEADER_LEN + len].to_vec();
        self.start += HEADER_LEN + len;
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the control-requests fuzz body: a marker read in two
    /// pieces was refused as a frame of 4294967295 bytes.
    #[test]
    fn a_session_marker_split_across_reads_is_not_a_frame_too_large() {
        let mut d = FrameDecoder::new();
        let req = frame_of(b"abc");
        let mut stream = SESSION_START.to_vec();
        stream.extend_from_slice(&req);
        for cut in 1..SESSION_START.len() {
            let mut d2 = FrameDecoder::new();
            assert!(!d2.push_watching_sessions(&stream[..cut]));
            assert!(d2.next_frame().unwrap().is_none(), "cut at {cut}");
            assert!(d2.push_watching_sessions(&stream[cut..]));
            assert_eq!(d2.next_frame().unwrap().unwrap(), b"abc");
        }
        // Not a marker after all: the length is refused once that is clear.
        d.push(&[0xff, 0xff, 0xff, 0xff, b'x']);
        assert!(matches!(d.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    fn frame_of(payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes().to_vec();
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn a_session_start_drops_what_the_last_client_left_half_sent() {
        let mut d = FrameDecoder::new();
        // The first client's frame, cut short: 100 bytes promised, 10 sent.
        assert!(!d.push_watching_sessions(&frame_of(&[7; 100])[..14]));
        assert_eq!(d.next_frame().unwrap(), None);
        // The next client: marker then a frame, split at every byte.
        let mut next = SESSION_START.to_vec();
        next.extend_from_slice(&frame_of(b"hello"));
        let mut seen = false;
        for b in &next {
            seen |= d.push_watching_sessions(std::slice::from_ref(b));
        }
        assert!(seen);
        assert_eq!(d.next_frame().unwrap(), Some(b"hello".to_vec()));
        assert_eq!(d.next_frame().unwrap(), None);
    }

    #[test]
    fn a_marker_split_across_discarded_pushes_is_still_seen() {
        let mut d = FrameDecoder::new();
        let mut bytes = frame_of(&[1; 30])[..9].to_vec();
        bytes.extend_from_slice(&SESSION_START[..7]);
        assert!(!d.push_watching_sessions(&bytes));
        d.discard_buffered();
        let mut rest = SESSION_START[7..].to_vec();
        rest.extend_from_slice(&frame_of(b"z"));
        assert!(d.push_watching_sessions(&rest));
        assert_eq!(d.next_frame().unwrap(), Some(b"z".to_vec()));
    }

    #[test]
    fn a_session_start_at_a_frame_boundary_is_skipped() {
        let mut d = FrameDecoder::new();
        let mut bytes = SESSION_START.to_vec();
        bytes.extend_from_slice(&frame_of(b"a"));
        bytes.extend_from_slice(&frame_of(b"b"));
        assert!(d.push_watching_sessions(&bytes));
        assert_eq!(d.next_frame().unwrap(), Some(b"a".to_vec()));
        assert_eq!(d.next_frame().unwrap(), Some(b"b".to_vec()));
    }
    use crate::pb;

    fn version_request(id: u64) -> pb::Request {
        pb::Request {
            id,
            call: Some(pb::request::Call::Version(pb::VersionRequest {})),
        }
    }

    #[test]
    fn round_trips_split_at_every_byte() {
        let mut wire = encode(&version_request(7)).unwrap();
        wire.extend(encode(&version_request(8)).unwrap());
        for split in 0..wire.len() {
            let mut dec = FrameDecoder::new();
            dec.push(&wire[..split]);
            let mut got = Vec::new();
            while let Some(p) = dec.next_frame().unwrap() {
                got.push(decode::<pb::Request>(&p, "Request").unwrap().id);
            }
            dec.push(&wire[split..]);
            while let Some(p) = dec.next_frame().unwrap() {
                got.push(decode::<pb::Request>(&p, "Request").unwrap().id);
            }
            assert_eq!(got, vec![7, 8], "split at {split}");
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn oversized_length_is_refused_from_the_header_alone() {
        let mut dec = FrameDecoder::new();
        dec.push(&((MAX_FRAME_LEN as u32) + 1).to_be_bytes());
        match dec.next_frame() {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, MAX_FRAME_LEN + 1);
                assert_eq!(max, MAX_FRAME_LEN);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn garbage_payload_is_malformed() {
        let err = decode::<pb::Request>(&[0xff, 0xff, 0xff], "Request").unwrap_err();
        assert!(err.to_string().contains("Request"), "{err}");
    }

    #[test]
    fn frame_at_limit_is_accepted() {
        let mut dec = FrameDecoder::new();
        dec.push(&(MAX_FRAME_LEN as u32).to_be_bytes());
        dec.push(&vec![0u8; MAX_FRAME_LEN]);
        assert_eq!(dec.next_frame().unwrap().unwrap().len(), MAX_FRAME_LEN);
    }
}
