//! The real `Launcher`: spawns service processes into their cgroups with
//! their credentials, capabilities, environment, captured output and
//! notify socket. New pipe and socket fds are queued for the event loop.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bascule_services::logs::Stream;
use bascule_services::spec::Readiness;
use bascule_services::{
    Launcher, Membership, ProcessKind, ServiceSpec, Signal, SpawnError, TcpProbe,
};

use crate::lineage::Lineage;
use crate::log;
use bascule_sys::cgroup::CgroupRoot;
use bascule_sys::creds;
use bascule_sys::proctree;
use bascule_sys::spawn::{self, Output, SpawnPlan};

/// Fds of processes started since the event loop last looked.
#[derive(Default)]
pub struct NewFds {
    /// Output pipes, read by the log capture.
    pub pipes: Vec<(String, Stream, OwnedFd)>,
    /// Notify sockets created for services.
    pub notify: Vec<(String, UnixDatagram)>,
    /// TCP probes connecting, by probe id.
    pub probes: Vec<(u64, OwnedFd)>,
    /// Probes the supervisor gave up on.
    pub cancelled: Vec<u64>,
    /// Pidfds of main processes named by MAINPID=, by service.
    pub main_pids: Vec<(String, u32, OwnedFd)>,
}

/// What the event loop needs of a launcher beyond the supervisor's
/// [`Launcher`]: the fds it created, and cleaning up its cgroups.
pub trait ServiceLauncher {
    fn launcher(&mut self) -> &mut dyn Launcher;
    fn take_new_fds(&mut self) -> NewFds;
    /// Removes every service cgroup (supervise mode, at exit).
    fn remove_cgroups(&mut self);
    /// When the record of the services' processes is next refreshed
    /// (only without cgroups).
    fn lineage_due(&self) -> Option<Instant> {
        None
    }
    /// Refreshes that record if it is due.
    fn refresh_lineage(&mut self, _now: Instant) {}
}

impl ServiceLauncher for RealLauncher {
    fn launcher(&mut self) -> &mut dyn Launcher {
        self
    }

    fn take_new_fds(&mut self) -> NewFds {
        NewFds {
            pipes: std::mem::take(&mut self.new_pipes),
            notify: std::mem::take(&mut self.new_notify),
            probes: std::mem::take(&mut self.new_probes),
            cancelled: std::mem::take(&mut self.cancelled_probes),
            main_pids: std::mem::take(&mut self.new_main_pids),
        }
    }

    fn remove_cgroups(&mut self) {
        if let Some(cg) = &self.cgroups {
            cg.remove_all();
        }
    }

    fn lineage_due(&self) -> Option<Instant> {
        self.lineage.due()
    }

    fn refresh_lineage(&mut self, now: Instant) {
        if self.lineage.due().is_some_and(|d| now >= d) {
            self.lineage.refresh(now);
        }
    }
}

pub struct RealLauncher {
    pub cgroups: Option<CgroupRoot>,
    /// Directory of the per-service NOTIFY_SOCKET sockets.
    pub notify_dir: PathBuf,
    /// Where /etc/passwd and /etc/group are read from.
    pub etc: PathBuf,
    cap_last: u32,
    notify_sockets: BTreeMap<String, PathBuf>,
    /// Output pipes of processes started since the event loop last looked.
    pub new_pipes: Vec<(String, Stream, OwnedFd)>,
    /// Notify sockets created since the event loop last looked.
    pub new_notify: Vec<(String, UnixDatagram)>,
    new_probes: Vec<(u64, OwnedFd)>,
    cancelled_probes: Vec<u64>,
    new_main_pids: Vec<(String, u32, OwnedFd)>,
    next_probe: u64,
    /// Without cgroups: each service's processes, by parentage.
    lineage: Lineage,
}

impl RealLauncher {
    pub fn new(cgroups: Option<CgroupRoot>, notify_dir: PathBuf) -> Self {
        RealLauncher {
            cgroups,
            notify_dir,
            etc: PathBuf::from("/etc"),
            cap_last: spawn::cap_last(),
            notify_sockets: BTreeMap::new(),
            new_pipes: Vec::new(),
            new_notify: Vec::new(),
            new_probes: Vec::new(),
            cancelled_probes: Vec::new(),
            new_main_pids: Vec::new(),
            next_probe: 0,
            lineage: Lineage::default(),
        }
    }

