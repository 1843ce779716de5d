//! `cargo xtask test`: every test of the workspace, QEMU ones included,
//! after installing what they need.
//!
//! Clippy runs first with the workspace lints as errors; then unit and
//! host tests run in parallel; then the tests that boot VMs, two at a
//! time (one per core); last `cargo xtask bench --smoke`, one VM at a
//! time, which fails if any benchmark figure can no longer be produced.

use anyhow::Result;

use crate::{cmd, deps};

/// Packages whose tests boot QEMU.
const VM_PACKAGES: &[&str] = &["bascule-rootfs", "bascule-qemu-tests"];

#[derive(clap::Args)]
pub struct TestArgs {
    /// Passed to both `cargo test` runs (e.g. `--release`, or a test name).
    #[arg(allow_hyphen_values = true)]
    pub cargo_args: Vec<String>,
    /// After `--`: passed to the test binaries (e.g. `--nocapture`).
    #[arg(last = true)]
    pub test_args: Vec<String>,
}

impl TestArgs {
    /// `(for cargo, for the test binaries)`. clap keeps a `--` that
    /// follows other arguments inside `cargo_args` and strips a leading
    /// one into `test_args`; both mean the same split.
    pub fn split(&self) -> (Vec<&str>, Vec<&str>) {
        let mut it = self.cargo_args.iter().map(String::as_str);
        let cargo: Vec<&str> = it.by_ref().take_while(|a| *a != "--").collect();
        let mut harness: Vec<&str> = it.collect();
        harness.extend(self.test_args.iter().map(String::as_str));
        (cargo, harness)
    }
}

pub fn run(args: &TestArgs) -> Result<()> {
    deps::ensure(deps::ALL)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Host tests run other packages' binaries (the CLI next to bascule-init).
    cmd(&cargo, &["build", "--workspace", "--bins"])?;
    let (extra, harness) = args.split();
    // The workspace lints (Cargo.toml) are errors here: no unsafe outside
    // bascule-sys, every unsafe block documented, no unwrap outside tests.
    let lint_result = cmd(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
    );

    let mut host = vec!["test", "--workspace", "--no-fail-fast"];
    for p in VM_PACKAGES {
        host.extend(["--exclude", p]);
    }
    host.extend(&extra);
    if !harness.is_empty() {
        host.push("--");
        host.extend(&harness);
    }
    let host_result = cmd(&cargo, &host);

    let mut vm = vec!["test", "--no-fail-fast"];
    for p in VM_PACKAGES {
        vm.extend(["-p", p]);
    }
    vm.extend(&extra);
    // Two VMs at a time, one per core: each is bounded by its own
    // timeouts, and the suite's wall time is mostly TCG boots.
    vm.extend(["--", "--test-threads=2"]);
    vm.extend(&harness);
    let vm_result = cmd(&cargo, &vm);
    // The bench, once over, so that it never rots: every figure must
    // still be produced (a whole run only when no test was picked).
    let bench_result = if extra.is_empty() && harness.is_empty() {
        println!("xtask: cargo xtask bench --smoke");
        crate::bench::run(&crate::bench::BenchArgs::smoke())
    } else {
        Ok(())
    };
    lint_result
        .and(host_result)
        .and(vm_result)
        .and(bench_result)
}
