//! The crate's one error type: which operation failed, on what path or
//! device, and the errno, worded to read well in a log line.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

pub use rustix::io::Errno;

use crate::kexec::KexecRefusal;
use crate::spawn::SpawnStep;

/// The system call (or library step) that failed, named as in its man page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// mount(2).
    Mount,
    /// umount2(2).
    Umount2,
    /// mount(MS_REMOUNT | MS_RDONLY), the fallback for a busy filesystem.
    RemountReadOnly,
    /// open(2).
    Open,
    /// read(2).
    Read,
    /// write(2).
    Write,
    /// mkdir(2).
    Mkdir,
    /// An ioctl, with the request's name.
    Ioctl(&'static str),
    /// An fcntl, with the command's name.
    Fcntl(&'static str),
    /// socket(2).
    Socket,
    /// bind(2).
    Bind,
    /// finit_module(2).
    FinitModule,
    /// reboot(2).
    Reboot,
    /// pipe2(2).
    Pipe,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Op::Mount => "mount",
            Op::Umount2 => "umount2",
            Op::RemountReadOnly => "remount read-only",
            Op::Open => "open",
            Op::Read => "read",
            Op::Write => "write",
            Op::Mkdir => "mkdir",
            Op::Ioctl(req) => return write!(f, "ioctl {req}"),
            Op::Fcntl(cmd) => return write!(f, "fcntl {cmd}"),
            Op::Socket => "socket",
            Op::Bind => "bind",
            Op::FinitModule => "finit_module",
            Op::Reboot => "reboot",
            Op::Pipe => "pipe",
        };
        f.write_str(name)
    }
}

/// What a kexec_file_load call was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KexecOp {
    /// Loading an image.
    Load,
    /// KEXEC_FILE_UNLOAD.
    Unload,
}

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed on `path` (or on nothing in particular).
    #[error("{op}{}: {errno}{}", target(path), hint(*op, *errno))]
    Os {
        /// The call.
        op: Op,
        /// The file, device or interface it was made on.
        path: Option<PathBuf>,
        /// What the kernel answered.
        errno: Errno,
    },
    /// The kernel refused to load (or unload) a kexec image.
    #[error("kexec_file_load{} refused: {reason} ({errno})", match op { KexecOp::Load => "", KexecOp::Unload => " (unload)" })]
    Kexec {
        /// Load or unload.
        op: KexecOp,
        /// The errno's meaning for kexec.
        reason: KexecRefusal,
        /// What the kernel answered.
        errno: Errno,
    },
    /// An argument cannot be passed to the kernel as a C string.
    #[error("{what} contains a NUL byte at offset {at}; the kernel would cut it there")]
    NulByte {
        /// Which argument.
        what: &'static str,
        /// Where the NUL is.
        at: usize,
    },
    /// reboot(2) came back although it succeeded.
    #[error("reboot(2) returned without rebooting; the machine stays up")]
    RebootReturned,
    /// No cgroup2 hierarchy appears in mountinfo.
    #[error("no cgroup2 hierarchy is mounted (none in /proc/self/mountinfo); mount one on /sys/fs/cgroup")]
    NoCgroup2,
    /// A service was given no program to run.
    #[error("cannot start a service with an empty command line: give it a program")]
    EmptyCommand,
    /// A step between fork and exec failed in the child.
    #[error("cannot start {}: {step} failed in the child: {errno}", program.display())]
    Spawn {
        /// The program that was to run.
        program: PathBuf,
        /// The step that failed.
        step: SpawnStep,
        /// What the kernel answered.
        errno: Errno,
    },
}

/// errno of the libc call that just failed.
pub(crate) fn last_errno() -> Errno {
    Errno::from_raw_os_error(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

fn target(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

/// What to do about the commonest failures, appended to the message.
fn hint(op: Op, errno: Errno) -> &'static str {
    match (op, errno) {
        (Op::Umount2 | Op::RemountReadOnly, Errno::BUSY) => {
            " (still in use: a process holds a file, cwd or mapping there)"
        }
        (_, Errno::PERM) | (_, Errno::ACCESS) => " (needs root or the matching capability)",
        (Op::Open, Errno::NOENT) => " (no such file or device)",
        _ => "",
    }
}

impl Error {
    /// A failed system call on `path`.
    pub fn os(op: Op, path: impl Into<PathBuf>, errno: Errno) -> Self {
        Error::Os {
            op,
            path: Some(path.into()),
            errno,
        }
    }

    /// A failed system call with no path or device to name.
    pub fn os_bare(op: Op, errno: Errno) -> Self {
        Error::Os {
            op,
            path: None,
            errno,
        }
    }

    /// A failed std::fs call on `path`; errors without an OS code count as EIO.
    pub fn io(op: Op, path: &Path, e: &io::Error) -> Self {
        Error::os(op, path, Errno::from_io_error(e).unwrap_or(Errno::IO))
    }

    /// The errno behind the failure, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Error::Os { errno, .. } | Error::Kexec { errno, .. } | Error::Spawn { errno, .. } => {
                Some(*errno)
            }
            Error::NulByte { .. } | Error::EmptyCommand => Some(Errno::INVAL),
            Error::RebootReturned | Error::NoCgroup2 => None,
        }
    }

    /// The raw errno, as `io::Error::raw_os_error` gives it.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.errno().map(Errno::raw_os_error)
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e.errno() {
            Some(errno) => io::Error::from(errno).kind(),
            None => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

/// Attaching the operation and path to a bare errno or io::Error.
pub(crate) trait Context<T> {
    fn at(self, op: Op, path: &Path) -> Result<T, Error>;
}

impl<T> Context<T> for Result<T, Errno> {
    fn at(self, op: Op, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::os(op, path, e))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn at(self, op: Op, path: &Path) -> Result<T, Error> {
        self.map_err(|e| Error::io(op, path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_call_the_path_and_what_to_do() {
        let e = Error::os(Op::Umount2, "/mnt/data", Errno::BUSY);
        let s = e.to_string();
        assert!(s.starts_with("umount2 /mnt/data: "), "{s}");
        assert!(s.contains("busy"), "{s}");
        assert!(s.contains("still in use"), "{s}");
        assert_eq!(e.raw_os_error(), Some(libc::EBUSY));
        let e = Error::os_bare(Op::Ioctl("SIOCSIFFLAGS"), Errno::NODEV);
        assert!(e.to_string().starts_with("ioctl SIOCSIFFLAGS: "), "{e}");
        let io: io::Error = Error::os(Op::Open, "/x", Errno::NOENT).into();
        assert_eq!(io.kind(), io::ErrorKind::NotFound);
        assert!(io.to_string().contains("open /x"), "{io}");
    }
}
