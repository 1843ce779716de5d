//! The whole image: [`build_image`] turns an [`ImageSpec`] into
//! `OUT/disk.img` (plus a fresh OVMF variable store for UEFI).
//!
//! Steps: Debian kernel (cached) → module closure → per slot an initramfs
//! and a squashfs → bootloader binary and configuration → ESP → ext4 for
//! STATE/EPHEMERAL → GPT disk with everything in place.

use crate::disk::{self, DiskContents};
use crate::error::{Error, IoContext, Result};
use crate::esp::{self, EspFile};
use crate::initramfs::{self, Init, InitramfsSpec};
use crate::kernel::{self, Kernel};
use crate::layout;
use crate::loader::{self, BootEntry};
use crate::modules::{self, ModuleDb};
use crate::squashfs::{self, RootfsSpec};
use crate::Slot;
use crate::{grub, qemu};
use std::fs;
use std::path::{Path, PathBuf};

// Kept reachable here: callers name them as `image::…`.
pub use crate::platform::{check_combination, Bootloader, Firmware};

/// systemd-boot's EFI binary (package systemd-boot-efi).
pub const SYSTEMD_BOOT_EFI: &str = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// What the initramfs runs as /init.
#[derive(Clone, Debug, Default)]
pub enum InitramfsInit {
    /// The slot's bascule-init (the real image).
    #[default]
    SameAsRoot,
    /// A `#!/bin/busybox sh` script with busybox beside it: for proving the
    /// boot chain without the init.
    BusyboxScript(String),
}

/// The contents of one slot.
#[derive(Clone, Debug)]
pub struct SlotBuild {
    /// Image version: /etc/bascule/version and `bascule.version=` on the
    /// command line.
    pub version: String,
    /// Static bascule-init.
    pub init: PathBuf,
    /// Static `bascule` CLI.
    pub cli: PathBuf,
    pub initramfs_init: InitramfsInit,
}

#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub bootloader: Bootloader,
    pub firmware: Firmware,
    pub slot_a: SlotBuild,
    /// `None`: slot B stays empty (and gets no loader entry).
    pub slot_b: Option<SlotBuild>,
    /// The slot the loader boots by default.
    pub default_slot: Slot,
    /// Receives disk.img (and OVMF_VARS_4M.fd for UEFI).
    pub out_dir: PathBuf,
    /// Kernel download cache, shared between builds (e.g. `build/cache`).
    pub cache_dir: PathBuf,
    /// Static busybox for the slot's shell and tools.
    pub busybox: PathBuf,
    /// `(file name, TOML)` for /etc/bascule/services (default: the
    /// examples).
    pub services: Vec<(String, String)>,
    /// More files for every slot's root (e.g. a benchmark's inittab).
    pub extra_root_files: Vec<squashfs::RootFile>,
    /// A directory copied over every slot's root before
    /// `extra_root_files` (e.g. a benchmark's Debian root with systemd).
    pub root_overlay: Option<PathBuf>,
    /// Public keys every slot trusts for upgrade bundles (default none:
    /// such an image refuses every bundle).
    pub trusted_keys: Vec<bascule_bundle::VerifyingKey>,
    /// Appended to every entry's kernel command line (e.g. a benchmark's
    /// `init=`).
    pub extra_kernel_params: Option<String>,
    /// More host programs for every slot, beside e2fsprogs (e.g.
    /// [`squashfs::ETCD`] for control-plane machines).
    pub extra_host_tools: Vec<squashfs::HostTool>,
}

impl ImageSpec {
    /// An image with slot A only, booting A, with the example services.
    pub fn new(
        bootloader: Bootloader,
        firmware: Firmware,
        slot_a: SlotBuild,
        out_dir: &Path,
        cache_dir: &Path,
    ) -> ImageSpec {
        ImageSpec {
            bootloader,
            firmware,
            slot_a,
            slot_b: None,
            default_slot: Slot::A,
            out_dir: out_dir.to_path_buf(),
            cache_dir: cache_dir.to_path_buf(),
            busybox: PathBuf::from(squashfs::HOST_BUSYBOX),
            services: squashfs::EXAMPLE_SERVICES
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            extra_root_files: Vec::new(),
            root_overlay: None,
            trusted_keys: Vec::new(),
            extra_kernel_params: None,
            extra_host_tools: Vec::new(),
        }
    }
}

/// The kernel download cache of a workspace, shared by xtask and tests.
pub fn default_cache_dir(workspace: &Path) -> PathBuf {
    workspace.join("build").join("cache")
}

/// What [`build_image`] produced.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    pub disk: PathBuf,
    /// UEFI: the fresh variable store to boot with (copy it again for a
    /// fresh start).
    pub ovmf_vars: Option<PathBuf>,
    pub bootloader: Bootloader,
    pub firmware: Firmware,
    pub kernel_version: String,
    /// The default slot's kernel, initramfs and the loader entry's
    /// command line, for a VM that starts the kernel itself; `None` for
    /// an image recorded before this was kept.
    pub direct_boot: Option<qemu::DirectBoot>,
}

