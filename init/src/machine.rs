//! Stage 2 of a booted machine: mount the partitions that hold state — STATE
//! at /system/state and EPHEMERAL at /var (ext4, created when the partition
//! is blank), the ESP at /boot. A missing or damaged partition is reported
//! by name on the console and skipped; the machine stays reachable.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bascule_boot::layout;
use rustix::mount::{mount, MountFlags};

use crate::ext4_state;
use crate::log;
use bascule_sys::{blockdev, clock};

/// What a partition's first bytes say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Ext4,
    /// All zeros at the start: never formatted (or wiped on purpose).
    Blank,
    /// Neither: refuse to format it, so nothing is lost by mistake.
    Unknown,
}

/// Classifies the first 64 KiB of a partition.
pub fn classify(head: &[u8]) -> Content {
    // The ext2/3/4 superblock starts at 1024; its magic 0xEF53 sits at offset 56.
    if head.len() >= 1082 && head[1080] == 0x53 && head[1081] == 0xEF {
        Content::Ext4
    } else if head.iter().all(|b| *b == 0) {
        Content::Blank
    } else {
        Content::Unknown
    }
}

/// What to do with a partition that was never formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenBlank {
    /// Create its ext4 filesystem (STATE and EPHEMERAL start empty).
    Format,
    /// Report it: the ESP comes with the image.
    Refuse,
}

struct Target {
    label: &'static str,
    dir: &'static str,
    fstype: &'static str,
    when_blank: WhenBlank,
}

/// Why a partition was not mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("not found on the boot disk (no GPT partition with this label)")]
    NotFound,
    #[error("cannot read {dev}: {err}")]
    Read { dev: PathBuf, err: std::io::Error },
    #[error("{0} is blank")]
    Blank(PathBuf),
    #[error("{0} holds no ext4 filesystem and is not blank: refusing to format it (wipe it to start afresh)")]
    Foreign(PathBuf),
    #[error("blank, and no mkfs.ext4 in the image to create its filesystem")]
    NoMkfs,
    #[error("cannot run {tool}: {err}")]
    Run { tool: PathBuf, err: std::io::Error },
    #[error("{tool} {dev} failed: {status}")]
    Mkfs {
        tool: PathBuf,
        dev: PathBuf,
        status: std::process::ExitStatus,
    },
    #[error("cannot create {dir}: {err}")]
    MountPoint {
        dir: &'static str,
        err: std::io::Error,
    },
    #[error("cannot mount {dev} ({fstype}) on {dir}: {err}")]
    Mount {
        dev: PathBuf,
        fstype: &'static str,
        dir: &'static str,
        err: rustix::io::Errno,
    },
}

const TARGETS: [Target; 3] = [
    Target {
        label: layout::LABEL_STATE,
        dir: layout::MOUNT_STATE,
        fstype: "ext4",
        when_blank: WhenBlank::Format,
    },
    Target {
        label: layout::LABEL_EPHEMERAL,
        dir: layout::MOUNT_EPHEMERAL,
        fstype: "ext4",
        when_blank: WhenBlank::Format,
    },
    Target {
        label: layout::LABEL_ESP,
        dir: layout::MOUNT_ESP,
        fstype: "vfat",
        when_blank: WhenBlank::Refuse,
    },
];

/// Mounts every state partition; returns the labels it could not mount.
/// Whether this boot mounts /var (EPHEMERAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Var {
    Mount,
    /// A staged upgrade runs first and may wipe it.
    LeaveUnmounted,
}

pub fn mount_partitions(var: Var) -> Vec<&'static str> {
    let mut failed = Vec::new();
    for t in TARGETS
        .iter()
        .filter(|t| var == Var::Mount || t.label != layout::LABEL_EPHEMERAL)
    {
        if let Err(e) = mount_one(t) {
            log!("partition {}: {e}; continuing without {}", t.label, t.dir);
            failed.push(t.label);
        }
    }
    failed
}

/// Mounts /var after all (a staged upgrade that did not start).
pub fn mount_var() {
    for t in TARGETS
        .iter()
        .filter(|t| t.label == layout::LABEL_EPHEMERAL)
    {
        if let Err(e) = mount_one(t) {
            log!("partition {}: {e}; continuing without {}", t.label, t.dir);
        }
    }
}

