//! Boots each of the three boot chains with the real `bascule-init` as PID 1
//! and drives it through its API on the virtio-serial port.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_qemu_tests::{ext4_clean, Combo, Machine};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "bascule failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The whole life of a machine: boot, manage, crash, reboot, shut down.
fn lifecycle(combo: Combo) {
    let mut m = Machine::boot(combo);
    let services = m.wait_ready();
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    for expected in ["console", "httpd", "heartbeat"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }

    // PID 1 is bascule-init, booted from slot A.
    let Ok(Reply::Version(v)) = m.call(Call::Version(pb::VersionRequest {})) else {
        panic!("version")
    };
    assert_eq!(v.mode, pb::RunMode::Pid1 as i32);
    assert_eq!(v.booted_slot, pb::Slot::A as i32);
    assert!(
        !v.image_version.is_empty(),
        "the image's version is reported"
    );
    m.console_run(
        "echo pid1-is-$(cat /proc/1/comm)-$(basename $(readlink /proc/1/exe))",
        "pid1-is-bascule-init-bascule-init",
    );

    // The health check runs and passes.
    let healthy = m.wait_for(Duration::from_secs(30), || {
        (m.service("heartbeat").health == pb::Health::Healthy as i32).then_some(())
    });
    assert!(
        healthy.is_some(),
        "heartbeat never became healthy: {:?}",
        m.service("heartbeat")
    );

    // The boot timeline has the stages, in order.
    let Ok(Reply::BootTime(t)) = m.call(Call::BootTime(pb::BootTimeRequest {})) else {
        panic!("boot time")
    };
    let events: Vec<&str> = t.events.iter().map(|e| e.name.as_str()).collect();
    for stage in [
        "kernel start",
        "initramfs start",
        "switch_root",
        "init start",
        "partitions mounted",
        "all services ready",
    ] {
        assert!(
            events.iter().any(|e| e.starts_with(stage)),
            "{stage} missing from {events:?}"
        );
    }
    assert!(
        t.events.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "{:?}",
        t.events
    );
    let out = ok(&m.cli(&["boot-time"]));
    assert!(out.contains("all services ready"), "{out}");

    // `quiet` on the command line: routine lines stay off the serial
    // console (it costs the guest time per byte) and are in PID 1's log.
    let serial = m.serial();
    assert!(
        serial.contains("bascule-init: all services ready"),
        "{serial}"
    );
    assert!(
        !serial.contains("bascule-init: service httpd: started"),
        "{serial}"
    );
    let init_log = ok(&m.cli(&["logs", "init", "--tail", "5000"]));
    assert!(init_log.contains("service httpd: started"), "{init_log}");

    // Host clients follow one another on the one virtio-serial port as
    // fast as they can: each gets its reply (the port's attached state
    // lags the clients, and once lost a reply now and then).
    let lost: Vec<String> = (0..3000)
        .filter_map(|i| {
            m.call(Call::Version(pb::VersionRequest {}))
                .err()
                .map(|e| format!("{i}: {e}"))
        })
        .take(3)
        .collect();
    assert!(lost.is_empty(), "calls without a reply: {lost:?}");

    // A crashed workload is restarted inside the VM.
    let before = m.service("httpd");
    m.console_run(
        &format!("kill -9 {}; echo killed-httpd", before.pid),
        "killed-httpd",
    );
    let back = m.wait_for(Duration::from_secs(30), || {
        let s = m.service("httpd");
        (s.restarts > before.restarts
            && s.state == pb::ServiceState::Running as i32
            && s.pid != before.pid)
            .then_some(s)
    });
    assert!(
        back.is_some(),
        "httpd not restarted: {:?}",
        m.service("httpd")
    );

    // A file under /var survives a reboot.
    m.console_run(
        "echo persisted > /var/marker && sync && echo marker-written",
        "marker-written",
    );
    // A new boot (new kernel boot id), not merely an API that went quiet.
    m.reboot_and_wait();
    m.console_run("echo var-has-$(cat /var/marker)", "var-has-persisted");

    // A stopped process that handles SIGTERM and ignores SIGHUP, orphaned
    // and outside every service's cgroup: only the shutdown's SIGTERM to
    // all reaches it, and only a SIGCONT after it lets it act on it before
    // the 3 s grace runs out.
    m.console_run(
        "( sh -c 'trap \"exit 0\" TERM; trap \"\" HUP; echo $$ > /sys/fs/cgroup/cgroup.procs; echo $$ > /run/straggler; kill -STOP $$; while :; do sleep 1; done' & ); until [ -s /run/straggler ] && [ $(cut -d' ' -f3 /proc/$(cat /run/straggler)/stat) = T ]; do :; done; echo straggler-stopped-in-$(cut -d: -f3 /proc/$(cat /run/straggler)/cgroup)",
        "straggler-stopped-in-/",
    );

    // Shutdown powers the VM off by itself, with clean filesystems.
    ok(&m.cli(&["shutdown"]));
    assert!(
        m.wait_exit(Duration::from_secs(60)),
        "QEMU did not exit after bascule shutdown"
    );
    let serial = m.serial();
    assert!(
        serial.contains("sending Term to all remaining processes"),
        "{serial}"
    );
    assert!(
        !serial.contains("after SIGTERM: killing them"),
        "the stopped process outlived SIGTERM: {serial}"
    );
    for label in ["STATE", "EPHEMERAL"] {
        ext4_clean(m.disk(), label).unwrap_or_else(|e| panic!("{e}"));
    }
}

#[test]
fn grub_bios_lifecycle() {
    lifecycle(Combo::GrubBios);
}

#[test]
fn grub_uefi_lifecycle() {
    lifecycle(Combo::GrubUefi);
}

#[test]
fn sdboot_uefi_lifecycle() {
    lifecycle(Combo::SdBootUefi);
}
