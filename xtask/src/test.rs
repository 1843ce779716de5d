//! `cargo xtask test`: every test of the workspace, QEMU ones included,
//! after installing what they need.
//!
//! Unit and host tests run in parallel; the tests that boot VMs run one at
//! a time afterwards: two TCG guests on two cores slow each other past the
//! point where boot timings mean anything.

use anyhow::Result;

use crate::{cmd, deps};

/// Packages whose tests boot QEMU.
const VM_PACKAGES: &[&str] = &["bascule-rootfs", "bascule-qemu-tests"];

pub fn run(args: &[String]) -> Result<()> {
    deps::ensure(deps::ALL)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Host tests run other packages' binaries (the CLI next to bascule-init).
    cmd(&cargo, &["build", "--workspace", "--bins"])?;
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();

    let mut host = vec!["test", "--workspace", "--no-fail-fast"];
    for p in VM_PACKAGES {
        host.extend(["--exclude", p]);
    }
    host.extend(&extra);
    let host_result = cmd(&cargo, &host);

    let mut vm = vec!["test", "--no-fail-fast"];
    for p in VM_PACKAGES {
        vm.extend(["-p", p]);
    }
    vm.extend(&extra);
    vm.extend(["--", "--test-threads=1"]);
    let vm_result = cmd(&cargo, &vm);
    host_result.and(vm_result)
}
