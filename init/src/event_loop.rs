//! The event loop: one epoll over the signalfd, one timerfd, the control
//! socket and its clients, service output pipes and notify sockets. It only
//! routes: each source's events go to the part that owns it, and the parts'
//! outcomes go to the supervisor, the slot keeper and the shutdown
//! sequence. Nothing blocks and nothing polls: every wake-up has a cause.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::time::Instant;

use bascule_services::{Event, Supervisor};
use bascule_sys::clock::Clock;
use bascule_sys::epoll::{Epoll, Interest};
use bascule_sys::power::PowerAction;
use bascule_sys::reap::WaitStatus;
use bascule_sys::signals::{SignalEvent, Signals};
use bascule_sys::timer::Timer;

use crate::config::Config;
use crate::console::Backlog;
use crate::control::ControlServer;
use crate::deferred::Deferred;
use crate::effects::Effects;
use crate::launcher::ServiceLauncher;
use crate::logcapture::LogCapture;
use crate::main_pids::MainPids;
use crate::notify::NotifySockets;
use crate::probes::Probes;
use crate::shutdown::{Progress, Shutdown, Step};
use crate::slot_keeper::{Settled, SlotKeeper, Verdict};
use crate::timeline::Timeline;
use crate::tokens::{Ids, Source};
use crate::upgrades::Upgrades;
use crate::waiters::Waiters;
use crate::{log, log_routine};

/// One thing that woke the loop, as the parts see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEvent {
    Signal(SignalEvent),
    Timer,
    Accept,
    Conn(u64, Interest),
    Pipe(u64),
    Notify(u64),
    Probe(u64),
    /// A main process named by MAINPID= has exited.
    MainPid(u64),
    UpgradeBell,
    UpgradeFeed,
    /// The console can take more of PID 1's output.
    Console,
    /// Answers computed off the loop are ready.
    DeferredBell,
}

/// Whether the console is in the epoll set (only while output waits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConsoleWatch {
    Idle,
    Writable,
}

/// Everything PID 1 is made of; its effects on the machine go through
/// `effects` and `launcher`, and time comes from `clock`.
pub struct Init {
    pub(crate) cfg: Config,
    clock: Box<dyn Clock>,
    effects: Box<dyn Effects>,
    pub(crate) launcher: Box<dyn ServiceLauncher>,
    pub(crate) sup: Supervisor,
    pub(crate) epoll: Epoll,
    signals: Signals,
    timer: Timer,
    ids: Ids,
    pub(crate) control: ControlServer,
    pub(crate) logs: LogCapture,
    notify: NotifySockets,
    main_pids: MainPids,
    probes: Probes,
    pub(crate) waiters: Waiters,
    pub(crate) timeline: Timeline,
    shutdown: Option<Shutdown>,
    pub(crate) keeper: SlotKeeper,
    pub(crate) upgrades: Upgrades,
    /// When the hardware watchdog is next due.
    watchdog_due: Option<Instant>,
    /// PID 1's console while its output is buffered (see `console`).
    console: Option<OwnedFd>,
    console_watch: ConsoleWatch,
    /// API answers computed on threads (the cluster calls).
    pub(crate) deferred: Deferred,
}

/// The parts `Init` is built from.
pub struct Parts {
    pub cfg: Config,
    pub clock: Box<dyn Clock>,
    pub effects: Box<dyn Effects>,
    pub launcher: Box<dyn ServiceLauncher>,
    pub sup: Supervisor,
    pub listener: UnixListener,
    pub timeline: Timeline,
    pub keeper: SlotKeeper,
    /// The journals of past upgrades.
    pub journals: Vec<bascule_sequencer::Journal>,
    /// The console to watch for EPOLLOUT, when its output is buffered.
    pub console: Option<OwnedFd>,
}

