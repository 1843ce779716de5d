//! The shutdown sequence as a pure phase machine: given the time and what
//! is still running, it says which steps to take next. The event loop
//! carries the steps out through its effects, so the order (stop services,
//! SIGTERM, SIGKILL, sync, unmount, reboot) is unit-tested here.

use std::time::{Duration, Instant};

use bascule_sys::power::PowerAction;

use crate::config::Mode;
use crate::effects::KillSignal;

/// Bound on waiting for services to stop at shutdown.
pub const SERVICES_DEADLINE: Duration = Duration::from_secs(90);
/// Between SIGTERM and SIGKILL for processes outside any service.
pub const KILL_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Services stop in reverse dependency order, each with its grace.
    StoppingServices,
    /// PID 1 only: what is left got SIGTERM and has until the deadline.
    KillingRest,
    /// The final steps were handed out.
    Finished,
    /// reboot(2) failed: keep serving so the machine stays manageable.
    Halted,
}

/// One thing to do, in the order given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    StopServices,
    /// SIGKILL every service's cgroup or process group.
    KillServices,
    SignalAll(KillSignal),
    /// PID 1 only: processes outlived the SIGTERM grace (logged: something
    /// ignored SIGTERM and cost the shutdown the whole grace).
    GraceExpired,
    Reap,
    DisarmWatchdog,
    FlushClients,
    /// PID 1's own open log files would keep /var busy.
    CloseLogFiles,
    /// Supervise mode: the services' cgroups and the socket file go.
    RemoveCgroups,
    RemoveSocket,
    Sync,
    UnmountAll,
    /// reboot(2); the loop reports back with [`Shutdown::power_failed`].
    Power(PowerAction),
    /// Supervise mode: the process ends.
    Exit(PowerAction),
}

/// What the machine looks like now, as the phase machine needs it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub services_down: bool,
    pub children_left: bool,
}

#[derive(Debug)]
pub struct Shutdown {
    mode: Mode,
    action: PowerAction,
    phase: Phase,
    deadline: Instant,
}

impl Shutdown {
    pub fn begin(mode: Mode, action: PowerAction, now: Instant) -> (Shutdown, Vec<Step>) {
        let s = Shutdown {
            mode,
            action,
            phase: Phase::StoppingServices,
            deadline: now + SERVICES_DEADLINE,
        };
        (s, vec![Step::StopServices])
    }

    /// A second request while shutting down: a power-off wins over a reboot.
    pub fn request(&mut self, action: PowerAction) {
        if action == PowerAction::Poweroff {
            self.action = action;
        }
    }

    #[cfg(test)]
    pub fn action(&self) -> PowerAction {
        self.action
    }

