//! `cargo xtask run`: builds the default image into build/run/ and boots it
//! under QEMU with the serial console on this terminal and the API on a Unix
//! socket (build/run/api.sock).
//!
//! Default combination: GRUB on BIOS (SeaBIOS), the fastest to boot under
//! TCG (about 6.5 s to the initramfs against 7.5-8 s through OVMF). Takes
//! the same options as `cargo xtask image` (--out excepted).

use anyhow::{bail, Context, Result};
use bascule_rootfs::qemu::{self, Serial};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub image: crate::image::ImageOptions,
    /// Refused with the reason: run always builds into build/run.
    #[arg(long, hide = true)]
    pub out: Option<PathBuf>,
}

pub fn run(args: &RunArgs) -> Result<()> {
    let root = crate::workspace_root();
    let dir = root.join("build/run");
    if args.out.is_some() {
        bail!("cargo xtask run always builds into {}", dir.display());
    }
    args.image.firmware()?;
    crate::deps::ensure(crate::deps::ALL)?;
    let image = crate::image::build(&root, &args.image, &dir)?;

    let api = dir.join("api.sock");
    let mut config = image.qemu_config();
    config.serial = Serial::Stdio;
    config.api_socket = Some(api.clone());
    if let Some(vars) = &config.ovmf_vars {
        // Each boot from an empty variable store, as a fresh machine.
        qemu::fresh_ovmf_vars(vars)?;
    }
    let _ = std::fs::remove_file(&api);
    println!("API socket: {}", api.display());
    println!(
        "  e.g. cargo run -p bascule-cli -- --socket {} services",
        api.display()
    );
    println!("Serial console below. Ctrl-A X quits QEMU, Ctrl-A C toggles its monitor.");
    println!("{} {}", qemu::QEMU, config.args().join(" "));
    let status = config
        .command()
        .status()
        .with_context(|| format!("cannot start {} (package qemu-system-x86)", qemu::QEMU))?;
    let _ = std::fs::remove_file(&api);
    if !status.success() {
        bail!("{} exited with {status}", qemu::QEMU);
    }
    Ok(())
}