impl Init {
    pub fn new(p: Parts) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let signals = Signals::open()?;
        let timer = Timer::new()?;
        epoll.add(&signals, Source::Signals.token(), Interest::IN)?;
        epoll.add(&timer, Source::Timer.token(), Interest::IN)?;
        let control = ControlServer::new(
            &epoll,
            p.listener,
            p.cfg.socket.clone(),
            p.cfg.api_group,
            p.cfg.api_port.as_deref(),
            p.clock.now(),
        )?;
        let logs = LogCapture::new(p.sup.names(), p.cfg.log_dir.as_deref());
        let deferred = Deferred::new()?;
        epoll.add(&deferred.wake, Source::DeferredBell.token(), Interest::IN)?;
        let mut init = Init {
            cfg: p.cfg,
            clock: p.clock,
            effects: p.effects,
            launcher: p.launcher,
            sup: p.sup,
            epoll,
            signals,
            timer,
            ids: Ids::new(),
            control,
            logs,
            notify: NotifySockets::default(),
            main_pids: MainPids::default(),
            probes: Probes::default(),
            waiters: Waiters::default(),
            timeline: p.timeline,
            shutdown: None,
            keeper: p.keeper,
            upgrades: Upgrades::new(p.journals),
            watchdog_due: None,
            console: p.console,
            console_watch: ConsoleWatch::Idle,
            deferred,
        };
        init.feed_watchdog(init.now());
        Ok(init)
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    fn feed_watchdog(&mut self, now: Instant) {
        let Some(interval) = self.effects.watchdog_interval() else {
            self.watchdog_due = None;
            return;
        };
        if self.watchdog_due.is_some_and(|due| now < due) {
            return;
        }
        if let Err(e) = self.effects.feed_watchdog() {
            log!("cannot feed the watchdog: {e}");
        }
        self.watchdog_due = Some(now + interval);
    }

    /// Starts every service.
    pub fn start(&mut self) {
        for r in self.sup.rejected() {
            log!("{}", r.reason);
        }
        let now = self.now();
        if let Some(note) = self.keeper.start(now) {
            log!("{note}");
        }
        self.sup.start_all(now, self.launcher.launcher());
        self.timeline.mark("services started");
        self.after_events();
    }

