//! Unit tests of the supervisor with a recording fake launcher.

use super::*;
use crate::effects::{Membership, ProcessKind, Sender, SpawnError, TcpProbe};
use crate::graph;
use crate::signal::Signal;
use crate::spec::{self, ServiceSpec};
use crate::transitions::SPAWN_RETRY_MIN;
use std::collections::BTreeSet;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Call {
    Spawn(String, ProcessKind, u32),
    Signal(u32, Signal),
    KillAll(String),
    CancelProbe(u64),
}

#[derive(Default)]
pub(super) struct Fake {
    pub(super) calls: Vec<Call>,
    next_pid: u32,
    open_ports: BTreeSet<u16>,
    /// Ports whose connects stay in flight (a SYN nobody answers).
    slow_ports: BTreeSet<u16>,
    next_probe: u64,
    fail_spawn: BTreeSet<String>,
    /// Services whose user does not exist.
    unknown_user: BTreeSet<String>,
    /// Pids that are processes of the service.
    members: BTreeSet<u32>,
    /// Pids that are no more.
    gone: BTreeSet<u32>,
}

impl Launcher for Fake {
    fn spawn(
        &mut self,
        spec: &ServiceSpec,
        kind: ProcessKind,
        _argv: &[String],
    ) -> Result<u32, SpawnError> {
        if self.unknown_user.contains(&spec.name) {
            return Err(SpawnError::UnknownUser {
                user: "nobody-here".into(),
                file: "/etc/passwd".into(),
            });
        }
        if self.fail_spawn.contains(&spec.name) {
            return Err(SpawnError::Exec {
                message: "No such file or directory".into(),
            });
        }
        self.next_pid += 1;
        let pid = 100 + self.next_pid;
        self.calls.push(Call::Spawn(spec.name.clone(), kind, pid));
        Ok(pid)
    }
    fn signal(&mut self, pid: u32, signal: Signal) {
        self.calls.push(Call::Signal(pid, signal));
    }
    fn kill_all(&mut self, spec: &ServiceSpec, _main: Option<u32>) {
        self.calls.push(Call::KillAll(spec.name.clone()));
    }
    fn probe_tcp(&mut self, port: u16) -> TcpProbe {
        if self.slow_ports.contains(&port) {
            self.next_probe += 1;
            return TcpProbe::Connecting(self.next_probe);
        }
        TcpProbe::Done(self.open_ports.contains(&port))
    }
    fn cancel_probe(&mut self, id: u64) {
        self.calls.push(Call::CancelProbe(id));
    }
    fn probe_path(&mut self, _path: &Path) -> bool {
        false
    }
    fn membership(&mut self, _spec: &ServiceSpec, pid: u32) -> Membership {
        if self.members.contains(&pid) {
            Membership::Member
        } else if self.gone.contains(&pid) {
            Membership::Gone
        } else {
            Membership::Stranger
        }
    }
    fn uid_of(&mut self, _pid: u32) -> Option<u32> {
        Some(1000)
    }
}

impl Fake {
    pub(super) fn spawned(&self, kind: ProcessKind) -> Vec<String> {
        self.calls
            .iter()
            .filter_map(|c| match c {
                Call::Spawn(n, k, _) if *k == kind => Some(n.clone()),
                _ => None,
            })
            .collect()
    }
    pub(super) fn last_pid(&self) -> u32 {
        100 + self.next_pid
    }
}

pub(super) fn catalog(services: &[(&str, &str)]) -> Catalog {
    let specs = services
        .iter()
        .map(|(name, text)| {
            spec::parse_str(name, Path::new(&format!("/t/{name}.toml")), text).unwrap()
        })
        .collect();
    graph::check(specs)
}

/// A notify message's sender running as root.
fn root(pid: u32) -> Sender {
    Sender { pid, uid: 0 }
}

