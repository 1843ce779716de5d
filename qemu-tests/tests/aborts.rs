//! Upgrades that stop before the point of no return: a source that goes
//! away (the run ends with an error naming it) and a filesystem that
//! cannot be freed. The machine keeps serving on its current slot (at
//! once while nothing was stopped; after a reboot into the unchanged slot
//! once the filesystems were unmounted), and a slot that was being written
//! is never bootable.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_api::pb;
use bascule_qemu_tests::answers::{last_json, slot_state, text};
use bascule_qemu_tests::upgrade::{self as up, HttpServer};
use bascule_qemu_tests::{Combo, Machine};
use std::path::Path;
use std::time::Duration;

const NET: u8 = 8;
const LIMIT: Duration = Duration::from_secs(600);

/// `bascule upgrade` exit code for an aborted run.
const ABORTED: i32 = 7;

fn all_running(m: &Machine) -> bool {
    m.services()
        .unwrap()
        .iter()
        .all(|s| s.state == pb::ServiceState::Running as i32)
}

/// Streams `bundle` from the CLI and kills the CLI once PID 1 logs
/// `line`; returns the serial offset from before the start.
fn kill_client_at(m: &Machine, bundle: &Path, line: &str) -> usize {
    let from = m.serial().len();
    let mut cli = m.cli_spawn(&["upgrade", "--image", bundle.to_str().unwrap()]);
    m.wait_init_line(from, line, LIMIT);
    cli.kill().unwrap();
    let _ = cli.wait();
    from
}

/// After a run that unmounted and then aborted: the machine reboots into
/// its unchanged slot A, slot B is not bootable, and `upgrade status`
/// keeps the reason.
fn back_on_a_after_the_abort(m: &Machine, boots: usize, why: &str) {
    m.wait_next_boot(boots);
    m.wait_ready();
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(slot_state(&st, "B"), "empty", "{st}");
    assert_eq!(st["default"], "A", "{st}");
    let out = m.cli(&["boot", "once", "B"]);
    assert!(
        !out.status.success(),
        "the half-written slot is not bootable"
    );
    let run = m.last_run();
    assert_eq!(run["result"], "aborted", "{run}");
    let install = run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == "install")
        .unwrap_or_else(|| panic!("no install phase: {run}"));
    let error = install["error"].as_str().unwrap();
    assert!(error.contains(why), "install error {error:?} names {why:?}");
}

#[test]
fn sources_that_go_away_end_the_run_on_the_current_slot() {
    let b2 = up::bundle("2.1.0");
    let server = HttpServer::start();
    // The first request is the verify pass; the second, the install,
    // dies 3 MiB in (inside the rootfs payload).
    server.add_dying("dying.bundle", &b2, 2, 3 << 20);
    let mut m = Machine::new(Combo::SdBootUefi);
    m.user_net(NET);
    m.start();
    m.wait_ready();
    m.net_up(NET);
    let before = m.cli_json(&["--json", "boot", "status"]);
    let boot = m.boot_id();

    // The client leaves while the machine verifies what it streams:
    // refused, nothing stopped, no reboot.
    let from = kill_client_at(&m, &b2, "upgrade: verify: started");
    m.wait_init_line(from, "upgrade: refused:", LIMIT);
    let run = m.last_run();
    assert_eq!(run["result"], "refused", "{run}");
    assert!(
        run["message"]
            .as_str()
            .unwrap()
            .contains("the client disconnected after sending"),
        "the refusal says the client left: {run}"
    );
    assert_eq!(m.cli_json(&["--json", "boot", "status"]), before);
    assert!(all_running(&m), "the services kept running");
    assert_eq!(m.boot_id(), boot, "no reboot");

    // The client leaves while the slot is written: the run aborts and
    // the machine comes back on A.
    let boots = m.boots_seen();
    kill_client_at(&m, &b2, "install: slot B marked as being written");
    back_on_a_after_the_abort(&m, boots, "the client disconnected after sending");

    // The machine fetches the bundle itself and the server dies half-way
    // through the install.
    m.net_up(NET);
    let boots = m.boots_seen();
    let url = server.url(NET, "dying.bundle");
    let out = m.cli(&["--json", "upgrade", "--image", &url]);
    assert_eq!(out.status.code(), Some(ABORTED), "{}", text(&out));
    let r = last_json(&out.stdout).unwrap();
    assert_eq!(r["result"], "aborted", "{r}");
    back_on_a_after_the_abort(&m, boots, "the transfer broke after");
    assert!(all_running(&m), "every service runs again on A");

    // A mount namespace kept by a namespace file (an nsfs bind mount),
    // with no process in it, still has /var mounted: unmounting /var here
    // frees nothing, so the run aborts naming it, before any write.
    m.console_run(
        "touch /run/keep-ns && unshare --mount=/run/keep-ns true && echo ns-$((1+1))-kept",
        "ns-2-kept",
    );
    let boots = m.boots_seen();
    let out = m.cli(&["--json", "upgrade", "--image", b2.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(ABORTED), "{}", text(&out));
    let r = last_json(&out.stdout).unwrap();
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains("still mounted in another mount namespace")
            && message.contains("/run/keep-ns"),
        "the abort names the namespace file: {message}"
    );
    m.wait_next_boot(boots);
    m.wait_ready();
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    let run = m.last_run();
    assert_eq!(run["result"], "aborted", "{run}");
    assert_eq!(run["phase"], "unmount", "{run}");
    assert!(all_running(&m), "every service runs again on A");
}
