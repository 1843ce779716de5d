//! Starting service processes: fork and exec through `std::process::Command`,
//! with the steps between fork and exec done as raw, async-signal-safe
//! syscalls on data prepared before the fork (no allocation, no locks).

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::sys::signal::SigSet;
use rustix::io::Errno;
use rustix::pipe::{pipe_with, PipeFlags};
use rustix::process::{setrlimit, setsid, Gid, Resource, Rlimit, Uid};
use rustix::thread::{self, CapabilitySet, CapabilitySets};

use crate::creds::Creds;
use crate::error::{Error, Op};

/// Where the child's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Pipes read by the log capture.
    Capture,
    /// /dev/null.
    Null,
}

/// What to start and how.
pub struct SpawnPlan {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Environment on top of PATH (the rest is cleared).
    pub env: Vec<(String, String)>,
    /// Working directory, entered after the uid change.
    pub cwd: Option<PathBuf>,
    /// User and groups to run as; None keeps PID 1's.
    pub creds: Option<Creds>,
    /// Capabilities to keep, as a bitmask of capability numbers; None keeps
    /// what the user would have anyway.
    pub keep_caps: Option<u64>,
    /// Highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
    pub cap_last: u32,
    /// `cgroup.procs` of the group the child joins before exec.
    pub cgroup_procs: Option<OwnedFd>,
    /// Where stdout and stderr go.
    pub output: Output,
}

/// A started process.
pub struct Spawned {
    /// Its pid.
    pub pid: u32,
    /// Read ends of its stdout and stderr with [`Output::Capture`].
    pub stdout: Option<OwnedFd>,
    /// See `stdout`.
    pub stderr: Option<OwnedFd>,
}

/// A step between fork and exec, named in the error when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum SpawnStep {
    /// Writing to the group's cgroup.procs.
    JoinCgroup = 1,
    /// Emptying the signal mask.
    SignalMask,
    /// Setting every signal to SIG_DFL.
    SignalDefaults,
    /// Lowering RLIMIT_NOFILE.
    NofileLimit,
    /// Starting a session.
    Setsid,
    /// PR_CAPBSET_DROP of unwanted capabilities.
    DropBoundingSet,
    /// PR_SET_KEEPCAPS across the uid change.
    KeepCaps,
    /// Supplementary groups.
    Setgroups,
    /// Group id.
    Setresgid,
    /// User id.
    Setresuid,
    /// The kept capabilities.
    Capset,
    /// PR_CAP_AMBIENT_RAISE of the kept capabilities.
    RaiseAmbient,
    /// Entering the working directory.
    Chdir,
    /// fork itself, exec, or std's own stdio setup (no step byte came back).
    Exec,
}

impl SpawnStep {
    const ALL: [SpawnStep; 14] = [
        SpawnStep::JoinCgroup,
        SpawnStep::SignalMask,
        SpawnStep::SignalDefaults,
        SpawnStep::NofileLimit,
        SpawnStep::Setsid,
        SpawnStep::DropBoundingSet,
        SpawnStep::KeepCaps,
        SpawnStep::Setgroups,
        SpawnStep::Setresgid,
        SpawnStep::Setresuid,
        SpawnStep::Capset,
        SpawnStep::RaiseAmbient,
        SpawnStep::Chdir,
        SpawnStep::Exec,
    ];

    fn from_byte(b: u8) -> Option<SpawnStep> {
        Self::ALL.into_iter().find(|s| *s as u8 == b)
    }
}

impl fmt::Display for SpawnStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SpawnStep::JoinCgroup => "joining the service's cgroup",
            SpawnStep::SignalMask => "clearing the signal mask",
            SpawnStep::SignalDefaults => "resetting signal dispositions",
            SpawnStep::NofileLimit => "setting the open-file limit",
            SpawnStep::Setsid => "setsid",
            SpawnStep::DropBoundingSet => "dropping capabilities from the bounding set",
            SpawnStep::KeepCaps => "PR_SET_KEEPCAPS",
            SpawnStep::Setgroups => "setgroups",
            SpawnStep::Setresgid => "setresgid",
            SpawnStep::Setresuid => "setresuid",
            SpawnStep::Capset => "capset",
            SpawnStep::RaiseAmbient => "raising ambient capabilities",
            SpawnStep::Chdir => "chdir to the working directory",
            SpawnStep::Exec => "fork or exec",
        })
    }
}

type StepResult = Result<(), (SpawnStep, Errno)>;

fn nix_errno(e: nix::errno::Errno) -> Errno {
    Errno::from_raw_os_error(e as i32)
}

