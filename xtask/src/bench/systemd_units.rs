//! The systemd reference's slot: the cached Debian root
//! ([`super::systemd_root`]) copied and given the benchmark's services as
//! unit files, its mounts in /etc/fstab, the watchdog fed by PID 1
//! (`RuntimeWatchdogSec`), a console shell on ttyS0 and the ready marker.
//! Two variants: Debian's defaults, and trimmed as systemd users tune a
//! small system (the units in [`TRIMMED_MASKS`] masked, a volatile journal).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use bascule_rootfs::layout;

use crate::bench::boot::boot_after::{CRASH, CRASH_PATH, GRACE_MS, STUBBORN, STUBBORN_PATH};
use crate::bench::boot::{PROBE_MS, SLEEP_SERVICES};
use crate::bench::boot_images::{sleep_arg, BUSYBOX_MARKER, HEARTBEAT, READY_STAMPS};

/// The kernel parameter that makes Bascule's first stage start systemd.
pub const SYSTEMD_INIT_PARAM: &str = "init=/lib/systemd/systemd";

/// Marker of the line listing the units that failed by all-ready.
pub const FAILED_MARKER: &str = "BENCH-SYSTEMD-FAILED";

/// What a systemd user masks on a small appliance: settle and scrub jobs,
/// the random seed, package and maintenance timers, local gettys (the
/// console shell is the bench's own), logind, time sync, utmp, pstore and
/// the debug/config pseudo-filesystems nothing here uses. Units the root
/// does not have (man-db, logrotate) are masked too: harmless, and the
/// list reads as it would on a fuller image.
pub const TRIMMED_MASKS: &[&str] = &[
    "systemd-udev-settle.service",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "systemd-random-seed.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "man-db.timer",
    "logrotate.timer",
    "getty@tty1.service",
    "getty.target",
    "systemd-logind.service",
    "systemd-timesyncd.service",
    "systemd-update-utmp.service",
    "systemd-update-utmp-runlevel.service",
    "systemd-pstore.service",
    "systemd-journal-flush.service",
    "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount",
    "sys-kernel-config.mount",
    "sys-fs-fuse-connections.mount",
    "dev-hugepages.mount",
    "dev-mqueue.mount",
];

/// Whether a slot keeps Debian's defaults or is trimmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    Debian,
    Trimmed,
}

const MACHINE_ID: &str = "5ba5c0b1e0000000000000000000bec0\n";

/// STATE, EPHEMERAL and the ESP by GPT label (udev's by-partlabel links),
/// fsck'd (e2fsck -p) before mounting at every boot; /tmp a
/// tmpfs like the other systems'.
fn fstab() -> String {
    format!(
        "# cargo xtask bench: the mounts bascule-init makes\n\
         PARTLABEL={} {} ext4 noatime 0 2\n\
         PARTLABEL={} {} ext4 noatime 0 2\n\
         PARTLABEL={} {} vfat noatime 0 0\n\
         tmpfs /tmp tmpfs nosuid,nodev,mode=1777 0 0\n",
        layout::LABEL_STATE,
        layout::MOUNT_STATE,
        layout::LABEL_EPHEMERAL,
        layout::MOUNT_EPHEMERAL,
        layout::LABEL_ESP,
        layout::MOUNT_ESP,
    )
}

/// A long-running service, restarted like the other systems' respawn.
fn service(description: &str, exec: &str, extra: &str) -> String {
    format!(
        "[Unit]\nDescription={description}\n\n\
         [Service]\nExecStart={exec}\n{extra}Restart=always\n\n\
         [Install]\nWantedBy=multi-user.target\n"
    )
}

