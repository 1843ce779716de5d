//! Upgrades end to end, driven by the real `bascule` CLI against a booted
//! image: A → B with kexec and `--wait`, a cold reboot that must land on
//! the new slot, B → A with a firmware reboot, on each boot chain; damaged
//! and unreachable bundles refused with nothing changed; an upgrade over
//! HTTP; `rollback --wait`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_qemu_tests::upgrade::{self as up, HttpServer};
use bascule_qemu_tests::{Combo, Machine};
use serde_json::Value;
use std::path::Path;

/// Generous bound for `--wait`: the install writes the slot through TCG.
const WAIT: &str = "600";

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json(m: &Machine, args: &[&str]) -> Value {
    let out = m.cli(args);
    assert!(out.status.success(), "bascule {args:?}: {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("bascule {args:?}: {e}"))
}

/// `bascule --json upgrade ...`: the exit code and the last JSON line.
fn upgrade(m: &Machine, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json", "upgrade"];
    all.extend_from_slice(args);
    let out = m.cli(&all);
    // Progress lines, then the result: the last JSON value printed.
    let r: Value = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .last()
        .unwrap_or_else(|| panic!("no JSON from rollback --wait: {}", text(&out)));
    assert_eq!(r["booted_slot"], "A", "{r}");
    assert_eq!(r["image_version"], "1.0.0", "{r}");
    m.wait_ready();
    assert_eq!(running(&m), ("1.0.0".into(), "A"));
    let st = json(&m, &["--json", "boot", "status"]);
    assert_eq!(st["default"], "A", "{st}");
}
