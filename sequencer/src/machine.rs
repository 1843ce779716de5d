//! The plain values the sequencer and the machine exchange: what runs,
//! who holds a mount, which signal, which reboot. Kept apart from the
//! [`Host`](crate::host::Host) trait so the journal can record them
//! without depending on the trait.

use bascule_boot::Slot;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What the machine is running now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Running {
    /// The slot named by `bascule.slot=` on the kernel command line (what
    /// did boot, never the loader's default); `None` when not booted from
    /// a slot (a development direct-kernel boot): upgrades are refused.
    pub slot: Option<Slot>,
    /// The running image's version.
    pub version: String,
}

/// Why the bundle is being opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pass {
    /// First pass: read end to end and discarded, to check it.
    Verify,
    /// Second pass: the payloads are written to disk as they are read.
    Install,
}

/// The node's part in a cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Worker,
    ControlPlane,
}

/// What taking the cluster's upgrade lease gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClusterLock {
    /// A worker, or a machine without a cluster: nothing to serialize.
    NotClustered,
    /// This node holds the lease (its id, as etcd shows it) until its new
    /// slot is confirmed and healthy in etcd, or the run stops.
    Held { lease: String },
}

/// Another node holds the upgrade lease: this run waits for it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    pub node: String,
    /// The version it is upgrading to.
    pub target: String,
}

/// How a process keeps a filesystem busy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// Its working directory is on it.
    Cwd,
    /// Its root directory is on it.
    Root,
    /// Its executable is on it.
    Executable,
    /// It has a file on it open.
    OpenFile,
    /// It has a file on it mapped.
    MemoryMap,
    /// It lives in another mount namespace where the filesystem is mounted.
    MountNamespace,
}

impl fmt::Display for HoldKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HoldKind::Cwd => "working directory",
            HoldKind::Root => "root directory",
            HoldKind::Executable => "executable",
            HoldKind::OpenFile => "open file",
            HoldKind::MemoryMap => "mapped file",
            HoldKind::MountNamespace => "mount namespace",
        })
    }
}

/// A process that holds a mount.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// `/proc/PID/comm`.
    pub name: String,
    pub how: HoldKind,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} ({}, {})", self.pid, self.name, self.how)
    }
}

/// The signals the sequencer sends to holders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    Term,
    Kill,
}

/// How the machine reboots into the new slot.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum RebootMode {
    /// `kexec` straight into the new kernel: the kexec itself is the try,
    /// the loader is not touched.
    #[default]
    Kexec,
    /// Through the firmware and the loader's boot-once entry.
    Firmware,
}

impl fmt::Display for RebootMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RebootMode::Kexec => "kexec",
            RebootMode::Firmware => "firmware",
        })
    }
}
