//! Boot slots on a running machine: the META record reconciled with what
//! actually booted, the loader adapter, and the operator's requests. The
//! decisions are pure functions over the record (unit-tested); `Slots`
//! does the I/O.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use bascule_boot::adapter::{self, BootLoader, LoaderKind};
use bascule_boot::efivar::EfiVarStore;
use bascule_boot::meta::{self, MetaLayout, MetaState};
use bascule_boot::meta_record::{Failure, MetaRecord, PendingTry, SlotId, SlotState, TryKind};
use bascule_boot::{layout, Slot};

use bascule_sys::blockdev;

/// What the loader must be told after a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoaderOp {
    Confirm(Slot),
    MarkBad(Slot),
    /// An upgrade's confirmed slot becomes the default.
    SetDefault(Slot),
}

/// At boot: records the booted slot and settles a pending try. A try of
/// another slot that is still pending means the loader fell back: it failed.
pub fn at_boot(
    rec: &mut MetaRecord,
    booted: Slot,
    own_version: &str,
    now_secs: u64,
) -> Vec<LoaderOp> {
    let mut ops = Vec::new();
    let pending = rec.pending_try.clone();
    let info = rec.slot_info_mut(booted);
    info.version = own_version.to_owned();
    match &pending {
        Some(p) if p.slot().slot() == Some(booted) => info.state = SlotState::Trying as i32,
        _ => info.state = SlotState::Good as i32,
    }
    if let Some(p) = pending {
        if let Some(tried) = p.slot().slot().filter(|s| *s != booted) {
            rec.slot_info_mut(tried).state = SlotState::Bad as i32;
            rec.last_failure = Some(Failure {
                slot: SlotId::from(tried) as i32,
                version: p.version.clone(),
                reason: format!(
                    "the try of slot {tried} (version {}) did not complete: slot {booted} booted instead",
                    if p.version.is_empty() { "unknown" } else { &p.version }
                ),
                at_unix_secs: now_secs,
            });
            rec.pending_try = None;
            ops.push(LoaderOp::MarkBad(tried));
        }
    }
    if rec.active().is_none() {
        rec.active_slot = SlotId::from(booted) as i32;
    }
    ops
}

/// Every service came up in a slot being tried: the try passed.
pub fn on_ready(rec: &mut MetaRecord, booted: Slot) -> Vec<LoaderOp> {
    if rec.pending_slot() != Some(booted) {
        return Vec::new();
    }
    let kind = rec.pending_try.as_ref().map_or(TryKind::Once, |p| p.kind());
    rec.pending_try = None;
    rec.slot_info_mut(booted).state = SlotState::Good as i32;
    match kind {
        TryKind::Once => vec![LoaderOp::Confirm(booted)],
        TryKind::Upgrade => {
            // A kexec'd try never passed through the loader: the default
            // entry must name it so the next cold boot lands on it too.
            record_default(rec, booted);
            vec![LoaderOp::Confirm(booted), LoaderOp::SetDefault(booted)]
        }
    }
}

/// The self-check of the booted slot's try failed (`reason` names the
/// services): the slot becomes bad, the failure is recorded, and the loader
/// is told, so that the reboot that follows lands on the default (the slot
/// the try came from) and the loader never takes this one again.
pub fn on_self_check_failed(
    rec: &mut MetaRecord,
    booted: Slot,
    reason: &str,
    now_secs: u64,
) -> Vec<LoaderOp> {
    let Some(p) = rec
        .pending_try
        .clone()
        .filter(|p| p.slot().slot() == Some(booted))
    else {
        return Vec::new();
    };
    rec.pending_try = None;
    rec.slot_info_mut(booted).state = SlotState::Bad as i32;
    rec.last_failure = Some(Failure {
        slot: SlotId::from(booted) as i32,
        version: p.version,
        reason: reason.to_owned(),
        at_unix_secs: now_secs,
    });
    vec![LoaderOp::MarkBad(booted)]
}

/// May the operator boot `slot` (once or by default)?
pub fn check_bootable(rec: &MetaRecord, slot: Slot, force: bool) -> Result<(), String> {
    let info = rec.slot_info(slot);
    let state = info.state();
    if force {
        return Ok(());
    }
    match state {
        SlotState::Empty => Err(format!("slot {slot} is empty: there is nothing to boot (use --force to try anyway)")),
        SlotState::Bad => Err(format!(
            "slot {slot} (version {}) is marked bad: its last try failed (use --force to try it again)",
            info.version
        )),
        _ => Ok(()),
    }
}