fn sup(services: &[(&str, &str)]) -> Supervisor {
    let specs = services
        .iter()
        .map(|(name, text)| {
            spec::parse_str(name, Path::new(&format!("/t/{name}.toml")), text).unwrap()
        })
        .collect();
    Supervisor::new(graph::check(specs))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn state(s: &Supervisor, name: &str) -> State {
    s.service(name).unwrap().state
}

#[test]
fn dependencies_start_after_readiness() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        (
            "net",
            "exec=[\"n\"]\n[readiness]\ntcp = 9000\ninterval_ms = 50",
        ),
        ("db", "exec=[\"d\"]\ndepends_on=[\"net\"]"),
        ("app", "exec=[\"a\"]\ndepends_on=[\"db\", \"net\"]"),
        ("solo", "exec=[\"s\"]"),
    ]);
    s.start_all(t0, &mut l);
    // net and the independent service start together; db waits.
    assert_eq!(l.spawned(ProcessKind::Main), vec!["net", "solo"]);
    assert_eq!(state(&s, "db"), State::Waiting);
    assert_eq!(s.service("db").unwrap().reason, "waiting for net");
    assert_eq!(s.next_deadline(), Some(t0 + ms(50)));
    // Port closed: still waiting.
    s.on_timer(t0 + ms(50), &mut l);
    assert_eq!(state(&s, "net"), State::Starting);
    l.open_ports.insert(9000);
    s.on_timer(t0 + ms(100), &mut l);
    assert_eq!(
        l.spawned(ProcessKind::Main),
        vec!["net", "solo", "db", "app"]
    );
    assert!(s.all_ready());
}

#[test]
fn crash_restarts_with_exponential_backoff_then_gives_up() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "c",
        "exec=[\"c\"]\nrestart=\"always\"\n[backoff]\ninitial_ms=100\nmax_ms=250\nlimit=3",
    )]);
    s.start_all(t0, &mut l);
    let mut now = t0;
    let mut delays = Vec::new();
    for _ in 0..3 {
        let pid = l.last_pid();
        assert!(s.on_exit(pid, Exit::Code(1), now, &mut l));
        assert_eq!(
            l.calls.last(),
            Some(&Call::KillAll("c".into())),
            "leftovers are killed first"
        );
        assert_eq!(state(&s, "c"), State::Backoff);
        let due = s.next_deadline().unwrap();
        delays.push(due - now);
        s.on_timer(due - ms(1), &mut l);
        assert_eq!(state(&s, "c"), State::Backoff, "not before the delay");
        s.on_timer(due, &mut l);
        assert_eq!(state(&s, "c"), State::Running);
        now = due;
    }
    assert_eq!(delays, vec![ms(100), ms(200), ms(250)]);
    s.on_exit(l.last_pid(), Exit::Signal(11), now, &mut l);
    assert_eq!(state(&s, "c"), State::Failed);
    let st = s.status("c", now).unwrap();
    assert_eq!(st.restarts, 3);
    assert!(st.reason.contains("gave up after 3"), "{}", st.reason);
    assert_eq!(
        st.last_exit.map(|e| e.to_string()).as_deref(),
        Some("killed by signal 11")
    );
}

#[test]
fn zero_backoff_restarts_within_the_exit_event() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "c",
        "exec=[\"c\"]\nrestart=\"always\"\n[backoff]\ninitial_ms=0\nlimit=0",
    )]);
    s.start_all(t0, &mut l);
    let first = l.last_pid();
    s.on_exit(first, Exit::Code(0), t0, &mut l);
    assert_eq!(state(&s, "c"), State::Running);
    assert_ne!(s.service("c").unwrap().pid, Some(first));
}

#[test]
fn a_long_run_resets_the_backoff() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "c",
        "exec=[\"c\"]\n[backoff]\ninitial_ms=100\nreset_after_ms=1000",
    )]);
    s.start_all(t0, &mut l);
    s.on_exit(l.last_pid(), Exit::Code(1), t0 + ms(10), &mut l);
    s.on_timer(t0 + ms(110), &mut l);
    s.on_exit(l.last_pid(), Exit::Code(1), t0 + ms(5000), &mut l);
    assert_eq!(s.next_deadline(), Some(t0 + ms(5100)), "first delay again");
}

