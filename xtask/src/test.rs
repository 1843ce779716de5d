use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("cargo xtask test is not implemented yet")
}
