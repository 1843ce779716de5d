//! PID 1's console output (stderr: the console as PID 1, whatever the
//! caller gave in supervise mode). Until the event loop exists, and again
//! once it is gone (emergency shell, exit), lines are written directly.
//! While the loop runs they go through a bounded buffer written without
//! blocking, so a slow serial console or a pipe nobody reads never stalls
//! supervision: when the buffer is full, lines are dropped and counted, and
//! a note says how many once there is room again. The full record is kept
//! in the `init` log stream either way (see `logging`).

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Mutex;

use rustix::fs::{FileType, Mode, OFlags};

/// Console output waiting for the console to take it.
pub const CONSOLE_BUFFER: usize = 256 * 1024;

static CONSOLE: Mutex<Console> = Mutex::new(Console::Direct);

enum Console {
    /// Blocking writes to fd 2.
    Direct,
    /// Non-blocking writes from a bounded buffer, flushed by the loop.
    Buffered(Buffered),
}

/// How the private descriptor is written without blocking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Writer {
    /// A pipe or terminal reopened with O_NONBLOCK on its own open file
    /// description, so children sharing fd 2's description are unaffected.
    Reopened,
    /// A socket: send(2) with MSG_DONTWAIT, per call.
    Socket,
}

struct Buffered {
    fd: OwnedFd,
    writer: Writer,
    out: Vec<u8>,
    /// Lines refused since the last note.
    dropped: u64,
}

/// Whether the console has output waiting for it to become writable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backlog {
    Empty,
    Pending,
}

fn lock() -> std::sync::MutexGuard<'static, Console> {
    // A poisoned lock only means a panic mid-write: the state is still usable.
    CONSOLE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes one line: directly, or into the buffer (then tries a
/// non-blocking write at once).
pub fn write_line(line: &str) {
    let mut c = lock();
    match &mut *c {
        Console::Direct => {
            use std::io::Write as _;
            // Failures are ignored: logging must never take PID 1 down.
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
        Console::Buffered(b) => {
            b.queue(line.as_bytes());
            b.flush();
        }
    }
}

/// Switches to buffered, non-blocking output, and returns a descriptor of
/// the console for the loop to watch for EPOLLOUT. None (writes stay
/// direct) when stderr is a regular file or device that never makes a
/// writer wait on a reader, or cannot be reopened.
pub fn start_buffering() -> Option<OwnedFd> {
    let stderr = rustix::stdio::stderr();
    let kind = rustix::fs::fstat(stderr).ok()?;
    let (fd, writer) = match FileType::from_raw_mode(kind.st_mode) {
        FileType::Socket => (
            rustix::io::fcntl_dupfd_cloexec(stderr, 3).ok()?,
            Writer::Socket,
        ),
        FileType::Fifo | FileType::CharacterDevice => (reopen(stderr)?, Writer::Reopened),
        _ => return None,
    };
    let watch = rustix::io::fcntl_dupfd_cloexec(&fd, 3).ok()?;
    *lock() = Console::Buffered(Buffered {
        fd,
        writer,
        out: Vec::new(),
        dropped: 0,
    });
    Some(watch)
}

/// Opens what fd 2 is anew, non-blocking: a new open file description, so
/// O_NONBLOCK does not reach the caller's shell or any child sharing fd 2.
fn reopen(fd: BorrowedFd<'_>) -> Option<OwnedFd> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rustix::fs::open(
        path.as_str(),
        OFlags::WRONLY | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::APPEND,
        Mode::empty(),
    )
    .ok()
}

/// Writes what the console takes now; the loop calls it when the console
/// is writable and after every turn.
pub fn flush() -> Backlog {
    match &mut *lock() {
        Console::Direct => Backlog::Empty,
        Console::Buffered(b) => b.flush(),
    }
}

/// Back to direct writes (the loop is gone: emergency shell, exit); what is
/// still buffered is written first, blocking.
pub fn stop_buffering() {
    let mut c = lock();
    if let Console::Buffered(b) = &mut *c {
        b.note_dropped();
        use std::io::Write as _;
        let _ = std::io::stderr().write_all(&b.out);
    }
    *c = Console::Direct;
}

impl Buffered {
    fn queue(&mut self, line: &[u8]) {
        self.note_dropped();
        if self.dropped == 0 && self.out.len() + line.len() <= CONSOLE_BUFFER {
            self.out.extend_from_slice(line);
        } else {
            self.dropped += 1;
        }
    }

    /// Queues the count of dropped lines once there is room for it.
    fn note_dropped(&mut self) {
        if self.dropped == 0 {
            return;
        }
        let note = format!(
            "bascule-init: {} lines dropped (the console is too slow; `bascule logs init` has them)\n",
            self.dropped
        );
        if self.out.len() + note.len() <= CONSOLE_BUFFER {
            self.out.extend_from_slice(note.as_bytes());
            self.dropped = 0;
        }
    }

    fn flush(&mut self) -> Backlog {
        let mut written = 0;
        while written < self.out.len() {
            let rest = &self.out[written..];
            let r = match self.writer {
                Writer::Reopened => rustix::io::write(&self.fd, rest),
                Writer::Socket => rustix::net::send(
                    &self.fd,
                    rest,
                    rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
                ),
            };
            match r {
                Ok(0) => break,
                Ok(n) => written += n,
                Err(rustix::io::Errno::INTR) => {}
                Err(rustix::io::Errno::AGAIN) => break,
                Err(_) => {
                    // The console is gone (EPIPE, EIO): what it had is lost
                    // to it, and kept in the init stream.
                    written = self.out.len();
                }
            }
        }
        self.out.drain(..written);
        self.note_dropped();
        if self.out.is_empty() {
            Backlog::Empty
        } else {
            Backlog::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_buffer_drops_lines_and_counts_them_once_there_is_room() {
        let (_r, w) = rustix::pipe::pipe().expect("pipe");
        let mut b = Buffered {
            fd: w,
            writer: Writer::Reopened,
            out: vec![b'x'; CONSOLE_BUFFER - 10],
            dropped: 0,
        };
        b.queue(b"0123456789abcdef\n");
        b.queue(b"short\n");
        assert_eq!(b.dropped, 2, "no line fits once one was dropped");
        b.out.clear();
        b.queue(b"next\n");
        let text = String::from_utf8_lossy(&b.out).into_owned();
        assert!(text.starts_with("bascule-init: 2 lines dropped"), "{text}");
        assert!(text.ends_with("next\n"), "{text}");
        assert_eq!(b.dropped, 0);
    }
}
