//! What the two benchmark images hold beyond the stock image: the
//! services both run, and the busybox reference's slot: busybox as
//! /sbin/init (started by Bascule's own first stage through `init=`), its
//! sysinit, inittab, watchdog feeder and readiness poller.

use std::path::Path;

use anyhow::{bail, Context, Result};
use bascule_rootfs::squashfs::{RootFile, EXAMPLE_SERVICES};

use super::boot::boot_after::{
    bascule_crash, bascule_stubborn, BASCULE_CRASH_TOML, CRASH, CRASH_PATH, STUBBORN, STUBBORN_PATH,
};
use super::boot::{PROBE_MS, SLEEP_SERVICES};

/// The example services (httpd probed every [`PROBE_MS`]) plus the sleeps.
pub fn bench_services() -> Result<Vec<(String, String)>> {
    bench_services_with(SLEEP_SERVICES)
}

/// As [`bench_services`] with `sleeps` sleep services (the scaling series).
pub fn bench_services_with(sleeps: usize) -> Result<Vec<(String, String)>> {
    let mut v = Vec::new();
    for (name, text) in EXAMPLE_SERVICES {
        let mut text = text.to_string();
        if *name == "httpd.toml" {
            let probe = "[readiness]\ntcp = 8080\n";
            if !text.contains(probe) {
                bail!("httpd.toml no longer has {probe:?}: update the benchmark");
            }
            text = text.replace(probe, &format!("{probe}interval_ms = {PROBE_MS}\n"));
        }
        v.push((name.to_string(), text));
    }
    for i in 1..=sleeps {
        v.push((
            format!("sleep-{i:02}.toml"),
            format!(
                "exec = [\"/bin/busybox\", \"sleep\", \"{}\"]\nclass = \"workload\"\nrestart = \"always\"\n",
                sleep_arg(i)
            ),
        ));
    }
    // Ignores SIGTERM: what the shutdown figure waits out.
    v.push(("bench-stubborn.toml".into(), bascule_stubborn()));
    Ok(v)
}

fn file(path: &str, contents: Vec<u8>, mode: u32) -> RootFile {
    RootFile {
        path: path.into(),
        contents,
        mode,
    }
}

/// The scripts of the shutdown and crash-loop figures, in every image.
pub fn after_scripts() -> Vec<RootFile> {
    vec![
        file(STUBBORN_PATH, STUBBORN.into(), 0o755),
        file(CRASH_PATH, CRASH.into(), 0o755),
    ]
}

/// What the Bascule image holds beyond its services: the scripts, and the
/// crashing service outside the service directory until it is measured.
pub fn bascule_root_files() -> Vec<RootFile> {
    let mut v = after_scripts();
    v.push(file(
        BASCULE_CRASH_TOML,
        bascule_crash().into_bytes(),
        0o644,
    ));
    v
}

/// Distinct arguments: busybox init merges identical respawn lines.
pub fn sleep_arg(i: usize) -> u32 {
    100_000 + i as u32
}

/// busybox init's sysinit: what bascule-init does between its start in
/// the slot and starting services.
const SYSINIT_TEMPLATE: &str = r#"#!/bin/sh
read t3 _ < /proc/uptime
mkdir -p /dev/pts /dev/shm
mount -t devpts -o nosuid,noexec,gid=5,mode=620,ptmxmode=000 devpts /dev/pts
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
hostname bascule
ip link set lo up
@FIND_PART@
# e2fsck -p before mounting ext4 at every boot, when the image has e2fsck.
check_mount() {
  find_part "$1" || return 1
  if [ "$3" = ext4 ] && [ -x /sbin/e2fsck ]; then /sbin/e2fsck -p "$found" </dev/null; fi
  mount -t "$3" -o noatime "$found" "$2"
}
check_mount STATE /system/state ext4
check_mount EPHEMERAL /var ext4
check_mount ESP /boot vfat
read t4 _ < /proc/uptime
echo "$t3 $t4" > /run/bench-sysinit
"#;

/// The busybox heartbeat service: the loop of heartbeat.toml.
pub const HEARTBEAT: &str = "#!/bin/sh\nwhile true; do date > /run/heartbeat; sleep 1; done\n";

/// Marker of the reference's all-ready line.
pub const BUSYBOX_MARKER: &str = "BENCH-BOOT";

/// The kernel parameter that makes Bascule's first stage start busybox
/// init in the slot.
pub const BUSYBOX_INIT_PARAM: &str = "init=/sbin/init";

/// Polls port 8080, then prints the marker line: the first stage's stamps
/// (µs, from the timeline bascule-init's initramfs stage leaves in /run),
/// sysinit's and its own (s, /proc/uptime), the modules loaded, and PID
/// 1's utime + stime (clock ticks) at that moment.
fn ready_script() -> String {
    format!(
        r#"#!/bin/sh
until nc 127.0.0.1 8080 </dev/null >/dev/null 2>&1; do usleep {us}; done
{READY_STAMPS}read t3 t4 < /run/bench-sysinit
echo "{BUSYBOX_MARKER} $t0 $t1 $t2 $t3 $t4 $t5 $n $cpu"
"#,
        us = PROBE_MS * 1000
    )
}

