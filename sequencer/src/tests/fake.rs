//! A recording fake host, a fake clock, and real signed bundles.

use crate::clock::Clock;
use crate::host::{
    ClusterLock, HoldKind, Holder, Host, HostError, KexecError, LeaseHolder, NodeRole, Pass,
    RebootMode, Running, Signal, StopError,
};
use crate::journal::Journal;
use crate::options::{DataPolicy, QuorumPolicy};
use crate::progress::Event;
use bascule_boot::meta_record::{MetaRecord, SlotInfo, SlotState};
use bascule_boot::Slot;
use bascule_bundle::{BundleWriter, Manifest, PayloadKind, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[5; 32])
}

pub fn other_key() -> SigningKey {
    SigningKey::from_bytes(&[6; 32])
}

/// Distinct, non-repeating contents per payload.
pub fn contents(kind: PayloadKind) -> Vec<u8> {
    let (len, seed) = match kind {
        PayloadKind::Rootfs => (10_000u32, 1u32),
        PayloadKind::Kernel => (5000, 2),
        PayloadKind::Initramfs => (3000, 3),
    };
    (0..len)
        .map(|i| (i.wrapping_mul(31).wrapping_add(seed * 7) % 251) as u8)
        .collect()
}

pub struct Bundle {
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

impl Bundle {
    /// The bundle with one byte of `kind`'s payload flipped (the signed
    /// manifest still claims the original digest).
    pub fn corrupt(&self, kind: PayloadKind) -> Vec<u8> {
        let p = self.manifest.payload(kind).expect("payload in test bundle");
        let mut bytes = self.bytes.clone();
        bytes[p.offset as usize + 17] ^= 0xff;
        bytes
    }
}

/// A bundle of `version` with the given payloads, signed by `key`.
pub fn bundle_with(
    version: &str,
    upgrade_from: &[&str],
    kinds: &[PayloadKind],
    key: &SigningKey,
) -> Bundle {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = BundleWriter::new(version).expect("version");
    for v in upgrade_from {
        w.upgrade_from(v).expect("upgrade-from");
    }
    for kind in kinds {
        let p = dir.path().join(kind.name());
        std::fs::write(&p, contents(*kind)).expect("payload file");
        w.payload(*kind, &p).expect("payload");
    }
    let mut bytes = Vec::new();
    let manifest = w.write(&mut bytes, key).expect("write bundle");
    Bundle { bytes, manifest }
}

pub fn bundle(version: &str) -> Bundle {
    bundle_with(version, &[], &PayloadKind::ALL, &signing_key())
}

/// Every host call, with what matters of its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Call {
    ReadMeta,
    SlotCapacity(Slot),
    EspFree,
    VerifyDisk(Slot, u64),
    OpenBundle(Pass),
    WritableMounts,
    Holders(PathBuf),
    ClusterLock(QuorumPolicy),
    ClusterRelease(String),
    Cordon,
    Drain,
    LeaveCluster,
    StopServices,
    Signal(u32, Signal),
    WaitExit(Vec<u32>),
    Unmount(PathBuf),
    WriteMeta(Box<MetaRecord>),
    WriteSlot(Slot, u64),
    SlotDigest(Slot, u64),
    WriteEsp(Slot, PayloadKind, u64),
    EspDigest(Slot, PayloadKind),
    WipeEphemeral,
    SetOnce(Slot),
    SetDefault(Slot),
    KexecLoad(Slot, String),
    Reboot(RebootMode),
    SaveJournal,
}

impl Call {
    /// Whether the call changes the machine (forbidden in a dry run and
    /// before a refusal).
    pub fn mutating(&self) -> bool {
        !matches!(
            self,
            Call::ReadMeta
                | Call::SlotCapacity(_)
                | Call::EspFree
                | Call::VerifyDisk(..)
                | Call::OpenBundle(_)
                | Call::WritableMounts
                | Call::Holders(_)
                // The lease is etcd's: the machine is unchanged.
                | Call::ClusterLock(_)
                | Call::SlotDigest(..)
                | Call::EspDigest(..)
        )
    }

