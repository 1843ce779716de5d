//! The upgrade call against a fake server on a socketpair: the server side
//! is a closure run on a thread, speaking the real framing.

use super::*;
use crate::frame::FrameDecoder;
use std::io::Cursor;
use std::time::Instant;

/// The server's end of the socketpair.
struct Peer {
    stream: UnixStream,
    decoder: FrameDecoder,
}

impl Peer {
    fn recv(&mut self) -> Option<pb::Request> {
        let mut buf = [0u8; 64 * 1024];
        loop {
            if let Some(p) = self.decoder.next_frame().unwrap() {
                return Some(frame::decode(&p, "Request").unwrap());
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return None,
                Ok(n) => {
                    if self.decoder.push_watching_sessions(&buf[..n]) {
                        self.stream.write_all(&frame::SESSION_START).unwrap();
                    }
                }
            }
        }
    }

    fn send(&mut self, id: u64, more: bool, result: Reply) {
        let bytes = frame::encode(&pb::Response {
            id,
            more,
            result: Some(result),
        })
        .unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    fn event(&mut self, id: u64, event: pb::UpgradeEvent) {
        let more = event.kind() != pb::UpgradeEventKind::Outcome;
        self.send(id, more, Reply::Upgrade(event));
    }

    /// Reads one whole pass of UpgradeData and returns its bytes.
    fn receive_pass(&mut self, id: u64, pass: u32) -> Vec<u8> {
        let mut got = Vec::new();
        loop {
            let req = self.recv().expect("connection closed mid-pass");
            let Some(Call::UpgradeData(d)) = req.call else {
                panic!("expected UpgradeData, got {req:?}");
            };
            assert_eq!(d.upgrade_id, id);
            assert_eq!(d.pass, pass);
            assert!(d.chunk.len() <= UPGRADE_CHUNK, "chunk of {}", d.chunk.len());
            got.extend_from_slice(&d.chunk);
            if d.end {
                return got;
            }
        }
    }
}

fn kind_event(kind: pb::UpgradeEventKind, phase: &str) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        kind: kind as i32,
        phase: phase.into(),
        ..Default::default()
    }
}

fn send_bundle(pass: u32) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        pass,
        ..kind_event(pb::UpgradeEventKind::SendBundle, "verify")
    }
}

fn outcome(result: pb::UpgradeResult, message: &str) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        outcome: Some(pb::UpgradeOutcome {
            result: result as i32,
            message: message.into(),
            target_slot: pb::Slot::B as i32,
            target_version: "2.0.0".into(),
            phase: "reboot".into(),
        }),
        ..kind_event(pb::UpgradeEventKind::Outcome, "reboot")
    }
}

/// A client and a server thread running `server` on the other end.
fn pair<T: Send + 'static>(
    server: impl FnOnce(&mut Peer, pb::Request) -> T + Send + 'static,
) -> (Client, thread::JoinHandle<T>) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let client = Client::from_stream(ours, Duration::from_secs(5)).unwrap();
    let handle = thread::spawn(move || {
        let mut peer = Peer {
            stream: theirs,
            decoder: FrameDecoder::new(),
        };
        let req = peer.recv().expect("no request");
        server(&mut peer, req)
    });
    (client, handle)
}

fn upgrade_of(req: &pb::Request) -> pb::UpgradeRequest {
    match &req.call {
        Some(Call::Upgrade(u)) => u.clone(),
        other => panic!("expected an UpgradeRequest, got {other:?}"),
    }
}

