//! A slot as a signed upgrade bundle: the payloads (given as files, or
//! built from this tree with an overlay over the slot root), the signed
//! file written in place atomically, and the development key pair that
//! images and bundles built from one tree share.
//!
//! The format itself is `bascule-bundle`'s; see docs/bundle.md.

use crate::error::{Error, IoContext, Result};
use crate::image::{self, ImageSpec, InitramfsInit, SlotBuild};
use crate::kernel;
use crate::modules::{self, ModuleDb};
use crate::squashfs::RootFile;
use crate::{Bootloader, Firmware, Slot};
use bascule_bundle::keys::{self, Overwrite};
use bascule_bundle::{BundleWriter, Manifest, PayloadKind, SigningKey, VerifyingKey};
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The private and public halves of a key pair as files.
#[derive(Clone, Debug)]
pub struct KeyPair {
    pub private: PathBuf,
    pub public: PathBuf,
}

pub const PRIVATE_KEY_FILE: &str = "bundle.key";
pub const PUBLIC_KEY_FILE: &str = "bundle.pub";

impl KeyPair {
    /// `DIR/bundle.key` and `DIR/bundle.pub`.
    pub fn in_dir(dir: &Path) -> KeyPair {
        KeyPair {
            private: dir.join(PRIVATE_KEY_FILE),
            public: dir.join(PUBLIC_KEY_FILE),
        }
    }

    /// Generates a new pair into the two files, refusing to replace either
    /// unless told to.
    pub fn generate(&self, overwrite: Overwrite) -> Result<SigningKey> {
        if overwrite == Overwrite::Refuse {
            for p in [&self.private, &self.public] {
                if p.symlink_metadata().is_ok() {
                    return Err(keys::KeyError::Exists { path: p.clone() }.into());
                }
            }
        }
        let key = keys::generate()?;
        keys::save_signing_key(&self.private, &key, overwrite)?;
        keys::save_public_key(&self.public, &key.verifying_key(), overwrite)?;
        Ok(key)
    }

    pub fn load_private(&self) -> Result<SigningKey> {
        Ok(keys::load_signing_key(&self.private)?)
    }

    pub fn load_public(&self) -> Result<VerifyingKey> {
        Ok(keys::load_public_key(&self.public)?)
    }
}

/// The development key pair of a workspace, `build/keys/bundle.{key,pub}`,
/// generated the first time. Generated in a private directory and renamed
/// into place, so concurrent builds (xtask and the QEMU tests) end up with
/// one pair, never half of two.
pub fn dev_keys(workspace: &Path) -> Result<KeyPair> {
    let dir = workspace.join("build").join("keys");
    let pair = KeyPair::in_dir(&dir);
    if pair.private.exists() && pair.public.exists() {
        return Ok(pair);
    }
    let build = workspace.join("build");
    fs::create_dir_all(&build).io("creating", &build)?;
    let tmp = build.join(format!("keys.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).io("removing", &tmp)?;
    }
    fs::create_dir(&tmp).io("creating", &tmp)?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).io("setting the mode of", &tmp)?;
    KeyPair::in_dir(&tmp).generate(Overwrite::Refuse)?;
    // Fails if another process got there first (or the directory holds
    // something else): theirs wins, unless it is incomplete.
    if fs::rename(&tmp, &dir).is_err() {
        fs::remove_dir_all(&tmp).io("removing", &tmp)?;
        if !(pair.private.exists() && pair.public.exists()) {
            return Err(Error::Invalid(format!(
                "{} exists without both {PRIVATE_KEY_FILE} and {PUBLIC_KEY_FILE}: \
                 remove it to get a new development key pair",
                dir.display()
            )));
        }
    } else {
        eprintln!(
            "bascule-rootfs: generated the development bundle key pair in {}",
            dir.display()
        );
    }
    Ok(pair)
}

/// What goes into a bundle.
#[derive(Clone, Debug)]
pub struct BundleSpec {
    pub version: String,
    /// Running versions that may install it; empty: any.
    pub upgrade_from: Vec<String>,
    pub payloads: SlotPayloads,
}

