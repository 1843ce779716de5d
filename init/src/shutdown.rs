//! Shutdown, reboot and power-off: services stop in reverse dependency order
//! with their grace periods; then (as PID 1) SIGTERM and SIGKILL for what is
//! left, sync, unmount, reboot(2). Each phase has a deadline on the loop's timer.

use std::time::{Duration, Instant};

use crate::event_loop::{Init, Mode};
use crate::log;
use bascule_sys::clock::{self, Clock};
use bascule_sys::power::PowerAction;
use bascule_sys::reap;

/// Bound on waiting for services to stop at shutdown.
const SHUTDOWN_SERVICES_DEADLINE: Duration = Duration::from_secs(90);
/// Between SIGTERM and SIGKILL for processes outside any service.
const SHUTDOWN_KILL_GRACE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShutdownPhase {
    StoppingServices,
    KillingRest,
    /// reboot(2) failed: keep serving so the machine stays manageable.
    Halted,
}

pub(crate) struct Shutdown {
    pub(crate) action: PowerAction,
    pub(crate) phase: ShutdownPhase,
    pub(crate) deadline: Instant,
}

impl<C: Clock> Init<C> {
    pub(crate) fn begin_shutdown(&mut self, action: PowerAction) {
        if let Some(s) = &mut self.shutdown {
            // A power-off request wins over a reboot in progress.
            if action == PowerAction::Poweroff {
                s.action = action;
            }
            return;
        }
        log!("{}: stopping services", action.label());
        let now = self.now();
        self.timeline.push((
            format!("{} requested", action.label()),
            clock::boottime_us(),
        ));
        self.shutdown = Some(Shutdown {
            action,
            phase: ShutdownPhase::StoppingServices,
            deadline: now + SHUTDOWN_SERVICES_DEADLINE,
        });
        self.sup.stop_all(now, &mut self.launcher);
    }

    pub(crate) fn advance_shutdown(&mut self) -> Option<PowerAction> {
        let now = self.now();
        let s = self.shutdown.as_mut()?;
        match s.phase {
            ShutdownPhase::StoppingServices => {
                if !self.sup.all_down() && now < s.deadline {
                    return None;
                }
                if !self.sup.all_down() {
                    log!(
                        "services still running after {SHUTDOWN_SERVICES_DEADLINE:?}: killing them"
                    );
                }
                for name in self.sup.names().cloned().collect::<Vec<_>>() {
                    if let Some(svc) = self.sup.service(&name) {
                        let spec = svc.spec.clone();
                        let pid = svc.pid;
                        bascule_services::Launcher::kill_all(&mut self.launcher, &spec, pid);
                    }
                }
                let action = s.action;
                match self.cfg.mode {
                    Mode::Supervise => {
                        self.flush_all_conns();
                        self.close_log_files();
                        if let Some(cg) = &self.launcher.cgroups {
                            cg.remove_all();
                        }
                        let _ = std::fs::remove_file(&self.cfg.socket);
                        return Some(action);
                    }
                    Mode::Pid1 => {
                        log!("sending SIGTERM to all remaining processes");
                        bascule_sys::power::signal_all(libc::SIGTERM);
                        s.phase = ShutdownPhase::KillingRest;
                        s.deadline = now + SHUTDOWN_KILL_GRACE;
                    }
                }
                None
            }
            ShutdownPhase::KillingRest => {
                if reap::has_children() && now < s.deadline {
                    return None;
                }
                let action = s.action;
                bascule_sys::power::signal_all(libc::SIGKILL);
                if action == PowerAction::Poweroff {
                    // Powering off on purpose: do not let the watchdog turn it into a reset.
                    if let Some((wd, _)) = self.watchdog.take() {
                        wd.disarm();
                    }
                }
                reap::reap_all();
                self.flush_all_conns();
                // PID 1's own open log files would keep /var busy.
                self.close_log_files();
                crate::pid1::final_shutdown(action);
                // Only reached when reboot(2) failed.
                if let Some(s) = self.shutdown.as_mut() {
                    s.phase = ShutdownPhase::Halted;
                }
                None
            }
            ShutdownPhase::Halted => None,
        }
    }

    pub(crate) fn close_log_files(&mut self) {
        for ring in self.logs.values_mut() {
            ring.detach_file();
        }
    }

    pub(crate) fn flush_all_conns(&mut self) {
        for conn in self.conns.values_mut() {
            let _ = conn.flush();
        }
    }
}
