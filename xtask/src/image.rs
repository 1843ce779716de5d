//! `cargo xtask image`: builds a bootable disk image.
//!
//! ```text
//! cargo xtask image [--bootloader grub|sd-boot] [--firmware bios|uefi]
//!                   [--version V] [--slot-b-version V2] [--default-slot A|B]
//!                   [--trusted-key PUB ...] [--key KEY] [--out DIR]
//!                   [--etcd] [--machine-config machine.toml]
//! ```
//! Defaults: grub, bios, version "dev", slot B empty, out build/image.
//! Writes DIR/disk.img, and for UEFI DIR/OVMF_VARS_4M.fd (a fresh copy of
//! the empty variable store to boot it with).
//!
//! Every slot trusts, for upgrade bundles, the public keys given with
//! `--trusted-key` and the public half of `--key`; with neither, the
//! development key pair build/keys/bundle.{key,pub} (generated on first
//! use), which `cargo xtask bundle` signs with by default.

use anyhow::{Context, Result};
use bascule_bundle::keys;
use bascule_bundle::VerifyingKey;
use bascule_rootfs::{
    build_image, Bootloader, BuiltImage, Firmware, ImageSpec, InitramfsInit, Slot, SlotBuild,
};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Options shared by `image` and `run`.
#[derive(clap::Args, Clone, Debug)]
pub struct ImageOptions {
    /// grub or sd-boot.
    #[arg(long, default_value = "grub", value_parser = parse_bootloader)]
    pub bootloader: Bootloader,
    /// bios or uefi; default bios (uefi for sd-boot, which needs it).
    #[arg(long, value_parser = parse_firmware)]
    pub firmware: Option<Firmware>,
    /// Image version of slot A.
    #[arg(long, value_name = "V", default_value = "dev", value_parser = checked_version)]
    pub version: String,
    /// Also fill slot B, with this version (default: B empty).
    #[arg(long, value_name = "V2", value_parser = checked_version)]
    pub slot_b_version: Option<String>,
    /// Slot the loader boots by default.
    #[arg(long, value_name = "A|B", default_value = "A", value_parser = parse_slot)]
    pub default_slot: Slot,
    /// A public key the image trusts for upgrade bundles (repeatable).
    #[arg(long, value_name = "PUB")]
    pub trusted_key: Vec<PathBuf>,
    /// A private key whose public half the image trusts.
    #[arg(long, value_name = "KEY")]
    pub key: Option<PathBuf>,
    /// Put Debian's etcd in the slots (control-plane machines).
    #[arg(long)]
    pub etcd: bool,
    /// A machine configuration to put on STATE (machine.toml: role, name,
    /// address, [etcd]); checked before anything is built.
    #[arg(long, value_name = "FILE")]
    pub machine_config: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ImageCmdArgs {
    #[command(flatten)]
    pub image: ImageOptions,
    /// Receives disk.img (+ OVMF_VARS_4M.fd for uefi); default build/image.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

impl ImageOptions {
    /// systemd-boot only exists on UEFI: imply it rather than make the
    /// user spell it out, but refuse an explicit contradiction.
    pub fn firmware(&self) -> Result<Firmware> {
        let firmware = match (self.bootloader, self.firmware) {
            (_, Some(f)) => f,
            (Bootloader::SdBoot, None) => Firmware::Uefi,
            (Bootloader::Grub, None) => Firmware::Bios,
        };
        bascule_rootfs::image::check_combination(self.bootloader, firmware)?;
        Ok(firmware)
    }

    /// The keys the image trusts: those given, else the development key.
    pub fn trusted_keys(&self, root: &Path) -> Result<Vec<VerifyingKey>> {
        let mut out = Vec::new();
        for p in &self.trusted_key {
            out.push(keys::load_public_key(p)?);
        }
        if let Some(k) = &self.key {
            out.push(keys::load_signing_key(k)?.verifying_key());
        }
        if out.is_empty() {
            out.push(bascule_rootfs::bundle::dev_keys(root)?.load_public()?);
        }
        out.dedup();
        Ok(out)
    }
}

fn parse_bootloader(s: &str) -> Result<Bootloader, String> {
    s.parse().map_err(|e: bascule_rootfs::Error| e.to_string())
}

fn parse_firmware(s: &str) -> Result<Firmware, String> {
    s.parse().map_err(|e: bascule_rootfs::Error| e.to_string())
}

fn parse_slot(s: &str) -> Result<Slot, String> {
    s.parse::<Slot>().map_err(|e| e.to_string())
}

/// Versions end up on the kernel command line and in file contents:
/// one plain word, as bundles require.
pub fn checked_version(v: &str) -> Result<String, String> {
    bascule_bundle::check_version(v)
        .map(|()| v.to_string())
        .map_err(|e| e.to_string())
}

pub fn run(a: &ImageCmdArgs) -> Result<()> {
    let root = crate::workspace_root();
    let out = a.out.clone().unwrap_or_else(|| root.join("build/image"));
    // Bad combinations fail before anything is installed or built.
    a.image.firmware()?;
    crate::deps::ensure(crate::deps::ALL)?;
    let image = build(&root, &a.image, &out)?;
    println!("disk image: {}", image.disk.display());
    if let Some(vars) = &image.ovmf_vars {
        println!("OVMF variable store: {}", vars.display());
    }
    Ok(())
}

/// Builds the binaries and the image.
pub fn build(root: &Path, a: &ImageOptions, out: &Path) -> Result<BuiltImage> {
    let firmware = a.firmware()?;
    let trusted_keys = a.trusted_keys(root)?;
    let machine = match &a.machine_config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            bascule_cluster::MachineConfig::parse(&text, path)?;
            Some(text)
        }
        None => None,
    };
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
        firmware,
        slot(&a.version),
        out,
        &bascule_rootfs::image::default_cache_dir(root),
    );
    spec.slot_b = a.slot_b_version.as_deref().map(slot);
    spec.default_slot = a.default_slot;
    spec.trusted_keys = trusted_keys;
    if a.etcd {
        spec.extra_host_tools.push(bascule_rootfs::squashfs::ETCD);
    }
    let t1 = Instant::now();
    let image = build_image(&spec).with_context(|| {
        format!(
            "building the {}+{} image in {}",
            a.bootloader,
            firmware,
            out.display()
        )
    })?;
    if let Some(text) = &machine {
        bascule_rootfs::state::write_state_files(
            &image.disk,
            &[("machine.toml", text.as_bytes())],
        )?;
    }
    eprintln!(
        "xtask: {}+{} image (kernel {}) built in {:.1}s (binaries {:.1}s)",
        a.bootloader,
        firmware,
        image.kernel_version,
        t1.elapsed().as_secs_f64(),
        (t1 - t0).as_secs_f64()
    );
    Ok(image)
}
