//! Early boot with damaged state partitions, and the watchdog.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bascule_qemu_tests::{Combo, Machine};
use bascule_rootfs::layout;

/// The timeout PID 1 arms the hardware watchdog with.
const WATCHDOG_TIMEOUT_S: u64 = 30;

#[test]
fn blank_ephemeral_is_formatted_corrupt_state_is_reported_and_the_watchdog_is_fed() {
    let mut m = Machine::new(Combo::GrubBios);
    // EPHEMERAL wiped (as an upgrade without preserve does), STATE damaged.
    m.overwrite_partition(layout::LABEL_EPHEMERAL, &vec![0u8; 4 << 20]);
    m.overwrite_partition(layout::LABEL_STATE, &vec![0x5a; 64 * 1024]);
    m.start();
    let services = m.wait_ready();
    assert!(services.iter().any(|s| s.name == "httpd"));
    let log = m.serial();
    assert!(
        log.contains("partition EPHEMERAL: blank, creating an ext4 filesystem"),
        "{log}"
    );
    assert!(
        log.contains("partition STATE:") && log.contains("refusing to format it"),
        "{log}"
    );
    m.console_run("grep -q ' /var ext4 ' /proc/mounts && test -f /var/log/bascule/httpd.log && echo var-is-fresh-ext4", "var-is-fresh-ext4");
    m.console_run(
        "grep -q ' /system/state ' /proc/mounts || echo state-not-mounted",
        "state-not-mounted",
    );

    // The watchdog is armed with a 30 s timeout: the same boot must still
    // be running when the guest's own clock has passed it twice over since
    // it was armed (before the services were ready, so before now).
    assert!(
        log.contains(&format!("hardware watchdog armed ({WATCHDOG_TIMEOUT_S}s)")),
        "{log}"
    );
    let boot = m.boot_id();
    let boots = m.boots_seen();
    let target = m.uptime_secs() + 2 * WATCHDOG_TIMEOUT_S + 1;
    let marker = format!("uptime-past-{target}");
    let from = m.serial().len();
    // The guest waits on its own clock, in the background so the console
    // stays free; a watchdog reset would kill the loop with the kernel. The
    // quotes keep the marker out of the echoed command line.
    m.console_run(
        &format!(
            "(while [ $(cut -d. -f1 /proc/uptime) -lt {target} ]; do sleep 1; done; echo uptime-\"\"past-{target}) & echo waiting-for-{target}"
        ),
        &format!("waiting-for-{target}"),
    );
    // TCG runs the guest clock at about wall speed; the bound is generous.
    m.wait_console_marker(
        from,
        &marker,
        Duration::from_secs(4 * WATCHDOG_TIMEOUT_S + 60),
    );
    assert_eq!(m.boots_seen(), boots, "the machine was reset");
    assert_eq!(m.boot_id(), boot, "the machine was reset (new boot id)");
}
