//! `bascule upgrade`, `upgrade status` and `rollback` against a fake machine
//! that speaks the upgrade stream (SEND_BUNDLE for two passes, phases, the
//! outcome) and simulates the reboot that follows: its boot id and boot
//! status change on a timeline, with a spell of closed connections between.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bascule_api::client::UPGRADE_CHUNK;
use bascule_api::pb::{self, request::Call, response::Result as Reply};
use common::*;
use serde_json::Value;

/// How the fake machine answers an upgrade, and what its reboot ends in.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Scenario {
    /// Streams, reboots, the new slot confirms itself.
    Confirm,
    /// Streams, reboots, the new slot fails; back on the old slot.
    RollBack,
    /// Streams, reboots, and never answers again.
    NeverBack,
    /// Answers the request with an Error response.
    Busy,
    /// Verifies the bundle and refuses it (an outcome).
    BadSignature,
    /// Streams, then aborts in unmount.
    Abort,
}

#[derive(Default)]
struct Machine {
    upgrade: Option<pb::UpgradeRequest>,
    passes: [Vec<u8>; 2],
    /// When the reboot started (outcome REBOOTING, or a rollback).
    reboot_at: Option<Instant>,
    rollback_asked: bool,
}

/// After the reboot starts: 300 ms still up, down until 1.2 s, then the new
/// boot, whose try is pending until 2.2 s.
const STILL_UP: Duration = Duration::from_millis(300);
const BACK: Duration = Duration::from_millis(1200);
const CONFIRMED: Duration = Duration::from_millis(2200);
/// A failed try reboots again: down until 2.8 s, then the old slot.
const BACK_ON_OLD: Duration = Duration::from_millis(2800);

/// What the machine is like now: None while it is down.
struct Boot {
    id: &'static str,
    booted: pb::Slot,
    image: &'static str,
    pending: pb::Slot,
    failure: Option<pb::SlotFailure>,
}

fn boot_now(scenario: Scenario, m: &Machine) -> Option<Boot> {
    let old = Boot {
        id: "boot-1",
        booted: pb::Slot::A,
        image: "1.0.0",
        pending: pb::Slot::Unspecified,
        failure: None,
    };
    let Some(at) = m.reboot_at else {
        return Some(old);
    };
    let t = at.elapsed();
    if t < STILL_UP {
        return Some(old);
    }
    if t < BACK {
        return None;
    }
    if m.rollback_asked {
        return Some(Boot {
            id: "boot-2",
            ..old
        });
    }
    let trying = Boot {
        id: "boot-2",
        booted: pb::Slot::B,
        image: "2.0.0",
        pending: pb::Slot::B,
        failure: None,
    };
    match scenario {
        Scenario::NeverBack => None,
        _ if t < CONFIRMED => Some(trying),
        Scenario::RollBack if t < BACK_ON_OLD => None,
        Scenario::RollBack => Some(Boot {
            id: "boot-3",
            failure: Some(pb::SlotFailure {
                slot: pb::Slot::B as i32,
                version: "2.0.0".into(),
                reason: "self-check: web not healthy within 30s".into(),
                at_unix_secs: 1,
            }),
            ..old
        }),
        _ => Some(Boot {
            pending: pb::Slot::Unspecified,
            ..trying
        }),
    }
}

fn event(kind: pb::UpgradeEventKind, phase: &str) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        kind: kind as i32,
        phase: phase.into(),
        ..Default::default()
    }
}

fn outcome(result: pb::UpgradeResult, phase: &str, message: &str) -> pb::UpgradeEvent {
    pb::UpgradeEvent {
        outcome: Some(pb::UpgradeOutcome {
            result: result as i32,
            message: message.into(),
            target_slot: pb::Slot::B as i32,
            target_version: "2.0.0".into(),
            phase: phase.into(),
        }),
        ..event(pb::UpgradeEventKind::Outcome, phase)
    }
}

