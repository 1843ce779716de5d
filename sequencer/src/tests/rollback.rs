//! Manual rollback: only to a known-good slot, through the firmware.

use super::fake::{bundle, host_with, Events, Fail, FakeClock, FakeHost};
use crate::host::RebootMode;
use crate::journal::Phase;
use crate::outcome::{Finished, Outcome, Recovery, Refusal};
use bascule_boot::meta_record::{PendingTry, SlotId, SlotInfo, SlotState};
use bascule_boot::Slot;

fn rollback(host: &mut FakeHost) -> Finished {
    let clock = FakeClock::new();
    let mut events = Events::default();
    crate::rollback(host, &clock, &mut events)
}

fn machine() -> FakeHost {
    host_with(&bundle("2.0.0"))
}

#[test]
fn rollback_makes_the_good_other_slot_the_default_and_reboots_through_firmware() {
    let mut host = machine();
    let done = rollback(&mut host);
    assert!(
        matches!(done.outcome, Outcome::Rebooting(RebootMode::Firmware)),
        "{}",
        done.outcome
    );
    assert_eq!(
        host.changes(),
        ["write_meta", "set_default", "reboot(firmware)"]
    );
    assert!(host.calls.contains(&super::fake::Call::SetDefault(Slot::B)));
    assert_eq!(host.meta.active(), Some(Slot::B));
    assert_eq!(host.meta.previous(), Some(Slot::A));
    assert_eq!(done.journal.to_version.as_deref(), Some("0.9.0"));
    let phases: Vec<Phase> = done.journal.phases.iter().map(|p| p.phase).collect();
    assert_eq!(phases, [Phase::Verify, Phase::SwitchDefault, Phase::Reboot]);
}

fn refused(host: &mut FakeHost) -> Refusal {
    let before = host.meta.clone();
    let done = rollback(host);
    assert_eq!(host.changes(), Vec::<&str>::new());
    assert_eq!(host.meta, before);
    match done.outcome {
        Outcome::Refused(r) => r,
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn rollback_to_a_slot_that_is_not_known_good_is_refused() {
    for (state, version) in [
        (SlotState::Empty, ""),
        // Marked as being written by an interrupted upgrade.
        (SlotState::Empty, "0.9.0"),
        (SlotState::Bad, "0.9.0"),
        (SlotState::Trying, "0.9.0"),
        (SlotState::Good, ""),
        (SlotState::Unspecified, "0.9.0"),
    ] {
        let mut host = machine();
        *host.meta.slot_info_mut(Slot::B) = SlotInfo {
            version: version.into(),
            state: state as i32,
            ..Default::default()
        };
        let r = refused(&mut host);
        assert!(
            matches!(
                r,
                Refusal::RollbackTargetNotGood {
                    target: Slot::B,
                    ..
                }
            ),
            "{state:?} {version:?}: {r}"
        );
        assert!(r.to_string().contains("slot B"), "{r}");
    }
}

#[test]
fn rollback_with_a_pending_try_is_refused() {
    let mut host = machine();
    host.meta.pending_try = Some(PendingTry {
        slot: SlotId::B as i32,
        version: "2.0.0".into(),
        attempts: 0,
        kind: 0,
    });
    assert!(matches!(
        refused(&mut host),
        Refusal::TryPending { slot: Slot::B, .. }
    ));
}

#[test]
fn a_loader_failure_puts_meta_back() {
    let mut host = machine();
    host.fail.insert(Fail::SetDefault);
    let before = host.meta.clone();
    let done = rollback(&mut host);
    assert!(
        matches!(
            done.outcome,
            Outcome::Aborted {
                phase: Phase::SwitchDefault,
                recovery: Recovery::NothingChanged,
                ..
            }
        ),
        "{}",
        done.outcome
    );
    assert_eq!(host.meta, before);
    assert!(host.position("reboot(firmware)").is_none());
}