    /// One datagram socket per service: the service is known by the socket;
    /// the sending process by its credentials (SO_PASSCRED), checked
    /// against the service's `notify_access`.
    fn notify_socket(
        &mut self,
        name: &str,
        owner: Option<&creds::Creds>,
    ) -> Result<PathBuf, SpawnError> {
        let path = match self.notify_sockets.get(name) {
            Some(p) => p.clone(),
            None => self.bind_notify_socket(name)?,
        };
        // A service running as another user must be able to send to it.
        if let Some(c) = owner {
            rustix::fs::chown(
                &path,
                Some(rustix::fs::Uid::from_raw(c.uid)),
                Some(rustix::fs::Gid::from_raw(c.gid)),
            )
            .map_err(|e| SpawnError::NotifySocket {
                message: format!("cannot give it to uid {}: {e}", c.uid),
                path: path.clone(),
            })?;
        }
        Ok(path)
    }

    fn bind_notify_socket(&mut self, name: &str) -> Result<PathBuf, SpawnError> {
        let path = self.notify_dir.join(format!("{name}.sock"));
        let err = |message: String| SpawnError::NotifySocket {
            path: path.clone(),
            message,
        };
        std::fs::create_dir_all(&self.notify_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", self.notify_dir.display())))?;
        let _ = std::fs::remove_file(&path);
        let sock = UnixDatagram::bind(&path).map_err(|e| err(format!("cannot bind it: {e}")))?;
        sock.set_nonblocking(true)
            .map_err(|e| err(format!("cannot make it non-blocking: {e}")))?;
        rustix::net::sockopt::set_socket_passcred(&sock, true)
            .map_err(|e| err(format!("cannot ask for senders' credentials: {e}")))?;
        self.new_notify.push((name.to_owned(), sock));
        self.notify_sockets.insert(name.to_owned(), path.clone());
        Ok(path)
    }
}

impl Launcher for RealLauncher {
    fn spawn(
        &mut self,
        spec: &ServiceSpec,
        kind: ProcessKind,
        argv: &[String],
    ) -> Result<u32, SpawnError> {
        let creds = creds::resolve(spec.user.as_deref(), spec.group.as_deref(), &self.etc)
            .map_err(|e| match e {
                creds::CredsError::NoUser(user) => SpawnError::UnknownUser {
                    user,
                    file: self.etc.join("passwd"),
                },
                creds::CredsError::NoGroup(group) => SpawnError::UnknownGroup {
                    group,
                    file: self.etc.join("group"),
                },
            })?;
        // Checked here, not after the fork: it fails the same way every
        // time until someone creates it.
        if let Some(dir) = spec.working_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(SpawnError::WorkingDir { path: dir.clone() });
        }
        let mut env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let main = kind == ProcessKind::Main;
        if main && spec.readiness.kind == Readiness::Notify {
            let path = self.notify_socket(&spec.name, creds.as_ref())?;
            env.push(("NOTIFY_SOCKET".into(), path.display().to_string()));
        }
        let cgroup_procs = match &self.cgroups {
            Some(cg) => Some(cg.prepare(&spec.name).map_err(|e| SpawnError::Cgroup {
                path: cg.service_dir(&spec.name),
                message: e.to_string(),
            })?),
            None => None,
        };
        let plan = SpawnPlan {
            argv: argv.to_vec(),
            env,
            cwd: spec.working_dir.clone(),
            creds,
            keep_caps: spec
                .capabilities
                .as_ref()
                .map(|caps| caps.iter().fold(0u64, |m, c| m | c.bitmask())),
            cap_last: self.cap_last,
            cgroup_procs,
            output: if main { Output::Capture } else { Output::Null },
        };
        let spawned = spawn::spawn(plan).map_err(|e| SpawnError::Exec {
            message: e.to_string(),
        })?;
        if let Some(fd) = spawned.stdout {
            self.new_pipes.push((spec.name.clone(), Stream::Stdout, fd));
        }
        if let Some(fd) = spawned.stderr {
            self.new_pipes.push((spec.name.clone(), Stream::Stderr, fd));
        }
        if main && self.cgroups.is_none() {
            self.lineage.started(&spec.name, spawned.pid);
        }
        Ok(spawned.pid)
    }