fn mount_one(t: &Target) -> Result<(), MountError> {
    let dev = blockdev::find_on_boot_disk(t.label).ok_or(MountError::NotFound)?;
    if t.fstype == "ext4" {
        let mut head = vec![0u8; 64 * 1024];
        std::fs::File::open(&dev)
            .and_then(|mut f| f.read_exact(&mut head))
            .map_err(|err| MountError::Read {
                dev: dev.clone(),
                err,
            })?;
        match (classify(&head), t.when_blank) {
            (Content::Ext4, _) => check(&dev, t.label, &head),
            (Content::Blank, WhenBlank::Format) => format(&dev, t.label)?,
            (Content::Blank, WhenBlank::Refuse) => return Err(MountError::Blank(dev)),
            (Content::Unknown, _) => return Err(MountError::Foreign(dev)),
        }
    }
    std::fs::create_dir_all(t.dir).map_err(|err| MountError::MountPoint { dir: t.dir, err })?;
    // FAT has no journal, and power cuts after an upgrade's writes left
    // directory entries of the ESP half-updated (GRUB then found none of
    // the kernels): every directory change goes to the disk before the
    // call returns (dirsync). File data is not written synchronously (with
    // `sync`, 512-byte clusters made a 10 MB kernel + initramfs take 25 s
    // under TCG, all of it downtime): every writer of the ESP fsyncs its
    // file before renaming it into place or before it counts as written.
    let flags = if t.fstype == "vfat" {
        MountFlags::NOATIME | MountFlags::DIRSYNC
    } else {
        MountFlags::NOATIME
    };
    mount(&dev, t.dir, t.fstype, flags, None).map_err(|err| MountError::Mount {
        dev: dev.clone(),
        fstype: t.fstype,
        dir: t.dir,
        err,
    })
}

fn tool(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

/// Creates the ext4 filesystem on a blank partition.
fn format(dev: &Path, label: &str) -> Result<(), MountError> {
    let mkfs = tool(&["/sbin/mkfs.ext4", "/usr/sbin/mkfs.ext4", "/sbin/mke2fs"])
        .ok_or(MountError::NoMkfs)?;
    log!(
        "partition {label}: blank, creating an ext4 filesystem on {}",
        dev.display()
    );
    let st = Command::new(&mkfs)
        .args(["-t", "ext4", "-q", "-F", "-L", label])
        .arg(dev)
        .stdin(Stdio::null())
        .status()
        .map_err(|err| MountError::Run {
            tool: mkfs.clone(),
            err,
        })?;
    if !st.success() {
        return Err(MountError::Mkfs {
            tool: mkfs,
            dev: dev.to_owned(),
            status: st,
        });
    }
    Ok(())
}

/// Replays the journal and fixes what is safe before mounting, when the
/// superblock says it is needed (see `ext4_state`); a damaged filesystem is
/// reported, and mounting is still attempted.
fn check(dev: &Path, label: &str, head: &[u8]) {
    let Some(reason) = ext4_state::check_reason(head, clock::wall_us() / 1_000_000) else {
        return;
    };
    let Some(fsck) = tool(&["/sbin/e2fsck", "/usr/sbin/e2fsck"]) else {
        log!(
            "partition {label}: {}, and no e2fsck in the image: mounting it unchecked",
            reason.describe()
        );
        return;
    };
    log!(
        "partition {label}: {}: running {} -p {}",
        reason.describe(),
        fsck.display(),
        dev.display()
    );
    match Command::new(&fsck)
        .arg("-p")
        .arg(dev)
        .stdin(Stdio::null())
        .status()
    {
        // 0: clean, 1: errors corrected.
        Ok(st) if matches!(st.code(), Some(0) | Some(1)) => {}
        Ok(st) => log!(
            "{} {}: {st}: the filesystem has errors e2fsck -p could not fix",
            fsck.display(),
            dev.display()
        ),
        Err(e) => log!("cannot run {}: {e}", fsck.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_ext4_blank_and_other() {
        let mut head = vec![0u8; 65536];
        assert_eq!(classify(&head), Content::Blank);
        head[1080] = 0x53;
        head[1081] = 0xEF;
        assert_eq!(classify(&head), Content::Ext4);
        let mut junk = vec![0u8; 65536];
        junk[7] = 1;
        assert_eq!(classify(&junk), Content::Unknown);
    }
}