/// `(unit name, text)` of every benchmark service, the ready unit last.
pub fn units() -> Vec<(String, String)> {
    let mut v = Vec::new();
    let mut names = Vec::new();
    for i in 1..=SLEEP_SERVICES {
        let name = format!("bench-sleep-{i:02}.service");
        v.push((
            name.clone(),
            service(
                &format!("bench sleep {i}"),
                &format!("/bin/busybox sleep {}", sleep_arg(i)),
                "",
            ),
        ));
        names.push(name);
    }
    // Active once port 8080 accepts: the same 20 ms poller as busybox's.
    let probe = format!(
        "ExecStartPost=/bin/busybox sh -c 'until /bin/busybox nc 127.0.0.1 8080 </dev/null >/dev/null 2>&1; do /bin/busybox usleep {}; done'\n",
        PROBE_MS * 1000
    );
    v.push((
        "bench-httpd.service".into(),
        service(
            "bench httpd",
            "/bin/busybox httpd -f -p 8080 -h /srv/www",
            &probe,
        ),
    ));
    v.push((
        "bench-heartbeat.service".into(),
        service("bench heartbeat", "/etc/bench/heartbeat", ""),
    ));
    // An interactive shell ignores SIGTERM: stopped by a hangup, as
    // Bascule's console service is (else shutdown waits out 90 s).
    v.push((
        "bench-console.service".into(),
        service(
            "bench console shell on ttyS0",
            "/bin/sh -l",
            "StandardInput=tty\nStandardOutput=tty\nTTYPath=/dev/ttyS0\nTTYReset=yes\nTTYVHangup=yes\nKillSignal=SIGHUP\n",
        ),
    ));
    // Ignores SIGTERM: SIGKILL after the same grace as the other systems'.
    v.push((
        "bench-stubborn.service".into(),
        service(
            "bench service that ignores SIGTERM",
            STUBBORN_PATH,
            &format!("TimeoutStopSec={GRACE_MS}ms\n"),
        ),
    ));
    names.extend(
        [
            "bench-httpd.service",
            "bench-heartbeat.service",
            "bench-console.service",
            "bench-stubborn.service",
        ]
        .map(String::from),
    );
    let all = names.join(" ");
    v.push((
        "bench-ready.service".into(),
        format!(
            "[Unit]\nDescription=bench: every service started\nWants={all}\nAfter={all}\n\n\
             [Service]\nType=oneshot\nExecStart=/etc/bench/ready\n\n\
             [Install]\nWantedBy=multi-user.target\n"
        ),
    ));
    v
}

/// The crashing service: not wanted by any target, started by the bench
/// after the boot figures are read; zero delay and no start limit.
pub fn crash_unit() -> String {
    format!(
        "[Unit]\nDescription=bench: exits at once, restarted at zero delay\nStartLimitIntervalSec=0\n\n\
         [Service]\nExecStart={CRASH_PATH}\nRestart=always\nRestartSec=0\n"
    )
}

/// Prints the marker line in the busybox reference's format: the first
/// stage's stamps (µs), PID 1's start and local-fs.target reached (s, from
/// systemd's own µs records: the first stage's exec of systemd, and the
/// moment every fstab mount was done), its own /proc/uptime stamp, the
/// modules, and PID 1's CPU ticks, read before systemctl asks PID 1.
/// Then the failed units, and whether PID 1 holds the watchdog, on a line
/// of their own.
fn ready_script() -> String {
    format!(
        r#"#!/bin/sh
{READY_STAMPS}sec() {{ printf '%d.%06d' $(($1 / 1000000)) $(($1 % 1000000)); }}
t3=$(sec "$(systemctl show -P UserspaceTimestampMonotonic)")
t4=$(sec "$(systemctl show -P ActiveEnterTimestampMonotonic local-fs.target)")
echo "{BUSYBOX_MARKER} $t0 $t1 $t2 $t3 $t4 $t5 $n $cpu" > /dev/console
failed=$(systemctl --failed --no-legend --plain | tr '\n' ' ')
# The first stage's watchdog fd closed at exec (CLOEXEC): a held one is systemd's.
ls -l /proc/1/fd | grep -q /dev/watchdog || failed="$failed watchdog-not-held-by-PID-1"
echo "{FAILED_MARKER} $failed" > /dev/console
"#
    )
}

fn put(root: &Path, path: &str, text: &str, mode: u32) -> Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    // Never write through a link into another file of the tree.
    if p.symlink_metadata().is_ok() {
        std::fs::remove_file(&p).with_context(|| format!("replacing {}", p.display()))?;
    }
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", p.display()))
}

fn link(root: &Path, path: &str, target: &str) -> Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if p.symlink_metadata().is_ok() {
        std::fs::remove_file(&p).with_context(|| format!("replacing {}", p.display()))?;
    }
    symlink(target, &p).with_context(|| format!("linking {}", p.display()))
}

