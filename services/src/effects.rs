//! What the supervisor does to the outside world and tells it: the
//! [`Launcher`] it acts through, the [`Event`]s it reports, and how a spawn
//! can fail. A leaf module shared by the supervisor and its transitions.

use std::path::{Path, PathBuf};

use crate::signal::Signal;
use crate::spec::ServiceSpec;
use crate::status::Exit;

/// What kind of process a spawn is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessKind {
    Main,
    Readiness,
    Health,
    PreStop,
}

/// Why a process of a service could not be started. The text becomes the
/// service's reason, so it says what is wrong and where to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpawnError {
    #[error("user {user:?} is not in {}: add it there or change `user` in the service file", file.display())]
    UnknownUser { user: String, file: PathBuf },
    #[error("group {group:?} is not in {}: add it there or change `group` in the service file", file.display())]
    UnknownGroup { group: String, file: PathBuf },
    #[error("working directory {} does not exist or is not a directory: create it or change `working_dir` in the service file", path.display())]
    WorkingDir { path: PathBuf },
    #[error("cannot set up the notify socket {}: {message}", path.display())]
    NotifySocket { path: PathBuf, message: String },
    #[error("cannot prepare cgroup {}: {message}", path.display())]
    Cgroup { path: PathBuf, message: String },
    /// Fork, the child's setup (credentials, capabilities, cgroup) or exec failed.
    #[error("{message}")]
    Exec { message: String },
}

impl SpawnError {
    /// Certain to fail again until the configuration changes: the service
    /// fails at once instead of being retried.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            SpawnError::UnknownUser { .. }
                | SpawnError::UnknownGroup { .. }
                | SpawnError::WorkingDir { .. }
        )
    }
}

/// The side effects the supervisor needs, implemented with real syscalls in
/// `bascule-init` and by a recording fake in tests.
pub trait Launcher {
    /// Starts `argv` for `spec`. Main processes get the service's
    /// environment, user, capabilities, cgroup and captured output.
    fn spawn(
        &mut self,
        spec: &ServiceSpec,
        kind: ProcessKind,
        argv: &[String],
    ) -> Result<u32, SpawnError>;
    fn signal(&mut self, pid: u32, signal: Signal);
    /// SIGKILLs everything that belongs to the service (its cgroup, or the
    /// main process group where there is no cgroup).
    fn kill_all(&mut self, spec: &ServiceSpec, main_pid: Option<u32>);
    /// Starts a connect to 127.0.0.1:`port`. Its result comes back through
    /// [`crate::Supervisor::on_probe_result`] unless it was known at once.
    fn probe_tcp(&mut self, port: u16) -> TcpProbe;
    /// Abandons a connect that took too long.
    fn cancel_probe(&mut self, id: u64);
    fn probe_path(&mut self, path: &Path) -> bool;
    /// Whether `pid` is one of the service's processes (in its cgroup, or
    /// descended from its main process where there is none).
    fn membership(&mut self, spec: &ServiceSpec, pid: u32) -> Membership;
    /// The real uid of a running process.
    fn uid_of(&mut self, pid: u32) -> Option<u32>;
    /// The service named `pid` its main process (sd_notify `MAINPID=`).
    fn main_pid_changed(&mut self, _spec: &ServiceSpec, _pid: u32) {}
}

/// Whether a process belongs to a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    Member,
    /// It runs, outside the service.
    Stranger,
    /// It no longer runs: nothing is left to check.
    Gone,
}

/// The process that sent a notify message, as the kernel names it
/// (SCM_CREDENTIALS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub pid: u32,
    pub uid: u32,
}

/// How a TCP probe started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpProbe {
    /// The result was known at once (connected, or refused).
    Done(bool),
    /// Connecting; the result arrives later under this id.
    Connecting(u64),
}

/// Something worth telling the operator or the boot timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        name: String,
        pid: u32,
    },
    Ready {
        name: String,
    },
    Exited {
        name: String,
        exit: Exit,
    },
    Restarting {
        name: String,
        delay_ms: u64,
    },
    Failed {
        name: String,
        reason: String,
    },
    Stopped {
        name: String,
    },
    Unhealthy {
        name: String,
    },
    /// The main process is now `pid` (sd_notify `MAINPID=`).
    MainPid {
        name: String,
        pid: u32,
    },
    /// A notify message was ignored; `why` says for what.
    NotifyRefused {
        name: String,
        why: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_errors_name_the_file_and_the_setting() {
        let e = SpawnError::UnknownUser {
            user: "web".into(),
            file: PathBuf::from("/etc/passwd"),
        };
        let m = e.to_string();
        assert!(
            m.contains("\"web\"") && m.contains("/etc/passwd") && m.contains("`user`"),
            "{m}"
        );
        let e = SpawnError::UnknownGroup {
            group: "www".into(),
            file: PathBuf::from("/x/group"),
        };
        let m = e.to_string();
        assert!(
            m.contains("\"www\"") && m.contains("/x/group") && m.contains("`group`"),
            "{m}"
        );
    }
}
