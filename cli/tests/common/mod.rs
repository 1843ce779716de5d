//! The fake server shared by the CLI's integration tests: the real framing
//! on a Unix socket in a temporary directory, the logic a closure per test.
#![allow(dead_code)]
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bascule_api::frame::{self, FrameDecoder};
use bascule_api::pb::{self, response::Result as Reply};

/// What the fake server does with one request: write frames on the stream.
pub type Handler = dyn Fn(&mut UnixStream, pb::Request) + Send + Sync;

pub struct FakeServer {
    _dir: tempfile::TempDir,
    pub socket: PathBuf,
}

impl FakeServer {
    pub fn start(handler: impl Fn(&mut UnixStream, pb::Request) + Send + Sync + 'static) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("api.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let handler: Arc<Handler> = Arc::new(handler);
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let handler = Arc::clone(&handler);
                thread::spawn(move || serve(conn, &*handler));
            }
        });
        FakeServer { _dir: dir, socket }
    }
}

fn serve(mut conn: UnixStream, handler: &Handler) {
    let mut dec = FrameDecoder::new();
    let mut buf = [0u8; 4096];
    loop {
        while let Some(payload) = dec.next_frame().unwrap() {
            let req: pb::Request = frame::decode(&payload, "Request").unwrap();
            handler(&mut conn, req);
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if dec.push_watching_sessions(&buf[..n])
                    && conn.write_all(&frame::SESSION_START).is_err()
                {
                    return;
                }
            }
        }
    }
}

pub fn send(conn: &mut UnixStream, id: u64, more: bool, result: Reply) -> std::io::Result<()> {
    let bytes = frame::encode(&pb::Response {
        id,
        more,
        result: Some(result),
    })
    .unwrap();
    conn.write_all(&bytes)
}

pub fn bascule(socket: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bascule"));
    cmd.env_remove("BASCULE_SOCKET").arg("--socket").arg(socket);
    cmd
}

/// Waits for the child, killing it after `limit` so a hang fails the test
/// instead of blocking the suite.
pub fn wait_bounded(mut child: Child, limit: Duration) -> (Output, Duration) {
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return (child.wait_with_output().unwrap(), start.elapsed());
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            panic!("bascule still running after {limit:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_bounded(child, Duration::from_secs(20)).0
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
