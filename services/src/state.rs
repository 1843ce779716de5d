//! Per-service runtime state and its API view.

use std::time::{Duration, Instant};

use bascule_api::pb;

use crate::spec::{Readiness, ServiceSpec};

/// Where a service is in its life. Mirrors `pb::ServiceState`.
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
    /// A process of the service may be alive.
    pub fn is_active(self) -> bool {
        matches!(self, State::Starting | State::Running | State::Stopping)
    }

    pub fn to_pb(self) -> pb::ServiceState {
        match self {
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
}

/// How a process ended, decoded from its wait status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
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
        }
    }
}

/// What happens once a stop has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterStop {
    /// Stay down.
    Down,
    /// Start again at once (an operator's restart).
    Restart,
    /// The service failed (readiness or health); restart per policy, with backoff.
    Failure(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopPhase {
    /// The pre-stop command runs.
    PreStop { pid: u32 },
    /// The stop signal was sent; SIGKILL at the deadline.
    Signaled,
    /// SIGKILL sent to the whole tree; waiting for the exit.
    Killed,
}

#[derive(Debug, Clone)]
pub struct Stopping {
    pub phase: StopPhase,
    pub deadline: Option<Instant>,
    pub then: AfterStop,
}

/// A probe in flight (exec probes run as child processes).
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub pid: u32,
    pub deadline: Instant,
}

#[derive(Debug, Clone)]
pub enum ReadyState {
    /// No readiness check configured.
    NotChecked,
    Pending {
        next_probe: Instant,
        deadline: Instant,
        check: Option<Check>,
    },
    Ready,
    Failed,
}

#[derive(Debug, Clone)]
pub struct HealthState {
    pub status: pb::Health,
    pub next_at: Option<Instant>,
    pub check: Option<Check>,
    pub consecutive_failures: u32,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub spec: ServiceSpec,
    pub state: State,
    /// Asked to be up (start) or down (stop).
    pub want_up: bool,
    pub pid: Option<u32>,
    pub started_at: Option<Instant>,
    /// Incremented at every start of the main process.
    pub generation: u64,
    pub restarts: u32,
    pub consecutive: u32,
    pub ready: ReadyState,
    pub health: HealthState,
    pub stopping: Option<Stopping>,
    pub backoff_until: Option<Instant>,
    pub last_exit: Option<Exit>,
    pub reason: String,
}

impl Service {
    pub fn new(spec: ServiceSpec) -> Self {
        let health = HealthState {
            status: if spec.health.is_some() {
                pb::Health::Unknown
            } else {
                pb::Health::None
            },
            next_at: None,
            check: None,
            consecutive_failures: 0,
        };
        Service {
            spec,
            state: State::Stopped,
            want_up: false,
            pid: None,
            started_at: None,
            generation: 0,
            restarts: 0,
            consecutive: 0,
            ready: ReadyState::NotChecked,
            health,
            stopping: None,
            backoff_until: None,
            last_exit: None,
            reason: String::new(),
        }
    }

    pub fn readiness_pb(&self) -> pb::Readiness {
        match (&self.ready, &self.spec.readiness.kind) {
            (ReadyState::Failed, _) => pb::Readiness::Failed,
            (_, Readiness::None) => pb::Readiness::None,
            (ReadyState::Ready, _) => pb::Readiness::Ready,
            (ReadyState::Pending { .. }, _) => pb::Readiness::Pending,
            (ReadyState::NotChecked, _) => pb::Readiness::Pending,
        }
    }

    pub fn status(&self, now: Instant) -> pb::ServiceStatus {
        let uptime = match (self.pid, self.started_at) {
            (Some(_), Some(t)) => now.saturating_duration_since(t),
            _ => Duration::ZERO,
        };
        pb::ServiceStatus {
            name: self.spec.name.clone(),
            state: self.state.to_pb() as i32,
            pid: self.pid.unwrap_or(0),
            restarts: self.restarts,
            uptime_ms: uptime.as_millis() as u64,
            readiness: self.readiness_pb() as i32,
            health: self.health.status as i32,
            class: self.spec.class.label().to_owned(),
            last_exit: self.last_exit.map(|e| e.to_string()).unwrap_or_default(),
            reason: self.reason.clone(),
            depends_on: self.spec.depends_on.clone(),
        }
    }

    /// The earliest moment this service needs attention.
    pub fn next_deadline(&self) -> Option<Instant> {
        let mut times: Vec<Instant> = Vec::new();
        if let Some(s) = &self.stopping {
            times.extend(s.deadline);
        }
        if let Some(t) = self.backoff_until {
            times.push(t);
        }
        if let ReadyState::Pending {
            next_probe,
            deadline,
            check,
        } = &self.ready
        {
            if self.state == State::Starting {
                times.push(*deadline);
                match check {
                    Some(c) => times.push(c.deadline),
                    None if !matches!(self.spec.readiness.kind, Readiness::Notify) => {
                        times.push(*next_probe)
                    }
                    None => {}
                }
            }
        }
        if self.state == State::Running {
            match &self.health.check {
                Some(c) => times.push(c.deadline),
                None => times.extend(self.health.next_at),
            }
        }
        times.into_iter().min()
    }
}
