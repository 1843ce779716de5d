//! Service supervision for Bascule: service files, the per-service state
//! machine (start, readiness, health, restart with backoff, stop with
//! grace), dependency order, and log capture.
#![deny(unsafe_code)]

pub mod backoff;
pub mod effects;
#[doc(hidden)]
pub mod fuzzing;
pub mod graph;
pub mod logs;
mod notify;
pub mod signal;
pub mod spec;
mod spec_hints;
pub mod state;
pub mod status;
pub mod supervisor;
mod transitions;

pub use effects::{Event, Launcher, Membership, ProcessKind, Sender, SpawnError, TcpProbe};
pub use graph::{load_dir, Catalog, Rejected};
pub use signal::Signal;
pub use spec::{Class, ServiceSpec};
pub use status::{Exit, Health, ReadinessStatus, ServiceStatus, State};
pub use supervisor::{ControlError, Supervisor};
