#![deny(unsafe_code)]
//! Developer tasks: `cargo xtask run | test | bench | image | bundle | deps`.
//! Every task installs the Debian packages it needs first (see `deps`).

mod bench;
mod bundle;
mod deps;
mod fuzz;
mod image;
mod run;
mod test;

use anyhow::{bail, Result};
use clap::{CommandFactory, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Bascule developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Option<Task>,
}

#[derive(Subcommand)]
enum Task {
    /// Build the default image into build/run/ and boot it under QEMU.
    Run(run::RunArgs),
    /// Every test of the workspace, QEMU ones included.
    Test(test::TestArgs),
    /// The performance budgets, written to docs/benchmarks.md.
    Bench(bench::BenchArgs),
    /// Build a bootable disk image.
    Image(image::ImageCmdArgs),
    /// Build a signed upgrade bundle of this tree's slot.
    Bundle(bundle::BundleArgs),
    /// Install the Debian packages the build and the tests need.
    Deps,
    /// Run the fuzzer on one target (needs nightly and cargo-fuzz).
    Fuzz(fuzz::FuzzArgs),
    /// The bench's own child process (not for people).
    #[command(hide = true)]
    BenchChild,
}

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    match Cli::parse().task {
        Some(Task::Run(a)) => run::run(&a),
        Some(Task::Test(a)) => test::run(&a),
        Some(Task::Bench(a)) => bench::run(&a),
        Some(Task::Image(a)) => image::run(&a),
        Some(Task::Bundle(a)) => bundle::run(&a),
        Some(Task::Deps) => deps::ensure(deps::ALL),
        Some(Task::Fuzz(a)) => fuzz::run(&a),
        Some(Task::BenchChild) => bench::child_main(),
        None => {
            Cli::command().print_help()?;
            Ok(())
        }
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> std::path::PathBuf {
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Runs a command, failing with the command line when it does not succeed.
pub fn cmd(program: &str, args: &[&str]) -> Result<()> {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .map_err(|e| anyhow::anyhow!("cannot run {program}: {e}"))?;
    if !status.success() {
        bail!("{program} {} failed: {status}", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Task, clap::Error> {
        let mut argv = vec!["cargo xtask"];
        argv.extend(args);
        Cli::try_parse_from(argv).map(|c| c.task.expect("a task"))
    }

    #[test]
    fn test_passes_its_arguments_to_cargo_as_given() {
        let cases: [(&[&str], &[&str], &[&str]); 4] = [
            (&["--release"], &["--release"], &[]),
            (&["--", "--nocapture"], &[], &["--nocapture"]),
            (
                &["-p", "bascule-boot", "meta"],
                &["-p", "bascule-boot", "meta"],
                &[],
            ),
            (
                &["--release", "--", "--nocapture", "x"],
                &["--release"],
                &["--nocapture", "x"],
            ),
        ];
        for (argv, cargo, harness) in cases {
            let mut full = vec!["test"];
            full.extend(argv);
            match parse(&full) {
                Ok(Task::Test(t)) => assert_eq!(t.split(), (cargo.to_vec(), harness.to_vec())),
                _ => panic!("{argv:?} not parsed as test arguments"),
            }
        }
    }

    #[test]
    fn image_defaults_and_implied_uefi() {
        let Ok(Task::Image(a)) = parse(&["image"]) else {
            panic!("image")
        };
        assert_eq!(a.image.bootloader, bascule_rootfs::Bootloader::Grub);
        assert_eq!(
            a.image.firmware().ok(),
            Some(bascule_rootfs::Firmware::Bios)
        );
        assert_eq!(a.image.version, "dev");
        assert_eq!(a.image.default_slot, bascule_rootfs::Slot::A);
        assert!(a.out.is_none() && a.image.trusted_key.is_empty() && a.image.key.is_none());
        let Ok(Task::Image(a)) = parse(&[
            "image",
            "--bootloader=sd-boot",
            "--trusted-key",
            "a.pub",
            "--trusted-key",
            "b.pub",
        ]) else {
            panic!("sd-boot")
        };
        assert_eq!(
            a.image.firmware().ok(),
            Some(bascule_rootfs::Firmware::Uefi)
        );
        assert_eq!(a.image.trusted_key.len(), 2);
        let Ok(Task::Image(a)) = parse(&["image", "--bootloader", "sd-boot", "--firmware", "bios"])
        else {
            panic!("parsed")
        };
        assert!(
            a.image.firmware().is_err(),
            "an explicit contradiction is refused"
        );
    }

    #[test]
    fn bad_values_are_refused_by_name() {
        assert!(parse(&["bench", "--boots", "0"]).is_err());
        assert!(parse(&["image", "--version", "1 2"]).is_err());
        assert!(parse(&["image", "--default-slot", "C"]).is_err());
        assert!(
            parse(&["bundle", "--version", "2.0.0"]).is_err(),
            "--out is required"
        );
        assert!(matches!(
            parse(&["bundle", "--version", "2.0.0", "--out", "b.bundle"]),
            Ok(Task::Bundle(_))
        ));
    }
}
