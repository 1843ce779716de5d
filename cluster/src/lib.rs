//! The etcd side of Bascule's control-plane safety upgrades.

pub mod config;
pub mod gateway;
pub mod quorum;
pub mod record;

pub use config::{ConfigError, InitialClusterState, MachineConfig, Role};
pub use gateway::{Etcd, LeaseId, MemberId};
