//! The boot figures of `cargo xtask bench`: init's own share of
//! boot-to-ready, and PID 1's resident memory after boot, for Bascule and
//! for busybox init and systemd on the same kernel, with the same
//! services, in the same run.
//!
//! Four images are built from the same kernel, modules and slot contents:
//! - **Bascule**: the real image, with the example services plus
//!   [`SLEEP_SERVICES`] `busybox sleep` services (and the httpd readiness
//!   probe at the reference's 20 ms polling interval).
//! - **busybox**: the initramfs /init is a busybox script doing the same
//!   early work as bascule-init's first stage (same modules from
//!   modules.load, SLOT-A found by PARTNAME in sysfs, squashfs mounted,
//!   switch_root); the slot's /sbin/init is busybox init, whose sysinit
//!   does what bascule-init does before starting services (API
//!   filesystems, hostname, loopback, STATE/EPHEMERAL/ESP mounted after
//!   `e2fsck -p` when the image has it) and
//!   whose inittab runs the same services. A `once` entry polls port 8080
//!   every 20 ms and prints a marker with /proc/uptime stamps.
//! - **systemd** and **systemd trimmed**: the same first stage hands over
//!   to Debian 12's systemd (`init=/lib/systemd/systemd`) in a slot built
//!   from Debian's packages ([`systemd_root`]), the same services as unit
//!   files, the mounts in fstab, and a oneshot after every service that
//!   prints the busybox reference's marker; trimmed masks what systemd
//!   users mask on a small system ([`systemd_units`]).
//!
//! Each image boots [`DEFAULT_BOOTS`] times (alternating, one VM at a
//! time, each on a fresh copy of its disk, the kernel started by QEMU, `-accel tcg
//! -smp 1 -m 1024`, bounded by [`BOOT_TIMEOUT`]). Bascule's stamps come
//! from its boot timeline over the API (CLOCK_BOOTTIME, µs); busybox's
//! from /proc/uptime (CLOCK_BOOTTIME, 10 ms steps). PID 1's Rss is read
//! from /proc/1/smaps_rollup by typing into the console shell of each VM,
//! [`SETTLE`] after all-ready. Then, in the same VM, a crash loop and a
//! clean shutdown are measured ([`boot_after`]).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bascule_api::pb;
use bascule_rootfs::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, SlotBuild,
};

use super::boot_guest::Guest;
use super::boot_images::{
    bascule_root_files, bench_services, busybox_root_files, BUSYBOX_INIT_PARAM, BUSYBOX_MARKER,
};

// Declared here, as the systemd modules below: bench.rs is not ours.
#[path = "boot_after.rs"]
pub mod boot_after;
use boot_after::Crash;

// Declared here, not in bench.rs: they belong to the boot figures.
#[path = "systemd_root.rs"]
mod systemd_root;
#[path = "systemd_units.rs"]
pub mod systemd_units;
use systemd_units::{Variant, SYSTEMD_INIT_PARAM};

/// Boots per image that count; one warm-up boot of each comes first and
/// is dropped.
pub const DEFAULT_BOOTS: usize = 10;
/// `busybox sleep` services added to the example services in both images.
pub const SLEEP_SERVICES: usize = 20;
/// Bound on one boot to all-ready (about 10 s under TCG).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// Time between all-ready and reading PID 1's memory.
pub const SETTLE: Duration = Duration::from_secs(2);
/// The readiness polling interval of port 8080, in both images.
pub const PROBE_MS: u64 = 20;
/// One clock tick of /proc/PID/stat (USER_HZ = 100), in ms.
pub const TICK_MS: f64 = 10.0;
/// Memory and CPUs of every VM.
pub const MEMORY_MIB: u32 = 1024;
pub const CPUS: u32 = 1;

/// The stamps of one boot, in ms since the kernel started
/// (CLOCK_BOOTTIME), in this order.
pub const PHASES: [&str; 6] = [
    "hand-over: /init starts",
    "modules loaded",
    "slot squashfs mounted",
    "PID 1 of the slot starts (after switch_root)",
    "API filesystems, loopback, STATE/EPHEMERAL/ESP mounted",
    "all services ready",
];

