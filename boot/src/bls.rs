//! systemd-boot configuration: Boot Loader Specification type #1 entries
//! for the two slots and `loader/loader.conf`.
//!
//! How the default works without trusting a single named entry:
//! systemd-boot boots the entry named by `LoaderEntryOneShot` or
//! `LoaderEntryDefault` even when its tries are exhausted, so Bascule never
//! names one slot as the default. Both loader.conf's `default` and
//! `LoaderEntryDefault` are the glob `bascule-*`, which matches both slots,
//! and systemd-boot picks the first match in its sort order:
//!
//! 1. entries with tries left (or no counter) before entries at `+0`;
//! 2. then by `sort-key`, ascending;
//! 3. then by version, newest first.
//!
//! So the default slot's entry carries [`SORT_KEY_DEFAULT`] and the other
//! [`SORT_KEY_STANDBY`]; a slot on trial carries a counter, and once its
//! tries are used up it sorts last and the glob falls through to the other
//! slot. The boot-once of a try is `LoaderEntryOneShot` with the entry id.

use std::fmt::Write as _;

use crate::bootcount::{EntryFileName, EntryNameError, EntrySuffix};
use crate::grubcfg::check_file_name;
use crate::layout::{self, Guid};
use crate::slot::{entry_cmdline, BootFiles, Slot, SlotError};

/// Where entries live on the ESP.
pub const ENTRIES_DIR: &str = layout::esp_relative(layout::ESP_LOADER_ENTRIES);
/// loader.conf's path on the ESP.
pub const LOADER_CONF_PATH: &str = layout::esp_relative(layout::ESP_LOADER_CONF);
/// The default pattern: matches both slots' entry ids.
pub const DEFAULT_PATTERN: &str = "bascule-*";
/// `sort-key` of the default slot's entry: sorts first.
pub const SORT_KEY_DEFAULT: &str = "bascule-0-default";
/// `sort-key` of the other slot's entry.
pub const SORT_KEY_STANDBY: &str = "bascule-1-standby";

/// Errors building or parsing entries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BlsError {
    #[error("entry {entry}: key {key:?}: value {value:?} must be one non-empty line")]
    BadValue {
        entry: String,
        key: &'static str,
        value: String,
    },
    #[error("entry {entry}: line {line}: {reason}")]
    Parse {
        entry: String,
        line: usize,
        reason: String,
    },
    #[error("entry {entry}: no {key:?} line")]
    Missing { entry: String, key: &'static str },
    #[error("entry {entry}: {source}")]
    FileName {
        entry: String,
        #[source]
        source: crate::grubcfg::GrubCfgError,
    },
    #[error(transparent)]
    Name(#[from] EntryNameError),
    #[error("entry {entry}: {source}")]
    Slot {
        entry: String,
        #[source]
        source: SlotError,
    },
}

/// A type #1 entry (the keys Bascule uses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlsEntry {
    pub title: String,
    pub version: Option<String>,
    pub sort_key: Option<String>,
    /// Kernel path on the ESP, e.g. `/bascule/A/vmlinuz`.
    pub linux: String,
    pub initrd: Vec<String>,
    pub options: String,
}

/// The stem of a slot's entry file: `bascule-a` / `bascule-b`.
pub fn entry_stem(slot: Slot) -> String {
    format!("bascule-{}", slot.lower())
}

/// A slot's entry file name without a counter: `bascule-a.conf`. Its id
/// (what `LoaderEntryOneShot` names) is the same text.
pub fn entry_file_name(slot: Slot) -> EntryFileName {
    // The stem is a constant of valid characters.
    EntryFileName::from_valid_parts(&entry_stem(slot), EntrySuffix::Conf)
}

fn check_line(entry: &str, key: &'static str, value: &str) -> Result<(), BlsError> {
    if value.trim().is_empty() || value.contains(['\n', '\r']) {
        return Err(BlsError::BadValue {
            entry: entry.to_string(),
            key,
            value: value.to_string(),
        });
    }
    Ok(())
}

impl BlsEntry {
    /// The entry of `slot`: title `Bascule A`, the slot's kernel and initrd
    /// under `/bascule/A`, options `bascule.slot=A bascule.version=V
    /// root=PARTUUID=<partuuid>` followed by `cmdline`, and the sort key that
    /// makes it the default or the standby.
    pub fn for_slot(
        slot: Slot,
        version: Option<&str>,
        partuuid: Option<Guid>,
        is_default: bool,
        cmdline: &str,
        files: &BootFiles,
    ) -> Result<Self, BlsError> {
        let name = entry_file_name(slot).to_string();
        for f in [&files.kernel, &files.initrd] {
            check_file_name(f).map_err(|source| BlsError::FileName {
                entry: name.clone(),
                source,
            })?;
        }
        let options =
            entry_cmdline(slot, version, partuuid, cmdline).map_err(|source| BlsError::Slot {
                entry: name.clone(),
                source,
            })?;
        Ok(BlsEntry {
            title: format!("Bascule {slot}"),
            version: version.map(str::to_string),
            sort_key: Some(
                if is_default {
                    SORT_KEY_DEFAULT
                } else {
                    SORT_KEY_STANDBY
                }
                .to_string(),
            ),
            linux: slot.esp_path(&files.kernel),
            initrd: vec![slot.esp_path(&files.initrd)],
            options,
        })
    }

