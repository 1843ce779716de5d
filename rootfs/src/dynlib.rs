//! Dynamically linked host binaries in a slot: the binary plus every shared
//! library the host's `ldd` resolves for it (the ELF interpreter included),
//! each copied to the same absolute path inside the slot, so the dynamic
//! loader finds them where it would on the host.
//!
//! `ldd` already lists the whole transitive closure. Only what the loader
//! maps at start is covered: a library a program `dlopen`s by itself is not
//! (e2fsprogs' optional libmagic, for one, is then simply not used).

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use std::fs;
use std::path::{Component, Path, PathBuf};

fn closure_error(binary: &Path, reason: impl Into<String>) -> Error {
    Error::Libraries {
        binary: binary.to_path_buf(),
        reason: reason.into(),
    }
}

/// The absolute library paths in `ldd`'s output for `binary`, in order,
/// without duplicates. The vDSO (no file) is skipped; a library `ldd` could
/// not find is an error.
pub fn parse_ldd(binary: &Path, output: &str) -> Result<Vec<PathBuf>> {
    let mut libs: Vec<PathBuf> = Vec::new();
    for line in output.lines().map(str::trim) {
        if line.is_empty() || line == "statically linked" {
            continue;
        }
        // `NAME => PATH (0xADDR)`, `PATH (0xADDR)` or `NAME (0xADDR)`.
        let (name, target) = match line.split_once("=>") {
            Some((n, t)) => (n.trim(), t.trim()),
            None => ("", line),
        };
        if target.starts_with("not found") {
            return Err(closure_error(
                binary,
                format!("ldd cannot find {name} on this host"),
            ));
        }
        let path = target.rsplit_once(" (0x").map_or(target, |(p, _)| p).trim();
        if path.is_empty() || !path.starts_with('/') {
            if path.contains("vdso") || path.contains("linux-gate") {
                continue;
            }
            return Err(closure_error(
                binary,
                format!("unexpected ldd line {line:?}"),
            ));
        }
        let path = PathBuf::from(path);
        if path
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        {
            return Err(closure_error(
                binary,
                format!("ldd names a relative library path {}", path.display()),
            ));
        }
        if !libs.contains(&path) {
            libs.push(path);
        }
    }
    Ok(libs)
}

/// The shared libraries (and ELF interpreter) `binary` loads, as the host's
/// `ldd` resolves them. Empty for a static binary.
pub fn library_closure(binary: &Path) -> Result<Vec<PathBuf>> {
    if !binary.is_file() {
        return Err(closure_error(binary, "no such file on this host"));
    }
    match Cmd::new("ldd")
        .arg(binary)
        .hint("ldd comes with libc-bin")
        .output()
    {
        Ok(out) => parse_ldd(binary, &String::from_utf8_lossy(&out)),
        // glibc's ldd exits 1 on a static executable.
        Err(Error::Command { stderr, .. }) if stderr.contains("not a dynamic executable") => {
            Ok(Vec::new())
        }
        Err(e) => Err(e),
    }
}

/// `root` joined with an absolute slot path, refusing `..`.
fn in_root(root: &Path, slot_path: &Path) -> Result<PathBuf> {
    let rel = slot_path.strip_prefix("/").map_err(|_| {
        Error::Invalid(format!("slot path {} is not absolute", slot_path.display()))
    })?;
    if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::Invalid(format!(
            "slot path {} must not contain . or ..",
            slot_path.display()
        )));
    }
    Ok(root.join(rel))
}

/// Copies the file `src` to `dest` (contents, following symlinks, with
/// `mode`), creating parent directories (through the root's own symlinks,
/// e.g. `/lib -> usr/lib`).
fn copy_file(src: &Path, dest: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).io("creating", parent)?;
    }
    if dest.symlink_metadata().is_ok() {
        fs::remove_file(dest).io("replacing", dest)?;
    }
    fs::copy(src, dest).io("copying into the root filesystem", src)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode)).io("setting the mode of", dest)
}

