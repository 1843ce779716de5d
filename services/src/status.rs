//! What a service's status looks like from outside the supervisor: its
//! life state, readiness, health and how its last process ended. These are
//! the supervisor's own types; `bascule-init` maps them to the wire format.

use std::time::Duration;

use crate::spec::Class;

/// Where a service is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Waiting,
    Starting,
    Running,
    Stopping,
    Backoff,
    Failed,
    Exited,
}

impl State {
    /// Every state, for exhaustive checks of mappings.
    pub const ALL: [State; 8] = [
        State::Stopped,
        State::Waiting,
        State::Starting,
        State::Running,
        State::Stopping,
        State::Backoff,
        State::Failed,
        State::Exited,
    ];

    /// The state's name as status lines and messages show it.
    pub fn label(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Backoff => "in backoff",
            State::Failed => "failed",
            State::Exited => "exited",
        }
    }

    /// A process of the service may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }
}

/// How a process ended, decoded from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Gone, its status taken by its own parent: a main process named by
    /// MAINPID= that its launcher reaped.
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exited with status {c}"),
            Exit::Signal(s) => write!(f, "killed by {}", crate::signal::Signal::from_raw(*s)),
            Exit::Unknown => f.write_str("exited, its status reaped by its parent"),
        }
    }
}

/// The health check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// No health check configured.
    None,
    /// Configured, no result yet for the current process.
    Unknown,
    Healthy,
    Unhealthy,
}

impl Health {
    pub const ALL: [Health; 4] = [
        Health::None,
        Health::Unknown,
        Health::Healthy,
        Health::Unhealthy,
    ];
}

/// Readiness as operators see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadinessStatus {
    /// No readiness check configured: ready once started.
    None,
    Pending,
    Ready,
    Failed,
}

impl ReadinessStatus {
    pub const ALL: [ReadinessStatus; 4] = [
        ReadinessStatus::None,
        ReadinessStatus::Pending,
        ReadinessStatus::Ready,
        ReadinessStatus::Failed,
    ];
}

/// One service's status at a moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceStatus {
    pub name: String,
    pub state: State,
    /// The main process, while one runs.
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Time since the current process started; zero when none runs.
    pub uptime: Duration,
    pub readiness: ReadinessStatus,
    pub health: Health,
    /// None for a rejected service file, whose class is not known.
    pub class: Option<Class>,
    pub last_exit: Option<Exit>,
    /// Why the service is in its state, when not obvious.
    pub reason: String,
    /// What the service last said of itself (sd_notify `STATUS=`).
    pub status_text: String,
    pub depends_on: Vec<String>,
}