pub fn record_once(rec: &mut MetaRecord, slot: Slot) {
    // A try of the other slot that never booted is replaced: that slot
    // goes back to good (it was good, or it could not have been tried).
    if let Some(other) = rec.pending_slot().filter(|s| *s != slot) {
        if rec.slot_info(other).state() == SlotState::Trying {
            rec.slot_info_mut(other).state = SlotState::Good as i32;
        }
    }
    let info = rec.slot_info(slot);
    let attempts = rec
        .pending_try
        .as_ref()
        .filter(|p| p.slot().slot() == Some(slot))
        .map_or(0, |p| p.attempts)
        + 1;
    rec.pending_try = Some(PendingTry {
        slot: SlotId::from(slot) as i32,
        version: info.version,
        attempts,
        kind: TryKind::Once as i32,
    });
    rec.slot_info_mut(slot).state = SlotState::Trying as i32;
}

pub fn record_default(rec: &mut MetaRecord, slot: Slot) {
    if rec.active() != Some(slot) {
        rec.previous_slot = rec.active_slot;
        rec.active_slot = SlotId::from(slot) as i32;
    }
}

/// The operator's boot request for a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootRequest {
    /// Boot it at the next boot only: a try.
    Once,
    /// Boot it by default from now on.
    SetDefault,
}

impl BootRequest {
    pub fn label(self) -> &'static str {
        match self {
            BootRequest::Once => "once",
            BootRequest::SetDefault => "set-default",
        }
    }
}

/// One slot as `Slots::status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotView {
    pub slot: Slot,
    pub version: String,
    pub state: SlotState,
}

/// The slots, the record and the loader's view, for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootStatus {
    pub loader: &'static str,
    /// From the kernel command line, never from the loader.
    pub booted: Slot,
    /// None where the loader's state could not be read.
    pub default: Option<Slot>,
    pub once: Option<Slot>,
    pub pending_try: Option<Slot>,
    pub slots: Vec<SlotView>,
    pub loader_entry: Option<String>,
    pub last_failure: Option<Failure>,
}

