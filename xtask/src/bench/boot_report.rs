//! The boot section of docs/benchmarks.md: the boot and memory figures
//! against busybox init and systemd, where the time goes, and how it was
//! measured.

use super::boot::boot_after::{CRASH, CRASH_WINDOW, GRACE_MS, STUBBORN};
use super::boot::systemd_units::TRIMMED_MASKS;
use super::boot::{Boot, Figures, Which, PHASES, PROBE_MS, SETTLE, SLEEP_SERVICES};

/// `median (min–max)` of `f` over the boots of `which`.
fn spread(fig: &Figures, which: Which, f: &dyn Fn(&Boot) -> f64, digits: usize) -> String {
    let (lo, hi) = fig.range_of(which, f);
    format!(
        "{:.*} ({:.*}–{:.*})",
        digits,
        fig.median_of(which, f),
        digits,
        lo,
        digits,
        hi
    )
}

/// One row of the boot table: label, the figure, the goal's text, decimals,
/// the goal as ratios to busybox init and to systemd (either variant).
type Row<'a> = (
    &'a str,
    &'a dyn Fn(&Boot) -> f64,
    &'a str,
    usize,
    Option<(f64, f64)>,
);

/// The references Bascule is compared with, in column order.
const REFERENCES: [Which; 3] = [Which::Busybox, Which::Systemd, Which::SystemdTrimmed];

/// One row of a four-system table: each system's median and spread,
/// Bascule's ratio to each reference, the target and `verdict` of those
/// ratios.
fn table_row(
    fig: &Figures,
    name: &str,
    f: &dyn Fn(&Boot) -> f64,
    target: &str,
    digits: usize,
    verdict: impl Fn([f64; 3]) -> String,
) -> String {
    let q = REFERENCES.map(|r| fig.median_of(Which::Bascule, f) / fig.median_of(r, f));
    let figures: Vec<String> = Which::ALL
        .iter()
        .map(|w| spread(fig, *w, f, digits))
        .collect();
    format!(
        "| {name} | {} | {:.2}× | {:.2}× | {:.2}× | {target} | {} |\n",
        figures.join(" | "),
        q[0],
        q[1],
        q[2],
        verdict(q),
    )
}

/// "met" or "MISSED" for each reference and for all together; a ratio
/// that is not a number (a system without boots) is a miss.
fn verdicts(q: [f64; 3], busybox: f64, systemd: f64) -> String {
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let ok = [q[0] <= busybox, q[1] <= systemd, q[2] <= systemd];
    let detail: Vec<String> = ["busybox", "systemd", "trimmed"]
        .iter()
        .zip(ok)
        .map(|(n, o)| format!("{n} {}", verdict(o)))
        .collect();
    format!("{} ({})", verdict(ok.iter().all(|o| *o)), detail.join(", "))
}

/// A target against systemd only: Bascule's figure over systemd's (and
/// over trimmed's) at most (`Le`) or at least (`Ge`) the bound.
#[derive(Clone, Copy)]
enum Goal {
    Le(f64),
    Ge(f64),
}

/// "met" or "MISSED" against systemd and systemd trimmed; a ratio that is
/// not a number is a miss.
fn systemd_verdict(systemd: f64, trimmed: f64, goal: Goal) -> String {
    let holds = |q: f64| match goal {
        Goal::Le(b) => q <= b,
        Goal::Ge(b) => q >= b,
    };
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let (a, b) = (holds(systemd), holds(trimmed));
    format!(
        "{} (systemd {}, trimmed {})",
        verdict(a && b),
        verdict(a),
        verdict(b)
    )
}

