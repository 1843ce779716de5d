//! The install at full size: PID 1's peak memory (VmHWM) and the install
//! phase's throughput while `upgrade --prepare` writes a 1 GiB rootfs.
//!
//! The stock slots are 128 MiB, so this VM boots a copy of the upgrade
//! image whose slot B has moved to a larger region appended to the disk:
//! its GPT entry keeps its number, label, type and unique GUID, and both
//! GPT copies are written again (Bascule finds a slot by its label and
//! sizes it from the device, and refuses a disk whose GPT copies differ).
//! The first 446 bytes of the disk (GRUB's boot code) are kept.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bascule_rootfs::gpt::Gpt;
use bascule_rootfs::BuiltImage;

use super::boot_guest::{Guest, Reset};

/// The rootfs of a full run: 1 GiB, as the memory target names.
pub const FULL_MIB: u64 = 1024;
/// The rootfs of a smoke run: enough to cross several 4 MiB buffers.
pub const SMOKE_MIB: u64 = 24;
/// The guest's memory: the bundle is copied into its tmpfs (half of it).
const GUEST_MEMORY_MIB: u32 = 3072;
/// Room in the grown slot beyond the rootfs.
pub const SLOT_SLACK_MIB: u64 = 64;
/// Bound on the copy into tmpfs and on the prepare.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
const PREPARE_TIMEOUT: Duration = Duration::from_secs(1800);
const READY: &str = "bascule-init: all services ready";
/// Bytes of the first sector before the partition table (boot code).
const BOOT_CODE: usize = 446;

/// What the full-size install gave.
#[derive(Clone, Debug, Default)]
pub struct Large {
    pub rootfs_bytes: u64,
    /// Slot B's size in the grown image.
    pub slot_bytes: u64,
    pub install_bytes: u64,
    pub install_ms: u64,
    pub hwm_before_kb: u64,
    pub hwm_after_kb: u64,
    pub rss_after_kb: u64,
}

impl Large {
    pub fn install_mb_s(&self) -> f64 {
        self.install_bytes as f64 / 1e6 / (self.install_ms as f64 / 1e3)
    }
}

/// A copy of `image` in `dir` whose slot B is `slot_bytes` long, at the
/// end of the grown disk.
pub fn grow_slot_b(image: &BuiltImage, dir: &Path, slot_bytes: u64) -> Result<BuiltImage> {
    let disk = dir.join("disk-large-slot.img");
    super::boot_guest::copy_sparse(&image.disk, &disk)?;
    let report = Gpt::read_path(&disk)
        .with_context(|| format!("reading the GPT of {}", image.disk.display()))?;
    if !report.fully_valid() {
        bail!("{}: the built image's GPT is not valid", disk.display());
    }
    let mut gpt = report.gpt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&disk)?;
    let mut boot_code = [0u8; BOOT_CODE];
    f.read_exact(&mut boot_code)?;
    let old_len = f.seek(SeekFrom::End(0))?;
    const MIB: u64 = 1 << 20;
    const SECTOR: u64 = 512;
    // The old backup GPT (in the last MiB) becomes the start of slot B.
    let start = old_len.div_ceil(MIB) * MIB - MIB;
    let new_len = start + slot_bytes.div_ceil(MIB) * MIB + MIB;
    f.set_len(new_len)?;
    gpt.total_sectors = new_len / SECTOR;
    // Backup header and its 32 sectors of entries end the disk.
    gpt.last_usable_lba = gpt.total_sectors - 1 - 32 - 1;
    let label = bascule_rootfs::layout::LABEL_SLOT_B;
    let slot = gpt
        .partitions
        .iter_mut()
        .find(|p| p.label == label)
        .ok_or_else(|| anyhow!("{}: no partition {label}", disk.display()))?;
    slot.first_lba = start / SECTOR;
    slot.last_lba = (start + slot_bytes.div_ceil(MIB) * MIB) / SECTOR - 1;
    gpt.write(&mut f)
        .with_context(|| format!("writing the grown GPT of {}", disk.display()))?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&boot_code)?;
    f.sync_all()?;
    let check = Gpt::read_path(&disk)?;
    if !check.fully_valid() || check.gpt.find(label).map(|p| p.size()) < Some(slot_bytes) {
        bail!("{}: the grown GPT does not read back", disk.display());
    }
    let mut grown = image.clone();
    grown.disk = disk;
    Ok(grown)
}

/// Boots `image` (slot B grown) with `bundle_disk` as a second, read-only
/// disk holding a bundle of `bundle_len` bytes, copies it into tmpfs and
/// prepares slot B from it.
pub fn measure(
    image: &BuiltImage,
    scratch: &Path,
    bundle_disk: &Path,
    bundle_len: u64,
    rootfs_bytes: u64,
    cli: &Path,
) -> Result<Large> {
    let slot_bytes = bascule_rootfs::gpt::Gpt::read_path(&image.disk)?
        .gpt
        .find(bascule_rootfs::layout::LABEL_SLOT_B)
        .map_or(0, |p| p.size());
    let extra = super::upgrade::bundle_disk_args(bundle_disk);
    let (mut g, _) = Guest::start_sized(image, scratch, Reset::Reboots, &extra, GUEST_MEMORY_MIB)?;
    g.wait(
        Duration::from_secs(180),
        "the first boot's all-ready",
        |g| g.line_with(READY, 0),
    )?;
    let mut l = Large {
        rootfs_bytes,
        slot_bytes,
        ..Large::default()
    };
    // A short command first: it absorbs the shell's first-line quirk.
    l.hwm_before_kb = super::upgrade::pid1_status(&mut g, "VmHWM")?;
    let copy = std::time::Instant::now();
    g.console_once(
        &format!("dd if=/dev/vdb of=/tmp/b.bundle bs=4M count={bundle_len} iflag=count_bytes 2>/dev/null && echo BENCH\"\"-COPIED"),
        "BENCH-COPIED",
        COPY_TIMEOUT,
    )?;
    let prepare = std::time::Instant::now();
    let out = tempfile::tempfile()?;
    let err = tempfile::tempfile()?;
    let mut child = super::upgrade::cli_at(
        cli,
        g.api_socket(),
        &[
            "upgrade",
            "--image",
            "file:///tmp/b.bundle",
            "--prepare",
            "--preserve",
        ],
    )
    .stdout(out.try_clone()?)
    .stderr(err.try_clone()?)
    .spawn()
    .context("starting the bascule CLI")?;
    let status = super::upgrade::wait_child(&mut child, PREPARE_TIMEOUT)?;
    if !status.success() {
        bail!(
            "upgrade --prepare of the {} MiB rootfs failed ({status}): {}{}",
            rootfs_bytes >> 20,
            super::upgrade::written(out),
            super::upgrade::written(err)
        );
    }
    println!(
        "  full-size install: the bundle copied into tmpfs in {:.0} s, prepared in {:.0} s",
        (prepare - copy).as_secs_f64(),
        prepare.elapsed().as_secs_f64()
    );
    l.hwm_after_kb = super::upgrade::pid1_status(&mut g, "VmHWM")?;
    l.rss_after_kb = super::upgrade::pid1_status(&mut g, "VmRSS")?;
    (l.install_bytes, l.install_ms) = super::upgrade::install_phase_at(g.api_socket(), cli)?;
    Ok(l)
}
