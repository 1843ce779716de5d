//! GUID Partition Table: writer and reader (UEFI spec 2.10, chapter 5).
//!
//! Written by hand rather than by driving sgdisk/sfdisk so the image build
//! needs no partitioning tool and the same code reads the table back on the
//! running machine. Depends only on `std`, `thiserror` and `crc32fast`
//! (plus the layout's `Guid`), so bascule-init and the sequencer's "verify
//! disk" phase can use [`Gpt::read`] on a block device.
//!
//! On disk (512-byte sectors): LBA 0 protective MBR; LBA 1 primary header;
//! LBA 2..33 the 128 × 128-byte entry array; the backup entry array in the
//! 32 sectors before the last one, and the backup header in the last sector.

use crate::layout::{self, Guid};
use std::io::{self, Read, Seek, SeekFrom, Write};

pub const SECTOR: u64 = layout::SECTOR_SIZE;
pub const ENTRY_COUNT: u32 = 128;
pub const ENTRY_SIZE: u32 = 128;
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION_1_0: u32 = 0x0001_0000;
/// Sectors taken by the entry array (128 × 128 / 512).
const ENTRY_SECTORS: u64 = (ENTRY_COUNT as u64 * ENTRY_SIZE as u64) / SECTOR;
/// GPT names are 36 UTF-16 code units.
const NAME_UNITS: usize = 36;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("I/O error while {action}: {source}")]
    Io {
        action: &'static str,
        source: io::Error,
    },
    #[error("device is {0} bytes: too small for a GPT")]
    TooSmall(u64),
    #[error("partition {number} ({label}) spans LBA {first}..={last}, outside the usable LBA {usable_first}..={usable_last}")]
    OutOfRange {
        number: u32,
        label: String,
        first: u64,
        last: u64,
        usable_first: u64,
        usable_last: u64,
    },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: String, b: String },
    #[error("partition label {0:?} is longer than 36 UTF-16 units")]
    LabelTooLong(String),
    #[error("no valid GPT header: primary: {primary}; backup: {backup}")]
    NoValidHeader { primary: String, backup: String },
}

fn io_err(action: &'static str) -> impl FnOnce(io::Error) -> GptError {
    move |source| GptError::Io { action, source }
}

/// One partition entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// 1-based index in the entry array (`/dev/vdaN`, GRUB's `gptN`).
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive.
    pub last_lba: u64,
    pub attributes: u64,
    pub label: String,
}

impl Partition {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn size(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
}

/// A partition table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub total_sectors: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub partitions: Vec<Partition>,
}

/// Health of one header + entry-array copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyStatus {
    Valid,
    Invalid(String),
}

/// What [`Gpt::read`] found: the table, and the state of both copies.
#[derive(Clone, Debug)]
pub struct ReadReport {
    pub gpt: Gpt,
    pub primary: CopyStatus,
    pub backup: CopyStatus,
}

impl ReadReport {
    /// Both copies valid and describing the same table: what the "verify
    /// disk" phase insists on before writing a slot.
    pub fn fully_valid(&self) -> bool {
        self.primary == CopyStatus::Valid && self.backup == CopyStatus::Valid
    }
}

impl Gpt {
    /// The table for [`layout::PARTITIONS`] on a disk of `total_bytes`, with
    /// fresh unique GUIDs from `random` (16 random bytes per call).
    pub fn for_layout(
        total_bytes: u64,
        mut random: impl FnMut() -> [u8; 16],
    ) -> Result<Gpt, GptError> {
        let total_sectors = total_bytes / SECTOR;
        if total_sectors < 2 * (ENTRY_SECTORS + 1) + 2 {
            return Err(GptError::TooSmall(total_bytes));
        }
        let partitions = layout::PARTITIONS
            .iter()
            .enumerate()
            .map(|(i, p)| Partition {
                number: i as u32 + 1,
                type_guid: p.type_guid,
                unique_guid: Guid::from_random_bytes(random()),
                first_lba: layout::partition_offset(i) / SECTOR,
                last_lba: (layout::partition_offset(i) + layout::partition_size(i)) / SECTOR - 1,
                attributes: 0,
                label: p.label.to_string(),
            })
            .collect();
        let gpt = Gpt {
            disk_guid: Guid::from_random_bytes(random()),
            total_sectors,
            first_usable_lba: 2 + ENTRY_SECTORS,
            last_usable_lba: total_sectors - 2 - ENTRY_SECTORS,
            partitions,
        };
        gpt.check()?;
        Ok(gpt)
    }