/// Copies the Debian root to `dest` and makes it the benchmark's slot.
pub fn slot_tree(debian: &Path, dest: &Path, variant: Variant) -> Result<()> {
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let st = Command::new("cp")
        .arg("-a")
        .arg(debian)
        .arg(dest)
        .status()
        .context("running cp")?;
    if !st.success() {
        bail!("copying {} to {}", debian.display(), dest.display());
    }
    put(dest, "/etc/hostname", "bascule\n", 0o644)?;
    // A deployed image's id: an empty one would make every boot a first boot.
    put(dest, "/etc/machine-id", MACHINE_ID, 0o444)?;
    put(dest, "/etc/fstab", &fstab(), 0o644)?;
    // The first stage armed the i6300esb (30 s): PID 1 feeds it, as the
    // other systems' do.
    put(
        dest,
        "/etc/systemd/system.conf.d/bench-watchdog.conf",
        "[Manager]\nRuntimeWatchdogSec=30s\n",
        0o644,
    )?;
    put(dest, "/etc/bench/heartbeat", HEARTBEAT, 0o755)?;
    put(dest, "/etc/bench/ready", &ready_script(), 0o755)?;
    put(dest, STUBBORN_PATH, STUBBORN, 0o755)?;
    put(dest, CRASH_PATH, CRASH, 0o755)?;
    put(
        dest,
        "/etc/systemd/system/bench-crash.service",
        &crash_unit(),
        0o644,
    )?;
    for (name, text) in units() {
        put(dest, &format!("/etc/systemd/system/{name}"), &text, 0o644)?;
        link(
            dest,
            &format!("/etc/systemd/system/multi-user.target.wants/{name}"),
            &format!("../{name}"),
        )?;
    }
    // The console shell takes ttyS0: no login prompt (console=ttyS0 would
    // start one) in either variant.
    let mut masks = vec!["serial-getty@ttyS0.service"];
    if variant == Variant::Trimmed {
        masks.extend(TRIMMED_MASKS);
        put(
            dest,
            "/etc/systemd/journald.conf.d/bench-volatile.conf",
            "[Journal]\nStorage=volatile\n",
            0o644,
        )?;
    }
    for m in masks {
        link(dest, &format!("/etc/systemd/system/{m}"), "/dev/null")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_match_the_other_systems() {
        let u = units();
        assert_eq!(u.len(), SLEEP_SERVICES + 5);
        assert!(u.iter().any(|(_, t)| t.contains("TimeoutStopSec=1000ms")));
        assert!(!u.iter().any(|(n, _)| n.contains("crash")));
        assert!(crash_unit().contains("RestartSec=0\n"));
        for i in 1..=SLEEP_SERVICES {
            let arg = format!("/bin/busybox sleep {}\n", sleep_arg(i));
            assert_eq!(u.iter().filter(|(_, t)| t.contains(&arg)).count(), 1);
        }
        let (name, ready) = u.last().unwrap();
        assert_eq!(name, "bench-ready.service");
        for (n, _) in &u[..u.len() - 1] {
            assert!(ready.contains(&format!(" {n}")) || ready.contains(&format!("={n}")));
        }
        assert!(ready_script().contains(&format!("echo \"{BUSYBOX_MARKER} $t0")));
        assert!(fstab().contains("PARTLABEL=EPHEMERAL /var ext4"));
    }

    #[test]
    fn trimmed_tree_masks_and_keeps_journald() {
        let dir = tempfile::tempdir().unwrap();
        let debian = dir.path().join("debian");
        std::fs::create_dir_all(debian.join("etc")).unwrap();
        std::fs::write(debian.join("etc/fstab"), "# UNCONFIGURED FSTAB\n").unwrap();
        let dest = dir.path().join("slot");
        slot_tree(&debian, &dest, Variant::Trimmed).unwrap();
        let sys = dest.join("etc/systemd/system");
        assert_eq!(
            std::fs::read_link(sys.join("e2scrub_all.timer")).unwrap(),
            Path::new("/dev/null")
        );
        assert!(!TRIMMED_MASKS.iter().any(|m| m.contains("journald")));
        assert!(sys
            .join("multi-user.target.wants/bench-httpd.service")
            .symlink_metadata()
            .is_ok());
        // The cached tree is not written through.
        assert_eq!(
            std::fs::read_to_string(debian.join("etc/fstab")).unwrap(),
            "# UNCONFIGURED FSTAB\n"
        );
        slot_tree(&debian, &dest, Variant::Debian).unwrap();
        assert!(sys
            .join("serial-getty@ttyS0.service")
            .symlink_metadata()
            .is_ok());
        assert!(sys.join("e2scrub_all.timer").symlink_metadata().is_err());
    }
}