/// A slot's three payload files.
#[derive(Clone, Debug)]
pub struct SlotPayloads {
    pub rootfs: PathBuf,
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Writes the signed bundle to `out` (through `out.partial`, renamed when
/// complete, so a failed write never leaves a plausible bundle behind).
pub fn write_bundle(spec: &BundleSpec, key: &SigningKey, out: &Path) -> Result<Manifest> {
    let mut w = BundleWriter::new(&spec.version)?;
    for v in &spec.upgrade_from {
        w.upgrade_from(v)?;
    }
    let p = &spec.payloads;
    w.payload(PayloadKind::Rootfs, &p.rootfs)?
        .payload(PayloadKind::Kernel, &p.kernel)?
        .payload(PayloadKind::Initramfs, &p.initramfs)?;
    let mut partial = out.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let file = fs::File::create(&partial).io("creating", &partial)?;
    let mut buf = BufWriter::with_capacity(1 << 20, file);
    let written = w.write(&mut buf, key).and_then(|m| {
        buf.flush().map_err(bascule_bundle::BundleError::Write)?;
        Ok(m)
    });
    let manifest = match written {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_file(&partial);
            return Err(e.into());
        }
    };
    fs::rename(&partial, out).io("renaming the finished bundle to", out)?;
    Ok(manifest)
}

/// A slot built from this tree for a bundle.
#[derive(Clone, Debug)]
pub struct OverlaySlot {
    pub workspace: PathBuf,
    pub version: String,
    /// Copied over the slot root last (regular files and directories).
    pub overlay: Option<PathBuf>,
    /// Keys the new slot trusts for its own next upgrade.
    pub trusted_keys: Vec<VerifyingKey>,
    /// Receives the payloads (emptied first).
    pub work: PathBuf,
}

/// Builds the static binaries, the kernel, an initramfs and a squashfs
/// exactly as `build_image` builds a slot, with the overlay on top.
pub fn build_slot_payloads(o: &OverlaySlot) -> Result<SlotPayloads> {
    let bins = crate::cargo::build_static_binaries(&o.workspace)?;
    let cache = image::default_cache_dir(&o.workspace);
    let build = SlotBuild {
        version: o.version.clone(),
        init: bins.init,
        cli: bins.cli,
        initramfs_init: InitramfsInit::SameAsRoot,
    };
    // The loader choice does not matter for a slot's contents.
    let mut spec = ImageSpec::new(
        Bootloader::Grub,
        Firmware::Bios,
        build.clone(),
        &o.work,
        &cache,
    );
    spec.trusted_keys = o.trusted_keys.clone();
    if let Some(dir) = &o.overlay {
        spec.extra_root_files = overlay_files(dir)?;
    }
    if o.work.exists() {
        fs::remove_dir_all(&o.work).io("emptying", &o.work)?;
    }
    fs::create_dir_all(&o.work).io("creating", &o.work)?;
    let kernel = kernel::fetch(&cache)?;
    let mods = ModuleDb::load(&kernel.modules_dir)?.resolve(modules::WANTED, modules::SOFTDEPS)?;
    let (initramfs, rootfs) = image::build_slot(&spec, Slot::A, &build, &kernel, &mods, &o.work)?;
    Ok(SlotPayloads {
        rootfs,
        kernel: kernel.vmlinuz,
        initramfs,
    })
}

/// Every regular file under `dir` as a root file at the same path, mode
/// kept. Symlinks and special files are refused by name: a RootFile can
/// only be a regular file.
pub fn overlay_files(dir: &Path) -> Result<Vec<RootFile>> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<RootFile>) -> Result<()> {
    for entry in fs::read_dir(dir).io("reading the overlay directory", dir)? {
        let entry = entry.io("reading the overlay directory", dir)?;
        let path = entry.path();
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(Error::Invalid(format!(
                "overlay file {} has a name that is not UTF-8: rename it",
                path.display()
            )));
        };
        let slot_path = format!("{prefix}/{name}");
        let meta = path.symlink_metadata().io("reading", &path)?;
        if meta.is_dir() {
            walk(&path, &slot_path, out)?;
        } else if meta.is_file() {
            out.push(RootFile {
                contents: fs::read(&path).io("reading the overlay file", &path)?,
                path: slot_path,
                mode: meta.permissions().mode() & 0o7777,
            });
        } else {
            return Err(Error::Invalid(format!(
                "overlay entry {} is not a regular file or directory (symlinks are not supported): \
                 replace it with a copy",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_keys_are_made_once_and_kept() {
        let ws = tempfile::tempdir().expect("tempdir");
        let first = dev_keys(ws.path()).expect("generate");
        let key = first.load_private().expect("load");
        assert_eq!(first.load_public().expect("pub"), key.verifying_key());
        let mode = fs::metadata(&first.private)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = dev_keys(ws.path()).expect("reuse");
        assert_eq!(
            again.load_private().expect("load").as_bytes(),
            key.as_bytes()
        );
        let leftovers: Vec<_> = fs::read_dir(ws.path().join("build"))
            .expect("build dir")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("keys.tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn overlay_files_keep_paths_and_modes_and_refuse_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let etc = dir.path().join("etc/bascule");
        fs::create_dir_all(&etc).expect("mkdir");
        fs::write(etc.join("motd"), "hi").expect("write");
        fs::write(dir.path().join("run.sh"), "#!/bin/sh").expect("write");
        fs::set_permissions(dir.path().join("run.sh"), fs::Permissions::from_mode(0o750))
            .expect("chmod");
        let files = overlay_files(dir.path()).expect("overlay");
        let got: Vec<(&str, u32)> = files.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(got, vec![("/etc/bascule/motd", 0o644), ("/run.sh", 0o750)]);
        std::os::unix::fs::symlink("motd", etc.join("link")).expect("symlink");
        let e = overlay_files(dir.path()).expect_err("symlink");
        assert!(e.to_string().contains("etc/bascule/link"), "{e}");
    }

    #[test]
    fn write_bundle_is_atomic_and_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, data: &[u8]| {
            let p = dir.path().join(name);
            fs::write(&p, data).expect("payload");
            p
        };
        let spec = BundleSpec {
            version: "2.0.0".into(),
            upgrade_from: vec!["1.0.0".into()],
            payloads: SlotPayloads {
                rootfs: file("root.squashfs", &[1; 5000]),
                kernel: file("vmlinuz", &[2; 300]),
                initramfs: file("initrd.img", &[3; 70]),
            },
        };
        let key = SigningKey::from_bytes(&[6; 32]);
        let out = dir.path().join("b.bundle");
        write_bundle(&spec, &key, &out).expect("write");
        assert!(!dir.path().join("b.bundle.partial").exists());
        let f = fs::File::open(&out).expect("open");
        let r = bascule_bundle::BundleReader::open(f, &[key.verifying_key()]).expect("verify");
        assert_eq!(r.manifest().upgrade_from, vec!["1.0.0"]);

        let mut missing = spec.clone();
        missing.payloads.kernel = dir.path().join("nope");
        let e = write_bundle(&missing, &key, &dir.path().join("c.bundle")).expect_err("missing");
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(!dir.path().join("c.bundle").exists());
        assert!(!dir.path().join("c.bundle.partial").exists());
    }
}
