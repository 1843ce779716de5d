//! The supervisor: every service's state machine, driven by events (a
//! process exited, a timer fired, a notify message, an operator request).
//! All effects go through the [`Launcher`] so this logic is unit-tested with
//! a recording fake; time is passed in as `now`.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Shortest wait before retrying a start that failed to spawn at all.
const SPAWN_RETRY_MIN: Duration = Duration::from_millis(100);

use bascule_api::pb;

use crate::backoff::{self, RestartDecision};
use crate::graph::{self, Catalog, Rejected};
use crate::signal::Signal;
use crate::spec::{Class, Probe, Readiness, RestartPolicy, ServiceSpec};
use crate::state::{AfterStop, Check, Exit, ReadyState, Service, State, StopPhase, Stopping};

/// What kind of process a spawn is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    Main,
    Readiness,
    Health,
    PreStop,
}

/// The side effects the supervisor needs, implemented with real syscalls in
/// `bascule-init` and by a recording fake in tests.
pub trait Launcher {
    /// Starts `argv` for `spec`. Main processes get the service's
    /// environment, user, capabilities, cgroup and captured output.
    fn spawn(
        &mut self,
        spec: &ServiceSpec,
        kind: ProcessKind,
        argv: &[String],
    ) -> Result<u32, String>;
    fn signal(&mut self, pid: u32, signal: Signal);
    /// SIGKILLs everything that belongs to the service (its cgroup, or the
    /// main process group where there is no cgroup).
    fn kill_all(&mut self, spec: &ServiceSpec, main_pid: Option<u32>);
    fn probe_tcp(&mut self, port: u16) -> bool;
    fn probe_path(&mut self, path: &Path) -> bool;
}

/// Something worth telling the operator or the boot timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started { name: String, pid: u32 },
    Ready { name: String },
    Exited { name: String, exit: Exit },
    Restarting { name: String, delay_ms: u64 },
    Failed { name: String, reason: String },
    Stopped { name: String },
    Unhealthy { name: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no service named {0:?}")]
    NotFound(String),
    #[error("service {name} cannot be started: {reason}")]
    Rejected { name: String, reason: String },
    #[error("service {name} cannot be started: {reason}")]
    Refused { name: String, reason: String },
}

pub struct Supervisor {
    services: BTreeMap<String, Service>,
    rejected: Vec<Rejected>,
    order: Vec<String>,
    shutting_down: bool,
    cordoned: bool,
    events: Vec<Event>,
}

