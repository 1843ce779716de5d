//! Every enum value on either side of the wire maps to the value of the
//! same name, and no two variants share a wire value.

use std::fmt::Debug;
use std::time::Duration;

use bascule_boot::meta_record::{Failure, SlotId};
use bascule_services::spec::Class;
use bascule_services::Exit;

use super::*;
use crate::slots::{SlotView, SlotsError};

/// "SetDefault" -> "SET_DEFAULT", as protobuf spells enum values.
fn upper_snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Every value protobuf (or prost) knows for an enum.
fn values<P: TryFrom<i32>>() -> Vec<P> {
    (0..64).filter_map(|i| P::try_from(i).ok()).collect()
}

/// Each variant maps to the wire value of its own name, and the variants
/// cover `wire` exactly once each.
fn check<D: Debug + Copy, P: Debug + Copy + Ord>(
    prefix: &str,
    domain: &[D],
    map: impl Fn(D) -> P,
    name: impl Fn(P) -> &'static str,
    wire: Vec<P>,
) {
    let mut hit = Vec::new();
    for &d in domain {
        let p = map(d);
        let want = format!("{prefix}{}", upper_snake(&format!("{d:?}")));
        assert_eq!(name(p), want, "{d:?} maps to {p:?}");
        hit.push(p);
    }
    hit.sort();
    let mut wire = wire;
    wire.sort();
    assert_eq!(hit, wire, "each wire value comes from exactly one variant");
}

fn specified<P: PartialEq>(all: Vec<P>, unspecified: P) -> Vec<P> {
    all.into_iter().filter(|p| *p != unspecified).collect()
}

#[test]
fn every_service_state_maps_to_its_namesake() {
    check(
        "SERVICE_STATE_",
        &State::ALL,
        service_state,
        |p| p.as_str_name(),
        specified(values(), pb::ServiceState::Unspecified),
    );
}

#[test]
fn every_health_maps_to_its_namesake() {
    check(
        "HEALTH_",
        &Health::ALL,
        health,
        |p| p.as_str_name(),
        specified(values(), pb::Health::Unspecified),
    );
}

#[test]
fn every_readiness_maps_to_its_namesake() {
    check(
        "READINESS_",
        &ReadinessStatus::ALL,
        readiness,
        |p| p.as_str_name(),
        specified(values(), pb::Readiness::Unspecified),
    );
}

#[test]
fn every_log_stream_maps_to_its_namesake() {
    check(
        "LOG_STREAM_",
        &Stream::ALL,
        log_stream,
        |p| p.as_str_name(),
        specified(values(), pb::LogStream::Unspecified),
    );
}

#[test]
fn every_meta_slot_state_maps_to_its_namesake() {
    let meta: Vec<SlotState> = values();
    assert_eq!(meta.len(), 6, "a new META slot state needs a wire value");
    check(
        "SLOT_STATE_",
        &meta,
        slot_state,
        |p| p.as_str_name(),
        values(),
    );
}

#[test]
fn every_boot_action_maps_to_a_request() {
    check(
        "BOOT_ACTION_",
        &[BootRequest::Once, BootRequest::SetDefault],
        |r| match r {
            BootRequest::Once => pb::BootAction::Once,
            BootRequest::SetDefault => pb::BootAction::SetDefault,
        },
        |p| p.as_str_name(),
        specified(values(), pb::BootAction::Unspecified),
    );
    assert_eq!(
        boot_request(pb::BootAction::Once as i32),
        Some(BootRequest::Once)
    );
    assert_eq!(
        boot_request(pb::BootAction::SetDefault as i32),
        Some(BootRequest::SetDefault)
    );
    assert_eq!(boot_request(pb::BootAction::Unspecified as i32), None);
    assert_eq!(boot_request(99), None);
}

#[test]
fn slots_round_trip_and_unknown_numbers_name_none() {
    for s in Slot::ALL {
        assert_eq!(slot_from_pb(slot(Some(s)) as i32), Some(s));
    }
    assert_eq!(slot(None), pb::Slot::Unspecified);
    assert_eq!(slot_from_pb(pb::Slot::Unspecified as i32), None);
    assert_eq!(slot_from_pb(7), None);
}