/// Bascule's timeline event for each of [`PHASES`] (by prefix).
const BASCULE_EVENTS: [&str; 6] = [
    "initramfs start",
    "modules loaded",
    "root mounted",
    "init start",
    "partitions mounted",
    "all services ready",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    Bascule,
    Busybox,
    Systemd,
    SystemdTrimmed,
}

impl Which {
    /// Every system, in the order they boot and are shown.
    pub const ALL: [Which; 4] = [
        Which::Bascule,
        Which::Busybox,
        Which::Systemd,
        Which::SystemdTrimmed,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Which::Bascule => "Bascule",
            Which::Busybox => "busybox init",
            Which::Systemd => "systemd",
            Which::SystemdTrimmed => "systemd trimmed",
        }
    }
    /// /proc/1/comm once all is running.
    pub fn comm(self) -> &'static str {
        match self {
            Which::Bascule => "bascule-init",
            Which::Busybox => "init",
            Which::Systemd | Which::SystemdTrimmed => "systemd",
        }
    }
}

/// One boot's figures.
#[derive(Clone, Debug)]
pub struct Boot {
    /// ms since kernel start, one per [`PHASES`].
    pub stamps: [f64; 6],
    /// Kernel modules loaded by the first stage.
    pub modules: u32,
    /// QEMU start to all-ready seen on the host (serial log), seconds.
    pub wall_s: f64,
    /// PID 1's utime + stime when all was ready, ms (10 ms steps).
    pub cpu_ms: f64,
    /// /proc/1/comm.
    pub comm: String,
    /// Rss, Pss and Anonymous of /proc/1/smaps_rollup, kB.
    pub rss_kb: u64,
    pub pss_kb: u64,
    pub anon_kb: u64,
    /// The whole system's used memory (MemTotal - MemAvailable), kB.
    pub used_kb: u64,
    /// The crash loop run after the memory read.
    pub crash: Crash,
    /// Poweroff request to QEMU's exit, s, with a service ignoring SIGTERM.
    pub shutdown_s: f64,
}

impl Boot {
    /// Init's own share: hand-over to all services ready, ms.
    pub fn to_ready_ms(&self) -> f64 {
        self.stamps[5] - self.stamps[0]
    }
}

pub struct Figures {
    pub bascule: Vec<Boot>,
    pub busybox: Vec<Boot>,
    pub systemd: Vec<Boot>,
    pub systemd_trimmed: Vec<Boot>,
    pub kernel_version: String,
    /// The QEMU arguments of a VM (its temporary directory shown as `$VM`).
    pub qemu_args: String,
    /// Services in each image.
    pub services: usize,
    /// Debian's version of the systemd package in the systemd images.
    pub systemd_version: String,
    /// Warm-up boots of each image, dropped.
    pub warmup: usize,
}

/// Median of a non-empty list.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Figures {
    pub fn of(&self, which: Which) -> &[Boot] {
        match which {
            Which::Bascule => &self.bascule,
            Which::Busybox => &self.busybox,
            Which::Systemd => &self.systemd,
            Which::SystemdTrimmed => &self.systemd_trimmed,
        }
    }
    fn of_mut(&mut self, which: Which) -> &mut Vec<Boot> {
        match which {
            Which::Bascule => &mut self.bascule,
            Which::Busybox => &mut self.busybox,
            Which::Systemd => &mut self.systemd,
            Which::SystemdTrimmed => &mut self.systemd_trimmed,
        }
    }
    pub fn rss_kb(&self, which: Which) -> f64 {
        self.median_of(which, |b| b.rss_kb as f64)
    }
    /// Median of `f` over the boots of `which`.
    pub fn median_of(&self, which: Which, f: impl Fn(&Boot) -> f64) -> f64 {
        median(self.of(which).iter().map(f).collect())
    }
    /// Min and max of `f` over the boots of `which`.
    pub fn range_of(&self, which: Which, f: impl Fn(&Boot) -> f64) -> (f64, f64) {
        self.of(which)
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            })
    }
    /// Slot PID 1 start to all ready, ms.
    pub fn slot_to_ready_ms(&self, which: Which) -> f64 {
        self.median_of(which, |b| b.stamps[5] - b.stamps[3])
    }
    /// Median length of phase `i` (from stamp i-1 to stamp i), ms; phase 0
    /// is kernel start to hand-over.
    pub fn phase_ms(&self, which: Which, i: usize) -> f64 {
        median(
            self.of(which)
                .iter()
                .map(|b| b.stamps[i] - if i == 0 { 0.0 } else { b.stamps[i - 1] })
                .collect(),
        )
    }
    pub fn wall_s(&self, which: Which) -> f64 {
        median(self.of(which).iter().map(|b| b.wall_s).collect())
    }
}

