//! The slot keeper: decides, from what the supervisor reports, when the
//! try of the booted slot has passed, and tells the slots so once.

use crate::slots::Slots;

use crate::slots::SlotsError;

/// Why this machine's boot slots are not managed here (the boot API's answer).
#[derive(Debug, thiserror::Error)]
pub enum Unmanaged {
    #[error("boot slots are managed only by PID 1 of a machine booted from a Bascule disk")]
    NotPid1,
    #[error("no valid bascule.slot= on the kernel command line: not booted from a Bascule disk")]
    NoBootedSlot,
    #[error("boot slots unavailable: {0}")]
    Unavailable(#[from] SlotsError),
}

/// What the supervisor says once every service has settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Every service is running (or exited successfully) and ready.
    AllUp,
    /// A service failed or a service file was rejected.
    SomeFailed,
}

pub struct SlotKeeper {
    slots: Result<Slots, Unmanaged>,
}

impl SlotKeeper {
    pub fn new(slots: Result<Slots, Unmanaged>) -> Self {
        SlotKeeper { slots }
    }

    pub fn unmanaged() -> Self {
        SlotKeeper {
            slots: Err(Unmanaged::NotPid1),
        }
    }

    pub fn slots(&self) -> Result<&Slots, &Unmanaged> {
        self.slots.as_ref()
    }

    pub fn slots_mut(&mut self) -> Result<&mut Slots, &Unmanaged> {
        self.slots.as_mut().map_err(|e| &*e)
    }

    /// The services settled for the first time this boot: a try of the
    /// booted slot passes only when all of them are up. Returns what to log.
    pub fn on_settled(&mut self, settled: Settled) -> Vec<String> {
        let Ok(slots) = &mut self.slots else {
            return Vec::new();
        };
        match settled {
            Settled::AllUp => slots.all_ready(),
            Settled::SomeFailed if slots.record.pending_slot() == Some(slots.booted) => vec![format!(
                "slot {} is not confirmed: a service failed or was rejected; its try stays pending and fails at the next boot",
                slots.booted
            )],
            Settled::SomeFailed => Vec::new(),
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A boot loader and a META store that record what they were told.

    use std::cell::RefCell;
    use std::rc::Rc;

    use bascule_boot::adapter::{AdapterError, BootLoader, LoaderKind, LoaderState};
    use bascule_boot::meta_record::MetaRecord;
    use bascule_boot::Slot;

    use bascule_boot::meta_record::SlotState;

    use super::SlotKeeper;
    use crate::slots::{at_boot, record_once, RecordStore, Slots, SlotsError};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum LoaderCall {
        Once(Slot),
        Default(Slot),
        Confirm(Slot),
        MarkBad(Slot),
    }

    #[derive(Clone, Default)]
    pub struct FakeLoader(pub Rc<RefCell<Vec<LoaderCall>>>);

    impl BootLoader for FakeLoader {
        fn kind(&self) -> LoaderKind {
            LoaderKind::Grub
        }
        fn state(&self) -> Result<LoaderState, AdapterError> {
            Ok(LoaderState {
                default: Slot::A,
                once: None,
                trying: None,
                selected: None,
            })
        }
        fn set_once(&mut self, slot: Slot) -> Result<(), AdapterError> {
            self.0.borrow_mut().push(LoaderCall::Once(slot));
            Ok(())
        }
        fn set_default(&mut self, slot: Slot) -> Result<(), AdapterError> {
            self.0.borrow_mut().push(LoaderCall::Default(slot));
            Ok(())
        }
        fn confirm(&mut self, slot: Slot) -> Result<(), AdapterError> {
            self.0.borrow_mut().push(LoaderCall::Confirm(slot));
            Ok(())
        }
        fn mark_bad(&mut self, slot: Slot) -> Result<(), AdapterError> {
            self.0.borrow_mut().push(LoaderCall::MarkBad(slot));
            Ok(())
        }
    }

    /// Slot B being tried, as PID 1 of B finds it at boot.
    pub fn trying_b() -> (SlotKeeper, FakeLoader, FakeStore) {
        let mut r = MetaRecord::fresh(Slot::A, "1.0");
        r.slot_info_mut(Slot::B).state = SlotState::Good as i32;
        record_once(&mut r, Slot::B);
        assert!(at_boot(&mut r, Slot::B, "2.0", 1).is_empty());
        let loader = FakeLoader::default();
        let store = FakeStore::default();
        let slots = Slots::with_parts(
            Slot::B,
            r,
            Box::new(store.clone()),
            Box::new(loader.clone()),
        );
        (SlotKeeper::new(Ok(slots)), loader, store)
    }

    /// Every record saved, newest last.
    #[derive(Clone, Default)]
    pub struct FakeStore(pub Rc<RefCell<Vec<MetaRecord>>>);

    impl RecordStore for FakeStore {
        fn save(&mut self, record: &MetaRecord) -> Result<(), SlotsError> {
            self.0.borrow_mut().push(record.clone());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use bascule_boot::meta_record::SlotState;
    use bascule_boot::Slot;

    use super::fake::{trying_b, LoaderCall};
    use super::*;

    #[test]
    fn a_try_is_confirmed_when_all_services_are_up_and_not_before() {
        let (mut keeper, loader, store) = trying_b();
        let notes = keeper.on_settled(Settled::SomeFailed);
        assert!(notes[0].contains("not confirmed"), "{notes:?}");
        assert!(loader.0.borrow().is_empty());
        assert!(store.0.borrow().is_empty());
        let notes = keeper.on_settled(Settled::AllUp);
        assert!(notes[0].contains("slot B confirmed"), "{notes:?}");
        assert_eq!(*loader.0.borrow(), vec![LoaderCall::Confirm(Slot::B)]);
        let saved = store.0.borrow().last().cloned().unwrap();
        assert_eq!(saved.pending_slot(), None);
        assert_eq!(saved.slot_info(Slot::B).state(), SlotState::Good);
    }

    #[test]
    fn an_unmanaged_machine_confirms_nothing() {
        let mut keeper = SlotKeeper::unmanaged();
        assert!(keeper.on_settled(Settled::AllUp).is_empty());
        assert!(matches!(keeper.slots().err(), Some(Unmanaged::NotPid1)));
    }
}
