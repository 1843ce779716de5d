//! One interface over the two bootloaders, for the sequencer and the API:
//! what the loader will boot (default, boot-once, a try in progress), and
//! the four operations (boot once, make default, confirm a try, mark bad).
//! The booted slot is never asked of the loader: it comes from the kernel
//! command line (see [`crate::Slot::from_cmdline`]).

use std::path::{Path, PathBuf};

use crate::atomicfile::atomic_write;
use crate::bls::{self, BlsEntry, ENTRIES_DIR, SORT_KEY_DEFAULT, SORT_KEY_STANDBY};
use crate::bootcount::{BootCounter, EntryFileName};
use crate::efivar::{EfiVarError, EfiVarStore, ImmutableFlag, LoaderVar};
use crate::grubcfg::GrubSlotVars;
use crate::grubenv::{self, GrubEnvError};
use crate::layout;
use crate::Slot;

/// Where GRUB's files sit on the ESP.
pub const GRUB_DIR: &str = layout::esp_relative(layout::ESP_GRUB_DIR);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderKind {
    Grub,
    SdBoot,
}

impl LoaderKind {
    pub fn label(self) -> &'static str {
        match self {
            LoaderKind::Grub => "grub",
            LoaderKind::SdBoot => "systemd-boot",
        }
    }

    /// Which loader an ESP (mounted at `esp`) carries.
    pub fn detect(esp: &Path) -> Option<LoaderKind> {
        if esp.join(bls::LOADER_CONF_PATH).exists() {
            Some(LoaderKind::SdBoot)
        } else if layout::on_esp(esp, layout::ESP_GRUB_CFG).exists() {
            Some(LoaderKind::Grub)
        } else {
            None
        }
    }
}

/// What the loader will do at the next boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderState {
    pub default: Slot,
    /// A boot-once request not yet consumed.
    pub once: Option<Slot>,
    /// A try that started (the loader consumed the boot-once) and has been
    /// neither confirmed nor found failed.
    pub trying: Option<Slot>,
    /// The entry the loader says it booted (systemd-boot's
    /// `LoaderEntrySelected`); GRUB does not tell.
    pub selected: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("grubenv {path}: {source}")]
    GrubEnv {
        path: PathBuf,
        #[source]
        source: GrubEnvError,
    },
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error(transparent)]
    EfiVar(#[from] EfiVarError),
    #[error("no loader entry for slot {slot} in {dir}: the slot is empty")]
    NoEntry { slot: Slot, dir: PathBuf },
}

pub trait BootLoader {
    fn kind(&self) -> LoaderKind;
    fn state(&self) -> Result<LoaderState, AdapterError>;
    /// Boots `slot` at the next boot only; the default stays.
    fn set_once(&mut self, slot: Slot) -> Result<(), AdapterError>;
    fn set_default(&mut self, slot: Slot) -> Result<(), AdapterError>;
    /// The try of `slot` booted and passed: forget the try, bless the entry.
    fn confirm(&mut self, slot: Slot) -> Result<(), AdapterError>;
    /// The try of `slot` failed: forget it so nothing retries it by mistake.
    fn mark_bad(&mut self, slot: Slot) -> Result<(), AdapterError>;
}

