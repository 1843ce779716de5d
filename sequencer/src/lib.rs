//! Bascule's upgrade and rollback sequencer.
//!
//! A synchronous state machine: [`upgrade`] runs the ten phases of the
//! upgrade contract (`docs/upgrade.md`) in order, and [`rollback`] switches
//! the default slot back, each through a [`Host`] (the machine's blocking
//! operations, implemented by PID 1) and a [`Clock`]. Progress goes to a
//! [`Progress`] sink as [`Event`]s, and the run is recorded in a
//! [`Journal`] the host persists. No socket, no protobuf, no threads:
//! PID 1 runs a call on its own thread and maps the results to its wire
//! types.
//!
//! The confirmation of a new slot after it boots (self-check, making it
//! the default) belongs to PID 1's slot keeper, not to this crate.
#![deny(unsafe_code)]

mod arm;
pub mod clock;
pub mod host;
mod install;
pub mod journal;
mod lease;
pub mod machine;
mod note_text;
pub mod options;
pub mod outcome;
pub mod progress;
pub mod recovery;
mod rollback;
mod run;
mod teardown;
mod upgrade;
mod verify;
pub mod version;

#[cfg(test)]
mod tests;

pub use clock::{Clock, SystemClock};
pub use host::{
    HoldKind, Holder, Host, HostError, KexecError, NodeRole, Pass, RebootMode, Running, Signal,
    StopError,
};
pub use journal::{Journal, Note, Phase, PhaseRecord, PhaseStatus, SkipReason};
pub use options::{
    AfterInstall, DataPolicy, QuorumPolicy, RunMode, Timeouts, UpgradeOptions, VersionPolicy,
};
pub use outcome::{DryRunReport, Finished, Outcome, PhaseError, PlannedStep, Recovery, Refusal};
pub use progress::{Event, Progress};
pub use rollback::rollback;
pub use upgrade::upgrade;
pub use version::compare_versions;
