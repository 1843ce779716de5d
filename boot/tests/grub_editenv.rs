//! Compatibility of grubenv with the real `grub-editenv`, both directions.
//! Skipped (with a printed reason) when grub-editenv is not installed.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::Path;
use std::process::Command;

use bascule_boot::grubenv::{read_env_file, write_env_file, GrubEnv, WriteOutcome, BLOCK_SIZE};

const TOOL: &str = "/usr/bin/grub-editenv";

fn tool_available() -> bool {
    if Path::new(TOOL).exists() {
        true
    } else {
        eprintln!("SKIPPED: {TOOL} not installed (Debian package grub-common)");
        false
    }
}

fn editenv(file: &Path, args: &[&str]) -> String {
    let out = Command::new(TOOL)
        .arg(file)
        .args(args)
        .output()
        .expect("run grub-editenv");
    assert!(
        out.status.success(),
        "grub-editenv {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 listing")
}

/// The variables with tricky values used in both directions.
fn tricky() -> Vec<(&'static str, &'static str)> {
    vec![
        ("a", "b"),
        ("c", "x\\y"),
        ("spaces", "has  some spaces "),
        ("eq", "k=v=w"),
        ("nl", "line1\nline2\n"),
        ("hash", "#not a comment\n#still not"),
        ("bs_end", "ends with backslash\\"),
        ("bs_nl", "\\\n\\\\n"),
        ("empty", ""),
        ("saved_entry", "A"),
    ]
}

fn listing(vars: &[(&str, &str)]) -> String {
    vars.iter().map(|(n, v)| format!("{n}={v}\n")).collect()
}

#[test]
fn bascule_file_listed_by_grub_editenv() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("grubenv");
    let mut env = GrubEnv::new();
    for (n, v) in tricky() {
        env.set(n, v).unwrap();
    }
    assert_eq!(write_env_file(&p, &env).unwrap(), WriteOutcome::Created);
    assert_eq!(editenv(&p, &["list"]), listing(&tricky()));
}

#[test]
fn grub_editenv_file_read_by_bascule() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("grubenv");
    editenv(&p, &["create"]);
    // The example from the issue, as a shell would pass it.
    editenv(&p, &["set", "a=b", "c=x\\y"]);
    let args: Vec<String> = tricky()
        .iter()
        .skip(2)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    let mut set = vec!["set"];
    set.extend(args.iter().map(String::as_str));
    editenv(&p, &set);
    assert_eq!(std::fs::metadata(&p).unwrap().len(), BLOCK_SIZE as u64);
    let env = read_env_file(&p).unwrap();
    let got: Vec<(&str, &str)> = env.iter().collect();
    assert_eq!(got, tricky());
    assert_eq!(env.get("c"), Some("x\\y"));
}

#[test]
fn grub_editenv_edits_of_a_bascule_file_are_byte_identical_to_bascule_output() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("grubenv");
    write_env_file(&p, &GrubEnv::new()).unwrap();
    // grub-editenv edits the block in place (grub_envblk_set), appending at
    // the start of the padding: the result must be what Bascule would write.
    let args: Vec<String> = tricky().iter().map(|(n, v)| format!("{n}={v}")).collect();
    let mut set = vec!["set"];
    set.extend(args.iter().map(String::as_str));
    editenv(&p, &set);
    let mut expected = GrubEnv::new();
    for (n, v) in tricky() {
        expected.set(n, v).unwrap();
    }
    assert_eq!(std::fs::read(&p).unwrap(), expected.to_block().unwrap());

    // Replacing a value and unsetting a variable, both ways.
    editenv(&p, &["set", "c=shorter"]);
    editenv(&p, &["unset", "nl"]);
    expected.set("c", "shorter").unwrap();
    expected.unset("nl");
    assert_eq!(read_env_file(&p).unwrap(), expected);
    assert_eq!(std::fs::read(&p).unwrap(), expected.to_block().unwrap());

    // And Bascule's in-place rewrite of a grub-editenv-edited file.
    expected.set("next_entry", "B").unwrap();
    assert!(matches!(
        write_env_file(&p, &expected).unwrap(),
        WriteOutcome::Rewritten { .. }
    ));
    assert_eq!(editenv(&p, &["list"]), {
        let v: Vec<(&str, &str)> = expected.iter().collect();
        listing(&v)
    });
}

#[test]
fn full_block_agrees_with_grub_editenv() {
    if !tool_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("grubenv");
    // Exactly 1024 bytes, no padding left.
    let room = BLOCK_SIZE - "# GRUB Environment Block\n".len() - "v=\n".len();
    let value = "x".repeat(room);
    let mut env = GrubEnv::new();
    env.set("v", &value).unwrap();
    write_env_file(&p, &env).unwrap();
    assert_eq!(editenv(&p, &["list"]), format!("v={value}\n"));
    // grub-editenv cannot add to it either.
    let out = Command::new(TOOL)
        .arg(&p)
        .args(["set", "w=1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    // And Bascule refuses one more byte.
    env.set("v", &format!("{value}x")).unwrap();
    assert!(write_env_file(&p, &env).is_err());
    assert_eq!(read_env_file(&p).unwrap().get("v"), Some(value.as_str()));
}
