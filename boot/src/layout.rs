//! The disk layout: the one place that says which partitions a Bascule disk
//! has, in which order, of which type and size, and where each slot's kernel
//! and initramfs sit on the ESP.
//!
//! The image builder (`bascule-rootfs`) lays disks out from these constants;
//! the running init finds its partitions by these labels (and may check the
//! type GUIDs), and the upgrade sequencer checks target sizes against them.
//! Plain data and tiny pure helpers only: no I/O, no dependencies (a leaf:
//! it imports no other module of the crate, so every module may import it).
//! Each path on the ESP is spelled here once; the builder, the bootloader
//! adapters and the init all take it from here.
//!
//! Partition order is part of the contract: GRUB's prefix is compiled into its
//! core image as `(hd0,gptN)/grub`, with N = [`ESP_PARTITION_NUMBER`].

use std::fmt;
use std::path::{Path, PathBuf};

// `concat!` joins only literals, so the pieces the ESP paths share are
// macros: each piece is written once and the paths are derived from it.
macro_rules! esp_slots_dir {
    () => {
        "/bascule"
    };
}
macro_rules! kernel_name {
    () => {
        "vmlinuz"
    };
}
macro_rules! initrd_name {
    () => {
        "initrd.img"
    };
}
macro_rules! grub_dir {
    () => {
        "/grub"
    };
}
macro_rules! loader_dir {
    () => {
        "/loader"
    };
}
macro_rules! slot_layout_for {
    ($name:literal, $label:expr) => {
        SlotLayout {
            name: $name,
            partition_label: $label,
            esp_dir: concat!(esp_slots_dir!(), "/", $name),
            esp_kernel: concat!(esp_slots_dir!(), "/", $name, "/", kernel_name!()),
            esp_initrd: concat!(esp_slots_dir!(), "/", $name, "/", initrd_name!()),
        }
    };
}

/// Logical sector size the images are written with (and QEMU's virtio-blk
/// default).
pub const SECTOR_SIZE: u64 = 512;
/// One mebibyte, the unit every size below is expressed in.
pub const MIB: u64 = 1024 * 1024;
/// Every partition starts and ends on a 1 MiB boundary: what every partition
/// tool does, and what keeps filesystem blocks aligned with any underlying
/// erase block.
pub const ALIGNMENT: u64 = MIB;
/// The first partition starts here; the space before it holds the protective
/// MBR, the primary GPT header and its 128-entry array (34 sectors).
pub const FIRST_PARTITION_OFFSET: u64 = MIB;
/// Space left after the last partition for the backup entry array and header
/// (33 sectors), rounded up to the alignment.
pub const TRAILING_RESERVED: u64 = MIB;

