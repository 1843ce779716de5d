//! Compatibility of the generated systemd-boot configuration with the real
//! `bootctl list` (systemd 252 in Debian 12: package `systemd-boot`).
//!
//! bootctl only accepts an ESP path that is the root of a mounted
//! filesystem, so the test bind-mounts its temporary directory onto itself
//! inside a private mount namespace (`unshare`), and sets
//! `SYSTEMD_RELAX_ESP_CHECKS=1` so that a non-vfat directory is accepted.
//! Fails, naming the Debian package, when bootctl or unshare is missing, and
//! with bootctl's own words when no mount namespace can be made.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use std::process::Command;

use bascule_boot::atomicfile::atomic_write;
use bascule_boot::bls::{
    entry_file_name, BlsEntry, LoaderConf, ENTRIES_DIR, LOADER_CONF_PATH, SORT_KEY_DEFAULT,
};
use bascule_boot::bootcount::{BootCounter, EntryFileName};
use bascule_boot::slot::BootFiles;
use bascule_boot::Slot;

fn bootctl() -> PathBuf {
    if let Some(p) = std::env::var_os("BASCULE_BOOTCTL") {
        return p.into();
    }
    let found = ["/usr/bin/bootctl", "/bin/bootctl"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    match found {
        Some(p) => p,
        None => panic!(
            "bootctl is not installed: Debian 12 ships it in systemd-boot \
             (apt-get install --no-install-recommends systemd-boot, or `cargo xtask deps`), \
             or set BASCULE_BOOTCTL"
        ),
    }
}

/// One entry as bootctl lists it.
#[derive(Debug, Default)]
struct Listed {
    title: String,
    id: String,
    source: String,
    tries: String,
    sort_key: String,
    version: String,
    options: String,
    is_default: bool,
}

fn parse_listing(text: &str) -> Vec<Listed> {
    let mut out = Vec::new();
    let mut cur: Option<Listed> = None;
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once(": ") else {
            if let Some(e) = cur.take() {
                out.push(e);
            }
            continue;
        };
        let e = cur.get_or_insert_with(Listed::default);
        match k {
            "title" => {
                e.is_default = v.contains("(default)");
                e.title = v.to_string();
            }
            "id" => e.id = v.to_string(),
            "source" => e.source = v.to_string(),
            "tries" => e.tries = v.to_string(),
            "sort-key" => e.sort_key = v.to_string(),
            "version" => e.version = v.to_string(),
            "options" => e.options = v.to_string(),
            _ => {}
        }
    }
    out.extend(cur);
    out
}

/// Runs `bootctl --esp-path=ESP list` in a private mount namespace; `Err`
/// with a reason when that cannot be done here.
fn list(tool: &Path, esp: &Path) -> Result<Vec<Listed>, String> {
    let script = r#"mount --bind "$1" "$1" && SYSTEMD_RELAX_ESP_CHECKS=1 exec "$2" --esp-path="$1" --no-pager list"#;
    let mut last = String::new();
    // Unprivileged user namespace first, then a plain mount namespace (root).
    for flags in [
        &["--user", "--map-root-user", "--mount"][..],
        &["--mount"][..],
    ] {
        let out = Command::new("unshare")
            .args(flags)
            .args(["sh", "-c", script, "sh"])
            .arg(esp)
            .arg(tool)
            .output()
            .map_err(|e| format!("cannot run unshare ({e}): apt-get install util-linux"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(parse_listing(&stdout));
        }
        last = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        if stdout.contains("title:") {
            return Err(format!("bootctl failed after listing: {last}"));
        }
    }
    Err(format!("cannot run bootctl in a mount namespace: {last}"))
}

fn write_esp(esp: &Path, entries: &[(EntryFileName, BlsEntry)]) {
    std::fs::create_dir_all(esp.join(ENTRIES_DIR)).unwrap();
    for slot in Slot::ALL {
        std::fs::create_dir_all(esp.join(&slot.esp_dir()[1..])).unwrap();
    }
    atomic_write(
        &esp.join(LOADER_CONF_PATH),
        LoaderConf::default().to_conf().unwrap().as_bytes(),
    )
    .unwrap();
    for (name, entry) in entries {
        let name = name.to_string();
        let text = entry.to_conf(&name).unwrap();
        atomic_write(&esp.join(ENTRIES_DIR).join(&name), text.as_bytes()).unwrap();
    }
}

fn entry(slot: Slot, version: &str, is_default: bool) -> BlsEntry {
    BlsEntry::for_slot(
        slot,
        Some(version),
        None,
        is_default,
        "console=ttyS0",
        &BootFiles::default(),
    )
    .unwrap()
}

fn find<'a>(listed: &'a [Listed], id: &str) -> &'a Listed {
    listed
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("{id} not listed: {listed:#?}"))
}

