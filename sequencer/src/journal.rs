//! The record of one upgrade or rollback: per phase its start, duration,
//! bytes and the error that ended it. Serialised as JSON (see
//! `docs/upgrade.md` for the form) so the host can keep it across the
//! reboot; fields are only ever added, with defaults, so an older reader
//! reads a newer journal.

use crate::machine::{Holder, RebootMode, Signal};
use crate::options::{AfterInstall, DataPolicy, RunMode, VersionPolicy};
use crate::recovery::Recovery;
use bascule_boot::Slot;
use bascule_bundle::PayloadKind;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// The `format` field of this journal layout.
pub const JOURNAL_FORMAT: u32 = 1;

/// The phases, in run order (rollback uses `verify`, `switch_default`
/// and `reboot`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Verify,
    Cordon,
    Drain,
    LeaveCluster,
    StopServices,
    Unmount,
    VerifyDisk,
    Install,
    BootOnce,
    Reboot,
    SwitchDefault,
}

impl Phase {
    /// The upgrade's ten phases in order.
    pub const UPGRADE: [Phase; 10] = [
        Phase::Verify,
        Phase::Cordon,
        Phase::Drain,
        Phase::LeaveCluster,
        Phase::StopServices,
        Phase::Unmount,
        Phase::VerifyDisk,
        Phase::Install,
        Phase::BootOnce,
        Phase::Reboot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Verify => "verify",
            Phase::Cordon => "cordon",
            Phase::Drain => "drain",
            Phase::LeaveCluster => "leave_cluster",
            Phase::StopServices => "stop_services",
            Phase::Unmount => "unmount",
            Phase::VerifyDisk => "verify_disk",
            Phase::Install => "install",
            Phase::BootOnce => "boot_once",
            Phase::Reboot => "reboot",
            Phase::SwitchDefault => "switch_default",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseStatus {
    /// Started, not ended: what a journal saved before a crash shows.
    Running,
    Done,
    Skipped,
    Failed,
}

/// Why a phase did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Leaving the cluster is for control-plane nodes.
    WorkerNode,
    /// Preserving data keeps the cluster membership.
    PreservingData,
    /// Staged: the operator reboots.
    Staged,
}

/// How a kexec could not be prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KexecProblem {
    /// The kernel refuses kexec altogether.
    Refused,
    /// Loading this slot's files failed.
    LoadFailed,
    /// The kexec reboot request itself failed.
    RebootFailed,
}

/// Something worth knowing that happened inside a phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "note", rename_all = "snake_case")]
pub enum Note {
    Skipped {
        reason: SkipReason,
    },
    /// A payload checked end to end (verify) or written and read back
    /// (install).
    Payload {
        #[serde(with = "kind_name")]
        kind: PayloadKind,
        size: u64,
    },
    HolderFound {
        mount: PathBuf,
        holder: Holder,
    },
    Signalled {
        mount: PathBuf,
        holder: Holder,
        signal: Signal,
    },
    SignalFailed {
        mount: PathBuf,
        holder: Holder,
        signal: Signal,
        error: String,
    },
    /// Still alive after SIGKILL and the wait (uninterruptible sleep).
    Survived {
        mount: PathBuf,
        holder: Holder,
    },
    Unmounted {
        mount: PathBuf,
    },
    /// META marks the target slot as being written (empty, no version).
    SlotMarkedWriting {
        #[serde(with = "slot_name")]
        slot: Slot,
    },
    EphemeralWiped,
    TryRecorded {
        #[serde(with = "slot_name")]
        slot: Slot,
        version: String,
    },
    BootOnceSet {
        #[serde(with = "slot_name")]
        slot: Slot,
    },
    /// A failure after the try was recorded: META was put back to "slot
    /// being written", so no boot takes the try.
    TryWithdrawn {
        #[serde(with = "slot_name")]
        slot: Slot,
    },
    /// Withdrawing the try failed too; the slot keeper will see a try
    /// that never booted.
    TryNotWithdrawn {
        error: String,
    },
    KexecUnavailable {
        problem: KexecProblem,
        error: String,
    },
    /// The reboot mode actually used.
    RebootRequested {
        mode: RebootMode,
    },
    /// The previous save of the journal failed.
    JournalNotSaved {
        error: String,
    },
    /// META records the written slot as prepared from this bundle.
    SlotPrepared {
        #[serde(with = "slot_name")]
        slot: Slot,
        version: String,
    },
    /// META asks the next boot of the running slot to apply it.
    Staged {
        #[serde(with = "slot_name")]
        slot: Slot,
    },
    /// The prepared slot's kernel was loaded for kexec before the drain,
    /// so the load is not part of the downtime.
    KexecPreloaded {
        #[serde(with = "slot_name")]
        slot: Slot,
    },
    /// Another node holds the cluster's upgrade lease: this run waits.
    WaitingForLease {
        holder: String,
        target: String,
    },
    /// This node took the cluster's upgrade lease and etcd keeps its
    /// quorum without it.
    LeaseTaken {
        lease: String,
    },
    /// The run stopped before the reboot: the lease was released.
    LeaseReleased,
    /// The target slot was prepared from this very bundle: nothing is
    /// written again.
    AlreadyPrepared {
        #[serde(with = "slot_name")]
        slot: Slot,
        version: String,
    },
}

