//! `bascule-init`: PID 1 of a Bascule machine, or, with `--supervise`, a
//! child subreaper that supervises the same services on any host.
//!
//! PID 1 must never exit: every failure is contained and logged, a panic
//! in one event is caught and the loop goes on, and if the loop cannot be
//! built at all the console gets an emergency shell.

#![deny(unsafe_code)]

mod cluster_boot;
mod cluster_calls;
mod cluster_host;
mod cluster_requests;
mod config;
mod conn;
mod console;
mod control;
mod deferred;
mod effects;
mod event_loop;
mod ext4_state;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod launcher;
mod lineage;
mod logcapture;
mod logging;
mod machine;
mod main_pids;
mod notify;
mod pid1;
mod probes;
mod requests;
mod settings;
mod setup;
mod shutdown;
mod slot_io;
mod slot_keeper;
mod slots;
mod source_readers;
mod stage1;
mod staged;
mod timeline;
mod tokens;
mod upgrade_bridge;
mod upgrade_host;
mod upgrade_requests;
mod upgrades;
mod waiters;
mod wire;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::config::Mode;

/// The whole program; `src/main.rs` only calls it.
pub fn main() {
    logging::install_panic_hook();
    if !bascule_sys::heap::keep_large_blocks_unmapped_when_freed() {
        log!("the allocator refused a fixed mmap threshold: memory freed after an install may stay resident");
    }
    let is_pid1 = rustix::process::getpid().is_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = if is_pid1 { Mode::Pid1 } else { Mode::Supervise };
    if is_pid1 && stage1::is_initramfs() {
        // Returns only on failure: then fall back to the good slot, or
        // keep PID 1 up with a shell.
        match catch_unwind(stage1::run) {
            Ok(err) => stage1::fail(err),
            Err(_) => pid1::fall_back_or_emergency(),
        }
    }
    let result = catch_unwind(AssertUnwindSafe(|| setup::run(mode, &args)));
    // The loop is gone: nothing else waits on the console now.
    console::stop_buffering();
    match (mode, result) {
        (Mode::Supervise, Ok(Ok(_))) => std::process::exit(0),
        (Mode::Supervise, Ok(Err(e))) => {
            log!("error: {e}");
            std::process::exit(e.exit_code());
        }
        (Mode::Supervise, Err(_)) => std::process::exit(70),
        (Mode::Pid1, Ok(Err(e))) => {
            log!("fatal: {e}");
            pid1::fall_back_or_emergency()
        }
        (Mode::Pid1, _) => pid1::fall_back_or_emergency(),
    }
}
