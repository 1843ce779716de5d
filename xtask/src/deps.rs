//! Installs missing Debian packages, non-interactively, so `cargo xtask run`
//! and `cargo xtask test` work on a fresh Debian machine.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// A Debian package and a file that proves it is installed.
pub struct Package {
    pub name: &'static str,
    pub probe: &'static str,
}

const fn pkg(name: &'static str, probe: &'static str) -> Package {
    Package { name, probe }
}

/// Everything the build, the images and the tests use.
pub const ALL: &[Package] = &[
    pkg("qemu-system-x86", "/usr/bin/qemu-system-x86_64"),
    pkg("ovmf", "/usr/share/OVMF/OVMF_CODE_4M.fd"),
    pkg("grub-pc-bin", "/usr/lib/grub/i386-pc/boot.img"),
    pkg("grub-efi-amd64-bin", "/usr/lib/grub/x86_64-efi/linux.mod"),
    // grub-editenv and grub-script-check, which boot's tests run.
    pkg("grub-common", "/usr/bin/grub-editenv"),
    pkg("grub-common", "/usr/bin/grub-script-check"),
    pkg(
        "systemd-boot-efi",
        "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
    ),
    // bootctl: Debian 12 ships it in systemd-boot, not in systemd.
    pkg("systemd-boot", "/usr/bin/bootctl"),
    // unshare, for bootctl's private mount namespace in boot's tests.
    pkg("util-linux", "/usr/bin/unshare"),
    pkg("dosfstools", "/usr/sbin/mkfs.vfat"),
    pkg("mtools", "/usr/bin/mcopy"),
    pkg("squashfs-tools", "/usr/bin/mksquashfs"),
    pkg("e2fsprogs", "/usr/sbin/mkfs.ext4"),
    pkg("busybox-static", "/bin/busybox"),
    pkg("gdisk", "/usr/sbin/sgdisk"),
    pkg("fdisk", "/usr/sbin/sfdisk"),
    pkg("kmod", "/usr/sbin/depmod"),
    pkg("cpio", "/usr/bin/cpio"),
    pkg("zstd", "/usr/bin/zstd"),
    // The benchmark's systemd reference: a Debian root from the host's apt
    // sources (xtask/src/bench/systemd_root.rs).
    pkg("mmdebstrap", "/usr/bin/mmdebstrap"),
    // etcd for control-plane images and the cluster tests (bascule-cluster's
    // tests run it on the host too).
    pkg("etcd-server", "/usr/bin/etcd"),
];

pub fn ensure(packages: &[Package]) -> Result<()> {
    let mut missing: Vec<&str> = packages
        .iter()
        .filter(|p| !std::path::Path::new(p.probe).exists())
        .map(|p| p.name)
        .collect();
    // A package probed by several files is listed next to itself.
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: installing Debian packages: {}", missing.join(" "));
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo", "-n"] };
    let apt = |args: &[&str]| -> Result<()> {
        let mut argv: Vec<&str> = sudo.to_vec();
        argv.push("apt-get");
        argv.extend_from_slice(args);
        let status = Command::new(argv[0])
            .args(&argv[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .with_context(|| format!("cannot run {}", argv.join(" ")))?;
        if !status.success() {
            bail!("{} failed: {status}", argv.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    let mut install = vec!["install", "-y", "-q", "--no-install-recommends"];
    install.extend(missing.iter());
    apt(&install)
}

fn is_root() -> bool {
    // Reading our own uid through /proc avoids a libc dependency here.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}
