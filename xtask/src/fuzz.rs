//! `cargo xtask fuzz TARGET --time SECS`: the real fuzzer (libFuzzer
//! through cargo-fuzz) on one of `fuzz/fuzz_targets/`, where a nightly
//! toolchain and cargo-fuzz exist. The same bodies run as short property
//! tests in `cargo xtask test` on stable.

use anyhow::{bail, Result};

use crate::workspace_root;

/// The targets in `fuzz/fuzz_targets/`.
pub const TARGETS: &[&str] = &[
    "frame_decoder",
    "control_requests",
    "service_file",
    "grubenv",
    "bls_entry",
    "meta_copy",
    "gpt",
    "bundle",
];

#[derive(clap::Args)]
pub struct FuzzArgs {
    /// One of: frame_decoder, control_requests, service_file, grubenv, bls_entry, meta_copy, gpt, bundle.
    pub target: String,
    /// How long to fuzz, in seconds.
    #[arg(long, default_value_t = 60)]
    pub time: u64,
}

pub fn run(args: &FuzzArgs) -> Result<()> {
    if !TARGETS.contains(&args.target.as_str()) {
        bail!(
            "unknown fuzz target {:?}: choose one of {}",
            args.target,
            TARGETS.join(", ")
        );
    }
    let works = |args: &[&str]| {
        std::process::Command::new("cargo")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !works(&["+nightly", "--version"]) {
        bail!("cargo xtask fuzz needs a nightly toolchain (rustup toolchain install nightly); the property tests in `cargo xtask test` run the same bodies on stable");
    }
    if !works(&["+nightly", "fuzz", "--version"]) {
        bail!("cargo xtask fuzz needs cargo-fuzz (cargo install cargo-fuzz)");
    }
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(&args.target);
    std::fs::create_dir_all(&corpus)?;
    let status = std::process::Command::new("cargo")
        .current_dir(root.join("fuzz"))
        .args(["+nightly", "fuzz", "run", "--fuzz-dir", ".", &args.target])
        .arg(&corpus)
        .arg("--")
        .arg(format!("-max_total_time={}", args.time))
        .status()?;
    if !status.success() {
        bail!(
            "fuzz target {} found a failure: the input is under fuzz/artifacts/{}; add it to fuzz/corpus/{} and a regression case to the property test",
            args.target,
            args.target,
            args.target
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_has_its_file_and_an_unknown_one_is_named() {
        let root = workspace_root();
        for t in TARGETS {
            assert!(
                root.join(format!("fuzz/fuzz_targets/{t}.rs")).exists(),
                "{t}"
            );
        }
        let e = run(&FuzzArgs {
            target: "nope".into(),
            time: 1,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown fuzz target \"nope\""), "{e}");
    }
}