fn file_err(path: &Path, message: impl std::fmt::Display) -> AdapterError {
    AdapterError::File {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// GRUB: grubenv (rewritten in place) and the default baked into grub.cfg.
pub struct Grub {
    esp: PathBuf,
}

impl Grub {
    pub fn new(esp: &Path) -> Self {
        Grub {
            esp: esp.to_path_buf(),
        }
    }

    fn env_path(&self) -> PathBuf {
        layout::on_esp(&self.esp, layout::ESP_GRUBENV)
    }

    fn cfg_path(&self) -> PathBuf {
        layout::on_esp(&self.esp, layout::ESP_GRUB_CFG)
    }

    /// The known-good default grub.cfg boots without a usable grubenv.
    fn baked_default(&self) -> Result<Slot, AdapterError> {
        let path = self.cfg_path();
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
        baked_default_of(&text)
            .ok_or_else(|| file_err(&path, "no top-level `set default=A|B` line"))
    }

    fn vars(&self) -> Result<(grubenv::GrubEnv, GrubSlotVars), AdapterError> {
        let path = self.env_path();
        // A missing or corrupt grubenv is what GRUB copes with by booting
        // the baked default: start from an empty environment then.
        let env = grubenv::read_env_file(&path).unwrap_or_default();
        let vars = GrubSlotVars::from_env(&env);
        Ok((env, vars))
    }

    fn write(&self, mut env: grubenv::GrubEnv, vars: GrubSlotVars) -> Result<(), AdapterError> {
        let path = self.env_path();
        let err = |source| AdapterError::GrubEnv {
            path: path.clone(),
            source,
        };
        vars.apply_to(&mut env).map_err(err)?;
        grubenv::write_env_file(&path, &env).map_err(err)?;
        Ok(())
    }
}

/// The `set default=X` line at column 0 of a generated grub.cfg.
pub fn baked_default_of(cfg: &str) -> Option<Slot> {
    cfg.lines().find_map(|l| match l {
        "set default=A" => Some(Slot::A),
        "set default=B" => Some(Slot::B),
        _ => None,
    })
}

/// The offset and value of the slot letter in grub.cfg's one
/// `set default=A|B` line, if there is exactly one.
fn baked_default_byte(text: &str) -> Option<(usize, u8)> {
    let mut found = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches('\n');
        if l == "set default=A" || l == "set default=B" {
            if found.is_some() {
                return None;
            }
            let at = offset + "set default=".len();
            found = Some((at, text.as_bytes()[at]));
        }
        offset += line.len();
    }
    found
}

impl BootLoader for Grub {
    fn kind(&self) -> LoaderKind {
        LoaderKind::Grub
    }

    fn state(&self) -> Result<LoaderState, AdapterError> {
        let (_, v) = self.vars()?;
        Ok(LoaderState {
            default: v.saved_entry.map_or_else(|| self.baked_default(), Ok)?,
            once: v.next_entry,
            trying: v.trying,
            selected: None,
        })
    }

    fn set_once(&mut self, slot: Slot) -> Result<(), AdapterError> {
        let (env, mut v) = self.vars()?;
        v.next_entry = Some(slot);
        // A new request for this slot starts a new try (the caller has
        // checked the slot may be tried).
        if v.trying == Some(slot) {
            v.trying = None;
        }
        self.write(env, v)
    }

    fn set_default(&mut self, slot: Slot) -> Result<(), AdapterError> {
        let (env, mut v) = self.vars()?;
        v.saved_entry = Some(slot);
        self.write(env, v)?;
        // The baked default follows, so a lost grubenv still boots it.
        let path = self.cfg_path();
        let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
        match baked_default_byte(&text) {
            Some((_, current)) if current == slot.to_string().as_bytes()[0] => Ok(()),
            // One byte in place: on FAT a rename changes the directory and
            // the allocation table, and a power cut in the middle can leave
            // grub.cfg unreadable; a one-byte write inside a sector is
            // either done or not, and either slot is bootable.
            Some((at, _)) => {
                use std::os::unix::fs::FileExt;
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| file_err(&path, e))?;
                f.write_all_at(slot.to_string().as_bytes(), at as u64)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| file_err(&path, e))
            }
            None => {
                let new: String = text
                    .lines()
                    .map(|l| {
                        if l == "set default=A" || l == "set default=B" {
                            format!("set default={slot}")
                        } else {
                            l.to_owned()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + "\n";
                if new != text {
                    atomic_write(&path, new.as_bytes()).map_err(|e| file_err(&path, e))?;
                }
                Ok(())
            }
        }
    }

    fn confirm(&mut self, slot: Slot) -> Result<(), AdapterError> {
        self.mark_bad(slot)
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), AdapterError> {
        // GRUB keeps no per-slot verdict: clearing the try is all it needs;
        // whether the slot may be tried again is Bascule's record (META).
        let (env, mut v) = self.vars()?;
        if v.trying == Some(slot) {
            v.trying = None;
            self.write(env, v)?;
        }
        Ok(())
    }
}

/// systemd-boot: entries with boot counters, sort keys for the default,
/// `LoaderEntryOneShot` for boot-once.
pub struct SdBoot<F: ImmutableFlag> {
    entries: PathBuf,
    vars: EfiVarStore<F>,
}

impl<F: ImmutableFlag> SdBoot<F> {
    pub fn new(esp: &Path, vars: EfiVarStore<F>) -> Self {
        SdBoot {
            entries: esp.join(ENTRIES_DIR),
            vars,
        }
    }

    /// The current file name of `slot`'s entry (its counter may have changed).
    fn entry(&self, slot: Slot) -> Result<(PathBuf, EntryFileName), AdapterError> {
        let stem = bls::entry_stem(slot);
        let dir = std::fs::read_dir(&self.entries).map_err(|e| file_err(&self.entries, e))?;
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(parsed) = EntryFileName::parse(&name) {
                if parsed.stem == stem {
                    return Ok((e.path(), parsed));
                }
            }
        }
        Err(AdapterError::NoEntry {
            slot,
            dir: self.entries.clone(),
        })
    }

    fn rename(&self, from: &Path, to: &EntryFileName) -> Result<String, AdapterError> {
        let name = to.to_string();
        let target = self.entries.join(&name);
        if from != target {
            std::fs::rename(from, &target)
                .map_err(|e| file_err(from, format!("cannot rename to {name}: {e}")))?;
            crate::atomicfile::sync_dir(&self.entries).map_err(|e| file_err(&self.entries, e))?;
        }
        Ok(name)
    }
}

impl<F: ImmutableFlag> BootLoader for SdBoot<F> {
    fn kind(&self) -> LoaderKind {
        LoaderKind::SdBoot
    }

    fn state(&self) -> Result<LoaderState, AdapterError> {
        let mut default = Slot::A;
        for slot in Slot::ALL {
            if let Ok((path, _)) = self.entry(slot) {
                let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
                let entry = BlsEntry::parse(&path.display().to_string(), &text)
                    .map_err(|e| file_err(&path, e))?;
                if entry.sort_key.as_deref() == Some(SORT_KEY_DEFAULT) {
                    default = slot;
                }
            }
        }
        let slot_of = |id: &str| {
            Slot::ALL
                .into_iter()
                .find(|s| id.starts_with(&bls::entry_stem(*s)))
        };
        let once = self
            .vars
            .read_string(LoaderVar::EntryOneShot)?
            .as_deref()
            .and_then(slot_of);
        // A try that started: systemd-boot counted the entry down (tries
        // done) and it was not blessed since. A failed try looks the same;
        // the META record tells them apart.
        let trying = Slot::ALL.into_iter().find(|s| {
            self.entry(*s)
                .is_ok_and(|(_, n)| n.counter.is_some_and(|c| c.done_or_zero() > 0))
        });
        let selected = self.vars.read_string(LoaderVar::EntrySelected)?;
        Ok(LoaderState {
            default,
            once,
            trying,
            selected,
        })
    }

    fn set_once(&mut self, slot: Slot) -> Result<(), AdapterError> {
        let (path, name) = self.entry(slot)?;
        // One try: systemd-boot counts it down to +0-1 when it boots it, and
        // an entry left at +0 is never chosen by the default pattern.
        let name = self.rename(&path, &name.with_counter(BootCounter::new(1)))?;
        self.vars
            .write_string(LoaderVar::EntryOneShot, &name.to_ascii_lowercase())?;
        Ok(())
    }

    fn set_default(&mut self, slot: Slot) -> Result<(), AdapterError> {
        for s in Slot::ALL {
            let Ok((path, _)) = self.entry(s) else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|e| file_err(&path, e))?;
            let mut entry = BlsEntry::parse(&path.display().to_string(), &text)
                .map_err(|e| file_err(&path, e))?;
            entry.sort_key = Some(
                if s == slot {
                    SORT_KEY_DEFAULT
                } else {
                    SORT_KEY_STANDBY
                }
                .to_owned(),
            );
            let out = entry
                .to_conf(&path.display().to_string())
                .map_err(|e| file_err(&path, e))?;
            atomic_write(&path, out.as_bytes()).map_err(|e| file_err(&path, e))?;
        }
        // A counted entry (a failed or pending try) would still be passed
        // over: the operator vouches for the new default, so bless it.
        let (path, name) = self.entry(slot)?;
        if name.counter.is_some() {
            self.rename(&path, &name.blessed())?;
        }
        // The default stays a pattern matching both slots, so a slot with
        // no tries left is passed over: never a single entry's name.
        if self.vars.read_string(LoaderVar::EntryDefault)?.is_some() {
            self.vars.delete(LoaderVar::EntryDefault)?;
        }
        Ok(())
    }

    fn confirm(&mut self, slot: Slot) -> Result<(), AdapterError> {
        let (path, name) = self.entry(slot)?;
        self.rename(&path, &name.blessed())?;
        Ok(())
    }

    fn mark_bad(&mut self, slot: Slot) -> Result<(), AdapterError> {
        let (path, name) = self.entry(slot)?;
        self.rename(&path, &name.marked_bad())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grubcfg::{generate, model_boot, GrubCfgInputs};
    use crate::slot::BootFiles;

    fn grub_esp() -> (tempfile::TempDir, Grub) {
        let esp = tempfile::tempdir().unwrap();
        std::fs::create_dir(esp.path().join(GRUB_DIR)).unwrap();
        std::fs::write(
            layout::on_esp(esp.path(), layout::ESP_GRUB_CFG),
            generate(&GrubCfgInputs::new(Slot::A)).unwrap(),
        )
        .unwrap();
        let g = Grub::new(esp.path());
        (esp, g)
    }

    #[test]
    fn grub_once_default_and_the_model_agree() {
        let (esp, mut g) = grub_esp();
        // No grubenv at all: the baked default.
        assert_eq!(
            g.state().unwrap(),
            LoaderState {
                default: Slot::A,
                once: None,
                trying: None,
                selected: None,
            }
        );
        g.set_once(Slot::B).unwrap();
        let env = grubenv::read_env_file(&layout::on_esp(esp.path(), layout::ESP_GRUBENV)).unwrap();
        let boot = model_boot(Some(&env), Slot::A, true);
        assert_eq!(boot.slot, Slot::B, "GRUB's script boots the once slot");
        // GRUB's save_env leaves the try recorded; the next boot is A again.
        let after = boot.env_after.unwrap();
        grubenv::write_env_file(&layout::on_esp(esp.path(), layout::ESP_GRUBENV), &after).unwrap();
        assert_eq!(
            g.state().unwrap(),
            LoaderState {
                default: Slot::A,
                once: None,
                trying: Some(Slot::B),
                selected: None,
            }
        );
        assert_eq!(model_boot(Some(&after), Slot::A, true).slot, Slot::A);
        g.mark_bad(Slot::B).unwrap();
        assert_eq!(g.state().unwrap().trying, None);

        let cfg_path = layout::on_esp(esp.path(), layout::ESP_GRUB_CFG);
        let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
        let before = inode(&cfg_path);
        g.set_default(Slot::B).unwrap();
        assert_eq!(
            inode(&cfg_path),
            before,
            "grub.cfg is changed in place (one byte), never replaced: no FAT metadata moves"
        );
        let cfg = std::fs::read_to_string(&cfg_path).unwrap();
        assert_eq!(
            baked_default_of(&cfg),
            Some(Slot::B),
            "a lost grubenv still boots the new default"
        );
        assert_eq!(g.state().unwrap().default, Slot::B);
        // Zeroed grubenv: GRUB boots the baked default.
        std::fs::write(layout::on_esp(esp.path(), layout::ESP_GRUBENV), [0u8; 1024]).unwrap();
        assert_eq!(g.state().unwrap().default, Slot::B);
    }

    #[derive(Default)]
    struct NoFlag;
    impl ImmutableFlag for NoFlag {
        fn clear_immutable(&self, _: &Path) -> std::io::Result<bool> {
            Ok(false)
        }
        fn set_immutable(&self, _: &Path) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn sdboot_esp() -> (tempfile::TempDir, tempfile::TempDir, SdBoot<NoFlag>) {
        let esp = tempfile::tempdir().unwrap();
        let vars = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(esp.path().join(ENTRIES_DIR)).unwrap();
        for slot in Slot::ALL {
            let e = BlsEntry::for_slot(
                slot,
                Some("1"),
                None,
                slot == Slot::A,
                "console=ttyS0",
                &BootFiles::default(),
            )
            .unwrap();
            let name = bls::entry_file_name(slot).to_string();
            std::fs::write(
                esp.path().join(ENTRIES_DIR).join(&name),
                e.to_conf(&name).unwrap(),
            )
            .unwrap();
        }
        let sd = SdBoot::new(esp.path(), EfiVarStore::new(vars.path(), NoFlag));
        (esp, vars, sd)
    }

    fn entries(esp: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(esp.join(ENTRIES_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn sdboot_once_uses_one_counted_try_and_the_one_shot_variable() {
        let (esp, _vars, mut sd) = sdboot_esp();
        assert_eq!(
            sd.state().unwrap(),
            LoaderState {
                default: Slot::A,
                once: None,
                trying: None,
                selected: None,
            }
        );
        sd.set_once(Slot::B).unwrap();
        assert_eq!(
            entries(esp.path()),
            vec!["bascule-a.conf", "bascule-b+1.conf"]
        );
        assert_eq!(
            sd.vars
                .read_string(LoaderVar::EntryOneShot)
                .unwrap()
                .as_deref(),
            Some("bascule-b+1.conf")
        );
        assert_eq!(sd.state().unwrap().once, Some(Slot::B));
        // What systemd-boot does when it boots the entry.
        sd.vars.delete(LoaderVar::EntryOneShot).unwrap();
        std::fs::rename(
            esp.path().join(ENTRIES_DIR).join("bascule-b+1.conf"),
            esp.path().join(ENTRIES_DIR).join("bascule-b+0-1.conf"),
        )
        .unwrap();
        assert_eq!(sd.state().unwrap().trying, Some(Slot::B));
        sd.confirm(Slot::B).unwrap();
        assert_eq!(
            entries(esp.path()),
            vec!["bascule-a.conf", "bascule-b.conf"]
        );
        sd.mark_bad(Slot::B).unwrap();
        assert_eq!(
            entries(esp.path()),
            vec!["bascule-a.conf", "bascule-b+0-0.conf"]
        );
    }

    #[test]
    fn sdboot_default_moves_the_sort_key_and_keeps_the_pattern() {
        let (esp, _vars, mut sd) = sdboot_esp();
        sd.vars
            .write_string(LoaderVar::EntryDefault, "bascule-a.conf")
            .unwrap();
        sd.set_default(Slot::B).unwrap();
        assert_eq!(sd.state().unwrap().default, Slot::B);
        assert_eq!(sd.vars.read_string(LoaderVar::EntryDefault).unwrap(), None);
        let b =
            std::fs::read_to_string(esp.path().join(ENTRIES_DIR).join("bascule-b.conf")).unwrap();
        assert!(b.contains(&format!("sort-key {SORT_KEY_DEFAULT}")), "{b}");
        let a =
            std::fs::read_to_string(esp.path().join(ENTRIES_DIR).join("bascule-a.conf")).unwrap();
        assert!(a.contains(&format!("sort-key {SORT_KEY_STANDBY}")), "{a}");
    }

    #[test]
    fn detects_the_loader() {
        let (esp, _) = grub_esp();
        assert_eq!(LoaderKind::detect(esp.path()), Some(LoaderKind::Grub));
        let (esp2, _v, _) = sdboot_esp();
        std::fs::write(esp2.path().join(bls::LOADER_CONF_PATH), "timeout 0\n").unwrap();
        assert_eq!(LoaderKind::detect(esp2.path()), Some(LoaderKind::SdBoot));
        assert_eq!(LoaderKind::detect(Path::new("/nonexistent")), None);
    }
}