impl Supervisor {
    pub fn new(catalog: Catalog) -> Self {
        let order = graph::start_order(&catalog.specs);
        let services = catalog
            .specs
            .into_iter()
            .map(|(name, spec)| (name, Service::new(spec)))
            .collect();
        Supervisor {
            services,
            rejected: catalog.rejected,
            order,
            shutting_down: false,
            cordoned: false,
            events: Vec::new(),
        }
    }

    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    pub fn service(&self, name: &str) -> Option<&Service> {
        self.services.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.order.iter()
    }

    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down
    }

    /// Every service's status in start order; rejected files last, as failed.
    pub fn list(&self, now: Instant) -> Vec<pb::ServiceStatus> {
        let mut out: Vec<pb::ServiceStatus> = self
            .order
            .iter()
            .filter_map(|n| self.services.get(n))
            .map(|s| s.status(now))
            .collect();
        out.extend(self.rejected.iter().map(|r| pb::ServiceStatus {
            name: r.name.clone(),
            state: pb::ServiceState::Failed as i32,
            reason: r.reason.clone(),
            readiness: pb::Readiness::Failed as i32,
            health: pb::Health::None as i32,
            ..Default::default()
        }));
        out
    }

    pub fn status(&self, name: &str, now: Instant) -> Result<pb::ServiceStatus, ControlError> {
        if let Some(s) = self.services.get(name) {
            return Ok(s.status(now));
        }
        self.list(now)
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| ControlError::NotFound(name.to_owned()))
    }

    /// True once every service is ready (or settled without a process).
    pub fn all_ready(&self) -> bool {
        self.services.values().all(|s| {
            s.state == State::Running && !matches!(s.ready, ReadyState::Pending { .. })
                || matches!(s.state, State::Exited | State::Failed | State::Stopped)
        })
    }

    /// True when every service is up: running and ready, or finished with
    /// success; none failed and no file was rejected. A slot being tried
    /// passes only then.
    pub fn all_up(&self) -> bool {
        self.rejected.is_empty()
            && self.services.values().all(|s| {
                s.state == State::Running && !matches!(s.ready, ReadyState::Pending { .. })
                    || s.state == State::Exited
            })
    }

    /// True when no process of any service is alive.
    pub fn all_down(&self) -> bool {
        self.services.values().all(|s| !s.state.is_active())
    }

    /// True when a start or restart asked for at `generation` has settled.
    pub fn settled_up(&self, name: &str, after_generation: u64) -> bool {
        self.services.get(name).is_none_or(|s| match s.state {
            State::Running => {
                s.generation > after_generation && !matches!(s.ready, ReadyState::Pending { .. })
            }
            State::Failed | State::Exited | State::Stopped => {
                !s.want_up || s.generation > after_generation
            }
            State::Backoff => s.generation > after_generation,
            _ => false,
        })
    }

    pub fn settled_down(&self, name: &str) -> bool {
        self.services
            .get(name)
            .is_none_or(|s| !s.state.is_active() && s.state != State::Backoff)
    }

    pub fn generation(&self, name: &str) -> u64 {
        self.services.get(name).map(|s| s.generation).unwrap_or(0)
    }

    pub fn set_cordoned(&mut self, cordoned: bool) {
        self.cordoned = cordoned;
    }

    pub fn start_all(&mut self, now: Instant, l: &mut dyn Launcher) {
        for s in self.services.values_mut() {
            s.want_up = true;
            if s.state == State::Stopped {
                s.state = State::Waiting;
            }
        }
        self.advance(now, l);
    }

    pub fn start(
        &mut self,
        name: &str,
        now: Instant,
        l: &mut dyn Launcher,
    ) -> Result<(), ControlError> {
        let cordoned = self.cordoned;
        let shutting_down = self.shutting_down;
        let s = self.lookup(name)?;
        if shutting_down {
            return Err(ControlError::Refused {
                name: name.to_owned(),
                reason: "the machine is shutting down".into(),
            });
        }
        if cordoned && s.spec.class == Class::Workload {
            return Err(ControlError::Refused {
                name: name.to_owned(),
                reason: "workload services are cordoned (an upgrade is in progress)".into(),
            });
        }
        s.want_up = true;
        if matches!(s.state, State::Stopped | State::Exited | State::Failed) {
            s.state = State::Waiting;
            s.consecutive = 0;
            s.reason.clear();
        }
        if s.state == State::Backoff {
            // An operator's start skips the remaining delay.
            s.backoff_until = Some(now);
        }
        self.advance(now, l);
        Ok(())
    }

    pub fn stop(
        &mut self,
        name: &str,
        now: Instant,
        l: &mut dyn Launcher,
    ) -> Result<(), ControlError> {
        let s = lookup(&mut self.services, &self.rejected, name)?;
        s.want_up = false;
        Self::begin_stop(s, AfterStop::Down, now, l, &mut self.events);
        self.advance(now, l);
        Ok(())
    }

    pub fn restart(
        &mut self,
        name: &str,
        now: Instant,
        l: &mut dyn Launcher,
    ) -> Result<(), ControlError> {
        let s = lookup(&mut self.services, &self.rejected, name)?;
        if s.state.is_active() {
            s.want_up = true;
            s.consecutive = 0;
            Self::begin_stop(s, AfterStop::Restart, now, l, &mut self.events);
            self.advance(now, l);
            Ok(())
        } else {
            self.start(name, now, l)
        }
    }

    /// Stops everything in reverse dependency order (shutdown).
    pub fn stop_all(&mut self, now: Instant, l: &mut dyn Launcher) {
        self.shutting_down = true;
        for s in self.services.values_mut() {
            s.want_up = false;
        }
        self.advance(now, l);
    }

    /// A child process ended. Returns false for a pid the supervisor does
    /// not know (an orphan reaped by PID 1 or the subreaper).
    pub fn on_exit(&mut self, pid: u32, exit: Exit, now: Instant, l: &mut dyn Launcher) -> bool {
        let Some(name) = self.owner_of(pid) else {
            return false;
        };
        if let Some(s) = self.services.get_mut(&name) {
            if s.pid == Some(pid) {
                Self::main_exited(s, exit, now, l, &mut self.events);
            } else {
                Self::check_exited(s, pid, exit, now, l, &mut self.events);
            }
        }
        self.advance(now, l);
        true
    }

    /// A datagram from the service's NOTIFY_SOCKET (sd_notify protocol).
    pub fn on_notify(&mut self, name: &str, message: &str, now: Instant, l: &mut dyn Launcher) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        for line in message.lines() {
            if line == "READY=1"
                && s.state == State::Starting
                && s.spec.readiness.kind == Readiness::Notify
            {
                Self::mark_ready(s, now, &mut self.events);
            } else if let Some(status) = line.strip_prefix("STATUS=") {
                s.reason = status.to_owned();
            }
        }
        self.advance(now, l);
    }

    /// Timers: backoff ends, probes, readiness and stop deadlines.
    pub fn on_timer(&mut self, now: Instant, l: &mut dyn Launcher) {
        let names: Vec<String> = self.order.clone();
        for name in names {
            let Some(s) = self.services.get_mut(&name) else {
                continue;
            };
            Self::service_timers(s, now, l, &mut self.events);
        }
        self.advance(now, l);
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .values()
            .filter_map(|s| s.next_deadline())
            .min()
    }

    fn lookup(&mut self, name: &str) -> Result<&mut Service, ControlError> {
        lookup(&mut self.services, &self.rejected, name)
    }

    fn owner_of(&self, pid: u32) -> Option<String> {
        self.services.values().find_map(|s| {
            let check_pid = |c: &Option<Check>| c.is_some_and(|c| c.pid == pid);
            let owns = s.pid == Some(pid)
                || matches!(&s.ready, ReadyState::Pending { check, .. } if check_pid(check))
                || check_pid(&s.health.check)
                || matches!(&s.stopping, Some(Stopping { phase: StopPhase::PreStop { pid: p }, .. }) if *p == pid);
            owns.then(|| s.spec.name.clone())
        })
    }

    /// Starts what can start and stops what must stop, until nothing changes.
    fn advance(&mut self, now: Instant, l: &mut dyn Launcher) {
        loop {
            let mut changed = false;
            for i in 0..self.order.len() {
                let name = self.order[i].clone();
                let Some(s) = self.services.get(&name) else {
                    continue;
                };
                match s.state {
                    State::Waiting if s.want_up => {
                        let blocked = s.spec.depends_on.iter().find(|d| {
                            self.services.get(*d).is_some_and(|dep| {
                                !(dep.state == State::Running
                                    && !matches!(dep.ready, ReadyState::Pending { .. }))
                            })
                        });
                        let blocked = blocked.cloned();
                        let cordoned = self.cordoned && s.spec.class == Class::Workload;
                        let Some(s) = self.services.get_mut(&name) else {
                            continue;
                        };
                        if let Some(dep) = blocked {
                            s.reason = format!("waiting for {dep}");
                        } else if cordoned {
                            s.reason = "cordoned".into();
                        } else {
                            Self::spawn_main(s, now, l, &mut self.events);
                            changed = true;
                        }
                    }
                    State::Waiting | State::Backoff if !s.want_up => {
                        let Some(s) = self.services.get_mut(&name) else {
                            continue;
                        };
                        s.state = State::Stopped;
                        s.backoff_until = None;
                        s.reason.clear();
                        changed = true;
                    }
                    State::Starting | State::Running
                        if !s.want_up && self.shutting_down && s.stopping.is_none() =>
                    {
                        // Reverse order: wait until everything that depends
                        // on this service has no process left.
                        let dependents_active = self
                            .services
                            .values()
                            .any(|o| o.spec.depends_on.contains(&name) && o.state.is_active());
                        if !dependents_active {
                            let Some(s) = self.services.get_mut(&name) else {
                                continue;
                            };
                            Self::begin_stop(s, AfterStop::Down, now, l, &mut self.events);
                            changed = true;
                        }
                    }
                    _ => {}
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn spawn_main(s: &mut Service, now: Instant, l: &mut dyn Launcher, events: &mut Vec<Event>) {
        s.generation += 1;
        s.backoff_until = None;
        match l.spawn(&s.spec, ProcessKind::Main, &s.spec.exec) {
            Ok(pid) => {
                s.pid = Some(pid);
                s.started_at = Some(now);
                s.state = State::Starting;
                s.reason.clear();
                s.health.status = if s.spec.health.is_some() {
                    pb::Health::Unknown
                } else {
                    pb::Health::None
                };
                s.health.consecutive_failures = 0;
                s.health.check = None;
                s.health.next_at = None;
                events.push(Event::Started {
                    name: s.spec.name.clone(),
                    pid,
                });
                match &s.spec.readiness.kind {
                    Readiness::None => Self::mark_ready(s, now, events),
                    _ => {
                        s.ready = ReadyState::Pending {
                            next_probe: now + s.spec.readiness.interval,
                            deadline: now + s.spec.readiness.timeout,
                            check: None,
                        }
                    }
                }
            }
            Err(e) => {
                s.pid = None;
                s.started_at = None;
                let reason = format!("cannot start {}: {e}", s.spec.exec[0]);
                // Never retried inside this call: a spawn that keeps failing
                // with a zero backoff would otherwise recurse without end.
                Self::after_failure(s, reason, SPAWN_RETRY_MIN, now, l, events);
            }
        }
    }

    fn mark_ready(s: &mut Service, now: Instant, events: &mut Vec<Event>) {
        // A probe that succeeds after a stop began changes nothing.
        if s.state != State::Starting {
            return;
        }
        s.state = State::Running;
        s.ready = if s.spec.readiness.kind == Readiness::None {
            ReadyState::NotChecked
        } else {
            ReadyState::Ready
        };
        if let Some(h) = &s.spec.health {
            s.health.next_at = Some(now + h.interval);
        }
        events.push(Event::Ready {
            name: s.spec.name.clone(),
        });
    }

    fn begin_stop(
        s: &mut Service,
        then: AfterStop,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        let Some(pid) = s.pid else {
            if matches!(s.state, State::Waiting | State::Backoff) {
                s.state = if then == AfterStop::Down {
                    State::Stopped
                } else {
                    State::Waiting
                };
                s.backoff_until = None;
                if then == AfterStop::Down {
                    events.push(Event::Stopped {
                        name: s.spec.name.clone(),
                    });
                }
            }
            return;
        };
        if let Some(st) = &mut s.stopping {
            // Already stopping: the operator's latest wish wins (stop, or a
            // restart after a stop); a failure never overrides a stop.
            if then == AfterStop::Down || (st.then == AfterStop::Down && then == AfterStop::Restart)
            {
                st.then = then;
            }
            return;
        }
        s.state = State::Stopping;
        let grace = s.spec.stop.grace;
        let phase = match s.spec.stop.pre.clone() {
            Some(argv) => match l.spawn(&s.spec, ProcessKind::PreStop, &argv) {
                Ok(hook) => StopPhase::PreStop { pid: hook },
                Err(e) => {
                    s.reason = format!("pre-stop command failed to start: {e}");
                    l.signal(pid, s.spec.stop.signal);
                    StopPhase::Signaled
                }
            },
            None => {
                l.signal(pid, s.spec.stop.signal);
                StopPhase::Signaled
            }
        };
        s.stopping = Some(Stopping {
            phase,
            deadline: Some(now + grace),
            then,
        });
    }

    fn main_exited(
        s: &mut Service,
        exit: Exit,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        let main = s.pid.take();
        // Whatever the main process left behind goes with it.
        l.kill_all(&s.spec, main);
        let ran = s
            .started_at
            .take()
            .map(|t| now.saturating_duration_since(t));
        s.last_exit = Some(exit);
        s.ready = ReadyState::NotChecked;
        s.health.check = None;
        s.health.next_at = None;
        events.push(Event::Exited {
            name: s.spec.name.clone(),
            exit,
        });
        if ran.is_some_and(|d| d >= s.spec.backoff.reset_after) {
            s.consecutive = 0;
        }
        if let Some(stopping) = s.stopping.take() {
            match stopping.then {
                // A start asked for while it was stopping: up again.
                AfterStop::Down if s.want_up => {
                    s.state = State::Waiting;
                    events.push(Event::Stopped {
                        name: s.spec.name.clone(),
                    });
                }
                AfterStop::Down => {
                    s.state = State::Stopped;
                    events.push(Event::Stopped {
                        name: s.spec.name.clone(),
                    });
                }
                AfterStop::Restart => {
                    s.restarts += 1;
                    s.state = State::Waiting;
                }
                AfterStop::Failure(reason) => {
                    Self::after_failure(s, reason, Duration::ZERO, now, l, events)
                }
            }
            return;
        }
        if !s.want_up {
            s.state = State::Stopped;
            events.push(Event::Stopped {
                name: s.spec.name.clone(),
            });
            return;
        }
        let restart = match s.spec.restart {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => !exit.success(),
            RestartPolicy::Never => false,
        };
        if !restart {
            s.state = if exit.success() {
                State::Exited
            } else {
                State::Failed
            };
            s.reason = if exit.success() {
                String::new()
            } else {
                format!("{exit}; restart = {:?} does not restart it", s.spec.restart)
            };
            if !exit.success() {
                events.push(Event::Failed {
                    name: s.spec.name.clone(),
                    reason: s.reason.clone(),
                });
            }
            return;
        }
        Self::schedule_restart(s, exit.to_string(), Duration::ZERO, now, l, events);
    }

    /// A failed start, readiness or health: restart if the policy allows.
    fn after_failure(
        s: &mut Service,
        reason: String,
        min_delay: Duration,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        if !s.want_up || s.spec.restart == RestartPolicy::Never {
            s.state = State::Failed;
            s.reason = reason.clone();
            events.push(Event::Failed {
                name: s.spec.name.clone(),
                reason,
            });
            return;
        }
        Self::schedule_restart(s, reason, min_delay, now, l, events);
    }

    fn schedule_restart(
        s: &mut Service,
        reason: String,
        min_delay: Duration,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        match backoff::decide(&s.spec.backoff, s.consecutive) {
            RestartDecision::GiveUp => {
                s.state = State::Failed;
                s.reason = format!(
                    "{reason}; gave up after {} consecutive restarts",
                    s.consecutive
                );
                events.push(Event::Failed {
                    name: s.spec.name.clone(),
                    reason: s.reason.clone(),
                });
            }
            RestartDecision::After(delay) => {
                let delay = delay.max(min_delay);
                s.consecutive += 1;
                s.restarts += 1;
                s.reason = reason;
                events.push(Event::Restarting {
                    name: s.spec.name.clone(),
                    delay_ms: delay.as_millis() as u64,
                });
                if delay.is_zero() {
                    Self::spawn_main(s, now, l, events);
                } else {
                    s.state = State::Backoff;
                    s.backoff_until = Some(now + delay);
                }
            }
        }
    }

    fn check_exited(
        s: &mut Service,
        pid: u32,
        exit: Exit,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        if let Some(Stopping {
            phase: StopPhase::PreStop { pid: hook },
            ..
        }) = &s.stopping
        {
            if *hook == pid {
                if let (Some(main), Some(st)) = (s.pid, s.stopping.as_mut()) {
                    l.signal(main, s.spec.stop.signal);
                    st.phase = StopPhase::Signaled;
                    st.deadline = Some(now + s.spec.stop.grace);
                }
                return;
            }
        }
        if let ReadyState::Pending {
            check, next_probe, ..
        } = &mut s.ready
        {
            if check.is_some_and(|c| c.pid == pid) {
                *check = None;
                if exit.success() {
                    Self::mark_ready(s, now, events);
                } else {
                    *next_probe = now + s.spec.readiness.interval;
                }
                return;
            }
        }
        if s.health.check.is_some_and(|c| c.pid == pid) {
            s.health.check = None;
            Self::health_result(s, exit.success(), now, l, events);
        }
    }

    fn health_result(
        s: &mut Service,
        ok: bool,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        let Some(spec) = s.spec.health.clone() else {
            return;
        };
        s.health.next_at = Some(now + spec.interval);
        if ok {
            s.health.consecutive_failures = 0;
            s.health.status = pb::Health::Healthy;
            return;
        }
        s.health.consecutive_failures += 1;
        if s.health.consecutive_failures >= spec.failures
            && s.health.status != pb::Health::Unhealthy
        {
            s.health.status = pb::Health::Unhealthy;
            events.push(Event::Unhealthy {
                name: s.spec.name.clone(),
            });
            if s.spec.restart != RestartPolicy::Never {
                let reason = format!(
                    "health check failed {} times in a row",
                    s.health.consecutive_failures
                );
                Self::begin_stop(s, AfterStop::Failure(reason), now, l, events);
            }
        }
    }

    /// Runs a probe. Returns Some(result) for synchronous probes, None when
    /// an exec probe was started (its exit brings the result).
    fn run_probe(
        s: &Service,
        probe: &Probe,
        kind: ProcessKind,
        l: &mut dyn Launcher,
    ) -> Result<Option<bool>, u32> {
        match probe {
            Probe::Tcp(port) => Ok(Some(l.probe_tcp(*port))),
            Probe::Path(p) => Ok(Some(l.probe_path(p))),
            Probe::Exec(argv) => match l.spawn(&s.spec, kind, argv) {
                Ok(pid) => Err(pid),
                Err(_) => Ok(Some(false)),
            },
        }
    }

    fn service_timers(
        s: &mut Service,
        now: Instant,
        l: &mut dyn Launcher,
        events: &mut Vec<Event>,
    ) {
        // Stop deadlines.
        if let Some(st) = &mut s.stopping {
            if st.deadline.is_some_and(|d| now >= d) {
                match st.phase {
                    StopPhase::PreStop { .. } => {
                        if let Some(main) = s.pid {
                            l.signal(main, s.spec.stop.signal);
                        }
                        st.phase = StopPhase::Signaled;
                        st.deadline = Some(now + s.spec.stop.grace);
                    }
                    StopPhase::Signaled | StopPhase::Killed => {
                        l.kill_all(&s.spec, s.pid);
                        st.phase = StopPhase::Killed;
                        st.deadline = None;
                    }
                }
            }
            return;
        }
        // Backoff over.
        if s.state == State::Backoff && s.backoff_until.is_some_and(|t| now >= t) {
            s.state = State::Waiting;
            s.backoff_until = None;
            return;
        }
        // Readiness.
        if s.state == State::Starting {
            let probe = match &s.spec.readiness.kind {
                Readiness::Probe(p) => Some(p.clone()),
                _ => None,
            };
            if let ReadyState::Pending {
                next_probe,
                deadline,
                check,
            } = s.ready.clone()
            {
                if now >= deadline {
                    if let Some(c) = check {
                        l.signal(c.pid, Signal::KILL);
                    }
                    s.ready = ReadyState::Failed;
                    let reason = format!(
                        "not ready within {} ms",
                        s.spec.readiness.timeout.as_millis()
                    );
                    Self::begin_stop(s, AfterStop::Failure(reason), now, l, events);
                    return;
                }
                if let (Some(p), None) = (probe, check) {
                    if now >= next_probe {
                        match Self::run_probe(s, &p, ProcessKind::Readiness, l) {
                            Ok(Some(true)) => Self::mark_ready(s, now, events),
                            Ok(_) => {
                                s.ready = ReadyState::Pending {
                                    next_probe: now + s.spec.readiness.interval,
                                    deadline,
                                    check: None,
                                }
                            }
                            Err(pid) => {
                                s.ready = ReadyState::Pending {
                                    next_probe,
                                    deadline,
                                    check: Some(Check { pid, deadline }),
                                }
                            }
                        }
                    }
                }
            }
            return;
        }
        // Health.
        if s.state == State::Running {
            let Some(h) = s.spec.health.clone() else {
                return;
            };
            if let Some(c) = s.health.check {
                if now >= c.deadline {
                    l.signal(c.pid, Signal::KILL);
                    s.health.check = None;
                    Self::health_result(s, false, now, l, events);
                }
                return;
            }
            if s.health.next_at.is_some_and(|t| now >= t) {
                match Self::run_probe(s, &h.probe, ProcessKind::Health, l) {
                    Ok(Some(ok)) => Self::health_result(s, ok, now, l, events),
                    Ok(None) => {}
                    Err(pid) => {
                        s.health.check = Some(Check {
                            pid,
                            deadline: now + h.timeout,
                        });
                        s.health.next_at = None;
                    }
                }
            }
        }
    }
}

fn lookup<'a>(
    services: &'a mut BTreeMap<String, Service>,
    rejected: &[Rejected],
    name: &str,
) -> Result<&'a mut Service, ControlError> {
    if let Some(r) = rejected.iter().find(|r| r.name == name) {
        return Err(ControlError::Rejected {
            name: name.to_owned(),
            reason: r.reason.clone(),
        });
    }
    services
        .get_mut(name)
        .ok_or_else(|| ControlError::NotFound(name.to_owned()))
}

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
