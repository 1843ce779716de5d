//! Fuzz body for the control socket (`fuzz/fuzz_targets/control_requests.rs`),
//! also run as a property test: bytes from a client go through a real Unix
//! socket into PID 1's connection, frame decoder and request handler, over
//! fake effects, a launcher that starts nothing and the real clock.
//!
//! Upgrade, upgrade-data and rollback calls are left out (an input that
//! holds one is skipped): they start a run of the sequencer on the host,
//! which has its own tests.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use bascule_api::frame::{self, FrameDecoder};
use bascule_api::pb::{self, request::Call};
use bascule_services::{
    graph, spec, Launcher, Membership, ProcessKind, ServiceSpec, Signal, SpawnError, Supervisor,
    TcpProbe,
};
use bascule_sys::clock::SystemClock;
use bascule_sys::epoll::Interest;

use crate::config::{self, Mode};
use crate::effects::fake::FakeEffects;
use crate::event_loop::{Init, LoopEvent, Parts};
use crate::launcher::{NewFds, ServiceLauncher};
use crate::slot_keeper::SlotKeeper;
use crate::timeline::Timeline;

/// Starts nothing: pids are far above any real one, signals go nowhere.
struct NullLauncher {
    next_pid: u32,
}

impl Launcher for NullLauncher {
    fn spawn(&mut self, _: &ServiceSpec, _: ProcessKind, _: &[String]) -> Result<u32, SpawnError> {
        self.next_pid += 1;
        Ok(self.next_pid)
    }
    fn signal(&mut self, _: u32, _: Signal) {}
    fn kill_all(&mut self, _: &ServiceSpec, _: Option<u32>) {}
    fn probe_tcp(&mut self, _: u16) -> TcpProbe {
        TcpProbe::Done(false)
    }
    fn cancel_probe(&mut self, _: u64) {}
    fn probe_path(&mut self, _: &Path) -> bool {
        false
    }
    fn membership(&mut self, _: &ServiceSpec, _: u32) -> Membership {
        Membership::Stranger
    }
    fn uid_of(&mut self, _: u32) -> Option<u32> {
        None
    }
}

impl ServiceLauncher for NullLauncher {
    fn launcher(&mut self) -> &mut dyn Launcher {
        self
    }
    fn take_new_fds(&mut self) -> NewFds {
        NewFds::default()
    }
    fn remove_cgroups(&mut self) {}
}

/// The services the seeds name.
const SERVICES: &[(&str, &str)] = &[
    ("web", "exec = [\"web\"]\nrestart = \"always\"\n"),
    ("db", "exec = [\"db\"]\nreadiness = \"notify\"\n"),
];

fn init(dir: &Path) -> Option<Init> {
    let specs = SERVICES
        .iter()
        .filter_map(|(name, text)| {
            spec::parse_str(name, &dir.join(format!("{name}.toml")), text).ok()
        })
        .collect();
    let mut cfg = config::defaults(Mode::Supervise, config::Machine::default());
    cfg.socket = dir.join("api.sock");
    cfg.run_dir = dir.join("run");
    cfg.log_dir = None;
    let listener = UnixListener::bind(&cfg.socket).ok()?;
    listener.set_nonblocking(true).ok()?;
    Init::new(Parts {
        cfg,
        clock: Box::new(SystemClock),
        effects: Box::new(FakeEffects::default()),
        launcher: Box::new(NullLauncher { next_pid: 1 << 30 }),
        sup: Supervisor::new(graph::check(specs)),
        listener,
        timeline: Timeline::from_boot(None),
        keeper: SlotKeeper::unmanaged(),
        journals: Vec::new(),
        console: None,
    })
    .ok()
}

/// True when a frame of `data`, cut as the server will see it, is a call
/// this body leaves out.
fn calls_an_upgrade(data: &[u8], step: usize) -> bool {
    let mut d = FrameDecoder::new();
    for chunk in data.chunks(step) {
        d.push_watching_sessions(chunk);
        while let Ok(Some(p)) = d.next_frame() {
            if let Ok(pb::Request {
                call: Some(Call::Upgrade(_) | Call::UpgradeData(_) | Call::Rollback(_)),
                ..
            }) = frame::decode::<pb::Request>(&p, "Request")
            {
                return true;
            }
        }
    }
    false
}

/// A new connection to `init`, accepted.
fn connect(init: &mut Init, socket: &Path) -> Option<(UnixStream, u64)> {
    let before = init.control.conn_ids();
    let client = UnixStream::connect(socket).ok()?;
    client.set_nonblocking(true).ok()?;
    init.dispatch(LoopEvent::Accept);
    init.after_events();
    let id = init
        .control
        .conn_ids()
        .into_iter()
        .find(|id| !before.contains(id))?;
    Some((client, id))
}

/// Lets `init` read what the client sent and answer it.
fn serve(init: &mut Init, id: u64) {
    init.dispatch(LoopEvent::Conn(id, Interest::IN | Interest::OUT));
    init.after_events();
}

