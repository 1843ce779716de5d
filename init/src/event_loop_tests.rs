//! The loop's routing, the shutdown order and the confirmation of a slot
//! try, driven through fake effects, a fake launcher and a fake clock.

use std::cell::Cell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bascule_boot::Slot;
use bascule_services::logs::Stream;
use bascule_services::{graph, spec, Launcher, ProcessKind, ServiceSpec, Signal, SpawnError};
use bascule_sys::power::PowerAction;
use bascule_sys::reap::WaitStatus;
use bascule_sys::signals::SignalEvent;

use super::*;
use crate::config::{self, Mode};
use crate::effects::fake::{Effect, FakeEffects};
use crate::effects::KillSignal;
use crate::launcher::NewFds;
use crate::shutdown::Phase;
use crate::slot_keeper::fake::{trying_b, LoaderCall};

#[derive(Clone)]
struct FakeClock(Rc<Cell<Instant>>);

impl Clock for FakeClock {
    fn now(&self) -> Instant {
        self.0.get()
    }
}

impl FakeClock {
    fn advance(&self, d: Duration) {
        self.0.set(self.0.get() + d);
    }
}

/// Records what the supervisor asked for in the effects' journal, so the
/// order of service stops and system-wide steps can be checked together.
struct FakeLauncher {
    effects: FakeEffects,
    next_pid: u32,
    fail: Vec<String>,
}

impl Launcher for FakeLauncher {
    fn spawn(
        &mut self,
        spec: &ServiceSpec,
        _kind: ProcessKind,
        _argv: &[String],
    ) -> Result<u32, SpawnError> {
        if self.fail.contains(&spec.name) {
            return Err(SpawnError::Exec {
                message: "No such file or directory".into(),
            });
        }
        self.next_pid += 1;
        self.effects.record(Effect::Service(format!(
            "spawn {} {}",
            spec.name, self.next_pid
        )));
        Ok(self.next_pid)
    }
    fn signal(&mut self, pid: u32, signal: Signal) {
        self.effects
            .record(Effect::Service(format!("signal {pid} {signal}")));
    }
    fn kill_all(&mut self, spec: &ServiceSpec, _main: Option<u32>) {
        self.effects
            .record(Effect::Service(format!("kill {}", spec.name)));
    }
    fn probe_tcp(&mut self, _port: u16) -> bascule_services::TcpProbe {
        bascule_services::TcpProbe::Done(false)
    }
    fn cancel_probe(&mut self, _id: u64) {}
    fn probe_path(&mut self, _path: &Path) -> bool {
        false
    }
    fn membership(&mut self, _spec: &ServiceSpec, _pid: u32) -> bascule_services::Membership {
        bascule_services::Membership::Stranger
    }
    fn uid_of(&mut self, _pid: u32) -> Option<u32> {
        None
    }
}

impl ServiceLauncher for FakeLauncher {
    fn launcher(&mut self) -> &mut dyn Launcher {
        self
    }
    fn take_new_fds(&mut self) -> NewFds {
        NewFds::default()
    }
    fn remove_cgroups(&mut self) {
        self.effects
            .record(Effect::Service("remove cgroups".into()));
    }
}

struct Rig {
    init: Init,
    effects: FakeEffects,
    clock: FakeClock,
    _dir: tempfile::TempDir,
}

fn rig(mode: Mode, services: &[(&str, &str)], keeper: SlotKeeper, fail: &[&str]) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let specs = services
        .iter()
        .map(|(name, text)| {
            spec::parse_str(name, Path::new(&format!("/t/{name}.toml")), text).unwrap()
        })
        .collect();
    let machine = config::Machine {
        booted_slot: Some(Slot::B),
        ..config::Machine::default()
    };
    let mut cfg = config::defaults(mode, machine);
    cfg.socket = dir.path().join("api.sock");
    cfg.run_dir = dir.path().join("run");
    cfg.log_dir = None;
    let listener = UnixListener::bind(&cfg.socket).unwrap();
    let effects = FakeEffects::default();
    let clock = FakeClock(Rc::new(Cell::new(Instant::now())));
    let init = Init::new(Parts {
        cfg,
        clock: Box::new(clock.clone()),
        effects: Box::new(effects.clone()),
        launcher: Box::new(FakeLauncher {
            effects: effects.clone(),
            next_pid: 100,
            fail: fail.iter().map(|s| s.to_string()).collect(),
        }),
        sup: Supervisor::new(graph::check(specs)),
        listener,
        timeline: Timeline::from_boot(None),
        keeper,
        journals: Vec::new(),
        console: None,
    })
    .unwrap();
    Rig {
        init,
        effects,
        clock,
        _dir: dir,
    }
}

