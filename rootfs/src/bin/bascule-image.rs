#![deny(unsafe_code)]
//! `bascule-image`: keys and signed upgrade bundles for people who build
//! their own images (see docs/bundle.md).
//!
//! ```text
//! bascule-image keygen --out DIR [--force]
//! bascule-image bundle --version V --key KEY [--upgrade-from V ...]
//!     (--rootfs SQUASHFS --kernel VMLINUZ --initramfs CPIO | --overlay DIR) --out FILE
//! bascule-image inspect FILE [--key PUB]
//! ```

use anyhow::{bail, Context, Result};
use bascule_bundle::keys::{self, Fingerprint, Overwrite};
use bascule_bundle::{BundleReader, Trust, VerifyingKey};
use bascule_rootfs::bundle::{self, BundleSpec, KeyPair, OverlaySlot, SlotPayloads};
use clap::{Parser, Subcommand};
use std::fs;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(
    name = "bascule-image",
    version,
    about = "Keys and signed upgrade bundles for Bascule images"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a bundle signing key pair: DIR/bundle.key (mode 0600) and DIR/bundle.pub.
    Keygen {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace an existing key pair.
        #[arg(long)]
        force: bool,
    },
    /// Write a signed upgrade bundle.
    Bundle(BundleArgs),
    /// Show a bundle's manifest and check its signature and every payload;
    /// exits nonzero if anything is wrong.
    Inspect {
        file: PathBuf,
        /// Verify against this public key (without it, the signature is
        /// only checked against the key the bundle names itself).
        #[arg(long, value_name = "PUB")]
        key: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("payloads").required(true).args(["rootfs", "overlay"])))]
struct BundleArgs {
    /// Image version the bundle installs.
    #[arg(long, value_name = "V")]
    version: String,
    /// Private key to sign with (from `bascule-image keygen`).
    #[arg(long, value_name = "KEY")]
    key: PathBuf,
    /// A running version that may install this bundle (repeatable; none: any).
    #[arg(long, value_name = "V")]
    upgrade_from: Vec<String>,
    /// The slot's squashfs root filesystem.
    #[arg(long, value_name = "SQUASHFS", requires_all = ["kernel", "initramfs"])]
    rootfs: Option<PathBuf>,
    /// The kernel (bzImage).
    #[arg(long, value_name = "VMLINUZ", requires = "rootfs")]
    kernel: Option<PathBuf>,
    /// The initramfs (cpio archive).
    #[arg(long, value_name = "CPIO", requires = "rootfs")]
    initramfs: Option<PathBuf>,
    /// Build the slot from this source tree with DIR copied over its root
    /// (regular files and directories).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rootfs", "kernel", "initramfs"])]
    overlay: Option<PathBuf>,
    /// With --overlay: more public keys the new slot trusts (it always
    /// trusts the signing key's).
    #[arg(long, value_name = "PUB", requires = "overlay")]
    trusted_key: Vec<PathBuf>,
    /// With --overlay: the Bascule source tree to build from.
    #[arg(long, value_name = "DIR", requires = "overlay", default_value_os_t = source_tree())]
    workspace: PathBuf,
    /// The bundle to write (replaced atomically).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
}

/// The tree this binary was built from.
fn source_tree() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("bascule-image: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Keygen { out, force } => keygen(&out, force),
        Command::Bundle(a) => write_bundle(&a),
        Command::Inspect { file, key } => inspect(&file, key.as_deref()),
    }
}

fn keygen(dir: &Path, force: bool) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pair = KeyPair::in_dir(dir);
    let overwrite = if force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let key = pair.generate(overwrite)?;
    println!("private key: {} (keep it secret)", pair.private.display());
    println!("public key:  {}", pair.public.display());
    println!("fingerprint: {}", Fingerprint::of(&key.verifying_key()));
    Ok(())
}

fn write_bundle(a: &BundleArgs) -> Result<()> {
    let key = keys::load_signing_key(&a.key)?;
    let payloads = match (&a.rootfs, &a.kernel, &a.initramfs, &a.overlay) {
        (Some(rootfs), Some(kernel), Some(initramfs), None) => SlotPayloads {
            rootfs: rootfs.clone(),
            kernel: kernel.clone(),
            initramfs: initramfs.clone(),
        },
        (None, None, None, Some(overlay)) => {
            let mut trusted = vec![key.verifying_key()];
            for p in &a.trusted_key {
                let k = keys::load_public_key(p)?;
                if !trusted.contains(&k) {
                    trusted.push(k);
                }
            }
            bundle::build_slot_payloads(&OverlaySlot {
                workspace: a.workspace.clone(),
                version: a.version.clone(),
                overlay: Some(overlay.clone()),
                trusted_keys: trusted,
                work: a.workspace.join("build").join("bundle-work"),
            })
            .context("building the slot from the overlay")?
        }
        // clap's argument rules make every other combination unreachable.
        _ => bail!("give --rootfs, --kernel and --initramfs, or --overlay"),
    };
    let spec = BundleSpec {
        version: a.version.clone(),
        upgrade_from: a.upgrade_from.clone(),
        payloads,
    };
    let manifest = bundle::write_bundle(&spec, &key, &a.out)
        .with_context(|| format!("writing the bundle {}", a.out.display()))?;
    if a.overlay.is_some() {
        // The built payloads are in the bundle now.
        let _ = fs::remove_dir_all(a.workspace.join("build").join("bundle-work"));
    }
    println!(
        "bundle {}: version {}, {} bytes, signed by {}",
        a.out.display(),
        manifest.image_version,
        manifest.total_len(),
        Fingerprint::of(&key.verifying_key())
    );
    Ok(())
}

fn inspect(file: &Path, key: Option<&Path>) -> Result<()> {
    let trusted: Vec<VerifyingKey> = key
        .map(keys::load_public_key)
        .transpose()?
        .into_iter()
        .collect();
    let trust = match key {
        Some(_) => Trust::Keys(&trusted),
        None => Trust::EmbeddedKeyForInspection,
    };
    let f = fs::File::open(file).with_context(|| format!("opening {}", file.display()))?;
    let bad = || format!("bundle {}", file.display());
    let mut r = BundleReader::open_with(std::io::BufReader::with_capacity(1 << 20, f), trust)
        .with_context(bad)?;
    let m = r.manifest().clone();
    let signer = Fingerprint::of(r.signer());
    println!("bundle:        {}", file.display());
    println!("format:        {}", m.format_version);
    println!("image version: {}", m.image_version);
    if m.upgrade_from.is_empty() {
        println!("upgrade from:  any version");
    } else {
        println!("upgrade from:  {}", m.upgrade_from.join(", "));
    }
    match key {
        Some(k) => println!("signature:     good, by trusted key {signer} ({})", k.display()),
        None => println!(
            "signature:     intact, by key {signer} (not verified against a trusted key: pass --key PUB)"
        ),
    }
    println!("payloads:");
    while let Some(p) = r.next_payload().with_context(bad)? {
        let info = p.info().clone();
        p.verify().with_context(bad)?;
        println!(
            "  {:<10} offset {:>10}  size {:>10}  sha256 {}  ok",
            info.kind.name(),
            info.offset,
            info.size,
            hex(&info.sha256)
        );
    }
    r.finish().with_context(bad)?;
    println!("verdict:       OK");
    Ok(())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
