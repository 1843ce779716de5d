//! The systemd reference's slot root: Debian 12's systemd and its
//! dependency closure, installed by `mmdebstrap --variant=minbase` from the
//! host's own apt sources (so it works with only the Debian mirror
//! reachable), without docs, man pages or locales, and cached under
//! `build/cache/` keyed by what went into it: a rerun does not rebuild it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// What Debian installs for systemd as PID 1: systemd-sysv (/sbin/init),
/// udev (systemd-udevd: the by-partlabel links fstab needs), and systemd's
/// Recommends, dbus and systemd-timesyncd (mmdebstrap installs no
/// Recommends by itself). e2fsprogs (minbase has it) is named because
/// fstab's fsck pass runs its e2fsck.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "dbus",
    "systemd-timesyncd",
    "e2fsprogs",
];

/// Paths dpkg leaves out: the slot is a 128 MiB partition.
const EXCLUDED: &[&str] = &[
    "/usr/share/doc/*",
    "/usr/share/man/*",
    "/usr/share/info/*",
    "/usr/share/locale/*",
    "/usr/share/lintian/*",
];

const SUITE: &str = "bookworm";

/// Bound on one mmdebstrap run (about a minute with a near mirror).
const MMDEBSTRAP_TIMEOUT_S: u32 = 1200;

/// The host's apt source files, given to mmdebstrap as its mirrors.
fn apt_sources() -> Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    let list = Path::new("/etc/apt/sources.list");
    if std::fs::metadata(list).is_ok_and(|m| m.len() > 0) {
        v.push(list.to_path_buf());
    }
    let dir = Path::new("/etc/apt/sources.list.d");
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut more: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "list" || x == "sources"))
            .collect();
        more.sort();
        v.extend(more);
    }
    if v.is_empty() {
        bail!("no apt sources in /etc/apt: the systemd reference is installed from them");
    }
    Ok(v)
}

/// FNV-1a, 64 bits: a cache key, not a security check.
fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cache key: packages, exclusions, suite and the apt sources' text.
fn key(sources: &[PathBuf]) -> Result<u64> {
    let mut text = format!("v1 {SUITE} {PACKAGES:?} {EXCLUDED:?}\n");
    for s in sources {
        let body =
            std::fs::read_to_string(s).with_context(|| format!("reading {}", s.display()))?;
        text.push_str(&format!("{}\n{body}\n", s.display()));
    }
    Ok(fnv1a(text.as_bytes()))
}

/// The cached Debian root with systemd, built first if missing.
pub fn debian_root(cache: &Path) -> Result<PathBuf> {
    let sources = apt_sources()?;
    let dir = cache.join(format!("systemd-root-{:016x}", key(&sources)?));
    if dir.join("lib/systemd/systemd").exists() {
        return Ok(dir);
    }
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    let tmp = dir.with_extension("partial");
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    println!(
        "building the systemd reference's root with mmdebstrap ({}) into {}",
        PACKAGES.join(","),
        dir.display()
    );
    let mut cmd = Command::new("timeout");
    cmd.arg(MMDEBSTRAP_TIMEOUT_S.to_string())
        .arg("mmdebstrap")
        .args(["--mode=root", "--variant=minbase", "--quiet"])
        .arg(format!("--include={}", PACKAGES.join(",")));
    for p in EXCLUDED {
        cmd.arg(format!("--dpkgopt=path-exclude={p}"));
    }
    cmd.arg(SUITE).arg(&tmp).args(&sources);
    let st = cmd
        .status()
        .context("running mmdebstrap (package mmdebstrap)")?;
    if !st.success() {
        bail!(
            "mmdebstrap failed ({st}); the tree is left in {}",
            tmp.display()
        );
    }
    // devtmpfs provides /dev in the guest; device nodes would only stop a
    // non-root copy of the tree.
    let dev = tmp.join("dev");
    if dev.exists() {
        std::fs::remove_dir_all(&dev).with_context(|| format!("emptying {}", dev.display()))?;
        std::fs::create_dir(&dev)?;
    }
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dir.display()))?;
    Ok(dir)
}

/// The installed version of `package` in a Debian root ("?" if unknown).
pub fn package_version(root: &Path, package: &str) -> String {
    let status = std::fs::read_to_string(root.join("var/lib/dpkg/status")).unwrap_or_default();
    status
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l == format!("Package: {package}")))
        .and_then(|stanza| stanza.lines().find_map(|l| l.strip_prefix("Version: ")))
        .unwrap_or("?")
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_package_version() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
        std::fs::write(
            dir.path().join("var/lib/dpkg/status"),
            "Package: systemd-sysv\nVersion: 1\n\nPackage: systemd\nStatus: x\nVersion: 252.39-1~deb12u2\n",
        )
        .unwrap();
        assert_eq!(package_version(dir.path(), "systemd"), "252.39-1~deb12u2");
        assert_eq!(package_version(dir.path(), "udev"), "?");
    }

    #[test]
    fn key_depends_on_the_sources() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.sources");
        std::fs::write(&a, "URIs: http://deb.debian.org/debian\n").unwrap();
        let k1 = key(std::slice::from_ref(&a)).unwrap();
        assert_eq!(k1, key(std::slice::from_ref(&a)).unwrap());
        std::fs::write(&a, "URIs: http://mirror.example/debian\n").unwrap();
        assert_ne!(k1, key(&[a]).unwrap());
    }
}