    /// One turn of the loop. Returns the power action once a supervise-mode
    /// shutdown has finished; a PID 1 shutdown never returns.
    pub fn turn(&mut self) -> Option<PowerAction> {
        let now = self.now();
        let deadline = [
            self.sup.next_deadline(),
            self.waiters.next_deadline(),
            self.upgrades.next_deadline(),
            self.shutdown.as_ref().and_then(Shutdown::deadline),
            self.watchdog_due,
            self.control.idle_deadline(),
            self.keeper.deadline(),
            self.launcher.lineage_due(),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Err(e) = self.timer.arm(deadline, now) {
            log!("cannot arm the timer: {e}");
        }
        let ready = match self.epoll.wait(None) {
            Ok(ev) => ev,
            Err(e) => {
                log!("epoll_wait failed: {e}");
                return None;
            }
        };
        // Log pipes last: a flooding service's read and file write must not
        // come before an API call or a probe that woke in the same turn.
        let (pipes, others): (Vec<_>, Vec<_>) = ready
            .into_iter()
            .partition(|(tok, _)| matches!(Source::from_token(*tok), Some(Source::Pipe(_))));
        for (tok, flags) in others.into_iter().chain(pipes) {
            match Source::from_token(tok) {
                Some(Source::Signals) => {
                    for sig in self.signals.read() {
                        self.dispatch(LoopEvent::Signal(sig));
                    }
                }
                Some(Source::Timer) => {
                    self.timer.acknowledge();
                    self.dispatch(LoopEvent::Timer);
                }
                Some(Source::Listener) => self.dispatch(LoopEvent::Accept),
                Some(Source::Conn(id)) => self.dispatch(LoopEvent::Conn(id, flags)),
                Some(Source::Pipe(id)) => self.dispatch(LoopEvent::Pipe(id)),
                Some(Source::Notify(id)) => self.dispatch(LoopEvent::Notify(id)),
                Some(Source::Probe(id)) => self.dispatch(LoopEvent::Probe(id)),
                Some(Source::MainPid(id)) => self.dispatch(LoopEvent::MainPid(id)),
                Some(Source::UpgradeBell) => self.dispatch(LoopEvent::UpgradeBell),
                Some(Source::UpgradeFeed) => self.dispatch(LoopEvent::UpgradeFeed),
                Some(Source::Console) => self.dispatch(LoopEvent::Console),
                Some(Source::DeferredBell) => self.dispatch(LoopEvent::DeferredBell),
                None => {}
            }
        }
        // Whatever woke the loop, it is turning: that is what the watchdog checks.
        let now = self.now();
        self.feed_watchdog(now);
        self.after_events()
    }

    /// SIGHUP: rereads the service directory. A directory that cannot be
    /// read changes nothing; a bad file is rejected by name, as at boot.
    fn reload_services(&mut self) {
        let dir = self.cfg.config_dir.clone();
        let generated = self.cfg.generated_dir.clone();
        let catalog = match bascule_services::graph::load_dirs(&dir, generated.as_deref()) {
            Ok(c) => c,
            Err(e) => {
                log!(
                    "SIGHUP: cannot reread {}: {e}; the services stay as they are",
                    dir.display()
                );
                return;
            }
        };
        let now = self.now();
        let names: Vec<String> = catalog.specs.keys().cloned().collect();
        self.logs.add(names.iter(), self.cfg.log_dir.as_deref());
        let report = self.sup.reload(catalog, now, self.launcher.launcher());
        for r in self.sup.rejected() {
            log!("{}", r.reason);
        }
        let names = |v: &[String]| {
            if v.is_empty() {
                "-".to_owned()
            } else {
                v.join(", ")
            }
        };
        log!(
            "SIGHUP: reread {}: started {}; stopping {}; restarting {}",
            dir.display(),
            names(&report.added),
            names(&report.removed),
            names(&report.changed)
        );
    }

    /// Routes one event to the part that owns its source.
    pub fn dispatch(&mut self, ev: LoopEvent) {
        match ev {
            LoopEvent::Signal(SignalEvent::ChildExited) => self.reap(),
            LoopEvent::Signal(SignalEvent::PortChanged) => self.control.port_check(&self.epoll),
            LoopEvent::Signal(SignalEvent::Poweroff) => self.begin_shutdown(PowerAction::Poweroff),
            LoopEvent::Signal(SignalEvent::Reboot) => self.begin_shutdown(PowerAction::Reboot),
            LoopEvent::Signal(SignalEvent::Reload) => self.reload_services(),
            LoopEvent::Signal(SignalEvent::Other(n)) => log!("ignoring signal {n}"),
            LoopEvent::Timer => {
                let now = self.now();
                self.launcher.refresh_lineage(now);
                self.sup.on_timer(now, self.launcher.launcher());
                self.check_self_check(now);
            }
            LoopEvent::Accept => {
                let now = self.now();
                self.control.accept(&self.epoll, &mut self.ids, now)
            }
            LoopEvent::Conn(id, flags) => {
                self.control.on_readable(&self.epoll, id, flags);
                self.serve_requests(id);
            }
            LoopEvent::Pipe(id) => {
                if let Some(service) = self.logs.on_readable(&self.epoll, id) {
                    if let Some(ring) = self.logs.ring(&service) {
                        self.control.push_follows(&self.epoll, &service, ring);
                    }
                }
            }
            LoopEvent::UpgradeBell => self.on_upgrade_bell(),
            LoopEvent::UpgradeFeed => self.flush_feed(),
            // Written at the end of the turn, with what the turn logged.
            LoopEvent::Console => {}
            LoopEvent::DeferredBell => {
                for (tok, id, answer) in self.deferred.ready() {
                    self.reply(tok, id, answer);
                }
            }
            LoopEvent::Probe(id) => {
                if let Some(ok) = self.probes.on_ready(&self.epoll, id) {
                    let now = self.now();
                    self.sup
                        .on_probe_result(id, ok, now, self.launcher.launcher());
                }
            }
            LoopEvent::Notify(id) => {
                let messages = self.notify.read(id);
                self.take_notify(messages);
            }
            LoopEvent::MainPid(id) => self.main_pid_exited(id),
        }
    }

    /// Answers the connection's requests while it takes them.
    fn serve_requests(&mut self, id: u64) {
        let mut incoming = crate::control::Incoming::default();
        let now = self.now();
        while let Some(req) = self.control.next_request(id, &mut incoming, now) {
            self.handle_request(id, req);
        }
        self.control.settle(&self.epoll, id, incoming);
    }

    fn take_notify(&mut self, messages: Vec<(String, Option<bascule_services::Sender>, String)>) {
        let now = self.now();
        for (service, sender, msg) in messages {
            self.sup
                .on_notify(&service, sender, &msg, now, self.launcher.launcher());
        }
    }

    fn reap(&mut self) {
        // What a process said before it exited counts first (a launcher's
        // MAINPID=, a last STATUS=), as in systemd.
        let pending = self.notify.read_all();
        self.take_notify(pending);
        let now = self.now();
        for (pid, status) in self.effects.reap() {
            let exit = match status {
                WaitStatus::Exited(code) => bascule_services::Exit::Code(code),
                WaitStatus::Killed(sig) => bascule_services::Exit::Signal(sig),
            };
            // false: an orphan re-parented to us; reaping it was all there was to do.
            let _ = self.sup.on_exit(pid, exit, now, self.launcher.launcher());
        }
    }

    /// A main process named by MAINPID= has exited. Reaped by init (it was
    /// reparented), its status is known from the reap; reaped by its own
    /// parent, only that it is gone.
    fn main_pid_exited(&mut self, id: u64) {
        self.reap();
        let Some((service, pid)) = self.main_pids.exited(&self.epoll, id) else {
            return;
        };
        if self.sup.service(&service).and_then(|s| s.pid) == Some(pid) {
            let now = self.now();
            let exit = bascule_services::Exit::Unknown;
            let _ = self.sup.on_exit(pid, exit, now, self.launcher.launcher());
        }
    }

    /// Registers new fds, reports supervisor events, confirms a slot try,
    /// answers waiters and moves a shutdown along.
    pub fn after_events(&mut self) -> Option<PowerAction> {
        for id in self.control.take_resumable() {
            self.serve_requests(id);
        }
        let fds = self.launcher.take_new_fds();
        for (service, stream, fd) in fds.pipes {
            self.logs
                .watch(&self.epoll, &mut self.ids, service, stream, fd);
        }
        for (service, sock) in fds.notify {
            self.notify.watch(&self.epoll, &mut self.ids, service, sock);
        }
        for (id, sock) in fds.probes {
            if let Some(ok) = self.probes.watch(&self.epoll, id, sock) {
                let now = self.now();
                self.sup
                    .on_probe_result(id, ok, now, self.launcher.launcher());
            }
        }
        for (service, pid, fd) in fds.main_pids {
            self.main_pids
                .watch(&self.epoll, &mut self.ids, service, pid, fd);
        }
        for id in fds.cancelled {
            self.probes.cancel(&self.epoll, id);
        }
        for ev in self.sup.take_events() {
            self.report(ev);
        }
        if self.shutdown.is_none() && self.sup.all_ready() && self.timeline.all_ready() {
            log!("all services ready");
            let settled = if self.sup.all_up() {
                Settled::AllUp
            } else {
                Settled::SomeFailed
            };
            for note in self.keeper.on_settled(settled) {
                log!("{note}");
            }
        }
        let mut busy = self.waiters.conns();
        busy.extend(self.upgrades.run.as_ref().map(|r| r.conn));
        let now = self.now();
        self.control.expire_idle(&self.epoll, now, &busy);
        for conn in self.control.take_dropped() {
            self.waiters.drop_conn(conn);
            self.upgrade_conn_dropped(conn);
        }
        // A port client that left may have been streaming a bundle. Its
        // waiters stay: their late replies are skipped by whoever reads
        // next, and what was read just before may be that next client's.
        if self.control.take_port_left() {
            self.upgrade_conn_dropped(crate::control::PORT_CONN);
        }
        self.check_stop();
        self.resolve_waiters();
        let action = self.advance_shutdown();
        if self.logs.take_own_lines() {
            if let Some(ring) = self.logs.ring(crate::logging::INIT_STREAM) {
                self.control
                    .push_follows(&self.epoll, crate::logging::INIT_STREAM, ring);
            }
        }
        self.flush_console();
        action
    }

    /// Writes what the console takes without blocking, and watches it for
    /// EPOLLOUT while output is left.
    fn flush_console(&mut self) {
        let Some(fd) = &self.console else {
            return;
        };
        let backlog = crate::console::flush();
        let watch = match backlog {
            Backlog::Empty => ConsoleWatch::Idle,
            Backlog::Pending => ConsoleWatch::Writable,
        };
        if watch == self.console_watch {
            return;
        }
        let done = match watch {
            ConsoleWatch::Writable => self.epoll.add(fd, Source::Console.token(), Interest::OUT),
            ConsoleWatch::Idle => self.epoll.delete(fd),
        };
        if done.is_ok() {
            self.console_watch = watch;
        }
    }

    fn report(&mut self, ev: Event) {
        match ev {
            Event::Started { name, pid } => log_routine!("service {name}: started, pid {pid}"),
            Event::Ready { name } => {
                self.timeline.service_ready(&name);
                log_routine!("service {name}: ready");
            }
            Event::Exited { name, exit } => log_routine!("service {name}: {exit}"),
            Event::Restarting { name, delay_ms } => {
                log_routine!("service {name}: restarting in {delay_ms} ms")
            }
            Event::Failed { name, reason } => log!("service {name}: failed: {reason}"),
            Event::Stopped { name } => log_routine!("service {name}: stopped"),
            Event::Unhealthy { name } => log!("service {name}: unhealthy"),
            Event::MainPid { name, pid } => {
                log!("service {name}: main process is now pid {pid} (MAINPID=)")
            }
            Event::NotifyRefused { name, why } => {
                log!("service {name}: notify message ignored: {why}")
            }
        }
    }

    pub(crate) fn shutting_down(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Past the self-check deadline of a try, the try fails and the
    /// machine reboots into the slot it came from.
    fn check_self_check(&mut self, now: Instant) {
        let unix_secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let not_up = self.sup.not_up();
        if let Verdict::Reboot(notes) = self.keeper.on_timer(now, unix_secs, &not_up) {
            for n in notes {
                log!("{n}");
            }
            self.begin_shutdown(PowerAction::Reboot);
        }
    }

    pub(crate) fn begin_shutdown(&mut self, action: PowerAction) {
        if let Some(s) = &mut self.shutdown {
            s.request(action);
            return;
        }
        log!("{}: stopping services", action.label());
        self.timeline.mark(format!("{} requested", action.label()));
        let (s, steps) = Shutdown::begin(self.cfg.mode, action, self.now());
        self.shutdown = Some(s);
        self.run_steps(steps);
    }

    fn advance_shutdown(&mut self) -> Option<PowerAction> {
        // Until the shutdown waits: when the SIGTERM to all found nothing
        // left, no child exit will wake the loop, and the next steps are
        // due now, not when the 3 s grace runs out.
        loop {
            self.shutdown.as_ref()?;
            let now = self.now();
            let progress = Progress {
                services_down: self.sup.all_down(),
                children_left: self.effects.has_children(),
            };
            let steps = self.shutdown.as_mut()?.advance(now, progress);
            if steps.is_empty() {
                return None;
            }
            if let Some(action) = self.run_steps(steps) {
                return Some(action);
            }
        }
    }

    /// Carries out a shutdown's steps; returns the action when the process
    /// is to end (supervise mode).
    fn run_steps(&mut self, steps: Vec<Step>) -> Option<PowerAction> {
        for step in steps {
            match step {
                Step::StopServices => {
                    let now = self.now();
                    self.sup.stop_all(now, self.launcher.launcher());
                }
                Step::KillServices => {
                    if !self.sup.all_down() {
                        log!("services still running at the shutdown deadline: killing them");
                    }
                    let names: Vec<String> = self.sup.names().cloned().collect();
                    for name in names {
                        if let Some(svc) = self.sup.service(&name) {
                            let (spec, pid) = (svc.spec.clone(), svc.pid);
                            self.launcher.launcher().kill_all(&spec, pid);
                        }
                    }
                }
                Step::GraceExpired => log!(
                    "processes are still running {} s after SIGTERM: killing them",
                    crate::shutdown::KILL_GRACE.as_secs()
                ),
                Step::SignalAll(sig) => {
                    log!("sending {sig:?} to all remaining processes");
                    self.effects.signal_all(sig);
                }
                Step::Reap => self.reap(),
                Step::DisarmWatchdog => {
                    self.effects.disarm_watchdog();
                    self.watchdog_due = None;
                }
                Step::FlushClients => self.control.flush_all(),
                Step::CloseLogFiles => self.logs.close_files(),
                Step::RemoveCgroups => self.launcher.remove_cgroups(),
                Step::RemoveSocket => self.control.remove_socket(),
                Step::Sync => self.effects.sync(),
                Step::UnmountAll => {
                    log!("unmounting");
                    for failure in self.effects.unmount_all() {
                        log!("{failure}");
                    }
                }
                Step::Power(action) => {
                    log!("{}", action.label());
                    let err = self.effects.power(action);
                    log!(
                        "{} failed: {err}; the machine stays up, the console shell and API still work",
                        action.label()
                    );
                    if let Some(s) = &mut self.shutdown {
                        s.power_failed();
                    }
                }
                Step::Exit(action) => return Some(action),
            }
        }
        None
    }

    #[cfg(test)]
    pub fn shutdown_phase(&self) -> Option<crate::shutdown::Phase> {
        self.shutdown.as_ref().map(Shutdown::phase)
    }
}

#[cfg(test)]
#[path = "event_loop_tests.rs"]
mod tests;