/// Why a boot request was not carried out.
#[derive(Debug, thiserror::Error)]
pub enum BootControlError {
    /// The slot's state forbids it unless forced; nothing changed.
    #[error("{0}")]
    NotBootable(String),
    /// META could not be written; nothing changed.
    #[error(transparent)]
    Record(SlotsError),
    /// The loader refused; META was restored, unless `undo` says otherwise.
    #[error("{error}{}", undo.as_ref().map(|u| format!("; restoring META also failed: {u}")).unwrap_or_default())]
    Loader {
        error: adapter::AdapterError,
        // Boxed: the rare double failure should not size every result.
        undo: Option<Box<SlotsError>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum SlotsError {
    #[error("partition {0} not found")]
    NoPartition(&'static str),
    #[error("cannot open META {path}: {err}")]
    OpenMeta { path: PathBuf, err: std::io::Error },
    #[error("META {path}: {err}")]
    Meta { path: PathBuf, err: meta::MetaError },
    #[error(
        "no bootloader configuration on the ESP at {0} (neither {grub} nor {sd})",
        grub = layout::ESP_GRUB_CFG,
        sd = layout::ESP_LOADER_CONF
    )]
    NoLoader(PathBuf),
    #[error(transparent)]
    Loader(#[from] adapter::AdapterError),
}

/// Where the META record is kept: the META partition, or a fake in tests.
pub trait RecordStore {
    fn save(&mut self, record: &MetaRecord) -> Result<(), SlotsError>;
}

/// META on its partition: two CRC'd copies, written in turn.
pub struct MetaPartition {
    path: PathBuf,
    file: File,
}

impl RecordStore for MetaPartition {
    fn save(&mut self, record: &MetaRecord) -> Result<(), SlotsError> {
        meta::write_meta(&self.file, &MetaLayout::DEFAULT, record)
            .map(|_| ())
            .map_err(|err| SlotsError::Meta {
                path: self.path.clone(),
                err,
            })
    }
}

pub struct Slots {
    pub booted: Slot,
    store: Box<dyn RecordStore>,
    loader: Box<dyn BootLoader>,
    pub record: MetaRecord,
}

/// Reads META from its partition (for the initramfs stage, read-only).
pub fn read_record() -> Option<MetaRecord> {
    let dev = blockdev::find_on_boot_disk(layout::LABEL_META)?;
    let f = File::open(dev).ok()?;
    match meta::read_meta(&f, &MetaLayout::DEFAULT).ok()? {
        MetaState::Record(r) => Some(r.record),
        MetaState::Blank => None,
    }
}

impl Slots {
    /// Opens META and the loader of the ESP at `esp`, and settles the
    /// record with what booted. Returns the slots and what it did, for the log.
    pub fn open(
        booted: Slot,
        own_version: &str,
        esp: &Path,
        now_secs: u64,
    ) -> Result<(Slots, Vec<String>), SlotsError> {
        let meta_path = blockdev::find_on_boot_disk(layout::LABEL_META)
            .ok_or(SlotsError::NoPartition(layout::LABEL_META))?;
        let meta = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&meta_path)
            .map_err(|err| SlotsError::OpenMeta {
                path: meta_path.clone(),
                err,
            })?;
        let mut notes = Vec::new();
        let mut record = match meta::read_meta(&meta, &MetaLayout::DEFAULT) {
            Ok(MetaState::Record(r)) => r.record,
            Ok(MetaState::Blank) => {
                notes.push("META is blank: starting a new record".to_owned());
                let mut r = MetaRecord::fresh(booted, own_version);
                // A slot with a kernel on the ESP was installed with the image.
                let other = booted.other();
                if esp
                    .join(
                        other
                            .esp_path(layout::ESP_KERNEL_NAME)
                            .trim_start_matches('/'),
                    )
                    .exists()
                {
                    r.slot_info_mut(other).state = SlotState::Good as i32;
                }
                r
            }
            Err(e) => {
                notes.push(format!("META unreadable ({e}): starting a new record"));
                MetaRecord::fresh(booted, own_version)
            }
        };
        let loader: Box<dyn BootLoader> = match LoaderKind::detect(esp) {
            Some(LoaderKind::Grub) => Box::new(adapter::Grub::new(esp)),
            Some(LoaderKind::SdBoot) => Box::new(adapter::SdBoot::new(esp, EfiVarStore::system())),
            None => return Err(SlotsError::NoLoader(esp.to_owned())),
        };
        if let Ok(Some(entry)) = loader.state().map(|s| s.selected) {
            let stem = bascule_boot::bls::entry_stem(booted);
            if !entry.starts_with(&stem) {
                notes.push(format!(
                    "the loader reports entry {entry} but the kernel command line says slot {booted}: trusting the command line"
                ));
            }
        }
        let ops = at_boot(&mut record, booted, own_version, now_secs);
        let store = Box::new(MetaPartition {
            path: meta_path,
            file: meta,
        });
        let mut slots = Slots::with_parts(booted, record, store, loader);
        if let Some(f) = &slots.record.last_failure {
            if ops.iter().any(|o| matches!(o, LoaderOp::MarkBad(_))) {
                notes.push(f.reason.clone());
            }
        }
        notes.extend(slots.apply(ops));
        slots.save()?;
        Ok((slots, notes))
    }

    /// Slots over a record already settled for this boot.
    pub fn with_parts(
        booted: Slot,
        record: MetaRecord,
        store: Box<dyn RecordStore>,
        loader: Box<dyn BootLoader>,
    ) -> Slots {
        Slots {
            booted,
            store,
            loader,
            record,
        }
    }

    fn apply(&mut self, ops: Vec<LoaderOp>) -> Vec<String> {
        let mut errors = Vec::new();
        for op in ops {
            let r = match op {
                LoaderOp::Confirm(s) => self.loader.confirm(s),
                LoaderOp::MarkBad(s) => self.loader.mark_bad(s),
                LoaderOp::SetDefault(s) => self.loader.set_default(s),
            };
            if let Err(e) = r {
                errors.push(format!("{}: {op:?}: {e}", self.loader.kind().label()));
            }
        }
        errors
    }

    fn save(&mut self) -> Result<(), SlotsError> {
        self.store.save(&self.record)
    }

    /// Replaces the record (an upgrade's own decisions) and saves it.
    pub fn replace_record(&mut self, record: MetaRecord) -> Result<(), SlotsError> {
        let before = std::mem::replace(&mut self.record, record);
        self.save().inspect_err(|_| self.record = before)
    }

    /// The loader's boot-once entry alone; META is the caller's business.
    pub fn loader_set_once(&mut self, slot: Slot) -> Result<(), adapter::AdapterError> {
        self.loader.set_once(slot)
    }

    /// The loader's default entry alone; META is the caller's business.
    pub fn loader_set_default(&mut self, slot: Slot) -> Result<(), adapter::AdapterError> {
        self.loader.set_default(slot)
    }

    /// All services are ready: a try of this slot has passed.
    pub fn all_ready(&mut self) -> Vec<String> {
        let ops = on_ready(&mut self.record, self.booted);
        if ops.is_empty() {
            return Vec::new();
        }
        let mut notes = vec![format!("slot {} confirmed: its try passed", self.booted)];
        notes.extend(self.apply(ops));
        if let Err(e) = self.save() {
            notes.push(e.to_string());
        }
        notes
    }

    /// The self-check failed: see [`on_self_check_failed`]. Returns what
    /// to log; the caller reboots.
    pub fn self_check_failed(&mut self, reason: &str, now_secs: u64) -> Vec<String> {
        let ops = on_self_check_failed(&mut self.record, self.booted, reason, now_secs);
        if ops.is_empty() {
            return Vec::new();
        }
        let mut notes = vec![format!("slot {} failed its try: {reason}", self.booted)];
        notes.extend(self.apply(ops));
        if let Err(e) = self.save() {
            notes.push(e.to_string());
        }
        notes
    }

    pub fn status(&self) -> BootStatus {
        let state = self.loader.state().ok();
        BootStatus {
            loader: self.loader.kind().label(),
            booted: self.booted,
            default: state.as_ref().map(|s| s.default),
            once: state.as_ref().and_then(|s| s.once),
            pending_try: self.record.pending_slot(),
            slots: Slot::ALL
                .into_iter()
                .map(|s| {
                    let info = self.record.slot_info(s);
                    SlotView {
                        slot: s,
                        version: info.version.clone(),
                        state: info.state(),
                    }
                })
                .collect(),
            loader_entry: state.and_then(|s| s.selected),
            last_failure: self.record.last_failure.clone(),
        }
    }

    /// The operator's boot-once or set-default.
    pub fn control(
        &mut self,
        action: BootRequest,
        slot: Slot,
        force: bool,
    ) -> Result<BootStatus, BootControlError> {
        check_bootable(&self.record, slot, force).map_err(BootControlError::NotBootable)?;
        let before = self.record.clone();
        match action {
            BootRequest::Once => record_once(&mut self.record, slot),
            BootRequest::SetDefault => {
                record_default(&mut self.record, slot);
                if self.record.slot_info(slot).state() == SlotState::Bad {
                    // Forced: the operator vouches for it.
                    self.record.slot_info_mut(slot).state = SlotState::Good as i32;
                }
            }
        }
        // META first: a try the loader will boot must be on record, or its
        // failure could never be noticed.
        if let Err(e) = self.save() {
            self.record = before;
            return Err(BootControlError::Record(e));
        }
        let loader = match action {
            BootRequest::Once => self.loader.set_once(slot),
            BootRequest::SetDefault => self.loader.set_default(slot),
        };
        if let Err(error) = loader {
            self.record = before;
            let undo = self.save().err().map(Box::new);
            return Err(BootControlError::Loader { error, undo });
        }
        Ok(self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_good() -> MetaRecord {
        let mut r = MetaRecord::fresh(Slot::A, "1.0");
        *r.slot_info_mut(Slot::B) = bascule_boot::meta_record::SlotInfo {
            version: "2.0".into(),
            state: SlotState::Good as i32,
            ..Default::default()
        };
        r
    }

    #[test]
    fn a_try_that_boots_is_confirmed_when_ready() {
        let mut r = two_good();
        check_bootable(&r, Slot::B, false).unwrap();
        record_once(&mut r, Slot::B);
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Trying);
        assert_eq!(at_boot(&mut r, Slot::B, "2.0", 10), vec![]);
        assert_eq!(
            r.pending_slot(),
            Some(Slot::B),
            "pending until the services are ready"
        );
        assert_eq!(on_ready(&mut r, Slot::B), vec![LoaderOp::Confirm(Slot::B)]);
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Good);
        assert_eq!(r.pending_slot(), None);
        assert_eq!(
            on_ready(&mut r, Slot::B),
            vec![],
            "nothing to confirm twice"
        );
    }

    #[test]
    fn a_fallback_marks_the_tried_slot_bad_and_refuses_it() {
        let mut r = two_good();
        record_once(&mut r, Slot::B);
        // The loader booted A: B's try never completed.
        assert_eq!(
            at_boot(&mut r, Slot::A, "1.0", 42),
            vec![LoaderOp::MarkBad(Slot::B)]
        );
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Bad);
        let f = r.last_failure.clone().unwrap();
        assert_eq!(f.slot(), SlotId::B);
        assert_eq!(f.at_unix_secs, 42);
        assert!(f.reason.contains("slot A booted instead"), "{}", f.reason);
        let e = check_bootable(&r, Slot::B, false).unwrap_err();
        assert!(e.contains("marked bad") && e.contains("--force"), "{e}");
        check_bootable(&r, Slot::B, true).unwrap();
    }

