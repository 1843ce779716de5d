//! GRUB's environment block (`grubenv`), read and written exactly as
//! `grub-editenv` and GRUB's `load_env`/`save_env` do (`grub-core/lib/envblk.c`).
//!
//! Layout: the header `# GRUB Environment Block\n`, then one `NAME=VALUE\n`
//! line per variable, where a backslash or a newline inside VALUE is
//! preceded by a backslash, then `#` padding up to exactly 1024 bytes.
//! Lines starting with `#` are comments (Debian's `grub-editenv create` adds
//! a warning comment).
//!
//! Writing is power-safe by rewriting the existing block in place: the file
//! keeps its size and its sectors (GRUB's `save_env` writes through the
//! file's block list, so it needs exactly that), and only the 512-byte
//! sectors whose bytes change are written. While the environment fits in the
//! first sector, as Bascule's does, an update is a single-sector write. See
//! `docs/boot-formats.md`.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use crate::atomicfile::{atomic_write, AtomicWriteError};
use crate::blockio::BlockIo;

/// The header every environment block starts with.
pub const SIGNATURE: &[u8] = b"# GRUB Environment Block\n";
/// The size of a block created by `grub-editenv` (`DEFAULT_ENVBLK_SIZE`).
pub const BLOCK_SIZE: usize = 1024;
/// The unit a disk writes atomically (at least); the in-place writer only
/// writes the sectors that change.
pub const SECTOR_SIZE: usize = 512;
/// Larger files are not environment blocks (GRUB reads them whole).
const MAX_READ: u64 = 64 * 1024;

/// Errors reading, building or writing an environment block.
#[derive(Debug, thiserror::Error)]
pub enum GrubEnvError {
    #[error("not a GRUB environment block: missing the \"# GRUB Environment Block\" header")]
    MissingHeader,
    #[error("broken environment block: the entry at byte {offset} has no terminating newline")]
    Unterminated { offset: usize },
    #[error("variable {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("variable {name:?}: value {reason}")]
    InvalidValue { name: String, reason: &'static str },
    #[error("environment needs {needed} bytes, more than the {BLOCK_SIZE}-byte block")]
    TooLarge { needed: usize },
    #[error(
        "the existing block is {len} bytes, not {BLOCK_SIZE}: refusing to rewrite it in place"
    )]
    WrongSize { len: u64 },
    #[error("{len}-byte file is too large to be an environment block")]
    FileTooLarge { len: u64 },
    #[error("the block read back after writing differs from what was written")]
    VerifyFailed,
    #[error("{step}: {source}")]
    Io {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Create(#[from] AtomicWriteError),
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<GrubEnvError>,
    },
}

impl GrubEnvError {
    fn in_file(self, path: &Path) -> GrubEnvError {
        match self {
            // Already names the file.
            GrubEnvError::Create(_) | GrubEnvError::InFile { .. } => self,
            other => GrubEnvError::InFile {
                path: path.to_path_buf(),
                source: Box::new(other),
            },
        }
    }
}

fn io_err(step: &'static str) -> impl FnOnce(io::Error) -> GrubEnvError {
    move |source| GrubEnvError::Io { step, source }
}

/// The variables of an environment block, in file order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrubEnv {
    vars: Vec<(String, String)>,
}

