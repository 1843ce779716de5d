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

#[test]
fn pipelined_log_tails_past_the_output_bound_all_arrive_whole() {
    // About 1.1 MiB of lines: every tail is the whole 1 MiB ring.
    let svc = "exec = [\"/bin/sh\", \"-c\", \"yes 'a line of about eighty bytes, written to fill the ring of this service up' | head -n 14000; echo END; exec sleep 1000\"]\n";
    let sup = Sup::start(&[("big", svc)]);
    sup.wait_until(Duration::from_secs(20), "the output is captured", || {
        sup.log_text("big").last().map(String::as_str) == Some("END")
    });
    const N: u64 = 30;
    let mut requests = frame::SESSION_START.to_vec();
    for id in 1..=N {
        let req = pb::Request {
            id,
            call: Some(Call::Logs(pb::LogsRequest {
                name: "big".into(),
                tail: 1_000_000,
                follow: false,
            })),
        };
        requests.extend_from_slice(&frame::encode(&req).unwrap());
    }
    requests.extend_from_slice(
        &frame::encode(&pb::Request {
            id: N + 1,
            call: Some(Call::Version(pb::VersionRequest {})),
        })
        .unwrap(),
    );
    // About 30 MiB of replies to requests sent at once, far past the 8 MiB
    // a client may leave unread.
    let mut s = UnixStream::connect(&sup.socket).unwrap();
    s.write_all(&requests).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut dec = frame::FrameDecoder::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut lines = vec![0usize; N as usize + 2];
    let mut ended = vec![false; N as usize + 2];
    while !ended[N as usize + 1] {
        let n = s.read(&mut buf).expect("replies keep coming");
        assert!(n > 0, "the connection was closed; ended: {ended:?}");
        dec.push_watching_sessions(&buf[..n]);
        while let Some(p) = dec.next_frame().unwrap() {
            let r: pb::Response = frame::decode(&p, "Response").unwrap();
            let id = r.id as usize;
            assert!(!ended[id], "a frame for request {id} after its last");
            if let Some(Reply::Log(c)) = r.result {
                lines[id] += c.lines.len();
            }
            ended[id] |= !r.more;
        }
    }
    assert!(ended[1..=N as usize].iter().all(|e| *e), "{ended:?}");
    assert!(lines[1] > 10_000, "a whole ring: {}", lines[1]);
    assert!(
        lines[1..=N as usize].iter().all(|n| *n == lines[1]),
        "every tail is whole: {lines:?}"
    );
}