/// A GUID kept in its on-disk (GPT, mixed-endian) byte order: the first three
/// fields little-endian, the last two as written.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const ZERO: Guid = Guid([0; 16]);

    /// Parses the canonical text form `XXXXXXXX-XXXX-XXXX-XXXX-XXXXXXXXXXXX`
    /// (either case). `const` so that the constants below are checked at
    /// compile time; returns `None` for anything else.
    pub const fn parse(text: &str) -> Option<Guid> {
        let s = text.as_bytes();
        if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
            return None;
        }
        // Byte i of the text form (big-endian reading) comes from these
        // character positions.
        const POS: [usize; 16] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34];
        let mut text_order = [0u8; 16];
        let mut i = 0;
        while i < 16 {
            let hi = match hex(s[POS[i]]) {
                Some(v) => v,
                None => return None,
            };
            let lo = match hex(s[POS[i] + 1]) {
                Some(v) => v,
                None => return None,
            };
            text_order[i] = hi << 4 | lo;
            i += 1;
        }
        Some(Guid(swap_mixed_endian(text_order)))
    }

    /// Same as [`Guid::parse`] for constants: a malformed literal fails the
    /// build instead of the boot.
    pub const fn from_str_const(text: &str) -> Guid {
        match Guid::parse(text) {
            Some(g) => g,
            None => panic!("malformed GUID literal"),
        }
    }

    /// Builds a random (version 4, RFC 4122 variant) GUID from 16 random
    /// bytes the caller supplies, so that this module stays free of I/O.
    pub const fn from_random_bytes(mut b: [u8; 16]) -> Guid {
        // Text-order bytes 6 and 8 carry the version and variant; byte 6 is
        // stored at on-disk index 7 (third field is little-endian).
        b[7] = (b[7] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    /// The bytes in text (big-endian) order.
    pub const fn text_order(&self) -> [u8; 16] {
        swap_mixed_endian(self.0)
    }

    /// The text form in lowercase: how the kernel (`PARTUUID=` in uevents,
    /// `root=PARTUUID=`) and blkid spell a partition's unique GUID.
    pub fn lowercase(&self) -> String {
        self.to_string().to_ascii_lowercase()
    }
}

const fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Converts between text order and on-disk order (the swap is its own
/// inverse).
const fn swap_mixed_endian(b: [u8; 16]) -> [u8; 16] {
    [
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
        b[14], b[15],
    ]
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.text_order();
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]
        )?;
        for byte in &b[10..] {
            write!(f, "{byte:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// GRUB's BIOS boot partition: holds core.img, no filesystem.
pub const TYPE_BIOS_BOOT: Guid = Guid::from_str_const("21686148-6449-6E6F-744E-656564454649");
/// EFI System Partition.
pub const TYPE_ESP: Guid = Guid::from_str_const("C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
/// Generic Linux filesystem data: STATE and EPHEMERAL are ordinary ext4.
pub const TYPE_LINUX_DATA: Guid = Guid::from_str_const("0FC63DAF-8483-4772-8E79-3D69D8477DE4");
/// Bascule META (raw upgrade record). A project-specific type so that no
/// other tool mistakes it for a filesystem or auto-mounts it.
pub const TYPE_BASCULE_META: Guid = Guid::from_str_const("6DBA9EE2-4A6B-4D04-8961-50424B3FF81E");
/// Bascule slot (raw read-only squashfs root). Project-specific for the same
/// reason, and deliberately not the Discoverable Partitions "root" type, so
/// that a systemd host never tries to boot or mount an inactive slot. Both
/// slots share it; the label tells them apart.
pub const TYPE_BASCULE_SLOT: Guid = Guid::from_str_const("5A459BA4-29FA-43C8-B52F-62D1CEBE971D");

pub const LABEL_BIOS_BOOT: &str = "BIOS-BOOT";
pub const LABEL_ESP: &str = "ESP";
pub const LABEL_META: &str = "META";
pub const LABEL_SLOT_A: &str = "SLOT-A";
pub const LABEL_SLOT_B: &str = "SLOT-B";
pub const LABEL_STATE: &str = "STATE";
pub const LABEL_EPHEMERAL: &str = "EPHEMERAL";

/// What a partition holds, so a builder or a checker knows what to expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Content {
    /// GRUB core.img, raw.
    BiosBoot,
    /// FAT32 filesystem.
    Vfat,
    /// Raw bytes, no filesystem (META).
    Raw,
    /// A slot's squashfs.
    Squashfs,
    /// ext4 filesystem.
    Ext4,
}

/// One partition of the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionSpec {
    /// GPT partition name, which is how everything finds the partition.
    pub label: &'static str,
    pub type_guid: Guid,
    pub size_mib: u64,
    pub content: Content,
    /// Filesystem label/volume name where the content has one.
    pub fs_label: Option<&'static str>,
}

const fn part(
    label: &'static str,
    type_guid: Guid,
    size_mib: u64,
    content: Content,
    fs_label: Option<&'static str>,
) -> PartitionSpec {
    PartitionSpec {
        label,
        type_guid,
        size_mib,
        content,
        fs_label,
    }
}

/// The partitions in on-disk order; partition number N (1-based, as in
/// `/dev/vdaN` and GRUB's `gptN`) is `PARTITIONS[N-1]`.
///
/// Sizes are small on purpose so test images build and copy fast: a slot
/// squashfs is a few MB, the ESP holds two ~8 MB kernels, two initramfs and
/// the bootloader. FAT32 needs at least 65525 clusters, which 64 MiB with
/// 512-byte clusters gives.
pub const PARTITIONS: [PartitionSpec; 7] = [
    part(LABEL_BIOS_BOOT, TYPE_BIOS_BOOT, 1, Content::BiosBoot, None),
    part(LABEL_ESP, TYPE_ESP, 64, Content::Vfat, Some("ESP")),
    part(LABEL_META, TYPE_BASCULE_META, 1, Content::Raw, None),
    part(
        LABEL_SLOT_A,
        TYPE_BASCULE_SLOT,
        128,
        Content::Squashfs,
        None,
    ),
    part(
        LABEL_SLOT_B,
        TYPE_BASCULE_SLOT,
        128,
        Content::Squashfs,
        None,
    ),
    part(
        LABEL_STATE,
        TYPE_LINUX_DATA,
        32,
        Content::Ext4,
        Some("STATE"),
    ),
    part(
        LABEL_EPHEMERAL,
        TYPE_LINUX_DATA,
        512,
        Content::Ext4,
        Some("EPHEMERAL"),
    ),
];

/// 1-based number of the ESP (GRUB's `(hd0,gpt2)`).
pub const ESP_PARTITION_NUMBER: usize = 2;
/// 1-based number of the BIOS boot partition.
pub const BIOS_BOOT_PARTITION_NUMBER: usize = 1;

/// Byte offset of partition `index` (0-based into [`PARTITIONS`]).
pub const fn partition_offset(index: usize) -> u64 {
    let mut offset = FIRST_PARTITION_OFFSET;
    let mut i = 0;
    while i < index {
        offset += PARTITIONS[i].size_mib * MIB;
        i += 1;
    }
    offset
}

/// Size in bytes of partition `index` (0-based).
pub const fn partition_size(index: usize) -> u64 {
    PARTITIONS[index].size_mib * MIB
}

/// Total size of a disk image built with this layout.
pub const DISK_SIZE: u64 = partition_offset(PARTITIONS.len()) + TRAILING_RESERVED;

/// 0-based index of the partition with this label.
pub fn index_of(label: &str) -> Option<usize> {
    PARTITIONS.iter().position(|p| p.label == label)
}

/// The partition with this label.
pub fn spec(label: &str) -> Option<&'static PartitionSpec> {
    PARTITIONS.iter().find(|p| p.label == label)
}

/// Kernel command-line key naming the running slot: `bascule.slot=A`.
/// (Parsing the command line is `Slot::from_cmdline`'s job.)
pub const CMDLINE_SLOT_KEY: &str = "bascule.slot";
/// Kernel command-line key carrying the image version of the entry, so a
/// booted machine (and a test) can tell which build a loader entry started.
pub const CMDLINE_VERSION_KEY: &str = "bascule.version";
/// The kernel command-line key naming the root partition; Bascule's
/// entries set it to `PARTUUID=<the slot partition's unique GUID>`.
pub const CMDLINE_ROOT_KEY: &str = "root";

/// Where one A/B slot lives: its partition and its ESP files. The slot
/// *type* (and the command-line parser) is `Slot`; this is only its data,
/// reached with `Slot::layout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlotLayout {
    /// "A" or "B": the `bascule.slot=` value and the ESP directory name.
    pub name: &'static str,
    /// GPT label of the slot's root filesystem partition.
    pub partition_label: &'static str,
    /// ESP directory with the slot's kernel and initramfs (absolute, `/`
    /// separated, as both GRUB and systemd-boot entries want).
    pub esp_dir: &'static str,
    /// ESP path of the slot's kernel.
    pub esp_kernel: &'static str,
    /// ESP path of the slot's initramfs.
    pub esp_initrd: &'static str,
}

