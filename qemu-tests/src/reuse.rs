//! Reusing what an earlier test process of the same run built. Each test
//! binary is its own process, so without this every one of them would
//! build the same images and bundles again. A build is keyed by a digest of
//! everything it is made from (the static binaries, the sources of the
//! image builder, the boot formats and the bundle format, the development
//! key, and what the caller adds), kept in a stamp file beside it.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

use crate::workspace_root;

/// The digest of a build's inputs; `extra` tells builds apart (the combo,
/// the version, the variant).
pub fn inputs_digest(binaries: &[&Path], extra: &str) -> String {
    let root = workspace_root();
    let mut h = Sha256::new();
    h.update(extra.as_bytes());
    for b in binaries {
        h.update(std::fs::read(b).unwrap_or_default());
    }
    let mut files = Vec::new();
    for dir in [
        "rootfs/src",
        "rootfs/files",
        "boot/src",
        "bundle/src",
        "bundle/proto",
    ] {
        walk(&root.join(dir), &mut files);
    }
    files.push(root.join("build/keys/bundle.pub"));
    files.sort();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).unwrap_or_default());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The lines recorded with `digest` in `stamp`, if that is what it holds
/// and every path among them still exists.
pub fn recorded(stamp: &Path, digest: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(stamp).ok()?;
    let mut lines = text.lines().map(str::to_owned);
    if lines.next()? != digest {
        return None;
    }
    let rest: Vec<String> = lines.collect();
    rest.iter()
        .filter(|l| l.starts_with('/'))
        .all(|l| Path::new(l).exists())
        .then_some(rest)
}

/// Records a finished build: `digest`, then `lines`.
pub fn record(stamp: &Path, digest: &str, lines: &[String]) {
    let mut text = format!("{digest}\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    let _ = std::fs::write(stamp, text);
}
