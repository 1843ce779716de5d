//! Per-service transitions of the supervisor: starting the main process,
//! readiness, health, stopping with grace, and what follows an exit. Each
//! takes one service, `now` and the launcher; `supervisor.rs` decides which
//! service to move and when.

use std::time::{Duration, Instant};

use crate::backoff::{self, RestartDecision};
use crate::effects::{Event, Launcher, ProcessKind, TcpProbe};
use crate::signal::Signal;
use crate::spec::{Probe, Readiness, RestartPolicy};
use crate::state::{AfterStop, Check, CheckId, ReadyState, Service, StopPhase, Stopping};
use crate::status::{Exit, Health, State};

/// Shortest wait before retrying a start that failed to spawn at all.
pub(crate) const SPAWN_RETRY_MIN: Duration = Duration::from_millis(100);

pub(crate) fn spawn_main(
    s: &mut Service,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    s.generation += 1;
    s.notify_refused = None;
    s.backoff_until = None;
    match l.spawn(&s.spec, ProcessKind::Main, &s.spec.exec) {
        Ok(pid) => {
            s.pid = Some(pid);
            s.started_at = Some(now);
            s.state = State::Starting;
            s.reason.clear();
            s.health.status = if s.spec.health.is_some() {
                Health::Unknown
            } else {
                Health::None
            };
            s.health.consecutive_failures = 0;
            s.health.check = None;
            s.health.next_at = None;
            events.push(Event::Started {
                name: s.spec.name.clone(),
                pid,
            });
            match &s.spec.readiness.kind {
                Readiness::None => mark_ready(s, now, events),
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
            if e.is_permanent() {
                give_up(s, reason, events);
                return;
            }
            // Never retried inside this call: a spawn that keeps failing
            // with a zero backoff would otherwise recurse without end.
            after_failure(s, reason, SPAWN_RETRY_MIN, now, l, events);
        }
    }
}

pub(crate) fn mark_ready(s: &mut Service, now: Instant, events: &mut Vec<Event>) {
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

pub(crate) fn begin_stop(
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
        if then == AfterStop::Down || (st.then == AfterStop::Down && then == AfterStop::Restart) {
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

pub(crate) fn main_exited(
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
            AfterStop::Failure(reason) => after_failure(s, reason, Duration::ZERO, now, l, events),
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
        if exit.success() {
            s.state = State::Exited;
            s.reason.clear();
        } else {
            let reason = format!("{exit}; restart = {:?} does not restart it", s.spec.restart);
            give_up(s, reason, events);
        }
        return;
    }
    schedule_restart(s, exit.to_string(), Duration::ZERO, now, l, events);
}

/// The service stays down as failed, with the reason shown to operators.
fn give_up(s: &mut Service, reason: String, events: &mut Vec<Event>) {
    s.state = State::Failed;
    s.reason = reason.clone();
    events.push(Event::Failed {
        name: s.spec.name.clone(),
        reason,
    });
}

/// A failed start, readiness or health: restart if the policy allows.
pub(crate) fn after_failure(
    s: &mut Service,
    reason: String,
    min_delay: Duration,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    if !s.want_up || s.spec.restart == RestartPolicy::Never {
        give_up(s, reason, events);
        return;
    }
    schedule_restart(s, reason, min_delay, now, l, events);
}

pub(crate) fn schedule_restart(
    s: &mut Service,
    reason: String,
    min_delay: Duration,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    match backoff::decide(&s.spec.backoff, s.consecutive) {
        RestartDecision::GiveUp => {
            let reason = format!(
                "{reason}; gave up after {} consecutive restarts",
                s.consecutive
            );
            give_up(s, reason, events);
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
                spawn_main(s, now, l, events);
            } else {
                s.state = State::Backoff;
                s.backoff_until = Some(now + delay);
            }
        }
    }
}

pub(crate) fn check_exited(
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
    check_finished(s, CheckId::Process(pid), exit.success(), now, l, events);
}

/// A readiness or health probe in flight has its result.
pub(crate) fn check_finished(
    s: &mut Service,
    id: CheckId,
    ok: bool,
    now: Instant,
    l: &mut dyn Launcher,
    events: &mut Vec<Event>,
) {
    if let ReadyState::Pending {
        check, next_probe, ..
    } = &mut s.ready
    {
        if check.is_some_and(|c| c.id == id) {
            *check = None;
            if ok {
                mark_ready(s, now, events);
            } else {
                *next_probe = now + s.spec.readiness.interval;
            }
            return;
        }
    }
    if s.health.check.is_some_and(|c| c.id == id) {
        s.health.check = None;
        health_result(s, ok, now, l, events);
    }
}

/// Ends a probe in flight that ran out of time.
fn abandon(c: Check, l: &mut dyn Launcher) {
    match c.id {
        CheckId::Process(pid) => l.signal(pid, Signal::KILL),
        CheckId::Connect(id) => l.cancel_probe(id),
    }
}

pub(crate) fn health_result(
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
        s.health.status = Health::Healthy;
        return;
    }
    s.health.consecutive_failures += 1;
    if s.health.consecutive_failures >= spec.failures && s.health.status != Health::Unhealthy {
        s.health.status = Health::Unhealthy;
        events.push(Event::Unhealthy {
            name: s.spec.name.clone(),
        });
        if s.spec.restart != RestartPolicy::Never {
            let reason = format!(
                "health check failed {} times in a row",
                s.health.consecutive_failures
            );
            begin_stop(s, AfterStop::Failure(reason), now, l, events);
        }
    }
}

/// Bound on one TCP probe's connect; loopback answers at once.
pub const TCP_CONNECT_TIMEOUT: Duration = Duration::from_millis(250);

/// Runs a probe. Returns Ok(result) when it is known at once, Err with
/// what to wait for when the result comes later (an exit or a connect).
pub(crate) fn run_probe(
    s: &Service,
    probe: &Probe,
    kind: ProcessKind,
    l: &mut dyn Launcher,
) -> Result<bool, CheckId> {
    match probe {
        Probe::Tcp(port) => match l.probe_tcp(*port) {
            TcpProbe::Done(ok) => Ok(ok),
            TcpProbe::Connecting(id) => Err(CheckId::Connect(id)),
        },
        Probe::Path(p) => Ok(l.probe_path(p)),
        Probe::Exec(argv) => match l.spawn(&s.spec, kind, argv) {
            Ok(pid) => Err(CheckId::Process(pid)),
            Err(_) => Ok(false),
        },
    }
}

pub(crate) fn service_timers(
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
                    abandon(c, l);
                }
                s.ready = ReadyState::Failed;
                let reason = format!(
                    "not ready within {} ms",
                    s.spec.readiness.timeout.as_millis()
                );
                begin_stop(s, AfterStop::Failure(reason), now, l, events);
                return;
            }
            // A connect that hangs counts as a failed probe; the next one follows.
            if let Some(c) = check.filter(|c| now >= c.deadline) {
                if matches!(c.id, CheckId::Connect(_)) {
                    abandon(c, l);
                    s.ready = ReadyState::Pending {
                        next_probe: now + s.spec.readiness.interval,
                        deadline,
                        check: None,
                    };
                    return;
                }
            }
            if let (Some(p), None) = (probe, check) {
                if now >= next_probe {
                    match run_probe(s, &p, ProcessKind::Readiness, l) {
                        Ok(true) => mark_ready(s, now, events),
                        Ok(false) => {
                            s.ready = ReadyState::Pending {
                                next_probe: now + s.spec.readiness.interval,
                                deadline,
                                check: None,
                            }
                        }
                        Err(id) => {
                            let check_deadline = match id {
                                CheckId::Connect(_) => deadline.min(now + TCP_CONNECT_TIMEOUT),
                                CheckId::Process(_) => deadline,
                            };
                            s.ready = ReadyState::Pending {
                                next_probe,
                                deadline,
                                check: Some(Check {
                                    id,
                                    deadline: check_deadline,
                                }),
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
                abandon(c, l);
                s.health.check = None;
                health_result(s, false, now, l, events);
            }
            return;
        }
        if s.health.next_at.is_some_and(|t| now >= t) {
            match run_probe(s, &h.probe, ProcessKind::Health, l) {
                Ok(ok) => health_result(s, ok, now, l, events),
                Err(id) => {
                    let timeout = match id {
                        CheckId::Connect(_) => h.timeout.min(TCP_CONNECT_TIMEOUT),
                        CheckId::Process(_) => h.timeout,
                    };
                    s.health.check = Some(Check {
                        id,
                        deadline: now + timeout,
                    });
                    s.health.next_at = None;
                }
            }
        }
    }
}
