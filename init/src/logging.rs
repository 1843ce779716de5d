//! PID 1's own messages (to the console, or stderr in supervise mode), kept
//! also for its log stream `init` (`bascule logs -f init`), and the panic
//! hook.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// Whether routine lines ([`crate::log_routine!`]) reach the console too.
static ROUTINE_ON_CONSOLE: AtomicBool = AtomicBool::new(true);

/// With `quiet` on the kernel command line, as systemd does, routine lines
/// (a service started, ready, exited) stay off the console: a serial
/// console costs the guest time per byte. They are still in the `init`
/// stream; failures and everything else still reach the console.
pub fn quiet_console(quiet: bool) {
    ROUTINE_ON_CONSOLE.store(!quiet, Ordering::Relaxed);
}

/// PID 1's own lines not yet moved into its log ring (they are written on
/// the loop's thread and on the upgrade's).
static PENDING: Mutex<Pending> = Mutex::new(Pending {
    bytes: Vec::new(),
    dropped: 0,
});

/// Bound on lines waiting for the loop; past it lines are counted, not kept.
const PENDING_MAX: usize = 1 << 20;

/// The name of PID 1's own log stream.
pub const INIT_STREAM: &str = "init";

struct Pending {
    bytes: Vec<u8>,
    dropped: u64,
}

/// Writes one line to the console (see `console`: never blocking while the
/// loop runs), ignoring failures (logging must never take PID 1 down:
/// eprintln! panics when stderr is gone), and keeps it for the `init` log
/// stream.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let line = format!("bascule-init: {}\n", format_args!($($arg)*));
        $crate::logging::emit(&line);
    }};
}

/// Like [`crate::log!`], for the lines a `quiet` console leaves out.
#[macro_export]
macro_rules! log_routine {
    ($($arg:tt)*) => {{
        let line = format!("bascule-init: {}\n", format_args!($($arg)*));
        $crate::logging::emit_routine(&line);
    }};
}

pub fn emit_routine(line: &str) {
    if ROUTINE_ON_CONSOLE.load(Ordering::Relaxed) {
        emit(line);
    } else {
        keep(line);
    }
}

pub fn emit(line: &str) {
    crate::console::write_line(line);
    keep(line);
}

/// Keeps `line` for the `init` log stream.
fn keep(line: &str) {
    // A poisoned lock only means a panic mid-append: the bytes are still usable.
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    if p.bytes.len() + line.len() > PENDING_MAX {
        p.dropped += 1;
    } else {
        p.bytes.extend_from_slice(line.as_bytes());
    }
}

/// Takes the lines logged since the last call, and how many were dropped.
pub fn take_pending() -> (Vec<u8>, u64) {
    let mut p = PENDING.lock().unwrap_or_else(|e| e.into_inner());
    let dropped = std::mem::take(&mut p.dropped);
    (std::mem::take(&mut p.bytes), dropped)
}

/// Logs the panic with its location and syncs disks, so the cause is on
/// the console and nothing written so far is lost; the event loop then
/// carries on (the panic is caught around each turn).
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        crate::log!("internal error (contained, continuing): {info}");
        rustix::fs::sync();
    }));
}
