//! How a run ends: the outcome, the refusals (nothing was changed) and the
//! phase errors (something was, and the recovery says what to do).

use crate::host::{Holder, HostError, RebootMode, StopError};
use crate::journal::{Journal, Phase, RecordedOutcome};
use crate::options::DataPolicy;
use bascule_boot::meta_record::SlotState;
use bascule_boot::Slot;
use bascule_bundle::{BundleError, PayloadKind};
use std::fmt;
use std::path::PathBuf;

pub use crate::recovery::Recovery;

/// Why an upgrade or rollback was refused before anything changed.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "another upgrade or rollback is running: wait for it to end (see the upgrade journal)"
    )]
    UpgradeInProgress,

    #[error("this machine was not booted from a slot (no bascule.slot= on the kernel command line): boot it from its disk to upgrade")]
    NotBootedFromSlot,

    #[error("slot {slot} is still being tried with version {version}: wait until it is confirmed or rolled back")]
    TryPending { slot: Slot, version: String },

    #[error("slot {target} holds the only known-good image ({target_version}) and the running slot {booted} is {booted_state:?}, not confirmed good: upgrading would overwrite it. Roll back to slot {target} first, or confirm the running slot")]
    OnlyGoodSlot {
        target: Slot,
        target_version: String,
        booted: Slot,
        booted_state: SlotState,
    },

    #[error("the cluster refuses this upgrade: {0}")]
    Cluster(#[source] HostError),

    #[error("the bundle was refused: {0}")]
    Bundle(#[source] BundleError),

    #[error("the bundle cannot be read: {0}: check the reference")]
    Unreadable(#[source] HostError),

    #[error("bundle version {image} is older than the running version {running}: pass force to downgrade")]
    Older { running: String, image: String },

    #[error("bundle version {version} is the running version: pass force to reinstall it")]
    SameVersion { version: String },

    #[error("the bundle has no {kind} payload: a slot needs rootfs, kernel and initramfs")]
    MissingPayload { kind: PayloadKind },

    #[error("the {kind} payload ({size} bytes) does not fit slot {slot}'s partition ({capacity} bytes): build a smaller image or repartition")]
    TooLargeForSlot {
        kind: PayloadKind,
        slot: Slot,
        size: u64,
        capacity: u64,
    },

    #[error("the ESP has {free} bytes free, slot {slot}'s kernel and initramfs need {needed}: remove stray files from the ESP")]
    EspTooSmall { slot: Slot, needed: u64, free: u64 },

    #[error("the disk check for slot {slot} failed: {source}: repair the partition table before upgrading")]
    Disk {
        slot: Slot,
        #[source]
        source: HostError,
    },

    #[error("no prepared upgrade: slot {slot} is {state:?}, not prepared; prepare one with `bascule upgrade --image REF --prepare`")]
    NothingPrepared { slot: Slot, state: SlotState },

    #[error("slot {target} cannot be rolled back to: it is {state:?}{}", version_note(.version))]
    RollbackTargetNotGood {
        target: Slot,
        state: SlotState,
        version: String,
    },
}

fn version_note(version: &str) -> String {
    if version.is_empty() {
        " and holds no recorded version".to_string()
    } else {
        format!(" (version {version}); only a known-good slot is a rollback target")
    }
}

/// Where an install write went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstallTarget {
    /// The slot's partition.
    Slot(Slot),
    /// The slot's ESP file for this payload.
    Esp(Slot, PayloadKind),
}

impl fmt::Display for InstallTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let layout = |s: &Slot| s.layout();
        match self {
            InstallTarget::Slot(s) => write!(f, "slot {s} ({})", layout(s).partition_label),
            InstallTarget::Esp(s, PayloadKind::Initramfs) => {
                write!(f, "ESP {}", layout(s).esp_initrd)
            }
            InstallTarget::Esp(s, _) => write!(f, "ESP {}", layout(s).esp_kernel),
        }
    }
}

