//! Runs the built `bascule` binary against a fake server that speaks the real
//! framing on a Unix socket in a temporary directory. The server logic is a
//! closure per test; end-to-end tests against bascule-init live in qemu-tests.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use common::*;

fn status(name: &str, state: pb::ServiceState, pid: u32) -> pb::ServiceStatus {
    pb::ServiceStatus {
        name: name.into(),
        state: state as i32,
        pid,
        restarts: 2,
        uptime_ms: if pid == 0 { 0 } else { 65_000 },
        readiness: pb::Readiness::Ready as i32,
        health: pb::Health::Healthy as i32,
        class: "system".into(),
        last_exit: String::new(),
        reason: String::new(),
        status_text: String::new(),
        depends_on: vec!["net".into()],
    }
}

/// Knows the services "web" and "db"; anything else is NOT_FOUND.
fn standard_server() -> FakeServer {
    FakeServer::start(|conn, req| {
        let id = req.id;
        let reply = match req.call {
            Some(Call::ServiceList(_)) => Reply::ServiceList(pb::ServiceListReply {
                services: vec![
                    status("web", pb::ServiceState::Running, 42),
                    status("db", pb::ServiceState::Stopped, 0),
                ],
            }),
            Some(Call::ServiceControl(c)) if c.name == "web" || c.name == "db" => {
                Reply::ServiceControl(pb::ServiceControlReply {
                    status: Some(status(&c.name, pb::ServiceState::Stopped, 0)),
                })
            }
            Some(Call::ServiceControl(c)) => Reply::Error(pb::Error::new(
                pb::ErrorCode::NotFound,
                format!("no service named {}", c.name),
            )),
            Some(Call::Version(_)) => Reply::Version(pb::VersionReply {
                version: "9.9.9".into(),
                git_commit: "abc123".into(),
                mode: pb::RunMode::Supervise as i32,
                booted_slot: pb::Slot::B as i32,
                image_version: "2.0.0".into(),
                boot_id: "0b8c5a4e-boot".into(),
                ..Default::default()
            }),
            Some(Call::Power(_)) => Reply::Error(pb::Error::new(
                pb::ErrorCode::PermissionDenied,
                "peer is not root",
            )),
            Some(Call::Logs(l)) => {
                let line = |text: &[u8], stream| pb::LogLine {
                    timestamp_us: 1_000,
                    stream: stream as i32,
                    text: text.to_vec(),
                };
                let _ = send(
                    conn,
                    id,
                    true,
                    Reply::Log(pb::LogChunk {
                        lines: vec![line(b"hello", pb::LogStream::Stdout)],
                        dropped: 0,
                    }),
                );
                Reply::Log(pb::LogChunk {
                    lines: vec![line(
                        format!("{} err\n", l.name).as_bytes(),
                        pb::LogStream::Stderr,
                    )],
                    dropped: 3,
                })
            }
            _ => Reply::Error(pb::Error::new(pb::ErrorCode::Failed, "not in the fake")),
        };
        let _ = send(conn, id, false, reply);
    })
}

#[test]
fn services_json_has_the_documented_shape() {
    let server = standard_server();
    let out = run(bascule(&server.socket).args(["services", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let list = v.as_array().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["name"], "web");
    assert_eq!(list[0]["state"], "running");
    assert_eq!(list[0]["pid"], 42);
    assert_eq!(list[0]["uptime_ms"], 65_000);
    assert_eq!(list[1]["state"], "stopped");
    let mut keys: Vec<&str> = list[0]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "class",
            "depends_on",
            "health",
            "last_exit",
            "name",
            "pid",
            "readiness",
            "reason",
            "restarts",
            "state",
            "status_text",
            "uptime_ms"
        ]
    );
}

#[test]
fn services_table_and_env_socket() {
    let server = standard_server();
    let out = run(Command::new(env!("CARGO_BIN_EXE_bascule"))
        .env("BASCULE_SOCKET", &server.socket)
        .arg("services"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{stdout}");
    assert!(lines[1].contains("1m05s"), "{stdout}");
    assert_eq!(lines.len(), 3, "{stdout}");
}

#[test]
fn unknown_service_exits_4_and_names_it() {
    let server = standard_server();
    let out = run(bascule(&server.socket).args(["service", "nope", "start"]));
    assert_eq!(out.status.code(), Some(4));
    let err = text(&out.stderr);
    assert!(err.starts_with("bascule: "), "{err}");
    assert!(err.contains("\"nope\""), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn stopped_service_status_exits_0() {
    let server = standard_server();
    let out = run(bascule(&server.socket).args(["service", "db", "status", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "stopped");
}

#[test]
fn permission_denied_exits_5() {
    let server = standard_server();
    let out = run(bascule(&server.socket).arg("reboot"));
    assert_eq!(out.status.code(), Some(5));
    assert!(text(&out.stderr).contains("permission denied"));
}

#[test]
fn version_prints_both_sides() {
    let server = standard_server();
    let out = run(bascule(&server.socket).arg("version"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
    assert!(stdout.contains("9.9.9 (abc123)"), "{stdout}");
    assert!(stdout.contains("supervise"), "{stdout}");

    let out = run(bascule(&server.socket).args(["version", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["boot_id"], "0b8c5a4e-boot");
    assert_eq!(v["booted_slot"], "B");
    assert_eq!(v["image_version"], "2.0.0");
}

#[test]
fn logs_print_raw_lines_and_report_drops() {
    let server = standard_server();
    let out = run(bascule(&server.socket).args(["logs", "web"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "hello\nweb err\n");
    assert!(text(&out.stderr).contains("bascule: 3 lines dropped (client too slow)"));

    let out = run(bascule(&server.socket).args(["logs", "--json", "web"]));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["stream"], "stderr");
    assert_eq!(lines[1]["text"], "web err\n");
    assert_eq!(lines[0]["timestamp_us"], 1_000);
}

#[test]
fn missing_socket_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("absent.sock");
    let out = run(bascule(&socket).arg("services"));
    assert_eq!(out.status.code(), Some(3));
    let err = text(&out.stderr);
    assert!(err.contains("absent.sock"), "{err}");
}

#[test]
fn silent_server_times_out_with_3() {
    // Reads requests, never answers.
    let server = FakeServer::start(|_, _| {});
    let child = bascule(&server.socket)
        .args(["--timeout", "1", "version"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (out, took) = wait_bounded(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(text(&out.stderr).contains("api.sock"));
}

#[test]
fn closed_stdout_on_follow_exits_quietly() {
    // Streams lines until the client goes away.
    let server = FakeServer::start(|conn, req| {
        for i in 0..2000 {
            let chunk = pb::LogChunk {
                lines: vec![pb::LogLine {
                    timestamp_us: i,
                    stream: pb::LogStream::Stdout as i32,
                    text: format!("line {i}").into_bytes(),
                }],
                dropped: 0,
            };
            if send(conn, req.id, true, Reply::Log(chunk)).is_err() {
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
    });
    let mut child = bascule(&server.socket)
        .args(["logs", "-f", "web"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -1`: read one line, then close the pipe.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 7];
    stdout.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"line 0\n");
    drop(stdout);
    let (out, _) = wait_bounded(child, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stderr.is_empty(), "{}", text(&out.stderr));
}