/// Builds the four images, boots each `warmup + boots` times, alternating,
/// and keeps the last `boots` of each.
pub fn run(boots: usize, warmup: usize) -> Result<Figures> {
    crate::deps::ensure(crate::deps::ALL)?;
    let root = crate::workspace_root();
    let scratch = tempfile::Builder::new()
        .prefix("bascule-bench-boot-")
        .tempdir()
        .context("creating a scratch directory")?;
    let bins = bascule_rootfs::cargo::build_static_binaries(&root)?;
    let services = bench_services()?;
    let slot = |initramfs_init| SlotBuild {
        version: "bench".into(),
        init: bins.init.clone(),
        cli: bins.cli.clone(),
        initramfs_init,
    };
    let spec = |which: Which, initramfs_init| {
        let mut s = ImageSpec::new(
            Bootloader::Grub,
            Firmware::Bios,
            slot(initramfs_init),
            &scratch.path().join(format!("{which:?}").to_lowercase()),
            &bascule_rootfs::image::default_cache_dir(&root),
        );
        s.services = services.clone();
        s
    };
    let mut bascule_spec = spec(Which::Bascule, InitramfsInit::SameAsRoot);
    bascule_spec.extra_root_files = bascule_root_files();
    let bascule_img = build_image(&bascule_spec).context("building the Bascule benchmark image")?;
    // The same first stage (Bascule's initramfs), handing over to busybox.
    let mut busybox_spec = spec(Which::Busybox, InitramfsInit::SameAsRoot);
    busybox_spec.extra_root_files = busybox_root_files(&busybox_spec.busybox)?;
    busybox_spec.extra_kernel_params = Some(BUSYBOX_INIT_PARAM.to_owned());
    let busybox_img = build_image(&busybox_spec).context("building the busybox benchmark image")?;
    // The same first stage again, handing over to Debian's systemd.
    let debian = systemd_root::debian_root(&bascule_rootfs::image::default_cache_dir(&root))?;
    let systemd_img = |which: Which, variant| -> Result<BuiltImage> {
        let tree = scratch
            .path()
            .join(format!("{which:?}-root").to_lowercase());
        systemd_units::slot_tree(&debian, &tree, variant)?;
        let mut s = spec(which, InitramfsInit::SameAsRoot);
        s.root_overlay = Some(tree.clone());
        s.extra_kernel_params = Some(SYSTEMD_INIT_PARAM.to_owned());
        let img = build_image(&s).with_context(|| format!("building the {} image", which.name()));
        // The staged copy is in the squashfs now.
        std::fs::remove_dir_all(&tree).ok();
        img
    };
    let systemd = systemd_img(Which::Systemd, Variant::Debian)?;
    let trimmed = systemd_img(Which::SystemdTrimmed, Variant::Trimmed)?;

    let mut fig = Figures {
        bascule: Vec::new(),
        busybox: Vec::new(),
        systemd: Vec::new(),
        systemd_trimmed: Vec::new(),
        kernel_version: bascule_img.kernel_version.clone(),
        qemu_args: String::new(),
        services: services.len(),
        systemd_version: systemd_root::package_version(&debian, "systemd"),
        warmup,
    };
    for i in 0..warmup + boots {
        for (which, img) in [
            (Which::Bascule, &bascule_img),
            (Which::Busybox, &busybox_img),
            (Which::Systemd, &systemd),
            (Which::SystemdTrimmed, &trimmed),
        ] {
            let (b, args) = boot_once(which, img, scratch.path(), services.len())
                .with_context(|| format!("{} boot {}", which.name(), i + 1))?;
            let what = if i < warmup {
                "warm-up, dropped".to_owned()
            } else {
                format!("{}/{boots}", i + 1 - warmup)
            };
            println!(
                "boot {what} {}: hand-over {:.0} ms after kernel start, ready {:.0} ms later (wall {:.1} s); PID 1 {} CPU {:.0} ms, Rss {} kB; crash loop {:.1} restarts/s (start-to-start p50 {:.1} / p99 {:.1} ms; {} starts stamped, PID 1 counted {:?} restarts); shutdown {:.2} s",
                which.name(),
                b.stamps[0],
                b.to_ready_ms(),
                b.wall_s,
                b.comm,
                b.cpu_ms,
                b.rss_kb,
                b.crash.per_s(),
                b.crash.p50_ms,
                b.crash.p99_ms,
                b.crash.starts_total,
                b.crash.own_counter,
                b.shutdown_s
            );
            fig.qemu_args = args;
            if i < warmup {
                continue;
            }
            fig.of_mut(which).push(b);
        }
    }
    Ok(fig)
}