#[test]
fn restart_policies() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("once", "exec=[\"x\"]\nrestart=\"never\""),
        ("onf", "exec=[\"x\"]\nrestart=\"on-failure\""),
    ]);
    s.start_all(t0, &mut l);
    s.on_exit(101, Exit::Code(3), t0, &mut l);
    assert_eq!(state(&s, "once"), State::Failed);
    s.on_exit(102, Exit::Code(0), t0, &mut l);
    assert_eq!(state(&s, "onf"), State::Exited);
    assert!(
        !s.on_exit(999, Exit::Code(0), t0, &mut l),
        "unknown pids are orphans"
    );
}

#[test]
fn stop_escalates_to_kill_after_grace() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "stubborn",
        "exec=[\"x\"]\nrestart=\"always\"\n[stop]\ngrace_ms=500",
    )]);
    s.start_all(t0, &mut l);
    let pid = l.last_pid();
    s.stop("stubborn", t0, &mut l).unwrap();
    assert_eq!(l.calls.last(), Some(&Call::Signal(pid, Signal::TERM)));
    assert_eq!(state(&s, "stubborn"), State::Stopping);
    assert!(!s.settled_down("stubborn"));
    s.on_timer(t0 + ms(499), &mut l);
    assert!(!l.calls.contains(&Call::KillAll("stubborn".into())));
    s.on_timer(t0 + ms(500), &mut l);
    assert_eq!(l.calls.last(), Some(&Call::KillAll("stubborn".into())));
    s.on_exit(pid, Exit::Signal(9), t0 + ms(501), &mut l);
    assert_eq!(state(&s, "stubborn"), State::Stopped);
    assert!(s.settled_down("stubborn"));
    assert_eq!(
        l.spawned(ProcessKind::Main).len(),
        1,
        "a stopped service is not restarted"
    );
}

#[test]
fn pre_stop_hook_runs_before_the_signal() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "h",
        "exec=[\"x\"]\n[stop]\npre=[\"hook\"]\nsignal=\"SIGINT\"",
    )]);
    s.start_all(t0, &mut l);
    let main = l.last_pid();
    s.stop("h", t0, &mut l).unwrap();
    assert_eq!(l.spawned(ProcessKind::PreStop), vec!["h"]);
    let hook = l.last_pid();
    assert!(!l.calls.iter().any(|c| matches!(c, Call::Signal(..))));
    s.on_exit(hook, Exit::Code(0), t0 + ms(5), &mut l);
    assert_eq!(l.calls.last(), Some(&Call::Signal(main, Signal::INT)));
}

#[test]
fn restart_request_stops_then_starts_without_backoff() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("r", "exec=[\"x\"]")]);
    s.start_all(t0, &mut l);
    let gen = s.generation("r");
    s.restart("r", t0, &mut l).unwrap();
    assert!(!s.settled_up("r", gen));
    s.on_exit(l.last_pid(), Exit::Signal(15), t0, &mut l);
    assert_eq!(state(&s, "r"), State::Running);
    assert!(s.settled_up("r", gen));
    assert_eq!(s.status("r", t0).unwrap().restarts, 1);
}

