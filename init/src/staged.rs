//! A staged upgrade, found at boot: META asks this boot to try a prepared
//! slot before any service starts and before /var is mounted. The request
//! is cleared from META before anything acts on it, so a staged upgrade
//! that fails (or a power cut while it runs) cannot loop: the boot after
//! that is an ordinary one.

use std::fs::OpenOptions;

use bascule_boot::meta::{self, MetaLayout, MetaState};
use bascule_boot::meta_record::{MetaRecord, StagedApply};
use bascule_boot::{layout, Slot};

use crate::log;
use bascule_sys::blockdev;

/// What the staged upgrade asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staged {
    pub slot: Slot,
    pub version: String,
    pub wipe_data: bool,
    pub firmware_reboot: bool,
}

/// What a boot of `booted` does with the record's staged request: takes it
/// out of `rec` (always: it is never kept for another boot) and returns it
/// when this boot is the one to apply it.
pub fn take(rec: &mut MetaRecord, booted: Slot) -> Option<Result<Staged, String>> {
    let s: StagedApply = rec.staged.take()?;
    let from = s.from_slot().slot();
    let slot = s.slot().slot();
    Some(match (from, slot) {
        (Some(f), Some(t)) if f == booted && t == booted.other() => Ok(Staged {
            slot: t,
            version: s.version,
            wipe_data: s.wipe_data,
            firmware_reboot: s.firmware_reboot,
        }),
        _ => Err(format!(
            "a staged upgrade to {} recorded by slot {} for slot {} does not apply to a boot of slot {booted}: dropped",
            s.version,
            from.map_or("-".into(), |s| s.to_string()),
            slot.map_or("-".into(), |s| s.to_string()),
        )),
    })
}

/// Reads META, clears a staged request and writes META back; returns the
/// request when this boot applies it. A request that cannot be cleared is
/// not applied.
pub fn take_from_disk(booted: Option<Slot>) -> Option<Staged> {
    let booted = booted?;
    let dev = blockdev::find_on_boot_disk(layout::LABEL_META)?;
    let file = OpenOptions::new().read(true).write(true).open(&dev).ok()?;
    let mut rec = match meta::read_meta(&file, &MetaLayout::DEFAULT) {
        Ok(MetaState::Record(r)) => r.record,
        _ => return None,
    };
    let found = take(&mut rec, booted)?;
    if let Err(e) = meta::write_meta(&file, &MetaLayout::DEFAULT, &rec) {
        log!(
            "staged upgrade: cannot clear it from META on {} ({e}): not applied; booting as usual",
            dev.display()
        );
        return None;
    }
    match found {
        Ok(s) => Some(s),
        Err(why) => {
            log!("{why}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bascule_boot::meta_record::SlotId;

    fn staged(from: Slot, to: Slot) -> MetaRecord {
        let mut r = MetaRecord::fresh(Slot::A, "1.0.0");
        r.staged = Some(StagedApply {
            from_slot: SlotId::from(from) as i32,
            slot: SlotId::from(to) as i32,
            version: "2.0.0".into(),
            wipe_data: true,
            firmware_reboot: false,
        });
        r
    }

    #[test]
    fn the_boot_of_the_staging_slot_takes_it_and_clears_it() {
        let mut r = staged(Slot::A, Slot::B);
        let s = take(&mut r, Slot::A).unwrap().unwrap();
        assert_eq!((s.slot, s.version.as_str()), (Slot::B, "2.0.0"));
        assert!(s.wipe_data && !s.firmware_reboot);
        assert!(r.staged.is_none(), "cleared before it runs");
        assert!(take(&mut r, Slot::A).is_none(), "the next boot is ordinary");
    }

    #[test]
    fn another_slots_boot_drops_it() {
        let mut r = staged(Slot::A, Slot::B);
        let e = take(&mut r, Slot::B).unwrap().unwrap_err();
        assert!(e.contains("does not apply to a boot of slot B"), "{e}");
        assert!(r.staged.is_none());
    }

    #[test]
    fn nothing_staged_is_nothing_to_do() {
        let mut r = MetaRecord::fresh(Slot::A, "1.0.0");
        assert!(take(&mut r, Slot::A).is_none());
    }
}
