//! Debian's generic kernel (linux-image-amd64), taken from the package
//! without installing it on the host: `apt-get download` + `dpkg-deb -x`,
//! then `depmod`, because the package ships no modules.dep.
//!
//! The extracted tree is cached under `<cache>/kernel/<package>/`; a second
//! build only asks apt-cache which package is current (a local lookup) and
//! reuses the tree. Extraction happens in a temporary directory renamed into
//! place at the end, so an interrupted or concurrent build never leaves a
//! half-extracted tree that looks complete.

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// The metapackage that always depends on the current generic kernel. The
/// cloud flavour is not an option: it lacks the i6300esb watchdog driver.
pub const METAPACKAGE: &str = "linux-image-amd64";

/// Marker written last into a complete cache entry; holds the version.
const COMPLETE_MARKER: &str = ".complete";

/// An extracted kernel package.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// Release string, e.g. `6.1.0-56-amd64` (the `/lib/modules` directory
    /// name and what `uname -r` prints).
    pub version: String,
    /// The bzImage to put on the ESP.
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<version>`, with a modules.dep.
    pub modules_dir: PathBuf,
}

/// Returns the current Debian generic kernel, downloading and extracting it
/// into `cache_dir` the first time.
pub fn fetch(cache_dir: &Path) -> Result<Kernel> {
    let kernel_cache = cache_dir.join("kernel");
    let package = match current_package() {
        Ok(p) => p,
        Err(e) => {
            // Offline or apt lists missing: any cached kernel still builds an
            // image, which beats failing.
            if let Some(k) = newest_cached(&kernel_cache)? {
                eprintln!("bascule-rootfs: {e}; using cached kernel {}", k.version);
                return Ok(k);
            }
            return Err(e);
        }
    };
    let dir = kernel_cache.join(&package);
    if let Some(k) = load_cached(&dir)? {
        return Ok(k);
    }
    fs::create_dir_all(&kernel_cache).io("creating the kernel cache", &kernel_cache)?;
    let tmp = kernel_cache.join(format!(".tmp-{package}-{}", std::process::id()));
    let result = extract_into(&package, &tmp);
    if let Err(e) = result {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    match fs::rename(&tmp, &dir) {
        Ok(()) => {}
        // Another build finished the same package first: use its copy.
        Err(_) if dir.join(COMPLETE_MARKER).exists() => {
            let _ = fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(e).io("moving the extracted kernel into", &dir),
    }
    load_cached(&dir)?.ok_or_else(|| {
        Error::Invalid(format!(
            "kernel cache {} is incomplete after extraction",
            dir.display()
        ))
    })
}

/// The real package behind the metapackage, e.g. `linux-image-6.1.0-56-amd64`.
pub fn current_package() -> Result<String> {
    let out = Cmd::new("apt-cache")
        .args(["depends", METAPACKAGE])
        .hint("apt-cache must know linux-image-amd64: run `apt-get update`")
        .output()?;
    parse_depends(&String::from_utf8_lossy(&out)).ok_or_else(|| {
        Error::Invalid(format!(
            "`apt-cache depends {METAPACKAGE}` names no linux-image-* package; run `apt-get update`"
        ))
    })
}

/// Picks the first `Depends: linux-image-…` line of `apt-cache depends`.
fn parse_depends(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends:"))
        .map(|p| p.trim().trim_matches(|c| c == '<' || c == '>'))
        .find(|p| p.starts_with("linux-image-") && *p != METAPACKAGE)
        .map(str::to_string)
}

fn extract_into(package: &str, tmp: &Path) -> Result<()> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).io("removing the stale temporary directory", tmp)?;
    }
    fs::create_dir_all(tmp).io("creating", tmp)?;
    eprintln!("bascule-rootfs: downloading {package} (once; cached afterwards)");
    Cmd::new("apt-get")
        .args(["download", "-q", package])
        .current_dir(tmp)
        .hint("needs the Debian mirror in sources.list and a current `apt-get update`")
        .run()?;
    let deb = fs::read_dir(tmp)
        .io("listing", tmp)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "apt-get download {package} left no .deb in {}",
                tmp.display()
            ))
        })?;
    let root = tmp.join("root");
    Cmd::new("dpkg-deb").arg("-x").arg(&deb).arg(&root).run()?;
    // The .deb is as large as what we keep; drop it.
    fs::remove_file(&deb).io("removing", &deb)?;

    let version = package.trim_start_matches("linux-image-").to_string();
    let kernel = locate(tmp, &version)?;
    // depmod wants the directory that contains lib/modules/<version>.
    let base = kernel
        .modules_dir
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .ok_or_else(|| {
            Error::Invalid(format!("odd modules path {}", kernel.modules_dir.display()))
        })?;
    Cmd::new("depmod")
        .arg("-b")
        .arg(base)
        .arg(&version)
        .hint("depmod comes from the kmod package")
        .run()?;
    let marker = tmp.join(COMPLETE_MARKER);
    fs::write(&marker, &version).io("writing", &marker)?;
    Ok(())
}

/// Finds vmlinuz and the modules directory in an extracted tree (`lib/` or,
/// in a merged-/usr package, `usr/lib/`).
fn locate(dir: &Path, version: &str) -> Result<Kernel> {
    let root = dir.join("root");
    let vmlinuz = root.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        return Err(Error::Invalid(format!(
            "{} is missing from the kernel package; delete {} and rebuild",
            vmlinuz.display(),
            dir.display()
        )));
    }
    let modules_dir = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|m| root.join(m).join(version))
        .find(|p| p.is_dir())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "no lib/modules/{version} in the kernel package under {}",
                root.display()
            ))
        })?;
    Ok(Kernel {
        version: version.to_string(),
        vmlinuz,
        modules_dir,
    })
}

fn load_cached(dir: &Path) -> Result<Option<Kernel>> {
    let marker = dir.join(COMPLETE_MARKER);
    let version = match fs::read_to_string(&marker) {
        Ok(v) => v.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).io("reading", &marker),
    };
    let kernel = locate(dir, &version)?;
    if !kernel.modules_dir.join("modules.dep").is_file() {
        return Ok(None);
    }
    Ok(Some(kernel))
}

/// The most recently extracted complete kernel in the cache, if any.
fn newest_cached(kernel_cache: &Path) -> Result<Option<Kernel>> {
    let Ok(entries) = fs::read_dir(kernel_cache) else {
        return Ok(None);
    };
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for entry in entries.flatten() {
        let marker = entry.path().join(COMPLETE_MARKER);
        if let Ok(meta) = fs::metadata(&marker) {
            let t = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            let newer = match &best {
                Some((bt, _)) => t > *bt,
                None => true,
            };
            if newer {
                best = Some((t, entry.path()));
            }
        }
    }
    match best {
        Some((_, dir)) => load_cached(&dir),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_depends() {
        let out = "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n";
        assert_eq!(
            parse_depends(out).as_deref(),
            Some("linux-image-6.1.0-56-amd64")
        );
        assert_eq!(parse_depends("linux-image-amd64\n"), None);
        let virt = "linux-image-amd64\n  Depends: <linux-image-6.1.0-9-amd64>\n";
        assert_eq!(
            parse_depends(virt).as_deref(),
            Some("linux-image-6.1.0-9-amd64")
        );
    }
}