const SLEEPER: &str = "exec = [\"sleep\", \"1000\"]\n";

fn service_effects(log: &[Effect]) -> Vec<String> {
    log.iter()
        .filter_map(|e| match e {
            Effect::Service(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// PID 1 running "web" (pid 101), asked to power off: its services stop.
fn powering_off_web() -> Rig {
    let mut r = rig(
        Mode::Pid1,
        &[("web", SLEEPER)],
        SlotKeeper::unmanaged(),
        &[],
    );
    r.init.start();
    r.init.dispatch(LoopEvent::Signal(SignalEvent::Poweroff));
    assert_eq!(r.init.after_events(), None);
    assert_eq!(r.init.shutdown_phase(), Some(Phase::StoppingServices));
    r
}

/// `pid` exits on its SIGTERM and PID 1 hears of it.
fn exits_on_sigterm(r: &mut Rig, pid: u32) {
    r.effects
        .0
        .borrow_mut()
        .exits
        .push_back(vec![(pid, WaitStatus::Killed(libc::SIGTERM))]);
    r.init.dispatch(LoopEvent::Signal(SignalEvent::ChildExited));
}

#[test]
fn a_poweroff_signal_stops_services_then_terms_kills_syncs_unmounts_and_powers_off() {
    let mut r = powering_off_web();
    // The service exits on its SIGTERM; nothing else is left.
    exits_on_sigterm(&mut r, 101);
    // The SIGTERM to all finds no process left: the rest follows in the
    // same turn, without waiting out the kill grace.
    assert_eq!(r.init.after_events(), None, "PID 1 never returns");
    assert_eq!(
        r.init.shutdown_phase(),
        Some(Phase::Halted),
        "the fake refused"
    );
    let log = r.effects.log();
    let steps: Vec<&Effect> = log
        .iter()
        .filter(|e| !matches!(e, Effect::FeedWatchdog))
        .collect();
    assert_eq!(
        steps,
        vec![
            &Effect::Service("spawn web 101".into()),
            &Effect::Service("signal 101 SIGTERM".into()),
            // The supervisor kills what is left of a service whose main
            // process exited, and the shutdown kills every service again.
            &Effect::Service("kill web".into()),
            &Effect::Service("kill web".into()),
            &Effect::SignalAll(KillSignal::Term),
            &Effect::SignalAll(KillSignal::Kill),
            &Effect::DisarmWatchdog,
            &Effect::Sync,
            &Effect::UnmountAll,
            &Effect::Sync,
            &Effect::Power(PowerAction::Poweroff),
        ]
    );
}

#[test]
fn the_kill_grace_ends_with_the_last_child_not_at_its_deadline() {
    let mut r = powering_off_web();
    // An orphan outside every service is still there after the SIGTERM.
    r.effects.0.borrow_mut().children = true;
    exits_on_sigterm(&mut r, 101);
    assert_eq!(r.init.after_events(), None);
    assert_eq!(r.init.shutdown_phase(), Some(Phase::KillingRest));
    assert_eq!(r.init.after_events(), None, "it waits while one is left");
    assert_eq!(r.init.shutdown_phase(), Some(Phase::KillingRest));
    // It exits on the SIGTERM; the clock has not moved.
    r.effects.0.borrow_mut().children = false;
    exits_on_sigterm(&mut r, 500);
    assert_eq!(r.init.after_events(), None);
    assert_eq!(r.init.shutdown_phase(), Some(Phase::Halted));
    assert!(r
        .effects
        .log()
        .contains(&Effect::Power(PowerAction::Poweroff)));
}

#[test]
fn a_supervisor_shutdown_ends_the_loop_without_touching_the_host() {
    let mut r = rig(
        Mode::Supervise,
        &[("web", SLEEPER)],
        SlotKeeper::unmanaged(),
        &[],
    );
    r.init.start();
    r.init.dispatch(LoopEvent::Signal(SignalEvent::Reboot));
    r.effects
        .0
        .borrow_mut()
        .exits
        .push_back(vec![(101, WaitStatus::Exited(0))]);
    r.init.dispatch(LoopEvent::Signal(SignalEvent::ChildExited));
    assert_eq!(r.init.after_events(), Some(PowerAction::Reboot));
    let log = r.effects.log();
    assert!(
        !log.iter().any(|e| matches!(
            e,
            Effect::SignalAll(_) | Effect::Power(_) | Effect::UnmountAll
        )),
        "{log:?}"
    );
    assert!(service_effects(&log).contains(&"remove cgroups".to_owned()));
}

#[test]
fn exits_reach_the_supervisor_and_the_timer_restarts_after_the_backoff() {
    let mut r = rig(
        Mode::Supervise,
        &[(
            "web",
            "exec = [\"sleep\", \"1000\"]\nrestart = \"always\"\n",
        )],
        SlotKeeper::unmanaged(),
        &[],
    );
    r.init.start();
    // An orphan's exit is reaped and changes nothing; the service's is seen.
    r.effects.0.borrow_mut().exits.push_back(vec![
        (7, WaitStatus::Exited(0)),
        (101, WaitStatus::Exited(3)),
    ]);
    r.init.dispatch(LoopEvent::Signal(SignalEvent::ChildExited));
    r.init.after_events();
    let st = r.init.sup.status("web", r.clock.now()).unwrap();
    assert_eq!(st.state, bascule_services::State::Backoff);
    r.init.dispatch(LoopEvent::Timer);
    assert_eq!(
        service_effects(&r.effects.log()),
        vec!["spawn web 101".to_owned(), "kill web".to_owned()],
        "not restarted before the delay"
    );
    r.clock.advance(Duration::from_secs(60));
    r.init.dispatch(LoopEvent::Timer);
    assert_eq!(
        service_effects(&r.effects.log()),
        vec![
            "spawn web 101".to_owned(),
            "kill web".to_owned(),
            "spawn web 102".to_owned()
        ]
    );
    // A signal PID 1 does not act on changes nothing.
    r.init.dispatch(LoopEvent::Signal(SignalEvent::Reload));
    r.init
        .dispatch(LoopEvent::Signal(SignalEvent::Other(libc::SIGQUIT)));
    assert_eq!(r.init.after_events(), None);
    assert_eq!(r.init.shutdown_phase(), None);
}

#[test]
fn a_slot_try_is_confirmed_once_every_service_is_up() {
    let (keeper, loader, store) = trying_b();
    let mut r = rig(
        Mode::Pid1,
        &[("web", SLEEPER), ("db", SLEEPER)],
        keeper,
        &[],
    );
    r.init.start();
    assert_eq!(*loader.0.borrow(), vec![LoaderCall::Confirm(Slot::B)]);
    let saved = store.0.borrow().last().cloned().unwrap();
    assert_eq!(saved.pending_slot(), None);
    assert!(r
        .init
        .timeline
        .events()
        .iter()
        .any(|(n, _)| n == "all services ready"));
    // Later turns do not confirm again.
    r.init.after_events();
    assert_eq!(loader.0.borrow().len(), 1);
}

#[test]
fn a_slot_try_not_up_by_its_deadline_fails_and_reboots() {
    // trying_b's deadline is 60 s.
    let (keeper, loader, store) = trying_b();
    let mut r = rig(
        Mode::Pid1,
        &[
            ("web", SLEEPER),
            ("broken", "exec = [\"/nonexistent\"]\nrestart = \"never\"\n"),
        ],
        keeper,
        &["broken"],
    );
    r.init.start();
    for _ in 0..5 {
        r.clock.advance(Duration::from_secs(10));
        r.init.dispatch(LoopEvent::Timer);
        r.init.after_events();
    }
    assert!(loader.0.borrow().is_empty(), "{:?}", loader.0.borrow());
    assert!(store.0.borrow().is_empty());
    assert_eq!(r.init.shutdown_phase(), None, "still within the deadline");
    r.clock.advance(Duration::from_secs(10));
    r.init.dispatch(LoopEvent::Timer);
    r.init.after_events();
    assert_eq!(*loader.0.borrow(), vec![LoaderCall::MarkBad(Slot::B)]);
    let saved = store.0.borrow().last().cloned().unwrap();
    assert_eq!(saved.pending_slot(), None);
    let reason = saved.last_failure.unwrap().reason;
    assert!(reason.contains("broken (failed)"), "{reason}");
    assert!(!reason.contains("web"), "{reason}");
    assert!(
        r.init.shutdown_phase().is_some(),
        "the machine reboots into the slot it came from"
    );
}

#[test]
fn new_output_pipes_are_routed_to_the_log_capture() {
    // The real pipe path: a pipe registered by the loop is read on its event.
    let mut r = rig(
        Mode::Supervise,
        &[("web", SLEEPER)],
        SlotKeeper::unmanaged(),
        &[],
    );
    let (rd, wr) = rustix::pipe::pipe().unwrap();
    r.init.logs.watch(
        &r.init.epoll,
        &mut Ids::new(),
        "web".into(),
        Stream::Stdout,
        rd,
    );
    rustix::io::write(&wr, b"hello\n").unwrap();
    r.init.dispatch(LoopEvent::Pipe(1));
    let (lines, _) = r.init.logs.ring("web").unwrap().tail(10);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].text, b"hello");
}
