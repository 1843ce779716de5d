//! The EFI System Partition as a FAT32 filesystem in a file: `mkfs.vfat`
//! then `mmd`/`mcopy -i FILE` (mtools work on image files, so no mount and
//! no loop device). The caller decides what goes in: each slot's kernel and
//! initramfs, the bootloader binary, its configuration.

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Contents of one ESP file.
#[derive(Clone, Debug)]
pub enum Source {
    Path(PathBuf),
    Bytes(Vec<u8>),
}

/// A file on the ESP at an absolute, `/`-separated path.
#[derive(Clone, Debug)]
pub struct EspFile {
    pub path: String,
    pub source: Source,
}

impl EspFile {
    pub fn from_path(path: &str, src: &Path) -> EspFile {
        EspFile {
            path: path.to_string(),
            source: Source::Path(src.to_path_buf()),
        }
    }
    pub fn from_bytes(path: &str, bytes: Vec<u8>) -> EspFile {
        EspFile {
            path: path.to_string(),
            source: Source::Bytes(bytes),
        }
    }
}

/// Creates `out` (replacing it) as a FAT32 filesystem of `size` bytes
/// labelled `label`, holding `files`. `work` holds temporary copies of
/// in-memory files.
pub fn build(out: &Path, size: u64, label: &str, files: &[EspFile], work: &Path) -> Result<()> {
    if out.exists() {
        fs::remove_file(out).io("removing the old", out)?;
    }
    fs::create_dir_all(work).io("creating", work)?;
    // FAT32 explicitly: at 64 MiB mkfs.vfat would otherwise pick FAT16,
    // which UEFI also reads, but FAT32 is what the spec asks of an ESP.
    Cmd::new("mkfs.vfat")
        .args(["-F", "32", "-n", label, "-C"])
        .arg(out)
        .arg((size / 1024).to_string())
        .hint("mkfs.vfat comes from dosfstools")
        .run()?;

    let mut dirs = BTreeSet::new();
    for f in files {
        let path = check_path(&f.path)?;
        let comps: Vec<&str> = path.split('/').collect();
        for i in 1..comps.len() {
            dirs.insert(comps[..i].join("/"));
        }
    }
    // BTreeSet order puts each parent before its children.
    for d in &dirs {
        mtool("mmd", out).arg(format!("::/{d}")).run()?;
    }
    for (i, f) in files.iter().enumerate() {
        let path = check_path(&f.path)?;
        let src = match &f.source {
            Source::Path(p) => p.clone(),
            Source::Bytes(b) => {
                let tmp = work.join(format!("esp-file-{i}"));
                fs::write(&tmp, b).io("writing", &tmp)?;
                tmp
            }
        };
        mtool("mcopy", out)
            .arg("-o")
            .arg(&src)
            .arg(format!("::/{path}"))
            .run()?;
    }
    Ok(())
}

/// An mtools command on an image file. MTOOLS_SKIP_CHECK: the geometry
/// mkfs.vfat chose for a file is fine, mtools' sanity check is not needed.
fn mtool(program: &str, image: &Path) -> Cmd {
    Cmd::new(program)
        .env("MTOOLS_SKIP_CHECK", "1")
        .arg("-i")
        .arg(image)
        .hint("mtools must be installed; the ESP may be too small for its files (see boot/src/layout.rs)")
}

fn check_path(p: &str) -> Result<&str> {
    let rel = p.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(Error::Invalid(format!("bad ESP path {p:?}")));
    }
    Ok(rel)
}

/// Reads a file back out of a FAT image (or `disk.img@@OFFSET`), for tests
/// and checks.
pub fn read_file(image: &str, path: &str) -> Result<Vec<u8>> {
    Cmd::new("mtype")
        .env("MTOOLS_SKIP_CHECK", "1")
        .args(["-i", image])
        .arg(format!("::/{}", check_path(path)?))
        .output()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout;

    #[test]
    fn builds_fat32_with_nested_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("kernel");
        fs::write(&src, vec![7u8; 100_000]).expect("src");
        let img = dir.path().join("esp.img");
        let files = vec![
            EspFile::from_path(layout::SLOT_A.esp_kernel, &src),
            EspFile::from_bytes(layout::ESP_GRUB_CFG, b"set timeout=0\n".to_vec()),
            EspFile::from_bytes(layout::ESP_EFI_BOOT, b"MZ".to_vec()),
        ];
        build(&img, 64 << 20, "ESP", &files, &dir.path().join("work")).expect("build");
        assert_eq!(fs::metadata(&img).expect("img").len(), 64 << 20);
        let img_s = img.to_str().expect("utf8");
        assert_eq!(
            read_file(img_s, layout::ESP_GRUB_CFG).expect("cfg"),
            b"set timeout=0\n"
        );
        assert_eq!(
            read_file(img_s, layout::SLOT_A.esp_kernel)
                .expect("kernel")
                .len(),
            100_000
        );
        // FAT32's boot sector names its type at 0x52.
        let boot = fs::read(&img).expect("read img");
        assert_eq!(&boot[0x52..0x5a], b"FAT32   ");
        Cmd::new("fsck.vfat")
            .arg("-n")
            .arg(&img)
            .run()
            .expect("fsck.vfat finds no errors");
        assert!(build(
            &img,
            64 << 20,
            "ESP",
            &[EspFile::from_bytes("/a/../b", vec![])],
            dir.path()
        )
        .is_err());
    }
}
