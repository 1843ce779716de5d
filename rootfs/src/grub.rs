//! GRUB images, and the BIOS install done by hand.
//!
//! `grub-install` and `grub-bios-setup` refuse image files, so the BIOS
//! install does what grub-bios-setup does: core.img into the BIOS boot
//! partition, its blocklist pointed at its own sectors, and boot.img's code
//! into the MBR pointed at core.img. Both images get their prefix on the
//! ESP, so grub.cfg and grubenv live there for BIOS and UEFI alike.

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use crate::layout;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

pub const I386_PC_DIR: &str = "/usr/lib/grub/i386-pc";
pub const X86_64_EFI_DIR: &str = "/usr/lib/grub/x86_64-efi";

/// Modules built into core.img: everything grub.cfg uses, since the ESP
/// carries no module directory (autoloading would find nothing).
/// `loadenv`/`test`/`sleep`/`reboot`/`halt` are there for the boot-once and
/// counting logic of the boot crate's generated grub.cfg.
pub const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "part_gpt",
    "fat",
    "normal",
    "linux",
    "loadenv",
    "test",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "boot",
    "reboot",
    "halt",
    "sleep",
    "search",
    "search_label",
];

/// Same for the UEFI image (no biosdisk; efi_gop/all_video so a graphical
/// console works when there is one).
pub const EFI_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "normal",
    "linux",
    "loadenv",
    "test",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "boot",
    "reboot",
    "halt",
    "sleep",
    "search",
    "search_label",
    "efi_gop",
    "all_video",
];

/// Offset in diskboot.img (core.img's first sector) of the first blocklist
/// entry's start sector (u64): `GRUB_BOOT_MACHINE_LIST_SIZE` (12) before the
/// end of the sector.
const DISKBOOT_BLOCKLIST_START: usize = 0x1f4;
/// boot.img's `kernel_sector` (u64): where it loads core.img's first sector from.
const BOOT_KERNEL_SECTOR: usize = 0x5c;
/// boot.img's hard-disk check (`GRUB_BOOT_MACHINE_DRIVE_CHECK`), replaced by
/// two NOPs as grub-bios-setup does for hard disks, so that BIOSes passing
/// an odd drive number still boot from it.
const BOOT_DRIVE_CHECK: usize = 0x66;
/// boot.img code ends here; the disk signature and partition table follow.
const MBR_CODE_SIZE: usize = 440;

/// Builds the i386-pc core.img into `out`, with its prefix on the ESP.
pub fn build_bios_core(out: &Path) -> Result<()> {
    let prefix = format!(
        "(hd0,gpt{}){}",
        layout::ESP_PARTITION_NUMBER,
        layout::ESP_GRUB_DIR
    );
    Cmd::new("grub-mkimage")
        .args(["-O", "i386-pc", "-d", I386_PC_DIR, "-p", &prefix, "-o"])
        .arg(out)
        .args(BIOS_MODULES)
        .hint("grub-mkimage comes from grub-common; the modules from grub-pc-bin")
        .run()
}

/// Builds the x86_64-efi image (BOOTX64.EFI) into `out`. A device-less
/// prefix makes GRUB use the partition it was loaded from: the ESP.
pub fn build_efi_image(out: &Path) -> Result<()> {
    Cmd::new("grub-mkimage")
        .args([
            "-O",
            "x86_64-efi",
            "-d",
            X86_64_EFI_DIR,
            "-p",
            layout::ESP_GRUB_DIR,
            "-o",
        ])
        .arg(out)
        .args(EFI_MODULES)
        .hint("grub-mkimage comes from grub-common; the modules from grub-efi-amd64-bin")
        .run()
}

/// Installs GRUB for BIOS into a disk image whose GPT is already written:
/// `core_img` at byte `bios_boot_offset` (the BIOS boot partition, at most
/// `bios_boot_size` bytes), boot.img's code into the MBR.
pub fn install_bios(
    disk: &mut fs::File,
    disk_path: &Path,
    core_img: &Path,
    bios_boot_offset: u64,
    bios_boot_size: u64,
) -> Result<()> {
    let mut core = fs::read(core_img).io("reading", core_img)?;
    let boot_img_path = Path::new(I386_PC_DIR).join("boot.img");
    let boot_img = fs::read(&boot_img_path).io("reading", &boot_img_path)?;
    if boot_img.len() != 512 {
        return Err(Error::Invalid(format!(
            "{} is not one sector",
            boot_img_path.display()
        )));
    }
    if core.len() as u64 > bios_boot_size || core.len() < 512 {
        return Err(Error::TooBig {
            what: "GRUB core.img",
            path: core_img.to_path_buf(),
            partition: layout::LABEL_BIOS_BOOT,
            size: core.len() as u64,
            capacity: bios_boot_size,
        });
    }
    let start_sector = bios_boot_offset / layout::SECTOR_SIZE;
    // diskboot loads the rest of core.img from the sectors after its own.
    core[DISKBOOT_BLOCKLIST_START..DISKBOOT_BLOCKLIST_START + 8]
        .copy_from_slice(&(start_sector + 1).to_le_bytes());
    disk.seek(SeekFrom::Start(bios_boot_offset))
        .io("seeking in", disk_path)?;
    disk.write_all(&core)
        .io("writing core.img into", disk_path)?;

    let mut mbr = [0u8; 512];
    disk.seek(SeekFrom::Start(0)).io("seeking in", disk_path)?;
    disk.read_exact(&mut mbr)
        .io("reading the MBR of", disk_path)?;
    patch_mbr(&mut mbr, &boot_img, start_sector);
    disk.seek(SeekFrom::Start(0)).io("seeking in", disk_path)?;
    disk.write_all(&mbr).io("writing the MBR of", disk_path)
}

/// boot.img's code into the MBR, keeping the disk signature, the protective
/// partition entry and the 0x55AA signature.
fn patch_mbr(mbr: &mut [u8; 512], boot_img: &[u8], core_sector: u64) {
    mbr[..MBR_CODE_SIZE].copy_from_slice(&boot_img[..MBR_CODE_SIZE]);
    mbr[BOOT_KERNEL_SECTOR..BOOT_KERNEL_SECTOR + 8].copy_from_slice(&core_sector.to_le_bytes());
    mbr[BOOT_DRIVE_CHECK] = 0x90;
    mbr[BOOT_DRIVE_CHECK + 1] = 0x90;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mbr_patch_keeps_the_partition_table() {
        let mut mbr = [0u8; 512];
        mbr[446 + 4] = 0xEE;
        mbr[510] = 0x55;
        mbr[511] = 0xAA;
        let boot = [0xABu8; 512];
        patch_mbr(&mut mbr, &boot, 2048);
        assert_eq!(mbr[0], 0xAB);
        assert_eq!(&mbr[0x5c..0x64], &2048u64.to_le_bytes());
        assert_eq!(&mbr[0x66..0x68], &[0x90, 0x90]);
        assert_eq!(&mbr[440..446], &[0; 6]);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
    }

    #[test]
    fn bios_core_image_builds_and_fits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let core = dir.path().join("core.img");
        build_bios_core(&core).expect("grub-mkimage i386-pc");
        let len = fs::metadata(&core).expect("core.img").len();
        let bios = layout::partition_size(layout::BIOS_BOOT_PARTITION_NUMBER - 1);
        assert!(len > 512 && len < bios, "core.img is {len} bytes");
    }
}
