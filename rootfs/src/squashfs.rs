//! A slot's root filesystem: staged in a directory, then packed with
//! `mksquashfs` (zstd: mounts in ~20 ms under TCG, small enough that a slot
//! is a few MB).
//!
//! Contents: `/sbin/bascule-init` (also `/sbin/init`), `/usr/bin/bascule`,
//! busybox-static with a symlink per applet (console shell and tools),
//! e2fsprogs' `mke2fs` (also `mkfs.ext4`) and `e2fsck` with their shared
//! libraries, the example services, `/etc/bascule/version`,
//! `/etc/bascule/trusted-keys/`, `/srv/www/index.html`, and empty mount
//! points; `/bin`, `/sbin`, `/lib` and `/lib64` are symlinks into `/usr`.

use crate::cmd::Cmd;
use crate::dynlib;
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
    layout::MOUNT_EPHEMERAL,
    layout::MOUNT_ESP,
    layout::MOUNT_STATE,
    "/root",
];

/// A dynamically linked host program copied into every slot together with
/// its shared libraries ([`dynlib`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostTool {
    /// The program on the build host.
    pub host: &'static str,
    /// Where it goes in the slot.
    pub slot: &'static str,
    /// Symlinks to it, in the same slot directory.
    pub links: &'static [&'static str],
}

/// e2fsprogs: bascule-init creates ext4 on a blank STATE/EPHEMERAL with
/// `mkfs.ext4` and runs `e2fsck -p` before mounting. busybox's `mke2fs`
/// makes only ext2 and busybox has no e2fsck, so Debian's are copied in
/// (they are dynamically linked: libext2fs, libcom_err, libblkid, libuuid,
/// libe2p, libc and the loader come along). They replace busybox's applet
/// of the same name.
pub const E2FSPROGS: &[HostTool] = &[
    HostTool {
        host: "/sbin/mke2fs",
        slot: "/sbin/mke2fs",
        links: &["mkfs.ext4"],
    },
    HostTool {
        host: "/sbin/e2fsck",
        slot: "/sbin/e2fsck",
        links: &[],
    },
];

/// Debian's etcd (package etcd-server), for control-plane machines: PID 1
/// runs it as a service when the machine configuration says so. A Go
/// program linked against libc only.
pub const ETCD: HostTool = HostTool {
    host: "/usr/bin/etcd",
    slot: "/usr/bin/etcd",
    links: &[],
};

