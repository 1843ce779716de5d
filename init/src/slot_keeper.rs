//! The slot keeper: decides, from what the supervisor reports, when the
//! try of the booted slot has passed, and tells the slots so once; and
//! runs the try's self-check deadline, past which the try fails and the
//! machine reboots into the slot it came from.

use std::time::{Duration, Instant};

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

/// Where the self-check of this boot's try stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SelfCheck {
    /// No try of the booted slot: nothing to check.
    NotTrying,
    /// Every service must be up before the deadline.
    Running {
        deadline: Instant,
    },
    Passed,
    Failed,
}

/// What the loop must do after the self-check deadline.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing yet.
    Wait,
    /// The try failed and is recorded: reboot into the default slot. The
    /// notes say why, for the log.
    Reboot(Vec<String>),
}

pub struct SlotKeeper {
    slots: Result<Slots, Unmanaged>,
    limit: Duration,
    check: SelfCheck,
}

impl SlotKeeper {
    /// `limit`: how long a try has to get every service up.
    pub fn new(slots: Result<Slots, Unmanaged>, limit: Duration) -> Self {
        SlotKeeper {
            slots,
            limit,
            check: SelfCheck::NotTrying,
        }
    }

    pub fn unmanaged() -> Self {
        SlotKeeper {
            slots: Err(Unmanaged::NotPid1),
            limit: Duration::ZERO,
            check: SelfCheck::NotTrying,
        }
    }

    /// The services are starting: a try of the booted slot starts its
    /// deadline now. Returns what to log.
    pub fn start(&mut self, now: Instant) -> Option<String> {
        let slots = self.slots.as_ref().ok()?;
        if slots.record.pending_slot() != Some(slots.booted) {
            return None;
        }
        self.check = SelfCheck::Running {
            deadline: now + self.limit,
        };
        Some(format!(
            "slot {} is being tried: every service must be up within {}s or the machine reboots into the slot it came from",
            slots.booted,
            self.limit.as_secs()
        ))
    }

    /// When the loop must call [`Self::on_timer`].
    pub fn deadline(&self) -> Option<Instant> {
        match self.check {
            SelfCheck::Running { deadline } => Some(deadline),
            _ => None,
        }
    }

    /// The timer fired: past the deadline, the try fails naming
    /// `not_up` (the services that are not up, with why).
    pub fn on_timer(&mut self, now: Instant, now_secs: u64, not_up: &[String]) -> Verdict {
        let SelfCheck::Running { deadline } = self.check else {
            return Verdict::Wait;
        };
        if now < deadline {
            return Verdict::Wait;
        }
        self.check = SelfCheck::Failed;
        let Ok(slots) = &mut self.slots else {
            return Verdict::Wait;
        };
        let who = if not_up.is_empty() {
            "the services did not settle".to_owned()
        } else {
            format!("not up: {}", not_up.join(", "))
        };
        let reason = format!(
            "the self-check of slot {} failed: {who} {}s after boot",
            slots.booted,
            self.limit.as_secs()
        );
        let mut notes = slots.self_check_failed(&reason, now_secs);
        notes.push(format!(
            "rebooting into the default slot {}",
            slots.booted.other()
        ));
        Verdict::Reboot(notes)
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
            Settled::AllUp if self.check != SelfCheck::Failed => {
                if matches!(self.check, SelfCheck::Running { .. }) {
                    self.check = SelfCheck::Passed;
                }
                slots.all_ready()
            }
            Settled::AllUp => Vec::new(),
            Settled::SomeFailed if slots.record.pending_slot() == Some(slots.booted) => vec![format!(
                "slot {} is not confirmed yet: a service failed or was rejected; the try fails at the self-check deadline unless it recovers",
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
        (
            SlotKeeper::new(Ok(slots), std::time::Duration::from_secs(60)),
            loader,
            store,
        )
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
    fn a_try_not_up_by_its_deadline_fails_naming_the_services() {
        let (mut keeper, loader, store) = trying_b();
        let t0 = Instant::now();
        assert!(keeper.start(t0).unwrap().contains("within 60s"));
        assert_eq!(keeper.deadline(), Some(t0 + Duration::from_secs(60)));
        let gate = ["gate (not ready)".to_owned()];
        assert_eq!(
            keeper.on_timer(t0 + Duration::from_secs(59), 1, &gate),
            Verdict::Wait
        );
        assert!(loader.0.borrow().is_empty());
        let Verdict::Reboot(notes) = keeper.on_timer(t0 + Duration::from_secs(60), 1, &gate) else {
            panic!("expected a reboot");
        };
        assert!(
            notes.iter().any(|n| n.contains("not up: gate (not ready)")),
            "{notes:?}"
        );
        assert_eq!(*loader.0.borrow(), vec![LoaderCall::MarkBad(Slot::B)]);
        let saved = store.0.borrow().last().cloned().unwrap();
        assert_eq!(saved.slot_info(Slot::B).state(), SlotState::Bad);
        assert!(saved.last_failure.unwrap().reason.contains("gate"));
        assert_eq!(keeper.deadline(), None);
        // Too late to confirm now.
        assert!(keeper.on_settled(Settled::AllUp).is_empty());
        assert_eq!(loader.0.borrow().len(), 1);
    }

    #[test]
    fn a_confirmed_try_has_no_deadline_left() {
        let (mut keeper, loader, _) = trying_b();
        let t0 = Instant::now();
        keeper.start(t0);
        keeper.on_settled(Settled::AllUp);
        assert_eq!(keeper.deadline(), None);
        assert_eq!(
            keeper.on_timer(t0 + Duration::from_secs(600), 1, &[]),
            Verdict::Wait
        );
        assert_eq!(*loader.0.borrow(), vec![LoaderCall::Confirm(Slot::B)]);
    }

    #[test]
    fn an_unmanaged_machine_confirms_nothing() {
        let mut keeper = SlotKeeper::unmanaged();
        assert!(keeper.on_settled(Settled::AllUp).is_empty());
        assert!(matches!(keeper.slots().err(), Some(Unmanaged::NotPid1)));
    }
}
