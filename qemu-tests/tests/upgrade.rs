//! Upgrades end to end, driven by the real `bascule` CLI against a booted
//! image: A → B with kexec and `--wait`, a cold reboot that must land on
//! the new slot, B → A with a firmware reboot, on each boot chain; damaged
//! and unreachable bundles refused with nothing changed; an upgrade over
//! HTTP; `rollback --wait`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_api::pb;
use bascule_qemu_tests::answers::{last_json, phase_names, text};
use bascule_qemu_tests::upgrade::{self as up, HttpServer};
use bascule_qemu_tests::{Combo, Machine};
use serde_json::Value;
use std::path::Path;

/// Generous bound for `--wait`: the install writes the slot through TCG.
const WAIT: &str = "600";

fn upgrade(m: &Machine, args: &[&str]) -> (i32, Value, String) {
    m.upgrade_json(args)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Whether /var/keep-me exists on the machine.
fn kept(m: &Machine) -> bool {
    m.console_line(
        "test -f /var/keep-me && echo kept-yes || echo kept-no",
        "the /var check",
        |l| l == "kept-yes" || l == "kept-no",
    ) == "kept-yes"
}

fn notes(run: &Value, phase: &str) -> Vec<String> {
    run["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["phase"] == phase)
        .unwrap_or_else(|| panic!("no {phase} phase in {run}"))["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// A → B (2.1.0) with kexec, `--preserve` and `--wait`; a cold reboot
/// stays on B; B → A (3.0.0) through the firmware without `--preserve`.
/// On the first chain, a process outside every service holds /var and
/// ignores SIGTERM: it is killed and named in the journal.
fn there_and_back(combo: Combo, holder: bool) {
    let b2 = up::bundle("2.1.0");
    let b3 = up::bundle("3.0.0");
    let m = Machine::boot(combo);
    m.wait_ready();
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    m.console_run(
        "echo keep > /var/keep-me && sync && echo wrote-$((1+1))",
        "wrote-2",
    );
    if holder {
        // Out of the console's cgroup, so stopping the services does not
        // take it: only the unmount phase's holder scan can.
        m.console_line(
            "sh -c 'echo $$ > /sys/fs/cgroup/cgroup.procs; trap \"\" TERM HUP; cd /var; \
             exec tail -f /var/keep-me >/dev/null 2>&1' & echo holder-pid=$!",
            "the holder's pid",
            |l| {
                l.strip_prefix("holder-pid=")
                    .is_some_and(|p| p.parse::<u32>().is_ok())
            },
        );
    }

    let (code, r, out) = upgrade(
        &m,
        &[
            "--image",
            s(&b2),
            "--preserve",
            "--reboot-mode",
            "kexec",
            "--wait",
            "--wait-timeout",
            WAIT,
        ],
    );
    assert_eq!(code, 0, "kexec upgrade to 2.1.0: {out}");
    assert_eq!(r["result"], "confirmed", "{out}");
    assert_eq!(r["booted_slot"], "B", "{out}");
    assert_eq!(r["image_version"], "2.1.0", "{out}");
    m.wait_ready();
    assert_eq!(m.running(), ("2.1.0".into(), "B"));
    assert!(kept(&m), "--preserve kept /var/keep-me");

    // The journal survived the kexec, phases after the unmount included.
    let run = m.last_run();
    let phases = phase_names(&run);
    assert_eq!(
        phases,
        [
            "verify",
            "cordon",
            "drain",
            "leave_cluster",
            "stop_services",
            "unmount",
            "verify_disk",
            "install",
            "boot_once",
            "reboot"
        ],
        "{run}"
    );
    for p in run["phases"].as_array().unwrap() {
        assert!(p["started_unix_ms"].as_u64().unwrap() > 0, "{p}");
        assert_eq!(p["error"], "", "{p}");
    }
    let install = &run["phases"].as_array().unwrap()[7];
    assert!(
        install["bytes"].as_u64().unwrap() > 1 << 20,
        "the install phase counts its bytes: {install}"
    );
    assert!(
        install["duration_ms"].as_u64().unwrap() > 0,
        "the install phase is timed: {install}"
    );
    assert_eq!(run["result"], "rebooting", "{run}");
    assert!(
        run["after_boot"].as_str().unwrap().contains("confirmed"),
        "{run}"
    );
    assert!(
        notes(&run, "reboot").iter().any(|n| n.contains("kexec")),
        "{run}"
    );
    if holder {
        let unmount = notes(&run, "unmount");
        assert!(
            unmount
                .iter()
                .any(|n| n.contains("SIGKILL") && n.contains("(tail,") && n.contains("/var")),
            "the holder of /var was killed and named: {unmount:?}"
        );
    }

    // Confirmed after a kexec: the firmware must boot it too.
    m.reboot_and_wait();
    assert_eq!(
        m.running(),
        ("2.1.0".into(), "B"),
        "a cold boot after the kexec upgrade lands on the new slot"
    );

    let (code, r, out) = upgrade(
        &m,
        &[
            "--image",
            s(&b3),
            "--reboot-mode",
            "firmware",
            "--wait",
            "--wait-timeout",
            WAIT,
        ],
    );
    assert_eq!(code, 0, "firmware upgrade to 3.0.0: {out}");
    assert_eq!(r["result"], "confirmed", "{out}");
    assert_eq!(r["booted_slot"], "A", "{out}");
    assert_eq!(r["image_version"], "3.0.0", "{out}");
    m.wait_ready();
    assert_eq!(m.running(), ("3.0.0".into(), "A"));
    assert!(!kept(&m), "without --preserve /var starts empty");
    let run = m.last_run();
    assert!(
        notes(&run, "reboot").iter().any(|n| n.contains("firmware")),
        "{run}"
    );
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(
        st["default"], "A",
        "the confirmed slot is the default: {st}"
    );
}

#[test]
fn grub_bios_upgrades_there_and_back() {
    there_and_back(Combo::GrubBios, true);
}

#[test]
fn grub_uefi_upgrades_there_and_back() {
    there_and_back(Combo::GrubUefi, false);
}

#[test]
fn sdboot_uefi_upgrades_there_and_back() {
    there_and_back(Combo::SdBootUefi, false);
}

const NET: u8 = 7;

/// Each bad bundle or reference, a full ESP and a GPT with a bad CRC: each
/// refused (exit 6) with its reason before anything is written; the
/// machine keeps serving and its boot status is what it was.
#[test]
fn bad_bundles_are_refused_and_change_nothing() {
    let good_path = up::bundle("2.1.0");
    let good = std::fs::read(&good_path).unwrap();
    let parts = up::parts(&good);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let mut bad_sig = good.clone();
    bad_sig[parts.signature + 10] ^= 0x01;
    let bad_sig = write("bad-signature.bundle", &bad_sig);
    let untrusted = dir.path().join("untrusted.bundle");
    up::untrusted_bundle("2.1.0", &untrusted);
    let mut flipped = good.clone();
    flipped[parts.first_payload + 5000] ^= 0x01;
    let flipped = write("flipped.bundle", &flipped);
    let truncated = write("truncated.bundle", &good[..parts.first_payload + 100_000]);
    let oversized = up::oversized_bundle("2.1.0");

    let server = HttpServer::start();
    server.add("good.bundle", &good_path);
    let mut m = Machine::new(Combo::GrubBios);
    m.user_net(NET);
    m.start();
    m.wait_ready();
    m.net_up(NET);
    let before = m.cli_json(&["--json", "boot", "status"]);

    let missing = server.url(NET, "missing.bundle");
    let closed = format!("http://{}:1/b.bundle", up::guest_host(NET));
    let cases: [(&str, &str, &str); 8] = [
        ("a bad signature", s(&bad_sig), "bad signature"),
        ("an untrusted key", s(&untrusted), "which is not trusted"),
        (
            "a flipped payload byte",
            s(&flipped),
            "rootfs payload is corrupt",
        ),
        (
            "a truncated payload",
            s(&truncated),
            "rootfs payload is truncated",
        ),
        (
            "a rootfs larger than the slot",
            s(&oversized),
            "does not fit slot B's partition",
        ),
        ("a missing file", "file:///nope.bundle", "/nope.bundle"),
        ("an HTTP 404", &missing, "HTTP status 404"),
        ("a closed port", &closed, "cannot be read"),
    ];
    for (what, image, reason) in cases {
        refused(&m, &before, what, image, reason);
    }
    // The verification looks at the machine too: a full ESP, then a GPT
    // whose primary header fails its CRC (the disk is checked before any
    // byte is written).
    m.console_run(
        "dd if=/dev/zero of=/boot/fill bs=1M 2>/dev/null; sync; echo esp-$((1+1))-full",
        "esp-2-full",
    );
    refused(&m, &before, "a full ESP", s(&good_path), "bytes free");
    m.console_run(
        "rm -f /boot/fill; sync; echo esp-$((1+1))-freed",
        "esp-2-freed",
    );
    m.console_run(
        "printf XXXX | dd of=/dev/vda bs=1 seek=528 conv=notrunc 2>/dev/null; sync; \
         echo gpt-$((1+1))-bad",
        "gpt-2-bad",
    );
    refused(
        &m,
        &before,
        "a GPT with a bad CRC",
        s(&good_path),
        "disk check for slot B failed",
    );
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
}

/// One refused upgrade: exit 6 naming `reason`, boot status as `before`,
/// every service still running.
fn refused(m: &Machine, before: &Value, what: &str, image: &str, reason: &str) {
    let (code, r, out) = upgrade(m, &["--image", image]);
    assert_eq!(code, 6, "{what}: refused (exit 6): {out}");
    assert_eq!(r["result"], "refused", "{what}: {out}");
    let message = r["message"].as_str().unwrap();
    assert!(
        message.contains(reason),
        "{what}: {message:?} names {reason:?}"
    );
    let out = m.cli(&["--json", "boot", "status"]);
    assert!(
        out.status.success(),
        "{what}: boot status after the refusal: {}\n{}",
        text(&out),
        m.serial()
    );
    let after: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(&after, before, "{what}: boot status unchanged");
    let services = m.services().unwrap();
    assert!(
        services
            .iter()
            .all(|s| s.state == pb::ServiceState::Running as i32),
        "{what}: every service still runs: {services:?}"
    );
}

/// The machine fetches the bundle over HTTP itself; then `rollback --wait`
/// lands on the previous version.
#[test]
fn http_upgrade_then_rollback() {
    let b2 = up::bundle("2.1.0");
    let server = HttpServer::start();
    server.add("2.1.0.bundle", &b2);
    let mut m = Machine::new(Combo::GrubUefi);
    m.user_net(NET);
    m.start();
    m.wait_ready();
    m.net_up(NET);

    let url = server.url(NET, "2.1.0.bundle");
    let (code, r, out) = upgrade(&m, &["--image", &url, "--wait", "--wait-timeout", WAIT]);
    assert_eq!(code, 0, "http upgrade: {out}");
    assert_eq!(r["result"], "confirmed", "{out}");
    assert_eq!(r["image_version"], "2.1.0", "{out}");
    let gets = server.requests.lock().unwrap().clone();
    assert!(
        gets.iter().all(|g| g.starts_with("GET /2.1.0.bundle ")) && gets.len() >= 2,
        "the machine fetched the bundle for both passes: {gets:?}"
    );
    m.wait_ready();
    assert_eq!(m.running(), ("2.1.0".into(), "B"));

    let out = m.cli(&["--json", "rollback", "--wait", "--wait-timeout", WAIT]);
    assert!(out.status.success(), "rollback --wait: {}", text(&out));
    // Progress lines, then the result: the last JSON value printed.
    let r: Value = last_json(&out.stdout)
        .unwrap_or_else(|| panic!("no JSON from rollback --wait: {}", text(&out)));
    assert_eq!(r["booted_slot"], "A", "{r}");
    assert_eq!(r["image_version"], "1.0.0", "{r}");
    m.wait_ready();
    assert_eq!(m.running(), ("1.0.0".into(), "A"));
    let st = m.cli_json(&["--json", "boot", "status"]);
    assert_eq!(st["default"], "A", "{st}");
}