/// What ended a phase after the run had started changing things (or a
/// host failure in the verify phase).
#[derive(Debug, thiserror::Error)]
pub enum PhaseError {
    #[error("reading the META record: {0}")]
    ReadMeta(#[source] HostError),
    #[error("writing the META record ({what}): {source}")]
    WriteMeta {
        what: MetaChange,
        #[source]
        source: HostError,
    },
    #[error("checking slot {slot} and the ESP: {source}")]
    Capacity {
        slot: Slot,
        #[source]
        source: HostError,
    },
    #[error("opening the bundle for the {pass:?} pass: {source}")]
    OpenBundle {
        pass: crate::host::Pass,
        #[source]
        source: HostError,
    },
    #[error("cordoning: {0}")]
    Cordon(#[source] HostError),
    #[error("draining workloads: {0}")]
    Drain(#[source] StopError),
    #[error("leaving the cluster: {0}")]
    LeaveCluster(#[source] HostError),
    #[error("stopping services: {0}")]
    StopServices(#[source] StopError),
    #[error("listing the mounts to unmount: {0}")]
    ListMounts(#[source] HostError),
    #[error("finding what holds {}: {source}", mount.display())]
    Holders {
        mount: PathBuf,
        #[source]
        source: HostError,
    },
    #[error("cannot unmount {}{}: {source}", mount.display(), held_note(.still_held))]
    Unmount {
        mount: PathBuf,
        still_held: Vec<Holder>,
        #[source]
        source: HostError,
    },
    #[error("the disk check for slot {slot} failed: {source}")]
    Disk {
        slot: Slot,
        #[source]
        source: HostError,
    },
    #[error("the bundle failed in the install pass: {0}")]
    Bundle(#[source] BundleError),
    #[error("the bundle's manifest changed between the verify and the install pass (now version {now}): its source is not stable; upgrade again")]
    BundleChanged { now: String },
    #[error("the {kind} payload failed while being written to {target}: {message}")]
    PayloadSource {
        kind: PayloadKind,
        target: InstallTarget,
        message: String,
    },
    #[error("writing the {kind} payload to {target}: {source}")]
    Write {
        kind: PayloadKind,
        target: InstallTarget,
        #[source]
        source: HostError,
    },
    #[error("{target} took {taken} of the {kind} payload's {size} bytes: the host stopped reading early")]
    ShortWrite {
        kind: PayloadKind,
        target: InstallTarget,
        taken: u64,
        size: u64,
    },
    #[error("reading back {target}: {source}")]
    ReadBack {
        target: InstallTarget,
        #[source]
        source: HostError,
    },
    #[error("{target} reads back with SHA-256 {got}, the signed {kind} payload's is {expected}: either the bundle's source sent other bytes than in the verify pass (upgrade again from a stable source) or the device or the ESP returns other bytes than written")]
    ReadBackMismatch {
        kind: PayloadKind,
        target: InstallTarget,
        got: String,
        expected: String,
    },
    #[error("wiping EPHEMERAL: {0}")]
    Wipe(#[source] HostError),
    #[error("setting the loader's {what} entry to slot {slot}: {source}")]
    Loader {
        what: LoaderChange,
        slot: Slot,
        #[source]
        source: HostError,
    },
    #[error("requesting a {mode} reboot: {source}")]
    Reboot {
        mode: RebootMode,
        #[source]
        source: HostError,
    },
}

fn held_note(holders: &[Holder]) -> String {
    if holders.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = holders.iter().map(Holder::to_string).collect();
        format!(" (still held by {})", names.join(", "))
    }
}

/// Which META change failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetaChange {
    MarkWriting(Slot),
    MarkPrepared(Slot),
    RecordTry(Slot),
    SwitchActive(Slot),
}

impl fmt::Display for MetaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MetaChange::MarkWriting(s) => write!(f, "marking slot {s} as being written"),
            MetaChange::MarkPrepared(s) => write!(f, "marking slot {s} as prepared"),
            MetaChange::RecordTry(s) => write!(f, "recording the try of slot {s}"),
            MetaChange::SwitchActive(s) => write!(f, "making slot {s} the active slot"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderChange {
    BootOnce,
    Default,
}

impl fmt::Display for LoaderChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoaderChange::BootOnce => "boot-once",
            LoaderChange::Default => "default",
        })
    }
}

/// What a real run would do, from a dry run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRunReport {
    pub from_slot: Slot,
    pub from_version: String,
    pub target: Slot,
    pub image_version: String,
    /// Each payload and its size, in bundle order.
    pub payloads: Vec<(PayloadKind, u64)>,
    pub slot_capacity: u64,
    pub esp_free: u64,
    /// The phases a real run would take, and why any would be skipped.
    pub phases: Vec<(Phase, PlannedStep)>,
    /// The mounts phase 6 would unmount, and who holds each now.
    pub mounts: Vec<(PathBuf, Vec<Holder>)>,
    pub data: DataPolicy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlannedStep {
    Run,
    Skip(crate::journal::SkipReason),
    /// Phase 10 by this mode.
    Reboot(RebootMode),
}

#[derive(Debug)]
pub enum Outcome {
    /// The reboot into the new slot has been requested.
    Rebooting(RebootMode),
    /// Installed and armed; the next reboot takes the try.
    Staged,
    /// Written and checked while everything ran; nothing armed.
    Prepared,
    DryRun(DryRunReport),
    Refused(Refusal),
    Aborted {
        phase: Phase,
        error: PhaseError,
        recovery: Recovery,
    },
}

impl Outcome {
    /// The journal's form of this outcome.
    pub fn recorded(&self) -> RecordedOutcome {
        match self {
            Outcome::Rebooting(mode) => RecordedOutcome::Rebooting { mode: *mode },
            Outcome::Staged => RecordedOutcome::Staged,
            Outcome::Prepared => RecordedOutcome::Prepared,
            Outcome::DryRun(_) => RecordedOutcome::DryRun,
            Outcome::Refused(r) => RecordedOutcome::Refused {
                reason: r.to_string(),
            },
            Outcome::Aborted {
                phase,
                error,
                recovery,
            } => RecordedOutcome::Aborted {
                phase: *phase,
                error: error.to_string(),
                recovery: *recovery,
            },
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Rebooting(mode) => write!(f, "rebooting into the new slot ({mode})"),
            Outcome::Staged => f.write_str(
                "staged: the inactive slot is written; the next boot tries it before its services start",
            ),
            Outcome::Prepared => f.write_str(
                "prepared: the inactive slot is written and checked; `bascule upgrade --apply` boots it",
            ),
            Outcome::DryRun(r) => write!(
                f,
                "dry run: would install {} into slot {} (running {} on slot {})",
                r.image_version, r.target, r.from_version, r.from_slot
            ),
            Outcome::Refused(r) => write!(f, "refused: {r}"),
            Outcome::Aborted {
                phase,
                error,
                recovery,
            } => write!(f, "aborted in phase {phase}: {error}; {recovery}"),
        }
    }
}

/// A finished run: its outcome and the journal as last saved.
#[derive(Debug)]
pub struct Finished {
    pub outcome: Outcome,
    pub journal: Journal,
}
