//! A cpio "newc" (SVR4, no CRC) archive writer: the format the kernel
//! unpacks an initramfs from.
//!
//! Written here rather than by running `cpio` so the archive's contents
//! (modes, owners, timestamps, order) are exactly what we say, independent
//! of the build host's files: every entry is owned by root with mtime 0, so
//! the same inputs give the same bytes.
//!
//! Entry layout: the ASCII magic `070701`, thirteen 8-digit hex fields, the
//! NUL-terminated name padded so the header+name is a multiple of 4 bytes,
//! then the data padded to a multiple of 4; the archive ends with an entry
//! named `TRAILER!!!`.

use std::collections::BTreeSet;
use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

/// Kind of device node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    Char,
    Block,
}

pub struct CpioWriter<W: Write> {
    out: W,
    next_ino: u32,
    written: u64,
    /// Directories already emitted, so parents are created once and before
    /// their children (the kernel does not create missing parents).
    dirs: BTreeSet<String>,
}

/// Archive names are relative (`bin/sh`, not `/bin/sh`): what the kernel
/// and `cpio -i` expect. Accepts either form.
fn archive_name(path: &str) -> io::Result<String> {
    let name = path.trim_start_matches('/').trim_end_matches('/');
    if name.is_empty()
        || name
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad archive path {path:?}"),
        ));
    }
    Ok(name.to_string())
}

impl<W: Write> CpioWriter<W> {
    pub fn new(out: W) -> CpioWriter<W> {
        CpioWriter {
            out,
            next_ino: 1,
            written: 0,
            dirs: BTreeSet::new(),
        }
    }

    /// A directory (parents are created as needed, mode 0755).
    pub fn dir(&mut self, path: &str, perm: u32) -> io::Result<()> {
        let name = archive_name(path)?;
        if self.dirs.contains(&name) {
            return Ok(());
        }
        self.parents(&name)?;
        self.entry(&name, S_IFDIR | (perm & 0o7777), 2, 0, 0, &[])?;
        self.dirs.insert(name);
        Ok(())
    }

    /// A regular file with the given contents and permission bits.
    pub fn file(&mut self, path: &str, perm: u32, data: &[u8]) -> io::Result<()> {
        let name = archive_name(path)?;
        self.parents(&name)?;
        self.entry(&name, S_IFREG | (perm & 0o7777), 1, 0, 0, data)
    }

