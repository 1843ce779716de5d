//! `cargo xtask bundle`: a signed upgrade bundle of this tree's slot.
//!
//! ```text
//! cargo xtask bundle --version V --out FILE [--key KEY] [--overlay DIR]
//!                    [--upgrade-from V ...] [--trusted-key PUB ...]
//! ```
//! Builds the slot exactly as `cargo xtask image` does (static binaries,
//! Debian kernel, initramfs, squashfs), with DIR copied over the slot root,
//! and signs it with KEY, by default the development key
//! build/keys/bundle.key that `cargo xtask image` trusts by default. The
//! new slot trusts the signing key (and any `--trusted-key`), so it can be
//! upgraded again the same way.

use anyhow::{Context, Result};
use bascule_bundle::keys::{self, Fingerprint};
use bascule_rootfs::bundle::{self, BundleSpec, OverlaySlot};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct BundleArgs {
    /// Image version the bundle installs.
    #[arg(long, value_name = "V", value_parser = crate::image::checked_version)]
    version: String,
    /// The bundle to write.
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Private key to sign with; default the development key.
    #[arg(long, value_name = "KEY")]
    key: Option<PathBuf>,
    /// Copied over the slot root (regular files and directories).
    #[arg(long, value_name = "DIR")]
    overlay: Option<PathBuf>,
    /// A running version that may install the bundle (repeatable; none: any).
    #[arg(long, value_name = "V", value_parser = crate::image::checked_version)]
    upgrade_from: Vec<String>,
    /// More public keys the new slot trusts.
    #[arg(long, value_name = "PUB")]
    trusted_key: Vec<PathBuf>,
}

pub fn run(a: &BundleArgs) -> Result<()> {
    let root = crate::workspace_root();
    let key_path = match &a.key {
        Some(k) => k.clone(),
        None => bundle::dev_keys(&root)?.private,
    };
    let key = keys::load_signing_key(&key_path)?;
    let mut trusted = vec![key.verifying_key()];
    for p in &a.trusted_key {
        let k = keys::load_public_key(p)?;
        if !trusted.contains(&k) {
            trusted.push(k);
        }
    }
    crate::deps::ensure(crate::deps::ALL)?;
    let payloads = bundle::build_slot_payloads(&OverlaySlot {
        workspace: root.clone(),
        version: a.version.clone(),
        overlay: a.overlay.clone(),
        trusted_keys: trusted,
        work: root.join("build/bundle-work"),
    })
    .context("building the slot")?;
    let spec = BundleSpec {
        version: a.version.clone(),
        upgrade_from: a.upgrade_from.clone(),
        payloads,
    };
    let manifest = bundle::write_bundle(&spec, &key, &a.out)
        .with_context(|| format!("writing {}", a.out.display()))?;
    // The payloads are in the bundle now.
    let _ = std::fs::remove_dir_all(root.join("build/bundle-work"));
    println!(
        "bundle: {} (version {}, {} bytes, signed by {} from {})",
        a.out.display(),
        manifest.image_version,
        manifest.total_len(),
        Fingerprint::of(&key.verifying_key()),
        key_path.display()
    );
    Ok(())
}