fn up(conn: &mut UnixStream, id: u64, e: pb::UpgradeEvent) {
    let more = e.kind() != pb::UpgradeEventKind::Outcome;
    let _ = send(conn, id, more, Reply::Upgrade(e));
}

fn send_bundle(conn: &mut UnixStream, id: u64, pass: u32, phase: &str) {
    let e = pb::UpgradeEvent {
        pass,
        ..event(pb::UpgradeEventKind::SendBundle, phase)
    };
    up(conn, id, e);
}

fn handle(scenario: Scenario, m: &mut Machine, conn: &mut UnixStream, req: pb::Request) {
    use pb::UpgradeEventKind::*;
    let id = req.id;
    let Some(boot) = boot_now(scenario, m) else {
        // Rebooting: whoever connects is cut off.
        let _ = conn.shutdown(Shutdown::Both);
        return;
    };
    match req.call {
        Some(Call::Version(_)) => {
            let reply = pb::VersionReply {
                version: "0.1.0".into(),
                mode: pb::RunMode::Pid1 as i32,
                booted_slot: boot.booted as i32,
                image_version: boot.image.into(),
                boot_id: boot.id.into(),
                ..Default::default()
            };
            let _ = send(conn, id, false, Reply::Version(reply));
        }
        Some(Call::BootStatus(_)) => {
            let reply = pb::BootStatus {
                loader: "grub".into(),
                booted: boot.booted as i32,
                default: boot.booted as i32,
                pending_try: boot.pending as i32,
                last_failure: boot.failure,
                ..Default::default()
            };
            let _ = send(conn, id, false, Reply::BootStatus(reply));
        }
        Some(Call::Upgrade(u)) => {
            let streamed = matches!(u.source, Some(pb::upgrade_request::Source::Stream(true)));
            m.upgrade = Some(u);
            match scenario {
                Scenario::Busy => {
                    let e =
                        pb::Error::new(pb::ErrorCode::Unavailable, "an upgrade is already running");
                    let _ = send(conn, id, false, Reply::Error(e));
                }
                _ if !streamed => {
                    up(conn, id, event(PhaseStarted, "verify"));
                    up(
                        conn,
                        id,
                        outcome(pb::UpgradeResult::DryRun, "verify", "checks passed"),
                    );
                }
                _ => {
                    up(conn, id, event(PhaseStarted, "verify"));
                    send_bundle(conn, id, 1, "verify");
                }
            }
        }
        Some(Call::UpgradeData(d)) => {
            let pass = d.pass as usize;
            assert!(pass == 1 || pass == 2, "pass {pass}");
            assert!(d.chunk.len() <= UPGRADE_CHUNK);
            m.passes[pass - 1].extend_from_slice(&d.chunk);
            if !d.end {
                return;
            }
            let uid = d.upgrade_id;
            if pass == 1 {
                let progress = pb::UpgradeEvent {
                    done: m.passes[0].len() as u64,
                    total: m.passes[0].len() as u64,
                    ..event(Progress, "verify")
                };
                up(conn, uid, progress);
                up(conn, uid, event(PhaseFinished, "verify"));
                if scenario == Scenario::BadSignature {
                    let o = outcome(
                        pb::UpgradeResult::Refused,
                        "verify",
                        "bundle signature does not verify against the trusted keys",
                    );
                    up(conn, uid, o);
                    return;
                }
                for phase in ["cordon", "drain", "stop-services", "unmount"] {
                    up(conn, uid, event(PhaseStarted, phase));
                    if scenario == Scenario::Abort && phase == "unmount" {
                        let o = outcome(
                            pb::UpgradeResult::Aborted,
                            "unmount",
                            "/var is busy; rebooting into the current slot",
                        );
                        up(conn, uid, o);
                        return;
                    }
                    up(conn, uid, event(PhaseFinished, phase));
                }
                let note = pb::UpgradeEvent {
                    message: "killed pid 77 holding /var".into(),
                    ..event(Note, "unmount")
                };
                up(conn, uid, note);
                up(conn, uid, event(PhaseStarted, "install"));
                send_bundle(conn, uid, 2, "install");
            } else {
                up(conn, uid, event(PhaseFinished, "install"));
                m.reboot_at = Some(Instant::now());
                up(
                    conn,
                    uid,
                    outcome(pb::UpgradeResult::Rebooting, "reboot", ""),
                );
            }
        }
        Some(Call::UpgradeStatus(_)) => {
            let run = pb::UpgradeRun {
                started_unix_ms: 1_718_022_896_000,
                from_slot: pb::Slot::A as i32,
                from_version: "1.0.0".into(),
                target_slot: pb::Slot::B as i32,
                target_version: "2.0.0".into(),
                phases: vec![pb::UpgradePhaseRecord {
                    phase: "verify".into(),
                    started_unix_ms: 1_718_022_896_000,
                    duration_ms: 1500,
                    bytes: 1 << 20,
                    error: String::new(),
                    notes: Vec::new(),
                }],
                outcome: Some(pb::UpgradeOutcome {
                    result: pb::UpgradeResult::Rebooting as i32,
                    target_slot: pb::Slot::B as i32,
                    target_version: "2.0.0".into(),
                    phase: "reboot".into(),
                    ..Default::default()
                }),
                after_boot: "confirmed".into(),
            };
            let reply = pb::UpgradeStatusReply {
                runs: vec![run],
                running: false,
            };
            let _ = send(conn, id, false, Reply::UpgradeStatus(reply));
        }
        Some(Call::Rollback(r)) => {
            assert!(r.force);
            m.rollback_asked = true;
            m.reboot_at = Some(Instant::now());
            let reply = pb::RollbackReply {
                slot: pb::Slot::A as i32,
                version: "1.0.0".into(),
            };
            let _ = send(conn, id, false, Reply::Rollback(reply));
        }
        other => panic!("the fake machine does not know {other:?}"),
    }
}