fn boot_once(
    which: Which,
    img: &BuiltImage,
    scratch: &Path,
    services: usize,
) -> Result<(Boot, String)> {
    let (mut g, args) = Guest::start(img, scratch)?;
    let t = Instant::now();
    let Ready {
        stamps,
        modules,
        wall_s,
        cpu_ms,
    } = boot_to_ready(&mut g, which, t, services, SLEEP_SERVICES, BOOT_TIMEOUT)?;
    // Let the first round of health checks and restarts pass.
    std::thread::sleep(SETTLE);
    let m = g.pid1_memory()?;
    let want = which.comm();
    if m.comm != want {
        bail!("PID 1 is {:?}, not {want:?}", m.comm);
    }
    let crash = boot_after::crash_loop(&mut g, which).context("the crash loop")?;
    let shutdown_s = boot_after::shutdown(&mut g, which).context("the clean shutdown")?;
    drop(g);
    Ok((
        Boot {
            stamps,
            modules,
            wall_s,
            cpu_ms,
            comm: m.comm,
            rss_kb: m.rss_kb,
            pss_kb: m.pss_kb,
            anon_kb: m.anon_kb,
            used_kb: m.used_kb,
            crash,
            shutdown_s,
        },
        args,
    ))
}

/// What a boot gives up to all-ready.
pub struct Ready {
    /// ms since kernel start, one per [`PHASES`].
    pub stamps: [f64; 6],
    /// Kernel modules loaded by the first stage.
    pub modules: u32,
    /// `started` to all-ready seen on the host, s.
    pub wall_s: f64,
    /// PID 1's utime + stime when all was ready, ms (10 ms steps).
    pub cpu_ms: f64,
}

