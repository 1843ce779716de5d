//! Starting service processes: fork and exec through `std::process::Command`,
//! with the steps between fork and exec done as raw, async-signal-safe
//! syscalls on data prepared before the fork (no allocation, no locks).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::creds::Creds;

/// Where the child's stdout and stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Pipes read by the log capture.
    Capture,
    Null,
}

pub struct SpawnPlan {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub creds: Option<Creds>,
    /// Capabilities to keep, as a bitmask of capability numbers; None keeps
    /// what the user would have anyway.
    pub keep_caps: Option<u64>,
    /// Highest capability number the kernel knows (/proc/sys/kernel/cap_last_cap).
    pub cap_last: u32,
    /// `cgroup.procs` of the group the child joins before exec.
    pub cgroup_procs: Option<OwnedFd>,
    pub output: Output,
}

pub struct Spawned {
    pub pid: u32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Everything the child needs, owned, so the closure touches no allocator.
struct ChildSteps {
    cgroup_fd: Option<i32>,
    /// PID 1 raised its own open-file limit; services get the usual soft
    /// limit back (select(2)-based programs break above 1024).
    nofile: Option<libc::rlimit>,
    creds: Option<(u32, u32, Vec<u32>)>,
    keep_caps: Option<u64>,
    cap_last: u32,
}

fn check(ret: libc::c_long) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

impl ChildSteps {
    /// Runs in the child between fork and exec.
    fn run(&self) -> io::Result<()> {
        // Only async-signal-safe calls (raw syscalls, sigprocmask, signal)
        // on memory owned by `self` or on this stack frame, which the child's
        // copy of the address space keeps alive until exec.
        // SAFETY: as above: no allocation, no locks; an all-zero sigset_t is
        // the empty set.
        unsafe {
            if let Some(fd) = self.cgroup_fd {
                let pid0 = b"0";
                if libc::write(fd, pid0.as_ptr().cast(), pid0.len()) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            // PID 1 blocks the signals it reads from its signalfd, and the
            // Rust runtime ignores SIGPIPE; both would be inherited across
            // exec (a blocked SIGTERM makes a service unstoppable).
            let empty: libc::sigset_t = std::mem::zeroed();
            if libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) != 0 {
                return Err(io::Error::other("cannot reset the signal mask"));
            }
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if let Some(lim) = &self.nofile {
                libc::setrlimit(libc::RLIMIT_NOFILE, lim);
            }
            // Own session and process group: the fallback kill target where
            // there is no cgroup, and no controlling terminal inherited.
            check(libc::setsid() as libc::c_long)?;
            if let Some(mask) = self.keep_caps {
                // Before changing uid: dropping from the bounding set needs CAP_SETPCAP.
                for cap in 0..=self.cap_last.min(63) {
                    if mask & (1u64 << cap) == 0 {
                        // EINVAL for numbers the kernel lacks: nothing to drop.
                        libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0);
                    }
                }
            }
            if self.keep_caps.is_some() && self.creds.is_some() {
                check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) as libc::c_long)?;
            }
            if let Some((uid, gid, groups)) = &self.creds {
                check(libc::syscall(
                    libc::SYS_setgroups,
                    groups.len(),
                    groups.as_ptr(),
                ))?;
                check(libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid))?;
                check(libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid))?;
            }
            if let Some(mask) = self.keep_caps {
                #[repr(C)]
                struct Header {
                    version: u32,
                    pid: i32,
                }
                #[repr(C)]
                #[derive(Clone, Copy)]
                struct Data {
                    effective: u32,
                    permitted: u32,
                    inheritable: u32,
                }
                let header = Header {
                    version: 0x2008_0522,
                    pid: 0,
                };
                let lo = mask as u32;
                let hi = (mask >> 32) as u32;
                let data = [
                    Data {
                        effective: lo,
                        permitted: lo,
                        inheritable: lo,
                    },
                    Data {
                        effective: hi,
                        permitted: hi,
                        inheritable: hi,
                    },
                ];
                check(libc::syscall(
                    libc::SYS_capset,
                    &header as *const Header,
                    data.as_ptr(),
                ))?;
                // Ambient capabilities survive exec for a non-root user.
                for cap in 0..=self.cap_last.min(63) {
                    if mask & (1u64 << cap) != 0 {
                        libc::prctl(
                            libc::PR_CAP_AMBIENT,
                            libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                            cap as libc::c_ulong,
                            0,
                            0,
                        );
                    }
                }
            }
        }
        Ok(())
    }
}

/// The default PATH given to services.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn spawn(plan: SpawnPlan) -> io::Result<Spawned> {
    let (program, args) = plan
        .argv
        .split_first()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command line"))?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null());
    for (k, v) in &plan.env {
        cmd.env(k, v);
    }
    if let Some(dir) = &plan.cwd {
        cmd.current_dir(dir);
    }
    match plan.output {
        Output::Capture => cmd.stdout(Stdio::piped()).stderr(Stdio::piped()),
        Output::Null => cmd.stdout(Stdio::null()).stderr(Stdio::null()),
    };
    let steps = ChildSteps {
        cgroup_fd: plan.cgroup_procs.as_ref().map(|f| f.as_raw_fd()),
        nofile: service_nofile(),
        creds: plan.creds.map(|c| (c.uid, c.gid, c.groups)),
        keep_caps: plan.keep_caps,
        cap_last: plan.cap_last,
    };
    // SAFETY: the closure only performs async-signal-safe syscalls (see
    // ChildSteps::run); the cgroup fd it writes to is kept open by `plan`
    // until after spawn returns.
    unsafe {
        cmd.pre_exec(move || steps.run());
    }
    let mut child = cmd.spawn()?;
    drop(plan.cgroup_procs);
    Ok(Spawned {
        pid: child.id(),
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
    // `child` is dropped without waiting: the event loop reaps every pid.
}

/// The open-file limit services start with: soft 1024 (or less if the
/// hard limit is lower), the hard limit unchanged.
fn service_nofile() -> Option<libc::rlimit> {
    let lim = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let hard = lim.maximum.unwrap_or(u64::MAX);
    let soft = lim.current.unwrap_or(u64::MAX);
    (soft > SERVICE_NOFILE_SOFT).then(|| libc::rlimit {
        rlim_cur: SERVICE_NOFILE_SOFT.min(hard) as libc::rlim_t,
        rlim_max: lim
            .maximum
            .map_or(libc::RLIM_INFINITY, |h| h as libc::rlim_t),
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
