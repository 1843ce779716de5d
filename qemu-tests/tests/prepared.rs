//! Prepared and staged upgrades: `--prepare` verifies and writes the
//! inactive slot while every service keeps running (same processes, same
//! boot), and a later `--apply` runs only the disruptive phases, with
//! nothing written; `--stage` writes the same way and the next boot tries
//! the slot before any of its services starts.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_qemu_tests::answers::{phase_names, slot_state, text};
use bascule_qemu_tests::upgrade as up;
use bascule_qemu_tests::{Combo, Machine};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

fn upgrade(m: &Machine, args: &[&str]) -> (i32, Value, String) {
    m.upgrade_json(args)
}

fn phase<'a>(run: &'a Value, name: &str) -> &'a Value {
    run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == name)
        .unwrap_or_else(|| panic!("no {name} phase in {run}"))
}

fn has_note(p: &Value, text: &str) -> bool {
    p["notes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n.as_str().unwrap().contains(text))
}

/// Each service's pid and restart count.
fn processes(m: &Machine) -> BTreeMap<String, (u32, u32)> {
    m.services()
        .unwrap()
        .into_iter()
        .map(|s| (s.name, (s.pid, s.restarts)))
        .collect()
}

/// PID 1's resident memory, kB.
fn pid1_rss_kb(m: &Machine) -> u64 {
    let line = m.console_line(
        "awk '/^VmRSS:/{print \"pid1-rss-\" $2}' /proc/1/status",
        "PID 1's VmRSS",
        |l| l.starts_with("pid1-rss-"),
    );
    line["pid1-rss-".len()..].parse().unwrap()
}

#[test]
fn prepared_and_staged_upgrades_write_while_everything_runs() {
    let b2 = up::bundle("2.1.0");
    let m = Machine::boot(Combo::GrubBios);
    m.wait_ready();
    let before = processes(&m);
    let boot = m.boot_id();
    let rss_before = pid1_rss_kb(&m);

    let (code, r, out) = upgrade(&m, &["--image", b2.to_str().unwrap(), "--prepare"]);
    assert_eq!(code, 0, "prepare: {out}");
    // The install's 1-4 MiB copy buffers go back to the kernel when freed:
    // PID 1 runs on for as long as the machine does.
    let rss_after = pid1_rss_kb(&m);
    assert!(
        rss_after <= rss_before + 1536,
        "PID 1 kept {} kB after the prepare ({rss_before} → {rss_after} kB)",
        rss_after.saturating_sub(rss_before)
    );
    assert_eq!(r["result"], "prepared", "{out}");
    assert_eq!(processes(&m), before, "no service was stopped or restarted");
    assert_eq!(m.boot_id(), boot, "no reboot");
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(slot_state(&st, "B"), "prepared", "{st}");
    assert_eq!(st["default"], "A", "{st}");
    assert_eq!(st["pending_try"], "-", "{st}");
    let run = m.last_run();
    let phases = phase_names(&run);
    assert_eq!(phases, ["verify", "verify_disk", "install"], "{run}");
    assert!(phase(&run, "install")["bytes"].as_u64().unwrap() > 1 << 20);
    assert!(
        has_note(phase(&run, "install"), "prepared with 2.1.0"),
        "{run}"
    );

    let (code, r, out) = upgrade(
        &m,
        &[
            "--apply",
            "--preserve",
            "--reboot-mode",
            "kexec",
            "--wait",
            "--wait-timeout",
            "600",
        ],
    );
    assert_eq!(code, 0, "apply: {out}");
    assert_eq!(r["result"], "confirmed", "{out}");
    assert_eq!(r["booted_slot"], "B", "{out}");
    m.wait_ready();
    assert_eq!(m.running(), ("2.1.0".into(), "B"));
    let run = m.last_run();
    let install = phase(&run, "install");
    assert_eq!(install["bytes"], 0, "the apply wrote no payload: {run}");
    assert!(
        has_note(install, "already holds 2.1.0"),
        "the apply says why nothing was written: {run}"
    );
    assert_eq!(phase(&run, "unmount")["error"], "", "{run}");
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(st["default"], "B", "{st}");
    assert_eq!(slot_state(&st, "B"), "good", "{st}");

    // Staged: written now while everything runs; the next boot tries it
    // before any of its services starts and before /var is mounted.
    let b3 = up::bundle("3.0.0");
    let before = processes(&m);
    let (code, r, out) = upgrade(
        &m,
        &[
            "--image",
            b3.to_str().unwrap(),
            "--stage",
            "--reboot-mode",
            "firmware",
        ],
    );
    assert_eq!(code, 0, "stage: {out}");
    assert_eq!(r["result"], "staged", "{out}");
    assert_eq!(processes(&m), before, "staging stopped nothing");
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(slot_state(&st, "A"), "prepared", "{st}");
    assert_eq!(st["default"], "B", "{st}");

    let from = m.serial().len();
    let boots = m.boots_seen();
    let out = m.cli(&["reboot"]);
    assert!(out.status.success(), "reboot: {}", text(&out));
    m.wait_init_line(
        from,
        "staged upgrade to 3.0.0 in slot A: applying it before any service starts",
        Duration::from_secs(300),
    );
    // That boot reboots into A by itself.
    m.wait_next_boot(boots + 1);
    m.wait_ready();
    assert_eq!(m.running(), ("3.0.0".into(), "A"));
    let log = m.serial();
    let staged_boot = &log[from..];
    let start = staged_boot
        .find("applying it before any service starts")
        .unwrap();
    let end = staged_boot[start..]
        .find("upgrade: reboot: started")
        .map(|e| start + e)
        .unwrap_or_else(|| panic!("the staged boot never rebooted:\n{}", &staged_boot[start..]));
    assert!(
        !staged_boot[start..end].contains("bascule-init: service "),
        "no service ran in the boot that applied the stage:\n{}",
        &staged_boot[start..end]
    );
    let run = m.last_run();
    assert_eq!(run["target_version"], "3.0.0", "{run}");
    assert!(
        has_note(phase(&run, "install"), "already holds 3.0.0"),
        "{run}"
    );
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(st["default"], "A", "{st}");
    assert_eq!(slot_state(&st, "A"), "good", "{st}");
}
