//! The boot section of docs/benchmarks.md: the boot and memory figures
//! against busybox init, where the time goes, and how it was measured.

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
/// the goal as a ratio to busybox.
type Row<'a> = (
    &'a str,
    &'a dyn Fn(&Boot) -> f64,
    &'a str,
    usize,
    Option<f64>,
);

/// The boot section of docs/benchmarks.md.
pub fn report(fig: &Figures) -> String {
    let (b, r) = (Which::Bascule, Which::Busybox);
    let boots = fig.bascule.len();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let slot_ready = |x: &Boot| x.stamps[5] - x.stamps[3];
    let mib = |kb: u64| kb as f64 / 1024.0;
    let ratio = |f: &dyn Fn(&Boot) -> f64| fig.median_of(b, f) / fig.median_of(r, f);
    let rows: [Row; 7] = [
        (
            "init's share: the slot's PID 1 starts → every service running, ms",
            &slot_ready,
            "≤ 1.2× busybox init",
            0,
            Some(1.2),
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
            "≤ 2× busybox init",
            2,
            Some(2.0),
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
Two images from the same Debian kernel ({kver}) and the same first stage (Bascule's \
initramfs), GRUB on SeaBIOS, booted in turn under QEMU TCG, one VM at a time, each on a \
fresh copy of its disk: {warm}{boots} of each. Medians, \
with the lowest and highest boot in brackets; every sample is in \
[benchmarks/results.json](benchmarks/results.json).\n\n\
| measure | Bascule | busybox init (same run) | ratio | target | |\n\
|---|---|---|---|---|---|\n",
        kver = fig.kernel_version,
        warm = match fig.warmup {
            0 => String::new(),
            n => format!("{n} warm-up boot(s) of each (dropped), then "),
        },
    );
    for (name, f, target, digits, limit) in rows {
        let q = ratio(f);
        s.push_str(&format!(
            "| {name} | {} | {} | {q:.2}× | {target} | {} |\n",
            spread(fig, b, f, digits),
            spread(fig, r, f, digits),
            limit.map_or("", |l| verdict(q <= l)),
        ));
    }
    s.push_str("\n![Boot phases, medians](benchmarks/boot-phases.svg)\n\n");
    s.push_str(
        "Where the time goes (medians of each phase, ms; a phase ends at the named event; for \
busybox init the two stamps after switch_root are the first and last lines of its sysinit \
script, in 10 ms steps):\n\n",
    );
    s.push_str("| phase | Bascule | busybox init |\n|---|---|---|\n");
    s.push_str(&format!(
        "| kernel start → {} (not init's share) | {:.0} | {:.0} |\n",
        PHASES[0],
        fig.phase_ms(b, 0),
        fig.phase_ms(r, 0)
    ));
    for (i, name) in PHASES.iter().enumerate().skip(1) {
        let name = if i == 1 {
            format!("{name} ({} modules)", fig.bascule[0].modules)
        } else {
            name.to_string()
        };
        s.push_str(&format!(
            "| → {name} | {:.0} | {:.0} |\n",
            fig.phase_ms(b, i),
            fig.phase_ms(r, i)
        ));
    }
    s.push_str(&format!(
        "| QEMU start → all-ready seen on the host (wall clock, s) | {:.1} | {:.1} |\n\n",
        fig.wall_s(b),
        fig.wall_s(r)
    ));
    s.push_str(&format!(
        "QEMU command line of every VM (`$VM` is its temporary directory):\n\n```\n{}\n```\n\n",
        fig.qemu_args
    ));
    s.push_str(&format!(
        "Method. Both images carry the same kernel, modules, initramfs (bascule-init's first \
stage: proc/sys/dev/run, the modules of /etc/bascule/modules.load, the watchdog armed, the \
slot found by its PARTUUID and label, its squashfs mounted, switch_root), slot squashfs \
contents and kernel command line (`bascule.slot=A … console=ttyS0 quiet panic=10`), except \
that busybox's adds `init=/sbin/init`, which the first stage honours as initramfs-tools \
does, and its slot's /sbin/init is busybox. Both run the same {n} services: the image's \
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
the ESP mounted, with `e2fsck -p` before each ext4 mount when the image has e2fsck, as \
bascule-init does); its inittab feeds the watchdog the first stage armed (`busybox \
watchdog`, as Bascule's PID 1 does), runs the same services (console with \
`ttyS0::respawn:-/bin/sh`, httpd last), and a `once` entry polls port 8080 with `nc` every \
{p} ms and then prints the first stage's timeline (µs), its /proc/uptime stamps (10 ms \
steps) and PID 1's CPU ticks. The host then counts the `sleep` processes and httpd \
through the console shell.\n\
- **What \"running\" means**: for both, port 8080 accepts a connection on 127.0.0.1 and \
every other service has been started, and the bench fails unless every service is \
running afterwards. Bascule's share also pays for what it does and busybox init does not: \
reading the head of each ext4 partition and the META partition (boot-slot record), a \
cgroup and captured stdout/stderr per service, the API on the virtio-serial port, and two \
lines per service on the serial console. The reference's poller forks `nc` on the same \
single CPU while busybox init starts services; Bascule probes from inside PID 1.\n\
- **Noise**: the host is a shared 2-core machine and TCG timing moves with its load; boots \
alternate between the two images so that a change in load hits both.\n\
- **Memory**: {settle} s after all-ready, `awk` over /proc/1/smaps_rollup and \
/proc/meminfo typed into each VM's console shell through QEMU's serial socket (nothing was \
added to the product for this). Rss counts the pages of its executable that PID 1 has \
touched (both are static binaries) plus its anonymous memory (heap, stack).\n",
        n = fig.services,
        sleeps = SLEEP_SERVICES,
        p = PROBE_MS,
        settle = SETTLE.as_secs(),
    ));
    s
}
