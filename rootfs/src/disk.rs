//! Assembling disk.img: a sparse file of [`layout::DISK_SIZE`], our GPT,
//! then each partition's content copied to its offset, skipping zero
//! blocks so the image stays sparse (and copies fast).
//!
//! STATE and EPHEMERAL are formatted here with mkfs.ext4 on a file, not left
//! blank for the init: a fresh image then boots to a usable /var before the
//! init's own "format when blank" path exists, and that path can still be
//! tested by zeroing a partition. META gets its first record from
//! `image::write_meta` (each slot's version and state).

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use crate::gpt::{self, Gpt};
use crate::layout::{self, Content};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Copy unit; a chunk that is all zeros is skipped.
const CHUNK: usize = 1 << 20;

/// What goes into each partition, by label. Partitions not named stay zero.
#[derive(Default)]
pub struct DiskContents {
    /// `(partition label, image file)`.
    pub partitions: Vec<(&'static str, PathBuf)>,
    /// GRUB core.img for the BIOS boot partition (plus boot.img in the MBR).
    pub bios_core_img: Option<PathBuf>,
}

/// The partition table of a new disk `out`, with fresh unique GUIDs. Made
/// before the disk is assembled so that the loader entries can name the
/// slot partitions by these GUIDs (`root=PARTUUID=`).
pub fn new_table(out: &Path) -> Result<Gpt> {
    gpt::layout_with_random_guids(layout::DISK_SIZE).map_err(|source| Error::Gpt {
        path: out.to_path_buf(),
        source,
    })
}

/// Writes `out` with the partition table `table` (from [`new_table`]).
pub fn assemble(out: &Path, table: &Gpt, contents: &DiskContents) -> Result<()> {
    if out.exists() {
        fs::remove_file(out).io("removing the old", out)?;
    }
    let mut disk = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(out)
        .io("creating", out)?;
    disk.set_len(layout::DISK_SIZE).io("sizing", out)?;
    table.write(&mut disk).map_err(|source| Error::Gpt {
        path: out.to_path_buf(),
        source,
    })?;

    for (label, image) in &contents.partitions {
        let part = table.find(label).ok_or_else(|| {
            Error::Invalid(format!(
                "no partition {label} in the layout (boot/src/layout.rs)"
            ))
        })?;
        let spec = layout::spec(label)
            .ok_or_else(|| Error::Invalid(format!("no partition {label} in the layout")))?;
        let size = fs::metadata(image).io("reading the size of", image)?.len();
        if size > part.size() {
            return Err(Error::TooBig {
                what: content_name(spec.content),
                path: image.clone(),
                partition: spec.label,
                size,
                capacity: part.size(),
            });
        }
        copy_sparse(image, &mut disk, out, part.offset())?;
    }
    if let Some(core) = &contents.bios_core_img {
        let bios = table
            .find(layout::LABEL_BIOS_BOOT)
            .ok_or_else(|| Error::Invalid("no BIOS boot partition in the layout".into()))?;
        crate::grub::install_bios(&mut disk, out, core, bios.offset(), bios.size())?;
    }
    disk.sync_all().io("syncing", out)?;
    Ok(())
}

fn content_name(c: Content) -> &'static str {
    match c {
        Content::BiosBoot => "GRUB core.img",
        Content::Vfat => "the ESP filesystem",
        Content::Raw => "the raw image",
        Content::Squashfs => "the slot squashfs",
        Content::Ext4 => "the ext4 filesystem",
    }
}

/// Copies `src` into `disk` at `offset`, leaving all-zero chunks as holes.
fn copy_sparse(src: &Path, disk: &mut File, disk_path: &Path, offset: u64) -> Result<()> {
    let mut input = File::open(src).io("opening", src)?;
    let mut buf = vec![0u8; CHUNK];
    let mut pos = offset;
    loop {
        let n = read_full(&mut input, &mut buf).io("reading", src)?;
        if n == 0 {
            return Ok(());
        }
        if buf[..n].iter().any(|b| *b != 0) {
            disk.seek(SeekFrom::Start(pos))
                .io("seeking in", disk_path)?;
            disk.write_all(&buf[..n]).io("writing into", disk_path)?;
        }
        pos += n as u64;
    }
}

/// Fills `buf` unless the input ends first.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// An empty ext4 filesystem of `size` bytes in `out`, labelled `label`.
pub fn make_ext4(out: &Path, size: u64, label: &str) -> Result<()> {
    if out.exists() {
        fs::remove_file(out).io("removing the old", out)?;
    }
    File::create(out)
        .io("creating", out)?
        .set_len(size)
        .io("sizing", out)?;
    // -F: it is a file, not a device. nodiscard: nothing to discard in a new
    // sparse file.
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-E", "nodiscard"])
        .arg(out)
        .hint("mkfs.ext4 comes from e2fsprogs")
        .run()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn assembles_sparse_and_checks_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let meta = dir.path().join("meta.bin");
        let mut data = vec![0u8; 3 * CHUNK];
        data[CHUNK + 5] = 0x42;
        fs::write(&meta, &data[..CHUNK + 10]).expect("meta");
        let slot = dir.path().join("slot.img");
        fs::write(&slot, b"hsqs").expect("slot");
        let out = dir.path().join("disk.img");
        let contents = DiskContents {
            partitions: vec![
                (layout::LABEL_SLOT_A, slot.clone()),
                (layout::LABEL_ESP, meta.clone()),
            ],
            bios_core_img: None,
        };
        let table = new_table(&out).expect("table");
        assemble(&out, &table, &contents).expect("assemble");
        let bytes = fs::read(&out).expect("read");
        let a = table.find(layout::LABEL_SLOT_A).expect("slot a").offset() as usize;
        assert_eq!(&bytes[a..a + 4], b"hsqs");
        let esp = table.find(layout::LABEL_ESP).expect("esp").offset() as usize;
        assert_eq!(bytes[esp + CHUNK + 5], 0x42);
        // Sparse: far less allocated than the nominal size.
        let allocated = fs::metadata(&out).expect("meta").blocks() * 512;
        assert!(allocated < 8 << 20, "{allocated} bytes allocated");
        assert!(Gpt::read_path(&out).expect("gpt").fully_valid());

        let big = dir.path().join("big");
        File::create(&big)
            .expect("big")
            .set_len(2 << 20)
            .expect("len");
        let too_big = DiskContents {
            partitions: vec![(layout::LABEL_META, big)],
            bios_core_img: None,
        };
        match assemble(&out, &table, &too_big) {
            Err(Error::TooBig { partition, .. }) => assert_eq!(partition, "META"),
            other => panic!("expected TooBig, got {other:?}"),
        }
    }

    #[test]
    fn makes_ext4() {
        let dir = tempfile::tempdir().expect("tempdir");
        let img = dir.path().join("state.img");
        make_ext4(&img, 32 << 20, "STATE").expect("mkfs.ext4");
        let label = Cmd::new("e2label").arg(&img).output().expect("e2label");
        assert_eq!(String::from_utf8_lossy(&label).trim(), "STATE");
    }
}