    /// A short name, for order assertions.
    pub fn name(&self) -> &'static str {
        match self {
            Call::ReadMeta => "read_meta",
            Call::SlotCapacity(_) => "slot_capacity",
            Call::EspFree => "esp_free",
            Call::VerifyDisk(..) => "verify_disk",
            Call::OpenBundle(Pass::Verify) => "open_bundle(verify)",
            Call::OpenBundle(Pass::Install) => "open_bundle(install)",
            Call::WritableMounts => "writable_mounts",
            Call::Holders(_) => "holders",
            Call::ClusterLock(_) => "cluster_lock",
            Call::ClusterRelease(_) => "cluster_release",
            Call::Cordon => "cordon",
            Call::Drain => "drain",
            Call::LeaveCluster => "leave_cluster",
            Call::StopServices => "stop_services",
            Call::Signal(_, Signal::Term) => "term",
            Call::Signal(_, Signal::Kill) => "kill",
            Call::WaitExit(_) => "wait_exit",
            Call::Unmount(_) => "unmount",
            Call::WriteMeta(_) => "write_meta",
            Call::WriteSlot(..) => "write_slot",
            Call::SlotDigest(..) => "slot_digest",
            Call::WriteEsp(_, PayloadKind::Kernel, _) => "write_esp(kernel)",
            Call::WriteEsp(..) => "write_esp(initramfs)",
            Call::EspDigest(..) => "esp_digest",
            Call::WipeEphemeral => "wipe_ephemeral",
            Call::SetOnce(_) => "set_once",
            Call::SetDefault(_) => "set_default",
            Call::KexecLoad(..) => "kexec_load",
            Call::Reboot(RebootMode::Kexec) => "reboot(kexec)",
            Call::Reboot(RebootMode::Firmware) => "reboot(firmware)",
            Call::SaveJournal => "save_journal",
        }
    }
}

/// Operations a test makes fail.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fail {
    ReadMeta,
    /// The verify pass cannot open the bundle (no such file, no server).
    OpenBundle,
    Drain,
    StopServices,
    Unmount(PathBuf),
    /// The disk check fails from this call on (1 = phase 1, 2 = phase 7).
    VerifyDiskFrom(u32),
    WriteSlot,
    /// The slot reads back with other bytes than written.
    SlotReadBack,
    WriteEsp,
    Wipe,
    SetOnce,
    SetDefault,
    KexecRefused,
    Reboot(RebootMode),
    SaveJournal,
    /// The second write_meta (the try) fails.
    RecordTry,
    /// The cluster refuses (etcd would lose its quorum).
    ClusterLock,
}

pub struct FakeHost {
    pub running: Running,
    pub keys: Vec<VerifyingKey>,
    pub role: NodeRole,
    pub meta: MetaRecord,
    pub capacity: u64,
    pub esp_free: u64,
    pub verify_bytes: Vec<u8>,
    /// What the install pass reads; `None`: the same as the verify pass.
    pub install_bytes: Option<Vec<u8>>,
    pub mounts: Vec<PathBuf>,
    pub holders: BTreeMap<PathBuf, Vec<Holder>>,
    /// Pids that survive SIGTERM / SIGKILL.
    pub ignore_term: BTreeSet<u32>,
    pub ignore_kill: BTreeSet<u32>,
    pub dead: BTreeSet<u32>,
    pub fail: BTreeSet<Fail>,
    pub calls: Vec<Call>,
    pub slots: BTreeMap<Slot, Vec<u8>>,
    pub esp: BTreeMap<(Slot, PayloadKind), Vec<u8>>,
    pub journals: Vec<Journal>,
    /// Nodes that hold the lease before this one gets it (control plane).
    pub lease_holders: Vec<LeaseHolder>,
    disk_checks: u32,
    meta_writes: u32,
}

pub const CAPACITY: u64 = 64 * 1024;

/// What a prepare (or stage) changes, in order: META marks the slot as
/// being written, the payloads, META marks it prepared. Nothing else.
pub const PREPARE_CHANGES: [&str; 5] = [
    "write_meta",
    "write_slot",
    "write_esp(kernel)",
    "write_esp(initramfs)",
    "write_meta",
];