    /// The `.conf` text. `entry` names the file in errors.
    pub fn to_conf(&self, entry: &str) -> Result<String, BlsError> {
        let mut s = String::new();
        let mut line = |key: &'static str, value: &str| -> Result<(), BlsError> {
            check_line(entry, key, value)?;
            let _ = writeln!(s, "{key} {value}");
            Ok(())
        };
        line("title", &self.title)?;
        if let Some(v) = &self.version {
            line("version", v)?;
        }
        if let Some(k) = &self.sort_key {
            line("sort-key", k)?;
        }
        line("linux", &self.linux)?;
        for i in &self.initrd {
            line("initrd", i)?;
        }
        line("options", &self.options)?;
        Ok(s)
    }

    /// Parses an entry file (`entry` names it in errors). Keys Bascule does
    /// not use are ignored; several `options` lines are joined by a space.
    pub fn parse(entry: &str, text: &str) -> Result<Self, BlsError> {
        let mut title = None;
        let mut version = None;
        let mut sort_key = None;
        let mut linux = None;
        let mut initrd = Vec::new();
        let mut options: Vec<String> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let l = raw.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (key, value) = match l.split_once(|c: char| c.is_whitespace()) {
                Some((k, v)) => (k, v.trim().to_string()),
                None => {
                    return Err(BlsError::Parse {
                        entry: entry.to_string(),
                        line: i + 1,
                        reason: format!("key {l:?} has no value"),
                    })
                }
            };
            match key {
                "title" => title = Some(value),
                "version" => version = Some(value),
                "sort-key" => sort_key = Some(value),
                "linux" => linux = Some(value),
                "initrd" => initrd.push(value),
                "options" => options.push(value),
                _ => {}
            }
        }
        let missing = |key| BlsError::Missing {
            entry: entry.to_string(),
            key,
        };
        Ok(BlsEntry {
            title: title.ok_or_else(|| missing("title"))?,
            version,
            sort_key,
            linux: linux.ok_or_else(|| missing("linux"))?,
            initrd,
            options: options.join(" "),
        })
    }
}

/// `loader/loader.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderConf {
    /// Menu timeout in seconds; 0 hides the menu.
    pub timeout: u32,
    /// Whether the kernel command line can be edited at boot.
    pub editor: bool,
    /// The default entry pattern (a glob over entry ids).
    pub default_pattern: String,
}

impl Default for LoaderConf {
    fn default() -> Self {
        LoaderConf {
            timeout: 0,
            editor: false,
            default_pattern: DEFAULT_PATTERN.to_string(),
        }
    }
}

impl LoaderConf {
    /// The loader.conf text.
    pub fn to_conf(&self) -> Result<String, BlsError> {
        check_line(LOADER_CONF_PATH, "default", &self.default_pattern)?;
        Ok(format!(
            "timeout {}\neditor {}\ndefault {}\n",
            self.timeout,
            if self.editor { "yes" } else { "no" },
            self.default_pattern
        ))
    }
}

