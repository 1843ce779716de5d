//! A slot's root filesystem: staged in a directory, then packed with
//! `mksquashfs` (zstd: mounts in ~20 ms under TCG, small enough that a slot
//! is a few MB).
//!
//! Contents: `/sbin/bascule-init` (also `/sbin/init`), `/usr/bin/bascule`,
//! busybox-static with a symlink per applet (console shell and tools), the
//! example services, `/etc/bascule/version`, `/etc/bascule/trusted-keys/`,
//! `/srv/www/index.html`, and empty mount points; `/bin` and `/sbin` are
//! symlinks into `/usr`.

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use crate::layout;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// The example services, as `(file name, TOML)`. The files live in
/// `rootfs/files/services/` so they read like any service definition.
pub const EXAMPLE_SERVICES: &[(&str, &str)] = &[
    (
        "console.toml",
        include_str!("../files/services/console.toml"),
    ),
    ("httpd.toml", include_str!("../files/services/httpd.toml")),
    (
        "heartbeat.toml",
        include_str!("../files/services/heartbeat.toml"),
    ),
];

/// Empty directories the running system mounts things on.
pub const MOUNT_POINTS: &[&str] = &[
    "/proc",
    "/sys",
    "/dev",
    "/run",
    "/tmp",
    "/var",
    "/boot",
    "/system/state",
    "/root",
];

/// Where busybox-static puts its binary.
pub const HOST_BUSYBOX: &str = "/bin/busybox";

const TRUSTED_KEYS_README: &str = "\
Public keys this image trusts for signed upgrade bundles, one file per key.
An upgrade is refused unless its bundle verifies against one of them.
";

const PROFILE: &str = "\
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
export HOME=/root
PS1='bascule:\\w# '
";

pub struct RootfsSpec<'a> {
    /// bascule-init (static).
    pub init: &'a Path,
    /// The `bascule` CLI (static).
    pub cli: &'a Path,
    /// A static busybox.
    pub busybox: &'a Path,
    pub version: &'a str,
    /// `(file name, contents)` for /etc/bascule/services/.
    pub services: &'a [(&'a str, &'a str)],
    /// More files, written last (they may replace ours).
    pub extra_files: &'a [RootFile],
}

/// A file to add to a slot's root filesystem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootFile {
    /// Absolute path inside the slot.
    pub path: String,
    pub contents: Vec<u8>,
    /// Permission bits, e.g. 0o644 or 0o755.
    pub mode: u32,
}

/// Stages the tree in `staging` (emptied first) and packs it into `out`.
pub fn build(spec: &RootfsSpec, staging: &Path, out: &Path) -> Result<()> {
    if staging.exists() {
        fs::remove_dir_all(staging).io("emptying the staging directory", staging)?;
    }
    stage(spec, staging)?;
    if out.exists() {
        fs::remove_file(out).io("removing the old", out)?;
    }
    Cmd::new("mksquashfs")
        .arg(staging)
        .arg(out)
        // -all-root: the build runs as any user, the image is root's.
        // Fixed times: the same inputs give the same image.
        .args([
            "-comp",
            "zstd",
            "-noappend",
            "-all-root",
            "-no-xattrs",
            "-quiet",
            "-no-progress",
        ])
        .args(["-mkfs-time", "0", "-all-time", "0"])
        .hint("mksquashfs comes from squashfs-tools")
        .run()
}

fn stage(spec: &RootfsSpec, root: &Path) -> Result<()> {
    let at = |p: &str| -> PathBuf { root.join(p.trim_start_matches('/')) };
    for d in MOUNT_POINTS
        .iter()
        .chain(&["/usr/bin", "/usr/sbin", "/etc", "/srv/www"])
    {
        mkdir(&at(d))?;
    }
    // Merged /usr, as in Debian 12: busybox splits its applets between
    // /bin, /sbin, /usr/bin and /usr/sbin, and with the merge every one of
    // them is reachable under both prefixes (console.toml's /bin/setsid is
    // really a /usr/bin applet).
    link("usr/bin", &at("/bin"))?;
    link("usr/sbin", &at("/sbin"))?;
    copy_exec(spec.init, &at("/sbin/bascule-init"))?;
    link("bascule-init", &at("/sbin/init"))?;
    copy_exec(spec.cli, &at("/usr/bin/bascule"))?;
    copy_exec(spec.busybox, &at("/bin/busybox"))?;
    for applet in busybox_applets(spec.busybox)? {
        let dest = at(&applet);
        // Never shadow our own files (busybox has `init` and `linuxrc`).
        if dest.symlink_metadata().is_ok() || applet == "linuxrc" {
            continue;
        }
        if let Some(parent) = dest.parent() {
            mkdir(parent)?;
        }
        link("/bin/busybox", &dest)?;
    }
    let services = at(layout::SERVICES_DIR);
    mkdir(&services)?;
    for (name, text) in spec.services {
        write(&services.join(name), text.as_bytes(), 0o644)?;
    }
    write(
        &at(layout::VERSION_FILE),
        format!("{}\n", spec.version).as_bytes(),
        0o644,
    )?;
    let keys = at(layout::TRUSTED_KEYS_DIR);
    mkdir(&keys)?;
    write(&keys.join("README"), TRUSTED_KEYS_README.as_bytes(), 0o644)?;
    write(&at("/etc/profile"), PROFILE.as_bytes(), 0o644)?;
    let index = format!(
        "<!doctype html>\n<title>Bascule</title>\n<p>Bascule {}</p>\n",
        spec.version
    );
    write(&at("/srv/www/index.html"), index.as_bytes(), 0o644)?;
    for f in spec.extra_files {
        if f.path.split('/').any(|c| c == "..") || !f.path.starts_with('/') {
            return Err(Error::Invalid(format!(
                "extra root file path {:?} must be absolute, without ..",
                f.path
            )));
        }
        let dest = at(&f.path);
        if dest.symlink_metadata().is_ok() {
            fs::remove_file(&dest).io("replacing", &dest)?;
        }
        write(&dest, &f.contents, f.mode)?;
    }
    Ok(())
}