pub const SLOT_A: SlotLayout = slot_layout_for!("A", LABEL_SLOT_A);
pub const SLOT_B: SlotLayout = slot_layout_for!("B", LABEL_SLOT_B);

/// Both slots, A first.
pub const SLOTS: [SlotLayout; 2] = [SLOT_A, SLOT_B];

/// File names inside a slot's ESP directory.
pub const ESP_KERNEL_NAME: &str = kernel_name!();
pub const ESP_INITRD_NAME: &str = initrd_name!();

impl SlotLayout {
    /// The other slot.
    pub fn other(&self) -> &'static SlotLayout {
        if self.name == SLOT_A.name {
            &SLOT_B
        } else {
            &SLOT_A
        }
    }
}

impl fmt::Display for SlotLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

/// Mount points inside the running system.
pub const MOUNT_STATE: &str = "/system/state";
pub const MOUNT_EPHEMERAL: &str = "/var";
pub const MOUNT_ESP: &str = "/boot";

/// GRUB's directory on the ESP (holds grub.cfg and grubenv).
pub const ESP_GRUB_DIR: &str = grub_dir!();
pub const ESP_GRUB_CFG: &str = concat!(grub_dir!(), "/grub.cfg");
pub const ESP_GRUBENV: &str = concat!(grub_dir!(), "/grubenv");
/// The removable-media loader path UEFI firmware boots with an empty
/// variable store.
pub const ESP_EFI_BOOT: &str = "/EFI/BOOT/BOOTX64.EFI";
pub const ESP_LOADER_CONF: &str = concat!(loader_dir!(), "/loader.conf");
pub const ESP_LOADER_ENTRIES: &str = concat!(loader_dir!(), "/entries");

