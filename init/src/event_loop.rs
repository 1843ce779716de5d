//! The event loop: one epoll over the signalfd, one timerfd, the control
//! socket and its clients, service output pipes and notify sockets. Nothing
//! blocks and nothing polls: every wake-up has a cause.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bascule_api::pb;
use bascule_services::logs::{LogRing, RotationPolicy, Stream};
use bascule_services::{Event, Supervisor};

use crate::conn::{self, Conn, ReadOutcome};
use crate::launcher::RealLauncher;
use crate::log;
use bascule_sys::clock::{self, Clock};
use bascule_sys::epoll::{Epoll, Interest};
use bascule_sys::power::PowerAction;
use bascule_sys::reap;
use bascule_sys::signals::{SignalEvent, Signals};
use bascule_sys::timer::Timer;
use bascule_sys::watchdog::Watchdog;

/// How PID 1 runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The OS init: shutdown ends in reboot(2).
    Pid1,
    /// A child subreaper on a host: shutdown ends the process.
    Supervise,
}

pub struct Config {
    pub mode: Mode,
    pub config_dir: PathBuf,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    pub log_dir: Option<PathBuf>,
    pub api_group: Option<u32>,
    pub booted_slot: Option<String>,
    /// The virtio-serial port serving the API too (PID 1 in a VM).
    pub api_port: Option<PathBuf>,
}

/// Bytes kept in memory per service.
const LOG_RING_BYTES: usize = 1 << 20;
/// Reads per pipe per wake-up, so one chatty service cannot starve the rest.
const PIPE_READS_PER_TURN: usize = 16;
/// Control clients served at once; more get an error and are closed.
const MAX_CONNECTIONS: usize = 256;
/// A start/stop request gets its reply within this time, settled or not.
const CONTROL_WAIT: Duration = bascule_api::client::CONTROL_SETTLE;

const TOKEN_SIGNALS: u64 = 1;
const TOKEN_TIMER: u64 = 2;
const TOKEN_LISTENER: u64 = 3;
const KIND_CONN: u64 = 4;
const KIND_PIPE: u64 = 5;
const KIND_NOTIFY: u64 = 6;

fn token(kind: u64, id: u64) -> u64 {
    (kind << 48) | id
}

/// The virtio-serial port's connection: id 0 is never given to a socket client.
const TOKEN_PORT: u64 = KIND_CONN << 48;

struct Pipe {
    service: String,
    stream: Stream,
    fd: OwnedFd,
}

pub enum WaitFor {
    Up { after_generation: u64 },
    Down,
}

pub struct Waiter {
    pub conn: u64,
    pub request_id: u64,
    pub service: String,
    pub wait: WaitFor,
    pub deadline: Instant,
}

pub struct Init<C: Clock> {
    pub(crate) cfg: Config,
    pub(crate) clock: C,
    pub(crate) epoll: Epoll,
    pub(crate) signals: Signals,
    pub(crate) timer: Timer,
    pub(crate) listener: UnixListener,
    pub(crate) sup: Supervisor,
    pub(crate) launcher: RealLauncher,
    pub(crate) logs: BTreeMap<String, LogRing>,
    pipes: HashMap<u64, Pipe>,
    pub(crate) notify: HashMap<u64, (String, UnixDatagram)>,
    pub(crate) conns: HashMap<u64, Conn>,
    pub(crate) next_id: u64,
    pub(crate) waiters: Vec<Waiter>,
    pub(crate) timeline: Vec<(String, u64)>,
    pub(crate) all_ready_recorded: bool,
    pub(crate) shutdown: Option<crate::shutdown::Shutdown>,
    /// The port's fd is in the epoll set (only while the host is attached).
    pub(crate) port_registered: bool,
    pub(crate) watchdog: Option<(Watchdog, Instant)>,
    pub(crate) listener_paused: bool,
    /// Boot slots, or why they are not managed here.
    pub(crate) slots: Result<crate::slots::Slots, String>,
}

