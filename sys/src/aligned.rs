//! Page-aligned buffers for O_DIRECT I/O, which needs the buffer, the
//! file offset and the length aligned to the device's logical block size.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// The alignment O_DIRECT needs on every device Bascule writes (4096
/// covers 512-byte and 4K-sector disks alike).
pub const ALIGN: usize = 4096;

/// A zeroed, `ALIGN`-aligned buffer whose length is a multiple of `ALIGN`.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    /// `len` rounded up to a multiple of [`ALIGN`]; None when `len` is 0 or
    /// the allocation fails.
    pub fn new(len: usize) -> Option<AlignedBuf> {
        let len = len.checked_next_multiple_of(ALIGN)?;
        let layout = Layout::from_size_align(len, ALIGN).ok()?;
        if layout.size() == 0 {
            return None;
        }
        // SAFETY: the layout has a non-zero size (checked above).
        let raw = unsafe { alloc_zeroed(layout) };
        Some(AlignedBuf {
            ptr: NonNull::new(raw)?,
            layout,
        })
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.layout.size()
    }

    /// Never true: an empty buffer is not made.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr points to `layout.size()` initialised (zeroed) bytes
        // owned by self, alive until drop; no &mut exists while &self does.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in deref, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.layout.size()) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: ptr was returned by alloc_zeroed with this very layout
        // and is freed once, here.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_rounded_and_zeroed() {
        let mut b = AlignedBuf::new(5000).unwrap();
        assert_eq!(b.len(), 8192);
        assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        assert!(b.iter().all(|x| *x == 0));
        b[8191] = 7;
        assert_eq!(b[8191], 7);
        assert!(AlignedBuf::new(0).is_none());
    }

    #[test]
    fn o_direct_accepts_them() {
        use std::io::{Read, Seek, SeekFrom, Write};
        use std::os::unix::fs::OpenOptionsExt;
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("direct");
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .custom_flags(libc::O_DIRECT)
            .open(&path)
            .unwrap();
        let mut b = AlignedBuf::new(ALIGN).unwrap();
        b[0] = 42;
        match f.write_all(&b) {
            Ok(()) => {}
            // tmpfs and some overlay setups refuse O_DIRECT: nothing to check there.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return,
            Err(e) => panic!("{e}"),
        }
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut r = AlignedBuf::new(ALIGN).unwrap();
        f.read_exact(&mut r).unwrap();
        assert_eq!(r[0], 42);
    }
}
