//! The upgrade figures as docs/benchmarks.md and results.json show them.

use super::upgrade::{Downtime, Figures, Round};

/// The upgrade section of docs/benchmarks.md.
pub fn report(fig: &Figures) -> String {
    let m = |f: &dyn Fn(&Round) -> f64| fig.median_of(f);
    let (kexec, firmware, prepared, bare) = (
        m(&|r| r.kexec.total_s),
        m(&|r| r.firmware.total_s),
        m(&|r| r.prepared.total_s),
        m(&|r| r.bare_kexec.total_s),
    );
    let (install, dd) = (fig.install_mb_s(), fig.dd_mb_s());
    let hwm = m(&|r| r.hwm_after_kb as f64) / 1024.0;
    let large_hwm = fig.large.hwm_after_kb as f64 / 1024.0;
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    let all =
        |f: &dyn Fn(&Round) -> String| fig.rounds.iter().map(f).collect::<Vec<_>>().join(", ");
    let parts = |name: &str, d: &dyn Fn(&Round) -> Downtime| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} |\n",
            m(&|r| d(r).before_jump_s),
            m(&|r| d(r).jump_s),
            m(&|r| d(r).boot_s),
            m(&|r| d(r).total_s),
        )
    };
    let breakdown = [
        parts("kexec upgrade (streamed bundle)", &|r| r.kexec),
        parts("firmware reboot upgrade (streamed bundle)", &|r| r.firmware),
        parts("applied prepared upgrade (kexec)", &|r| r.prepared),
        parts("bare `kexec -e`", &|r| r.bare_kexec),
    ]
    .concat();
    format!(
        "## Upgrade\n\n\
Produced by the same run: one VM per round ({n} rounds), the stock image (GRUB on SeaBIOS, kernel {kernel}) \
with Debian's `kexec` added to its slot; every upgrade with `--preserve`. Medians over the rounds.\n\n\
| measure | Bascule | reference (same VM) | ratio | target | |\n\
|---|---|---|---|---|---|\n\
| downtime, kexec upgrade (last workload stopped → new slot all ready) | {kexec:.2} s | {bare:.2} s (bare `kexec -e`) | {r1:.2}× | ≤ 1.2× bare kexec | {v1} |\n\
| downtime, kexec against firmware reboot | {kexec:.2} s | {firmware:.2} s (firmware reboot upgrade) | {r2:.2}× | ≤ 0.65× firmware | {v2} |\n\
| downtime, applied prepared upgrade (kexec) | {prepared:.2} s | {bare:.2} s (bare `kexec -e`) | {r3:.2}× | ≤ 1.2× bare kexec | {v3} |\n\
| install throughput (`--prepare`, {mib:.0} MiB rootfs, journal's install phase) | {install:.1} MB/s | {dd:.0} MB/s (`dd bs=4M oflag=direct`) | {r4:.2}× | ≥ 0.9× dd | {v4} |\n\
| PID 1 peak memory (VmHWM) after installing {mib:.0} MiB | {hwm:.1} MiB | | | < 32 MiB | {v5} |\n\
| PID 1 peak memory (VmHWM) after installing {large_mib:.0} MiB (own VM, slot B grown) | {large_hwm:.1} MiB | | | < 32 MiB | {v6} |\n\
| install throughput at {large_mib:.0} MiB (same VM) | {large_mbs:.1} MB/s | | | | |\n\n\
Where the downtime goes (medians, s): until the old system's last line before the jump \
(services, unmounts, install, the try recorded, the kexec load), the jump (kexec, or firmware and \
GRUB, then the new kernel until its initramfs prints its first line), and the new system's boot to \
all services ready.\n\n\
| downtime | before the jump | jump and kernel | initramfs → all ready | total |\n\
|---|---|---|---|---|\n\
{breakdown}\n\
Downtime is seen from the host on the serial console: from the sequencer's line `upgrade: drain: done` \
(every workload service stopped) to the new slot's `all services ready`, each line stamped when the \
host first sees it (polled every 20 ms). The streamed upgrades verify the bundle before the drain and \
write it after (the contract's order: the install runs on unmounted filesystems); a prepared upgrade \
wrote its slot while everything ran and loads its kernel for kexec before the drain, so its downtime \
has neither. The bare `kexec -e` is typed into the console shell after `kexec -s -l` of the running \
slot's kernel and initramfs with the same command line, timed from the line printed right before the \
jump; it stops and unmounts nothing (its next boot replays the ext4 journals). Under TCG the jump and \
the kernel's boot move by several seconds from one boot to the next with the host's load, which is \
why each figure is a median of rounds in one VM each.\n\n\
The install figure is the journal's install phase of a bundle already in the guest's tmpfs (copied \
from a second, read-only virtual disk, so no transfer is timed), whose rootfs is the real slot padded \
with random bytes. That phase reads each payload from the bundle (lengths checked, the digest left to \
the read-back), writes it, reads it back and computes its SHA-256 against the signed manifest: a \
digest of every byte on one emulated CPU without SHA extensions (`-cpu qemu64`; the verify pass before \
it, not timed here, hashes the bundle once more), which bounds it far below `dd`, which writes \
the same bytes from tmpfs to the same partition without checking anything (timed with /proc/uptime, \
10 ms steps).\n\n\
The full-size install runs in one more VM (3 GiB of memory, for the bundle in its tmpfs): the stock \
slots are 128 MiB, so that VM's disk is a copy of the same image with slot B moved to a {large_slot} MiB \
region appended to the disk (same GPT entry number, label, type and GUID; both GPT copies rewritten, \
GRUB's boot code kept). Its bundle's rootfs is the slot padded with random bytes to {large_mib:.0} MiB, \
prepared with `upgrade --prepare` as above; VmHWM of PID 1 is read before ({large_before} kB) and after \
({large_after} kB, Rss {large_rss} kB). The install copies through fixed 4 MiB buffers, so its peak does \
not grow with the image.\n\n\
Every round: kexec {k_all} s; firmware {f_all} s; prepared {p_all} s; bare kexec {b_all} s; \
install {i_all} MB/s; dd {d_all} MB/s; VmHWM before → after the prepare {h_all} kB.\n",
        n = fig.rounds.len(),
        kernel = fig.kernel_version,
        mib = fig.rootfs_bytes as f64 / (1u64 << 20) as f64,
        r1 = kexec / bare,
        v1 = verdict(kexec <= 1.2 * bare),
        r2 = kexec / firmware,
        v2 = verdict(kexec <= 0.65 * firmware),
        r3 = prepared / bare,
        v3 = verdict(prepared <= 1.2 * bare),
        r4 = install / dd,
        v4 = verdict(install >= 0.9 * dd),
        v5 = verdict(hwm < 32.0),
        large_mib = fig.large.rootfs_bytes as f64 / (1u64 << 20) as f64,
        large_slot = fig.large.slot_bytes >> 20,
        large_hwm = large_hwm,
        v6 = verdict(large_hwm < 32.0),
        large_mbs = fig.large.install_mb_s(),
        large_before = fig.large.hwm_before_kb,
        large_after = fig.large.hwm_after_kb,
        large_rss = fig.large.rss_after_kb,
        k_all = all(&|r| format!("{:.2}", r.kexec.total_s)),
        f_all = all(&|r| format!("{:.2}", r.firmware.total_s)),
        p_all = all(&|r| format!("{:.2}", r.prepared.total_s)),
        b_all = all(&|r| format!("{:.2}", r.bare_kexec.total_s)),
        i_all = all(&|r| format!(
            "{:.1}",
            r.install_bytes as f64 / 1e6 / (r.install_ms as f64 / 1e3)
        )),
        d_all = all(&|r| format!("{:.0}", r.dd_bytes as f64 / 1e6 / (r.dd_ms / 1e3))),
        h_all = all(&|r| format!("{} → {}", r.hwm_before_kb, r.hwm_after_kb)),
    )
}

