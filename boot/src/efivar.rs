//! systemd-boot's EFI variables, as files in efivarfs.
//!
//! Each variable is the file `<Name>-<vendor GUID>` in
//! `/sys/firmware/efi/efivars`: a 4-byte little-endian attribute word, then
//! the data. Strings are NUL-terminated UTF-16LE. Variables are written with
//! one `write()` of attribute word and data together (efivarfs requires it)
//! and with the attributes non-volatile, boot-service and runtime access
//! (0x07), as systemd does. efivarfs marks most variable files immutable, so
//! the flag is cleared before writing or deleting and put back afterwards,
//! through the [`ImmutableFlag`] trait.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// systemd-boot's vendor GUID (the Loader Interface's).
pub const LOADER_VENDOR_GUID: &str = "4a67b082-0a4c-41cf-b6c7-440b29bb8c4f";
/// Where efivarfs is mounted.
pub const EFIVARFS_DIR: &str = "/sys/firmware/efi/efivars";
/// `EFI_VARIABLE_NON_VOLATILE`.
pub const ATTR_NON_VOLATILE: u32 = 0x1;
/// `EFI_VARIABLE_BOOTSERVICE_ACCESS`.
pub const ATTR_BOOTSERVICE_ACCESS: u32 = 0x2;
/// `EFI_VARIABLE_RUNTIME_ACCESS`.
pub const ATTR_RUNTIME_ACCESS: u32 = 0x4;
/// The attributes Bascule writes with (0x07).
pub const ATTRS_DEFAULT: u32 = ATTR_NON_VOLATILE | ATTR_BOOTSERVICE_ACCESS | ATTR_RUNTIME_ACCESS;

/// The Loader Interface variables Bascule uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoaderVar {
    /// Entry id (or glob) to boot once; systemd-boot deletes it before booting.
    EntryOneShot,
    /// Entry id or glob to boot by default; overrides loader.conf.
    EntryDefault,
    /// The id of the entry systemd-boot booted (set by systemd-boot).
    EntrySelected,
    /// What this systemd-boot supports: a u64 of [`LoaderFeatures`] bits.
    Features,
    /// The entry file's path after systemd-boot's boot-counting rename,
    /// e.g. `\loader\entries\bascule-b+2-1.conf` (set by systemd-boot).
    BootCountPath,
}

impl LoaderVar {
    /// The variable's name.
    pub fn name(self) -> &'static str {
        match self {
            LoaderVar::EntryOneShot => "LoaderEntryOneShot",
            LoaderVar::EntryDefault => "LoaderEntryDefault",
            LoaderVar::EntrySelected => "LoaderEntrySelected",
            LoaderVar::Features => "LoaderFeatures",
            LoaderVar::BootCountPath => "LoaderBootCountPath",
        }
    }

    /// The efivarfs file name, `<Name>-<GUID>`.
    pub fn file_name(self) -> String {
        format!("{}-{}", self.name(), LOADER_VENDOR_GUID)
    }

    /// Whether Bascule writes this variable (the others belong to
    /// systemd-boot and are only read).
    pub fn is_writable(self) -> bool {
        matches!(self, LoaderVar::EntryOneShot | LoaderVar::EntryDefault)
    }
}

/// `LoaderFeatures` bits (systemd's `EFI_LOADER_FEATURE_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoaderFeatures(pub u64);

impl LoaderFeatures {
    pub const CONFIG_TIMEOUT: u64 = 1 << 0;
    pub const CONFIG_TIMEOUT_ONE_SHOT: u64 = 1 << 1;
    /// `LoaderEntryDefault` is honoured.
    pub const ENTRY_DEFAULT: u64 = 1 << 2;
    /// `LoaderEntryOneShot` is honoured.
    pub const ENTRY_ONESHOT: u64 = 1 << 3;
    /// Boot counting (`+LEFT-DONE` file names) is implemented.
    pub const BOOT_COUNTING: u64 = 1 << 4;
    pub const XBOOTLDR: u64 = 1 << 5;
    pub const RANDOM_SEED: u64 = 1 << 6;
    pub const LOAD_DRIVER: u64 = 1 << 7;
    pub const SORT_KEY: u64 = 1 << 8;
    pub const SAVED_ENTRY: u64 = 1 << 9;
    pub const DEVICETREE: u64 = 1 << 10;

    /// Everything the A/B scheme needs: default, one-shot, counting, sort-key.
    pub const REQUIRED: u64 =
        Self::ENTRY_DEFAULT | Self::ENTRY_ONESHOT | Self::BOOT_COUNTING | Self::SORT_KEY;

