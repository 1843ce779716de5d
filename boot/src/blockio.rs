//! Positioned block I/O: the one seam between the on-disk formats (grubenv,
//! META) and the devices or files that hold them.
//!
//! Writers in this crate never truncate, append or re-allocate: they rewrite
//! bytes at fixed offsets of a region whose size does not change, then sync.
//! [`MemBlock`] is an in-memory device for tests, with a way to cut the power
//! in the middle of a write.

use std::fs::File;
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

/// A fixed-size region read and written at explicit offsets.
pub trait BlockIo {
    /// The size of the region in bytes.
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `offset`; a short read is an error.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (fsync).
    fn sync(&self) -> io::Result<()>;
}

impl BlockIo for File {
    /// The size by seeking to the end, which also works for block devices
    /// (whose metadata length is 0).
    fn size(&self) -> io::Result<u64> {
        let mut f = self;
        f.seek(SeekFrom::End(0))
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.sync_all()
    }
}

impl<T: BlockIo + ?Sized> BlockIo for &T {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        (**self).write_at(buf, offset)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

/// An in-memory, fixed-size device for tests.
///
/// [`MemBlock::cut_power_after`] makes a later write stop part way, as a
/// power cut would: the bytes before the cut land, the rest do not, and the
/// write (and every later one) fails.
#[derive(Debug, Default)]
pub struct MemBlock {
    inner: Mutex<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    data: Vec<u8>,
    /// Bytes that may still be written before the power goes.
    budget: Option<usize>,
    writes: usize,
    syncs: usize,
}

impl MemBlock {
    /// A zero-filled device of `len` bytes.
    pub fn new(len: usize) -> Self {
        Self::from_vec(vec![0; len])
    }

    /// A device holding `data`.
    pub fn from_vec(data: Vec<u8>) -> Self {
        MemBlock {
            inner: Mutex::new(MemInner {
                data,
                ..MemInner::default()
            }),
        }
    }

    fn lock(&self) -> io::Result<MutexGuard<'_, MemInner>> {
        self.inner
            .lock()
            .map_err(|_| io::Error::other("MemBlock mutex poisoned"))
    }

    /// A copy of the whole device.
    pub fn contents(&self) -> io::Result<Vec<u8>> {
        Ok(self.lock()?.data.clone())
    }

    /// Overwrites bytes directly (no power-cut accounting): for corrupting a
    /// device in tests.
    pub fn poke(&self, offset: usize, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock()?;
        let end = offset
            .checked_add(bytes.len())
            .filter(|&end| end <= inner.data.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "poke past the end"))?;
        inner.data[offset..end].copy_from_slice(bytes);
        Ok(())
    }

    /// After `bytes` more bytes have been written, the power goes: the write
    /// in progress stops there and fails, and so does every later write.
    pub fn cut_power_after(&self, bytes: usize) -> io::Result<()> {
        self.lock()?.budget = Some(bytes);
        Ok(())
    }

    /// How many `write_at` calls completed.
    pub fn write_count(&self) -> io::Result<usize> {
        Ok(self.lock()?.writes)
    }

    /// How many `sync` calls were made.
    pub fn sync_count(&self) -> io::Result<usize> {
        Ok(self.lock()?.syncs)
    }
}

fn range(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("access of {len} bytes at offset {offset} past the end ({size} bytes)"),
        )),
    }
}

impl BlockIo for MemBlock {
    fn size(&self) -> io::Result<u64> {
        Ok(self.lock()?.data.len() as u64)
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let inner = self.lock()?;
        let r = range(offset, buf.len(), inner.data.len())?;
        buf.copy_from_slice(&inner.data[r]);
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut inner = self.lock()?;
        let r = range(offset, buf.len(), inner.data.len())?;
        match inner.budget {
            Some(budget) if budget < buf.len() => {
                let start = r.start;
                inner.data[start..start + budget].copy_from_slice(&buf[..budget]);
                inner.budget = Some(0);
                Err(io::Error::other("power cut during write"))
            }
            _ => {
                inner.data[r].copy_from_slice(buf);
                if let Some(budget) = inner.budget.as_mut() {
                    *budget -= buf.len();
                }
                inner.writes += 1;
                Ok(())
            }
        }
    }

    fn sync(&self) -> io::Result<()> {
        self.lock()?.syncs += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_block_reads_writes_and_bounds() {
        let m = MemBlock::new(8);
        m.write_at(b"abc", 2).unwrap();
        let mut buf = [0u8; 4];
        m.read_at(&mut buf, 1).unwrap();
        assert_eq!(&buf, b"\0abc");
        assert!(m.write_at(b"xyz", 6).is_err());
        assert!(m.read_at(&mut buf, 5).is_err());
        assert_eq!(m.size().unwrap(), 8);
        m.sync().unwrap();
        assert_eq!(m.sync_count().unwrap(), 1);
        assert_eq!(m.write_count().unwrap(), 1);
    }

    #[test]
    fn mem_block_power_cut_keeps_a_prefix() {
        let m = MemBlock::new(8);
        m.cut_power_after(3).unwrap();
        assert!(m.write_at(b"12345", 0).is_err());
        assert_eq!(m.contents().unwrap(), b"123\0\0\0\0\0");
        assert!(m.write_at(b"x", 7).is_err());
    }

    #[test]
    fn file_block_io() {
        let f = tempfile::tempfile().unwrap();
        f.set_len(16).unwrap();
        BlockIo::write_at(&f, b"hello", 4).unwrap();
        BlockIo::sync(&f).unwrap();
        let mut buf = [0u8; 5];
        BlockIo::read_at(&f, &mut buf, 4).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(BlockIo::size(&f).unwrap(), 16);
        let mut big = [0u8; 20];
        assert!(BlockIo::read_at(&f, &mut big, 0).is_err());
    }
}
