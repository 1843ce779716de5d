//! The etcd side of Bascule's control-plane safety upgrades.
//!
//! A control-plane node runs an etcd member. Taking it down for an upgrade
//! must not cost the cluster its quorum, and two control-plane nodes must
//! not upgrade at once. This crate holds what PID 1, the sequencer and the
//! CLI need for that, without gRPC or an async runtime:
//!
//! - [`config`]: the machine configuration on STATE (`machine.toml`): the
//!   node's role, name and address, where etcd is, and etcd's command line
//!   for bootstrapping, restarting or joining after `member add`. No file
//!   means a standalone machine ([`ConfigError::Missing`]).
//! - [`gateway`]: a typed blocking client of etcd 3.4's v3 HTTP/JSON gateway
//!   (`/v3/...`), trying the configured endpoints in order: health, status,
//!   members, keys, transactions, leases and watches.
//! - [`quorum`]: whether this node may go away: [`quorum::gather`] asks
//!   every member for its health and times a linearizable read through it;
//!   [`quorum::check`] is the pure rule (all members started and healthy,
//!   the others a majority while this node is away), its refusal naming
//!   every member's state; `force` overrides it.
//! - [`lock`]: the upgrade lock, a key on a lease: one node upgrades at a
//!   time, a waiting node knows for whom it waits, a dead holder frees it
//!   after the TTL, and a rebooted holder adopts or resumes its own.
//!   Released with the outcome; a failure is kept under the node's key.
//! - [`desired`]: the keys of rolling upgrades driven from etcd (the desired
//!   version, each node's status, the pause a failure causes).
//! - [`record`]: what the node keeps on STATE across the reboot (the lease
//!   it holds, whether it has been a member).
//!
//! Keys live under `/bascule/`. Member and lease ids print in hex, as
//! etcdctl prints them, so messages can be pasted into etcdctl.

pub mod config;
pub mod desired;
pub mod gateway;
pub mod lock;
pub mod quorum;
pub mod record;

pub use config::{ConfigError, InitialClusterState, MachineConfig, Role};
pub use gateway::{Etcd, LeaseId, MemberId};
