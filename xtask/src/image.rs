//! `cargo xtask image`: builds a bootable disk image.
//!
//! ```text
//! cargo xtask image [--bootloader grub|sd-boot] [--firmware bios|uefi]
//!                   [--version V] [--slot-b-version V2] [--default-slot A|B]
//!                   [--out DIR]
//! ```
//! Defaults: grub, bios, version "dev", slot B empty, out build/image.
//! Writes DIR/disk.img, and for UEFI DIR/OVMF_VARS_4M.fd (a fresh copy of
//! the empty variable store to boot it with).

use anyhow::{bail, Context, Result};
use bascule_rootfs::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, Slot, SlotBuild,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options shared by `image` and `run`.
pub struct ImageArgs {
    pub bootloader: Bootloader,
    pub firmware: Firmware,
    pub version: String,
    pub slot_b_version: Option<String>,
    pub default_slot: Slot,
    pub out: PathBuf,
}

pub const USAGE: &str = "\
usage: cargo xtask image [options]     (cargo xtask run takes the same, but no --out)
  --bootloader grub|sd-boot   default grub
  --firmware bios|uefi        default bios (uefi for sd-boot, which needs it)
  --version V                 image version of slot A, default dev
  --slot-b-version V2         also fill slot B, with version V2 (default: B empty)
  --default-slot A|B          slot the loader boots by default, default A
  --out DIR                   default build/image; writes DIR/disk.img (+ OVMF_VARS_4M.fd for uefi)";

impl ImageArgs {
    /// Parses `--key value` / `--key=value` options over the given defaults.
    pub fn parse(args: &[String], default_out: PathBuf) -> Result<ImageArgs> {
        let mut a = ImageArgs {
            bootloader: Bootloader::Grub,
            firmware: Firmware::Bios,
            version: "dev".to_string(),
            slot_b_version: None,
            default_slot: Slot::A,
            out: default_out,
        };
        let mut firmware_given = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let (key, inline) = match arg.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (arg.as_str(), None),
            };
            if matches!(key, "-h" | "--help") {
                println!("{USAGE}");
                std::process::exit(0);
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("{key} needs a value\n{USAGE}"))?,
            };
            match key {
                "--bootloader" => a.bootloader = value.parse()?,
                "--firmware" => {
                    a.firmware = value.parse()?;
                    firmware_given = true;
                }
                "--version" => a.version = checked_version(&value)?,
                "--slot-b-version" => a.slot_b_version = Some(checked_version(&value)?),
                "--default-slot" => {
                    a.default_slot = value
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--default-slot: {e}"))?
                }
                "--out" => a.out = PathBuf::from(value),
                other => bail!("unknown option {other}\n{USAGE}"),
            }
        }
        // systemd-boot only exists on UEFI: imply it rather than make the
        // user spell it out, but refuse an explicit contradiction.
        if a.bootloader == Bootloader::SdBoot && !firmware_given {
            a.firmware = Firmware::Uefi;
        }
        bascule_rootfs::image::check_combination(a.bootloader, a.firmware)?;
        Ok(a)
    }
}

/// Versions end up on the kernel command line and in file contents:
/// keep them to one plain word.
fn checked_version(v: &str) -> Result<String> {
    if v.is_empty()
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+-~".contains(c))
    {
        bail!("version {v:?} must be non-empty and use only letters, digits and . _ + - ~");
    }
    Ok(v.to_string())
}

pub fn run(args: &[String]) -> Result<()> {
    let root = crate::workspace_root();
    let a = ImageArgs::parse(args, root.join("build/image"))?;
    crate::deps::ensure(crate::deps::ALL)?;
    let image = build(&root, &a)?;
    println!("disk image: {}", image.disk.display());
    if let Some(vars) = &image.ovmf_vars {
        println!("OVMF variable store: {}", vars.display());
    }
    Ok(())
}

/// Builds the binaries and the image.
pub fn build(root: &Path, a: &ImageArgs) -> Result<BuiltImage> {
    let t0 = Instant::now();
    let bins = bascule_rootfs::cargo::build_static_binaries(root)?;
    let slot = |version: &str| SlotBuild {
        version: version.to_string(),
        init: bins.init.clone(),
        cli: bins.cli.clone(),
        initramfs_init: InitramfsInit::SameAsRoot,
    };
    let mut spec = ImageSpec::new(
        a.bootloader,
        a.firmware,
        slot(&a.version),
        &a.out,
        &bascule_rootfs::image::default_cache_dir(root),
    );
    spec.slot_b = a.slot_b_version.as_deref().map(slot);
    spec.default_slot = a.default_slot;
    let t1 = Instant::now();
    let image = build_image(&spec).with_context(|| {
        format!(
            "building the {}+{} image in {}",
            a.bootloader,
            a.firmware,
            a.out.display()
        )
    })?;
    eprintln!(
        "xtask: {}+{} image (kernel {}) built in {:.1}s (binaries {:.1}s)",
        a.bootloader,
        a.firmware,
        image.kernel_version,
        t1.elapsed().as_secs_f64(),
        (t1 - t0).as_secs_f64()
    );
    Ok(image)
}
