//! Whether an ext4 filesystem needs `e2fsck -p` before it is mounted, read
//! from the superblock PID 1 already holds (the partition's first 64 KiB).
//!
//! `e2fsck -p` on a clean filesystem reads the same fields and exits 0
//! having done nothing; skipping its fork and exec saves a few hundred
//! milliseconds of every boot under emulation. Any sign that the last
//! shutdown was not clean still runs it, so a power cut's journal is
//! replayed and checked exactly as before.

/// Why `e2fsck -p` runs before the mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckReason {
    /// The head is too short to hold a superblock.
    Unreadable,
    /// The kernel recorded an error (EXT2_ERROR_FS).
    HasErrors,
    /// Not marked valid (EXT2_VALID_FS clear).
    NotClean,
    /// The journal holds transactions not yet replayed (needs_recovery):
    /// the filesystem was not unmounted, e.g. a power cut.
    NeedsRecovery,
    /// The mount count reached the maximum set by `tune2fs -c`.
    MountCount,
    /// The check interval set by `tune2fs -i` has passed.
    Interval,
}

impl CheckReason {
    pub fn describe(self) -> &'static str {
        match self {
            CheckReason::Unreadable => "superblock unreadable",
            CheckReason::HasErrors => "the kernel recorded errors on it",
            CheckReason::NotClean => "not marked clean",
            CheckReason::NeedsRecovery => "its journal needs recovery (not unmounted last time)",
            CheckReason::MountCount => "its maximum mount count is reached",
            CheckReason::Interval => "its check interval has passed",
        }
    }
}

const SUPERBLOCK: usize = 1024;
const S_MNT_COUNT: usize = 0x34;
const S_MAX_MNT_COUNT: usize = 0x36;
const S_STATE: usize = 0x3A;
const S_LASTCHECK: usize = 0x40;
const S_CHECKINTERVAL: usize = 0x44;
const S_FEATURE_INCOMPAT: usize = 0x60;
const VALID_FS: u16 = 0x1;
const ERROR_FS: u16 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;

/// `None` when the superblock says the filesystem is clean and due for no
/// check; otherwise why `e2fsck -p` must run. `now` is seconds since the
/// epoch.
pub fn check_reason(head: &[u8], now: u64) -> Option<CheckReason> {
    let Some(sb) = head.get(SUPERBLOCK..SUPERBLOCK + 0x100) else {
        return Some(CheckReason::Unreadable);
    };
    let u16_at = |o: usize| u16::from_le_bytes([sb[o], sb[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes([sb[o], sb[o + 1], sb[o + 2], sb[o + 3]]);
    let state = u16_at(S_STATE);
    if state & ERROR_FS != 0 {
        return Some(CheckReason::HasErrors);
    }
    if state & VALID_FS == 0 {
        return Some(CheckReason::NotClean);
    }
    if u32_at(S_FEATURE_INCOMPAT) & INCOMPAT_RECOVER != 0 {
        return Some(CheckReason::NeedsRecovery);
    }
    let max = u16_at(S_MAX_MNT_COUNT) as i16;
    if max > 0 && u16_at(S_MNT_COUNT) >= max as u16 {
        return Some(CheckReason::MountCount);
    }
    let interval = u64::from(u32_at(S_CHECKINTERVAL));
    if interval != 0 && now >= u64::from(u32_at(S_LASTCHECK)) + interval {
        return Some(CheckReason::Interval);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean() -> Vec<u8> {
        let mut head = vec![0u8; 65536];
        head[SUPERBLOCK + 0x38] = 0x53;
        head[SUPERBLOCK + 0x39] = 0xEF;
        head[SUPERBLOCK + S_STATE] = VALID_FS as u8;
        // mke2fs's default: no maximum mount count.
        head[SUPERBLOCK + S_MAX_MNT_COUNT..][..2].copy_from_slice(&(-1i16).to_le_bytes());
        head
    }

    #[test]
    fn a_clean_filesystem_needs_no_check() {
        assert_eq!(check_reason(&clean(), 1_800_000_000), None);
    }

    #[test]
    fn errors_an_unclean_state_and_a_pending_journal_each_run_e2fsck() {
        let mut h = clean();
        h[SUPERBLOCK + S_STATE] = (VALID_FS | ERROR_FS) as u8;
        assert_eq!(check_reason(&h, 0), Some(CheckReason::HasErrors));
        let mut h = clean();
        h[SUPERBLOCK + S_STATE] = 0;
        assert_eq!(check_reason(&h, 0), Some(CheckReason::NotClean));
        let mut h = clean();
        h[SUPERBLOCK + S_FEATURE_INCOMPAT] = INCOMPAT_RECOVER as u8;
        assert_eq!(check_reason(&h, 0), Some(CheckReason::NeedsRecovery));
        assert_eq!(check_reason(&h[..1200], 0), Some(CheckReason::Unreadable));
    }

    #[test]
    fn mount_count_and_interval_follow_tune2fs_settings() {
        let mut h = clean();
        h[SUPERBLOCK + S_MAX_MNT_COUNT..][..2].copy_from_slice(&20i16.to_le_bytes());
        h[SUPERBLOCK + S_MNT_COUNT] = 19;
        assert_eq!(check_reason(&h, 0), None);
        h[SUPERBLOCK + S_MNT_COUNT] = 20;
        assert_eq!(check_reason(&h, 0), Some(CheckReason::MountCount));
        let mut h = clean();
        h[SUPERBLOCK + S_LASTCHECK..][..4].copy_from_slice(&1000u32.to_le_bytes());
        h[SUPERBLOCK + S_CHECKINTERVAL..][..4].copy_from_slice(&100u32.to_le_bytes());
        assert_eq!(check_reason(&h, 1099), None);
        assert_eq!(check_reason(&h, 1100), Some(CheckReason::Interval));
    }

    /// The same fields as e2fsprogs writes them: a fresh mkfs.ext4, then
    /// each state set by tune2fs or debugfs.
    #[test]
    fn reads_what_e2fsprogs_writes() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("fs.img");
        let run = |tool: &str, args: &[&str]| {
            let st = std::process::Command::new(tool)
                .args(args)
                .arg(&img)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap_or_else(|e| panic!("{tool}: {e}"));
            assert!(st.success(), "{tool} {args:?}: {st}");
        };
        let head = || {
            let mut h = vec![0u8; 65536];
            std::io::Read::read_exact(&mut std::fs::File::open(&img).unwrap(), &mut h).unwrap();
            h
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::File::create(&img)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        run("mkfs.ext4", &["-q", "-F"]);
        assert_eq!(check_reason(&head(), now), None);
        run("debugfs", &["-w", "-R", "feature needs_recovery"]);
        assert_eq!(check_reason(&head(), now), Some(CheckReason::NeedsRecovery));
        run("debugfs", &["-w", "-R", "feature ^needs_recovery"]);
        run("debugfs", &["-w", "-R", "ssv state 3"]);
        assert_eq!(check_reason(&head(), now), Some(CheckReason::HasErrors));
        run("debugfs", &["-w", "-R", "ssv state 1"]);
        run("tune2fs", &["-c", "3", "-C", "3"]);
        assert_eq!(check_reason(&head(), now), Some(CheckReason::MountCount));
        run("tune2fs", &["-c", "-1", "-i", "1d", "-T", "20200101"]);
        assert_eq!(check_reason(&head(), now), Some(CheckReason::Interval));
        run("e2fsck", &["-f", "-p"]);
        run("tune2fs", &["-i", "0"]);
        assert_eq!(check_reason(&head(), now), None);
    }
}
