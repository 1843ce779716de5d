//! The boot section of docs/benchmarks.md: the two boot figures against
//! busybox init, where the time goes, and how it was measured.

use super::boot::{Boot, Figures, Which, PHASES, PROBE_MS, SETTLE, SLEEP_SERVICES};

/// The boot section of docs/benchmarks.md.
pub fn report(fig: &Figures) -> String {
    let (b, r) = (Which::Bascule, Which::Busybox);
    let boots = fig.bascule.len();
    let ready = (fig.to_ready_ms(b), fig.to_ready_ms(r));
    let rss = (fig.rss_kb(b), fig.rss_kb(r));
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let list = |which: Which, f: &dyn Fn(&Boot) -> String| {
        fig.of(which).iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let mut s = format!(
        "\n## Boot\n\n\
Produced by the same `cargo xtask bench` run: two images from the same Debian kernel ({kver}), \
GRUB on SeaBIOS, each booted {boots} times in turn under QEMU TCG, one VM at a time, \
each on a fresh copy of its disk. Medians of the {boots} boots.\n\n\
| measure | Bascule | busybox init (same run) | ratio | target | |\n\
|---|---|---|---|---|---|\n\
| init's own share of boot-to-ready: hand-over to PID 1 → all {n} services ready | {b0:.0} ms | {r0:.0} ms | {q0:.2}× | within 10% of busybox init | {v0} |\n\
| PID 1 Rss after boot (`/proc/1/smaps_rollup`) | {b1:.2} MiB | {r1:.2} MiB | {q1:.2}× | < 4 MiB | {v1} |\n\n",
        kver = fig.kernel_version,
        n = fig.services,
        b0 = ready.0,
        r0 = ready.1,
        q0 = ready.0 / ready.1,
        v0 = verdict(ready.0 <= ready.1 * 1.10),
        b1 = rss.0 / 1024.0,
        r1 = rss.1 / 1024.0,
        q1 = rss.0 / rss.1,
        v1 = verdict(rss.0 < 4096.0),
    );
    s.push_str(
        "Where the time goes (medians of each phase, ms; a phase ends at the named event; for \
busybox init the two stamps after switch_root are the first and last lines of its sysinit \
script):\n\n",
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
            match (fig.bascule[0].modules, fig.busybox[0].modules) {
                (x, y) if x == y => format!("{name} ({x} modules)"),
                (x, y) => format!("{name} (Bascule {x} modules, busybox {y})"),
            }
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
    // Where the two inits differ most, computed from this run's phases.
    let mut diffs: Vec<(usize, f64)> = (1..PHASES.len())
        .map(|i| (i, fig.phase_ms(b, i) - fig.phase_ms(r, i)))
        .filter(|(_, d)| d.abs() >= 20.0)
        .collect();
    diffs.sort_by(|x, y| y.1.abs().total_cmp(&x.1.abs()));
    let (big, big_ms) = (1..PHASES.len())
        .map(|i| (i, fig.phase_ms(b, i)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap_or((1, 0.0));
    s.push_str(&format!(
        "Largest phase of Bascule's share: → {} ({big_ms:.0} of {:.0} ms). ",
        PHASES[big], ready.0
    ));
    if diffs.is_empty() {
        s.push_str("No phase differs from busybox init's by 20 ms or more.\n\n");
    } else {
        let text: Vec<String> = diffs
            .iter()
            .map(|(i, d)| format!("→ {} {d:+.0} ms", PHASES[*i]))
            .collect();
        s.push_str(&format!(
            "Phases where Bascule differs from busybox init by 20 ms or more: {}.\n\n",
            text.join("; ")
        ));
    }
    // The second stage alone: from the slot's PID 1 starting to all ready.
    let stage2 = |which: Which| {
        super::boot::median(
            fig.of(which)
                .iter()
                .map(|x| x.stamps[5] - x.stamps[3])
                .collect(),
        )
    };
    s.push_str(&format!(
        "Without the initramfs stage, from the slot's PID 1 starting to all services ready: \
{:.0} ms (Bascule) against {:.0} ms (busybox init), {:.2}×.\n\n",
        stage2(b),
        stage2(r),
        stage2(b) / stage2(r)
    ));
    s.push_str(&format!(
        "Every boot: hand-over → ready {} ms (Bascule), {} ms (busybox init); \
PID 1 Rss / Anonymous {} kB (Bascule, `{}`), {} kB (busybox, `{}`).\n\n",
        list(b, &|x| format!("{:.0}", x.to_ready_ms())),
        list(r, &|x| format!("{:.0}", x.to_ready_ms())),
        list(b, &|x| format!("{}/{}", x.rss_kb, x.anon_kb)),
        fig.bascule[0].comm,
        list(r, &|x| format!("{}/{}", x.rss_kb, x.anon_kb)),
        fig.busybox[0].comm,
    ));
    s.push_str(&format!(
        "QEMU command line of every VM (`$VM` is its temporary directory):\n\n```\n{}\n```\n\n",
        fig.qemu_args
    ));
    s.push_str(&format!(
        "Method. Both images carry the same kernel, modules, slot squashfs contents and kernel \
command line (`bascule.slot=A … console=ttyS0 quiet`), and the same {n} services: the \
image's examples (console shell on ttyS0, `busybox httpd -f -p 8080`, the heartbeat loop) \
and {sleeps} `busybox sleep` services with distinct arguments (busybox init merges identical \
respawn lines).\n\n\
- **Bascule**: the real image. httpd's TCP readiness probe is set to `interval_ms = {p}` \
(the example's default is 100 ms) to match the reference's polling; the heartbeat keeps its \
health check. Stamps are read from the boot timeline over the API (virtio-serial), \
microseconds of CLOCK_BOOTTIME: hand-over is `initramfs start` (the first thing \
bascule-init does as the initramfs /init), ready is `all services ready`. The host waits \
for that line on the console before it talks to the API, so the API adds nothing to the boot.\n\
- **busybox init**: the initramfs /init is a busybox script doing the same first stage \
(proc/sys/dev/run mounted, the same modules loaded from /etc/bascule/modules.load with \
`insmod`, SLOT-A found by PARTNAME in /sys/class/block/*/uevent, squashfs mounted, the API \
filesystems moved, `switch_root`, which also empties the initramfs). The slot's /sbin/init \
is busybox itself; its `sysinit` does what bascule-init does before starting services \
(devpts, /dev/shm, /tmp, cgroup2, hostname, `ip link set lo up`, STATE/EPHEMERAL ext4 and \
the ESP mounted, with `e2fsck -p` before each ext4 mount when the image has e2fsck, as \
bascule-init does); its inittab runs the same services (console with `ttyS0::respawn:-/bin/sh`, \
httpd last), and a `once` entry polls port 8080 with `nc` every {p} ms and then prints \
/proc/uptime stamps. /proc/uptime is CLOCK_BOOTTIME too, in 10 ms steps; the hand-over \
stamp is taken just after /proc is mounted, a few ms after the kernel runs /init, so \
the reference's share is, if anything, slightly understated.\n\
- **What \"ready\" means**: for both, port 8080 accepts a connection on 127.0.0.1 and every \
other service has been started. Bascule's share also pays for what it does and busybox \
init does not: reading the head of each ext4 partition and the META partition (boot-slot \
record), a cgroup and captured stdout/stderr per service, the API on the virtio-serial \
port, the armed watchdog, and two lines per service on the serial console. The reference's \
poller forks `nc` on the same single CPU while busybox init starts services; Bascule probes \
from inside PID 1.\n\
- **Noise**: the host is a shared 2-core machine and TCG timing moves with its load; boots \
alternate between the two images so that a change in load hits both.\n\
- **Memory**: {settle} s after all-ready, `awk` over /proc/1/smaps_rollup typed into each \
VM's console shell through QEMU's serial socket (nothing was added to the product for \
this). Rss counts the pages of its executable that PID 1 has touched (both are static \
binaries) plus its anonymous memory (heap, stack: the `Anonymous` figure above).\n",
        n = fig.services,
        sleeps = SLEEP_SERVICES,
        p = PROBE_MS,
        settle = SETTLE.as_secs(),
    ));
    s
}
