//! The supervisor: every service's state machine, driven by events (a
//! process exited, a timer fired, a notify message, an operator request).
//! All effects go through the [`Launcher`] so this logic is unit-tested with
//! a recording fake; time is passed in as `now`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::effects::{Event, Launcher, Sender};
use crate::graph::{self, Catalog, Rejected};
use crate::spec::Class;
use crate::state::{AfterStop, Check, CheckId, ReadyState, Service, StopPhase, Stopping};
use crate::status::{Exit, Health, ReadinessStatus, ServiceStatus, State};
use crate::{notify, transitions};

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
    /// A class being stopped in reverse dependency order (an upgrade's drain).
    draining: Option<Class>,
    events: Vec<Event>,
    /// Services a reload removed or changed, waiting for their process to
    /// end before they go or take their new definition.
    pending: BTreeMap<String, reload::Pending>,
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
            draining: None,
            events: Vec::new(),
            pending: BTreeMap::new(),
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
    pub fn list(&self, now: Instant) -> Vec<ServiceStatus> {
        let mut out: Vec<ServiceStatus> = self
            .order
            .iter()
            .filter_map(|n| self.services.get(n))
            .map(|s| s.status(now))
            .collect();
        out.extend(self.rejected.iter().map(|r| ServiceStatus {
            name: r.name.clone(),
            state: State::Failed,
            pid: None,
            restarts: 0,
            uptime: Duration::ZERO,
            readiness: ReadinessStatus::Failed,
            health: Health::None,
            class: None,
            last_exit: None,
            reason: r.reason.clone(),
            status_text: String::new(),
            depends_on: Vec::new(),
        }));
        out
    }

    pub fn status(&self, name: &str, now: Instant) -> Result<ServiceStatus, ControlError> {
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

    /// The services that keep [`Self::all_up`] false, in start order, with
    /// why (rejected files by name too): what a failed self-check names.
    pub fn not_up(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .order
            .iter()
            .filter_map(|n| self.services.get(n).map(|s| (n, s)))
            .filter_map(|(n, s)| match (s.state, &s.ready) {
                // Started, its readiness check not passed yet.
                (State::Starting, _) | (State::Running, ReadyState::Pending { .. }) => {
                    Some(format!("{n} (not ready)"))
                }
                (State::Running | State::Exited, _) => None,
                (state, _) => Some(format!("{n} ({})", state.label())),
            })
            .collect();
        out.extend(
            self.rejected
                .iter()
                .map(|r| format!("{} (rejected)", r.name)),
        );
        out
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
        if !cordoned {
            self.draining = None;
        }
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
        transitions::begin_stop(s, AfterStop::Down, now, l, &mut self.events);
        self.advance(now, l);
        Ok(())
    }

    pub fn restart(
        &mut self,
        name: &str,
        now: Instant,
        l: &mut dyn Launcher,
    ) -> Result<(), ControlError> {
        if self.shutting_down {
            return Err(ControlError::Refused {
                name: name.to_owned(),
                reason: "the machine is shutting down".into(),
            });
        }
        let s = lookup(&mut self.services, &self.rejected, name)?;
        if s.state.is_active() {
            s.want_up = true;
            s.consecutive = 0;
            transitions::begin_stop(s, AfterStop::Restart, now, l, &mut self.events);
            self.advance(now, l);
            Ok(())
        } else {
            self.start(name, now, l)
        }
    }

    /// Stops every service of `class`, dependents first (an upgrade's drain).
    pub fn stop_class(&mut self, class: Class, now: Instant, l: &mut dyn Launcher) {
        self.draining = Some(class);
        for s in self.services.values_mut() {
            if s.spec.class == class {
                s.want_up = false;
            }
        }
        self.advance(now, l);
    }

    /// The services of `class` that still have a process.
    pub fn active_in_class(&self, class: Class) -> Vec<String> {
        self.order
            .iter()
            .filter_map(|n| self.services.get(n))
            .filter(|s| s.spec.class == class && s.state.is_active())
            .map(|s| s.spec.name.clone())
            .collect()
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
                transitions::main_exited(s, exit, now, l, &mut self.events);
            } else {
                transitions::check_exited(s, pid, exit, now, l, &mut self.events);
            }
        }
        self.advance(now, l);
        true
    }

    /// A TCP probe's connect finished (`ok`: it connected). Returns false
    /// when no probe waits for it any more (it was abandoned).
    pub fn on_probe_result(
        &mut self,
        id: u64,
        ok: bool,
        now: Instant,
        l: &mut dyn Launcher,
    ) -> bool {
        let check = CheckId::Connect(id);
        let waits = |c: &Option<Check>| c.is_some_and(|c| c.id == check);
        let Some(s) = self.services.values_mut().find(|s| {
            matches!(&s.ready, ReadyState::Pending { check, .. } if waits(check))
                || waits(&s.health.check)
        }) else {
            return false;
        };
        transitions::check_finished(s, check, ok, now, l, &mut self.events);
        self.advance(now, l);
        true
    }

    /// A datagram from the service's NOTIFY_SOCKET (sd_notify protocol),
    /// sent by process `sender`.
    pub fn on_notify(
        &mut self,
        name: &str,
        sender: Option<Sender>,
        message: &str,
        now: Instant,
        l: &mut dyn Launcher,
    ) {
        let Some(s) = self.services.get_mut(name) else {
            return;
        };
        notify::apply(s, sender, message, now, l, &mut self.events);
        self.advance(now, l);
    }

    /// Timers: backoff ends, probes, readiness and stop deadlines.
    pub fn on_timer(&mut self, now: Instant, l: &mut dyn Launcher) {
        let names: Vec<String> = self.order.clone();
        for name in names {
            let Some(s) = self.services.get_mut(&name) else {
                continue;
            };
            transitions::service_timers(s, now, l, &mut self.events);
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
            let check_pid = |c: &Option<Check>| c.is_some_and(|c| c.id == CheckId::Process(pid));
            let owns = s.pid == Some(pid)
                || matches!(&s.ready, ReadyState::Pending { check, .. } if check_pid(check))
                || check_pid(&s.health.check)
                || matches!(&s.stopping, Some(Stopping { phase: StopPhase::PreStop { pid: p }, .. }) if *p == pid);
            owns.then(|| s.spec.name.clone())
        })
    }

    /// Starts what can start and stops what must stop, until nothing changes.
    fn advance(&mut self, now: Instant, l: &mut dyn Launcher) {
        self.settle_pending();
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
                                dep.state != State::Running
                                    || matches!(dep.ready, ReadyState::Pending { .. })
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
                            transitions::spawn_main(s, now, l, &mut self.events);
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
                        if !s.want_up
                            && (self.shutting_down || self.draining == Some(s.spec.class))
                            && s.stopping.is_none() =>
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
                            transitions::begin_stop(s, AfterStop::Down, now, l, &mut self.events);
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

#[path = "reload.rs"]
mod reload;
pub use reload::ReloadReport;

#[cfg(test)]
#[path = "supervisor_tests.rs"]
mod tests;
