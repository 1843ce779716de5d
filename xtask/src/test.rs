//! `cargo xtask test`: every test of the workspace, QEMU ones included,
//! after installing what they need.

use anyhow::Result;

use crate::{cmd, deps};

pub fn run(args: &[String]) -> Result<()> {
    deps::ensure(deps::ALL)?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    // Host tests run other packages' binaries (the CLI next to bascule-init).
    cmd(&cargo, &["build", "--workspace", "--bins"])?;
    let mut test_args = vec!["test", "--workspace", "--no-fail-fast"];
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    test_args.extend(extra);
    cmd(&cargo, &test_args)
}
