//! Per-service runtime state and the status it shows.

use std::time::{Duration, Instant};

use crate::spec::{Readiness, ServiceSpec};
use crate::status::{Exit, Health, ReadinessStatus, ServiceStatus, State};

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

/// What a probe in flight is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckId {
    /// An exec probe: its process's exit.
    Process(u32),
    /// A TCP probe: its connect, by the launcher's id.
    Connect(u64),
}

/// A probe in flight.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub id: CheckId,
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
    pub status: Health,
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
    /// The service's own word on itself (sd_notify `STATUS=`).
    pub status_text: String,
    /// The last sender whose notify message was refused (logged once).
    pub notify_refused: Option<Option<u32>>,
}

impl Service {
    pub fn new(spec: ServiceSpec) -> Self {
        let health = HealthState {
            status: if spec.health.is_some() {
                Health::Unknown
            } else {
                Health::None
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
            status_text: String::new(),
            notify_refused: None,
        }
    }

    pub fn readiness(&self) -> ReadinessStatus {
        match (&self.ready, &self.spec.readiness.kind) {
            (ReadyState::Failed, _) => ReadinessStatus::Failed,
            (_, Readiness::None) => ReadinessStatus::None,
            (ReadyState::Ready, _) => ReadinessStatus::Ready,
            (ReadyState::Pending { .. }, _) => ReadinessStatus::Pending,
            (ReadyState::NotChecked, _) => ReadinessStatus::Pending,
        }
    }

    pub fn status(&self, now: Instant) -> ServiceStatus {
        let uptime = match (self.pid, self.started_at) {
            (Some(_), Some(t)) => now.saturating_duration_since(t),
            _ => Duration::ZERO,
        };
        ServiceStatus {
            name: self.spec.name.clone(),
            state: self.state,
            pid: self.pid,
            restarts: self.restarts,
            uptime,
            readiness: self.readiness(),
            health: self.health.status,
            class: Some(self.spec.class),
            last_exit: self.last_exit,
            reason: self.reason.clone(),
            status_text: self.status_text.clone(),
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