/// Highest signal number (SIGRTMAX on Linux).
const SIGNAL_MAX: libc::c_int = 64;

/// Empties the signal mask and sets every catchable signal, real-time ones
/// included, to its default disposition. Async-signal-safe: runs between
/// fork and exec.
fn reset_signals() -> StepResult {
    // PID 1 blocks the signals it reads from its signalfd, and the Rust
    // runtime ignores SIGPIPE; both would survive exec (a blocked SIGTERM
    // makes a service unstoppable).
    SigSet::empty()
        .thread_set_mask()
        .map_err(|e| (SpawnStep::SignalMask, nix_errno(e)))?;
    // The kernel's struct sigaction with every field zero is SIG_DFL, no
    // flags, empty mask, whatever the architecture's layout; the raw call
    // reaches the signals libc reserves for itself (32, 33), which an
    // ignoring ancestor may have left ignored too.
    let default = [0u64; 4];
    for sig in (1..=SIGNAL_MAX).filter(|s| *s != libc::SIGKILL && *s != libc::SIGSTOP) {
        // SAFETY: rt_sigaction reads one kernel sigaction (at most 32 bytes
        // on 64-bit targets) from `default`, a live local of that size, and
        // writes nothing (null old-action pointer); the mask size is 8
        // bytes, the kernel's sigset_t.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                default.as_ptr(),
                std::ptr::null_mut::<u64>(),
                8 as libc::c_long,
            )
        };
        if rc < 0 {
            return Err((SpawnStep::SignalDefaults, crate::error::last_errno()));
        }
    }
    Ok(())
}

/// Makes `cmd`'s child start with an empty signal mask and every signal
/// at its default disposition, as services do (for the emergency shell
/// and other programs PID 1 runs itself).
pub fn clean_command(cmd: &mut Command) -> &mut Command {
    // SAFETY: the hook only calls reset_signals, which is async-signal-safe
    // and touches no memory but its own stack.
    unsafe {
        cmd.pre_exec(|| {
            reset_signals().map_err(|(_, e)| io::Error::from_raw_os_error(e.raw_os_error()))
        })
    }
}

/// The identity a service runs as, in the types the syscalls take.
struct ChildCreds {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
}

/// Everything the child needs, owned, so the closure touches no allocator.
struct ChildSteps {
    cgroup: Option<OwnedFd>,
    /// PID 1 raised its own open-file limit; services get the usual soft
    /// limit back (select(2)-based programs break above 1024).
    nofile: Option<Rlimit>,
    creds: Option<ChildCreds>,
    keep_caps: Option<CapabilitySet>,
    cap_last: u32,
    cwd: Option<CString>,
    /// Write end of a pipe: the failed step's number goes here, since std
    /// passes only the errno back to the parent.
    report: OwnedFd,
}

impl ChildSteps {
    /// Runs in the child between fork and exec. Only async-signal-safe
    /// calls (raw syscalls through rustix and nix) on memory owned by
    /// `self`, which the child's copy of the address space keeps until
    /// exec; errors are raw errnos, which do not allocate.
    fn run(&self) -> io::Result<()> {
        self.steps().map_err(|(step, errno)| {
            let _ = rustix::io::write(&self.report, &[step as u8]);
            io::Error::from_raw_os_error(errno.raw_os_error())
        })
    }

    fn steps(&self) -> StepResult {
        use SpawnStep as S;
        if let Some(fd) = &self.cgroup {
            rustix::io::write(fd, b"0").map_err(|e| (S::JoinCgroup, e))?;
        }
        reset_signals()?;
        if let Some(lim) = self.nofile {
            setrlimit(Resource::Nofile, lim).map_err(|e| (S::NofileLimit, e))?;
        }
        // Own session and process group: the fallback kill target where
        // there is no cgroup, and no controlling terminal inherited.
        setsid().map_err(|e| (S::Setsid, e))?;
        if let Some(keep) = self.keep_caps {
            // Before changing uid: dropping from the bounding set needs CAP_SETPCAP.
            for bit in self.cap_bits().filter(|b| !keep.contains(*b)) {
                match thread::remove_capability_from_bounding_set(bit) {
                    // EINVAL: a number this kernel lacks, nothing to drop.
                    Ok(()) | Err(Errno::INVAL) => {}
                    Err(e) => return Err((S::DropBoundingSet, e)),
                }
            }
            if self.creds.is_some() {
                thread::set_keep_capabilities(true).map_err(|e| (S::KeepCaps, e))?;
            }
        }
        if let Some(c) = &self.creds {
            // The thread-level calls are the raw syscalls: the child has
            // one thread, and libc's process-wide versions are not
            // async-signal-safe.
            thread::set_thread_groups(&c.groups).map_err(|e| (S::Setgroups, e))?;
            thread::set_thread_res_gid(c.gid, c.gid, c.gid).map_err(|e| (S::Setresgid, e))?;
            thread::set_thread_res_uid(c.uid, c.uid, c.uid).map_err(|e| (S::Setresuid, e))?;
        }
        if let Some(keep) = self.keep_caps {
            let sets = CapabilitySets {
                effective: keep,
                permitted: keep,
                inheritable: keep,
            };
            thread::set_capabilities(None, sets).map_err(|e| (S::Capset, e))?;
            // Ambient capabilities survive exec for a non-root user.
            for bit in self.cap_bits().filter(|b| keep.contains(*b)) {
                thread::configure_capability_in_ambient_set(bit, true)
                    .map_err(|e| (S::RaiseAmbient, e))?;
            }
        }
        // After the uid change: a service starts only where its user may go.
        if let Some(dir) = &self.cwd {
            rustix::process::chdir(dir.as_c_str()).map_err(|e| (S::Chdir, e))?;
        }
        Ok(())
    }