/// Host configuration files copied as they are, `(host, slot)`. mke2fs
/// works without its profile (a built-in copy), but with the host's the
/// filesystems the init creates are made exactly like those the build made
/// with the host's mkfs.ext4.
pub const HOST_CONFIG_FILES: &[(&str, &str)] = &[("/etc/mke2fs.conf", "/etc/mke2fs.conf")];

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
    /// Dynamically linked host programs to copy in with their libraries
    /// (normally [`E2FSPROGS`]), and host files to copy as they are
    /// (normally [`HOST_CONFIG_FILES`]).
    pub host_tools: &'a [HostTool],
    pub host_files: &'a [(&'a str, &'a str)],
    pub version: &'a str,
    /// `(file name, contents)` for /etc/bascule/services/.
    pub services: &'a [(&'a str, &'a str)],
    /// A directory copied over the staged tree before `extra_files`
    /// (its files replace ours): e.g. a Debian root for a benchmark.
    pub overlay_dir: Option<&'a Path>,
    /// More files, written last (they may replace ours).
    pub extra_files: &'a [RootFile],
    /// Public keys the slot trusts for upgrade bundles, written to
    /// [`layout::TRUSTED_KEYS_DIR`] as `<fingerprint>.pub`.
    pub trusted_keys: &'a [bascule_bundle::VerifyingKey],
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
    // /lib and /lib64 likewise, for the shared libraries of the host tools
    // (placed at the paths the host's loader found them, /lib/x86_64-…).
    link("usr/bin", &at("/bin"))?;
    link("usr/sbin", &at("/sbin"))?;
    mkdir(&at("/usr/lib"))?;
    mkdir(&at("/usr/lib64"))?;
    link("usr/lib", &at("/lib"))?;
    link("usr/lib64", &at("/lib64"))?;
    copy_exec(spec.init, &at("/sbin/bascule-init"))?;
    link("bascule-init", &at("/sbin/init"))?;
    copy_exec(spec.cli, &at("/usr/bin/bascule"))?;
    copy_exec(spec.busybox, &at("/bin/busybox"))?;
    // Before the applet links, which never replace an existing file.
    for tool in spec.host_tools {
        dynlib::install_with_libraries(Path::new(tool.host), root, tool.slot)?;
        for name in tool.links {
            let dest = at(tool.slot).with_file_name(name);
            let target = Path::new(tool.slot)
                .file_name()
                .ok_or_else(|| Error::Invalid(format!("host tool slot path {:?}", tool.slot)))?;
            symlink(target, &dest).io("creating symlink", &dest)?;
        }
    }
    for (host, slot) in spec.host_files {
        let src = Path::new(host);
        let data = fs::read(src).io("reading the host file", src)?;
        write(&at(slot), &data, 0o644)?;
    }
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
    // --- trusted bundle keys (see docs/bundle.md) ---
    for key in spec.trusted_keys {
        let name = format!(
            "{}.{}",
            bascule_bundle::keys::Fingerprint::of(key),
            bascule_bundle::keys::PUBLIC_EXT
        );
        let text = bascule_bundle::keys::public_key_text(key);
        write(&keys.join(name), text.as_bytes(), 0o644)?;
    }
    // --- end trusted bundle keys ---
    write(&at("/etc/profile"), PROFILE.as_bytes(), 0o644)?;
    let index = format!(
        "<!doctype html>\n<title>Bascule</title>\n<p>Bascule {}</p>\n",
        spec.version
    );
    write(&at("/srv/www/index.html"), index.as_bytes(), 0o644)?;
    if let Some(dir) = spec.overlay_dir {
        // --remove-destination: a file replacing one of our symlinks (an
        // applet) must not be written through it into busybox.
        Cmd::new("cp")
            .args(["-a", "--remove-destination"])
            .arg(dir.join("."))
            .arg(root)
            .run()?;
    }
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
    fn overlay_replaces_applets_without_writing_through_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("fake-bin");
        fs::write(&fake, b"\x7fELF").expect("fake");
        // A Debian-like tree: merged /usr, a real awk, an /sbin/init link.
        let overlay = dir.path().join("overlay");
        fs::create_dir_all(overlay.join("usr/bin")).expect("mkdir");
        fs::create_dir_all(overlay.join("usr/sbin")).expect("mkdir");
        symlink("usr/bin", overlay.join("bin")).expect("bin link");
        fs::write(overlay.join("usr/bin/awk"), b"real awk").expect("awk");
        symlink("/lib/systemd/systemd", overlay.join("usr/sbin/init")).expect("init");
        let spec = RootfsSpec {
            init: &fake,
            cli: &fake,
            busybox: Path::new(HOST_BUSYBOX),
            host_tools: &[],
            host_files: &[],
            version: "1",
            services: &[],
            overlay_dir: Some(&overlay),
            extra_files: &[],
            trusted_keys: &[],
        };
        let root = dir.path().join("root");
        stage(&spec, &root).expect("stage");
        assert_eq!(fs::read(root.join("bin/awk")).expect("awk"), b"real awk");
        assert_eq!(
            fs::read(root.join("bin/busybox")).expect("busybox"),
            fs::read(HOST_BUSYBOX).expect("host busybox")
        );
        assert_eq!(
            fs::read_link(root.join("sbin/init"))
                .expect("init")
                .to_str(),
            Some("/lib/systemd/systemd")
        );
        assert_eq!(
            fs::read_link(root.join("bin")).expect("bin").to_str(),
            Some("usr/bin")
        );
    }

    #[test]
    fn staged_tree_has_everything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fake = dir.path().join("fake-bin");
        fs::write(&fake, b"\x7fELF").expect("fake");
        let busybox = Path::new(HOST_BUSYBOX);
        let dev_key = bascule_bundle::SigningKey::from_bytes(&[4; 32]).verifying_key();
        let spec = RootfsSpec {
            init: &fake,
            cli: &fake,
            busybox,
            host_tools: E2FSPROGS,
            host_files: HOST_CONFIG_FILES,
            version: "7.7",
            services: EXAMPLE_SERVICES,
            overlay_dir: None,
            extra_files: &[RootFile {
                path: "/etc/inittab".into(),
                contents: b"x".to_vec(),
                mode: 0o600,
            }],
            trusted_keys: &[dev_key],
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
        // e2fsprogs with their libraries, replacing busybox's mke2fs applet.
        for tool in ["sbin/mke2fs", "sbin/e2fsck", "usr/sbin/mke2fs"] {
            let meta = root.join(tool).symlink_metadata().expect(tool);
            assert!(meta.is_file(), "{tool} is a copy, not busybox's applet");
            assert_eq!(meta.permissions().mode() & 0o777, 0o755, "{tool}");
        }
        assert_eq!(
            fs::read_link(root.join("sbin/mkfs.ext4"))
                .expect("mkfs.ext4 link")
                .to_str(),
            Some("mke2fs")
        );
        assert_eq!(
            fs::read_link(root.join("lib")).expect("/lib").to_str(),
            Some("usr/lib")
        );
        for lib in [
            "lib/x86_64-linux-gnu/libext2fs.so.2",
            "lib/x86_64-linux-gnu/libc.so.6",
            "lib64/ld-linux-x86-64.so.2",
        ] {
            assert!(
                root.join(lib).symlink_metadata().expect(lib).is_file(),
                "{lib}"
            );
        }
        assert_eq!(
            fs::read(root.join("etc/mke2fs.conf")).expect("mke2fs.conf"),
            fs::read("/etc/mke2fs.conf").expect("host mke2fs.conf")
        );
        assert!(root.join("etc/bascule/services/httpd.toml").is_file());
        assert!(root.join("etc/bascule/trusted-keys/README").is_file());
        // The image's trusted keys load back as exactly the ones given.
        let trusted =
            bascule_bundle::keys::load_trusted_dir(&root.join("etc/bascule/trusted-keys"))
                .expect("trusted keys");
        assert_eq!(
            trusted.iter().map(|k| k.key).collect::<Vec<_>>(),
            vec![dev_key]
        );
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
        let listing = String::from_utf8_lossy(&listing);
        for path in [
            "squashfs-root/usr/bin/bascule",
            "squashfs-root/usr/sbin/mkfs.ext4",
            "squashfs-root/usr/sbin/e2fsck",
            "squashfs-root/usr/lib64/ld-linux-x86-64.so.2",
            "squashfs-root/usr/lib/x86_64-linux-gnu/libext2fs.so.2",
        ] {
            assert!(listing.contains(path), "{path} missing from the squashfs");
        }
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