struct Fake {
    server: FakeServer,
    machine: Arc<Mutex<Machine>>,
}

fn machine(scenario: Scenario) -> Fake {
    let machine = Arc::new(Mutex::new(Machine::default()));
    let shared = Arc::clone(&machine);
    let server = FakeServer::start(move |conn, req| {
        let mut m = shared.lock().unwrap();
        handle(scenario, &mut m, conn, req);
    });
    Fake { server, machine }
}

/// A bundle file of 2.5 chunks of varied bytes.
fn bundle_file() -> (tempfile::TempDir, std::path::PathBuf, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.bundle");
    let bytes: Vec<u8> = (0..UPGRADE_CHUNK * 5 / 2)
        .map(|i| (i * 7 + i / 1000) as u8)
        .collect();
    std::fs::write(&path, &bytes).unwrap();
    (dir, path, bytes)
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn upgrade(fake: &Fake, image: &str, extra: &[&str]) -> Output {
    run(bascule(&fake.server.socket)
        .args(["upgrade", "--image", image])
        .args(extra))
}

#[test]
fn a_local_file_is_streamed_twice_and_events_are_json_lines() {
    let fake = machine(Scenario::Confirm);
    let (_dir, path, bytes) = bundle_file();
    let path = path.to_str().unwrap();
    let out = upgrade(
        &fake,
        path,
        &[
            "--preserve",
            "--force",
            "--reboot-mode",
            "firmware",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let m = fake.machine.lock().unwrap();
    let req = m.upgrade.clone().unwrap();
    assert_eq!(req.source, Some(pb::upgrade_request::Source::Stream(true)));
    assert!(req.preserve && req.force && !req.stage && !req.dry_run);
    assert_eq!(req.reboot_mode(), pb::RebootMode::Firmware);
    assert!(m.passes[0] == bytes, "pass 1 is not the file");
    assert!(m.passes[1] == bytes, "pass 2 is not the file");

    let lines = json_lines(&out);
    let kinds: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "send_bundle").count(), 2);
    assert_eq!(kinds.first(), Some(&"phase_started"));
    assert!(kinds.contains(&"note"), "{kinds:?}");
    let n = lines.len();
    assert_eq!(lines[n - 2]["event"], "outcome");
    assert_eq!(lines[n - 2]["outcome"]["result"], "rebooting");
    let last = &lines[n - 1];
    assert_eq!(last["event"], "result");
    assert_eq!(last["result"], "rebooting");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["target_slot"], "B");
    assert_eq!(last["target_version"], "2.0.0");
    let progress = lines.iter().find(|l| l["event"] == "progress").unwrap();
    assert_eq!(progress["done"], bytes.len());
}

