use anyhow::{bail, Result};

pub fn run(_args: &[String]) -> Result<()> {
    bail!("cargo xtask image is not implemented yet")
}
