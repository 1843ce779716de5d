//! The META partition: two copies of the upgrade record at fixed offsets,
//! so that a write torn by a power cut never loses the record.
//!
//! Each copy (all integers little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `BASCMETA` |
//! | 8 | 4 | format version (1) |
//! | 12 | 4 | payload length N |
//! | 16 | 8 | sequence number |
//! | 24 | N | the [`MetaRecord`], protobuf-encoded |
//! | 24+N | 4 | CRC32 (IEEE) of bytes 0..24+N |
//!
//! A write goes to the older copy (the invalid one, or the one with the
//! lower sequence number) with the newest sequence number plus one, then is
//! synced and read back. A read takes the valid copy with the highest
//! sequence number. So at any moment at least one copy holds a complete
//! record: the newest one, or the one before it while a write is torn. A u64
//! sequence number does not wrap in practice (one write a second for 5×10¹¹
//! years); reaching the end is an error, not a wrap.

use std::fmt;
use std::io;

use prost::Message;

use crate::blockio::BlockIo;
use crate::meta_record::MetaRecord;

/// The magic at the start of each copy.
pub const MAGIC: [u8; 8] = *b"BASCMETA";
/// The copy format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Magic, format version, payload length and sequence number.
pub const HEADER_LEN: usize = 24;
/// The CRC32 after the payload.
pub const CRC_LEN: usize = 4;

/// Where the two copies live in the partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaLayout {
    /// Byte offsets of copy 0 and copy 1.
    pub offsets: [u64; 2],
    /// Bytes reserved for each copy (header, record and CRC must fit).
    pub copy_size: u64,
}

impl MetaLayout {
    /// 64 KiB per copy, at 0 and 64 KiB: the copies never share a sector or
    /// a page, on 512-byte and 4 KiB-sector disks alike.
    pub const DEFAULT: MetaLayout = MetaLayout {
        offsets: [0, 64 * 1024],
        copy_size: 64 * 1024,
    };

    /// The smallest partition that holds both copies.
    pub fn min_partition_size(&self) -> u64 {
        self.offsets
            .iter()
            .map(|o| o.saturating_add(self.copy_size))
            .max()
            .unwrap_or(0)
    }

    fn max_payload(&self) -> usize {
        (self.copy_size as usize).saturating_sub(HEADER_LEN + CRC_LEN)
    }
}

impl Default for MetaLayout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why one copy is not usable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyProblem {
    /// Every byte of the copy is zero (never written).
    Blank,
    BadMagic,
    UnsupportedVersion(u32),
    BadLength(u32),
    BadCrc {
        stored: u32,
        computed: u32,
    },
    /// The CRC matches but the payload is not a record.
    Undecodable(String),
}

impl fmt::Display for CopyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CopyProblem::Blank => write!(f, "all zero (never written)"),
            CopyProblem::BadMagic => write!(f, "bad magic"),
            CopyProblem::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            CopyProblem::BadLength(n) => write!(f, "payload length {n} does not fit the copy"),
            CopyProblem::BadCrc { stored, computed } => write!(
                f,
                "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            CopyProblem::Undecodable(e) => write!(f, "CRC good but record undecodable: {e}"),
        }
    }
}

/// The state of one copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyStatus {
    Valid { sequence: u64 },
    Invalid(CopyProblem),
}

/// Errors reading or writing META.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("META: no valid copy: copy 0 at offset {}: {}; copy 1 at offset {}: {}",
        offsets[0], problems[0], offsets[1], problems[1])]
    NoValidCopy {
        offsets: [u64; 2],
        problems: [CopyProblem; 2],
    },
    #[error("META: partition is {len} bytes, the layout needs {needed}")]
    PartitionTooSmall { len: u64, needed: u64 },
    #[error("META: encoded record is {len} bytes, a copy holds at most {max}")]
    RecordTooLarge { len: usize, max: usize },
    #[error("META: sequence number exhausted (u64::MAX reached)")]
    SequenceExhausted,
    #[error("META: copy {copy} at offset {offset}: read back differs from what was written")]
    VerifyFailed { copy: usize, offset: u64 },
    #[error("META: copy {copy} at offset {offset}: {step}: {source}")]
    Io {
        copy: usize,
        offset: u64,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("META: size: {0}")]
    Size(#[source] io::Error),
}