    #[test]
    fn empty_slots_are_refused_and_defaults_recorded() {
        let mut r = MetaRecord::fresh(Slot::A, "1.0");
        assert!(check_bootable(&r, Slot::B, false)
            .unwrap_err()
            .contains("empty"));
        record_default(&mut r, Slot::B);
        assert_eq!(r.active(), Some(Slot::B));
        assert_eq!(r.previous(), Some(Slot::A));
        let again = r.clone();
        record_default(&mut r, Slot::B);
        assert_eq!(r, again);
    }

    #[test]
    fn an_upgrade_try_becomes_the_default_when_confirmed() {
        let mut r = two_good();
        record_once(&mut r, Slot::B);
        if let Some(p) = r.pending_try.as_mut() {
            p.kind = TryKind::Upgrade as i32;
        }
        assert_eq!(
            on_ready(&mut r, Slot::B),
            vec![LoaderOp::Confirm(Slot::B), LoaderOp::SetDefault(Slot::B)]
        );
        assert_eq!(r.active(), Some(Slot::B));
        assert_eq!(r.previous(), Some(Slot::A));
    }

    #[test]
    fn a_replaced_try_leaves_its_slot_good() {
        let mut r = two_good();
        record_once(&mut r, Slot::B);
        record_once(&mut r, Slot::A);
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Good);
        assert_eq!(r.pending_slot(), Some(Slot::A));
    }

    #[test]
    fn a_failed_self_check_marks_the_tried_slot_bad_and_names_why() {
        let mut r = two_good();
        record_once(&mut r, Slot::B);
        assert!(at_boot(&mut r, Slot::B, "2", 5).is_empty());
        let ops = on_self_check_failed(&mut r, Slot::B, "gate (not ready)", 9);
        assert_eq!(ops, vec![LoaderOp::MarkBad(Slot::B)]);
        assert_eq!(r.pending_slot(), None);
        assert_eq!(r.slot_info(Slot::B).state(), SlotState::Bad);
        let f = r.last_failure.clone().unwrap();
        assert_eq!(
            (f.slot().slot(), f.reason.as_str()),
            (Some(Slot::B), "gate (not ready)")
        );
        assert_eq!(
            r.active(),
            Some(Slot::A),
            "the default stays where the try came from"
        );
        // Back on A: nothing pending, B stays bad and refused.
        assert!(at_boot(&mut r, Slot::A, "1", 20).is_empty());
        assert!(check_bootable(&r, Slot::B, false).is_err());
        // Not being tried: nothing to fail.
        assert!(on_self_check_failed(&mut r, Slot::A, "x", 30).is_empty());
    }

    #[test]
    fn repeated_tries_count_attempts() {
        let mut r = two_good();
        record_once(&mut r, Slot::B);
        record_once(&mut r, Slot::B);
        assert_eq!(r.pending_try.as_ref().unwrap().attempts, 2);
        assert_eq!(r.pending_try.as_ref().unwrap().version, "2.0");
    }
}