/// Deterministic, not a repeating pattern a misplaced chunk could match.
fn bundle_bytes(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x1234_5678;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

#[test]
fn streams_the_bundle_once_per_pass_and_returns_the_outcome() {
    // Not a multiple of the chunk size: the last frame is a short one.
    let bundle = bundle_bytes(2 * UPGRADE_CHUNK + 1000);
    let expected = bundle.clone();
    let (mut client, server) = pair(move |peer, req| {
        let up = upgrade_of(&req);
        assert_eq!(up.source, Some(pb::upgrade_request::Source::Stream(true)));
        assert!(up.preserve && !up.stage && up.force);
        assert_eq!(up.reboot_mode(), pb::RebootMode::Firmware);
        peer.event(
            req.id,
            kind_event(pb::UpgradeEventKind::PhaseStarted, "verify"),
        );
        peer.event(req.id, send_bundle(1));
        let first = peer.receive_pass(req.id, 1);
        peer.event(
            req.id,
            kind_event(pb::UpgradeEventKind::PhaseFinished, "verify"),
        );
        peer.event(req.id, send_bundle(2));
        let second = peer.receive_pass(req.id, 2);
        peer.event(req.id, outcome(pb::UpgradeResult::Rebooting, "rebooting"));
        (first, second)
    });
    let mut kinds = Vec::new();
    let got = client
        .upgrade(
            UpgradeSource::Stream(Box::new(Cursor::new(bundle))),
            UpgradeOptions {
                preserve: true,
                force: true,
                reboot_mode: pb::RebootMode::Firmware,
                ..Default::default()
            },
            None,
            |e| kinds.push(e.kind()),
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::Rebooting);
    assert_eq!(got.target_version, "2.0.0");
    let (first, second) = server.join().unwrap();
    assert!(first == expected, "pass 1 differs from the bundle");
    assert!(second == expected, "pass 2 differs from the bundle");
    use pb::UpgradeEventKind::*;
    assert_eq!(
        kinds,
        [PhaseStarted, SendBundle, PhaseFinished, SendBundle, Outcome]
    );
}

#[test]
fn an_empty_bundle_is_one_frame_with_end() {
    let (mut client, server) = pair(|peer, req| {
        peer.event(req.id, send_bundle(1));
        let got = peer.receive_pass(req.id, 1);
        peer.event(req.id, outcome(pb::UpgradeResult::Refused, "empty bundle"));
        got
    });
    let got = client
        .upgrade(
            UpgradeSource::Stream(Box::new(Cursor::new(Vec::new()))),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::Refused);
    assert!(server.join().unwrap().is_empty());
}

#[test]
fn keeps_reading_events_while_the_server_is_not_reading_the_bundle() {
    // The server writes more events than a socket buffer holds before it
    // reads a byte of the bundle (also bigger than a buffer): a client that
    // blocked on writing would never read them, and both would hang.
    let bundle = bundle_bytes(8 << 20);
    let expected_len = bundle.len();
    let (mut client, server) = pair(move |peer, req| {
        peer.event(req.id, send_bundle(1));
        for i in 0..3000u64 {
            let e = pb::UpgradeEvent {
                done: i,
                total: 3000,
                message: "x".repeat(1024),
                ..kind_event(pb::UpgradeEventKind::Progress, "drain")
            };
            peer.event(req.id, e);
        }
        let got = peer.receive_pass(req.id, 1);
        peer.event(
            req.id,
            outcome(pb::UpgradeResult::DryRun, "all checks passed"),
        );
        got.len()
    });
    let mut progress = 0;
    let started = Instant::now();
    let got = client
        .upgrade(
            UpgradeSource::Stream(Box::new(Cursor::new(bundle))),
            UpgradeOptions::default(),
            None,
            |e| progress += usize::from(e.kind() == pb::UpgradeEventKind::Progress),
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::DryRun);
    assert_eq!(progress, 3000);
    assert_eq!(server.join().unwrap(), expected_len);
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn an_outcome_while_the_bundle_is_still_being_written_leaves_whole_frames() {
    // The server aborts while the writer is blocked on a full socket, then
    // reads on, as PID 1 does: the writer finishes the frame it began, so
    // the next request on the same stream (the next client of a
    // virtio-serial port) is read as a request.
    let (mut client, server) = pair(move |peer, req| {
        peer.event(req.id, send_bundle(1));
        thread::sleep(Duration::from_millis(300));
        peer.event(req.id, outcome(pb::UpgradeResult::Aborted, "drain failed"));
        loop {
            let next = peer.recv().expect("a request after the bundle frames");
            match next.call {
                Some(Call::UpgradeData(_)) => {}
                Some(Call::Version(_)) => {
                    peer.send(next.id, false, Reply::Version(pb::VersionReply::default()));
                    return;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let got = client
        .upgrade(
            UpgradeSource::Stream(Box::new(Cursor::new(bundle_bytes(16 << 20)))),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::Aborted);
    let reply = client.call(Call::Version(pb::VersionRequest {})).unwrap();
    assert!(matches!(reply, Reply::Version(_)), "{reply:?}");
    server.join().unwrap();
}

#[test]
fn an_outcome_while_the_bundle_is_still_being_written_ends_the_writer() {
    // The server aborts without reading the bundle and keeps the connection
    // open: the writer, blocked on a full socket, must give up by itself
    // once finishing its frame has taken FINISH_FRAME.
    let (release, released) = mpsc::channel::<()>();
    let (mut client, server) = pair(move |peer, req| {
        peer.event(req.id, send_bundle(1));
        thread::sleep(Duration::from_millis(300));
        peer.event(req.id, outcome(pb::UpgradeResult::Aborted, "drain failed"));
        // Held open well past the bound below: a writer that waits for
        // the server to close would miss it.
        let _ = released.recv_timeout(Duration::from_secs(60));
    });
    let started = Instant::now();
    let got = client
        .upgrade(
            UpgradeSource::Stream(Box::new(Cursor::new(bundle_bytes(16 << 20)))),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::Aborted);
    assert_eq!(got.message, "drain failed");
    // Generous for a loaded host; far below the server's 60 s.
    assert!(
        started.elapsed() < FINISH_FRAME + Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    release.send(()).unwrap();
    server.join().unwrap();
}

#[test]
fn an_error_reply_is_a_rejection() {
    let (mut client, server) = pair(|peer, req| {
        peer.send(
            req.id,
            false,
            Reply::Error(pb::Error::new(
                pb::ErrorCode::Unavailable,
                "an upgrade is already running",
            )),
        );
    });
    let err = client
        .upgrade(
            UpgradeSource::Url("http://host/b.bundle".into()),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap_err();
    match err {
        UpgradeError::Rejected(e) => {
            assert_eq!(e.code(), pb::ErrorCode::Unavailable);
            assert_eq!(e.message, "an upgrade is already running");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn path_and_url_sources_are_sent_as_such() {
    for (source, expected) in [
        (
            UpgradeSource::MachinePath("/var/b.bundle".into()),
            pb::upgrade_request::Source::Path("/var/b.bundle".into()),
        ),
        (
            UpgradeSource::Url("https://h/b".into()),
            pb::upgrade_request::Source::Url("https://h/b".into()),
        ),
    ] {
        let (mut client, server) = pair(|peer, req| {
            let up = upgrade_of(&req);
            assert!(up.dry_run);
            peer.event(req.id, outcome(pb::UpgradeResult::DryRun, "ok"));
            up.source
        });
        let options = UpgradeOptions {
            dry_run: true,
            ..Default::default()
        };
        client.upgrade(source, options, None, |_| {}).unwrap();
        assert_eq!(server.join().unwrap(), Some(expected));
    }
}

#[test]
fn a_send_bundle_for_a_machine_path_is_a_protocol_error() {
    let (mut client, server) = pair(|peer, req| {
        peer.event(req.id, send_bundle(1));
    });
    let err = client
        .upgrade(
            UpgradeSource::MachinePath("/b".into()),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, UpgradeError::UnaskedSendBundle), "{err:?}");
    server.join().unwrap();
}

#[test]
fn a_closed_connection_before_the_outcome_names_the_phase() {
    let (mut client, server) = pair(|peer, req| {
        peer.event(
            req.id,
            kind_event(pb::UpgradeEventKind::PhaseStarted, "drain"),
        );
        // Dropping the peer closes the connection.
    });
    let err = client
        .upgrade(
            UpgradeSource::Url("http://h/b".into()),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap_err();
    server.join().unwrap();
    match &err {
        UpgradeError::Interrupted {
            last_phase,
            source: ClientError::Closed,
        } => assert_eq!(last_phase.as_deref(), Some("drain")),
        other => panic!("expected Interrupted, got {other:?}"),
    }
    assert!(err.to_string().contains("in phase drain"), "{err}");
}

#[test]
fn a_stream_ending_without_an_outcome_is_an_error() {
    let (mut client, server) = pair(|peer, req| {
        peer.send(
            req.id,
            false,
            Reply::Upgrade(kind_event(pb::UpgradeEventKind::Note, "verify")),
        );
    });
    let err = client
        .upgrade(
            UpgradeSource::Url("http://h/b".into()),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap_err();
    assert!(matches!(err, UpgradeError::NoOutcome), "{err:?}");
    server.join().unwrap();
}

#[test]
fn stale_replies_for_other_requests_are_skipped() {
    let (mut client, server) = pair(|peer, req| {
        peer.send(
            req.id.wrapping_sub(7),
            false,
            Reply::Version(pb::VersionReply::default()),
        );
        peer.event(req.id, outcome(pb::UpgradeResult::Staged, "staged"));
    });
    let got = client
        .upgrade(
            UpgradeSource::Url("http://h/b".into()),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap();
    assert_eq!(got.result(), pb::UpgradeResult::Staged);
    server.join().unwrap();
}

/// Gives `good` bytes, then fails.
struct FailingReader {
    pos: u64,
    good: u64,
}

impl Read for FailingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.good {
            return Err(io::Error::other("disk on fire"));
        }
        let n = buf.len().min((self.good - self.pos) as usize);
        buf[..n].fill(7);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for FailingReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        match to {
            SeekFrom::Start(p) => self.pos = p,
            _ => return Err(io::Error::other("unsupported")),
        }
        Ok(self.pos)
    }
}

#[test]
fn a_local_read_error_ends_the_call_instead_of_hanging() {
    // The server waits for bundle bytes that never come; only the writer
    // knows why, and it must wake the reader.
    let (mut client, server) = pair(|peer, req| {
        peer.event(req.id, send_bundle(1));
        while peer.recv().is_some() {}
    });
    let started = Instant::now();
    let err = client
        .upgrade(
            UpgradeSource::Stream(Box::new(FailingReader {
                pos: 0,
                good: 3 * UPGRADE_CHUNK as u64 / 2,
            })),
            UpgradeOptions::default(),
            None,
            |_| {},
        )
        .unwrap_err();
    match &err {
        UpgradeError::Bundle { pass: 1, source } => {
            assert!(source.to_string().contains("disk on fire"))
        }
        other => panic!("expected a bundle error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    server.join().unwrap();
}