/// Whether a glob pattern (as systemd-boot's `efi_fnmatch` reads `*`, `?`
/// and `[...]`) matches an entry id: lets the adapter check that a default
/// pattern matches both slots.
pub fn pattern_matches(pattern: &str, id: &str) -> bool {
    fn m(p: &[char], s: &[char]) -> bool {
        match p.split_first() {
            None => s.is_empty(),
            Some(('*', rest)) => (0..=s.len()).any(|i| m(rest, &s[i..])),
            Some(('?', rest)) => !s.is_empty() && m(rest, &s[1..]),
            Some(('[', rest)) => {
                let Some(close) = rest.iter().position(|&c| c == ']') else {
                    return s.first() == Some(&'[') && m(rest, &s[1..]);
                };
                let (set, after) = (&rest[..close], &rest[close + 1..]);
                let Some(&c) = s.first() else { return false };
                let (neg, set) = match set.split_first() {
                    Some(('!', r)) => (true, r),
                    _ => (false, set),
                };
                let mut hit = false;
                let mut i = 0;
                while i < set.len() {
                    if i + 2 < set.len() && set[i + 1] == '-' {
                        hit |= set[i] <= c && c <= set[i + 2];
                        i += 3;
                    } else {
                        hit |= set[i] == c;
                        i += 1;
                    }
                }
                hit != neg && m(after, &s[1..])
            }
            Some(('\\', rest)) if !rest.is_empty() => {
                s.first() == Some(&rest[0]) && m(&rest[1..], &s[1..])
            }
            Some((&c, rest)) => s.first() == Some(&c) && m(rest, &s[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = id.chars().collect();
    m(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_entry_text() {
        let e = BlsEntry::for_slot(
            Slot::A,
            Some("1.2.3"),
            Guid::parse("0FC63DAF-8483-4772-8E79-3D69D8477DE4"),
            true,
            "console=ttyS0  quiet",
            &BootFiles::default(),
        )
        .unwrap();
        assert_eq!(
            e.to_conf("bascule-a.conf").unwrap(),
            "title Bascule A\nversion 1.2.3\nsort-key bascule-0-default\n\
             linux /bascule/A/vmlinuz\ninitrd /bascule/A/initrd.img\n\
             options bascule.slot=A bascule.version=1.2.3 \
             root=PARTUUID=0fc63daf-8483-4772-8e79-3d69d8477de4 console=ttyS0 quiet\n"
        );
        let b = BlsEntry::for_slot(Slot::B, None, None, false, "", &BootFiles::default()).unwrap();
        let text = b.to_conf("bascule-b.conf").unwrap();
        assert!(text.contains("sort-key bascule-1-standby\n"));
        assert!(!text.contains("version"));
        assert!(text.ends_with("options bascule.slot=B\n"));
        assert_eq!(BlsEntry::parse("bascule-b.conf", &text).unwrap(), b);
    }

    #[test]
    fn sort_keys_put_default_first() {
        assert!(SORT_KEY_DEFAULT < SORT_KEY_STANDBY);
    }

    #[test]
    fn names_and_ids() {
        assert_eq!(entry_file_name(Slot::A).to_string(), "bascule-a.conf");
        assert_eq!(entry_file_name(Slot::B).id(), "bascule-b.conf");
        assert_eq!(entry_stem(Slot::B), "bascule-b");
    }

    #[test]
    fn bad_values_rejected() {
        let mut e =
            BlsEntry::for_slot(Slot::A, Some("1"), None, true, "", &BootFiles::default()).unwrap();
        e.version = Some("1\n2".into());
        let err = e.to_conf("bascule-a.conf").unwrap_err();
        assert!(
            err.to_string()
                .contains("entry bascule-a.conf: key \"version\""),
            "{err}"
        );
        assert!(matches!(
            BlsEntry::for_slot(
                Slot::A,
                None,
                None,
                true,
                "bascule.slot=B",
                &BootFiles::default()
            ),
            Err(BlsError::Slot {
                source: SlotError::ReservedParam { .. },
                ..
            })
        ));
        let e = BlsEntry::for_slot(Slot::B, Some("1 0"), None, true, "", &BootFiles::default())
            .unwrap_err();
        assert!(
            e.to_string().starts_with("entry bascule-b.conf: version"),
            "{e}"
        );
        let files = BootFiles {
            kernel: "a/b".into(),
            initrd: "i".into(),
        };
        assert!(matches!(
            BlsEntry::for_slot(Slot::A, None, None, true, "", &files),
            Err(BlsError::FileName { .. })
        ));
    }

    #[test]
    fn parse_tolerates_comments_and_unknown_keys() {
        let text = "# made by hand\ntitle  T \nmachine-id abc\nlinux /k\n\
                    initrd /i1\ninitrd /i2\noptions a=1\noptions b=2\n";
        let e = BlsEntry::parse("x.conf", text).unwrap();
        assert_eq!(e.title, "T");
        assert_eq!(e.initrd, vec!["/i1", "/i2"]);
        assert_eq!(e.options, "a=1 b=2");
        assert!(matches!(
            BlsEntry::parse("x.conf", "title T\n"),
            Err(BlsError::Missing { key: "linux", .. })
        ));
        assert!(matches!(
            BlsEntry::parse("x.conf", "title T\nlinux\n"),
            Err(BlsError::Parse { line: 2, .. })
        ));
    }

    #[test]
    fn loader_conf_text() {
        assert_eq!(
            LoaderConf::default().to_conf().unwrap(),
            "timeout 0\neditor no\ndefault bascule-*\n"
        );
        let bad = LoaderConf {
            default_pattern: String::new(),
            ..LoaderConf::default()
        };
        assert!(bad.to_conf().is_err());
    }

    #[test]
    fn default_pattern_matches_both_slots_and_nothing_else() {
        for slot in Slot::ALL {
            assert!(pattern_matches(
                DEFAULT_PATTERN,
                &entry_file_name(slot).id()
            ));
        }
        assert!(!pattern_matches(DEFAULT_PATTERN, "debian.conf"));
        assert!(pattern_matches("bascule-[ab].conf", "bascule-b.conf"));
        assert!(!pattern_matches("bascule-[!ab].conf", "bascule-b.conf"));
        assert!(pattern_matches("bascule-[a-c]?conf", "bascule-c.conf"));
        assert!(pattern_matches("a\\*", "a*"));
        assert!(!pattern_matches("a\\*", "ab"));
    }
}