/// The figures measured after boot: the crash loop and the shutdown.
fn after_boot(fig: &Figures) -> String {
    type AfterRow<'a> = (
        &'a str,
        &'a dyn Fn(&Boot) -> f64,
        &'a str,
        usize,
        Option<Goal>,
    );
    let rows: [AfterRow; 4] = [
        (
            "clean shutdown: poweroff request → QEMU exits, s (a service ignores SIGTERM)",
            &|x: &Boot| x.shutdown_s,
            "≤ 0.5× systemd",
            2,
            Some(Goal::Le(0.5)),
        ),
        (
            "crash loop at zero delay: restarts per second",
            &|x: &Boot| x.crash.per_s(),
            "≥ 2× systemd",
            1,
            Some(Goal::Ge(2.0)),
        ),
        (
            "crash loop: start-to-start interval p50, ms",
            &|x: &Boot| x.crash.p50_ms,
            "",
            1,
            None,
        ),
        (
            "crash loop: start-to-start interval p99, ms",
            &|x: &Boot| x.crash.p99_ms,
            "",
            1,
            None,
        ),
    ];
    let mut s = String::from(
        "\nMeasured in the same boots, after the memory read:\n\n\
| measure | Bascule | busybox init | systemd | systemd trimmed | ÷ busybox | ÷ systemd | ÷ trimmed | target | |\n\
|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (name, f, target, digits, goal) in rows {
        s.push_str(&table_row(fig, name, f, target, digits, |q| {
            goal.map_or(String::new(), |g| systemd_verdict(q[1], q[2], g))
        }));
    }
    s.push_str(&format!(
        "\n- **Clean shutdown**: every image runs one more service, `{stubborn}` \
(a busybox sh script; its `sleep` children inherit the ignored SIGTERM, since SIG_IGN \
survives exec), so each system must wait out its grace and SIGKILL it. The grace is \
{GRACE_MS} ms everywhere: busybox 1.35 init's is fixed (`kill(-1, SIGTERM)`, `sleep(1)`, \
`kill(-1, SIGKILL)`, then another fixed 1 s pause before `reboot()`), Bascule's is \
`[stop] grace_ms = {GRACE_MS}` in that service's file, systemd's `TimeoutStopSec={GRACE_MS}ms` \
on that unit. busybox's inittab runs `umount -a -r` at shutdown, as its example inittab \
does; systemd's console shell unit stops on SIGHUP (`KillSignal=SIGHUP`), as Bascule's \
console service does (an interactive shell ignores SIGTERM). The request is Bascule's API \
(`Power` poweroff over virtio-serial), busybox's `poweroff` and systemd's `systemctl \
poweroff`, typed into each console shell; the host times it from the write to QEMU's \
exit (a pidfd, polled every 5 ms), at the end of each boot.\n\
- **Crash loop**: once the memory is read, a service that exits at once is added: \
`{crash}` (its start stamped with busybox ash's `$EPOCHREALTIME`, µs, appended to a file \
in /run). Bascule: `restart = \"always\"`, `[backoff] initial_ms = 0, limit = 0`, added \
by binding a copy of /etc/bascule/services holding it over the directory and SIGHUP to \
PID 1 (Bascule rereads its services); systemd: `Restart=always`, `RestartSec=0`, \
`StartLimitIntervalSec=0`, `systemctl start`; busybox init: a `::respawn:` entry added \
the same way to a bound copy of /etc/inittab and SIGHUP (busybox init pauses 1 s after \
each round of reaping children — `sleep1()` in its main loop — so it respawns about once \
a second by design). After {w} s and a margin the service is removed again; the rate is \
the restarts within {w} s of its first start, counted from the stamps in the guest, the \
same way for every system; each PID 1's own count (Bascule's restarts over the API, \
systemd's `NRestarts`; busybox init keeps none) is kept in results.json next to the \
stamps as a cross-check. The intervals are start to next start (the script's exit, \
PID 1 noticing, fork and exec, the shell starting): the exit-to-running latency alone \
cannot be seen cleanly from inside the guest without tracing, so it is not given.\n",
        stubborn = STUBBORN.lines().skip(1).collect::<Vec<_>>().join("; "),
        crash = CRASH.lines().skip(1).collect::<Vec<_>>().join("; "),
        w = CRASH_WINDOW.as_secs(),
    ));
    s
}

