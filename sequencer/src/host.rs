//! What the sequencer asks of the machine: the [`Host`] trait, which PID 1
//! implements over the syscall crate and the tests implement with a
//! recording fake, and the small types its methods exchange.
//!
//! Every method may block: the sequencer runs in its own thread, and these
//! are the machine's slow operations. None is called concurrently with
//! another.

use crate::journal::Journal;
use bascule_boot::meta_record::MetaRecord;
use bascule_boot::Slot;
use bascule_bundle::{PayloadKind, VerifyingKey};
use std::error::Error as StdError;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::machine::{
    ClusterLock, HoldKind, Holder, LeaseHolder, NodeRole, Pass, RebootMode, Running, Signal,
};
use crate::options::{DataPolicy, QuorumPolicy};

/// A failed host operation: what was being done, on which device, mount
/// or pid (`context`), and the underlying error.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct HostError {
    /// E.g. `writing /dev/vda4 (SLOT-B) at byte 4194304`.
    pub context: String,
    #[source]
    pub source: Box<dyn StdError + Send + Sync + 'static>,
}

impl HostError {
    pub fn new(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> HostError {
        HostError {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// A service stop that did not finish.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    #[error("services still running after SIGKILL: {}: find what keeps them alive (D state, a stuck mount) with `bascule logs`", .services.join(", "))]
    NotStopped { services: Vec<String> },
    #[error(transparent)]
    Host(HostError),
}

/// A kexec that cannot be loaded: the sequencer falls back to a firmware
/// reboot through the loader's boot-once entry either way; the two kinds
/// are told apart in the journal.
#[derive(Debug, thiserror::Error)]
pub enum KexecError {
    /// The kernel will not kexec at all (lockdown, Secure Boot,
    /// `kexec_load_disabled`, no `CONFIG_KEXEC_FILE`): `reason` says which.
    #[error("the kernel refuses kexec: {reason}")]
    Refused { reason: String },
    /// Loading this slot's kernel or initramfs failed.
    #[error(transparent)]
    Failed(HostError),
}

/// The machine's operations, in the order the upgrade uses them.
///
/// Implement every method as a single blocking operation that either
/// completes or returns an error naming what it was working on. The
/// sequencer never retries a call; it decides from the result whether to
/// go on, abort, or fall back. Methods marked *mutating* are never called
/// in a dry run.
pub trait Host {
    // ----- facts (read-only) -----

    /// The booted slot and version. Read from the kernel command line and
    /// the running image, not from the loader or META.
    fn running(&self) -> Running;

    /// The public keys the running image trusts (its trusted-keys
    /// directory). An empty list refuses every bundle.
    fn trusted_keys(&self) -> Vec<VerifyingKey>;

    /// Whether this node is a control-plane node (decides phase 4).
    fn node_role(&self) -> NodeRole;

    /// The META record as it is on disk now (the newer valid copy).
    fn read_meta(&mut self) -> Result<MetaRecord, HostError>;

    /// Size in bytes of `slot`'s partition.
    fn slot_capacity(&mut self, slot: Slot) -> Result<u64, HostError>;

    /// Free bytes on the ESP filesystem now. The sequencer needs the new
    /// kernel plus the new initramfs to fit next to the files they replace
    /// (each is written to a temporary file and renamed over the old one).
    fn esp_free(&mut self) -> Result<u64, HostError>;

    /// Checks the disk before anything is written to it: both GPT headers
    /// and their CRCs (header and partition array), and that `slot`'s
    /// partition exists and holds at least `needed` bytes. Read-only;
    /// called in phase 1 (a refusal) and again in phase 7 (an abort).
    fn verify_disk(&mut self, slot: Slot, needed: u64) -> Result<(), HostError>;

    /// Opens the bundle from its source (local file, `http://` URL, or the
    /// bytes the client streams), from its first byte. Called once with
    /// [`Pass::Verify`] and, unless a dry run, once more with
    /// [`Pass::Install`]: a streamed source must be sent twice (or
    /// spooled by the host). The reader is owned: the sequencer calls other
    /// methods while it reads. A read error ends the pass.
    fn open_bundle(&mut self, pass: Pass) -> Result<Box<dyn Read>, HostError>;

    /// Writable mounts that must go before the slot is written, deepest
    /// first (`/var/lib/x` before `/var`). Read-only.
    fn writable_mounts(&mut self) -> Result<Vec<PathBuf>, HostError>;

    /// Processes that hold `mount` now (a `/proc` scan of cwd, root, exe,
    /// fds and maps). Read-only.
    fn holders(&mut self, mount: &Path) -> Result<Vec<Holder>, HostError>;

    // ----- cluster (mutating) -----

    /// Before the first disruptive phase of an applied upgrade: on a
    /// control-plane node, take the cluster's upgrade lease (waiting while
    /// another node holds it, calling `waiting` with who does), then check
    /// that etcd keeps its quorum without this node (`data` says whether it
    /// leaves or keeps its membership; [`QuorumPolicy::Force`] skips the
    /// check). The lease is kept alive from then on and across the reboot;
    /// the new slot releases it once confirmed and healthy in etcd. An
    /// error is a refusal: nothing changed, and the lease is not held.
    fn cluster_lock(
        &mut self,
        _target_version: &str,
        _data: DataPolicy,
        _quorum: QuorumPolicy,
        _waiting: &mut dyn FnMut(&LeaseHolder),
    ) -> Result<ClusterLock, HostError> {
        Ok(ClusterLock::NotClustered)
    }

    /// The run stopped without a reboot after [`Host::cluster_lock`] took
    /// the lease (the services resume on the current slot): release it,
    /// recording `failure` for the operator.
    fn cluster_release(&mut self, _failure: &str) {}

    // ----- teardown (mutating) -----

    /// Phase 2: from now on no workload-class service may start. Returns
    /// once the supervisor has taken the rule.
    fn cordon(&mut self) -> Result<(), HostError>;

    /// Phase 3: stops the `workload` class services (pre-stop hook, SIGTERM,
    /// grace, SIGKILL) and blocks until they are all gone, or returns
    /// [`StopError::NotStopped`] naming the ones still alive.
    fn drain_workloads(&mut self) -> Result<(), StopError>;

    /// Phase 4, control-plane nodes only, and only when not preserving
    /// data: remove this node from etcd's membership (through another
    /// member) before its etcd stops; it joins again as a new member once
    /// upgraded. The sequencer skips the phase on workers and when
    /// preserving.
    fn leave_cluster(&mut self) -> Result<(), HostError>;

    /// Phase 5: stops every remaining service in reverse dependency order,
    /// blocking until done; [`StopError::NotStopped`] names survivors.
    fn stop_services(&mut self) -> Result<(), StopError>;

    /// Sends `signal` to `pid`. A process already gone is `Ok`.
    fn signal(&mut self, pid: u32, signal: Signal) -> Result<(), HostError>;

    /// Waits up to `grace` for the given processes to exit (pidfd or
    /// polling) and returns those still alive. Never errors: a process
    /// that cannot be watched counts as alive.
    fn wait_exit(&mut self, holders: &[Holder], grace: Duration) -> Vec<Holder>;

    /// Unmounts `mount` (no lazy detach: a mount that is busy must fail
    /// here, since the disk under it is about to change).
    fn unmount(&mut self, mount: &Path) -> Result<(), HostError>;

    // ----- install (mutating) -----

    /// Writes the META record (both copies, new sequence number, fsync).
    fn write_meta(&mut self, record: &MetaRecord) -> Result<(), HostError>;

    /// Writes `size` bytes from `data` to the start of `slot`'s partition:
    /// read `data` to its end (it yields exactly `size` bytes, and fails
    /// instead of yielding the last ones if the payload is corrupt: any
    /// read error ends the write with an error), write aligned blocks with
    /// a buffer under 32 MiB, fsync the device, return.
    fn write_slot(&mut self, slot: Slot, data: &mut dyn Read, size: u64) -> Result<(), HostError>;

    /// Reads back the first `size` bytes of `slot`'s partition from the
    /// device (bypassing or after dropping the page cache) and returns
    /// their SHA-256.
    fn slot_digest(&mut self, slot: Slot, size: u64) -> Result<[u8; 32], HostError>;

    /// Writes `kind` (kernel or initramfs) for `slot` on the ESP
    /// (`slot_layout(slot).esp_kernel` / `esp_initrd`): temporary file,
    /// read `data` to its end (same contract as [`Host::write_slot`]),
    /// fsync, rename over the old file, fsync the directory.
    fn write_esp_file(
        &mut self,
        slot: Slot,
        kind: PayloadKind,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), HostError>;

    /// Reads back the ESP file of `slot` and `kind` and returns its SHA-256.
    fn esp_digest(&mut self, slot: Slot, kind: PayloadKind) -> Result<[u8; 32], HostError>;

    /// Recreates the EPHEMERAL filesystem (already unmounted in phase 6).
    fn wipe_ephemeral(&mut self) -> Result<(), HostError>;

    // ----- boot (mutating) -----

    /// Sets the loader's boot-once entry to `slot` (GRUB `next_entry`,
    /// systemd-boot `LoaderEntryOneShot`); the default stays as it is.
    fn loader_set_once(&mut self, slot: Slot) -> Result<(), HostError>;

    /// Makes `slot` the loader's default entry (rollback only).
    fn loader_set_default(&mut self, slot: Slot) -> Result<(), HostError>;

    /// Loads `slot`'s kernel and initramfs (as just written to the ESP) for
    /// kexec, with that slot's command line:
    /// `bascule_boot::slot::entry_cmdline(slot, Some(version), Some(partuuid),
    /// common)`, `partuuid` naming the slot's partition on the boot disk.
    fn kexec_load(&mut self, slot: Slot, version: &str) -> Result<(), KexecError>;

    /// Asks PID 1 to reboot by `mode` (a kexec needs a successful
    /// [`Host::kexec_load`] first). May return `Ok` before the machine goes
    /// down: PID 1 finishes the shutdown once the sequencer has returned.
    /// The journal is saved before this call.
    fn reboot(&mut self, mode: RebootMode) -> Result<(), HostError>;

    /// Persists the journal so it can be read after the reboot. Called at
    /// the start and end of every phase, including after the unmount:
    /// the host picks a place that is still writable then (the ESP, META,
    /// or memory until the ESP is reached). Never called in a dry run. A
    /// failure is noted in the journal and never stops the upgrade.
    fn save_journal(&mut self, journal: &Journal) -> Result<(), HostError>;
}