/// Reads every reply waiting for the client; each must be a whole
/// `Response`. Returns false once the server has closed the connection.
fn read_replies(
    client: &mut UnixStream,
    dec: &mut FrameDecoder,
    got: &mut Vec<pb::Response>,
) -> bool {
    let mut buf = [0u8; 64 * 1024];
    let open = loop {
        match client.read(&mut buf) {
            Ok(0) => break false,
            Ok(n) => {
                dec.push_watching_sessions(&buf[..n]);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break true,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break false,
        }
    };
    while let Some(p) = dec
        .next_frame()
        .expect("the server sends only whole frames")
    {
        got.push(frame::decode(&p, "Response").expect("every reply is a Response"));
    }
    open
}

/// Sends `data` (after its first byte, which sets the size of the pieces
/// it is written in) to a fresh PID 1. Never panics; every reply is a
/// whole `Response`; afterwards PID 1 still answers a new client. Returns
/// the replies the client got.
pub fn control_requests(data: &[u8]) -> usize {
    let Some((&step, rest)) = data.split_first() else {
        return 0;
    };
    let step = usize::from(step).max(1);
    if calls_an_upgrade(rest, step) {
        return 0;
    }
    let Ok(dir) = tempfile::tempdir() else {
        return 0;
    };
    let Some(mut init) = init(dir.path()) else {
        return 0;
    };
    init.start();
    let socket = dir.path().join("api.sock");
    let Some((mut client, id)) = connect(&mut init, &socket) else {
        return 0;
    };
    let mut dec = FrameDecoder::new();
    let mut replies = Vec::new();
    'feed: for chunk in rest.chunks(step) {
        let mut sent = 0;
        // Bounded: a server that stops reading makes the write block.
        for _ in 0..64 {
            match client.write(&chunk[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => break 'feed,
            }
            serve(&mut init, id);
            if !read_replies(&mut client, &mut dec, &mut replies) {
                break 'feed;
            }
            if sent == chunk.len() {
                break;
            }
        }
    }
    drop(client);
    serve(&mut init, id);
    // Whatever came before, a new client is served.
    let Some((mut fresh, id)) = connect(&mut init, &socket) else {
        panic!("PID 1 no longer accepts a client");
    };
    let mut hello = frame::SESSION_START.to_vec();
    let version = pb::Request {
        id: 1,
        call: Some(Call::Version(pb::VersionRequest {})),
    };
    hello.extend_from_slice(&frame::encode(&version).expect("a small frame"));
    fresh
        .write_all(&hello)
        .expect("the socket takes a small request");
    let mut dec = FrameDecoder::new();
    let mut got = Vec::new();
    for _ in 0..16 {
        serve(&mut init, id);
        read_replies(&mut fresh, &mut dec, &mut got);
        if !got.is_empty() {
            break;
        }
    }
    assert!(
        got.iter()
            .any(|r| matches!(r.result, Some(pb::response::Result::Version(_)))),
        "a new client's version call is answered: {got:?}"
    );
    replies.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(id: u64, call: Call) -> Vec<u8> {
        frame::encode(&pb::Request {
            id,
            call: Some(call),
        })
        .expect("a small frame")
    }

    fn control(name: &str, action: pb::ServiceAction) -> Call {
        Call::ServiceControl(pb::ServiceControlRequest {
            name: name.into(),
            action: action as i32,
        })
    }

    #[test]
    fn control_requests_hold_for_generated_input() {
        let mut session = vec![7u8];
        session.extend_from_slice(&frame::SESSION_START);
        for (i, call) in [
            Call::Version(pb::VersionRequest {}),
            Call::ServiceList(pb::ServiceListRequest::default()),
            control("web", pb::ServiceAction::Restart),
            control("db", pb::ServiceAction::Stop),
            control("nope", pb::ServiceAction::Start),
            Call::Logs(pb::LogsRequest {
                name: "web".into(),
                tail: 10,
                follow: true,
            }),
            Call::Cancel(pb::CancelRequest { request_id: 6 }),
            Call::BootTime(pb::BootTimeRequest {}),
            Call::BootStatus(pb::BootStatusRequest {}),
            Call::UpgradeStatus(pb::UpgradeStatusRequest {}),
        ]
        .into_iter()
        .enumerate()
        {
            session.extend_from_slice(&request(i as u64 + 1, call));
        }
        let mut shutdown = vec![64u8];
        shutdown.extend_from_slice(&request(
            1,
            Call::Power(pb::PowerRequest {
                action: pb::PowerAction::Reboot as i32,
            }),
        ));
        shutdown.extend_from_slice(&request(2, control("web", pb::ServiceAction::Start)));
        let whole = {
            let mut w = vec![255u8];
            w.extend_from_slice(&session[1..]);
            w
        };
        let answered = control_requests(&session);
        // All but the restart and the stop, which wait for their services
        // to settle (the null launcher reports no exits); the log tail
        // comes in two frames.
        assert_eq!(answered, 9, "every seed request is answered");
        assert!(control_requests(&shutdown) >= 2);
        for case in bascule_testgen::cases(&[&session, &shutdown, &whole], 1500, 11) {
            control_requests(&case);
        }
    }
}
