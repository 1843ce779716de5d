//! Building the binaries that go into an image: `bascule-init` and `bascule`
//! as static executables (the initramfs and the slot have no libc to link
//! against).
//!
//! They are built for an explicit `--target` triple: cargo then keeps them
//! under `target/<triple>/release`, and the `RUSTFLAGS` for static linking
//! apply to them only, so host builds (tests, xtask) are not invalidated.
//! musl is used when its target is installed (smaller and simpler static
//! binaries); otherwise glibc with `+crt-static`.

use crate::cmd::Cmd;
use crate::error::{Error, IoContext, Result};
use std::fs;
use std::path::{Path, PathBuf};

pub const GNU_TARGET: &str = "x86_64-unknown-linux-gnu";
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Cargo packages and the binaries they produce.
pub const INIT_PACKAGE: &str = "bascule-init";
pub const INIT_BINARY: &str = "bascule-init";
pub const CLI_PACKAGE: &str = "bascule-cli";
pub const CLI_BINARY: &str = "bascule";

#[derive(Clone, Debug)]
pub struct StaticBinaries {
    pub init: PathBuf,
    pub cli: PathBuf,
    pub target: &'static str,
}

/// The target triple to build for: musl if rustup has it installed.
pub fn static_target() -> &'static str {
    let installed = Cmd::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out)
                .lines()
                .any(|l| l.trim() == MUSL_TARGET) =>
        {
            MUSL_TARGET
        }
        _ => GNU_TARGET,
    }
}

/// Where cargo puts build output for this workspace.
pub fn target_dir(workspace: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"))
}

/// `cargo build --release` of the init and the CLI as static binaries;
/// cargo's progress goes to the terminal.
pub fn build_static_binaries(workspace: &Path) -> Result<StaticBinaries> {
    let target = static_target();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    if target == GNU_TARGET {
        rustflags.push_str(" -C target-feature=+crt-static");
    }
    Cmd::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            target,
            "-p",
            INIT_PACKAGE,
            "-p",
            CLI_PACKAGE,
        ])
        .current_dir(workspace)
        .env("RUSTFLAGS", rustflags.trim())
        // Would take precedence over RUSTFLAGS when inherited.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .hint("fix the compile errors above, then rebuild the image")
        .run_visible()?;
    let dir = target_dir(workspace).join(target).join("release");
    let bins = StaticBinaries {
        init: dir.join(INIT_BINARY),
        cli: dir.join(CLI_BINARY),
        target,
    };
    check_static(&bins.init)?;
    check_static(&bins.cli)?;
    Ok(bins)
}

/// Fails when `path` is not a static x86-64 ELF executable: a dynamic init
/// panics the kernel with a bare "No such file or directory".
pub fn check_static(path: &Path) -> Result<()> {
    let elf = fs::read(path).io("reading", path)?;
    let bad = |why: &str| Error::Invalid(format!("{} {why}", path.display()));
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 {
        return Err(bad("is not a 64-bit ELF file"));
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&elf[0x20..0x28]);
    let phoff = u64::from_le_bytes(phoff) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        let o = phoff + i * phentsize;
        let Some(p) = elf.get(o..o + 4) else {
            return Err(bad("has a truncated program header table"));
        };
        if u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == PT_INTERP {
            return Err(bad(
                "is dynamically linked (has PT_INTERP): build it with +crt-static or for musl",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check() {
        check_static(Path::new("/bin/busybox")).expect("busybox-static is static");
        let err = check_static(Path::new("/bin/sh")).expect_err("dash is dynamic");
        assert!(err.to_string().contains("dynamically linked"), "{err}");
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("x");
        fs::write(&f, b"#!/bin/sh\n").expect("write");
        assert!(check_static(&f).is_err());
    }
}