/// An ESP path without its leading `/`, as joined onto a directory.
pub const fn esp_relative(path: &'static str) -> &'static str {
    match path.as_bytes() {
        [b'/', ..] => path.split_at(1).1,
        _ => path,
    }
}

/// Where an ESP path is when the ESP is mounted (or copied) at `esp`.
pub fn on_esp(esp: &Path, path: &str) -> PathBuf {
    esp.join(path.trim_start_matches('/'))
}

/// Inside the initramfs: the list of kernel modules to load, one absolute
/// `.ko` path per line in load order (dependencies first), optionally
/// followed by whitespace and module parameters; `#` starts a comment.
pub const INITRAMFS_MODULES_LOAD: &str = "/etc/bascule/modules.load";
/// Where the initramfs mounts the slot before switch_root.
pub const INITRAMFS_NEWROOT: &str = "/newroot";
/// The image version, in both the initramfs and the slot's root.
pub const VERSION_FILE: &str = "/etc/bascule/version";
/// Public keys this image trusts for upgrade bundles (in the slot's root).
pub const TRUSTED_KEYS_DIR: &str = "/etc/bascule/trusted-keys";
/// Service definitions (in the slot's root).
pub const SERVICES_DIR: &str = "/etc/bascule/services";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_round_trips_and_uses_mixed_endian() {
        let g = TYPE_ESP;
        assert_eq!(g.to_string(), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
        assert_eq!(&g.0[..4], &[0x28, 0x73, 0x2A, 0xC1]);
        assert_eq!(&g.0[8..], &[0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B]);
        assert_eq!(Guid::parse(&g.to_string().to_lowercase()), Some(g));
        assert_eq!(Guid::parse("C12A7328-F81F-11D2-BA4B-00A0C93EC93"), None);
        assert_eq!(Guid::parse("C12A7328XF81F-11D2-BA4B-00A0C93EC93B"), None);
    }

    #[test]
    fn random_guid_has_version_4() {
        let g = Guid::from_random_bytes([0xff; 16]);
        let s = g.to_string();
        assert_eq!(&s[14..15], "4");
        assert!(matches!(&s[19..20], "8" | "9" | "A" | "B"));
    }

    #[test]
    fn partitions_are_aligned_and_labels_unique() {
        for (i, p) in PARTITIONS.iter().enumerate() {
            assert_eq!(partition_offset(i) % ALIGNMENT, 0);
            assert!(p.size_mib > 0);
            assert_eq!(PARTITIONS.iter().filter(|q| q.label == p.label).count(), 1);
            // GPT names are 36 UTF-16 units.
            assert!(p.label.len() <= 36);
        }
        assert_eq!(PARTITIONS[ESP_PARTITION_NUMBER - 1].label, LABEL_ESP);
        assert_eq!(
            PARTITIONS[BIOS_BOOT_PARTITION_NUMBER - 1].label,
            LABEL_BIOS_BOOT
        );
        assert_eq!(DISK_SIZE % ALIGNMENT, 0);
        assert_eq!(index_of(LABEL_SLOT_B), Some(4));
    }

    #[test]
    fn slot_layouts_match_labels_and_paths() {
        for slot in &SLOTS {
            assert_eq!(
                slot.esp_kernel,
                format!("{}/{}", slot.esp_dir, ESP_KERNEL_NAME)
            );
            assert_eq!(
                slot.esp_initrd,
                format!("{}/{}", slot.esp_dir, ESP_INITRD_NAME)
            );
            assert_eq!(slot.esp_dir, format!("/bascule/{}", slot.name));
            assert_eq!(
                spec(slot.partition_label).map(|p| p.content),
                Some(Content::Squashfs)
            );
            assert_eq!(slot.other().other(), slot);
        }
        assert_eq!(SLOT_A.other().partition_label, "SLOT-B");
        assert_eq!(SLOT_B.esp_initrd, "/bascule/B/initrd.img");
    }

    #[test]
    fn esp_paths_join_under_a_mount_point() {
        assert_eq!(esp_relative(ESP_LOADER_ENTRIES), "loader/entries");
        assert_eq!(esp_relative("grub"), "grub");
        assert_eq!(
            on_esp(Path::new("/boot"), ESP_GRUBENV),
            Path::new("/boot/grub/grubenv")
        );
    }
}
