//! The generated grub.cfg is valid GRUB script, per the real
//! `grub-script-check` (GRUB's own parser). Skipped, with a printed reason,
//! when the tool is not installed. What the script does at boot is proven
//! by the QEMU tests.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use bascule_boot::grubcfg::{generate, GrubCfgInputs};
use bascule_boot::Slot;

const TOOL: &str = "/usr/bin/grub-script-check";

fn check(text: &str) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("grub.cfg");
    std::fs::write(&p, text).unwrap();
    let out = Command::new(TOOL)
        .arg(&p)
        .output()
        .expect("run grub-script-check");
    assert!(
        out.status.success(),
        "grub-script-check rejected:\n{text}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generated_grub_cfg_parses() {
    if !Path::new(TOOL).exists() {
        eprintln!("SKIPPED: {TOOL} not installed (Debian package grub-common)");
        return;
    }
    for default in Slot::ALL {
        let mut i = GrubCfgInputs::new(default);
        check(&generate(&i).unwrap());
        i.serial = None;
        i.version_a = Some("1.2.3-rc1+git~x:y".into());
        i.version_b = Some("2.0".into());
        i.cmdline = "console=ttyS0,115200 quiet panic=5 foo=\u{e9}".into();
        i.timeout_secs = 3;
        check(&generate(&i).unwrap());
    }
    // The checker does catch errors (so the test is not vacuous).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.cfg");
    std::fs::write(&p, "if [ x ]; then\n").unwrap();
    let out = Command::new(TOOL).arg(&p).output().unwrap();
    assert!(!out.status.success());
}