/// Whether GRUB's block format can carry `name` at all: GRUB's parser
/// reads a name up to the first `=`, and a line starting with `#` is a
/// comment.
fn check_name_structure(name: &str) -> Result<(), GrubEnvError> {
    let bad = |reason| {
        Err(GrubEnvError::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.contains('=') {
        bad("contains '=' (GRUB reads the name up to the first '=')")
    } else if name.contains('\n') {
        bad("contains a newline")
    } else if name.contains('\0') {
        bad("contains a NUL byte")
    } else if name.starts_with('#') {
        bad("starts with '#' (GRUB would read the line as a comment)")
    } else {
        Ok(())
    }
}

/// Whether `name` is a variable a GRUB script can use: `[A-Za-z_][A-Za-z0-9_]*`.
fn check_script_name(name: &str) -> Result<(), GrubEnvError> {
    check_name_structure(name)?;
    let mut chars = name.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(GrubEnvError::InvalidName {
            name: name.to_string(),
            reason: "is not a GRUB variable name ([A-Za-z_][A-Za-z0-9_]*)",
        })
    }
}

fn check_value(name: &str, value: &str) -> Result<(), GrubEnvError> {
    if value.contains('\0') {
        Err(GrubEnvError::InvalidValue {
            name: name.to_string(),
            reason: "contains a NUL byte (GRUB values are C strings)",
        })
    } else {
        Ok(())
    }
}

/// Appends `value` with GRUB's escaping: `\` and newline get a `\` before them.
fn escape_into(out: &mut Vec<u8>, value: &str) {
    for &b in value.as_bytes() {
        if b == b'\\' || b == b'\n' {
            out.push(b'\\');
        }
        out.push(b);
    }
}

/// GRUB's `find_next_line`: skips to just past the next unescaped newline.
fn find_next_line(buf: &[u8], mut p: usize) -> usize {
    while p < buf.len() {
        match buf[p] {
            b'\\' => p += 2,
            b'\n' => break,
            _ => p += 1,
        }
    }
    p + 1
}

impl GrubEnv {
    /// An empty environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses a block the way GRUB's `grub_envblk_iterate` does. Unlike GRUB,
    /// which silently stops at a broken entry, a broken entry, a NUL byte or
    /// non-UTF-8 text is an error, so a damaged block is noticed and repaired.
    /// Any block size is accepted (GRUB does too).
    pub fn parse(block: &[u8]) -> Result<Self, GrubEnvError> {
        if !block.starts_with(SIGNATURE) {
            return Err(GrubEnvError::MissingHeader);
        }
        let pend = block.len();
        let mut p = SIGNATURE.len();
        let mut vars = Vec::new();
        while p < pend {
            if block[p] == b'#' {
                p = find_next_line(block, p);
                continue;
            }
            let name_start = p;
            while p < pend && block[p] != b'=' {
                p += 1;
            }
            if p == pend {
                return Err(GrubEnvError::Unterminated { offset: name_start });
            }
            let name_bytes = &block[name_start..p];
            p += 1;
            let mut value = Vec::new();
            loop {
                match block.get(p) {
                    None => return Err(GrubEnvError::Unterminated { offset: name_start }),
                    Some(b'\n') => break,
                    Some(b'\\') => match block.get(p + 1) {
                        Some(&c) => {
                            value.push(c);
                            p += 2;
                        }
                        None => return Err(GrubEnvError::Unterminated { offset: name_start }),
                    },
                    Some(&c) => {
                        value.push(c);
                        p += 1;
                    }
                }
            }
            p += 1;
            let name =
                String::from_utf8(name_bytes.to_vec()).map_err(|e| GrubEnvError::InvalidName {
                    name: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    reason: "is not UTF-8",
                })?;
            check_name_structure(&name)?;
            let value = String::from_utf8(value).map_err(|_| GrubEnvError::InvalidValue {
                name: name.clone(),
                reason: "is not UTF-8",
            })?;
            check_value(&name, &value)?;
            vars.push((name, value));
        }
        Ok(GrubEnv { vars })
    }

    /// The value GRUB's `load_env` ends up with: the last definition.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name` (a GRUB script variable name) to `value` (any text
    /// without NUL), keeping its position if it exists, else appending it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), GrubEnvError> {
        check_script_name(name)?;
        check_value(name, value)?;
        match self.vars.iter().position(|(n, _)| n == name) {
            Some(i) => {
                self.vars[i].1 = value.to_string();
                let mut seen = false;
                self.vars.retain(|(n, _)| {
                    if n != name {
                        return true;
                    }
                    let keep = !seen;
                    seen = true;
                    keep
                });
            }
            None => self.vars.push((name.to_string(), value.to_string())),
        }
        Ok(())
    }

    /// Removes every definition of `name`; true if there was one.
    pub fn unset(&mut self, name: &str) -> bool {
        let before = self.vars.len();
        self.vars.retain(|(n, _)| n != name);
        self.vars.len() != before
    }

    /// The variables in file order (duplicates included, as in the file).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.vars.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Bytes used by the header and the variables, before padding.
    pub fn used_len(&self) -> usize {
        let vars: usize = self
            .vars
            .iter()
            .map(|(n, v)| {
                let escaped = v.bytes().filter(|&b| b == b'\\' || b == b'\n').count();
                n.len() + 1 + v.len() + escaped + 1
            })
            .sum();
        SIGNATURE.len() + vars
    }

    /// The 1024-byte block, as `grub-editenv` would write it.
    pub fn to_block(&self) -> Result<Vec<u8>, GrubEnvError> {
        let needed = self.used_len();
        if needed > BLOCK_SIZE {
            return Err(GrubEnvError::TooLarge { needed });
        }
        let mut out = Vec::with_capacity(BLOCK_SIZE);
        out.extend_from_slice(SIGNATURE);
        for (name, value) in &self.vars {
            check_name_structure(name)?;
            check_value(name, value)?;
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            escape_into(&mut out, value);
            out.push(b'\n');
        }
        out.resize(BLOCK_SIZE, b'#');
        Ok(out)
    }
}