    fn signal(&mut self, pid: u32, signal: Signal) {
        // A stop begins: what the main process has started so far is
        // recorded before it can exit and orphan it.
        if self.cgroups.is_none() {
            self.lineage.note_main_signalled(pid);
        }
        let (Some(pid), Some(sig)) = (
            rustix::process::Pid::from_raw(pid as i32),
            rustix::process::Signal::from_named_raw(signal.raw()),
        ) else {
            return;
        };
        if let Err(e) = rustix::process::kill_process(pid, sig) {
            if e != rustix::io::Errno::SRCH {
                log!("cannot send {signal} to pid {pid:?}: {e}");
            }
        }
    }

    fn kill_all(&mut self, spec: &ServiceSpec, main_pid: Option<u32>) {
        if let Some(cg) = &self.cgroups {
            if let Err(e) = cg.kill(&spec.name) {
                log!(
                    "service {}: cannot kill cgroup {}: {e}",
                    spec.name,
                    cg.service_dir(&spec.name).display()
                );
            }
        }
        if self.cgroups.is_none() {
            let killed = self.lineage.kill(&spec.name, main_pid);
            if !killed.is_empty() {
                log!(
                    "service {}: killed {} process(es) it left behind: {}",
                    spec.name,
                    killed.len(),
                    killed
                        .iter()
                        .map(|p| p.pid.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        // The process group catches what left the cgroup or where there is none.
        if let Some(pgid) = main_pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
    }

    /// A non-blocking connect: the loop watches the socket and reports the
    /// result, so a port that does not answer never stalls PID 1.
    fn probe_tcp(&mut self, port: u16) -> TcpProbe {
        use rustix::net::{AddressFamily, SocketFlags, SocketType};
        let sock = match rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        ) {
            Ok(s) => s,
            Err(e) => {
                log!("cannot create a socket for a TCP probe of port {port}: {e}");
                return TcpProbe::Done(false);
            }
        };
        let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
        match rustix::net::connect(&sock, &addr) {
            Ok(()) => TcpProbe::Done(true),
            Err(rustix::io::Errno::INPROGRESS) | Err(rustix::io::Errno::INTR) => {
                self.next_probe += 1;
                self.new_probes.push((self.next_probe, sock));
                TcpProbe::Connecting(self.next_probe)
            }
            Err(_) => TcpProbe::Done(false),
        }
    }

    fn cancel_probe(&mut self, id: u64) {
        self.cancelled_probes.push(id);
    }

    fn membership(&mut self, spec: &ServiceSpec, pid: u32) -> Membership {
        let member = match &self.cgroups {
            Some(cg) => cg.contains(&spec.name, pid),
            None => self.lineage.contains(&spec.name, pid),
        };
        if member {
            Membership::Member
        } else if proctree::running(pid) {
            Membership::Stranger
        } else {
            Membership::Gone
        }
    }

    fn uid_of(&mut self, pid: u32) -> Option<u32> {
        proctree::uid_of(pid)
    }

    fn main_pid_changed(&mut self, spec: &ServiceSpec, pid: u32) {
        if self.cgroups.is_none() {
            self.lineage.adopt(&spec.name, pid);
        }
        // While its launcher lives, the new main process is the launcher's
        // child, and its exit is the launcher's to reap: a pidfd sees it.
        use rustix::process::{pidfd_open, Pid, PidfdFlags};
        match Pid::from_raw(pid as i32).map(|p| pidfd_open(p, PidfdFlags::empty())) {
            Some(Ok(fd)) => self.new_main_pids.push((spec.name.clone(), pid, fd)),
            Some(Err(e)) => log!(
                "service {}: cannot watch main process {pid} (pidfd_open: {e}); its exit is seen only once it is reparented to init",
                spec.name
            ),
            None => {}
        }
    }

    fn probe_path(&mut self, path: &Path) -> bool {
        path.exists()
    }
}