/// Machine booted from slot A running 1.0.0, both slots good (B holds an
/// older image), a worker, one mount `/var` held by nobody.
pub fn host_with(bundle: &Bundle) -> FakeHost {
    let mut meta = MetaRecord::fresh(Slot::A, "1.0.0");
    *meta.slot_info_mut(Slot::B) = SlotInfo {
        version: "0.9.0".into(),
        state: SlotState::Good as i32,
        ..Default::default()
    };
    FakeHost {
        running: Running {
            slot: Some(Slot::A),
            version: "1.0.0".into(),
        },
        keys: vec![other_key().verifying_key(), signing_key().verifying_key()],
        role: NodeRole::Worker,
        meta,
        capacity: CAPACITY,
        esp_free: 1 << 20,
        verify_bytes: bundle.bytes.clone(),
        install_bytes: None,
        mounts: vec![PathBuf::from("/var")],
        holders: BTreeMap::new(),
        ignore_term: BTreeSet::new(),
        ignore_kill: BTreeSet::new(),
        dead: BTreeSet::new(),
        fail: BTreeSet::new(),
        calls: Vec::new(),
        slots: BTreeMap::new(),
        esp: BTreeMap::new(),
        journals: Vec::new(),
        lease_holders: Vec::new(),
        disk_checks: 0,
        meta_writes: 0,
    }
}

pub fn holder(pid: u32, name: &str) -> Holder {
    Holder {
        pid,
        name: name.into(),
        how: HoldKind::OpenFile,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FakeError(pub &'static str);

fn failed(context: &str, why: &'static str) -> HostError {
    HostError::new(context.to_string(), FakeError(why))
}

impl FakeHost {
    fn failing(&self, f: &Fail) -> bool {
        self.fail.contains(f)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.calls.iter().map(Call::name).collect()
    }

    /// The mutating calls other than journal saves, by name.
    pub fn changes(&self) -> Vec<&'static str> {
        self.calls
            .iter()
            .filter(|c| c.mutating() && **c != Call::SaveJournal)
            .map(Call::name)
            .collect()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.names().iter().position(|n| *n == name)
    }

    fn read_all(data: &mut dyn Read, context: &str) -> Result<Vec<u8>, HostError> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match data.read(&mut buf) {
                Ok(0) => return Ok(out),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(HostError::new(context.to_string(), e)),
            }
        }
    }
}

impl Host for FakeHost {
    fn running(&self) -> Running {
        self.running.clone()
    }

    fn trusted_keys(&self) -> Vec<VerifyingKey> {
        self.keys.clone()
    }

    fn node_role(&self) -> NodeRole {
        self.role
    }

    fn read_meta(&mut self) -> Result<MetaRecord, HostError> {
        self.calls.push(Call::ReadMeta);
        if self.failing(&Fail::ReadMeta) {
            return Err(failed("reading META /dev/vda3", "I/O error"));
        }
        Ok(self.meta.clone())
    }

    fn slot_capacity(&mut self, slot: Slot) -> Result<u64, HostError> {
        self.calls.push(Call::SlotCapacity(slot));
        Ok(self.capacity)
    }

    fn esp_free(&mut self) -> Result<u64, HostError> {
        self.calls.push(Call::EspFree);
        Ok(self.esp_free)
    }

    fn verify_disk(&mut self, slot: Slot, needed: u64) -> Result<(), HostError> {
        self.calls.push(Call::VerifyDisk(slot, needed));
        self.disk_checks += 1;
        let from = self.fail.iter().find_map(|f| match f {
            Fail::VerifyDiskFrom(n) => Some(*n),
            _ => None,
        });
        match from {
            Some(n) if self.disk_checks >= n => {
                Err(failed("/dev/vda: backup GPT header", "CRC mismatch"))
            }
            _ => Ok(()),
        }
    }

    fn open_bundle(&mut self, pass: Pass) -> Result<Box<dyn Read>, HostError> {
        self.calls.push(Call::OpenBundle(pass));
        if pass == Pass::Verify && self.failing(&Fail::OpenBundle) {
            return Err(failed("file:///nope", "No such file or directory"));
        }
        let bytes = match (pass, &self.install_bytes) {
            (Pass::Install, Some(b)) => b.clone(),
            _ => self.verify_bytes.clone(),
        };
        Ok(Box::new(io::Cursor::new(bytes)))
    }

