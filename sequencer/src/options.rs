//! What the caller asks for. Each choice is an enum, so a call site reads
//! as what it does.

use crate::machine::RebootMode;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// What happens to EPHEMERAL (`/var`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataPolicy {
    /// Keep it (and, on a control-plane node, the cluster membership).
    #[default]
    Preserve,
    /// Recreate it after the install, and leave the cluster first.
    Wipe,
}

/// What happens after the new slot is armed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterInstall {
    #[default]
    Reboot,
    /// Arm the loader's boot-once entry and stop: the operator's next
    /// reboot takes the try.
    Stage,
}

/// Which bundle versions are accepted (the `force` option).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionPolicy {
    /// Only a version newer than the running one.
    #[default]
    NewerOnly,
    /// Also the same or an older version (`force`).
    AllowAny,
}

/// Whether etcd's quorum check may refuse the upgrade of a control-plane
/// node (the `force` option skips it; the lease still serializes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuorumPolicy {
    #[default]
    Check,
    Force,
}

/// Whether anything is done at all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    #[default]
    Apply,
    /// Only the checks that need no service stopped; nothing changes.
    DryRun,
    /// Verify and write the inactive slot while every service keeps
    /// running, mark it prepared, and stop: no phase that disturbs the
    /// machine runs.
    Prepare,
    /// Boot the slot a [`RunMode::Prepare`] run wrote: no bundle is read,
    /// nothing is written but what the disruptive phases write.
    ApplyPrepared,
}

/// How long holders of a mount get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// After SIGTERM, before SIGKILL.
    pub term_grace: Duration,
    /// After SIGKILL, before the unmount is tried anyway.
    pub kill_wait: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            term_grace: Duration::from_secs(10),
            kill_wait: Duration::from_secs(5),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpgradeOptions {
    pub data: DataPolicy,
    pub after: AfterInstall,
    pub versions: VersionPolicy,
    pub quorum: QuorumPolicy,
    pub reboot: RebootMode,
    pub run: RunMode,
    pub timeouts: Timeouts,
}