    /// Each capability the kernel knows, as a one-bit set.
    fn cap_bits(&self) -> impl Iterator<Item = CapabilitySet> {
        (0..=self.cap_last.min(63)).map(|n| CapabilitySet::from_bits_retain(1u64 << n))
    }
}

/// The default PATH given to services.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Forks and execs a service process as `plan` says.
pub fn spawn(plan: SpawnPlan) -> Result<Spawned, Error> {
    let (program, args) = plan.argv.split_first().ok_or(Error::EmptyCommand)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null());
    for (k, v) in &plan.env {
        cmd.env(k, v);
    }
    match plan.output {
        Output::Capture => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
        Output::Null => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    let cwd = plan
        .cwd
        .as_ref()
        .map(|d| CString::new(d.as_os_str().as_bytes()))
        .transpose()
        .map_err(|e| Error::NulByte {
            what: "the working directory",
            at: e.nul_position(),
        })?;
    let (report_rx, report_tx) = pipe_with(PipeFlags::CLOEXEC | PipeFlags::NONBLOCK)
        .map_err(|e| Error::os_bare(Op::Pipe, e))?;
    let steps = ChildSteps {
        cgroup: plan.cgroup_procs,
        nofile: service_nofile(),
        creds: plan.creds.map(|c| ChildCreds {
            uid: Uid::from_raw(c.uid),
            gid: Gid::from_raw(c.gid),
            groups: c.groups.into_iter().map(Gid::from_raw).collect(),
        }),
        keep_caps: plan.keep_caps.map(CapabilitySet::from_bits_retain),
        cap_last: plan.cap_last,
        cwd,
        report: report_tx,
    };
    // SAFETY: the closure only performs async-signal-safe syscalls on data
    // it owns (see ChildSteps::run); the fds it uses live in the closure,
    // which `cmd` keeps until after the fork.
    unsafe {
        cmd.pre_exec(move || steps.run());
    }
    let spawned = cmd.spawn();
    // Closes the parent's copies of the cgroup fd and the report pipe's write end.
    drop(cmd);
    match spawned {
        Ok(mut child) => Ok(Spawned {
            pid: child.id(),
            stdout: child.stdout.take().map(OwnedFd::from),
            stderr: child.stderr.take().map(OwnedFd::from),
        }),
        // `child` is dropped without waiting: the event loop reaps every pid.
        Err(e) => {
            let mut b = [0u8];
            let step = match rustix::io::read(&report_rx, &mut b) {
                Ok(1) => SpawnStep::from_byte(b[0]).unwrap_or(SpawnStep::Exec),
                _ => SpawnStep::Exec,
            };
            Err(Error::Spawn {
                program: PathBuf::from(program),
                step,
                errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
            })
        }
    }
}

/// The open-file limit services start with: soft 1024 (or less if the
/// hard limit is lower), the hard limit unchanged.
fn service_nofile() -> Option<Rlimit> {
    let lim = rustix::process::getrlimit(Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let soft = lim.current.unwrap_or(u64::MAX);
    (soft > SERVICE_NOFILE_SOFT).then_some(Rlimit {
        current: Some(SERVICE_NOFILE_SOFT.min(hard)),
        maximum: lim.maximum,
    })
}

const SERVICE_NOFILE_SOFT: u64 = 1024;

/// The highest capability number of the running kernel.
pub fn cap_last() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

#[cfg(test)]
mod tests;