/// Waits (at most `limit`) for the guest started at `started` to have
/// every one of its `services` running (`sleeps` of them `busybox sleep`
/// services, for the references' count), and reads its stamps.
pub fn boot_to_ready(
    g: &mut Guest,
    which: Which,
    started: Instant,
    services: usize,
    sleeps: usize,
    limit: Duration,
) -> Result<Ready> {
    let t = started;
    let (stamps, modules, wall_s, cpu_ms) = match which {
        Which::Bascule => {
            g.wait(limit, "\"all services ready\" on the console", |g| {
                g.line_with("bascule-init: all services ready", 0)
            })?;
            let wall_s = t.elapsed().as_secs_f64();
            let events = g.timeline()?;
            if let Some(t0) = events.iter().find(|e| e.name == BASCULE_EVENTS[0]) {
                let line: Vec<String> = events
                    .iter()
                    .filter(|e| e.at_us >= t0.at_us)
                    // The other services start without a readiness check.
                    .filter(|e| !e.name.starts_with("service ") || e.name.contains("httpd"))
                    .map(|e| format!("+{:.0} {}", (e.at_us - t0.at_us) as f64 / 1e3, e.name))
                    .collect();
                println!(
                    "  Bascule timeline (ms after hand-over): {}",
                    line.join(", ")
                );
            }
            let mut stamps = [0f64; 6];
            for (i, name) in BASCULE_EVENTS.iter().enumerate() {
                let e = events
                    .iter()
                    .find(|e| e.name.starts_with(name))
                    .ok_or_else(|| anyhow!("no {name:?} in the boot timeline {events:?}"))?;
                stamps[i] = e.at_us as f64 / 1e3;
            }
            // "modules loaded (N)"
            let modules = events
                .iter()
                .find(|e| e.name.starts_with("modules loaded"))
                .and_then(|e| e.name.split(['(', ')']).nth(1)?.parse().ok())
                .unwrap_or(0);
            let cpu_ms = g.pid1_cpu_ms()?;
            let states = g.service_states()?;
            let down: Vec<String> = states
                .iter()
                .filter(|(_, s)| *s != pb::ServiceState::Running)
                .map(|(n, s)| format!("{n} {s:?}"))
                .collect();
            if states.len() != services || !down.is_empty() {
                bail!(
                    "not every service is running: {} listed, not running: {down:?}",
                    states.len()
                );
            }
            (stamps, modules, wall_s, cpu_ms)
        }
        Which::Busybox | Which::Systemd | Which::SystemdTrimmed => {
            let line = g.wait(limit, "the reference's ready marker", |g| {
                g.line_with(&format!("{BUSYBOX_MARKER} "), 0)
            })?;
            let wall_s = t.elapsed().as_secs_f64();
            let nums: Vec<f64> = line
                .split_whitespace()
                .skip(1)
                .map(|w| w.parse::<f64>())
                .collect::<Result<_, _>>()
                .map_err(|e| anyhow!("cannot parse {line:?}: {e}"))?;
            // Three stamps in µs (the first stage's), three in s
            // (/proc/uptime, or systemd's µs records as seconds), the
            // modules, PID 1's CPU ticks.
            if nums.len() != 8 {
                bail!("unexpected marker line {line:?}");
            }
            if matches!(which, Which::Systemd | Which::SystemdTrimmed) {
                // A reference that did not boot cleanly is not measured.
                let m = format!("{} ", systemd_units::FAILED_MARKER);
                let failed = g.wait(Duration::from_secs(30), "systemd's failed units", |g| {
                    g.line_with(&m, 0)
                })?;
                let failed = failed.trim_start_matches(m.trim_end()).trim();
                if !failed.is_empty() {
                    bail!("units failed in the {} boot: {failed}", which.name());
                }
            }
            let mut stamps = [0f64; 6];
            for (i, s) in stamps.iter_mut().enumerate() {
                *s = if i < 3 { nums[i] / 1e3 } else { nums[i] * 1e3 };
            }
            let counts = g.count_processes(&[
                SLEEP_PATTERN,
                "^/bin/busybox http[d] ",
                "/etc/bench/heartbea[t]",
                "/etc/bench/stubbor[n]",
            ])?;
            if counts != [sleeps, 1, 1, 1] {
                bail!(
                    "not every service is running: sleeps, httpd, heartbeat, stubborn = {counts:?}"
                );
            }
            (stamps, nums[6] as u32, wall_s, nums[7] * TICK_MS)
        }
    };
    Ok(Ready {
        stamps,
        modules,
        wall_s,
        cpu_ms,
    })
}

/// The command lines of the sleep services (`busybox grep` regex): their
/// arguments have six digits (`sleep_arg`), the stubborn service's
/// `sleep 1` has one.
const SLEEP_PATTERN: &str = "^/bin/busybox sleep 1[0-9][0-9][0-9][0-9][0-9]";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
