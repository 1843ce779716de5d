//! The sequencer's disk writes, on its own thread: a slot's partition, the
//! slot's kernel and initramfs on the ESP, and wiping EPHEMERAL. Blocking
//! by design (never called on the event loop), with bounded buffers.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bascule_boot::{layout, Slot};
use bascule_bundle::PayloadKind;
use bascule_sys::aligned::{AlignedBuf, ALIGN};
use sha2::{Digest, Sha256};

/// Every write and read-back goes through a buffer this big.
const CHUNK: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SlotIoError {
    #[error("partition {0} not found on the boot disk")]
    NoPartition(&'static str),
    #[error("{what} {path}: {err}")]
    Io {
        what: &'static str,
        path: PathBuf,
        err: io::Error,
    },
    #[error("{path}: the payload ended after {got} of {size} bytes")]
    Short { path: PathBuf, got: u64, size: u64 },
    #[error("{path}: the payload is {size} bytes but the partition holds only {capacity}")]
    TooLarge {
        path: PathBuf,
        size: u64,
        capacity: u64,
    },
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SlotIoError + 'a {
    move |err| SlotIoError::Io {
        what,
        path: path.to_owned(),
        err,
    }
}

/// The block device of a partition on the boot disk.
pub fn partition(label: &'static str) -> Result<PathBuf, SlotIoError> {
    bascule_sys::blockdev::find_on_boot_disk(label).ok_or(SlotIoError::NoPartition(label))
}

/// Size in bytes of a block device (or file).
pub fn capacity(path: &Path) -> Result<u64, SlotIoError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    f.seek(SeekFrom::End(0)).map_err(io_err("sizing", path))
}

/// Copies exactly `size` bytes of `data` to `out`; a read error (a
/// corrupt payload) ends the copy with that error.
fn copy_exact(
    data: &mut dyn Read,
    out: &mut File,
    size: u64,
    path: &Path,
) -> Result<(), SlotIoError> {
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(CHUNK as u64) as usize;
        let n = match data.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(SlotIoError::Short {
                    path: path.to_owned(),
                    got: done,
                    size,
                })
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(SlotIoError::Io {
                    what: "reading the payload for",
                    path: path.to_owned(),
                    err,
                })
            }
        };
        out.write_all(&buf[..n]).map_err(io_err("writing", path))?;
        done += n as u64;
    }
    // The reader checks the digest at its end: make it say so.
    let mut tail = [0u8; 1];
    match data.read(&mut tail) {
        Ok(0) => Ok(()),
        Ok(_) => Err(SlotIoError::Io {
            what: "reading the payload for",
            path: path.to_owned(),
            err: io::Error::other("the payload is longer than its manifest says"),
        }),
        Err(err) => Err(SlotIoError::Io {
            what: "reading the payload for",
            path: path.to_owned(),
            err,
        }),
    }
}

/// Fills `buf` from `data` until it is full or `want` bytes came;
/// returns how many.
fn fill(
    data: &mut dyn Read,
    buf: &mut [u8],
    want: usize,
    path: &Path,
) -> Result<usize, SlotIoError> {
    let mut got = 0;
    while got < want {
        match data.read(&mut buf[got..want]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                return Err(SlotIoError::Io {
                    what: "reading the payload for",
                    path: path.to_owned(),
                    err,
                })
            }
        }
    }
    Ok(got)
}