#[test]
fn notify_readiness_and_timeout() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("n", "exec=[\"x\"]\nreadiness=\"notify\""),
        (
            "slow",
            "exec=[\"x\"]\nrestart=\"always\"\n[readiness]\nnotify=true\ntimeout_ms=1000",
        ),
    ]);
    s.start_all(t0, &mut l);
    let n = s.service("n").unwrap().pid;
    s.on_notify("n", n.map(root), "STATUS=loading\n", t0, &mut l);
    assert_eq!(state(&s, "n"), State::Starting);
    assert_eq!(s.service("n").unwrap().status_text, "loading");
    assert_eq!(
        s.service("n").unwrap().reason,
        "",
        "STATUS= is not our reason"
    );
    s.on_notify("n", n.map(root), "STATUS=up\nREADY=1", t0 + ms(10), &mut l);
    assert_eq!(state(&s, "n"), State::Running);
    // The slow one never notifies: stopped as a failure, then restarted.
    s.on_timer(t0 + ms(1000), &mut l);
    assert_eq!(state(&s, "slow"), State::Stopping);
    let pid = s.service("slow").unwrap().pid.unwrap();
    s.on_notify(
        "slow",
        Some(root(pid)),
        "STATUS=still loading",
        t0 + ms(1000),
        &mut l,
    );
    s.on_exit(pid, Exit::Signal(15), t0 + ms(1001), &mut l);
    assert_eq!(state(&s, "slow"), State::Backoff);
    let slow = s.service("slow").unwrap();
    assert!(
        slow.reason.contains("not ready within 1000 ms"),
        "the failure reason survives the service's STATUS=: {}",
        slow.reason
    );
    assert_eq!(slow.status_text, "still loading");
}

#[test]
fn notify_messages_count_only_from_the_main_process_unless_access_is_all() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("m", "exec=[\"x\"]\nreadiness=\"notify\""),
        (
            "a",
            "exec=[\"x\"]\nreadiness=\"notify\"\nnotify_access=\"all\"",
        ),
    ]);
    s.start_all(t0, &mut l);
    let (m, a) = (
        s.service("m").unwrap().pid.unwrap(),
        s.service("a").unwrap().pid.unwrap(),
    );
    let child = 900;
    l.members.insert(child);
    s.take_events();
    s.on_notify("m", Some(root(child)), "READY=1", t0, &mut l);
    s.on_notify("m", Some(root(child)), "READY=1", t0, &mut l);
    s.on_notify("m", None, "READY=1", t0, &mut l);
    assert_eq!(state(&s, "m"), State::Starting, "a child is not main");
    let refused: Vec<_> = s
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::NotifyRefused { name, why } => Some((name, why)),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2, "once per sender: {refused:?}");
    assert!(refused[0].1.contains("pid 900") && refused[0].1.contains("notify_access"));
    s.on_notify("m", Some(root(m)), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "m"), State::Running);
    // With access "all": a process of the service counts, a stranger not.
    s.on_notify("a", Some(root(4242)), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "a"), State::Starting);
    s.on_notify("a", Some(root(child)), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "a"), State::Running);
    assert_ne!(a, child);
}

#[test]
fn a_sender_that_exited_counts_only_as_root_or_the_main_processs_user() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let svc = "exec=[\"x\"]\nreadiness=\"notify\"\nnotify_access=\"all\"";
    let mut s = sup(&[("a", svc), ("b", svc), ("c", svc)]);
    s.start_all(t0, &mut l);
    l.gone.extend([901, 902, 903]);
    let sent = |pid, uid| Some(Sender { pid, uid });
    s.on_notify("a", sent(901, 1001), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "a"), State::Starting, "another user's helper");
    s.on_notify("b", sent(902, 1000), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "b"), State::Running, "the main process's user");
    s.on_notify("c", sent(903, 0), "READY=1", t0, &mut l);
    assert_eq!(state(&s, "c"), State::Running, "root");
}

#[test]
fn mainpid_moves_the_main_process_to_the_daemon() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "d",
        "exec=[\"x\"]\nreadiness=\"notify\"\nrestart=\"always\"\n[backoff]\ninitial_ms=0",
    )]);
    s.start_all(t0, &mut l);
    let launcher = s.service("d").unwrap().pid.unwrap();
    let daemon = 777;
    // A pid outside the service is refused; the main stays.
    s.on_notify("d", Some(root(launcher)), "MAINPID=4242", t0, &mut l);
    assert_eq!(s.service("d").unwrap().pid, Some(launcher));
    l.members.insert(daemon);
    s.take_events();
    s.on_notify(
        "d",
        Some(root(launcher)),
        "MAINPID=777\nREADY=1",
        t0,
        &mut l,
    );
    assert_eq!(s.service("d").unwrap().pid, Some(daemon));
    assert_eq!(state(&s, "d"), State::Running);
    assert!(s.take_events().contains(&Event::MainPid {
        name: "d".into(),
        pid: daemon
    }));
    // The launcher exiting is no longer the service's exit.
    assert!(!s.on_exit(launcher, Exit::Code(0), t0 + ms(5), &mut l));
    assert_eq!(state(&s, "d"), State::Running);
    // Only the new main may notify now.
    s.on_notify(
        "d",
        Some(root(daemon)),
        "STATUS=serving",
        t0 + ms(6),
        &mut l,
    );
    assert_eq!(s.service("d").unwrap().status_text, "serving");
    // The daemon's exit is: the service restarts.
    assert!(s.on_exit(daemon, Exit::Code(1), t0 + ms(10), &mut l));
    assert_ne!(s.service("d").unwrap().pid, Some(daemon));
    assert_eq!(s.status("d", t0 + ms(10)).unwrap().restarts, 1);
}

