//! The initramfs: `/init` (the bascule-init binary, or for boot-chain
//! tests a busybox script), the kernel modules it loads with their load
//! order in `/etc/bascule/modules.load`, the image version, and the empty
//! mount points `/dev /proc /sys /newroot`.
//!
//! Compressed with zstd by running the `zstd` tool: the kernel decompresses
//! zstd several times faster than gzip (which matters under TCG, where every
//! boot pays for it) at a smaller size (which matters under SeaBIOS, where
//! GRUB reads the file through slow BIOS disk calls); the tool is already a
//! host dependency, and a pure-Rust zstd encoder would add a C build or a
//! large crate to the workspace for no gain.

use crate::cmd::Cmd;
use crate::cpio::{CpioWriter, DeviceKind};
use crate::error::{IoContext, Result};
use crate::kernel::Kernel;
use crate::layout;
use crate::modules::Module;
use std::fs;
use std::path::Path;

/// zstd level: 19 is the highest non-"ultra" level. It costs about a second
/// per build on ~10 MB of input, and decompression speed does not depend on
/// it. Ultra levels (and --long) use windows the kernel's decoder may not
/// have memory for this early.
const ZSTD_LEVEL: &str = "-19";

/// What runs as `/init`.
#[derive(Clone, Debug)]
pub enum Init<'a> {
    /// The real thing: bascule-init, a static binary.
    Binary(&'a Path),
    /// A shell script run by a static busybox placed at `/bin/busybox`
    /// (start the script with `#!/bin/busybox sh`). For testing the boot
    /// chain without the init.
    BusyboxScript { busybox: &'a Path, script: &'a str },
}

pub struct InitramfsSpec<'a> {
    pub init: Init<'a>,
    pub kernel: &'a Kernel,
    /// In load order (see [`crate::modules::ModuleDb::resolve`]).
    pub modules: &'a [Module],
    /// Written to [`layout::VERSION_FILE`].
    pub version: &'a str,
}

/// Parameters some modules are loaded with.
///
/// `watchdog stop_on_reboot=0`: the i6300esb driver asks the watchdog core
/// to stop the timer on every reboot notification, kexec included; with
/// this the timer keeps running across a kexec, so a new kernel that hangs
/// before its initramfs re-arms the watchdog still resets the machine.
pub const MODULE_PARAMS: &[(&str, &str)] = &[("watchdog", "stop_on_reboot=0")];

/// The text of `/etc/bascule/modules.load`: absolute `.ko` paths, one a
/// line, in load order, each followed by its [`MODULE_PARAMS`] if any;
/// `#` lines are comments.
pub fn modules_load_list(kernel_version: &str, modules: &[Module]) -> String {
    let mut s =
        String::from("# Kernel modules for bascule-init to load, in this order (finit_module).\n");
    for m in modules {
        s.push_str(&format!("/lib/modules/{kernel_version}/{}", m.path));
        if let Some((_, params)) = MODULE_PARAMS.iter().find(|(n, _)| *n == m.name) {
            s.push(' ');
            s.push_str(params);
        }
        s.push('\n');
    }
    s
}