#[test]
fn text_mode_shows_phases_on_stderr_and_the_result_on_stdout() {
    let fake = machine(Scenario::Confirm);
    let (_dir, path, _) = bundle_file();
    let out = upgrade(&fake, path.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("verify: started"), "{err}");
    assert!(err.contains("verify: done in"), "{err}");
    assert!(err.contains("unmount: killed pid 77 holding /var"), "{err}");
    assert!(err.contains("streaming the bundle (pass 2)"), "{err}");
    assert_eq!(text(&out.stdout), "upgrade to 2.0.0 (slot B): rebooting\n");
}

#[test]
fn file_urls_name_a_path_on_the_machine_and_http_a_url() {
    for (image, expected) in [
        (
            "file:///var/lib/b.bundle",
            pb::upgrade_request::Source::Path("/var/lib/b.bundle".into()),
        ),
        (
            "http://10.0.2.2:8000/b.bundle",
            pb::upgrade_request::Source::Url("http://10.0.2.2:8000/b.bundle".into()),
        ),
        (
            "https://example.org/b.bundle",
            pb::upgrade_request::Source::Url("https://example.org/b.bundle".into()),
        ),
    ] {
        let fake = machine(Scenario::Confirm);
        let out = upgrade(&fake, image, &["--dry-run"]);
        assert_eq!(out.status.code(), Some(0), "{image}: {}", text(&out.stderr));
        let req = fake.machine.lock().unwrap().upgrade.clone().unwrap();
        assert_eq!(req.source, Some(expected));
        assert!(req.dry_run);
        assert!(text(&out.stdout).contains("dry run passed"), "{image}");
    }
}