    fn writable_mounts(&mut self) -> Result<Vec<PathBuf>, HostError> {
        self.calls.push(Call::WritableMounts);
        Ok(self.mounts.clone())
    }

    fn holders(&mut self, mount: &Path) -> Result<Vec<Holder>, HostError> {
        self.calls.push(Call::Holders(mount.to_path_buf()));
        let dead = &self.dead;
        Ok(self
            .holders
            .get(mount)
            .map(|hs| {
                hs.iter()
                    .filter(|h| !dead.contains(&h.pid))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    fn cordon(&mut self) -> Result<(), HostError> {
        self.calls.push(Call::Cordon);
        Ok(())
    }

    fn drain_workloads(&mut self) -> Result<(), StopError> {
        self.calls.push(Call::Drain);
        if self.failing(&Fail::Drain) {
            return Err(StopError::NotStopped {
                services: vec!["postgres".into()],
            });
        }
        Ok(())
    }

    fn cluster_lock(
        &mut self,
        _target_version: &str,
        _data: DataPolicy,
        quorum: QuorumPolicy,
        waiting: &mut dyn FnMut(&LeaseHolder),
    ) -> Result<ClusterLock, HostError> {
        if self.role == NodeRole::Worker {
            return Ok(ClusterLock::NotClustered);
        }
        self.calls.push(Call::ClusterLock(quorum));
        for h in &self.lease_holders {
            // Asked more than once while the same node holds it.
            waiting(h);
            waiting(h);
        }
        if self.fail.contains(&Fail::ClusterLock) && quorum == QuorumPolicy::Check {
            return Err(HostError::new(
                "etcd quorum",
                "etcd would lose quorum: cp2 unhealthy",
            ));
        }
        Ok(ClusterLock::Held {
            lease: "694d77aa9e38260f".into(),
        })
    }

    fn cluster_release(&mut self, failure: &str) {
        self.calls.push(Call::ClusterRelease(failure.to_owned()));
    }

    fn leave_cluster(&mut self) -> Result<(), HostError> {
        self.calls.push(Call::LeaveCluster);
        Ok(())
    }

    fn stop_services(&mut self) -> Result<(), StopError> {
        self.calls.push(Call::StopServices);
        if self.failing(&Fail::StopServices) {
            return Err(StopError::NotStopped {
                services: vec!["etcd".into()],
            });
        }
        Ok(())
    }

    fn signal(&mut self, pid: u32, signal: Signal) -> Result<(), HostError> {
        self.calls.push(Call::Signal(pid, signal));
        let ignores = match signal {
            Signal::Term => &self.ignore_term,
            Signal::Kill => &self.ignore_kill,
        };
        if !ignores.contains(&pid) {
            self.dead.insert(pid);
        }
        Ok(())
    }

    fn wait_exit(&mut self, holders: &[Holder], _grace: Duration) -> Vec<Holder> {
        self.calls
            .push(Call::WaitExit(holders.iter().map(|h| h.pid).collect()));
        holders
            .iter()
            .filter(|h| !self.dead.contains(&h.pid))
            .cloned()
            .collect()
    }

    fn unmount(&mut self, mount: &Path) -> Result<(), HostError> {
        self.calls.push(Call::Unmount(mount.to_path_buf()));
        if self.failing(&Fail::Unmount(mount.to_path_buf())) {
            return Err(failed(&format!("umount {}", mount.display()), "EBUSY"));
        }
        Ok(())
    }

    fn write_meta(&mut self, record: &MetaRecord) -> Result<(), HostError> {
        self.calls.push(Call::WriteMeta(Box::new(record.clone())));
        self.meta_writes += 1;
        if self.meta_writes == 2 && self.failing(&Fail::RecordTry) {
            return Err(failed("writing META /dev/vda3", "I/O error"));
        }
        self.meta = record.clone();
        Ok(())
    }

    fn write_slot(&mut self, slot: Slot, data: &mut dyn Read, size: u64) -> Result<(), HostError> {
        self.calls.push(Call::WriteSlot(slot, size));
        let mut bytes = Self::read_all(data, "writing /dev/vda5")?;
        if self.failing(&Fail::WriteSlot) {
            return Err(failed("writing /dev/vda5 at byte 4096", "EIO"));
        }
        if self.failing(&Fail::SlotReadBack) {
            bytes[100] ^= 1;
        }
        self.slots.insert(slot, bytes);
        Ok(())
    }

    fn slot_digest(&mut self, slot: Slot, size: u64) -> Result<[u8; 32], HostError> {
        self.calls.push(Call::SlotDigest(slot, size));
        let data = self.slots.get(&slot).cloned().unwrap_or_default();
        let end = (size as usize).min(data.len());
        Ok(Sha256::digest(&data[..end]).into())
    }

    fn write_esp_file(
        &mut self,
        slot: Slot,
        kind: PayloadKind,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), HostError> {
        self.calls.push(Call::WriteEsp(slot, kind, size));
        let bytes = Self::read_all(data, "writing the ESP")?;
        if self.failing(&Fail::WriteEsp) {
            return Err(failed("writing /boot/bascule/B/.vmlinuz.tmp", "ENOSPC"));
        }
        self.esp.insert((slot, kind), bytes);
        Ok(())
    }

    fn esp_digest(&mut self, slot: Slot, kind: PayloadKind) -> Result<[u8; 32], HostError> {
        self.calls.push(Call::EspDigest(slot, kind));
        let data = self.esp.get(&(slot, kind)).cloned().unwrap_or_default();
        Ok(Sha256::digest(&data).into())
    }

    fn wipe_ephemeral(&mut self) -> Result<(), HostError> {
        self.calls.push(Call::WipeEphemeral);
        if self.failing(&Fail::Wipe) {
            return Err(failed("mkfs.ext4 /dev/vda7", "exit status 1"));
        }
        Ok(())
    }

    fn loader_set_once(&mut self, slot: Slot) -> Result<(), HostError> {
        self.calls.push(Call::SetOnce(slot));
        if self.failing(&Fail::SetOnce) {
            return Err(failed("writing /boot/grub/grubenv", "EROFS"));
        }
        Ok(())
    }

    fn loader_set_default(&mut self, slot: Slot) -> Result<(), HostError> {
        self.calls.push(Call::SetDefault(slot));
        if self.failing(&Fail::SetDefault) {
            return Err(failed("writing /boot/grub/grubenv", "EROFS"));
        }
        Ok(())
    }

    fn kexec_load(&mut self, slot: Slot, version: &str) -> Result<(), KexecError> {
        self.calls.push(Call::KexecLoad(slot, version.to_string()));
        if self.failing(&Fail::KexecRefused) {
            return Err(KexecError::Refused {
                reason: "kernel lockdown (Secure Boot)".into(),
            });
        }
        Ok(())
    }

    fn reboot(&mut self, mode: RebootMode) -> Result<(), HostError> {
        self.calls.push(Call::Reboot(mode));
        if self.failing(&Fail::Reboot(mode)) {
            return Err(failed("reboot(2)", "EPERM"));
        }
        Ok(())
    }

    fn save_journal(&mut self, journal: &Journal) -> Result<(), HostError> {
        self.calls.push(Call::SaveJournal);
        if self.failing(&Fail::SaveJournal) {
            return Err(failed("writing /boot/bascule/journal.json", "EROFS"));
        }
        self.journals.push(journal.clone());
        Ok(())
    }
}

/// Starts at a fixed wall time; every monotonic reading advances 7 ms, so
/// each phase has a non-zero duration.
pub struct FakeClock {
    ms: Cell<u64>,
}

pub const START_UNIX_MS: u64 = 1_790_000_000_000;

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock { ms: Cell::new(0) }
    }
}

impl Clock for FakeClock {
    fn unix_ms(&self) -> u64 {
        START_UNIX_MS + self.ms.get()
    }

    fn monotonic(&self) -> Duration {
        self.ms.set(self.ms.get() + 7);
        Duration::from_millis(self.ms.get())
    }
}

/// Collects the events of a run.
#[derive(Default)]
pub struct Events(pub Vec<Event>);

impl crate::progress::Progress for Events {
    fn event(&mut self, event: Event) {
        self.0.push(event);
    }
}
