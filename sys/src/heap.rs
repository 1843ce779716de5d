//! How the C allocator returns memory. glibc raises its mmap threshold
//! (and its trim threshold with it) each time a large mmapped block is
//! freed, up to 32 MiB: after the first install, the next 1-4 MiB copy
//! buffers come from the heap and stay resident when freed, so PID 1
//! would keep several MiB for as long as it runs. A fixed threshold keeps
//! large buffers mmapped and returned to the kernel when freed.

/// Blocks at least this large are mmapped, and unmapped when freed.
pub const MMAP_THRESHOLD: i32 = 256 * 1024;

/// Fixes the allocator's mmap threshold at [`MMAP_THRESHOLD`] (which also
/// stops glibc from raising its trim threshold). Returns false when the
/// allocator refused it.
pub fn keep_large_blocks_unmapped_when_freed() -> bool {
    // SAFETY: mallopt only changes allocator parameters; it takes no
    // pointers and is safe to call at any time (glibc locks the arena).
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_threshold_is_taken() {
        assert!(keep_large_blocks_unmapped_when_freed());
    }
}