#[test]
fn failing_health_check_restarts_the_service() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "w",
        "exec=[\"x\"]\n[health]\nexec=[\"check\"]\ninterval_ms=100\nfailures=2\ntimeout_ms=50",
    )]);
    s.start_all(t0, &mut l);
    let main = l.last_pid();
    // First check passes.
    s.on_timer(t0 + ms(100), &mut l);
    let check = l.last_pid();
    s.on_exit(check, Exit::Code(0), t0 + ms(110), &mut l);
    assert_eq!(s.status("w", t0).unwrap().health, Health::Healthy);
    // Second fails by exit status, third by timeout.
    s.on_timer(t0 + ms(210), &mut l);
    s.on_exit(l.last_pid(), Exit::Code(1), t0 + ms(215), &mut l);
    assert_eq!(state(&s, "w"), State::Running);
    s.on_timer(t0 + ms(315), &mut l);
    let hung = l.last_pid();
    s.on_timer(t0 + ms(365), &mut l);
    assert!(l.calls.contains(&Call::Signal(hung, Signal::KILL)));
    assert_eq!(state(&s, "w"), State::Stopping);
    assert_eq!(s.status("w", t0).unwrap().health, Health::Unhealthy);
    s.on_exit(main, Exit::Signal(15), t0 + ms(370), &mut l);
    assert_eq!(state(&s, "w"), State::Backoff);
    assert!(s
        .service("w")
        .unwrap()
        .reason
        .contains("health check failed 2 times"));
}

#[test]
fn stop_all_goes_in_reverse_dependency_order() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("db", "exec=[\"d\"]"),
        ("app", "exec=[\"a\"]\ndepends_on=[\"db\"]"),
    ]);
    s.start_all(t0, &mut l);
    let (db, app) = (101, 102);
    s.stop_all(t0, &mut l);
    assert!(l.calls.contains(&Call::Signal(app, Signal::TERM)));
    assert!(
        !l.calls.contains(&Call::Signal(db, Signal::TERM)),
        "db waits for app"
    );
    s.on_exit(app, Exit::Signal(15), t0 + ms(1), &mut l);
    assert_eq!(l.calls.last(), Some(&Call::Signal(db, Signal::TERM)));
    s.on_exit(db, Exit::Signal(15), t0 + ms(2), &mut l);
    assert!(s.all_down());
    assert!(
        s.start("db", t0, &mut l).is_err(),
        "no starts while shutting down"
    );
}

#[test]
fn spawn_failure_is_a_failure_with_the_reason() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    l.fail_spawn.insert("ghost".into());
    let mut s = sup(&[("ghost", "exec=[\"/no/such\"]\nrestart=\"never\"")]);
    s.start_all(t0, &mut l);
    let st = s.status("ghost", t0).unwrap();
    assert_eq!(st.state, State::Failed);
    assert!(
        st.reason.contains("/no/such") && st.reason.contains("No such file"),
        "{}",
        st.reason
    );
}

