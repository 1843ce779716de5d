//! Bootloader configuration files for a fresh image, made by the boot
//! crate's generators, so a new image starts with exactly what the running
//! system later rewrites (see docs/boot-formats.md):
//!
//! - GRUB: `/grub/grub.cfg` from [`grubcfg::generate`] (boot-once through
//!   `next_entry`, default from `saved_entry`, the `bascule_trying` try
//!   record, and the default slot baked in for a missing or corrupt
//!   grubenv), and `/grub/grubenv`, a 1024-byte block with `saved_entry`
//!   set to the default slot and `next_entry`/`bascule_trying` present but
//!   empty, so later in-place updates keep the block's layout.
//! - systemd-boot: `/loader/loader.conf` whose default is the `bascule-*`
//!   glob, and one type #1 entry per populated slot
//!   (`bascule-a.conf`, `bascule-b.conf`) whose `sort-key` makes the default
//!   slot sort first.
//!
//! Every entry names its slot's partition by the partition's unique GUID
//! on the disk being built (`root=PARTUUID=`), so the initramfs never
//! mounts a slot of another disk that carries the same labels.
//!
//! grub.cfg always has menu entries for both slots (the generator's
//! contract): an empty slot's entry points at files that do not exist yet,
//! and is never the default ([`loader_files`] refuses that). systemd-boot
//! gets no entry for an empty slot.

use crate::error::{Error, Result};
use crate::layout::{self, Guid};
use crate::platform::Bootloader;
use crate::Slot;
use bascule_boot::bls::{self, BlsEntry, LoaderConf};
use bascule_boot::gpt::Gpt;
use bascule_boot::grubcfg::{self, GrubCfgInputs, GrubSlotVars};
use bascule_boot::grubenv::GrubEnv;
use bascule_boot::slot::BootFiles;

/// Kernel parameters of every entry, after `bascule.slot=`,
/// `bascule.version=` and `root=PARTUUID=`.
pub const KERNEL_PARAMS: &str = "console=ttyS0 quiet panic=10";

/// A bootable slot as the loader sees it.
#[derive(Clone, Debug)]
pub struct BootEntry {
    pub slot: Slot,
    /// The image version in that slot.
    pub version: String,
}

/// A file to put on the ESP: absolute ESP path and contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// The kernel and initramfs names inside `/bascule/A` and `/bascule/B`.
pub fn boot_files() -> BootFiles {
    BootFiles {
        kernel: layout::ESP_KERNEL_NAME.to_string(),
        initrd: layout::ESP_INITRD_NAME.to_string(),
    }
}

/// The unique GUID of `slot`'s partition in `table`.
pub fn slot_partuuid(table: &Gpt, slot: Slot) -> Result<Guid> {
    let label = slot.layout().partition_label;
    table.find(label).map(|p| p.unique_guid).ok_or_else(|| {
        Error::Invalid(format!(
            "the partition table has no {label}: the loader entry of slot {slot} cannot name it"
        ))
    })
}

/// Every configuration file the bootloader reads, for these entries (only
/// slots that hold an image) with `default` booted unless told otherwise,
/// on the disk whose partition table is `table`, each entry's kernel
/// getting `params` (normally [`KERNEL_PARAMS`]). `default` must be one of
/// the entries.
pub fn loader_files(
    bootloader: Bootloader,
    entries: &[BootEntry],
    default: Slot,
    table: &Gpt,
    params: &str,
) -> Result<Vec<ConfigFile>> {
    if !entries.iter().any(|e| e.slot == default) {
        return Err(Error::Invalid(format!(
            "the default slot {default} holds no image: the loader would have nothing to boot"
        )));
    }
    match bootloader {
        Bootloader::Grub => Ok(vec![
            ConfigFile {
                path: layout::ESP_GRUB_CFG.to_string(),
                contents: grub_cfg(entries, default, table, params)?.into_bytes(),
            },
            ConfigFile {
                path: layout::ESP_GRUBENV.to_string(),
                contents: initial_grubenv(default)?,
            },
        ]),
        Bootloader::SdBoot => {
            let conf = LoaderConf::default()
                .to_conf()
                .map_err(|source| Error::Bls {
                    file: layout::ESP_LOADER_CONF.to_string(),
                    source,
                })?;
            let mut files = vec![ConfigFile {
                path: layout::ESP_LOADER_CONF.to_string(),
                contents: conf.into_bytes(),
            }];
            for e in entries {
                let partuuid = slot_partuuid(table, e.slot)?;
                let (path, text) = bls_entry(e, e.slot == default, partuuid, params)?;
                files.push(ConfigFile {
                    path,
                    contents: text.into_bytes(),
                });
            }
            Ok(files)
        }
    }
}

/// grub.cfg from the boot crate's generator: serial console on BIOS (on
/// UEFI the firmware's console already reaches the serial port), no menu
/// delay, entries `A` and `B`, `default` baked in.
pub fn grub_cfg(entries: &[BootEntry], default: Slot, table: &Gpt, params: &str) -> Result<String> {
    let version = |slot: Slot| {
        entries
            .iter()
            .find(|e| e.slot == slot)
            .map(|e| e.version.clone())
    };
    let mut inputs = GrubCfgInputs::new(default);
    inputs.cmdline = params.to_string();
    inputs.files = boot_files();
    inputs.version_a = version(Slot::A);
    inputs.version_b = version(Slot::B);
    inputs.partuuid_a = Some(slot_partuuid(table, Slot::A)?);
    inputs.partuuid_b = Some(slot_partuuid(table, Slot::B)?);
    grubcfg::generate(&inputs).map_err(|source| Error::GrubCfg {
        file: layout::ESP_GRUB_CFG,
        source,
    })
}

/// The first grubenv: the three variables grub.cfg reads, `saved_entry`
/// naming `default` and the others empty (GRUB's `save_env` and Bascule's
/// in-place writer then only change values), padded to the 1024 bytes GRUB
/// rewrites in place.
pub fn initial_grubenv(default: Slot) -> Result<Vec<u8>> {
    let vars = GrubSlotVars {
        saved_entry: Some(default),
        next_entry: None,
        trying: None,
    };
    let mut env = GrubEnv::new();
    vars.apply_to(&mut env)
        .and_then(|()| env.to_block())
        .map_err(|source| Error::GrubEnv {
            file: layout::ESP_GRUBENV,
            source,
        })
}

/// One slot's Boot Loader Specification entry: its ESP path and text.
/// `partuuid` is the unique GUID of the slot's partition.
pub fn bls_entry(
    e: &BootEntry,
    is_default: bool,
    partuuid: Guid,
    params: &str,
) -> Result<(String, String)> {
    let name = bls::entry_file_name(e.slot).to_string();
    let path = format!("{}/{name}", layout::ESP_LOADER_ENTRIES);
    let err = |source| Error::Bls {
        file: path.clone(),
        source,
    };
    let entry = BlsEntry::for_slot(
        e.slot,
        Some(&e.version),
        Some(partuuid),
        is_default,
        params,
        &boot_files(),
    )
    .map_err(err)?;
    let text = entry.to_conf(&name).map_err(err)?;
    Ok((path, text))
}

#[cfg(test)]
#[path = "loader_tests.rs"]
mod tests;
