//! Files on a disk image's STATE partition before its first boot (the
//! machine configuration, `/system/state/machine.toml` on the machine):
//! an ext4 made by the host's mkfs.ext4 from a directory, written over the
//! partition of the image file, with no loop device. PID 1 finds a
//! filesystem there and keeps it (a blank STATE gets a fresh one instead).

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::cmd::Cmd;
use crate::error::{IoContext, Result};

/// Writes a STATE filesystem holding `files` (`(path relative to its root,
/// contents)`) into the disk image `disk`.
pub fn write_state_files(disk: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let label = bascule_boot::layout::LABEL_STATE;
    let idx = crate::layout::index_of(label).unwrap_or_default();
    let (offset, size) = (
        crate::layout::partition_offset(idx),
        crate::layout::partition_size(idx),
    );
    // Staged beside the image (which may be large and sparse; /tmp may be
    // small), and removed whatever happens.
    let work = disk.with_extension("state-staging");
    let result = stage_and_write(disk, files, &work, offset, size);
    let _ = fs::remove_dir_all(&work);
    result
}

fn stage_and_write(
    disk: &Path,
    files: &[(&str, &[u8])],
    work: &Path,
    offset: u64,
    size: u64,
) -> Result<()> {
    let label = bascule_boot::layout::LABEL_STATE;
    if work.exists() {
        fs::remove_dir_all(work).io("emptying", work)?;
    }
    let root = work.join("root");
    for (name, bytes) in files {
        let path = root.join(name.trim_start_matches('/'));
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).io("creating", dir)?;
        }
        fs::write(&path, bytes).io("writing", &path)?;
    }
    fs::create_dir_all(&root).io("creating", &root)?;
    let image = work.join("state.ext4");
    fs::File::create(&image)
        .and_then(|f| f.set_len(size))
        .io("sizing", &image)?;
    Cmd::new("mkfs.ext4")
        .args(["-q", "-F", "-L", label, "-d"])
        .arg(&root)
        .arg(&image)
        .hint("mkfs.ext4 comes from e2fsprogs")
        .run()?;
    // Only the blocks mkfs wrote: the partition of a fresh image is zeros.
    let bytes = fs::read(&image).io("reading", &image)?;
    let out = fs::OpenOptions::new()
        .write(true)
        .open(disk)
        .io("opening", disk)?;
    for (i, chunk) in bytes.chunks(1 << 20).enumerate() {
        if chunk.iter().any(|b| *b != 0) {
            out.write_all_at(chunk, offset + ((i as u64) << 20))
                .io("writing STATE into", disk)?;
        }
    }
    out.sync_all().io("syncing", disk)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn the_files_are_read_back_by_debugfs_from_the_partition() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        let idx = crate::layout::index_of(bascule_boot::layout::LABEL_STATE).unwrap();
        let (offset, size) = (
            crate::layout::partition_offset(idx),
            crate::layout::partition_size(idx),
        );
        fs::File::create(&disk)
            .unwrap()
            .set_len(offset + size + (1 << 20))
            .unwrap();
        let text = b"role = \"worker\"\n";
        write_state_files(
            &disk,
            &[("machine.toml", text), ("cluster/member", b"w1\n")],
        )
        .unwrap();
        assert!(!disk.with_extension("state-staging").exists());
        let mut part = vec![0u8; size as usize];
        fs::File::open(&disk)
            .unwrap()
            .read_exact_at(&mut part, offset)
            .unwrap();
        let fsimg = dir.path().join("state.ext4");
        fs::write(&fsimg, &part).unwrap();
        let out = std::process::Command::new("debugfs")
            .args(["-R", "cat /machine.toml"])
            .arg(&fsimg)
            .output()
            .unwrap();
        assert_eq!(out.stdout, text, "{}", String::from_utf8_lossy(&out.stderr));
    }
}
