//! PID 1's own messages (to the console, or stderr in supervise mode) and
//! the panic hook.

/// Writes one line to stderr, ignoring failures: logging must never
/// take PID 1 down (eprintln! panics when stderr is gone).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "bascule-init: {}", format_args!($($arg)*));
    }};
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
