//! `bascule boot status | once SLOT | set-default SLOT`.

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use serde::Serialize;

use crate::args::{BootCommand, SlotArg};
use crate::exit::Failure;

pub(crate) fn slot_name(v: i32) -> &'static str {
    match pb::Slot::try_from(v) {
        Ok(pb::Slot::A) => "A",
        Ok(pb::Slot::B) => "B",
        _ => "-",
    }
}

pub(crate) fn state_name(v: i32) -> &'static str {
    match pb::SlotState::try_from(v) {
        Ok(pb::SlotState::Empty) => "empty",
        Ok(pb::SlotState::Good) => "good",
        Ok(pb::SlotState::Bad) => "bad",
        Ok(pb::SlotState::Trying) => "trying",
        Ok(pb::SlotState::Prepared) => "prepared",
        _ => "unknown",
    }
}

#[derive(Serialize)]
struct SlotJson {
    slot: &'static str,
    version: String,
    state: &'static str,
}

#[derive(Serialize)]
struct FailureJson {
    slot: &'static str,
    version: String,
    reason: String,
    at_unix_secs: u64,
}

#[derive(Serialize)]
struct StatusJson {
    loader: String,
    booted: &'static str,
    default: &'static str,
    once: &'static str,
    pending_try: &'static str,
    loader_entry: String,
    slots: Vec<SlotJson>,
    last_failure: Option<FailureJson>,
}

fn to_json(s: &pb::BootStatus) -> StatusJson {
    StatusJson {
        loader: s.loader.clone(),
        booted: slot_name(s.booted),
        default: slot_name(s.default),
        once: slot_name(s.once),
        pending_try: slot_name(s.pending_try),
        loader_entry: s.loader_entry.clone(),
        slots: s
            .slots
            .iter()
            .map(|x| SlotJson {
                slot: slot_name(x.slot),
                version: x.version.clone(),
                state: state_name(x.state),
            })
            .collect(),
        last_failure: s.last_failure.as_ref().map(|f| FailureJson {
            slot: slot_name(f.slot),
            version: f.version.clone(),
            reason: f.reason.clone(),
            at_unix_secs: f.at_unix_secs,
        }),
    }
}

/// The table people read.
pub fn render(s: &pb::BootStatus) -> String {
    let mut out = format!(
        "loader {}  booted {}  default {}  once {}  pending try {}\n",
        s.loader,
        slot_name(s.booted),
        slot_name(s.default),
        slot_name(s.once),
        slot_name(s.pending_try)
    );
    if !s.loader_entry.is_empty() {
        out.push_str(&format!("loader entry booted: {}\n", s.loader_entry));
    }
    out.push_str(&format!("{:<6}{:<20}{}\n", "SLOT", "VERSION", "STATE"));
    for x in &s.slots {
        let v = if x.version.is_empty() {
            "-"
        } else {
            &x.version
        };
        out.push_str(&format!(
            "{:<6}{:<20}{}\n",
            slot_name(x.slot),
            v,
            state_name(x.state)
        ));
    }
    if let Some(f) = &s.last_failure {
        out.push_str(&format!(
            "last failure: slot {} ({}): {}\n",
            slot_name(f.slot),
            f.version,
            f.reason
        ));
    }
    out
}

pub fn request(cmd: &BootCommand) -> (&'static str, Call) {
    let slot = |s: &SlotArg| match s {
        SlotArg::A => pb::Slot::A as i32,
        SlotArg::B => pb::Slot::B as i32,
    };
    let (what, action, s, force) = match cmd {
        BootCommand::Status => return ("boot status", Call::BootStatus(pb::BootStatusRequest {})),
        BootCommand::Once { slot, force } => ("boot once", pb::BootAction::Once, slot, force),
        BootCommand::SetDefault { slot, force } => {
            ("boot set-default", pb::BootAction::SetDefault, slot, force)
        }
    };
    let req = pb::BootControlRequest {
        action: action as i32,
        slot: slot(s),
        force: *force,
    };
    (what, Call::BootControl(req))
}

pub fn output(reply: Reply, what: &str, json: bool) -> Result<String, Failure> {
    let Reply::BootStatus(s) = reply else {
        return Err(Failure::failed(format!(
            "{what}: the server sent an unexpected reply"
        )));
    };
    if json {
        serde_json::to_string_pretty(&to_json(&s))
            .map(|t| t + "\n")
            .map_err(|e| Failure::failed(format!("cannot encode JSON: {e}")))
    } else {
        Ok(render(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_slots_and_failure() {
        let s = pb::BootStatus {
            loader: "grub".into(),
            booted: pb::Slot::A as i32,
            default: pb::Slot::A as i32,
            once: pb::Slot::Unspecified as i32,
            pending_try: pb::Slot::Unspecified as i32,
            slots: vec![
                pb::SlotStatus {
                    slot: pb::Slot::A as i32,
                    version: "1.0".into(),
                    state: pb::SlotState::Good as i32,
                },
                pb::SlotStatus {
                    slot: pb::Slot::B as i32,
                    version: "2.0".into(),
                    state: pb::SlotState::Bad as i32,
                },
            ],
            last_failure: Some(pb::SlotFailure {
                slot: pb::Slot::B as i32,
                version: "2.0".into(),
                reason: "it fell back".into(),
                at_unix_secs: 1,
            }),
            loader_entry: "bascule-b+0-1.conf".into(),
        };
        let t = render(&s);
        assert!(t.contains("booted A  default A  once -"), "{t}");
        assert!(
            t.lines()
                .any(|l| l.starts_with("B") && l.contains("2.0") && l.ends_with("bad")),
            "{t}"
        );
        assert!(
            t.contains("last failure: slot B (2.0): it fell back"),
            "{t}"
        );
        let j = serde_json::to_value(to_json(&s)).unwrap();
        assert_eq!(j["slots"][1]["state"], "bad");
        assert_eq!(j["last_failure"]["slot"], "B");
    }
}
