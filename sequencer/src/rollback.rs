//! Manual rollback: make the other slot the default, if it is known good,
//! and reboot through the firmware (a kexec would not make the change
//! stick: the loader's default is what the firmware boots).

use crate::clock::Clock;
use crate::host::{Host, RebootMode};
use crate::journal::{Journal, Note, Phase, RunKind};
use crate::options::RunMode;
use crate::outcome::{Finished, LoaderChange, MetaChange, Outcome, PhaseError, Recovery, Refusal};
use crate::progress::Progress;
use crate::run::{Run, Stop};
use crate::verify::check_no_pending_try;
use bascule_boot::meta_record::{MetaRecord, SlotId, SlotState};
use bascule_boot::Slot;

/// Switches the default to the other slot and reboots. Refused when that
/// slot is not known good (empty, bad, being written or tried, or with no
/// recorded version) or a try is pending. There is no force: a slot that
/// is not known good is exactly what a rollback must not boot by default.
pub fn rollback<H: Host + ?Sized, C: Clock + ?Sized>(
    host: &mut H,
    clock: &C,
    progress: &mut dyn Progress,
) -> Finished {
    let running = host.running();
    let journal = Journal::new(
        RunKind::Rollback,
        clock.unix_ms(),
        running.slot,
        &running.version,
    );
    let mut run = Run::new(host, clock, progress, journal, RunMode::Apply);

    let checked = run.phase(Phase::Verify, |r| {
        let booted = running.slot.ok_or(Refusal::NotBootedFromSlot)?;
        let target = booted.other();
        r.journal.to_slot = Some(target);
        let meta = r.host.read_meta().map_err(PhaseError::ReadMeta)?;
        check_no_pending_try(&meta)?;
        let info = meta.slot_info(target);
        if info.state() != SlotState::Good || info.version.is_empty() {
            return Err(Refusal::RollbackTargetNotGood {
                target,
                state: info.state(),
                version: info.version,
            }
            .into());
        }
        r.journal.to_version = Some(info.version);
        Ok((booted, target, meta))
    });
    let (booted, target, meta) = match checked {
        Ok(c) => c,
        Err(stop) => return run.stopped(Phase::Verify, stop, Recovery::NothingChanged),
    };

    let switched = run.phase(Phase::SwitchDefault, |r| {
        switch_default(r, &meta, booted, target)
    });
    if let Err(stop) = switched {
        return run.stopped(Phase::SwitchDefault, stop, Recovery::NothingChanged);
    }

    let rebooted = run.phase(Phase::Reboot, |r| {
        r.note(Note::RebootRequested {
            mode: RebootMode::Firmware,
        });
        r.save();
        r.host
            .reboot(RebootMode::Firmware)
            .map_err(|source| PhaseError::Reboot {
                mode: RebootMode::Firmware,
                source,
            })?;
        Ok(())
    });
    match rebooted {
        Ok(()) => run.finish(Outcome::Rebooting(RebootMode::Firmware)),
        Err(stop) => run.stopped(Phase::Reboot, stop, Recovery::RebootPending),
    }
}

/// META first, then the loader; a loader failure puts META back, so the
/// two never disagree about the default for long.
fn switch_default<H: Host + ?Sized, C: Clock + ?Sized>(
    r: &mut Run<'_, H, C>,
    meta: &MetaRecord,
    booted: Slot,
    target: Slot,
) -> Result<(), Stop> {
    let mut switched = meta.clone();
    switched.active_slot = SlotId::from(target) as i32;
    switched.previous_slot = SlotId::from(booted) as i32;
    r.host
        .write_meta(&switched)
        .map_err(|source| PhaseError::WriteMeta {
            what: MetaChange::SwitchActive(target),
            source,
        })?;
    if let Err(source) = r.host.loader_set_default(target) {
        // Best effort; the loader error is the one to report.
        let _restored = r.host.write_meta(meta);
        return Err(PhaseError::Loader {
            what: LoaderChange::Default,
            slot: target,
            source,
        }
        .into());
    }
    Ok(())
}
