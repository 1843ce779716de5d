//! Phases 9 and 10: record the try, arm the loader when the next boot goes
//! through it, and reboot.
//!
//! A kexec skips the loader, so a boot-once entry set before it would
//! still be waiting at the next reset: in kexec mode the loader is left
//! alone and the kexec is the single try. The boot-once entry is set only
//! when the firmware will boot next: firmware mode, a staged upgrade, or
//! the fallback when the kexec cannot be prepared.

use crate::clock::Clock;
use crate::host::{Host, KexecError, RebootMode};
use crate::journal::{KexecProblem, Note};
use crate::outcome::{LoaderChange, MetaChange, PhaseError};
use crate::run::{Run, Stop};
use crate::verify::Verified;
use bascule_boot::meta_record::{PendingTry, SlotId, SlotState, TryKind};

impl<H: Host + ?Sized, C: Clock + ?Sized> Run<'_, H, C> {
    /// Phase 9.
    pub(crate) fn boot_once(&mut self, v: &Verified, mode: RebootMode) -> Result<(), Stop> {
        let slot = v.target;
        let version = v.version.clone();
        let mut meta = self.host.read_meta().map_err(PhaseError::ReadMeta)?;
        meta.pending_try = Some(PendingTry {
            slot: SlotId::from(slot) as i32,
            version: version.clone(),
            // The one boot this try allows, as the slot keeper's own
            // boot-once requests count it.
            attempts: 1,
            kind: TryKind::Upgrade as i32,
        });
        let info = meta.slot_info_mut(slot);
        info.version.clone_from(&version);
        info.set_state(SlotState::Trying);
        info.prepared.clear();
        self.host
            .write_meta(&meta)
            .map_err(|source| PhaseError::WriteMeta {
                what: MetaChange::RecordTry(slot),
                source,
            })?;
        self.note(Note::TryRecorded { slot, version });
        if mode == RebootMode::Firmware {
            self.set_once(v)?;
        }
        Ok(())
    }

    fn set_once(&mut self, v: &Verified) -> Result<(), Stop> {
        let slot = v.target;
        if let Err(source) = self.host.loader_set_once(slot) {
            self.withdraw_try(v);
            return Err(PhaseError::Loader {
                what: LoaderChange::BootOnce,
                slot,
                source,
            }
            .into());
        }
        self.note(Note::BootOnceSet { slot });
        Ok(())
    }

    /// Puts META back to "slot being written" after a failure that leaves
    /// the loader not armed, so the old slot's keeper does not count a try
    /// that never happened. Best effort: the failure being reported matters
    /// more than this one.
    fn withdraw_try(&mut self, v: &Verified) {
        let slot = v.target;
        let result = self.host.read_meta().and_then(|mut meta| {
            meta.pending_try = None;
            let info = meta.slot_info_mut(slot);
            info.version.clear();
            info.set_state(SlotState::Empty);
            self.host.write_meta(&meta)
        });
        match result {
            Ok(()) => self.note(Note::TryWithdrawn { slot }),
            Err(e) => self.note(Note::TryNotWithdrawn {
                error: e.to_string(),
            }),
        }
    }

    /// Phase 10; returns the mode actually requested.
    pub(crate) fn reboot(&mut self, v: &Verified, mode: RebootMode) -> Result<RebootMode, Stop> {
        if mode == RebootMode::Kexec {
            match self.try_kexec(v) {
                Ok(()) => return Ok(RebootMode::Kexec),
                Err(note) => self.note(note),
            }
            // The kexec was to be the try; now the firmware's boot is.
            self.set_once(v)?;
        }
        self.note(Note::RebootRequested {
            mode: RebootMode::Firmware,
        });
        self.save();
        self.host
            .reboot(RebootMode::Firmware)
            .map_err(|source| PhaseError::Reboot {
                mode: RebootMode::Firmware,
                source,
            })?;
        Ok(RebootMode::Firmware)
    }

    /// A prepared slot's kernel is on the ESP already: loading it while
    /// every service still runs keeps the load (1-2 s under TCG) out of
    /// the downtime. A failure is only noted by the reboot phase, which
    /// loads again (and falls back to the firmware).
    pub(crate) fn preload_kexec(&mut self, v: &Verified) {
        if self.host.kexec_load(v.target, &v.version).is_ok() {
            self.kexec_preloaded = true;
            self.note(Note::KexecPreloaded { slot: v.target });
        }
    }

    /// Loads and starts the kexec; the note says why not.
    fn try_kexec(&mut self, v: &Verified) -> Result<(), Note> {
        let problem = |problem, error: String| Note::KexecUnavailable { problem, error };
        let loaded = if self.kexec_preloaded {
            Ok(())
        } else {
            self.host.kexec_load(v.target, &v.version)
        };
        match loaded {
            Ok(()) => {}
            Err(e @ KexecError::Refused { .. }) => {
                return Err(problem(KexecProblem::Refused, e.to_string()))
            }
            Err(e @ KexecError::Failed(_)) => {
                return Err(problem(KexecProblem::LoadFailed, e.to_string()))
            }
        }
        self.note(Note::RebootRequested {
            mode: RebootMode::Kexec,
        });
        self.save();
        self.host
            .reboot(RebootMode::Kexec)
            .map_err(|e| problem(KexecProblem::RebootFailed, e.to_string()))
    }
}