fn default_of(listed: &[Listed]) -> &str {
    let d: Vec<_> = listed.iter().filter(|e| e.is_default).collect();
    assert_eq!(d.len(), 1, "exactly one default expected: {listed:#?}");
    &d[0].id
}

#[test]
fn bootctl_lists_entries_counters_and_the_intended_default() {
    let tool = bootctl();
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path();

    // 1. A is the default; B (newer) is installed and armed with 3 tries.
    let b_try = entry_file_name(Slot::B).with_counter(BootCounter::new(3));
    write_esp(
        esp,
        &[
            (entry_file_name(Slot::A), entry(Slot::A, "1.0", true)),
            (b_try.clone(), entry(Slot::B, "2.0", false)),
        ],
    );
    let listed = list(&tool, esp).unwrap_or_else(|reason| panic!("{reason}"));
    assert_eq!(listed.len(), 2, "{listed:#?}");
    let a = find(&listed, "bascule-a.conf");
    let b = find(&listed, "bascule-b.conf");
    assert!(a.title.starts_with("Bascule A"), "{a:?}");
    assert_eq!(a.sort_key, SORT_KEY_DEFAULT);
    assert_eq!(a.version, "1.0");
    assert_eq!(
        a.options,
        "bascule.slot=A bascule.version=1.0 console=ttyS0"
    );
    assert_eq!(a.tries, "");
    assert!(b.source.ends_with("bascule-b+3.conf"), "{b:?}");
    assert!(b.tries.starts_with("3 left"), "{b:?}");
    // Sort-key beats the newer version: A stays the default.
    assert_eq!(default_of(&listed), "bascule-a.conf");

    // 2. B was booted once (as systemd-boot renames it) and made the default
    //    by sort-key while still on trial; it failed: with no tries left it
    //    sorts last and the glob default falls back to A.
    std::fs::remove_file(esp.join(ENTRIES_DIR).join(b_try.to_string())).unwrap();
    let b_used = b_try.decremented().decremented().decremented();
    assert_eq!(b_used.to_string(), "bascule-b+0-3.conf");
    write_esp(
        esp,
        &[
            (entry_file_name(Slot::A), entry(Slot::A, "1.0", false)),
            (b_used.clone(), entry(Slot::B, "2.0", true)),
        ],
    );
    let listed = list(&tool, esp).unwrap_or_else(|reason| panic!("{reason}"));
    assert_eq!(find(&listed, "bascule-b.conf").tries, "0 left; 3 done");
    assert_eq!(default_of(&listed), "bascule-a.conf");

    // 3. B confirmed: blessed (counter removed) and the default.
    std::fs::remove_file(esp.join(ENTRIES_DIR).join(b_used.to_string())).unwrap();
    write_esp(
        esp,
        &[
            (entry_file_name(Slot::A), entry(Slot::A, "1.0", false)),
            (b_used.blessed(), entry(Slot::B, "2.0", true)),
        ],
    );
    let listed = list(&tool, esp).unwrap_or_else(|reason| panic!("{reason}"));
    assert!(find(&listed, "bascule-b.conf")
        .source
        .ends_with("/bascule-b.conf"));
    assert_eq!(default_of(&listed), "bascule-b.conf");
}

#[test]
fn bootctl_reads_width_preserving_counters() {
    let tool = bootctl();
    let dir = tempfile::tempdir().unwrap();
    let esp = dir.path();
    let name = EntryFileName::parse("bascule-b+10-00.conf")
        .unwrap()
        .decremented();
    assert_eq!(name.to_string(), "bascule-b+09-01.conf");
    write_esp(
        esp,
        &[
            (entry_file_name(Slot::A), entry(Slot::A, "1.0", true)),
            (name, entry(Slot::B, "2.0", false)),
        ],
    );
    let listed = list(&tool, esp).unwrap_or_else(|reason| panic!("{reason}"));
    assert_eq!(find(&listed, "bascule-b.conf").tries, "9 left; 1 done");
}