/// Every round's raw figures for results.json.
pub fn json(fig: &Figures) -> serde_json::Value {
    serde_json::json!({
        "rootfs_bytes": fig.rootfs_bytes,
        "kernel": fig.kernel_version,
        "full_size_install": {
            "rootfs_bytes": fig.large.rootfs_bytes,
            "install_bytes": fig.large.install_bytes,
            "install_ms": fig.large.install_ms,
            "pid1_vmhwm_before_kb": fig.large.hwm_before_kb,
            "pid1_vmhwm_after_kb": fig.large.hwm_after_kb,
            "pid1_rss_after_kb": fig.large.rss_after_kb,
        },
        "rounds": fig.rounds.iter().map(|r| serde_json::json!({
            "downtime_kexec": downtime_json(&r.kexec),
            "downtime_firmware": downtime_json(&r.firmware),
            "downtime_prepared_kexec": downtime_json(&r.prepared),
            "downtime_bare_kexec": downtime_json(&r.bare_kexec),
            "install_bytes": r.install_bytes,
            "install_ms": r.install_ms,
            "dd_bytes": r.dd_bytes,
            "dd_ms": r.dd_ms,
            "pid1_vmhwm_before_kb": r.hwm_before_kb,
            "pid1_vmhwm_after_kb": r.hwm_after_kb,
            "pid1_rss_after_kb": r.rss_after_kb,
        })).collect::<Vec<_>>(),
    })
}

fn downtime_json(d: &Downtime) -> serde_json::Value {
    serde_json::json!({
        "total_s": d.total_s,
        "before_jump_s": d.before_jump_s,
        "jump_s": d.jump_s,
        "boot_s": d.boot_s,
    })
}
