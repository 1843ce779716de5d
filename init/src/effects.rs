//! The seam between PID 1's policy and the kernel: every system-wide effect
//! the event loop and the shutdown sequence perform goes through
//! [`Effects`]. The real implementation is a thin layer over `bascule-sys`;
//! tests use a recording fake, so the order of a shutdown, the routing of
//! the loop and the confirmation of a slot try are checked without booting.

use std::time::Duration;

use bascule_sys::power::PowerAction;
use bascule_sys::reap::{self, WaitStatus};
use bascule_sys::watchdog::Watchdog;

use crate::log;

/// The signal sent to every process but PID 1 during a shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillSignal {
    Term,
    Kill,
}

pub trait Effects {
    /// Signals every process except PID 1 itself.
    fn signal_all(&mut self, signal: KillSignal);
    /// Collects every exited child, orphans included, without blocking.
    fn reap(&mut self) -> Vec<(u32, WaitStatus)>;
    /// True while some child (exited or not) is left.
    fn has_children(&mut self) -> bool;
    fn sync(&mut self);
    /// Unmounts every filesystem it can; returns what failed, for the log.
    fn unmount_all(&mut self) -> Vec<String>;
    /// reboot(2). Returns only when the kernel refused, with the reason.
    fn power(&mut self, action: PowerAction) -> String;
    /// How often the hardware watchdog must be fed; None without one.
    fn watchdog_interval(&self) -> Option<Duration>;
    fn feed_watchdog(&mut self) -> Result<(), String>;
    /// Stops the hardware watchdog (a power-off on purpose is not a hang).
    fn disarm_watchdog(&mut self);
}

/// The effects of a real PID 1 (or of a supervisor on a host).
pub struct SystemEffects {
    watchdog: Option<Watchdog>,
}

impl SystemEffects {
    pub fn new(watchdog: Option<Watchdog>) -> Self {
        SystemEffects { watchdog }
    }
}

impl Effects for SystemEffects {
    fn signal_all(&mut self, signal: KillSignal) {
        match signal {
            KillSignal::Term => {
                bascule_sys::power::signal_all(libc::SIGTERM);
                // A stopped process that handles SIGTERM acts on it only
                // once continued; without this it would sit out the whole
                // grace (systemd sends SIGCONT after SIGTERM for this).
                bascule_sys::power::signal_all(libc::SIGCONT);
            }
            KillSignal::Kill => bascule_sys::power::signal_all(libc::SIGKILL),
        }
    }

    fn reap(&mut self) -> Vec<(u32, WaitStatus)> {
        reap::reap_all()
    }

    fn has_children(&mut self) -> bool {
        reap::has_children()
    }

    fn sync(&mut self) {
        bascule_sys::power::sync();
    }

    fn unmount_all(&mut self) -> Vec<String> {
        bascule_sys::mount::unmount_all()
            .into_iter()
            .map(|f| f.to_string())
            .collect()
    }

    fn power(&mut self, action: PowerAction) -> String {
        bascule_sys::power::execute(action).to_string()
    }

    fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.as_ref().map(Watchdog::interval)
    }

    fn feed_watchdog(&mut self) -> Result<(), String> {
        match &self.watchdog {
            Some(wd) => wd.feed().map_err(|e| e.to_string()),
            None => Ok(()),
        }
    }

    fn disarm_watchdog(&mut self) {
        if let Some(wd) = self.watchdog.take() {
            log!("disarming the hardware watchdog");
            wd.disarm();
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
// The fuzz bodies use only part of what the unit tests do.
#[cfg_attr(not(test), allow(dead_code))]
pub mod fake {
    //! A recording [`Effects`] for unit tests.

    use std::cell::RefCell;
    use std::collections::VecDeque;
    use std::rc::Rc;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Effect {
        SignalAll(KillSignal),
        Sync,
        UnmountAll,
        Power(PowerAction),
        FeedWatchdog,
        DisarmWatchdog,
        /// What a fake launcher was asked to do, in the same journal.
        Service(String),
    }

    #[derive(Default)]
    pub struct World {
        pub log: Vec<Effect>,
        /// Answers of successive reap() calls.
        pub exits: VecDeque<Vec<(u32, WaitStatus)>>,
        pub children: bool,
    }

    #[derive(Clone, Default)]
    pub struct FakeEffects(pub Rc<RefCell<World>>);

    impl FakeEffects {
        pub fn log(&self) -> Vec<Effect> {
            self.0.borrow().log.clone()
        }
        pub fn record(&self, e: Effect) {
            self.0.borrow_mut().log.push(e);
        }
        fn push(&self, e: Effect) {
            self.record(e);
        }
    }

    impl Effects for FakeEffects {
        fn signal_all(&mut self, signal: KillSignal) {
            self.push(Effect::SignalAll(signal));
        }
        fn reap(&mut self) -> Vec<(u32, WaitStatus)> {
            self.0.borrow_mut().exits.pop_front().unwrap_or_default()
        }
        fn has_children(&mut self) -> bool {
            self.0.borrow().children
        }
        fn sync(&mut self) {
            self.push(Effect::Sync);
        }
        fn unmount_all(&mut self) -> Vec<String> {
            self.push(Effect::UnmountAll);
            Vec::new()
        }
        fn power(&mut self, action: PowerAction) -> String {
            self.push(Effect::Power(action));
            "the fake kernel does not reboot".into()
        }
        fn watchdog_interval(&self) -> Option<Duration> {
            Some(Duration::from_secs(5))
        }
        fn feed_watchdog(&mut self) -> Result<(), String> {
            self.push(Effect::FeedWatchdog);
            Ok(())
        }
        fn disarm_watchdog(&mut self) {
            self.push(Effect::DisarmWatchdog);
        }
    }
}