/// The boot section of docs/benchmarks.md.
pub fn report(fig: &Figures) -> String {
    let boots = fig.bascule.len();
    let slot_ready = |x: &Boot| x.stamps[5] - x.stamps[3];
    let mib = |kb: u64| kb as f64 / 1024.0;
    let rows: [Row; 7] = [
        (
            "init's share: the slot's PID 1 starts → every service running, ms",
            &slot_ready,
            "≤ 1.2× busybox init, ≤ 0.1× systemd",
            0,
            Some((1.2, 0.1)),
        ),
        (
            "hand-over to the initramfs /init → every service running, ms (first stage shared)",
            &|x: &Boot| x.to_ready_ms(),
            "",
            0,
            None,
        ),
        (
            "PID 1 CPU time (utime + stime) when all is running, ms (10 ms steps)",
            &|x: &Boot| x.cpu_ms,
            "",
            0,
            None,
        ),
        (
            "PID 1 Rss after boot, MiB",
            &|x: &Boot| mib(x.rss_kb),
            "≤ 2× busybox init, ≤ ¼ systemd",
            2,
            Some((2.0, 0.25)),
        ),
        (
            "PID 1 Pss after boot, MiB",
            &|x: &Boot| mib(x.pss_kb),
            "",
            2,
            None,
        ),
        (
            "PID 1 anonymous memory after boot, MiB",
            &|x: &Boot| mib(x.anon_kb),
            "",
            2,
            None,
        ),
        (
            "whole system's used memory after boot (MemTotal − MemAvailable), MiB",
            &|x: &Boot| mib(x.used_kb),
            "",
            1,
            None,
        ),
    ];
    let mut s = format!(
        "\n## Boot\n\n\
Four images from the same Debian kernel ({kver}) and the same first stage (Bascule's \
initramfs), booted in turn under QEMU TCG, one VM at a time, each on a fresh copy of its \
disk, its default slot's kernel and initramfs started by QEMU (`-kernel`, `-initrd`, and the \
command line of the image's GRUB entry: every figure counts from the kernel's start, so \
SeaBIOS and GRUB reading the kernel through BIOS calls, about 4 s a boot under TCG, only \
lengthened the run): {warm}{boots} of each. Medians, \
with the lowest and highest boot in brackets; every sample is in \
[benchmarks/results.json](benchmarks/results.json). The ratios are Bascule's figure over \
each reference's; a target is met only if it holds against busybox init, systemd and \
systemd trimmed alike.\n\n\
| measure | Bascule | busybox init | systemd | systemd trimmed | ÷ busybox | ÷ systemd | ÷ trimmed | target | |\n\
|---|---|---|---|---|---|---|---|---|---|\n",
        kver = fig.kernel_version,
        warm = match fig.warmup {
            0 => String::new(),
            n => format!("{n} warm-up boot(s) of each (dropped), then "),
        },
    );
    for (name, f, target, digits, limit) in rows {
        s.push_str(&table_row(fig, name, f, target, digits, |q| {
            limit.map_or(String::new(), |(bb, sd)| verdicts(q, bb, sd))
        }));
    }
    s.push_str(&after_boot(fig));
    s.push_str("\n![Boot phases, medians](benchmarks/boot-phases.svg)\n\n");
    s.push_str(
        "Where the time goes (medians of each phase, ms; a phase ends at the named event; for \
busybox init the two stamps after switch_root are the first and last lines of its sysinit \
script, in 10 ms steps; for systemd they are systemd's own records in µs: its start, and \
local-fs.target reached, that is every fstab mount done once udev has found the \
partitions):\n\n",
    );
    let cols = |f: &dyn Fn(Which) -> String| -> String {
        Which::ALL
            .iter()
            .map(|w| f(*w))
            .collect::<Vec<_>>()
            .join(" | ")
    };
    s.push_str(&format!(
        "| phase | {} |\n|---|---|---|---|---|\n",
        cols(&|w| w.name().to_owned())
    ));
    s.push_str(&format!(
        "| kernel start → {} (not init's share) | {} |\n",
        PHASES[0],
        cols(&|w| format!("{:.0}", fig.phase_ms(w, 0)))
    ));
    for (i, name) in PHASES.iter().enumerate().skip(1) {
        let name = match (i, fig.bascule.first()) {
            (1, Some(first)) => format!("{name} ({} modules)", first.modules),
            _ => name.to_string(),
        };
        s.push_str(&format!(
            "| → {name} | {} |\n",
            cols(&|w| format!("{:.0}", fig.phase_ms(w, i)))
        ));
    }
    s.push_str(&format!(
        "| QEMU start → all-ready seen on the host (wall clock, s) | {} |\n\n",
        cols(&|w| format!("{:.1}", fig.wall_s(w)))
    ));
    s.push_str(&format!(
        "QEMU command line of every VM (`$VM` is its temporary directory):\n\n```\n{}\n```\n\n",
        fig.qemu_args
    ));
    s.push_str(&format!(
        "Method. All images carry the same kernel, modules, initramfs (bascule-init's first \
stage: proc/sys/dev/run, the modules of /etc/bascule/modules.load, the watchdog armed, the \
slot found by its PARTUUID and label, its squashfs mounted, switch_root), slot squashfs \
contents and kernel command line (`bascule.slot=A … console=ttyS0 quiet panic=10`), except \
that busybox's adds `init=/sbin/init`, which the first stage honours as initramfs-tools \
does, and its slot's /sbin/init is busybox; systemd's add `init=/lib/systemd/systemd` and \
their slots also hold Debian 12's packages. All run the same {n} services: the image's \
examples (console shell on ttyS0, `busybox httpd -f -p 8080`, the heartbeat loop) and \
{sleeps} `busybox sleep` services with distinct arguments (busybox init merges identical \
respawn lines).\n\n\
- **Bascule**: the real image. httpd's TCP readiness probe is set to `interval_ms = {p}` \
(the example's default is 100 ms) to match the reference's polling; the heartbeat keeps its \
health check. Stamps are read from the boot timeline over the API (virtio-serial), \
microseconds of CLOCK_BOOTTIME: the slot's PID 1 start is `init start`, all running is \
`all services ready`. The host waits for that line on the console before it talks to the \
API, so the API adds nothing to the boot; it then checks over the API that every service \
is running, and reads PID 1's CPU time from /proc/1/stat through the console shell.\n\
- **busybox init**: its `sysinit` does what bascule-init does before starting services \
(devpts, /dev/shm, /tmp, cgroup2, hostname, `ip link set lo up`, STATE/EPHEMERAL ext4 and \
the ESP mounted, with `e2fsck -p` before each ext4 mount when the image has e2fsck, at \
every boot as a sysinit script or systemd-fsck does; bascule-init reads the superblock it \
already holds and runs `e2fsck -p` only when that says the filesystem has errors, was not \
cleanly unmounted or is due for a check, which is what `e2fsck -p` decides from the same \
fields, so on these clean boots it forks no e2fsck); its inittab feeds the watchdog the first stage armed (`busybox \
watchdog`, as Bascule's PID 1 does), runs the same services (console with \
`ttyS0::respawn:-/bin/sh`, httpd last), and a `once` entry polls port 8080 with `nc` every \
{p} ms and then prints the first stage's timeline (µs), its /proc/uptime stamps (10 ms \
steps) and PID 1's CPU ticks. The host then counts the `sleep` processes and httpd \
through the console shell.\n\
- **systemd** (Debian 12's {sdver}): the slot is `mmdebstrap --variant=minbase` with \
systemd, systemd-sysv, udev and systemd's Recommends (dbus, systemd-timesyncd), from the \
host's Debian mirror, without docs, man pages and locales, laid over the same slot \
contents. The services are unit files (`Restart=always`, wanted by multi-user.target): \
the sleeps, httpd with an `ExecStartPost` loop that probes 127.0.0.1:8080 with `nc` every \
{p} ms, the heartbeat script, and `/bin/sh` on ttyS0 (`StandardInput=tty`; \
serial-getty@ttyS0 masked: a login prompt is not a shell). STATE, EPHEMERAL and the ESP \
are fstab entries by `PARTLABEL=`, the ext4 ones with fsck pass 2 (e2fsck -p), found \
through udev's by-partlabel links; /tmp is a tmpfs; PID 1 feeds the watchdog \
(`RuntimeWatchdogSec=30s`); /etc/machine-id is fixed, as in a deployed image. A oneshot \
ordered after every service prints the busybox reference's marker line: its /proc/uptime \
stamp is all-ready, systemd's `UserspaceTimestampMonotonic` its PID 1 start and \
local-fs.target's `ActiveEnterTimestampMonotonic` the mounts; PID 1's CPU ticks are read \
before `systemctl` asks PID 1 for those. The host then counts the processes as for \
busybox; a boot with a failed unit, or whose PID 1 does not hold /dev/watchdog, fails the \
bench. **systemd** keeps Debian's defaults (udev coldplug, the journal flushed to /var, \
getty@tty1, logind, timesyncd, the timers); **systemd trimmed** masks what systemd users \
mask on a small system ({masked}) and keeps journald with a volatile journal.\n\
- **What \"running\" means**: for all, port 8080 accepts a connection on 127.0.0.1 and \
every other service has been started, and the bench fails unless every service is \
running afterwards. Bascule's share also pays for what it does and busybox init does not: \
reading the head of each ext4 partition and the META partition (boot-slot record), a \
cgroup and captured stdout/stderr per service, the API on the virtio-serial port, and two \
lines per service on the serial console. The references' pollers fork `nc` on the same \
single CPU while their init starts services; Bascule probes from inside PID 1.\n\
- **Noise**: the host is a shared 2-core machine and TCG timing moves with its load; boots \
alternate between the four images so that a change in load hits all.\n\
- **Memory**: {settle} s after all-ready, `awk` over /proc/1/smaps_rollup and \
/proc/meminfo typed into each VM's console shell through QEMU's serial socket (nothing was \
added to the product for this). Rss counts the pages of its executable that PID 1 has \
touched (Bascule and busybox are static binaries; systemd also maps its shared \
libraries, libsystemd-shared the largest) plus its anonymous memory (heap, stack).\n",
        n = fig.services,
        sleeps = SLEEP_SERVICES,
        p = PROBE_MS,
        settle = SETTLE.as_secs(),
        sdver = fig.systemd_version,
        masked = TRIMMED_MASKS
            .iter()
            .map(|m| format!("`{m}`"))
            .collect::<Vec<_>>()
            .join(", "),
    ));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_miss_against_any_reference_is_shown() {
        assert_eq!(
            verdicts([1.0, 0.05, 0.2], 1.2, 0.1),
            "MISSED (busybox met, systemd met, trimmed MISSED)"
        );
        assert!(verdicts([1.0, 0.05, 0.05], 1.2, 0.1).starts_with("met ("));
        assert!(verdicts([1.0, f64::NAN, 0.05], 1.2, 0.1).starts_with("MISSED"));
        assert!(systemd_verdict(3.0, f64::NAN, Goal::Ge(2.0)).starts_with("MISSED"));
        assert_eq!(
            systemd_verdict(0.4, 0.6, Goal::Le(0.5)),
            "MISSED (systemd met, trimmed MISSED)"
        );
    }

    /// One boot of each system: the report, the chart and the samples
    /// show all four.
    #[test]
    fn every_system_is_shown() {
        let boot = |scale: f64| Boot {
            stamps: [
                1000.0,
                1500.0,
                1600.0,
                1700.0,
                1800.0,
                1700.0 + 1000.0 * scale,
            ],
            modules: 23,
            wall_s: 10.0 * scale,
            cpu_ms: 100.0 * scale,
            comm: "x".into(),
            rss_kb: (1024.0 * scale) as u64,
            pss_kb: 1024,
            anon_kb: 512,
            used_kb: 100_000,
            crash: crate::bench::boot::boot_after::Crash {
                restarts: (500.0 / scale) as u64,
                p50_ms: 10.0 * scale,
                p99_ms: 20.0 * scale,
                max_ms: 30.0 * scale,
                starts_total: 600,
                own_counter: None,
            },
            shutdown_s: 1.0 + scale / 10.0,
        };
        let fig = Figures {
            bascule: vec![boot(1.0)],
            busybox: vec![boot(1.0)],
            systemd: vec![boot(20.0)],
            systemd_trimmed: vec![boot(8.0)],
            kernel_version: "6.1".into(),
            qemu_args: "qemu".into(),
            services: 23,
            systemd_version: "252".into(),
            warmup: 0,
        };
        let r = report(&fig);
        assert!(r.contains("| 0.05× | 0.12× |"), "{r}");
        assert!(
            r.contains("MISSED (busybox met, systemd met, trimmed MISSED)"),
            "{r}"
        );
        assert!(r.contains("| phase | Bascule | busybox init | systemd | systemd trimmed |"));
        // Shutdown 1.1 s against 3.0 and 1.8: trimmed misses ≤ 0.5×.
        assert!(
            r.contains("| ≤ 0.5× systemd | MISSED (systemd met, trimmed MISSED) |"),
            "{r}"
        );
        // 100/s against 5/s and 12.4/s: ≥ 2× holds against both.
        assert!(
            r.contains("| ≥ 2× systemd | met (systemd met, trimmed met) |"),
            "{r}"
        );
        let svg = crate::bench::charts::boot_phases(&fig);
        assert!(svg.contains(">systemd trimmed</text>"), "{svg}");
        let json = crate::bench::results::boots(&fig);
        assert_eq!(json["systemd_trimmed"].as_array().map(Vec::len), Some(1));
        assert_eq!(json["systemd_version"], "252");
    }
}
