//! A client sharing a stream with the clients before it (the virtio-serial
//! port): what they left unread arrives first and is not taken for a reply.

use super::*;
use std::thread;

fn version_reply(id: u64) -> Vec<u8> {
    frame::encode(&pb::Response {
        id,
        more: false,
        result: Some(pb::response::Result::Version(pb::VersionReply {
            image_version: "2.0.0".into(),
            ..Default::default()
        })),
    })
    .unwrap()
}

/// Reads the client's marker and one request, then answers with
/// `before` (a previous client's leftovers), the marker and the reply.
fn serve_after(before: Vec<u8>) -> (Client, thread::JoinHandle<()>) {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let client = Client::from_stream(ours, Duration::from_secs(5)).unwrap();
    let handle = thread::spawn(move || {
        let mut dec = FrameDecoder::new();
        let mut buf = [0u8; 4096];
        let req = loop {
            if let Some(p) = dec.next_frame().unwrap() {
                break frame::decode::<pb::Request>(&p, "Request").unwrap();
            }
            let n = theirs.read(&mut buf).unwrap();
            dec.push_watching_sessions(&buf[..n]);
        };
        let mut out = before;
        out.extend_from_slice(&frame::SESSION_START);
        out.extend_from_slice(&version_reply(req.id));
        theirs.write_all(&out).unwrap();
    });
    (client, handle)
}

fn version(c: &mut Client) -> String {
    match c.call(pb::request::Call::Version(pb::VersionRequest {})) {
        Ok(pb::response::Result::Version(v)) => v.image_version,
        other => panic!("{other:?}"),
    }
}

#[test]
fn half_a_reply_left_by_the_last_client_is_skipped() {
    // 1000 bytes promised, 30 there: read as a frame, it would swallow
    // the real reply and time out.
    let mut stale = 1000u32.to_be_bytes().to_vec();
    stale.extend_from_slice(&[9; 30]);
    let (mut c, h) = serve_after(stale);
    assert_eq!(version(&mut c), "2.0.0");
    h.join().unwrap();
}

#[test]
fn a_whole_reply_left_by_the_last_client_is_skipped() {
    let (mut c, h) = serve_after(version_reply(424242));
    assert_eq!(version(&mut c), "2.0.0");
    h.join().unwrap();
}

#[test]
fn a_server_that_never_sends_its_marker_gets_no_reply_read() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let mut c = Client::from_stream(ours, Duration::from_millis(300)).unwrap();
    let h = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let _ = theirs.read(&mut buf);
        // The first request's id is random: any reply without the marker
        // in front is ignored.
        theirs.write_all(&version_reply(1)).unwrap();
        // Open until the client gives up and closes.
        let _ = theirs.read(&mut buf);
    });
    let r = c.call(pb::request::Call::Version(pb::VersionRequest {}));
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");
    drop(c);
    h.join().unwrap();
}