#[test]
fn an_unknown_user_fails_at_once_instead_of_being_retried() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    l.unknown_user.insert("svc".into());
    let mut s = sup(&[(
        "svc",
        "exec=[\"/bin/true\"]\nuser=\"nobody-here\"\nrestart=\"always\"",
    )]);
    s.start_all(t0, &mut l);
    let st = s.status("svc", t0).unwrap();
    assert_eq!(st.state, State::Failed, "{}", st.reason);
    assert!(st.reason.contains("nobody-here"), "{}", st.reason);
    assert_eq!(st.restarts, 0);
    assert_eq!(s.next_deadline(), None, "no retry scheduled");
}

#[test]
fn rejected_and_unknown_services_are_refused_by_name() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("a", "exec=[\"x\"]\ndepends_on=[\"nope\"]")]);
    let e = s.start("a", t0, &mut l).unwrap_err();
    assert!(e.to_string().contains("unknown service nope"), "{e}");
    assert_eq!(
        s.start("zzz", t0, &mut l).unwrap_err(),
        ControlError::NotFound("zzz".into())
    );
    assert_eq!(s.list(t0)[0].state, State::Failed);
}

#[test]
fn cordon_holds_back_workloads_only() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("sys", "exec=[\"x\"]"),
        ("work", "exec=[\"x\"]\nclass=\"workload\""),
    ]);
    s.set_cordoned(true);
    s.start_all(t0, &mut l);
    assert_eq!(l.spawned(ProcessKind::Main), vec!["sys"]);
    assert!(s
        .start("work", t0, &mut l)
        .unwrap_err()
        .to_string()
        .contains("cordoned"));
}

#[test]
fn a_probe_passing_after_the_stop_began_changes_nothing() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[(
        "p",
        "exec=[\"x\"]\n[readiness]\nexec=[\"probe\"]\ninterval_ms=10",
    )]);
    s.start_all(t0, &mut l);
    let main = l.last_pid();
    s.on_timer(t0 + ms(10), &mut l);
    let probe = l.last_pid();
    assert_ne!(probe, main);
    // Shutdown while the probe runs; the probe then succeeds.
    s.stop_all(t0 + ms(11), &mut l);
    assert_eq!(state(&s, "p"), State::Stopping);
    s.on_exit(probe, Exit::Code(0), t0 + ms(12), &mut l);
    assert_eq!(
        state(&s, "p"),
        State::Stopping,
        "still stopping, and the call returned"
    );
    s.on_exit(main, Exit::Signal(15), t0 + ms(13), &mut l);
    assert!(s.all_down());
}

#[test]
fn a_spawn_that_keeps_failing_is_retried_later_not_recursively() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    l.fail_spawn.insert("typo".into());
    let mut s = sup(&[(
        "typo",
        "exec=[\"/no/such\"]\nrestart=\"always\"\n[backoff]\ninitial_ms=0\nlimit=0",
    )]);
    s.start_all(t0, &mut l);
    assert_eq!(state(&s, "typo"), State::Backoff);
    assert_eq!(s.next_deadline(), Some(t0 + SPAWN_RETRY_MIN));
    s.on_timer(t0 + SPAWN_RETRY_MIN, &mut l);
    assert_eq!(state(&s, "typo"), State::Backoff);
    assert_eq!(s.status("typo", t0).unwrap().restarts, 2);
}

#[test]
fn start_or_restart_during_a_stop_brings_the_service_back() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("a", "exec=[\"x\"]"), ("b", "exec=[\"x\"]")]);
    s.start_all(t0, &mut l);
    let (a, b) = (101, 102);
    s.stop("a", t0, &mut l).unwrap();
    s.start("a", t0, &mut l).unwrap();
    s.on_exit(a, Exit::Signal(15), t0 + ms(1), &mut l);
    assert_eq!(
        state(&s, "a"),
        State::Running,
        "the start after the stop wins"
    );
    s.stop("b", t0, &mut l).unwrap();
    s.restart("b", t0, &mut l).unwrap();
    s.on_exit(b, Exit::Signal(15), t0 + ms(1), &mut l);
    assert_eq!(
        state(&s, "b"),
        State::Running,
        "the restart after the stop wins"
    );
    assert_eq!(l.spawned(ProcessKind::Main).len(), 4);
}