    /// A symbolic link; its data is the target.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let name = archive_name(path)?;
        self.parents(&name)?;
        self.entry(&name, S_IFLNK | 0o777, 1, 0, 0, target.as_bytes())
    }

    /// A device node (e.g. `dev/console`, char 5:1).
    pub fn device(
        &mut self,
        path: &str,
        kind: DeviceKind,
        perm: u32,
        major: u32,
        minor: u32,
    ) -> io::Result<()> {
        let name = archive_name(path)?;
        self.parents(&name)?;
        let fmt = match kind {
            DeviceKind::Char => S_IFCHR,
            DeviceKind::Block => S_IFBLK,
        };
        self.entry(&name, fmt | (perm & 0o7777), 1, major, minor, &[])
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.header(TRAILER, 0, 1, 0, 0, 0, 0)?;
        self.out.flush()?;
        Ok(self.out)
    }

    fn parents(&mut self, name: &str) -> io::Result<()> {
        let mut prefix = String::new();
        let comps: Vec<&str> = name.split('/').collect();
        for comp in &comps[..comps.len() - 1] {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            if !self.dirs.contains(&prefix) {
                self.entry(&prefix, S_IFDIR | 0o755, 2, 0, 0, &[])?;
                self.dirs.insert(prefix.clone());
            }
        }
        Ok(())
    }

    fn entry(
        &mut self,
        name: &str,
        mode: u32,
        nlink: u32,
        rmajor: u32,
        rminor: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{name} is over 4 GiB"))
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.header(name, ino, nlink, size, mode, rmajor, rminor)?;
        self.write(data)?;
        self.pad()
    }

    #[allow(clippy::too_many_arguments)]
    fn header(
        &mut self,
        name: &str,
        ino: u32,
        nlink: u32,
        size: u32,
        mode: u32,
        rmajor: u32,
        rminor: u32,
    ) -> io::Result<()> {
        let namesize = name.len() as u32 + 1;
        // ino mode uid gid nlink mtime filesize devmajor devminor rdevmajor
        // rdevminor namesize check
        let fields = [
            ino, mode, 0, 0, nlink, 0, size, 0, 0, rmajor, rminor, namesize, 0,
        ];
        let mut h = Vec::with_capacity(110 + name.len() + 4);
        h.extend_from_slice(MAGIC);
        for f in fields {
            h.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        h.extend_from_slice(name.as_bytes());
        h.push(0);
        self.write(&h)?;
        self.pad()
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    use std::process::{Command, Stdio};

    fn sample() -> Vec<u8> {
        let mut w = CpioWriter::new(Vec::new());
        w.dir("/dev", 0o755).expect("dir");
        w.file("/init", 0o755, b"#!/bin/sh\necho hi\n")
            .expect("file");
        w.file("etc/bascule/modules.load", 0o644, b"a\nbb\n")
            .expect("nested file");
        w.file("empty", 0o600, b"").expect("empty file");
        w.symlink("bin/sh", "busybox").expect("symlink");
        w.device("dev/console", DeviceKind::Char, 0o600, 5, 1)
            .expect("device");
        w.finish().expect("finish")
    }

    #[test]
    fn entries_are_aligned_and_trailer_last() {
        let bytes = sample();
        assert_eq!(bytes.len() % 4, 0);
        assert_eq!(&bytes[..6], b"070701");
        let tail = String::from_utf8_lossy(&bytes[bytes.len() - 16..]).into_owned();
        assert!(tail.contains("TRAILER!!!"), "{tail:?}");
        assert!(archive_name("a/../b").is_err());
        assert!(archive_name("/").is_err());
    }

    #[test]
    fn gnu_cpio_extracts_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new("cpio")
            .args(["-idv", "--no-absolute-filenames"])
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cpio runs (package cpio)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(&sample())
            .expect("write");
        let out = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&out.stderr);
        // `-v` prints each extracted name on a line of its own, then the
        // block count; errors start with "cpio:".
        let (errors, names): (Vec<&str>, Vec<&str>) = stderr
            .lines()
            .filter(|l| !l.ends_with(" block") && !l.ends_with(" blocks"))
            .partition(|l| l.starts_with("cpio:"));
        // Device nodes need root (CAP_MKNOD); nothing else may fail.
        let mknod_refused = !errors.is_empty();
        assert!(
            errors
                .iter()
                .all(|e| e.contains("dev/console") && e.contains("mknod")),
            "{stderr}"
        );
        assert!(out.status.success() || mknod_refused, "{stderr}");
        assert_eq!(
            names,
            [
                "dev",
                "init",
                "etc",
                "etc/bascule",
                "etc/bascule/modules.load",
                "empty",
                "bin",
                "bin/sh",
                "dev/console",
            ],
            "every entry, parents included, in archive order:\n{stderr}"
        );
        let root = dir.path();
        assert_eq!(
            std::fs::read(root.join("init")).expect("init"),
            b"#!/bin/sh\necho hi\n"
        );
        let mode = std::fs::metadata(root.join("init"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(
            std::fs::read(root.join("etc/bascule/modules.load")).expect("nested"),
            b"a\nbb\n"
        );
        assert_eq!(std::fs::read(root.join("empty")).expect("empty").len(), 0);
        assert_eq!(
            std::fs::read_link(root.join("bin/sh"))
                .expect("link")
                .to_str(),
            Some("busybox")
        );
        if !mknod_refused {
            let meta = std::fs::symlink_metadata(root.join("dev/console")).expect("dev/console");
            assert!(meta.file_type().is_char_device());
            // makedev(5, 1): the console.
            assert_eq!(meta.rdev(), (5 << 8) | 1);
        }
    }
}