#[test]
fn service_status_fields_reach_the_wire() {
    let s = ServiceStatus {
        name: "web".into(),
        state: State::Running,
        pid: Some(42),
        restarts: 3,
        uptime: Duration::from_millis(1500),
        readiness: ReadinessStatus::Ready,
        health: Health::Healthy,
        class: Some(Class::Workload),
        last_exit: Some(Exit::Code(1)),
        reason: "why".into(),
        status_text: "serving".into(),
        depends_on: vec!["db".into()],
    };
    let p = service_status(&s);
    assert_eq!(p.name, "web");
    assert_eq!(p.state(), pb::ServiceState::Running);
    assert_eq!((p.pid, p.restarts, p.uptime_ms), (42, 3, 1500));
    assert_eq!(p.readiness(), pb::Readiness::Ready);
    assert_eq!(p.health(), pb::Health::Healthy);
    assert_eq!(p.class, "workload");
    assert_eq!(p.last_exit, "exited with status 1");
    assert_eq!(p.reason, "why");
    assert_eq!(p.status_text, "serving");
    assert_eq!(p.depends_on, vec!["db".to_owned()]);

    // A rejected file: no process, no class, no exit.
    let r = service_status(&ServiceStatus {
        pid: None,
        class: None,
        last_exit: None,
        ..s
    });
    assert_eq!((r.pid, r.class.as_str(), r.last_exit.as_str()), (0, "", ""));
}

#[test]
fn log_lines_keep_text_time_and_stream() {
    let p = log_lines(vec![LogLine {
        timestamp_us: 7,
        stream: Stream::Stderr,
        text: b"oops".to_vec(),
    }]);
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].timestamp_us, 7);
    assert_eq!(p[0].stream(), pb::LogStream::Stderr);
    assert_eq!(p[0].text, b"oops");
}

#[test]
fn boot_status_maps_slots_states_and_failure() {
    let b = BootStatus {
        loader: "grub",
        booted: Slot::A,
        default: Some(Slot::A),
        once: None,
        pending_try: Some(Slot::B),
        slots: vec![
            SlotView {
                slot: Slot::A,
                version: "1.0".into(),
                state: SlotState::Good,
            },
            SlotView {
                slot: Slot::B,
                version: "2.0".into(),
                state: SlotState::Trying,
            },
        ],
        loader_entry: None,
        last_failure: Some(Failure {
            slot: SlotId::B as i32,
            version: "1.9".into(),
            reason: "fell back".into(),
            at_unix_secs: 5,
        }),
    };
    let p = boot_status(&b);
    assert_eq!(p.loader, "grub");
    assert_eq!(p.booted(), pb::Slot::A);
    assert_eq!(p.default(), pb::Slot::A);
    assert_eq!(p.once(), pb::Slot::Unspecified);
    assert_eq!(p.pending_try(), pb::Slot::B);
    assert_eq!(p.loader_entry, "");
    assert_eq!(p.slots[1].slot(), pb::Slot::B);
    assert_eq!(p.slots[1].version, "2.0");
    assert_eq!(p.slots[1].state(), pb::SlotState::Trying);
    let f = p
        .last_failure
        .as_ref()
        .map(|f| (f.slot(), f.reason.as_str(), f.at_unix_secs));
    assert_eq!(f, Some((pb::Slot::B, "fell back", 5)));
}

#[test]
fn boot_control_errors_get_their_codes() {
    let (code, msg) = boot_control_error(&BootControlError::NotBootable("slot B is empty".into()));
    assert_eq!(
        (code, msg.as_str()),
        (pb::ErrorCode::Unavailable, "slot B is empty")
    );
    let (code, msg) =
        boot_control_error(&BootControlError::Record(SlotsError::NoPartition("META")));
    assert_eq!(code, pb::ErrorCode::Failed);
    assert!(msg.contains("META"), "{msg}");
}