/// One phase's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PhaseRecord {
    pub phase: Phase,
    pub started_unix_ms: u64,
    /// `None` while running.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    pub status: PhaseStatus,
    /// Payload bytes processed, of `bytes_total` (0 and 0 for phases that
    /// move no payload).
    #[serde(default)]
    pub bytes_done: u64,
    #[serde(default)]
    pub bytes_total: u64,
    /// The error that ended the phase (`status` = `failed`).
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub notes: Vec<Note>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    Upgrade,
    Rollback,
}

/// The options of an upgrade, as recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedOptions {
    pub data: DataPolicy,
    pub after: AfterInstall,
    pub versions: VersionPolicy,
    pub reboot: RebootMode,
    pub run: RunMode,
}

/// What a run ended with, as recorded (the typed errors become text).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum RecordedOutcome {
    Rebooting {
        mode: RebootMode,
    },
    Staged,
    DryRun,
    Prepared,
    Refused {
        reason: String,
    },
    Aborted {
        phase: Phase,
        error: String,
        recovery: Recovery,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    pub format: u32,
    pub kind: RunKind,
    pub started_unix_ms: u64,
    /// The booted slot (`null` when not booted from a slot).
    #[serde(with = "opt_slot_name")]
    pub from_slot: Option<Slot>,
    pub from_version: String,
    /// The slot being installed or rolled back to.
    #[serde(default, with = "opt_slot_name")]
    pub to_slot: Option<Slot>,
    /// The bundle's version, once its signature is checked (an upgrade),
    /// or the rollback target's recorded version.
    #[serde(default)]
    pub to_version: Option<String>,
    #[serde(default)]
    pub options: Option<RecordedOptions>,
    pub phases: Vec<PhaseRecord>,
    /// `None` until the run ends.
    #[serde(default)]
    pub outcome: Option<RecordedOutcome>,
}

impl Journal {
    pub fn new(
        kind: RunKind,
        started_unix_ms: u64,
        from_slot: Option<Slot>,
        from_version: &str,
    ) -> Journal {
        Journal {
            format: JOURNAL_FORMAT,
            kind,
            started_unix_ms,
            from_slot,
            from_version: from_version.to_string(),
            to_slot: None,
            to_version: None,
            options: None,
            phases: Vec::new(),
            outcome: None,
        }
    }

    /// The record of `phase` (the last one, should a phase ever repeat).
    pub fn phase(&self, phase: Phase) -> Option<&PhaseRecord> {
        self.phases.iter().rev().find(|p| p.phase == phase)
    }

    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }

    pub fn from_json(text: &str) -> Result<Journal, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// Slots as `"A"` / `"B"`, the form used everywhere else.
mod slot_name {
    use bascule_boot::Slot;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(slot: &Slot, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(slot.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Slot, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}

mod opt_slot_name {
    use bascule_boot::Slot;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(slot: &Option<Slot>, s: S) -> Result<S::Ok, S::Error> {
        match slot {
            Some(slot) => s.serialize_some(slot.as_str()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Slot>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| t.parse().map_err(D::Error::custom))
            .transpose()
    }
}

/// Payload kinds by their bundle names (`rootfs`, `kernel`, `initramfs`).
mod kind_name {
    use bascule_bundle::PayloadKind;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(kind: &PayloadKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(kind.name())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PayloadKind, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(D::Error::custom)
    }
}
