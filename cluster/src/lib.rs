//! The etcd side of Bascule's control-plane safety upgrades.

pub mod config;
pub mod desired;
pub mod gateway;
pub mod lock;
pub mod quorum;
pub mod record;

pub use config::{ConfigError, InitialClusterState, MachineConfig, Role};
pub use gateway::{Etcd, LeaseId, MemberId};