/// Reads and parses the whole block from `dev`.
pub fn read_env<B: BlockIo + ?Sized>(dev: &B) -> Result<GrubEnv, GrubEnvError> {
    let len = dev.size().map_err(io_err("size"))?;
    if len > MAX_READ {
        return Err(GrubEnvError::FileTooLarge { len });
    }
    let mut buf = vec![0u8; len as usize];
    dev.read_at(&mut buf, 0).map_err(io_err("read"))?;
    GrubEnv::parse(&buf)
}

/// What a write did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The block already held exactly this environment: nothing written.
    Unchanged,
    /// This many 512-byte sectors were rewritten in place.
    Rewritten { sectors: usize },
    /// The file did not exist (or was not a 1024-byte block) and was created.
    Created,
}

/// Rewrites the 1024-byte block on `dev` in place: only the sectors that
/// change are written (in order), then synced, then read back and compared.
/// `dev` must already be exactly [`BLOCK_SIZE`] bytes.
pub fn write_env_in_place<B: BlockIo + ?Sized>(
    dev: &B,
    env: &GrubEnv,
) -> Result<WriteOutcome, GrubEnvError> {
    let new = env.to_block()?;
    let len = dev.size().map_err(io_err("size"))?;
    if len != BLOCK_SIZE as u64 {
        return Err(GrubEnvError::WrongSize { len });
    }
    let mut old = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut old, 0).map_err(io_err("read"))?;
    let mut sectors = 0;
    for (i, (new_s, old_s)) in new
        .chunks(SECTOR_SIZE)
        .zip(old.chunks(SECTOR_SIZE))
        .enumerate()
    {
        if new_s != old_s {
            dev.write_at(new_s, (i * SECTOR_SIZE) as u64)
                .map_err(io_err("write"))?;
            sectors += 1;
        }
    }
    if sectors == 0 {
        return Ok(WriteOutcome::Unchanged);
    }
    dev.sync().map_err(io_err("fsync"))?;
    let mut back = vec![0u8; BLOCK_SIZE];
    dev.read_at(&mut back, 0).map_err(io_err("read back"))?;
    if back != new {
        return Err(GrubEnvError::VerifyFailed);
    }
    Ok(WriteOutcome::Rewritten { sectors })
}

/// Reads and parses the environment file at `path`.
pub fn read_env_file(path: &Path) -> Result<GrubEnv, GrubEnvError> {
    let f = std::fs::File::open(path)
        .map_err(io_err("open"))
        .map_err(|e| e.in_file(path))?;
    read_env(&f).map_err(|e| e.in_file(path))
}