    pub fn contains(self, bits: u64) -> bool {
        self.0 & bits == bits
    }

    /// The required bits this loader lacks (0 when it has them all).
    pub fn missing_required(self) -> u64 {
        Self::REQUIRED & !self.0
    }
}

/// Errors encoding, decoding, reading or writing a variable.
#[derive(Debug, thiserror::Error)]
pub enum EfiVarError {
    #[error("{name}: {len} bytes is too short for the 4-byte attribute word")]
    TooShort { name: &'static str, len: usize },
    #[error("{name}: string data has an odd length ({len} bytes), not UTF-16")]
    OddLength { name: &'static str, len: usize },
    #[error("{name}: string is not valid UTF-16")]
    BadUtf16 { name: &'static str },
    #[error("{name}: value {value:?} contains a NUL character")]
    InteriorNul { name: &'static str, value: String },
    #[error("{name}: expected 8 bytes of u64 data, found {len}")]
    BadU64 { name: &'static str, len: usize },
    #[error("{name}: set by systemd-boot, not written by Bascule")]
    NotWritable { name: &'static str },
    #[error("{}: {step}: {source}", path.display())]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{}: wrote {written} of {len} bytes (efivarfs needs a single write)", path.display())]
    ShortWrite {
        path: PathBuf,
        written: usize,
        len: usize,
    },
}

/// A variable's file content split into attributes and data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EfiVarValue {
    pub attributes: u32,
    pub data: Vec<u8>,
}

/// Splits efivarfs file content into attribute word and data.
pub fn decode(var: LoaderVar, bytes: &[u8]) -> Result<EfiVarValue, EfiVarError> {
    match bytes {
        [a, b, c, d, data @ ..] => Ok(EfiVarValue {
            attributes: u32::from_le_bytes([*a, *b, *c, *d]),
            data: data.to_vec(),
        }),
        _ => Err(EfiVarError::TooShort {
            name: var.name(),
            len: bytes.len(),
        }),
    }
}

/// The file content for a string variable: attributes 0x07, then
/// `value` as UTF-16LE with a terminating NUL.
pub fn encode_string(var: LoaderVar, value: &str) -> Result<Vec<u8>, EfiVarError> {
    if value.contains('\0') {
        return Err(EfiVarError::InteriorNul {
            name: var.name(),
            value: value.to_string(),
        });
    }
    let mut out = ATTRS_DEFAULT.to_le_bytes().to_vec();
    for unit in value.encode_utf16().chain(std::iter::once(0)) {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    Ok(out)
}

/// The string in a variable's file content. A missing terminating NUL is
/// accepted (as systemd does); the string ends at the first NUL.
pub fn decode_string(var: LoaderVar, bytes: &[u8]) -> Result<String, EfiVarError> {
    let v = decode(var, bytes)?;
    if v.data.len() % 2 != 0 {
        return Err(EfiVarError::OddLength {
            name: var.name(),
            len: v.data.len(),
        });
    }
    let units: Vec<u16> = v
        .data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16(&units).map_err(|_| EfiVarError::BadUtf16 { name: var.name() })
}

/// The file content for a u64 variable (attributes 0x07).
pub fn encode_u64(value: u64) -> Vec<u8> {
    let mut out = ATTRS_DEFAULT.to_le_bytes().to_vec();
    out.extend_from_slice(&value.to_le_bytes());
    out
}

/// The u64 in a variable's file content.
pub fn decode_u64(var: LoaderVar, bytes: &[u8]) -> Result<u64, EfiVarError> {
    let v = decode(var, bytes)?;
    let arr: [u8; 8] = v
        .data
        .as_slice()
        .try_into()
        .map_err(|_| EfiVarError::BadU64 {
            name: var.name(),
            len: v.data.len(),
        })?;
    Ok(u64::from_le_bytes(arr))
}

/// The file name in a `LoaderBootCountPath` value
/// (`\loader\entries\bascule-b+2-1.conf` → `bascule-b+2-1.conf`).
pub fn boot_count_file_name(path: &str) -> &str {
    path.rsplit(['\\', '/']).next().unwrap_or(path)
}

/// Clearing and restoring `FS_IMMUTABLE_FL` on a variable file.
pub trait ImmutableFlag {
    /// Clears the flag; returns whether it was set. A missing file, or a
    /// filesystem without inode flags, is "not set".
    fn clear_immutable(&self, path: &Path) -> io::Result<bool>;
    /// Sets the flag again.
    fn set_immutable(&self, path: &Path) -> io::Result<()>;
}

/// The real flag, through `FS_IOC_GETFLAGS`/`FS_IOC_SETFLAGS` (rustix's
/// safe wrappers).
#[derive(Clone, Copy, Debug, Default)]
pub struct InodeImmutableFlag;

fn unsupported(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTTY
        || e == rustix::io::Errno::OPNOTSUPP
        || e == rustix::io::Errno::INVAL
}

impl ImmutableFlag for InodeImmutableFlag {
    fn clear_immutable(&self, path: &Path) -> io::Result<bool> {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        let flags = match ioctl_getflags(&f) {
            Ok(flags) => flags,
            Err(e) if unsupported(e) => return Ok(false),
            Err(e) => return Err(e.into()),
        };
        if !flags.contains(IFlags::IMMUTABLE) {
            return Ok(false);
        }
        ioctl_setflags(&f, flags.difference(IFlags::IMMUTABLE))?;
        Ok(true)
    }

    fn set_immutable(&self, path: &Path) -> io::Result<()> {
        use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
        let f = File::open(path)?;
        let flags = ioctl_getflags(&f)?;
        ioctl_setflags(&f, flags.union(IFlags::IMMUTABLE))?;
        Ok(())
    }
}

/// The Loader Interface variables in an efivarfs directory.
#[derive(Clone, Debug)]
pub struct EfiVarStore<F: ImmutableFlag> {
    dir: PathBuf,
    flag: F,
}

impl EfiVarStore<InodeImmutableFlag> {
    /// The running system's variables, `/sys/firmware/efi/efivars`.
    pub fn system() -> Self {
        EfiVarStore::new(EFIVARFS_DIR, InodeImmutableFlag)
    }
}

impl<F: ImmutableFlag> EfiVarStore<F> {
    /// Variables in `dir` (efivarfs, or a plain directory in tests).
    pub fn new(dir: impl Into<PathBuf>, flag: F) -> Self {
        EfiVarStore {
            dir: dir.into(),
            flag,
        }
    }

    /// The path of a variable's file.
    pub fn path(&self, var: LoaderVar) -> PathBuf {
        self.dir.join(var.file_name())
    }

    /// The file content, `None` when the variable does not exist.
    pub fn read_raw(&self, var: LoaderVar) -> Result<Option<Vec<u8>>, EfiVarError> {
        let path = self.path(var);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(EfiVarError::Io {
                path,
                step: "read",
                source,
            }),
        }
    }

    /// A string variable, `None` when it does not exist.
    pub fn read_string(&self, var: LoaderVar) -> Result<Option<String>, EfiVarError> {
        self.read_raw(var)?
            .map(|b| decode_string(var, &b))
            .transpose()
    }

    /// `LoaderFeatures`, `None` when the loader did not set it (not
    /// systemd-boot, or booted without a loader).
    pub fn read_features(&self) -> Result<Option<LoaderFeatures>, EfiVarError> {
        let var = LoaderVar::Features;
        Ok(self
            .read_raw(var)?
            .map(|b| decode_u64(var, &b))
            .transpose()?
            .map(LoaderFeatures))
    }

    /// Writes a string variable (only `LoaderEntryOneShot` and
    /// `LoaderEntryDefault`): immutable flag cleared, one write of attributes
    /// and data, flag restored.
    pub fn write_string(&self, var: LoaderVar, value: &str) -> Result<(), EfiVarError> {
        if !var.is_writable() {
            return Err(EfiVarError::NotWritable { name: var.name() });
        }
        let bytes = encode_string(var, value)?;
        let path = self.path(var);
        let io_err = |step, path: &Path| {
            let path = path.to_path_buf();
            move |source| EfiVarError::Io { path, step, source }
        };
        let was_immutable = self
            .flag
            .clear_immutable(&path)
            .map_err(io_err("clear immutable flag", &path))?;
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                // Never O_TRUNC: efivarfs replaces the variable on write.
                .truncate(false)
                .mode(0o644)
                .open(&path)
                .map_err(io_err("open for writing", &path))?;
            let written = f.write(&bytes).map_err(io_err("write", &path))?;
            if written != bytes.len() {
                return Err(EfiVarError::ShortWrite {
                    path: path.clone(),
                    written,
                    len: bytes.len(),
                });
            }
            // efivarfs replaces the whole variable and sets the size itself;
            // a plain file (tests) may still hold a longer old value.
            let len = f.metadata().map_err(io_err("stat", &path))?.len();
            if len > bytes.len() as u64 {
                f.set_len(bytes.len() as u64)
                    .map_err(io_err("truncate", &path))?;
            }
            Ok(())
        })();
        if was_immutable {
            // Restoring the protection is best effort, as in systemd: the
            // write itself has succeeded or failed already.
            let _ = self.flag.set_immutable(&path);
        }
        result
    }

    /// Deletes a variable Bascule writes; true if it existed.
    pub fn delete(&self, var: LoaderVar) -> Result<bool, EfiVarError> {
        if !var.is_writable() {
            return Err(EfiVarError::NotWritable { name: var.name() });
        }
        let path = self.path(var);
        self.flag
            .clear_immutable(&path)
            .map_err(|source| EfiVarError::Io {
                path: path.clone(),
                step: "clear immutable flag",
                source,
            })?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(EfiVarError::Io {
                path,
                step: "delete",
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashSet;

    /// Records which files carry the flag and every call made.
    #[derive(Default)]
    struct FakeFlag {
        immutable: RefCell<HashSet<PathBuf>>,
        log: RefCell<Vec<String>>,
    }

    impl ImmutableFlag for FakeFlag {
        fn clear_immutable(&self, path: &Path) -> io::Result<bool> {
            let was = self.immutable.borrow_mut().remove(path);
            self.log.borrow_mut().push(format!("clear {was}"));
            Ok(was)
        }
        fn set_immutable(&self, path: &Path) -> io::Result<()> {
            self.immutable.borrow_mut().insert(path.to_path_buf());
            self.log.borrow_mut().push("set".into());
            Ok(())
        }
    }

    #[test]
    fn names() {
        assert_eq!(
            LoaderVar::EntryOneShot.file_name(),
            "LoaderEntryOneShot-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f"
        );
        assert_eq!(LoaderVar::BootCountPath.name(), "LoaderBootCountPath");
        assert!(!LoaderVar::EntrySelected.is_writable());
    }

    #[test]
    fn string_encoding_matches_efivarfs_bytes() {
        let b = encode_string(LoaderVar::EntryOneShot, "b.conf").unwrap();
        assert_eq!(
            b,
            [7, 0, 0, 0, b'b', 0, b'.', 0, b'c', 0, b'o', 0, b'n', 0, b'f', 0, 0, 0]
        );
        assert_eq!(
            decode_string(LoaderVar::EntryOneShot, &b).unwrap(),
            "b.conf"
        );
        // Non-ASCII survives (surrogate pair included).
        let s = "bascule-é𝄞";
        let b = encode_string(LoaderVar::EntryDefault, s).unwrap();
        assert_eq!(decode_string(LoaderVar::EntryDefault, &b).unwrap(), s);
    }

    #[test]
    fn string_decoding_edge_cases() {
        let v = LoaderVar::EntrySelected;
        // Volatile attributes (0x06) as systemd-boot sets them; no NUL.
        assert_eq!(decode_string(v, &[6, 0, 0, 0, b'a', 0]).unwrap(), "a");
        assert_eq!(decode_string(v, &[7, 0, 0, 0]).unwrap(), "");
        assert_eq!(decode(v, &[6, 0, 0, 0, 1]).unwrap().attributes, 6);
        assert!(matches!(
            decode_string(v, &[7, 0, 0]),
            Err(EfiVarError::TooShort { len: 3, .. })
        ));
        assert!(matches!(
            decode_string(v, &[7, 0, 0, 0, b'a']),
            Err(EfiVarError::OddLength { .. })
        ));
        assert!(matches!(
            decode_string(v, &[7, 0, 0, 0, 0x00, 0xd8, b'a', 0]),
            Err(EfiVarError::BadUtf16 { .. })
        ));
        assert!(matches!(
            encode_string(v, "a\0b"),
            Err(EfiVarError::InteriorNul { .. })
        ));
    }

    #[test]
    fn features() {
        let bits = (1u64 << 2) | (1 << 3) | (1 << 4) | (1 << 8) | (1 << 0);
        let b = encode_u64(bits);
        assert_eq!(b.len(), 12);
        let f = LoaderFeatures(decode_u64(LoaderVar::Features, &b).unwrap());
        assert!(f.contains(LoaderFeatures::BOOT_COUNTING));
        assert_eq!(f.missing_required(), 0);
        assert_eq!(
            LoaderFeatures(LoaderFeatures::ENTRY_ONESHOT).missing_required(),
            LoaderFeatures::ENTRY_DEFAULT
                | LoaderFeatures::BOOT_COUNTING
                | LoaderFeatures::SORT_KEY
        );
        assert!(matches!(
            decode_u64(LoaderVar::Features, &[7, 0, 0, 0, 1, 2]),
            Err(EfiVarError::BadU64 { len: 2, .. })
        ));
    }

    #[test]
    fn boot_count_path() {
        assert_eq!(
            boot_count_file_name("\\loader\\entries\\bascule-b+2-1.conf"),
            "bascule-b+2-1.conf"
        );
        assert_eq!(boot_count_file_name("x.conf"), "x.conf");
    }

    #[test]
    fn store_read_write_delete_in_temp_dir() {
        let dir = tempfile::tempdir().unwrap();
        let store = EfiVarStore::new(dir.path(), FakeFlag::default());
        assert_eq!(store.read_string(LoaderVar::EntryOneShot).unwrap(), None);
        assert_eq!(store.read_features().unwrap(), None);
        store
            .write_string(LoaderVar::EntryOneShot, "bascule-b.conf")
            .unwrap();
        assert_eq!(
            std::fs::read(store.path(LoaderVar::EntryOneShot)).unwrap(),
            encode_string(LoaderVar::EntryOneShot, "bascule-b.conf").unwrap()
        );
        // A shorter value replaces the whole content.
        store.write_string(LoaderVar::EntryOneShot, "x").unwrap();
        assert_eq!(
            store
                .read_string(LoaderVar::EntryOneShot)
                .unwrap()
                .as_deref(),
            Some("x")
        );
        assert!(store.delete(LoaderVar::EntryOneShot).unwrap());
        assert!(!store.delete(LoaderVar::EntryOneShot).unwrap());
        assert!(matches!(
            store.write_string(LoaderVar::EntrySelected, "x"),
            Err(EfiVarError::NotWritable { .. })
        ));
    }

    #[test]
    fn store_clears_and_restores_immutable_flag() {
        let dir = tempfile::tempdir().unwrap();
        let store = EfiVarStore::new(dir.path(), FakeFlag::default());
        let path = store.path(LoaderVar::EntryDefault);
        std::fs::write(
            &path,
            encode_string(LoaderVar::EntryDefault, "old").unwrap(),
        )
        .unwrap();
        store.flag.immutable.borrow_mut().insert(path.clone());
        store
            .write_string(LoaderVar::EntryDefault, "bascule-*")
            .unwrap();
        assert_eq!(*store.flag.log.borrow(), ["clear true", "set"]);
        assert!(store.flag.immutable.borrow().contains(&path));
        assert_eq!(
            store
                .read_string(LoaderVar::EntryDefault)
                .unwrap()
                .as_deref(),
            Some("bascule-*")
        );
        assert!(store.delete(LoaderVar::EntryDefault).unwrap());
    }

    #[test]
    fn store_reads_systemd_boot_variables() {
        let dir = tempfile::tempdir().unwrap();
        let store = EfiVarStore::new(dir.path(), InodeImmutableFlag);
        let sel = store.path(LoaderVar::EntrySelected);
        let mut b = vec![6, 0, 0, 0];
        for u in "bascule-b.conf\0".encode_utf16() {
            b.extend_from_slice(&u.to_le_bytes());
        }
        std::fs::write(sel, b).unwrap();
        std::fs::write(store.path(LoaderVar::Features), encode_u64(0x1f)).unwrap();
        assert_eq!(
            store
                .read_string(LoaderVar::EntrySelected)
                .unwrap()
                .as_deref(),
            Some("bascule-b.conf")
        );
        assert_eq!(store.read_features().unwrap(), Some(LoaderFeatures(0x1f)));
        // The real flag on a filesystem without (or with unset) flags.
        assert!(!InodeImmutableFlag
            .clear_immutable(&store.path(LoaderVar::EntrySelected))
            .unwrap());
        assert!(!InodeImmutableFlag
            .clear_immutable(&dir.path().join("missing"))
            .unwrap());
        store.write_string(LoaderVar::EntryOneShot, "a").unwrap();
    }

    #[test]
    fn errors_name_the_file() {
        let store = EfiVarStore::new("/nonexistent-efivars", InodeImmutableFlag);
        let e = store
            .write_string(LoaderVar::EntryOneShot, "x")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent-efivars/LoaderEntryOneShot-4a67b082"),
            "{e}"
        );
    }
}