    #[cfg(test)]
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// When the loop must wake up for this sequence, if ever.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::StoppingServices | Phase::KillingRest => Some(self.deadline),
            Phase::Finished | Phase::Halted => None,
        }
    }

    /// The steps due now; empty while waiting.
    pub fn advance(&mut self, now: Instant, p: Progress) -> Vec<Step> {
        match self.phase {
            Phase::StoppingServices => {
                if !p.services_down && now < self.deadline {
                    return Vec::new();
                }
                let mut steps = vec![Step::KillServices];
                match self.mode {
                    Mode::Supervise => {
                        steps.extend([
                            Step::FlushClients,
                            Step::CloseLogFiles,
                            Step::RemoveCgroups,
                            Step::RemoveSocket,
                            Step::Exit(self.action),
                        ]);
                        self.phase = Phase::Finished;
                    }
                    Mode::Pid1 => {
                        steps.push(Step::SignalAll(KillSignal::Term));
                        self.phase = Phase::KillingRest;
                        self.deadline = now + KILL_GRACE;
                    }
                }
                steps
            }
            Phase::KillingRest => {
                if p.children_left && now < self.deadline {
                    return Vec::new();
                }
                let mut steps = Vec::new();
                if p.children_left {
                    steps.push(Step::GraceExpired);
                }
                steps.push(Step::SignalAll(KillSignal::Kill));
                if self.action == PowerAction::Poweroff {
                    steps.push(Step::DisarmWatchdog);
                }
                steps.extend([
                    Step::Reap,
                    Step::FlushClients,
                    Step::CloseLogFiles,
                    Step::Sync,
                    Step::UnmountAll,
                    Step::Sync,
                    Step::Power(self.action),
                ]);
                self.phase = Phase::Finished;
                steps
            }
            Phase::Finished | Phase::Halted => Vec::new(),
        }
    }

    pub fn power_failed(&mut self) {
        self.phase = Phase::Halted;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSY: Progress = Progress {
        services_down: false,
        children_left: true,
    };
    const DOWN: Progress = Progress {
        services_down: true,
        children_left: true,
    };

    #[test]
    fn pid1_stops_services_then_terms_then_kills_then_syncs_unmounts_and_reboots() {
        let t0 = Instant::now();
        let (mut s, steps) = Shutdown::begin(Mode::Pid1, PowerAction::Reboot, t0);
        assert_eq!(steps, vec![Step::StopServices]);
        assert_eq!(s.advance(t0, BUSY), vec![], "services still stopping");
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(
            s.advance(t1, DOWN),
            vec![Step::KillServices, Step::SignalAll(KillSignal::Term)]
        );
        assert_eq!(s.deadline(), Some(t1 + KILL_GRACE));
        assert_eq!(s.advance(t1, DOWN), vec![], "the rest has its grace");
        let steps = s.advance(t1 + KILL_GRACE, DOWN);
        assert_eq!(
            steps,
            vec![
                Step::GraceExpired,
                Step::SignalAll(KillSignal::Kill),
                Step::Reap,
                Step::FlushClients,
                Step::CloseLogFiles,
                Step::Sync,
                Step::UnmountAll,
                Step::Sync,
                Step::Power(PowerAction::Reboot),
            ]
        );
        assert_eq!(s.deadline(), None);
        s.power_failed();
        assert_eq!(s.phase(), Phase::Halted);
        assert_eq!(s.advance(t1 + KILL_GRACE * 10, DOWN), vec![]);
    }

    #[test]
    fn the_kill_grace_ends_early_when_nothing_is_left() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(Mode::Pid1, PowerAction::Reboot, t0);
        s.advance(t0, DOWN);
        let gone = Progress {
            services_down: true,
            children_left: false,
        };
        assert_eq!(s.advance(t0, gone)[0], Step::SignalAll(KillSignal::Kill));
    }

    #[test]
    fn services_that_never_stop_are_killed_at_the_deadline() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(Mode::Pid1, PowerAction::Reboot, t0);
        assert_eq!(
            s.advance(t0 + SERVICES_DEADLINE - Duration::from_millis(1), BUSY),
            vec![]
        );
        assert_eq!(
            s.advance(t0 + SERVICES_DEADLINE, BUSY)[0],
            Step::KillServices
        );
    }

    #[test]
    fn a_poweroff_wins_and_disarms_the_watchdog() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(Mode::Pid1, PowerAction::Reboot, t0);
        s.request(PowerAction::Poweroff);
        s.request(PowerAction::Reboot);
        assert_eq!(s.action(), PowerAction::Poweroff);
        s.advance(t0, DOWN);
        let steps = s.advance(t0 + KILL_GRACE, DOWN);
        assert_eq!(steps[2], Step::DisarmWatchdog);
        assert_eq!(steps.last(), Some(&Step::Power(PowerAction::Poweroff)));
    }

    #[test]
    fn supervise_mode_cleans_up_and_exits_without_signalling_the_host() {
        let t0 = Instant::now();
        let (mut s, _) = Shutdown::begin(Mode::Supervise, PowerAction::Poweroff, t0);
        let steps = s.advance(t0, DOWN);
        assert!(!steps
            .iter()
            .any(|s| matches!(s, Step::SignalAll(_) | Step::Power(_))));
        assert_eq!(steps.last(), Some(&Step::Exit(PowerAction::Poweroff)));
    }
}
