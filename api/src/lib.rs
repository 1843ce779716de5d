//! The Bascule control API: the protobuf contract (`proto/bascule/v1/api.proto`),
//! the length-prefixed framing used on the socket, and a blocking client.
#![deny(unsafe_code)]

pub mod client;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;

/// Messages generated from `proto/bascule/v1/api.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/bascule.v1.rs"));
}

pub use client::{Client, ClientError, UpgradeError, UpgradeOptions, UpgradeSource};
pub use frame::{FrameDecoder, FrameError, MAX_FRAME_LEN};

/// Where `bascule-init` serves the API on a booted machine.
pub const DEFAULT_SOCKET: &str = "/run/bascule/api.sock";

/// Environment variable naming the socket for clients.
pub const SOCKET_ENV: &str = "BASCULE_SOCKET";

/// Version of this build, shared by the server and the client.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl pb::Error {
    pub fn new(code: pb::ErrorCode, message: impl Into<String>) -> Self {
        pb::Error {
            code: code as i32,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for pb::Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = pb::ErrorCode::try_from(self.code)
            .map(|c| c.as_str_name())
            .unwrap_or("UNKNOWN");
        write!(f, "{code}: {}", self.message)
    }
}

impl pb::ServiceState {
    /// Lower-case name for tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            pb::ServiceState::Unspecified => "unknown",
            pb::ServiceState::Stopped => "stopped",
            pb::ServiceState::Waiting => "waiting",
            pb::ServiceState::Starting => "starting",
            pb::ServiceState::Running => "running",
            pb::ServiceState::Stopping => "stopping",
            pb::ServiceState::Backoff => "backoff",
            pb::ServiceState::Failed => "failed",
            pb::ServiceState::Exited => "exited",
        }
    }
}

impl pb::Readiness {
    pub fn label(self) -> &'static str {
        match self {
            pb::Readiness::Unspecified => "unknown",
            pb::Readiness::None => "-",
            pb::Readiness::Pending => "pending",
            pb::Readiness::Ready => "ready",
            pb::Readiness::Failed => "failed",
        }
    }
}

impl pb::Health {
    pub fn label(self) -> &'static str {
        match self {
            pb::Health::Unspecified => "unknown",
            pb::Health::None => "-",
            pb::Health::Unknown => "unknown",
            pb::Health::Healthy => "healthy",
            pb::Health::Unhealthy => "unhealthy",
        }
    }
}

impl pb::Slot {
    /// "A", "B", or "-" for none.
    pub fn label(self) -> &'static str {
        match self {
            pb::Slot::Unspecified => "-",
            pb::Slot::A => "A",
            pb::Slot::B => "B",
        }
    }
}

impl pb::UpgradeResult {
    /// Lower-case name for messages and JSON.
    pub fn label(self) -> &'static str {
        match self {
            pb::UpgradeResult::Unspecified => "unknown",
            pb::UpgradeResult::Rebooting => "rebooting",
            pb::UpgradeResult::Staged => "staged",
            pb::UpgradeResult::DryRun => "dry_run",
            pb::UpgradeResult::Refused => "refused",
            pb::UpgradeResult::Aborted => "aborted",
            pb::UpgradeResult::Prepared => "prepared",
        }
    }
}

impl pb::UpgradeEventKind {
    /// Lower-case name for JSON.
    pub fn label(self) -> &'static str {
        match self {
            pb::UpgradeEventKind::Unspecified => "unknown",
            pb::UpgradeEventKind::PhaseStarted => "phase_started",
            pb::UpgradeEventKind::Progress => "progress",
            pb::UpgradeEventKind::PhaseFinished => "phase_finished",
            pb::UpgradeEventKind::Note => "note",
            pb::UpgradeEventKind::SendBundle => "send_bundle",
            pb::UpgradeEventKind::Outcome => "outcome",
        }
    }
}