impl<C: Clock> Init<C> {
    pub fn new(
        cfg: Config,
        clock: C,
        sup: Supervisor,
        launcher: RealLauncher,
        listener: UnixListener,
        timeline: Vec<(String, u64)>,
    ) -> io::Result<Self> {
        let epoll = Epoll::new()?;
        let signals = Signals::open()?;
        let timer = Timer::new()?;
        listener.set_nonblocking(true)?;
        epoll.add(&signals, TOKEN_SIGNALS, Interest::IN)?;
        epoll.add(&timer, TOKEN_TIMER, Interest::IN)?;
        epoll.add(&listener, TOKEN_LISTENER, Interest::IN)?;
        let mut logs = BTreeMap::new();
        for name in sup.names() {
            let mut ring = LogRing::new(LOG_RING_BYTES);
            if let Some(dir) = &cfg.log_dir {
                if let Err(e) = ring.attach_file(dir, name, RotationPolicy::default()) {
                    log!("service {name}: {e}; keeping its output in memory only");
                }
            }
            logs.insert(name.clone(), ring);
        }
        Ok(Init {
            cfg,
            clock,
            epoll,
            signals,
            timer,
            listener,
            sup,
            launcher,
            logs,
            pipes: HashMap::new(),
            notify: HashMap::new(),
            conns: HashMap::new(),
            next_id: 1,
            waiters: Vec::new(),
            timeline,
            all_ready_recorded: false,
            shutdown: None,
            port_registered: false,
            watchdog: None,
            listener_paused: false,
            slots: Err(
                "boot slots are managed only by PID 1 of a machine booted from a Bascule disk"
                    .into(),
            ),
        }
        .with_port())
    }

    /// Arms the hardware watchdog; the loop feeds it from now on.
    pub fn set_watchdog(&mut self, wd: Watchdog) {
        let now = self.now();
        log!("hardware watchdog armed ({:?})", wd.timeout);
        let _ = wd.feed();
        let next = now + wd.interval();
        self.watchdog = Some((wd, next));
    }

    fn feed_watchdog(&mut self, now: Instant) {
        if let Some((wd, next)) = &mut self.watchdog {
            if now >= *next {
                if let Err(e) = wd.feed() {
                    log!("cannot feed the watchdog: {e}");
                }
                *next = now + wd.interval();
            }
        }
    }

    /// Opens the API's virtio-serial port, if configured.
    fn with_port(mut self) -> Self {
        if let Some(path) = self.cfg.api_port.clone() {
            match bascule_sys::vport::open_port(&path) {
                Ok(fd) => {
                    self.conns.insert(TOKEN_PORT, Conn::new(fd));
                    self.port_check();
                    log!("serving the API on {}", path.display());
                }
                Err(e) => log!("cannot open the API port {}: {e}", path.display()),
            }
        }
        self
    }

