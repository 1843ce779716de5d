//! Thin, typed wrappers over the raw syscalls PID 1 needs. All `unsafe` in
//! this crate lives here, each block with the invariants it relies on.

pub mod blockdev;
pub mod cgroup;
pub mod clock;
pub mod creds;
pub mod epoll;
pub mod modules;
pub mod mount;
pub mod net;
pub mod power;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod timer;
pub mod vport;
pub mod watchdog;
