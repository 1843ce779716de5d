//! Thin, typed wrappers over the raw syscalls PID 1 needs. All `unsafe` in
//! the workspace lives in this crate, one operation per block, each with
//! the invariants it relies on.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]
#![warn(
    clippy::undocumented_unsafe_blocks,
    clippy::multiple_unsafe_ops_per_block
)]

pub mod aligned;
pub mod blockdev;
pub mod cgroup;
pub mod clock;
pub mod creds;
pub mod epoll;
pub mod error;
pub mod heap;
pub mod holders;
pub mod kexec;
pub mod modules;
pub mod mount;
pub mod mountinfo;
pub mod net;
pub mod power;
pub mod proctree;
pub mod reap;
pub mod signals;
pub mod spawn;
pub mod timer;
pub mod vport;
pub mod watchdog;

pub use error::{Error, Op};