/// Applet paths relative to `/`, from `busybox --list-full`.
fn busybox_applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Cmd::new(busybox)
        .arg("--list-full")
        .hint("install busybox-static, whose /bin/busybox is a static binary")
        .output()?;
    let text = String::from_utf8_lossy(&out);
    let applets: Vec<String> = text
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect();
    if applets.is_empty() {
        return Err(Error::Invalid(format!(
            "{} --list-full printed no applets",
            busybox.display()
        )));
    }
    Ok(applets)
}

fn mkdir(p: &Path) -> Result<()> {
    fs::create_dir_all(p).io("creating", p)
}

fn link(target: &str, at: &Path) -> Result<()> {
    symlink(target, at).io("creating symlink", at)
}

fn write(p: &Path, data: &[u8], mode: u32) -> Result<()> {
    if let Some(parent) = p.parent() {
        mkdir(parent)?;
    }
    fs::write(p, data).io("writing", p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).io("setting the mode of", p)
}

fn copy_exec(src: &Path, dest: &Path) -> Result<()> {
    fs::copy(src, dest).io("copying into the root filesystem", src)?;
    fs::set_permissions(dest, fs::Permissions::from_mode(0o755)).io("setting the mode of", dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_tree_has_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("fake-bin");
        fs::write(&fake, b"\x7fELF").expect("fake");
        let busybox = Path::new(HOST_BUSYBOX);
        let spec = RootfsSpec {
            init: &fake,
            cli: &fake,
            busybox,
            version: "7.7",
            services: EXAMPLE_SERVICES,
            extra_files: &[RootFile {
                path: "/etc/inittab".into(),
                contents: b"x".to_vec(),
                mode: 0o600,
            }],
        };
        let root = dir.path().join("root");
        stage(&spec, &root).expect("stage");
        assert_eq!(
            fs::read_link(root.join("sbin/init"))
                .expect("init link")
                .to_str(),
            Some("bascule-init")
        );
        assert_eq!(
            fs::read_link(root.join("bin/sh")).expect("sh").to_str(),
            Some("/bin/busybox")
        );
        assert!(root.join("bin/setsid").symlink_metadata().is_ok());
        assert!(root.join("usr/sbin/bascule-init").is_file());
        assert_eq!(
            fs::read_link(root.join("bin"))
                .expect("merged /usr")
                .to_str(),
            Some("usr/bin")
        );
        assert_eq!(
            fs::read_to_string(root.join("etc/bascule/version")).expect("version"),
            "7.7\n"
        );
        assert!(root.join("etc/bascule/services/httpd.toml").is_file());
        assert!(root.join("etc/bascule/trusted-keys/README").is_file());
        assert!(root.join("system/state").is_dir());
        assert!(root.join("srv/www/index.html").is_file());
        assert_eq!(
            fs::read(root.join("etc/inittab")).expect("extra file"),
            b"x"
        );
        let img = dir.path().join("root.squashfs");
        build(&spec, &root, &img).expect("mksquashfs");
        let listing = Cmd::new("unsquashfs")
            .arg("-l")
            .arg(&img)
            .output()
            .expect("unsquashfs");
        assert!(String::from_utf8_lossy(&listing).contains("squashfs-root/usr/bin/bascule"));
    }

    #[test]
    fn example_services_use_the_agreed_keys() {
        for (name, text) in EXAMPLE_SERVICES {
            assert!(text.contains("exec = ["), "{name}");
            assert!(text.contains("restart = \"always\""), "{name}");
        }
        assert!(EXAMPLE_SERVICES[1].1.contains("[readiness]\ntcp = 8080"));
        assert!(EXAMPLE_SERVICES[2].1.contains("interval_ms = 2000"));
    }
}
