//! Developer tasks: `cargo xtask run | test | bench | image`.
//! Every task installs the Debian packages it needs first (see `deps`).

mod bench;
mod deps;
mod image;
mod run;
mod test;

use anyhow::{bail, Result};

fn main() {
    if let Err(e) = real_main() {
        eprintln!("xtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let task = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    match task.as_str() {
        "run" => run::run(&rest),
        "test" => test::run(&rest),
        "bench" => bench::run(&rest),
        "image" => image::run(&rest),
        "deps" => deps::ensure(deps::ALL),
        "bench-child" => bench::child_main(),
        "" | "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <run|test|bench|image|deps> [options]");
            Ok(())
        }
        other => bail!("unknown task {other:?}: expected run, test, bench, image or deps"),
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