    /// The partition with this GPT name.
    pub fn find(&self, label: &str) -> Option<&Partition> {
        self.partitions.iter().find(|p| p.label == label)
    }

    /// Checks ranges and overlaps, as sgdisk/sfdisk would.
    pub fn check(&self) -> Result<(), GptError> {
        for p in &self.partitions {
            if p.label.encode_utf16().count() > NAME_UNITS {
                return Err(GptError::LabelTooLong(p.label.clone()));
            }
            if p.first_lba < self.first_usable_lba
                || p.last_lba > self.last_usable_lba
                || p.last_lba < p.first_lba
            {
                return Err(GptError::OutOfRange {
                    number: p.number,
                    label: p.label.clone(),
                    first: p.first_lba,
                    last: p.last_lba,
                    usable_first: self.first_usable_lba,
                    usable_last: self.last_usable_lba,
                });
            }
        }
        for (i, a) in self.partitions.iter().enumerate() {
            for b in &self.partitions[i + 1..] {
                if a.first_lba <= b.last_lba && b.first_lba <= a.last_lba {
                    return Err(GptError::Overlap {
                        a: a.label.clone(),
                        b: b.label.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The 16 KiB entry array.
    fn entries(&self) -> Vec<u8> {
        let mut buf = vec![0u8; (ENTRY_COUNT * ENTRY_SIZE) as usize];
        for p in &self.partitions {
            let Some(slot) = (p.number as usize)
                .checked_sub(1)
                .filter(|i| *i < ENTRY_COUNT as usize)
            else {
                continue;
            };
            let e = &mut buf[slot * ENTRY_SIZE as usize..(slot + 1) * ENTRY_SIZE as usize];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.unique_guid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.label.encode_utf16().take(NAME_UNITS).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        buf
    }

    fn header(
        &self,
        current: u64,
        backup: u64,
        entries_lba: u64,
        entries_crc: u32,
    ) -> [u8; SECTOR as usize] {
        let mut h = [0u8; SECTOR as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION_1_0.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        // 16..20 header CRC, filled below; 20..24 reserved.
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRY_COUNT.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The protective MBR: one partition of type 0xEE covering the disk
    /// (capped at 2^32-1 sectors), no boot code (the GRUB BIOS install adds
    /// its own in the first 440 bytes).
    fn protective_mbr(&self) -> [u8; SECTOR as usize] {
        let mut m = [0u8; SECTOR as usize];
        let e = &mut m[446..462];
        e[0] = 0x00; // not active
        e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        e[4] = 0xEE;
        e[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]); // CHS "beyond"
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        let size = u32::try_from(self.total_sectors - 1).unwrap_or(u32::MAX);
        e[12..16].copy_from_slice(&size.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Writes the protective MBR and both copies. The backup goes first so
    /// that a write torn after it still leaves one valid copy describing
    /// the new table on the next read (as Bottlerocket's GRUB does).
    pub fn write<D: Write + Seek>(&self, dev: &mut D) -> Result<(), GptError> {
        self.check()?;
        let entries = self.entries();
        let crc = crc32fast::hash(&entries);
        let last = self.total_sectors - 1;
        let backup_entries_lba = last - ENTRY_SECTORS;
        let mut put = |lba: u64, bytes: &[u8]| -> Result<(), GptError> {
            dev.seek(SeekFrom::Start(lba * SECTOR))
                .map_err(io_err("seeking"))?;
            dev.write_all(bytes).map_err(io_err("writing the GPT"))
        };
        put(backup_entries_lba, &entries)?;
        put(last, &self.header(last, 1, backup_entries_lba, crc))?;
        put(2, &entries)?;
        put(1, &self.header(1, last, 2, crc))?;
        put(0, &self.protective_mbr())?;
        dev.flush().map_err(io_err("flushing the GPT"))
    }

    /// Reads and verifies both copies from a disk (image file or block
    /// device) of `total_bytes`. Succeeds when at least one copy is valid;
    /// the report says which.
    pub fn read<D: Read + Seek>(dev: &mut D, total_bytes: u64) -> Result<ReadReport, GptError> {
        let total_sectors = total_bytes / SECTOR;
        if total_sectors < 2 * (ENTRY_SECTORS + 1) + 2 {
            return Err(GptError::TooSmall(total_bytes));
        }
        let primary = read_copy(dev, 1, total_sectors)?;
        // The backup's location comes from the primary when it is readable,
        // else from the disk size.
        let backup_lba = match &primary {
            Ok(g) => g.1,
            Err(_) => total_sectors - 1,
        };
        let backup = read_copy(dev, backup_lba, total_sectors)?;
        let status = |r: &Result<(Gpt, u64), String>| match r {
            Ok(_) => CopyStatus::Valid,
            Err(e) => CopyStatus::Invalid(e.clone()),
        };
        let (mut p_status, b_status) = (status(&primary), status(&backup));
        match (primary, backup) {
            (Ok((p, _)), Ok((b, _))) => {
                if p != b {
                    p_status =
                        CopyStatus::Invalid("primary and backup describe different tables".into());
                }
                Ok(ReadReport {
                    gpt: p,
                    primary: p_status,
                    backup: b_status,
                })
            }
            (Ok((p, _)), Err(_)) => Ok(ReadReport {
                gpt: p,
                primary: p_status,
                backup: b_status,
            }),
            (Err(_), Ok((b, _))) => Ok(ReadReport {
                gpt: b,
                primary: p_status,
                backup: b_status,
            }),
            (Err(pe), Err(be)) => Err(GptError::NoValidHeader {
                primary: pe,
                backup: be,
            }),
        }
    }

    /// [`Gpt::read`] on a path (image file or block device).
    pub fn read_path(path: &std::path::Path) -> Result<ReadReport, GptError> {
        let mut f = std::fs::File::open(path).map_err(io_err("opening the disk"))?;
        // SEEK_END gives the size of block devices too (metadata does not).
        let size = f
            .seek(SeekFrom::End(0))
            .map_err(io_err("finding the disk size"))?;
        Gpt::read(&mut f, size)
    }
}

/// Reads one header at `lba` and its entry array. Outer error: I/O. Inner
/// error: why this copy is not valid. On success also returns the
/// alternate header's LBA.
fn read_copy<D: Read + Seek>(
    dev: &mut D,
    lba: u64,
    total_sectors: u64,
) -> Result<Result<(Gpt, u64), String>, GptError> {
    if lba == 0 || lba >= total_sectors {
        return Ok(Err(format!(
            "header LBA {lba} is outside the disk ({total_sectors} sectors)"
        )));
    }
    let mut h = [0u8; SECTOR as usize];
    dev.seek(SeekFrom::Start(lba * SECTOR))
        .map_err(io_err("seeking to a GPT header"))?;
    dev.read_exact(&mut h)
        .map_err(io_err("reading a GPT header"))?;
    let u32_at = |o: usize| u32::from_le_bytes([h[o], h[o + 1], h[o + 2], h[o + 3]]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&h[o..o + 8]);
        u64::from_le_bytes(b)
    };
    if &h[0..8] != SIGNATURE {
        return Ok(Err(format!("no \"EFI PART\" signature at LBA {lba}")));
    }
    let header_size = u32_at(12);
    if !(HEADER_SIZE..=SECTOR as u32).contains(&header_size) {
        return Ok(Err(format!("header size {header_size} at LBA {lba}")));
    }
    let mut crc_input = h[..header_size as usize].to_vec();
    crc_input[16..20].fill(0);
    if crc32fast::hash(&crc_input) != u32_at(16) {
        return Ok(Err(format!("header CRC mismatch at LBA {lba}")));
    }
    if u64_at(24) != lba {
        return Ok(Err(format!(
            "header at LBA {lba} says it is at LBA {}",
            u64_at(24)
        )));
    }
    let (count, size) = (u32_at(80), u32_at(84));
    if size < 128 || size % 8 != 0 || count == 0 || u64::from(count) * u64::from(size) > 1 << 20 {
        return Ok(Err(format!(
            "implausible entry array ({count} × {size} bytes) at LBA {lba}"
        )));
    }
    let entries_lba = u64_at(72);
    let (first_usable, last_usable) = (u64_at(40), u64_at(48));
    let entries_end = entries_lba.saturating_mul(SECTOR) + u64::from(count) * u64::from(size);
    if entries_end > total_sectors * SECTOR
        || last_usable >= total_sectors
        || first_usable > last_usable
    {
        return Ok(Err(format!("header at LBA {lba} points outside the disk")));
    }
    let mut entries = vec![0u8; (count * size) as usize];
    dev.seek(SeekFrom::Start(entries_lba * SECTOR))
        .map_err(io_err("seeking to the GPT entries"))?;
    dev.read_exact(&mut entries)
        .map_err(io_err("reading the GPT entries"))?;
    if crc32fast::hash(&entries) != u32_at(88) {
        return Ok(Err(format!(
            "entry array CRC mismatch (header at LBA {lba})"
        )));
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&h[56..72]);
    let partitions = entries
        .chunks_exact(size as usize)
        .enumerate()
        .filter_map(|(i, e)| parse_entry(i as u32 + 1, e))
        .collect();
    let gpt = Gpt {
        disk_guid: Guid(disk_guid),
        total_sectors,
        first_usable_lba: first_usable,
        last_usable_lba: last_usable,
        partitions,
    };
    Ok(Ok((gpt, u64_at(32))))
}

fn parse_entry(number: u32, e: &[u8]) -> Option<Partition> {
    let mut type_guid = [0u8; 16];
    type_guid.copy_from_slice(&e[0..16]);
    if type_guid == [0u8; 16] {
        return None;
    }
    let mut unique = [0u8; 16];
    unique.copy_from_slice(&e[16..32]);
    let u64_at = |o: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&e[o..o + 8]);
        u64::from_le_bytes(b)
    };
    let units: Vec<u16> = e[56..56 + 2 * NAME_UNITS]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|u| *u != 0)
        .collect();
    Some(Partition {
        number,
        type_guid: Guid(type_guid),
        unique_guid: Guid(unique),
        first_lba: u64_at(32),
        last_lba: u64_at(40),
        attributes: u64_at(48),
        label: String::from_utf16_lossy(&units),
    })
}

/// 16 bytes from the kernel's random pool, for partition and disk GUIDs.
pub fn random_bytes() -> io::Result<[u8; 16]> {
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b)
}

/// [`Gpt::for_layout`] with GUIDs from /dev/urandom.
pub fn layout_with_random_guids(total_bytes: u64) -> Result<Gpt, GptError> {
    let mut failure = None;
    let gpt = Gpt::for_layout(total_bytes, || {
        random_bytes().unwrap_or_else(|e| {
            failure = Some(e);
            [0; 16]
        })
    })?;
    match failure {
        Some(e) => Err(GptError::Io {
            action: "reading /dev/urandom",
            source: e,
        }),
        None => Ok(gpt),
    }
}

#[cfg(test)]
#[path = "gpt_tests.rs"]
mod tests;