impl BuiltImage {
    /// A QEMU configuration for this image (serial on the terminal).
    pub fn qemu_config(&self) -> qemu::QemuConfig {
        let mut c = qemu::QemuConfig::new(&self.disk, self.firmware);
        c.ovmf_vars = self.ovmf_vars.clone();
        c
    }
}

/// Builds the image described by `spec`.
pub fn build_image(spec: &ImageSpec) -> Result<BuiltImage> {
    check_combination(spec.bootloader, spec.firmware)?;
    if spec.default_slot == Slot::B && spec.slot_b.is_none() {
        return Err(Error::Invalid(
            "default slot B needs a slot B build (--slot-b-version)".into(),
        ));
    }
    fs::create_dir_all(&spec.out_dir).io("creating the output directory", &spec.out_dir)?;
    let work = spec.out_dir.join("work");
    if work.exists() {
        fs::remove_dir_all(&work).io("emptying", &work)?;
    }
    fs::create_dir_all(&work).io("creating", &work)?;

    let kernel = kernel::fetch(&spec.cache_dir)?;
    let mods = ModuleDb::load(&kernel.modules_dir)?.resolve(modules::WANTED, modules::SOFTDEPS)?;

    let mut esp_files = Vec::new();
    let mut parts: Vec<(&'static str, PathBuf)> = Vec::new();
    let mut entries = Vec::new();
    let mut default_initrd = None;
    let slots = [
        (Slot::A, Some(&spec.slot_a)),
        (Slot::B, spec.slot_b.as_ref()),
    ];
    for (slot, build) in slots {
        let Some(build) = build else { continue };
        let (initrd, root) = build_slot(spec, slot, build, &kernel, &mods, &work)?;
        if slot == spec.default_slot {
            let kept = spec.out_dir.join("initrd-default.img");
            fs::copy(&initrd, &kept).io("copying the default slot's initramfs to", &kept)?;
            default_initrd = Some((kept, build.version.clone()));
        }
        esp_files.push(EspFile::from_path(
            slot.layout().esp_kernel,
            &kernel.vmlinuz,
        ));
        esp_files.push(EspFile::from_path(slot.layout().esp_initrd, &initrd));
        parts.push((slot.layout().partition_label, root));
        entries.push(BootEntry {
            slot,
            version: build.version.clone(),
        });
    }

    let disk_path = spec.out_dir.join("disk.img");
    // The table comes first: the loader entries name the slot partitions
    // by its unique GUIDs.
    let table = disk::new_table(&disk_path)?;
    let params = match &spec.extra_kernel_params {
        None => loader::KERNEL_PARAMS.to_owned(),
        Some(extra) => format!("{} {extra}", loader::KERNEL_PARAMS),
    };
    for f in loader::loader_files(
        spec.bootloader,
        &entries,
        spec.default_slot,
        &table,
        &params,
    )? {
        esp_files.push(EspFile::from_bytes(&f.path, f.contents));
    }
    let mut bios_core_img = None;
    match (spec.bootloader, spec.firmware) {
        (Bootloader::Grub, Firmware::Bios) => {
            let core = work.join("core.img");
            grub::build_bios_core(&core)?;
            bios_core_img = Some(core);
        }
        (Bootloader::Grub, Firmware::Uefi) => {
            let efi = work.join("grubx64.efi");
            grub::build_efi_image(&efi)?;
            esp_files.push(EspFile::from_path(layout::ESP_EFI_BOOT, &efi));
        }
        (Bootloader::SdBoot, _) => {
            esp_files.push(EspFile::from_path(
                layout::ESP_EFI_BOOT,
                Path::new(SYSTEMD_BOOT_EFI),
            ));
        }
    }

    let esp_index = layout::ESP_PARTITION_NUMBER - 1;
    let esp_img = work.join("esp.img");
    let esp_label = layout::PARTITIONS[esp_index]
        .fs_label
        .unwrap_or(layout::LABEL_ESP);
    esp::build(
        &esp_img,
        layout::partition_size(esp_index),
        esp_label,
        &esp_files,
        &work.join("esp-files"),
    )?;
    parts.push((layout::LABEL_ESP, esp_img));

    for label in [layout::LABEL_STATE, layout::LABEL_EPHEMERAL] {
        let index = layout::index_of(label)
            .ok_or_else(|| Error::Invalid(format!("no {label} in the layout")))?;
        let img = work.join(format!("{}.ext4", label.to_ascii_lowercase()));
        disk::make_ext4(
            &img,
            layout::partition_size(index),
            layout::PARTITIONS[index].fs_label.unwrap_or(label),
        )?;
        parts.push((layout::PARTITIONS[index].label, img));
    }

    let meta_img = work.join("meta.img");
    write_meta(&meta_img, spec)?;
    parts.push((layout::LABEL_META, meta_img));

    disk::assemble(
        &disk_path,
        &table,
        &DiskContents {
            partitions: parts,
            bios_core_img,
        },
    )?;

    let ovmf_vars = match spec.firmware {
        Firmware::Uefi => {
            let vars = spec.out_dir.join(qemu::OVMF_VARS_FILE);
            qemu::fresh_ovmf_vars(&vars)?;
            Some(vars)
        }
        Firmware::Bios => None,
    };
    fs::remove_dir_all(&work).io("removing", &work)?;
    let direct_boot = match default_initrd {
        Some((initrd, version)) => {
            let partuuid = loader::slot_partuuid(&table, spec.default_slot)?;
            let cmdline = bascule_boot::slot::entry_cmdline(
                spec.default_slot,
                Some(&version),
                Some(partuuid),
                &params,
            )
            .map_err(|e| Error::Invalid(format!("slot {}: {e}", spec.default_slot)))?;
            Some(qemu::DirectBoot {
                kernel: kernel.vmlinuz.clone(),
                initrd,
                cmdline,
            })
        }
        None => None,
    };
    Ok(BuiltImage {
        disk: disk_path,
        ovmf_vars,
        bootloader: spec.bootloader,
        firmware: spec.firmware,
        kernel_version: kernel.version,
        direct_boot,
    })
}

/// One slot's initramfs and squashfs, under `work/slot-X/`.
pub(crate) fn build_slot(
    spec: &ImageSpec,
    slot: Slot,
    build: &SlotBuild,
    kernel: &Kernel,
    mods: &[modules::Module],
    work: &Path,
) -> Result<(PathBuf, PathBuf)> {
    let dir = work.join(format!("slot-{slot}"));
    fs::create_dir_all(&dir).io("creating", &dir)?;
    for (what, path) in [("init", &build.init), ("CLI", &build.cli)] {
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "slot {slot}: the {what} binary {} does not exist; build it first",
                path.display()
            )));
        }
    }
    let init = match &build.initramfs_init {
        InitramfsInit::SameAsRoot => Init::Binary(&build.init),
        InitramfsInit::BusyboxScript(script) => Init::BusyboxScript {
            busybox: &spec.busybox,
            script,
        },
    };
    let initrd = dir.join("initrd.img");
    initramfs::build(
        &InitramfsSpec {
            init,
            kernel,
            modules: mods,
            version: &build.version,
        },
        &initrd,
    )?;

    let services: Vec<(&str, &str)> = spec
        .services
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    let root = dir.join("root.squashfs");
    let host_tools: Vec<squashfs::HostTool> = squashfs::E2FSPROGS
        .iter()
        .chain(&spec.extra_host_tools)
        .copied()
        .collect();
    let rootfs = RootfsSpec {
        init: &build.init,
        cli: &build.cli,
        busybox: &spec.busybox,
        host_tools: &host_tools,
        host_files: squashfs::HOST_CONFIG_FILES,
        version: &build.version,
        services: &services,
        overlay_dir: spec.root_overlay.as_deref(),
        extra_files: &spec.extra_root_files,
        trusted_keys: &spec.trusted_keys,
    };
    squashfs::build(&rootfs, &dir.join("staging"), &root)?;
    Ok((initrd, root))
}

