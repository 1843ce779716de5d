//! TCP probes never stall PID 1: 50 services probing a port that does not
//! answer leave the API responsive.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod harness;

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call};
use harness::Sup;
use rustix::net::{AddressFamily, SocketType};

/// A port whose connects hang: a listener with a full accept queue (the
/// kernel then drops new SYNs instead of answering them).
fn unanswering_port() -> (OwnedFd, Vec<TcpStream>, u16) {
    let sock = rustix::net::socket(AddressFamily::INET, SocketType::STREAM, None).unwrap();
    rustix::net::bind(&sock, &SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).unwrap();
    rustix::net::listen(&sock, 0).unwrap();
    let port = match rustix::net::getsockname(&sock).unwrap().try_into() {
        Ok(std::net::SocketAddr::V4(a)) => a.port(),
        other => panic!("unexpected address {other:?}"),
    };
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port).into();
    let mut held = Vec::new();
    // Fill the queue until a connect no longer completes.
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
        assert!(
            held.len() < 16,
            "the accept queue of port {port} never filled"
        );
    }
    (sock, held, port)
}

#[test]
fn fifty_services_probing_a_port_that_does_not_answer_leave_the_api_responsive() {
    let (_listener, _held, port) = unanswering_port();
    let text = format!(
        "exec = [\"sleep\", \"1000\"]\n[readiness]\ntcp = {port}\ninterval_ms = 20\ntimeout_ms = 600000\n"
    );
    let names: Vec<String> = (0..50).map(|i| format!("svc{i:02}")).collect();
    let services: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), text.as_str())).collect();
    let sup = Sup::start(&services);
    sup.wait_until(Duration::from_secs(20), "all 50 services starting", || {
        let list = sup.list();
        list.len() == 50
            && list
                .iter()
                .all(|s| s.state == pb::ServiceState::Starting as i32)
    });
    let mut client = sup.client();
    let mut times = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        client
            .call(Call::Version(pb::VersionRequest::default()))
            .expect("version call");
        times.push(t.elapsed());
    }
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    // A probe that blocked the loop (a connect waiting on the full accept
    // queue) would cost each call at least its connect timeout; the bound
    // is far below that and far above scheduling noise on a loaded host.
    assert!(
        p99 < Duration::from_millis(100),
        "API p99 {p99:?} while 50 services probe an unanswering port (median {:?})",
        times[times.len() / 2]
    );
    // The probes kept running and failing: nobody became ready by mistake.
    assert!(sup
        .list()
        .iter()
        .all(|s| s.state == pb::ServiceState::Starting as i32));
}