#[test]
fn a_missing_local_file_fails_before_asking_the_machine() {
    let fake = machine(Scenario::Confirm);
    let out = upgrade(&fake, "/nonexistent/b.bundle", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("/nonexistent/b.bundle"), "{err}");
    assert!(err.contains("file:///"), "{err}");
    assert!(fake.machine.lock().unwrap().upgrade.is_none());

    let out = upgrade(&fake, "ftp://host/b", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn a_busy_machine_refuses_with_exit_6() {
    let fake = machine(Scenario::Busy);
    let out = upgrade(&fake, "http://h/b", &["--json"]);
    assert_eq!(out.status.code(), Some(6));
    let err = text(&out.stderr);
    assert!(
        err.contains("upgrade refused: unavailable: an upgrade is already running"),
        "{err}"
    );
    let lines = json_lines(&out);
    let last = lines.last().unwrap();
    assert_eq!(last["result"], "error");
    assert_eq!(last["exit_code"], 6);
}

#[test]
fn a_refused_outcome_exits_6_and_an_abort_7() {
    let (_dir, path, _) = bundle_file();
    let fake = machine(Scenario::BadSignature);
    let out = upgrade(&fake, path.to_str().unwrap(), &[]);
    assert_eq!(out.status.code(), Some(6));
    let err = text(&out.stderr);
    assert!(
        err.contains("upgrade refused: bundle signature does not verify"),
        "{err}"
    );

    let fake = machine(Scenario::Abort);
    let out = upgrade(&fake, path.to_str().unwrap(), &["--json"]);
    assert_eq!(out.status.code(), Some(7));
    assert!(
        text(&out.stderr).contains("aborted in phase unmount: /var is busy"),
        "{}",
        text(&out.stderr)
    );
    let last = json_lines(&out).pop().unwrap();
    assert_eq!(last["result"], "aborted");
    assert_eq!(last["exit_code"], 7);
}

#[test]
fn wait_follows_the_reboot_to_the_confirmed_slot() {
    let fake = machine(Scenario::Confirm);
    let (_dir, path, _) = bundle_file();
    let out = upgrade(&fake, path.to_str().unwrap(), &["--wait"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "upgraded: 2.0.0 (slot B) is running and confirmed\n"
    );
    let err = text(&out.stderr);
    // It saw the machine down and the new slot's pending try on the way.
    assert!(err.contains("come back"), "{err}");
    assert!(
        err.contains("slot B is up; waiting for it to confirm"),
        "{err}"
    );
}

#[test]
fn wait_json_reports_the_new_boot() {
    let fake = machine(Scenario::Confirm);
    let (_dir, path, _) = bundle_file();
    let out = upgrade(&fake, path.to_str().unwrap(), &["--wait", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let last = json_lines(&out).pop().unwrap();
    assert_eq!(last["result"], "confirmed");
    assert_eq!(last["booted_slot"], "B");
    assert_eq!(last["image_version"], "2.0.0");
    assert_eq!(last["boot_id"], "boot-2");
}

#[test]
fn wait_reports_a_rollback_and_its_reason_with_exit_8() {
    let fake = machine(Scenario::RollBack);
    let (_dir, path, _) = bundle_file();
    let out = upgrade(&fake, path.to_str().unwrap(), &["--wait"]);
    assert_eq!(out.status.code(), Some(8), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("rolled back: self-check: web not healthy within 30s"),
        "{err}"
    );
    assert!(err.contains("running 1.0.0 (slot A)"), "{err}");
}

#[test]
fn wait_gives_up_after_its_bound_with_exit_9() {
    let fake = machine(Scenario::NeverBack);
    let (_dir, path, _) = bundle_file();
    let started = Instant::now();
    let out = upgrade(
        &fake,
        path.to_str().unwrap(),
        &["--wait", "--wait-timeout", "2", "--timeout", "0.5"],
    );
    assert_eq!(out.status.code(), Some(9), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("did not settle within 2s"), "{err}");
    assert!(err.contains("come back"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[test]
fn upgrade_status_shows_runs_and_phases() {
    let fake = machine(Scenario::Confirm);
    let out = run(bascule(&fake.server.socket).args(["upgrade", "status"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    assert!(
        t.starts_with("upgrade 2024-06-10 12:34:56: 1.0.0 (slot A) -> 2.0.0 (slot B): rebooting\n"),
        "{t}"
    );
    assert!(t.contains("after boot: confirmed"), "{t}");
    assert!(t.contains("verify") && t.contains("1.00 MiB"), "{t}");

    let out = run(bascule(&fake.server.socket).args(["upgrade", "status", "--json"]));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"][0]["after_boot"], "confirmed");
    assert_eq!(v["runs"][0]["phases"][0]["duration_ms"], 1500);
}

#[test]
fn rollback_reports_the_slot_and_with_wait_what_came_up() {
    let fake = machine(Scenario::Confirm);
    let out = run(bascule(&fake.server.socket).args(["rollback", "--force", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["slot"], "A");
    assert_eq!(v["version"], "1.0.0");

    let fake = machine(Scenario::Confirm);
    let out = run(bascule(&fake.server.socket).args(["rollback", "--force", "--wait"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "running 1.0.0 (slot A)\n");
}
