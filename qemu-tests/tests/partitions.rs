//! Early boot with damaged state partitions, and the watchdog.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::time::Duration;

use bascule_qemu_tests::{Combo, Machine};
use bascule_rootfs::layout;

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

    // The watchdog is armed with a 15 s timeout: still the same boot well after it.
    assert!(log.contains("hardware watchdog armed (15s)"), "{log}");
    // Ready at about 10 s of uptime; 20 s more passes the timeout twice over.
    std::thread::sleep(Duration::from_secs(20));
    m.console_run(
        "test $(cut -d. -f1 /proc/uptime) -ge 25 && echo no-reset-since-boot",
        "no-reset-since-boot",
    );
}