/// Installs the host binary `binary` at the absolute slot path `dest` under
/// `root`, and each library of its closure at its own host path under
/// `root` (a library already there is overwritten with the same file).
/// Returns the libraries' slot paths.
pub fn install_with_libraries(binary: &Path, root: &Path, dest: &str) -> Result<Vec<PathBuf>> {
    let libs = library_closure(binary)?;
    copy_file(binary, &in_root(root, Path::new(dest))?, 0o755)?;
    for lib in &libs {
        // 0755 as Debian ships them: the interpreter is also executable.
        copy_file(lib, &in_root(root, lib)?, 0o755)?;
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MKE2FS_LDD: &str = "\tlinux-vdso.so.1 (0x00007fc612149000)
\tlibext2fs.so.2 => /lib/x86_64-linux-gnu/libext2fs.so.2 (0x00007fc6120a9000)
\tlibcom_err.so.2 => /lib/x86_64-linux-gnu/libcom_err.so.2 (0x00007fc6120a3000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fc611e53000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007fc61214b000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007fc611e53000)
";

    #[test]
    fn parses_ldd_output() {
        let bin = Path::new("/sbin/mke2fs");
        let libs = parse_ldd(bin, MKE2FS_LDD).expect("parse");
        let libs: Vec<&str> = libs.iter().filter_map(|p| p.to_str()).collect();
        assert_eq!(
            libs,
            [
                "/lib/x86_64-linux-gnu/libext2fs.so.2",
                "/lib/x86_64-linux-gnu/libcom_err.so.2",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
        assert!(parse_ldd(bin, "\tstatically linked\n")
            .expect("static")
            .is_empty());
        let err = parse_ldd(bin, "\tlibfoo.so.1 => not found\n").expect_err("missing");
        assert!(err.to_string().contains("/sbin/mke2fs"), "{err}");
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
        assert!(parse_ldd(bin, "\tgarbage\n").is_err());
        assert!(parse_ldd(bin, "\tx => /lib/../etc/x (0x1)\n").is_err());
    }

    #[test]
    fn static_binary_has_no_closure() {
        let libs = library_closure(Path::new(crate::squashfs::HOST_BUSYBOX)).expect("ldd");
        assert!(libs.is_empty(), "{libs:?}");
        let err = library_closure(Path::new("/nonexistent/tool")).expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/tool"), "{err}");
    }

    /// The copied closure is complete: the copied dynamic loader, told to
    /// search only the copied library directory first, resolves every
    /// library of the copied binary inside the root (a missing one would
    /// resolve to the host's copy, outside it) and runs it.
    #[test]
    fn copied_closure_is_self_contained() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let libs = install_with_libraries(Path::new("/sbin/mke2fs"), root, "/sbin/mke2fs")
            .expect("install mke2fs");
        assert!(
            libs.iter().any(|l| l.ends_with("libext2fs.so.2")),
            "{libs:?}"
        );
        let interp = libs
            .iter()
            .find(|l| {
                l.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("ld-linux"))
            })
            .expect("an ELF interpreter");
        let loader = root.join(interp.strip_prefix("/").expect("absolute"));
        let mut search: Vec<String> = libs
            .iter()
            .filter_map(|l| l.parent())
            .map(|d| {
                root.join(d.strip_prefix("/").unwrap_or(d))
                    .display()
                    .to_string()
            })
            .collect();
        search.dedup();
        let bin = root.join("sbin/mke2fs");
        let listing = Cmd::new(&loader)
            .args([
                "--inhibit-cache",
                "--library-path",
                &search.join(":"),
                "--list",
            ])
            .arg(&bin)
            .output()
            .expect("ld.so --list");
        let listing = String::from_utf8_lossy(&listing).into_owned();
        let resolved = parse_ldd(&bin, &listing).expect("parse the listing");
        for lib in resolved.iter().filter(|l| *l != interp) {
            assert!(
                lib.starts_with(root),
                "{} outside the root:\n{listing}",
                lib.display()
            );
        }
        let version = std::process::Command::new(&loader)
            .args(["--inhibit-cache", "--library-path", &search.join(":")])
            .arg(&bin)
            .arg("-V")
            .output()
            .expect("run the copied mke2fs");
        assert!(version.status.success());
        assert!(String::from_utf8_lossy(&version.stderr).contains("mke2fs"));
        assert!(in_root(root, Path::new("/a/../b")).is_err());
        assert!(in_root(root, Path::new("a")).is_err());
    }
}