/// Builds the uncompressed cpio archive in memory (a few MB).
pub fn archive(spec: &InitramfsSpec) -> Result<Vec<u8>> {
    let mut w = CpioWriter::new(Vec::new());
    let ctx =
        |e: std::io::Error| crate::Error::Invalid(format!("writing the initramfs archive: {e}"));
    for d in ["dev", "proc", "sys", "run", "tmp", "newroot"] {
        w.dir(d, 0o755).map_err(ctx)?;
    }
    // The kernel opens /dev/console for init's stdio before /init runs;
    // its built-in initramfs already has one, this keeps us independent of
    // that detail.
    w.device("dev/console", DeviceKind::Char, 0o600, 5, 1)
        .map_err(ctx)?;
    match &spec.init {
        Init::Binary(path) => {
            let data = fs::read(path).io("reading the init binary", path)?;
            w.file("init", 0o755, &data).map_err(ctx)?;
        }
        Init::BusyboxScript { busybox, script } => {
            let data = fs::read(busybox).io("reading busybox", busybox)?;
            w.file("bin/busybox", 0o755, &data).map_err(ctx)?;
            w.file("init", 0o755, script.as_bytes()).map_err(ctx)?;
        }
    }
    let kver = &spec.kernel.version;
    for m in spec.modules {
        let src = spec.kernel.modules_dir.join(&m.path);
        let data = fs::read(&src).io("reading kernel module", &src)?;
        w.file(&format!("lib/modules/{kver}/{}", m.path), 0o644, &data)
            .map_err(ctx)?;
    }
    w.file(
        layout::INITRAMFS_MODULES_LOAD,
        0o644,
        modules_load_list(kver, spec.modules).as_bytes(),
    )
    .map_err(ctx)?;
    w.file(
        layout::VERSION_FILE,
        0o644,
        format!("{}\n", spec.version).as_bytes(),
    )
    .map_err(ctx)?;
    w.finish().map_err(ctx)
}

/// Writes the zstd-compressed initramfs to `out`.
pub fn build(spec: &InitramfsSpec, out: &Path) -> Result<()> {
    let raw = out.with_extension("cpio");
    fs::write(&raw, archive(spec)?).io("writing", &raw)?;
    let result = Cmd::new("zstd")
        .args(["-q", "-f", ZSTD_LEVEL, "--check"])
        .arg(&raw)
        .arg("-o")
        .arg(out)
        .run();
    let _ = fs::remove_file(&raw);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_load_lists_absolute_paths_in_order() {
        let mods = vec![
            Module {
                name: "virtio".into(),
                path: "kernel/drivers/virtio/virtio.ko".into(),
            },
            Module {
                name: "virtio_blk".into(),
                path: "kernel/drivers/block/virtio_blk.ko".into(),
            },
        ];
        let text = modules_load_list("6.1.0-56-amd64", &mods);
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/virtio/virtio.ko",
                "/lib/modules/6.1.0-56-amd64/kernel/drivers/block/virtio_blk.ko"
            ]
        );
        let wd = [Module {
            name: "watchdog".into(),
            path: "kernel/drivers/watchdog/watchdog.ko".into(),
        }];
        assert!(
            modules_load_list("6.1.0-56-amd64", &wd).contains("/watchdog.ko stop_on_reboot=0\n")
        );
    }

    #[test]
    fn archive_holds_init_modules_and_list() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mdir = dir.path().join("lib/modules/9.9");
        fs::create_dir_all(mdir.join("kernel")).expect("mkdir");
        fs::write(mdir.join("kernel/a.ko"), b"KO").expect("ko");
        let init = dir.path().join("init-bin");
        fs::write(&init, b"\x7fELF").expect("init");
        let kernel = Kernel {
            version: "9.9".into(),
            vmlinuz: dir.path().join("vmlinuz"),
            modules_dir: mdir,
        };
        let mods = vec![Module {
            name: "a".into(),
            path: "kernel/a.ko".into(),
        }];
        let spec = InitramfsSpec {
            init: Init::Binary(&init),
            kernel: &kernel,
            modules: &mods,
            version: "1.2",
        };
        let out = dir.path().join("initrd.img");
        build(&spec, &out).expect("build");
        let listing = Cmd::new("sh")
            .arg("-c")
            .arg(format!("zstd -dc {} | cpio -t 2>/dev/null", out.display()))
            .output()
            .expect("list");
        let listing = String::from_utf8_lossy(&listing);
        for want in [
            "init",
            "lib/modules/9.9/kernel/a.ko",
            "etc/bascule/modules.load",
            "etc/bascule/version",
            "newroot",
            "dev/console",
        ] {
            assert!(
                listing.lines().any(|l| l == want),
                "{want} missing from {listing}"
            );
        }
    }
}