/// Writes `env` to the file at `path`: in place when the file is already a
/// 1024-byte block (the normal case, which keeps GRUB's `save_env` working),
/// otherwise (missing, truncated, wrong size) by creating it atomically.
pub fn write_env_file(path: &Path, env: &GrubEnv) -> Result<WriteOutcome, GrubEnvError> {
    let block = env.to_block().map_err(|e| e.in_file(path))?;
    match OpenOptions::new().read(true).write(true).open(path) {
        Ok(f) => {
            let len = BlockIo::size(&f)
                .map_err(io_err("size"))
                .map_err(|e| e.in_file(path))?;
            if len == BLOCK_SIZE as u64 {
                return write_env_in_place(&f, env).map_err(|e| e.in_file(path));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("open")(e).in_file(path)),
    }
    atomic_write(path, &block)?;
    Ok(WriteOutcome::Created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blockio::MemBlock;

    fn env(pairs: &[(&str, &str)]) -> GrubEnv {
        let mut e = GrubEnv::new();
        for (n, v) in pairs {
            e.set(n, v).unwrap();
        }
        e
    }

    #[test]
    fn empty_block_is_header_and_padding() {
        let b = GrubEnv::new().to_block().unwrap();
        assert_eq!(b.len(), BLOCK_SIZE);
        assert!(b.starts_with(SIGNATURE));
        assert!(b[SIGNATURE.len()..].iter().all(|&c| c == b'#'));
        assert_eq!(GrubEnv::parse(&b).unwrap(), GrubEnv::new());
    }

    #[test]
    fn layout_and_escaping() {
        let e = env(&[("a", "b"), ("c", "x\\y"), ("d", "l1\nl2"), ("e", "k=v w")]);
        let b = e.to_block().unwrap();
        let text = b"# GRUB Environment Block\na=b\nc=x\\\\y\nd=l1\\\nl2\ne=k=v w\n";
        assert_eq!(&b[..text.len()], text);
        assert!(b[text.len()..].iter().all(|&c| c == b'#'));
        assert_eq!(e.used_len(), text.len());
    }

    #[test]
    fn round_trips() {
        let e = env(&[
            ("saved_entry", "A"),
            ("next_entry", ""),
            ("weird", "\\\n\\\\\n#not a comment\n=x= \t"),
            ("trailing_backslash", "ends with \\"),
            ("utf8", "héllo ✓"),
        ]);
        let parsed = GrubEnv::parse(&e.to_block().unwrap()).unwrap();
        assert_eq!(parsed, e);
        assert_eq!(
            parsed.get("weird"),
            Some("\\\n\\\\\n#not a comment\n=x= \t")
        );
        assert_eq!(parsed.get("next_entry"), Some(""));
        assert_eq!(parsed.get("missing"), None);
    }

    #[test]
    fn comments_and_debian_warning_are_skipped() {
        let mut b = b"# GRUB Environment Block\n# WARNING: Do not edit!!!\na=1\n".to_vec();
        b.resize(BLOCK_SIZE, b'#');
        let e = GrubEnv::parse(&b).unwrap();
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![("a", "1")]);
        // Data after a newline inside the padding is still read, as by GRUB.
        let mut b = b"# GRUB Environment Block\n#####\nz=9\n".to_vec();
        b.resize(100, b'#');
        assert_eq!(GrubEnv::parse(&b).unwrap().get("z"), Some("9"));
    }

    #[test]
    fn duplicates_last_wins_set_replaces_first() {
        let mut b = b"# GRUB Environment Block\nx=1\ny=2\nx=3\n".to_vec();
        b.resize(BLOCK_SIZE, b'#');
        let mut e = GrubEnv::parse(&b).unwrap();
        assert_eq!(e.get("x"), Some("3"));
        e.set("x", "4").unwrap();
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![("x", "4"), ("y", "2")]);
        assert!(e.unset("x"));
        assert!(!e.unset("x"));
        assert_eq!(e.iter().collect::<Vec<_>>(), vec![("y", "2")]);
    }

    #[test]
    fn exactly_full_fits_one_more_byte_does_not() {
        let room = BLOCK_SIZE - SIGNATURE.len() - "v=\n".len();
        let mut e = env(&[("v", &"x".repeat(room))]);
        let b = e.to_block().unwrap();
        assert_eq!(b[BLOCK_SIZE - 1], b'\n');
        assert_eq!(GrubEnv::parse(&b).unwrap(), e);
        e.set("v", &"x".repeat(room + 1)).unwrap();
        assert!(matches!(
            e.to_block(),
            Err(GrubEnvError::TooLarge { needed }) if needed == BLOCK_SIZE + 1
        ));
        // Escaping counts: 500 backslashes need 1000 bytes.
        let e = env(&[("v", &"\\".repeat(500))]);
        assert!(matches!(e.to_block(), Err(GrubEnvError::TooLarge { .. })));
    }

    #[test]
    fn invalid_names_and_values_rejected() {
        let mut e = GrubEnv::new();
        for bad in ["", "a=b", "#x", "with space", "1abc", "a-b", "nl\n", "é"] {
            let err = e.set(bad, "v").unwrap_err();
            assert!(matches!(err, GrubEnvError::InvalidName { .. }), "{bad:?}");
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(matches!(
            e.set("ok", "nul\0"),
            Err(GrubEnvError::InvalidValue { .. })
        ));
        e.set("_Ok_9", "v").unwrap();
    }

    #[test]
    fn broken_blocks_rejected() {
        assert!(matches!(
            GrubEnv::parse(&[0u8; BLOCK_SIZE]),
            Err(GrubEnvError::MissingHeader)
        ));
        assert!(matches!(
            GrubEnv::parse(b"# GRUB Environment Bl"),
            Err(GrubEnvError::MissingHeader)
        ));
        // Torn: a value cut before its newline.
        assert!(matches!(
            GrubEnv::parse(b"# GRUB Environment Block\na=1\nb=2"),
            Err(GrubEnvError::Unterminated { offset: 29 })
        ));
        // Escape at the very end.
        assert!(matches!(
            GrubEnv::parse(b"# GRUB Environment Block\na=1\\"),
            Err(GrubEnvError::Unterminated { .. })
        ));
        // Header followed by zeros (a zeroed tail).
        let mut b = SIGNATURE.to_vec();
        b.resize(BLOCK_SIZE, 0);
        assert!(matches!(
            GrubEnv::parse(&b),
            Err(GrubEnvError::Unterminated { .. })
        ));
        assert!(matches!(
            GrubEnv::parse(b"# GRUB Environment Block\na\0=1\n"),
            Err(GrubEnvError::InvalidName { .. })
        ));
        assert!(matches!(
            GrubEnv::parse(b"# GRUB Environment Block\na=\xff\n"),
            Err(GrubEnvError::InvalidValue { .. })
        ));
    }

    #[test]
    fn in_place_writes_only_changed_sectors() {
        let dev = MemBlock::from_vec(GrubEnv::new().to_block().unwrap());
        let e = env(&[("saved_entry", "A"), ("next_entry", "B")]);
        assert_eq!(
            write_env_in_place(&dev, &e).unwrap(),
            WriteOutcome::Rewritten { sectors: 1 }
        );
        assert_eq!(dev.sync_count().unwrap(), 1);
        assert_eq!(read_env(&dev).unwrap(), e);
        assert_eq!(
            write_env_in_place(&dev, &e).unwrap(),
            WriteOutcome::Unchanged
        );
        assert_eq!(dev.write_count().unwrap(), 1);
        // A value reaching into the second sector rewrites both.
        let big = env(&[("v", &"x".repeat(600))]);
        assert_eq!(
            write_env_in_place(&dev, &big).unwrap(),
            WriteOutcome::Rewritten { sectors: 2 }
        );
        assert_eq!(read_env(&dev).unwrap(), big);
    }

    #[test]
    fn in_place_refuses_wrong_size() {
        let dev = MemBlock::new(2048);
        assert!(matches!(
            write_env_in_place(&dev, &GrubEnv::new()),
            Err(GrubEnvError::WrongSize { len: 2048 })
        ));
        assert_eq!(dev.write_count().unwrap(), 0);
    }

    #[test]
    fn power_cut_before_the_single_sector_write_keeps_the_old_block() {
        // Old and new both fit in the first sector, so the update is one
        // sector write: the disk either did it or did not. (Atomicity inside
        // a sector is the disk's guarantee, not something software adds.)
        let old = env(&[("saved_entry", "A")]);
        let dev = MemBlock::from_vec(old.to_block().unwrap());
        let new = env(&[("saved_entry", "B"), ("next_entry", "B")]);
        dev.cut_power_after(0).unwrap();
        assert!(matches!(
            write_env_in_place(&dev, &new),
            Err(GrubEnvError::Io { step: "write", .. })
        ));
        assert_eq!(read_env(&dev).unwrap(), old);
        assert_eq!(dev.sync_count().unwrap(), 0);
    }

    #[test]
    fn file_create_then_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grubenv");
        let e = env(&[("saved_entry", "A")]);
        assert_eq!(write_env_file(&p, &e).unwrap(), WriteOutcome::Created);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), BLOCK_SIZE as u64);
        use std::os::unix::fs::MetadataExt;
        let ino = std::fs::metadata(&p).unwrap().ino();
        let e2 = env(&[("saved_entry", "B")]);
        assert_eq!(
            write_env_file(&p, &e2).unwrap(),
            WriteOutcome::Rewritten { sectors: 1 }
        );
        // Same file, not a replacement.
        assert_eq!(std::fs::metadata(&p).unwrap().ino(), ino);
        assert_eq!(read_env_file(&p).unwrap(), e2);
        // A zeroed file of the right size is rewritten in place too.
        std::fs::write(&p, [0u8; BLOCK_SIZE]).unwrap();
        let err = read_env_file(&p).unwrap_err();
        assert!(err.to_string().contains("grubenv: not a GRUB"), "{err}");
        assert_eq!(
            write_env_file(&p, &e).unwrap(),
            WriteOutcome::Rewritten { sectors: 2 }
        );
        // A truncated file is recreated.
        std::fs::write(&p, b"").unwrap();
        assert_eq!(write_env_file(&p, &e).unwrap(), WriteOutcome::Created);
        assert_eq!(read_env_file(&p).unwrap(), e);
    }

    #[test]
    fn file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing-grubenv");
        let err = read_env_file(&p).unwrap_err();
        assert!(err.to_string().contains("missing-grubenv: open"), "{err}");
        let big = env(&[("v", &"x".repeat(2000))]);
        let err = write_env_file(&p, &big).unwrap_err();
        assert!(
            err.to_string()
                .contains("missing-grubenv: environment needs"),
            "{err}"
        );
    }
}