/// Writes a slot's root filesystem to its partition with aligned O_DIRECT
/// writes (the page cache is not filled with an image nobody reads), the
/// last block padded with zeros, then syncs the device.
pub fn write_slot(slot: Slot, data: &mut dyn Read, size: u64) -> Result<(), SlotIoError> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let dev = partition(slot.layout().partition_label)?;
    let cap = capacity(&dev)?;
    if size.next_multiple_of(ALIGN as u64) > cap {
        return Err(SlotIoError::TooLarge {
            path: dev,
            size,
            capacity: cap,
        });
    }
    let f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&dev)
        .map_err(io_err("opening (O_DIRECT)", &dev))?;
    let mut buf = AlignedBuf::new(CHUNK).ok_or_else(|| SlotIoError::Io {
        what: "allocating a buffer for",
        path: dev.clone(),
        err: io::ErrorKind::OutOfMemory.into(),
    })?;
    let mut done = 0u64;
    while done < size {
        let want = (size - done).min(CHUNK as u64) as usize;
        let got = fill(data, &mut buf, want, &dev)?;
        if got < want {
            return Err(SlotIoError::Short {
                path: dev,
                got: done + got as u64,
                size,
            });
        }
        let padded = got.next_multiple_of(ALIGN);
        buf[got..padded].fill(0);
        f.write_all_at(&buf[..padded], done)
            .map_err(io_err("writing", &dev))?;
        done += got as u64;
    }
    // The payload reader checks its digest at its end: make it say so.
    let mut tail = [0u8; 1];
    match data.read(&mut tail) {
        Ok(0) => {}
        Ok(_) => {
            return Err(SlotIoError::Io {
                what: "reading the payload for",
                path: dev,
                err: io::Error::other("the payload is longer than its manifest says"),
            })
        }
        Err(err) => {
            return Err(SlotIoError::Io {
                what: "reading the payload for",
                path: dev,
                err,
            })
        }
    }
    f.sync_all().map_err(io_err("syncing", &dev))
}

/// SHA-256 of the first `size` bytes of a file or device, read after its
/// cached pages are dropped so the bytes come from the disk.
pub fn digest(path: &Path, size: u64) -> Result<[u8; 32], SlotIoError> {
    let mut f = File::open(path).map_err(io_err("opening", path))?;
    // Best effort: a failure only means the read may come from the cache.
    let _ = rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed);
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = f
            .read(&mut buf[..want])
            .map_err(io_err("reading back", path))?;
        if n == 0 {
            return Err(SlotIoError::Short {
                path: path.to_owned(),
                got: size - left,
                size,
            });
        }
        h.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(h.finalize().into())
}

pub fn slot_digest(slot: Slot, size: u64) -> Result<[u8; 32], SlotIoError> {
    digest(&partition(slot.layout().partition_label)?, size)
}

/// Where a slot's kernel or initramfs lives on the mounted ESP.
pub fn esp_file(slot: Slot, kind: PayloadKind) -> Option<PathBuf> {
    let l = slot.layout();
    let path = match kind {
        PayloadKind::Kernel => l.esp_kernel,
        PayloadKind::Initramfs => l.esp_initrd,
        PayloadKind::Rootfs => return None,
    };
    Some(layout::on_esp(Path::new(layout::MOUNT_ESP), path))
}

/// Writes a file atomically: a temporary file, fsync, rename, directory fsync.
pub fn write_file_atomic(path: &Path, data: &mut dyn Read, size: u64) -> Result<(), SlotIoError> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_err("creating", dir))?;
    let tmp = path.with_extension("new");
    let mut f = File::create(&tmp).map_err(io_err("creating", &tmp))?;
    let r = copy_exact(data, &mut f, size, &tmp)
        .and_then(|()| f.sync_all().map_err(io_err("syncing", &tmp)));
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(io_err("renaming into place", path))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", dir))
}

/// Zeroes the start of EPHEMERAL: the next boot finds it blank and
/// creates a fresh filesystem.
pub fn wipe_ephemeral() -> Result<(), SlotIoError> {
    let dev = partition(layout::LABEL_EPHEMERAL)?;
    let mut f = OpenOptions::new()
        .write(true)
        .open(&dev)
        .map_err(io_err("opening", &dev))?;
    let zeros = vec![0u8; 1 << 20];
    f.write_all(&zeros).map_err(io_err("wiping", &dev))?;
    f.sync_all().map_err(io_err("syncing", &dev))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_files_are_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("esp/bascule/B/vmlinuz");
        let data = vec![7u8; 10_000];
        write_file_atomic(&path, &mut &data[..], 10_000).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert_eq!(
            digest(&path, 10_000).unwrap(),
            <[u8; 32]>::from(Sha256::digest(&data))
        );
        // A payload that ends early leaves the old file and no temporary.
        let e = write_file_atomic(&path, &mut &data[..5], 10_000).unwrap_err();
        assert!(e.to_string().contains("ended after 5 of 10000"), "{e}");
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(!path.with_extension("new").exists());
    }
}
