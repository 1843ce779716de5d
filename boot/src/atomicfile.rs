//! Replacing a whole file so that a power cut leaves either the old or the
//! new content, never a mix or nothing: write a temporary file in the same
//! directory, fsync it, rename it over the target, fsync the directory.
//!
//! Used for grub.cfg, BLS entries and loader.conf, and for creating a
//! grubenv that does not exist yet. (An existing grubenv is rewritten in
//! place instead, see [`crate::grubenv`].) On vfat the rename is not atomic
//! in the journalled-filesystem sense, but the old file stays intact until
//! the new one is complete and durable, which is what matters here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed atomic replacement, naming the file and the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("{path}: has no parent directory or file name")]
    BadPath { path: PathBuf },
    #[error("{path}: {step}: {source}")]
    Io {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: io::Error,
    },
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The temporary name used next to `path` while writing it.
fn temp_path(path: &Path) -> Result<PathBuf, AtomicWriteError> {
    let bad = || AtomicWriteError::BadPath {
        path: path.to_path_buf(),
    };
    let name = path.file_name().ok_or_else(bad)?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp{}.{}", std::process::id(), n));
    Ok(path.with_file_name(tmp))
}

/// Replaces `path` with `contents` atomically and durably (mode 0644).
///
/// On error the temporary file is removed and `path` is untouched (or, when
/// the error comes from the final directory fsync, already replaced but
/// perhaps not yet durable).
pub fn atomic_write(path: &Path, contents: &[u8]) -> Result<(), AtomicWriteError> {
    let dir = match path.parent() {
        Some(d) if d.as_os_str().is_empty() => Path::new("."),
        Some(d) => d,
        None => {
            return Err(AtomicWriteError::BadPath {
                path: path.to_path_buf(),
            })
        }
    };
    let tmp = temp_path(path)?;
    let io_err = |step: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| AtomicWriteError::Io {
            path: p,
            step,
            source,
        }
    };

    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("create temporary file", &tmp))?;
        f.write_all(contents)
            .map_err(io_err("write temporary file", &tmp))?;
        f.sync_all().map_err(io_err("fsync temporary file", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename temporary file over it", path))
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// fsyncs a directory so that a rename or creation inside it is durable.
pub fn sync_dir(dir: &Path) -> Result<(), AtomicWriteError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| AtomicWriteError::Io {
            path: dir.to_path_buf(),
            step: "fsync directory",
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("grub.cfg");
        atomic_write(&p, b"first").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"first");
        atomic_write(&p, b"second, longer").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"second, longer");
        atomic_write(&p, b"").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & 0o600, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("grub.cfg")]);
    }

    #[test]
    fn missing_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope").join("x.conf");
        let e = atomic_write(&p, b"x").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("x.conf.tmp"), "{msg}");
        assert!(msg.contains("create temporary file"), "{msg}");
    }

    #[test]
    fn failed_rename_leaves_target_and_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: rename over it fails.
        let p = dir.path().join("target");
        fs::create_dir(&p).unwrap();
        fs::write(p.join("inner"), b"x").unwrap();
        let e = atomic_write(&p, b"data").unwrap_err();
        assert!(e.to_string().contains("rename"), "{e}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("target")]);
    }

    #[test]
    fn relative_path_in_current_directory_has_a_parent() {
        assert!(temp_path(Path::new("grubenv"))
            .unwrap()
            .to_string_lossy()
            .starts_with(".grubenv.tmp"));
        assert!(matches!(
            atomic_write(Path::new("/"), b"x"),
            Err(AtomicWriteError::BadPath { .. })
        ));
    }
}
