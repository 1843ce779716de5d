//! The `bascule-image` binary as a user runs it: keygen, bundle, inspect,
//! and inspect refusing damaged bundles with the reason.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bascule-image"))
        .args(args)
        .output()
        .expect("run bascule-image")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

#[test]
fn keygen_writes_a_private_key_only_we_can_read_and_never_overwrites_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let o = run(&["keygen", "--out", s(&keys)]);
    assert!(o.status.success(), "{}", text(&o));
    let private = keys.join("bundle.key");
    let mode = fs::metadata(&private).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = fs::read_to_string(keys.join("bundle.pub")).expect("pub");
    assert!(public.starts_with("bascule-ed25519 "), "{public}");
    let first = fs::read(&private).expect("key");

    let again = run(&["keygen", "--out", s(&keys)]);
    assert!(!again.status.success());
    assert!(
        text(&again).contains("already exists") && text(&again).contains("--force"),
        "{}",
        text(&again)
    );
    assert_eq!(
        fs::read(&private).expect("key"),
        first,
        "the refused run left the key alone"
    );

    let forced = run(&["keygen", "--out", s(&keys), "--force"]);
    assert!(forced.status.success(), "{}", text(&forced));
    assert_ne!(fs::read(&private).expect("key"), first);
    let mode = fs::metadata(&private).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A key pair, three payload files and a bundle of them.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = Fixture { dir };
        let o = run(&["keygen", "--out", s(&f.p("keys"))]);
        assert!(o.status.success(), "{}", text(&o));
        fs::write(f.p("root.squashfs"), vec![0x5a; 20_000]).expect("rootfs");
        fs::write(f.p("vmlinuz"), vec![0x6b; 9000]).expect("kernel");
        fs::write(f.p("initrd.img"), vec![0x7c; 3000]).expect("initramfs");
        let o = run(&[
            "bundle",
            "--version",
            "2.0.0",
            "--key",
            s(&f.p("keys/bundle.key")),
            "--upgrade-from",
            "1.0.0",
            "--rootfs",
            s(&f.p("root.squashfs")),
            "--kernel",
            s(&f.p("vmlinuz")),
            "--initramfs",
            s(&f.p("initrd.img")),
            "--out",
            s(&f.p("b.bundle")),
        ]);
        assert!(o.status.success(), "{}", text(&o));
        f
    }

    fn p(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

#[test]
fn bundle_then_inspect_round_trip() {
    let f = Fixture::new();
    let o = run(&[
        "inspect",
        s(&f.p("b.bundle")),
        "--key",
        s(&f.p("keys/bundle.pub")),
    ]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "image version: 2.0.0",
        "upgrade from:  1.0.0",
        "good, by trusted key",
        "verdict:       OK",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    for kind in ["rootfs", "kernel", "initramfs"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(kind) && l.ends_with("ok")),
            "{kind}:\n{out}"
        );
    }
    // Without --key: shown and checked, but said to be unverified.
    let o = run(&["inspect", s(&f.p("b.bundle"))]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("not verified against a trusted key"),
        "{}",
        text(&o)
    );
}

#[test]
fn inspect_names_what_is_wrong() {
    let f = Fixture::new();
    let good = fs::read(f.p("b.bundle")).expect("bundle");
    let inspect = |bytes: &[u8], key: &str| {
        let p = f.p("bad.bundle");
        fs::write(&p, bytes).expect("write");
        run(&["inspect", s(&p), "--key", key])
    };
    let pubkey = f.p("keys/bundle.pub");
    let pubkey = s(&pubkey);

    // A byte of the kernel (the payload of 0x6b bytes): the start of the
    // first long run, since a lone 0x6b can be in the signature.
    let at = good
        .windows(256)
        .position(|w| w.iter().all(|&b| b == 0x6b))
        .expect("kernel bytes");
    let mut bad = good.clone();
    bad[at + 100] ^= 0xff;
    let o = inspect(&bad, pubkey);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("kernel payload is corrupt"),
        "{}",
        text(&o)
    );

    let o = inspect(&good[..good.len() - 10], pubkey);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("initramfs payload is truncated"),
        "{}",
        text(&o)
    );

    let o = inspect(
        b"GIF89a, not a bundle at all, padded to the header len",
        pubkey,
    );
    assert!(!o.status.success());
    assert!(text(&o).contains("not a Bascule bundle"), "{}", text(&o));

    let other = f.p("other");
    assert!(run(&["keygen", "--out", s(&other)]).status.success());
    let o = inspect(&good, s(&other.join("bundle.pub")));
    assert!(!o.status.success());
    assert!(text(&o).contains("not trusted"), "{}", text(&o));
}

#[test]
fn bundle_needs_all_three_payloads_or_an_overlay() {
    let f = Fixture::new();
    let key = f.p("keys/bundle.key");
    let rootfs = f.p("root.squashfs");
    let out = f.p("x.bundle");
    let o = run(&[
        "bundle",
        "--version",
        "2",
        "--key",
        s(&key),
        "--rootfs",
        s(&rootfs),
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--kernel"), "{}", text(&o));
    let o = run(&[
        "bundle",
        "--version",
        "2",
        "--key",
        s(&key),
        "--out",
        s(&out),
    ]);
    assert!(!o.status.success());
    assert!(!out.exists());
}