    /// Watches the port while a host client is attached, and only then:
    /// a detached port reports HUP without end.
    fn port_check(&mut self) {
        let Some(conn) = self.conns.get_mut(&TOKEN_PORT) else {
            return;
        };
        let connected = bascule_sys::vport::host_connected(&conn.stream);
        if connected && !self.port_registered {
            conn.reset();
            if self
                .epoll
                .add(&conn.stream, TOKEN_PORT, Interest::IN | Interest::RDHUP)
                .is_ok()
            {
                self.port_registered = true;
            }
        } else if !connected && self.port_registered {
            let _ = self.epoll.delete(&conn.stream);
            conn.reset();
            self.port_registered = false;
        }
    }

    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Starts every service, then runs until a shutdown completes (supervise
    /// mode) — in PID 1 mode a completed shutdown never returns.
    pub fn start(&mut self) {
        for r in self.sup.rejected() {
            log!("{}", r.reason);
        }
        let now = self.now();
        self.sup.start_all(now, &mut self.launcher);
        self.after_events();
    }

    /// One turn of the loop. Returns the power action once a supervise-mode
    /// shutdown has finished.
    pub fn turn(&mut self) -> Option<PowerAction> {
        let now = self.now();
        let deadline = [
            self.sup.next_deadline(),
            self.waiters.iter().map(|w| w.deadline).min(),
            self.shutdown
                .as_ref()
                .filter(|s| s.phase != crate::shutdown::ShutdownPhase::Halted)
                .map(|s| s.deadline),
            self.watchdog.as_ref().map(|(_, next)| *next),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Err(e) = self.timer.arm(deadline, now) {
            log!("cannot arm the timer: {e}");
        }
        let events = match self.epoll.wait(None) {
            Ok(ev) => ev,
            Err(e) => {
                log!("epoll_wait failed: {e}");
                return None;
            }
        };
        for (tok, flags) in events {
            match tok {
                TOKEN_SIGNALS => self.on_signals(),
                TOKEN_TIMER => {
                    self.timer.acknowledge();
                    let now = self.now();
                    self.sup.on_timer(now, &mut self.launcher);
                }
                TOKEN_LISTENER => self.accept(),
                t => match t >> 48 {
                    KIND_CONN => self.on_conn(t, flags),
                    KIND_PIPE => self.on_pipe(t),
                    KIND_NOTIFY => self.on_notify(t),
                    _ => {}
                },
            }
        }
        // Whatever woke the loop, it is turning: that is what the watchdog checks.
        let now = self.now();
        self.feed_watchdog(now);
        self.after_events()
    }

    fn on_signals(&mut self) {
        for ev in self.signals.read() {
            match ev {
                SignalEvent::ChildExited => self.reap(),
                SignalEvent::PortChanged => self.port_check(),
                SignalEvent::Poweroff => self.begin_shutdown(PowerAction::Poweroff),
                SignalEvent::Reboot => self.begin_shutdown(PowerAction::Reboot),
                SignalEvent::Other(n) => log!("ignoring signal {n}"),
            }
        }
    }

    fn reap(&mut self) {
        let now = self.now();
        for (pid, status) in reap::reap_all() {
            let exit = match status {
                reap::WaitStatus::Exited(code) => bascule_services::Exit::Code(code),
                reap::WaitStatus::Killed(sig) => bascule_services::Exit::Signal(sig),
            };
            if !self.sup.on_exit(pid, exit, now, &mut self.launcher) {
                // An orphan re-parented to us: reaping it is all there is to do.
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // Out of fds (EMFILE/ENFILE): the listener would stay
                    // readable and spin the loop. Stop watching it until a
                    // connection closes.
                    log!(
                        "accept on {}: {e}; not accepting until a client leaves",
                        self.cfg.socket.display()
                    );
                    self.pause_listener();
                    return;
                }
            };
            if self.conns.len() >= MAX_CONNECTIONS {
                let mut conn = Conn::new(OwnedFd::from(stream));
                conn.send(&error_response(
                    0,
                    pb::ErrorCode::Unavailable,
                    format!("too many control clients ({MAX_CONNECTIONS}); try again later"),
                ));
                let _ = conn.flush();
                continue;
            }
            if let Err(e) = stream.set_nonblocking(true) {
                log!("control connection setup failed: {e}");
                continue;
            }
            let verdict = match rustix::net::sockopt::socket_peercred(&stream) {
                Ok(cred) => conn::authorize(
                    cred.uid.as_raw(),
                    cred.gid.as_raw(),
                    cred.pid.as_raw_nonzero().get() as u32,
                    self.cfg.api_group,
                ),
                Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
            };
            let mut conn = Conn::new(OwnedFd::from(stream));
            if let Err(msg) = verdict {
                log!("refused a control client: {msg}");
                conn.send(&error_response(0, pb::ErrorCode::PermissionDenied, msg));
                conn.closing = true;
            }
            let id = self.next_id;
            self.next_id += 1;
            let tok = token(KIND_CONN, id);
            if let Err(e) = self
                .epoll
                .add(&conn.stream, tok, Interest::IN | Interest::RDHUP)
            {
                log!("cannot watch a control connection: {e}");
                continue;
            }
            self.conns.insert(tok, conn);
            self.service_conn(tok);
        }
    }

    fn on_conn(&mut self, tok: u64, flags: Interest) {
        let Some(conn) = self.conns.get_mut(&tok) else {
            return;
        };
        if flags.intersects(Interest::IN | Interest::RDHUP | Interest::HUP | Interest::ERR)
            && !conn.closing
        {
            match conn.read_some() {
                Ok(ReadOutcome::Open) => {}
                Ok(ReadOutcome::Closed) => {
                    // Half-closed: answer what it sent, then close.
                    self.process_frames(tok);
                    if let Some(conn) = self.conns.get_mut(&tok) {
                        conn.closing = true;
                        conn.follows.clear();
                    }
                    self.waiters.retain(|w| w.conn != tok);
                    self.service_conn(tok);
                    return;
                }
                Err(_) => {
                    // The connection broke: answer nothing more.
                    self.drop_conn(tok);
                    return;
                }
            }
            self.process_frames(tok);
        } else if flags.intersects(Interest::HUP | Interest::ERR) {
            self.drop_conn(tok);
            return;
        }
        self.service_conn(tok);
    }

    /// Decodes and handles every complete request of a connection.
    fn process_frames(&mut self, tok: u64) {
        loop {
            let Some(conn) = self.conns.get_mut(&tok) else {
                return;
            };
            if conn.closing {
                return;
            }
            let payload = match conn.decoder.next_frame() {
                Ok(Some(p)) => p,
                Ok(None) => return,
                Err(e) => {
                    let code = match e {
                        bascule_api::FrameError::TooLarge { .. } => pb::ErrorCode::FrameTooLarge,
                        _ => pb::ErrorCode::Malformed,
                    };
                    log!("closing a control connection: {e}");
                    conn.send(&error_response(
                        0,
                        code,
                        format!("{e}; closing the connection"),
                    ));
                    conn.closing = true;
                    return;
                }
            };
            match bascule_api::frame::decode::<pb::Request>(&payload, "bascule.v1.Request") {
                Ok(req) => self.handle_request(tok, req),
                Err(e) => {
                    log!("closing a control connection: {e}");
                    conn.send(&error_response(
                        0,
                        pb::ErrorCode::Malformed,
                        format!("{e}; closing the connection"),
                    ));
                    conn.closing = true;
                    return;
                }
            }
        }
    }

    /// Flushes a connection's output and sets its epoll interest; closes it
    /// when it is done or hopelessly behind.
    pub(crate) fn service_conn(&mut self, tok: u64) {
        let Some(conn) = self.conns.get_mut(&tok) else {
            return;
        };
        if conn.flush().is_err() {
            self.drop_conn(tok);
            return;
        }
        if conn.closing && conn.pending_output() == 0 {
            self.drop_conn(tok);
            return;
        }
        let want_write = conn.pending_output() > 0;
        if want_write != conn.want_write {
            conn.want_write = want_write;
            let interest = if want_write {
                Interest::IN | Interest::OUT | Interest::RDHUP
            } else {
                Interest::IN | Interest::RDHUP
            };
            let _ = self.epoll.modify(&conn.stream, tok, interest);
        }
    }

    pub(crate) fn drop_conn(&mut self, tok: u64) {
        if tok == TOKEN_PORT {
            // The port stays open: forget the session, wait for the next host client.
            if let Some(conn) = self.conns.get_mut(&TOKEN_PORT) {
                if self.port_registered {
                    let _ = self.epoll.delete(&conn.stream);
                }
                conn.reset();
            }
            self.port_registered = false;
            self.waiters.retain(|w| w.conn != tok);
            self.port_check();
            return;
        }
        if let Some(conn) = self.conns.remove(&tok) {
            let _ = self.epoll.delete(&conn.stream);
        }
        self.waiters.retain(|w| w.conn != tok);
        self.resume_listener();
    }

    fn pause_listener(&mut self) {
        if !self.listener_paused && self.epoll.delete(&self.listener).is_ok() {
            self.listener_paused = true;
        }
    }

    fn resume_listener(&mut self) {
        if self.listener_paused
            && self
                .epoll
                .add(&self.listener, TOKEN_LISTENER, Interest::IN)
                .is_ok()
        {
            self.listener_paused = false;
        }
    }

    fn on_pipe(&mut self, tok: u64) {
        let Some(pipe) = self.pipes.get_mut(&tok) else {
            return;
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut eof = false;
        let mut got = false;
        let ring = self.logs.get_mut(&pipe.service);
        let mut ring = ring;
        for _ in 0..PIPE_READS_PER_TURN {
            match rustix::io::read(&pipe.fd, &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => {
                    if let Some(r) = ring.as_deref_mut() {
                        got |= r.push(pipe.stream, clock::wall_us(), &buf[..n]);
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let service = pipe.service.clone();
        if eof {
            if let Some(p) = self.pipes.remove(&tok) {
                let _ = self.epoll.delete(&p.fd);
                if let Some(r) = self.logs.get_mut(&service) {
                    r.flush_stream(p.stream, clock::wall_us());
                    got = true;
                }
            }
        }
        if let Some(err) = self
            .logs
            .get_mut(&service)
            .and_then(|r| r.file_error.take())
        {
            log!("service {service}: {err}; keeping its output in memory only");
        }
        if got {
            self.push_follows(&service);
        }
    }

    fn on_notify(&mut self, tok: u64) {
        let Some((name, sock)) = self.notify.get(&tok) else {
            return;
        };
        let name = name.clone();
        let mut buf = [0u8; 4096];
        let mut messages = Vec::new();
        while let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        let now = self.now();
        for m in messages {
            self.sup.on_notify(&name, &m, now, &mut self.launcher);
        }
    }

    /// Registers new fds, reports supervisor events, answers waiters and
    /// moves a shutdown along.
    fn after_events(&mut self) -> Option<PowerAction> {
        for (service, stream, fd) in std::mem::take(&mut self.launcher.new_pipes) {
            let _ = rustix::fs::fcntl_setfl(&fd, rustix::fs::OFlags::NONBLOCK);
            let id = self.next_id;
            self.next_id += 1;
            let tok = token(KIND_PIPE, id);
            if let Err(e) = self.epoll.add(fd.as_fd(), tok, Interest::IN) {
                log!("service {service}: cannot capture output: {e}");
                continue;
            }
            self.pipes.insert(
                tok,
                Pipe {
                    service,
                    stream,
                    fd,
                },
            );
        }
        for (service, sock) in std::mem::take(&mut self.launcher.new_notify) {
            let id = self.next_id;
            self.next_id += 1;
            let tok = token(KIND_NOTIFY, id);
            if let Err(e) = self.epoll.add(&sock, tok, Interest::IN) {
                log!("service {service}: cannot watch its notify socket: {e}");
                continue;
            }
            self.notify.insert(tok, (service, sock));
        }
        for ev in self.sup.take_events() {
            self.report(ev);
        }
        if !self.all_ready_recorded && self.shutdown.is_none() && self.sup.all_ready() {
            self.all_ready_recorded = true;
            self.timeline
                .push(("all services ready".into(), clock::boottime_us()));
            log!("all services ready");
            if let Ok(slots) = &mut self.slots {
                if self.sup.all_up() {
                    for note in slots.all_ready() {
                        log!("{note}");
                    }
                } else if slots.record.pending_slot() == Some(slots.booted) {
                    log!(
                        "slot {} is not confirmed: a service failed or was rejected; its try stays pending and fails at the next boot",
                        slots.booted
                    );
                }
            }
        }
        self.resolve_waiters();
        self.advance_shutdown()
    }

    fn report(&mut self, ev: Event) {
        match ev {
            Event::Started { name, pid } => log!("service {name}: started, pid {pid}"),
            Event::Ready { name } => {
                // The first readiness of each service only: a crash loop
                // must not grow the timeline.
                let label = format!("service {name} ready");
                if !self.all_ready_recorded && !self.timeline.iter().any(|(n, _)| *n == label) {
                    self.timeline.push((label, clock::boottime_us()));
                }
                log!("service {name}: ready");
            }
            Event::Exited { name, exit } => log!("service {name}: {exit}"),
            Event::Restarting { name, delay_ms } => {
                log!("service {name}: restarting in {delay_ms} ms")
            }
            Event::Failed { name, reason } => log!("service {name}: failed: {reason}"),
            Event::Stopped { name } => log!("service {name}: stopped"),
            Event::Unhealthy { name } => log!("service {name}: unhealthy"),
        }
    }

    /// Sends new log lines to every client following `service`.
    pub(crate) fn push_follows(&mut self, service: &str) {
        let Some(ring) = self.logs.get(service) else {
            return;
        };
        let toks: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.follows.iter().any(|f| f.service == service))
            .map(|(t, _)| *t)
            .collect();
        let mut serviced = Vec::new();
        for tok in toks {
            let Some(conn) = self.conns.get_mut(&tok) else {
                continue;
            };
            let backlogged = conn.pending_output() > conn::FOLLOW_BACKPRESSURE;
            let mut frames = Vec::new();
            for f in conn.follows.iter_mut().filter(|f| f.service == service) {
                let (lines, next, lost) = ring.since(f.cursor, 256 * 1024);
                f.dropped += lost;
                f.cursor = next;
                if backlogged {
                    // The client is not reading: skip ahead rather than buffer without bound.
                    f.dropped += lines.len() as u64;
                    continue;
                }
                if lines.is_empty() {
                    continue;
                }
                frames.push(pb::Response {
                    id: f.request_id,
                    more: true,
                    result: Some(pb::response::Result::Log(pb::LogChunk {
                        lines: crate::wire::log_lines(lines),
                        dropped: f.dropped,
                    })),
                });
                f.dropped = 0;
            }
            for fr in frames {
                conn.send(&fr);
            }
            serviced.push(tok);
        }
        for tok in serviced {
            self.service_conn(tok);
        }
    }
}

/// How long a start/stop request may wait for its service to settle.
pub fn control_wait() -> Duration {
    CONTROL_WAIT
}

pub fn error_response(id: u64, code: pb::ErrorCode, message: impl Into<String>) -> pb::Response {
    pb::Response {
        id,
        more: false,
        result: Some(pb::response::Result::Error(pb::Error::new(code, message))),
    }
}

/// Reads a small file, for messages: never fails.
pub fn read_trimmed(path: &str) -> Option<String> {
    let mut s = String::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_string(&mut s)
        .ok()?;
    Some(s.trim().to_owned())
}