/// The META record of a new disk: each built slot good with its version,
/// an unbuilt slot empty, the default slot active. Written with the same
/// code the init uses, so the first boot reads a record, not a blank.
fn write_meta(path: &Path, spec: &ImageSpec) -> Result<()> {
    use bascule_boot::meta::{self, MetaLayout};
    use bascule_boot::meta_record::{MetaRecord, SlotId, SlotInfo, SlotState};
    let mut record = MetaRecord::fresh(spec.default_slot, "");
    for (slot, build) in [
        (Slot::A, Some(&spec.slot_a)),
        (Slot::B, spec.slot_b.as_ref()),
    ] {
        *record.slot_info_mut(slot) = match build {
            Some(b) => SlotInfo {
                version: b.version.clone(),
                state: SlotState::Good as i32,
                ..Default::default()
            },
            None => SlotInfo {
                version: String::new(),
                state: SlotState::Empty as i32,
                ..Default::default()
            },
        };
    }
    record.active_slot = SlotId::from(spec.default_slot) as i32;
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .io("creating", path)?;
    file.set_len(MetaLayout::DEFAULT.min_partition_size())
        .io("sizing", path)?;
    meta::write_meta(&file, &MetaLayout::DEFAULT, &record).map_err(|e| {
        Error::Invalid(format!(
            "writing the META record to {}: {e}",
            path.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_checks_combinations() {
        assert_eq!(
            "sd-boot".parse::<Bootloader>().ok(),
            Some(Bootloader::SdBoot)
        );
        assert_eq!("uefi".parse::<Firmware>().ok(), Some(Firmware::Uefi));
        assert!("lilo".parse::<Bootloader>().is_err());
        assert!(check_combination(Bootloader::SdBoot, Firmware::Bios).is_err());
        for (b, f) in [
            (Bootloader::Grub, Firmware::Bios),
            (Bootloader::Grub, Firmware::Uefi),
            (Bootloader::SdBoot, Firmware::Uefi),
        ] {
            check_combination(b, f).expect("supported");
        }
    }
}