#[test]
fn all_up_needs_every_service_running_while_all_ready_only_settled() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("ok", "exec=[\"x\"]"),
        ("dies", "exec=[\"x\"]\nrestart=\"never\""),
    ]);
    s.start_all(t0, &mut l);
    assert!(s.all_up());
    let pid = s.service("dies").unwrap().pid.unwrap();
    s.on_exit(pid, Exit::Code(1), t0, &mut l);
    assert!(s.all_ready(), "the boot has settled");
    assert!(
        !s.all_up(),
        "but a slot with a failed service does not pass its try"
    );
}

#[test]
fn tcp_probes_in_flight_finish_later_or_are_abandoned() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    l.slow_ports.insert(9000);
    let mut s = sup(&[(
        "net",
        "exec=[\"n\"]\n[readiness]\ntcp = 9000\ninterval_ms = 50\ntimeout_ms = 5000",
    )]);
    s.start_all(t0, &mut l);
    s.on_timer(t0 + ms(50), &mut l);
    // Connect 1 in flight: bounded by the connect timeout, not the readiness one.
    assert_eq!(
        s.next_deadline(),
        Some(t0 + ms(50) + crate::transitions::TCP_CONNECT_TIMEOUT)
    );
    s.on_timer(
        t0 + ms(50) + crate::transitions::TCP_CONNECT_TIMEOUT,
        &mut l,
    );
    assert!(l.calls.contains(&Call::CancelProbe(1)));
    assert!(
        !s.on_probe_result(1, true, t0 + ms(400), &mut l),
        "abandoned"
    );
    assert_eq!(state(&s, "net"), State::Starting);
    // Connect 2 succeeds when its result arrives.
    s.on_timer(t0 + ms(400), &mut l);
    assert!(s.on_probe_result(2, true, t0 + ms(410), &mut l));
    assert!(s.all_ready());
}

#[test]
fn a_refused_tcp_probe_is_retried_at_the_interval() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    l.slow_ports.insert(9000);
    let mut s = sup(&[(
        "net",
        "exec=[\"n\"]\n[readiness]\ntcp = 9000\ninterval_ms = 50",
    )]);
    s.start_all(t0, &mut l);
    s.on_timer(t0 + ms(50), &mut l);
    assert!(s.on_probe_result(1, false, t0 + ms(51), &mut l));
    assert_eq!(s.next_deadline().map(|d| d >= t0 + ms(101)), Some(true));
    assert_eq!(state(&s, "net"), State::Starting);
}

#[test]
fn a_restart_during_shutdown_is_refused() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[("web", "exec=[\"w\"]")]);
    s.start_all(t0, &mut l);
    s.stop_all(t0, &mut l);
    let e = s.restart("web", t0, &mut l).unwrap_err();
    assert!(e.to_string().contains("shutting down"), "{e}");
    assert!(s.start("web", t0, &mut l).is_err());
}

#[test]
fn draining_a_class_stops_only_its_services() {
    let t0 = Instant::now();
    let mut l = Fake::default();
    let mut s = sup(&[
        ("web", "exec=[\"w\"]\nclass = \"workload\""),
        ("sshd", "exec=[\"s\"]"),
    ]);
    s.start_all(t0, &mut l);
    s.set_cordoned(true);
    s.stop_class(Class::Workload, t0, &mut l);
    assert_eq!(
        s.active_in_class(Class::Workload),
        vec!["web".to_owned()],
        "still stopping"
    );
    let web_pid = s.service("web").unwrap().pid.unwrap();
    s.on_exit(web_pid, Exit::Signal(15), t0 + ms(10), &mut l);
    assert!(s.active_in_class(Class::Workload).is_empty());
    assert_eq!(state(&s, "sshd"), State::Running);
    assert!(s.start("web", t0, &mut l).is_err(), "cordoned");
}

#[path = "reload_tests.rs"]
mod reload_tests;