/// Shell lines every reference's ready script starts with: its own
/// /proc/uptime stamp (`t5`), PID 1's CPU ticks (`cpu`), and the first
/// stage's stamps (`t0`..`t2`, µs) and module count (`n`) from the
/// timeline bascule-init's initramfs stage leaves in /run.
pub const READY_STAMPS: &str = r#"read t5 _ < /proc/uptime
read -r stat < /proc/1/stat
set -- ${stat##*) }
cpu=$(( ${12} + ${13} ))
while read -r us name; do
  case "$name" in
    "initramfs start") t0=$us ;;
    "modules loaded"*) t1=$us; n=${name#*(}; n=${n%)} ;;
    "root mounted"*) t2=$us ;;
  esac
done < /run/bascule/boot-timeline
"#;

fn inittab(sleeps: usize) -> String {
    let mut s = String::from(
        "# cargo xtask bench reference: the Bascule image's services under busybox init.\n\
         ::sysinit:/etc/bench/sysinit\n\
         ::respawn:/bin/busybox watchdog -F -t 5 -T 30 /dev/watchdog0\n\
         ::once:/etc/bench/ready\n\
         ttyS0::respawn:-/bin/sh\n\
         ::respawn:/etc/bench/heartbeat\n\
         ::respawn:/etc/bench/stubborn\n\
         ::shutdown:/bin/umount -a -r\n",
    );
    for i in 1..=sleeps {
        s.push_str(&format!("::respawn:/bin/busybox sleep {}\n", sleep_arg(i)));
    }
    // Last: once it listens, every other service has been started.
    s.push_str("::respawn:/bin/busybox httpd -f -p 8080 -h /srv/www\n");
    s
}

/// /sbin/init = busybox (so /proc/1/comm is "init"), its inittab and scripts.
pub fn busybox_root_files(busybox: &Path) -> Result<Vec<RootFile>> {
    busybox_root_files_with(busybox, SLEEP_SERVICES)
}

/// As [`busybox_root_files`] with `sleeps` sleep services (the scaling
/// series).
pub fn busybox_root_files_with(busybox: &Path, sleeps: usize) -> Result<Vec<RootFile>> {
    let mut v = vec![
        file(
            "/sbin/init",
            std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?,
            0o755,
        ),
        file("/etc/inittab", inittab(sleeps).into_bytes(), 0o644),
        file("/etc/bench/sysinit", sysinit().into_bytes(), 0o755),
        file("/etc/bench/ready", ready_script().into_bytes(), 0o755),
        file("/etc/bench/heartbeat", HEARTBEAT.into(), 0o755),
    ];
    v.extend(after_scripts());
    Ok(v)
}

/// The reference's sysinit finds partitions by GPT label, as bascule-init does.
const FIND_PART: &str = r#"find_part() {
  for u in /sys/class/block/*/uevent; do
    name=; part=
    while IFS='=' read -r k v; do
      case "$k" in DEVNAME) name=$v ;; PARTNAME) part=$v ;; esac
    done < "$u"
    if [ "$part" = "$1" ]; then found=/dev/$name; return 0; fi
  done
  return 1
}"#;

/// busybox init's sysinit script.
fn sysinit() -> String {
    SYSINIT_TEMPLATE.replace("@FIND_PART@", FIND_PART)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_match_between_images() {
        let svc = bench_services().unwrap();
        assert_eq!(svc.len(), EXAMPLE_SERVICES.len() + SLEEP_SERVICES + 1);
        let httpd = &svc.iter().find(|(n, _)| n == "httpd.toml").unwrap().1;
        assert!(
            httpd.contains(&format!("interval_ms = {PROBE_MS}")),
            "{httpd}"
        );
        let tab = inittab(SLEEP_SERVICES);
        for i in 1..=SLEEP_SERVICES {
            let arg = sleep_arg(i).to_string();
            assert!(tab.contains(&format!("sleep {arg}\n")));
            assert!(svc.iter().any(|(_, t)| t.contains(&format!("\"{arg}\""))));
        }
        assert_eq!(tab.matches("::respawn:").count(), 4 + SLEEP_SERVICES + 1);
        assert!(tab.contains("::respawn:/etc/bench/stubborn\n"));
        assert!(!tab.contains("crash"), "added only after the boot figures");
        assert!(tab.trim_end().ends_with("httpd -f -p 8080 -h /srv/www"));
        assert!(ready_script().contains(&format!("usleep {}", PROBE_MS * 1000)));
    }
}