/// A record read from META.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetaRead {
    pub record: MetaRecord,
    pub sequence: u64,
    /// Which copy (0 or 1) it came from.
    pub copy: usize,
    /// The state of the other copy (invalid after a torn write, until the
    /// next write repairs it).
    pub other: CopyStatus,
}

/// What META holds.
#[allow(clippy::large_enum_variant)] // read once per boot, never stored in bulk
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MetaState {
    /// Both copies all zero: a new disk.
    Blank,
    Record(MetaRead),
}

/// Where a write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetaWritten {
    pub copy: usize,
    pub sequence: u64,
}

/// Encodes one copy: header, payload, CRC.
pub fn encode_copy(record: &MetaRecord, sequence: u64) -> Vec<u8> {
    let payload = record.encode_to_vec();
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + CRC_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&sequence.to_le_bytes());
    out.extend_from_slice(&payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn le_u32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

/// Decodes one copy region (the whole `copy_size` bytes).
pub fn decode_copy(region: &[u8]) -> Result<(MetaRecord, u64), CopyProblem> {
    if region.iter().all(|&b| b == 0) {
        return Err(CopyProblem::Blank);
    }
    if region.len() < HEADER_LEN + CRC_LEN || region[..8] != MAGIC {
        return Err(CopyProblem::BadMagic);
    }
    let version = le_u32(&region[8..]);
    if version != FORMAT_VERSION {
        return Err(CopyProblem::UnsupportedVersion(version));
    }
    let len = le_u32(&region[12..]);
    let end = HEADER_LEN + len as usize;
    if end + CRC_LEN > region.len() {
        return Err(CopyProblem::BadLength(len));
    }
    let sequence = le_u64(&region[16..]);
    let stored = le_u32(&region[end..]);
    let computed = crc32fast::hash(&region[..end]);
    if stored != computed {
        return Err(CopyProblem::BadCrc { stored, computed });
    }
    let record = MetaRecord::decode(&region[HEADER_LEN..end])
        .map_err(|e| CopyProblem::Undecodable(e.to_string()))?;
    Ok((record, sequence))
}

fn check_size<B: BlockIo + ?Sized>(dev: &B, layout: &MetaLayout) -> Result<(), MetaError> {
    let len = dev.size().map_err(MetaError::Size)?;
    let needed = layout.min_partition_size();
    if len < needed {
        return Err(MetaError::PartitionTooSmall { len, needed });
    }
    Ok(())
}

type Copy = Result<(MetaRecord, u64), CopyProblem>;

fn read_copies<B: BlockIo + ?Sized>(dev: &B, layout: &MetaLayout) -> Result<[Copy; 2], MetaError> {
    check_size(dev, layout)?;
    let mut out: [Copy; 2] = [Err(CopyProblem::Blank), Err(CopyProblem::Blank)];
    for (copy, slot) in out.iter_mut().enumerate() {
        let offset = layout.offsets[copy];
        let mut region = vec![0u8; layout.copy_size as usize];
        dev.read_at(&mut region, offset)
            .map_err(|source| MetaError::Io {
                copy,
                offset,
                step: "read",
                source,
            })?;
        *slot = decode_copy(&region);
    }
    Ok(out)
}

/// Reads the newest valid record.
pub fn read_meta<B: BlockIo + ?Sized>(
    dev: &B,
    layout: &MetaLayout,
) -> Result<MetaState, MetaError> {
    let read = |record, sequence, copy, other| {
        Ok(MetaState::Record(MetaRead {
            record,
            sequence,
            copy,
            other,
        }))
    };
    let [c0, c1] = read_copies(dev, layout)?;
    match (c0, c1) {
        (Ok((r0, s0)), Ok((r1, s1))) => {
            if s1 > s0 {
                read(r1, s1, 1, CopyStatus::Valid { sequence: s0 })
            } else {
                read(r0, s0, 0, CopyStatus::Valid { sequence: s1 })
            }
        }
        (Ok((r, s)), Err(p)) => read(r, s, 0, CopyStatus::Invalid(p)),
        (Err(p), Ok((r, s))) => read(r, s, 1, CopyStatus::Invalid(p)),
        (Err(CopyProblem::Blank), Err(CopyProblem::Blank)) => Ok(MetaState::Blank),
        (Err(p0), Err(p1)) => Err(MetaError::NoValidCopy {
            offsets: layout.offsets,
            problems: [p0, p1],
        }),
    }
}

/// Writes `record` to the older copy with the next sequence number, syncs,
/// and reads it back.
pub fn write_meta<B: BlockIo + ?Sized>(
    dev: &B,
    layout: &MetaLayout,
    record: &MetaRecord,
) -> Result<MetaWritten, MetaError> {
    let copies = read_copies(dev, layout)?;
    // The older copy: the invalid one, else the lower sequence number.
    let (copy, newest) = match (&copies[0], &copies[1]) {
        (Ok((_, s0)), Ok((_, s1))) => {
            if s1 > s0 {
                (0, *s1)
            } else {
                (1, *s0)
            }
        }
        (Ok((_, s)), Err(_)) => (1, *s),
        (Err(_), Ok((_, s))) => (0, *s),
        (Err(_), Err(_)) => (0, 0),
    };
    let sequence = newest.checked_add(1).ok_or(MetaError::SequenceExhausted)?;
    let bytes = encode_copy(record, sequence);
    let max = layout.max_payload();
    if bytes.len() - HEADER_LEN - CRC_LEN > max {
        return Err(MetaError::RecordTooLarge {
            len: bytes.len() - HEADER_LEN - CRC_LEN,
            max,
        });
    }
    let offset = layout.offsets[copy];
    let io_err = |step| {
        move |source| MetaError::Io {
            copy,
            offset,
            step,
            source,
        }
    };
    dev.write_at(&bytes, offset).map_err(io_err("write"))?;
    dev.sync().map_err(io_err("fsync"))?;
    let mut back = vec![0u8; bytes.len()];
    dev.read_at(&mut back, offset)
        .map_err(io_err("read back"))?;
    if back != bytes {
        return Err(MetaError::VerifyFailed { copy, offset });
    }
    Ok(MetaWritten { copy, sequence })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::MemBlock;
    use crate::meta_record::{Failure, PendingTry, SlotId, SlotState};
    use crate::slot::Slot;

    const L: MetaLayout = MetaLayout::DEFAULT;

    fn dev() -> MemBlock {
        MemBlock::new(L.min_partition_size() as usize)
    }

    fn rec(version: &str) -> MetaRecord {
        MetaRecord::fresh(Slot::A, version)
    }

    fn read(d: &MemBlock) -> MetaRead {
        match read_meta(d, &L).unwrap() {
            MetaState::Record(r) => r,
            MetaState::Blank => panic!("blank"),
        }
    }

    #[test]
    fn blank_disk() {
        assert_eq!(read_meta(&dev(), &L).unwrap(), MetaState::Blank);
    }

    #[test]
    fn writes_alternate_and_newest_wins() {
        let d = dev();
        assert_eq!(
            write_meta(&d, &L, &rec("1")).unwrap(),
            MetaWritten {
                copy: 0,
                sequence: 1
            }
        );
        let r = read(&d);
        assert_eq!(
            (r.copy, r.sequence, r.other.clone()),
            (0, 1, CopyStatus::Invalid(CopyProblem::Blank))
        );
        assert_eq!(
            write_meta(&d, &L, &rec("2")).unwrap(),
            MetaWritten {
                copy: 1,
                sequence: 2
            }
        );
        assert_eq!(
            write_meta(&d, &L, &rec("3")).unwrap(),
            MetaWritten {
                copy: 0,
                sequence: 3
            }
        );
        let r = read(&d);
        assert_eq!(r.record, rec("3"));
        assert_eq!(
            (r.copy, r.sequence, r.other),
            (0, 3, CopyStatus::Valid { sequence: 2 })
        );
        assert_eq!(d.sync_count().unwrap(), 3);
    }

    #[test]
    fn full_record_survives() {
        let d = dev();
        let mut r = rec("1.0");
        r.set_previous_slot(SlotId::B);
        r.pending_try = Some(PendingTry {
            slot: SlotId::B as i32,
            version: "1.1".into(),
            attempts: 2,
            kind: 0,
        });
        r.last_failure = Some(Failure {
            slot: SlotId::B as i32,
            version: "1.1".into(),
            reason: "kernel panic before init".into(),
            at_unix_secs: 42,
        });
        r.slot_info_mut(Slot::B).set_state(SlotState::Bad);
        write_meta(&d, &L, &r).unwrap();
        assert_eq!(read(&d).record, r);
    }

    #[test]
    fn torn_write_keeps_previous_record() {
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        write_meta(&d, &L, &rec("2")).unwrap();
        // The third write goes to copy 0; the power goes half way through.
        let len = encode_copy(&rec("3"), 3).len();
        d.cut_power_after(len / 2).unwrap();
        assert!(matches!(
            write_meta(&d, &L, &rec("3")),
            Err(MetaError::Io {
                copy: 0,
                step: "write",
                ..
            })
        ));
        let r = read(&d);
        assert_eq!((r.record, r.sequence, r.copy), (rec("2"), 2, 1));
        assert!(matches!(
            r.other,
            CopyStatus::Invalid(CopyProblem::BadCrc { .. })
        ));
    }

    #[test]
    fn torn_header_keeps_previous_record() {
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        d.cut_power_after(10).unwrap();
        assert!(write_meta(&d, &L, &rec("2")).is_err());
        let r = read(&d);
        assert_eq!((r.record, r.copy), (rec("1"), 0));
        // Magic and part of the version landed: the CRC catches the rest.
        assert!(matches!(
            r.other,
            CopyStatus::Invalid(CopyProblem::BadCrc { .. })
        ));
    }

    #[test]
    fn torn_copy_is_overwritten_next() {
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        write_meta(&d, &L, &rec("2")).unwrap();
        // Corrupt copy 0 (the older); the next write goes there anyway.
        d.poke(30, &[0xff]).unwrap();
        assert_eq!(
            write_meta(&d, &L, &rec("3")).unwrap(),
            MetaWritten {
                copy: 0,
                sequence: 3
            }
        );
        // Now corrupt copy 0, the newest: reads fall back to copy 1, and the
        // next write repairs copy 0, again with sequence 3.
        d.poke(L.offsets[0] as usize + 30, &[0xff]).unwrap();
        let r = read(&d);
        assert_eq!((r.record, r.copy), (rec("2"), 1));
        assert_eq!(
            write_meta(&d, &L, &rec("4")).unwrap(),
            MetaWritten {
                copy: 0,
                sequence: 3
            }
        );
    }

    #[test]
    fn bit_flip_in_newest_copy_falls_back() {
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        write_meta(&d, &L, &rec("2")).unwrap();
        // Flip one payload bit of copy 1 (the newest).
        let off = L.offsets[1] as usize + HEADER_LEN + 3;
        let mut b = [0u8];
        d.read_at(&mut b, off as u64).unwrap();
        d.poke(off, &[b[0] ^ 0x10]).unwrap();
        let r = read(&d);
        assert_eq!((r.record, r.copy, r.sequence), (rec("1"), 0, 1));
        assert!(matches!(
            r.other,
            CopyStatus::Invalid(CopyProblem::BadCrc { .. })
        ));
        // A flipped sequence number bit is caught by the CRC too.
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        write_meta(&d, &L, &rec("2")).unwrap();
        d.poke(L.offsets[0] as usize + 16 + 7, &[0x80]).unwrap();
        assert_eq!(read(&d).record, rec("2"));
    }

    #[test]
    fn both_copies_bad_is_a_clear_error() {
        let d = dev();
        write_meta(&d, &L, &rec("1")).unwrap();
        write_meta(&d, &L, &rec("2")).unwrap();
        d.poke(0, b"X").unwrap();
        d.poke(L.offsets[1] as usize + 8, &[9]).unwrap();
        let e = read_meta(&d, &L).unwrap_err();
        assert_eq!(
            e.to_string(),
            "META: no valid copy: copy 0 at offset 0: bad magic; \
             copy 1 at offset 65536: unsupported format version 9"
        );
        // One blank, one corrupt (a torn first write) is an error as well.
        let d = dev();
        d.poke(0, &MAGIC).unwrap();
        assert!(matches!(
            read_meta(&d, &L),
            Err(MetaError::NoValidCopy {
                problems: [CopyProblem::UnsupportedVersion(0), CopyProblem::Blank],
                ..
            })
        ));
    }

    #[test]
    fn large_sequence_numbers_compare_correctly_and_never_wrap() {
        let d = dev();
        // Copy 0 far beyond i64::MAX, copy 1 small: copy 0 is newest.
        d.poke(0, &encode_copy(&rec("big"), (1u64 << 63) + 5))
            .unwrap();
        d.poke(L.offsets[1] as usize, &encode_copy(&rec("small"), 3))
            .unwrap();
        assert_eq!(read(&d).record, rec("big"));
        // At the very end a write fails rather than wrapping to 0.
        d.poke(0, &encode_copy(&rec("last-1"), u64::MAX - 1))
            .unwrap();
        assert_eq!(
            write_meta(&d, &L, &rec("last")).unwrap(),
            MetaWritten {
                copy: 1,
                sequence: u64::MAX
            }
        );
        assert!(matches!(
            write_meta(&d, &L, &rec("wrap")),
            Err(MetaError::SequenceExhausted)
        ));
        assert_eq!(read(&d).record, rec("last"));
    }

    #[test]
    fn layout_and_size_checks() {
        let small = MemBlock::new(4096);
        assert!(matches!(
            read_meta(&small, &L),
            Err(MetaError::PartitionTooSmall {
                len: 4096,
                needed: 131072
            })
        ));
        let tiny = MetaLayout {
            offsets: [0, 64],
            copy_size: 64,
        };
        let d = MemBlock::new(128);
        let mut r = rec("x");
        r.last_failure = Some(Failure {
            reason: "y".repeat(100),
            ..Default::default()
        });
        assert!(matches!(
            write_meta(&d, &tiny, &r),
            Err(MetaError::RecordTooLarge { max: 36, .. })
        ));
        assert_eq!(d.write_count().unwrap(), 0);
    }

    #[test]
    fn copy_format_bytes() {
        let b = encode_copy(&MetaRecord::default(), 0x0102);
        assert_eq!(&b[..8], b"BASCMETA");
        assert_eq!(&b[8..12], &[1, 0, 0, 0]);
        assert_eq!(&b[12..16], &[0, 0, 0, 0]);
        assert_eq!(&b[16..24], &[2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(b.len(), HEADER_LEN + CRC_LEN);
        assert_eq!(&b[24..], &crc32fast::hash(&b[..24]).to_le_bytes());
        // An empty record with sequence 0 is still not "blank".
        let mut region = b.clone();
        region.resize(128, 0);
        assert_eq!(decode_copy(&region).unwrap().1, 0x0102);
    }

    #[test]
    fn works_on_a_real_file() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(L.min_partition_size()).unwrap();
        assert_eq!(read_meta(&f, &L).unwrap(), MetaState::Blank);
        write_meta(&f, &L, &rec("1")).unwrap();
        write_meta(&f, &L, &rec("2")).unwrap();
        match read_meta(&f, &L).unwrap() {
            MetaState::Record(r) => assert_eq!((r.record, r.sequence), (rec("2"), 2)),
            MetaState::Blank => panic!("blank"),
        }
    }
}
