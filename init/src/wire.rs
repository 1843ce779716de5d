//! The wire format at init's edge: the supervisor's and the boot slots'
//! own types mapped to the API's protobuf messages, and requests mapped
//! back. Every enum is matched exhaustively, so a new variant on either
//! side fails the build here instead of going out as the wrong number.

use bascule_api::pb;
use bascule_boot::meta_record::SlotState;
use bascule_boot::Slot;
use bascule_services::logs::{LogLine, Stream};
use bascule_services::{Health, ReadinessStatus, ServiceStatus, State};

use crate::slots::{BootControlError, BootRequest, BootStatus};

pub fn service_state(s: State) -> pb::ServiceState {
    match s {
        State::Stopped => pb::ServiceState::Stopped,
        State::Waiting => pb::ServiceState::Waiting,
        State::Starting => pb::ServiceState::Starting,
        State::Running => pb::ServiceState::Running,
        State::Stopping => pb::ServiceState::Stopping,
        State::Backoff => pb::ServiceState::Backoff,
        State::Failed => pb::ServiceState::Failed,
        State::Exited => pb::ServiceState::Exited,
    }
}

pub fn health(h: Health) -> pb::Health {
    match h {
        Health::None => pb::Health::None,
        Health::Unknown => pb::Health::Unknown,
        Health::Healthy => pb::Health::Healthy,
        Health::Unhealthy => pb::Health::Unhealthy,
    }
}

pub fn readiness(r: ReadinessStatus) -> pb::Readiness {
    match r {
        ReadinessStatus::None => pb::Readiness::None,
        ReadinessStatus::Pending => pb::Readiness::Pending,
        ReadinessStatus::Ready => pb::Readiness::Ready,
        ReadinessStatus::Failed => pb::Readiness::Failed,
    }
}

pub fn service_status(s: &ServiceStatus) -> pb::ServiceStatus {
    pb::ServiceStatus {
        name: s.name.clone(),
        state: service_state(s.state) as i32,
        pid: s.pid.unwrap_or(0),
        restarts: s.restarts,
        uptime_ms: u64::try_from(s.uptime.as_millis()).unwrap_or(u64::MAX),
        readiness: readiness(s.readiness) as i32,
        health: health(s.health) as i32,
        class: s.class.map(|c| c.label()).unwrap_or_default().to_owned(),
        last_exit: s.last_exit.map(|e| e.to_string()).unwrap_or_default(),
        reason: s.reason.clone(),
        status_text: s.status_text.clone(),
        depends_on: s.depends_on.clone(),
    }
}

pub fn log_stream(s: Stream) -> pb::LogStream {
    match s {
        Stream::Stdout => pb::LogStream::Stdout,
        Stream::Stderr => pb::LogStream::Stderr,
    }
}

/// By value: log text is moved, not copied, on the follow path.
pub fn log_line(l: LogLine) -> pb::LogLine {
    pb::LogLine {
        timestamp_us: l.timestamp_us,
        stream: log_stream(l.stream) as i32,
        text: l.text,
    }
}

pub fn log_lines(lines: Vec<LogLine>) -> Vec<pb::LogLine> {
    lines.into_iter().map(log_line).collect()
}

pub fn run_mode(m: crate::config::Mode) -> pb::RunMode {
    match m {
        crate::config::Mode::Pid1 => pb::RunMode::Pid1,
        crate::config::Mode::Supervise => pb::RunMode::Supervise,
    }
}

pub fn cluster_role(m: Option<&bascule_cluster::MachineConfig>) -> pb::ClusterRole {
    match m.map(|m| m.role) {
        None => pb::ClusterRole::Unspecified,
        Some(bascule_cluster::Role::Worker) => pb::ClusterRole::Worker,
        Some(bascule_cluster::Role::ControlPlane) => pb::ClusterRole::ControlPlane,
    }
}

pub fn slot(s: Option<Slot>) -> pb::Slot {
    match s {
        None => pb::Slot::Unspecified,
        Some(Slot::A) => pb::Slot::A,
        Some(Slot::B) => pb::Slot::B,
    }
}

/// The slot a request names; None for unspecified or unknown numbers.
pub fn slot_from_pb(v: i32) -> Option<Slot> {
    match pb::Slot::try_from(v) {
        Ok(pb::Slot::A) => Some(Slot::A),
        Ok(pb::Slot::B) => Some(Slot::B),
        Ok(pb::Slot::Unspecified) | Err(_) => None,
    }
}

/// META's slot state numbering belongs to the boot crate; the API's is
/// separate, so the two are mapped by name, never copied as numbers.
pub fn slot_state(s: SlotState) -> pb::SlotState {
    match s {
        SlotState::Unspecified => pb::SlotState::Unspecified,
        SlotState::Empty => pb::SlotState::Empty,
        SlotState::Good => pb::SlotState::Good,
        SlotState::Bad => pb::SlotState::Bad,
        SlotState::Trying => pb::SlotState::Trying,
        SlotState::Prepared => pb::SlotState::Prepared,
    }
}

pub fn boot_status(b: &BootStatus) -> pb::BootStatus {
    pb::BootStatus {
        loader: b.loader.to_owned(),
        booted: slot(Some(b.booted)) as i32,
        default: slot(b.default) as i32,
        once: slot(b.once) as i32,
        pending_try: slot(b.pending_try) as i32,
        slots: b
            .slots
            .iter()
            .map(|s| pb::SlotStatus {
                slot: slot(Some(s.slot)) as i32,
                version: s.version.clone(),
                state: slot_state(s.state) as i32,
            })
            .collect(),
        loader_entry: b.loader_entry.clone().unwrap_or_default(),
        last_failure: b.last_failure.as_ref().map(|f| pb::SlotFailure {
            slot: slot(f.slot().slot()) as i32,
            version: f.version.clone(),
            reason: f.reason.clone(),
            at_unix_secs: f.at_unix_secs,
        }),
    }
}

/// The request's action; None when it names none (or one unknown here).
pub fn boot_request(action: i32) -> Option<BootRequest> {
    match pb::BootAction::try_from(action) {
        Ok(pb::BootAction::Once) => Some(BootRequest::Once),
        Ok(pb::BootAction::SetDefault) => Some(BootRequest::SetDefault),
        Ok(pb::BootAction::Unspecified) | Err(_) => None,
    }
}

pub fn boot_control_error(e: &BootControlError) -> (pb::ErrorCode, String) {
    let code = match e {
        BootControlError::NotBootable(_) => pb::ErrorCode::Unavailable,
        BootControlError::Record(_) | BootControlError::Loader { .. } => pb::ErrorCode::Failed,
    };
    (code, e.to_string())
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
