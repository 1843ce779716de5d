//! Clients that follow logs but do not read: each has a bounded output
//! buffer, the supervisor's memory and loop stay bounded, and a follower
//! that falls behind and then reads is told how many lines it lost.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod harness;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use bascule_api::frame;
use bascule_api::pb::{self, request::Call, response::Result as Reply};
use harness::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn followers_that_do_not_read_cost_bounded_memory_and_others_are_served() {
    // About 12 MB/s of log lines.
    let flood = "exec = [\"/bin/sh\", \"-c\", \"while :; do echo 'a log line that is long enough to fill buffers quickly, again and again and again'; done\"]\n";
    let sup = Sup::start(&[("flood", flood)]);
    sup.wait_state("flood", pb::ServiceState::Running);
    let follow = pb::Request {
        id: 1,
        call: Some(Call::Logs(pb::LogsRequest {
            name: "flood".into(),
            tail: 0,
            follow: true,
        })),
    };
    let mut request = frame::SESSION_START.to_vec();
    request.extend_from_slice(&frame::encode(&follow).unwrap());
    // 200 followers that never read a byte.
    let stuck: Vec<UnixStream> = (0..200)
        .map(|_| {
            let mut s = UnixStream::connect(&sup.socket).unwrap();
            s.write_all(&request).unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    // The flood runs for a few seconds with everyone following.
    while t.elapsed() < Duration::from_secs(4) {
        let t1 = Instant::now();
        sup.client()
            .call(Call::Version(pb::VersionRequest {}))
            .expect("another client is answered");
        assert!(
            t1.elapsed() < Duration::from_secs(2),
            "a call took {:?} with 200 stuck followers",
            t1.elapsed()
        );
    }
    let rss = rss_kib(sup.pid());
    assert!(
        rss < 128 * 1024,
        "the supervisor holds {rss} KiB with 200 followers that do not read"
    );
    // One of them reads at last: what it gets says how much it missed.
    let mut late = stuck[0].try_clone().unwrap();
    late.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut dec = frame::FrameDecoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost = 0u64;
    while lost == 0 {
        let n = late.read(&mut buf).expect("the follow goes on");
        assert!(n > 0, "the follow ended");
        dec.push_watching_sessions(&buf[..n]);
        while let Ok(Some(p)) = dec.next_frame() {
            let r: pb::Response = frame::decode(&p, "Response").unwrap();
            if let Some(Reply::Log(c)) = r.result {
                lost += c.dropped;
            }
        }
    }
    drop(stuck);
    assert!(alive(sup.pid()));
}
