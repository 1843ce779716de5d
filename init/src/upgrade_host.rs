//! The machine as the sequencer sees it: `bascule_sequencer::Host` over the
//! syscall crate, on the sequencer's own thread. What only the event loop
//! may touch (the supervisor, META and the loader, the client's bytes, the
//! reboot) is asked of it through the bridge.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bascule_boot::meta_record::MetaRecord;
use bascule_boot::{layout, Slot};
use bascule_bundle::{PayloadKind, VerifyingKey};
use bascule_sequencer::host::{ClusterLock, LeaseHolder};
use bascule_sequencer::{DataPolicy, QuorumPolicy};
use bascule_sequencer::{
    HoldKind, Holder, Host, HostError, Journal, KexecError, NodeRole, Pass, RebootMode, Running,
    Signal, StopError,
};
use bascule_sys::power::PowerAction;

use crate::cluster_host::ClusterSide;
use crate::slot_io;
use crate::source_readers::{ClientStream, HttpBody};
use crate::upgrade_bridge::{LoopCall, LoopHandle};

/// Where the bundle comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the machine.
    Path(PathBuf),
    /// Fetched by the machine.
    Url(String),
    /// Streamed by the client, once per pass.
    Stream,
    /// None: the run boots a slot prepared earlier and reads no bundle.
    Prepared,
}

/// Where the journals of the last runs are kept: the ESP is the one
/// filesystem still mounted after the unmount phase.
/// The upgrade journal on the ESP (the one filesystem mounted through the
/// whole run), in a directory of its own and of a fixed size, rewritten in
/// place: after its first save no run changes FAT metadata (allocation
/// table, directory entries of the kernels) for it, so a power cut in the
/// middle of a save can cost the journal, never the boot files.
pub const JOURNAL_FILE: &str = "/boot/bascule-journal/upgrades.json";

/// The journal file's fixed size; the oldest runs go first when they do
/// not fit.
const JOURNAL_BYTES: usize = 256 * 1024;
/// Runs kept in it.
const JOURNAL_RUNS: usize = 8;

pub struct MachineHost {
    pub bridge: LoopHandle,
    pub source: Source,
    pub running: Running,
    pub journal_file: PathBuf,
    /// The cluster's upgrade lease, while this run holds it.
    pub cluster: ClusterSide,
    /// The version the lease was taken for.
    pub cluster_target: String,
}

fn host_err(context: impl Into<String>, e: impl std::fmt::Display) -> HostError {
    HostError::new(context, e.to_string())
}

fn loop_gone() -> HostError {
    host_err("asking PID 1's event loop", "it no longer answers")
}

/// The kernel command line without Bascule's own parameters
/// (`bascule.slot=`, `bascule.version=`, `root=`): what every slot's entry
/// shares (console, panic=, quiet...).
fn common_cmdline() -> String {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    cmdline
        .split_whitespace()
        .filter(|p| bascule_boot::slot::reserved_param(p).is_none())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The disk holding the partition labelled `label` (the boot disk, as
/// partitions are looked up there only).
fn disk_holding(label: &'static str) -> Result<PathBuf, HostError> {
    let part = slot_io::partition(label).map_err(|e| host_err(format!("finding {label}"), e))?;
    part.file_name()
        .and_then(|n| bascule_sys::blockdev::disk_of(&Path::new("/sys/class/block").join(n)))
        .map(|d| PathBuf::from("/dev").join(d))
        .ok_or_else(|| {
            host_err(
                format!("finding the disk of {label}"),
                format!("cannot tell which disk holds {}", part.display()),
            )
        })
}

/// The unique GUID of `slot`'s partition on the boot disk, from its GPT:
/// what the slot's loader entries carry as `root=PARTUUID=`, so a kexec
/// boots the same way.
fn slot_partuuid(slot: Slot) -> Result<bascule_boot::layout::Guid, HostError> {
    let label = slot.layout().partition_label;
    let disk = disk_holding(label)?;
    let report = bascule_boot::gpt::Gpt::read_path(&disk)
        .map_err(|e| host_err(format!("reading the GPT of {}", disk.display()), e))?;
    report
        .gpt
        .find(label)
        .map(|p| p.unique_guid)
        .ok_or_else(|| {
            host_err(
                format!("reading the GPT of {}", disk.display()),
                format!("no partition {label}"),
            )
        })
}

/// Reads the journals file: the last runs, oldest first.
pub fn read_journals(path: &Path) -> Vec<Journal> {
    std::fs::read_to_string(path)
        .ok()
        // The padding after the JSON is spaces.
        .and_then(|t| serde_json::from_str::<Vec<serde_json::Value>>(t.trim_end()).ok())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| Journal::from_json(&v.to_string()).ok())
        .collect()
}

/// Creates the journal file, empty, when it is missing: at boot, so that
/// no upgrade run has to allocate it on the ESP.
pub fn ensure_journal(path: &Path) -> Result<(), HostError> {
    if path.exists() {
        return Ok(());
    }
    let text = journal_bytes(&[])?;
    slot_io::write_file_atomic(path, &mut &text[..], text.len() as u64)
        .map_err(|e| host_err(format!("creating {}", path.display()), e))
}

/// The journal's bytes: the newest runs that fit, padded with spaces to
/// [`JOURNAL_BYTES`].
fn journal_bytes(runs: &[Journal]) -> Result<Vec<u8>, HostError> {
    let mut skip = runs.len().saturating_sub(JOURNAL_RUNS);
    loop {
        let values: Vec<serde_json::Value> = runs[skip..]
            .iter()
            .filter_map(|j| j.to_json().ok())
            .filter_map(|t| serde_json::from_str(&t).ok())
            .collect();
        let mut text =
            serde_json::to_vec_pretty(&values).map_err(|e| host_err("encoding the journal", e))?;
        if text.len() <= JOURNAL_BYTES || skip + 1 >= runs.len() {
            text.resize(JOURNAL_BYTES.max(text.len()), b' ');
            return Ok(text);
        }
        skip += 1;
    }
}

fn fetch(url: &str) -> Result<Box<dyn Read>, HostError> {
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout_read(Duration::from_secs(60))
        .build();
    let mut last = None;
    // Transient failures (a server restarting, a dropped connection) get
    // two more tries; an HTTP error status does not.
    for attempt in 0..3 {
        match agent.get(url).call() {
            Ok(resp) => return Ok(Box::new(HttpBody::new(resp.into_reader(), url))),
            Err(ureq::Error::Status(code, _)) => {
                return Err(host_err(
                    format!("fetching {url}"),
                    format!("HTTP status {code}"),
                ))
            }
            Err(e) => {
                last = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(500 << attempt));
            }
        }
    }
    Err(host_err(
        format!("fetching {url}"),
        last.unwrap_or_else(|| "no answer".into()),
    ))
}

impl Host for MachineHost {
    fn running(&self) -> Running {
        self.running.clone()
    }

    fn trusted_keys(&self) -> Vec<VerifyingKey> {
        match bascule_bundle::keys::load_trusted_dir(Path::new(layout::TRUSTED_KEYS_DIR)) {
            Ok(keys) => keys.into_iter().map(|k| k.key).collect(),
            Err(e) => {
                crate::log!("upgrade: trusted keys: {e}; no bundle will be accepted");
                Vec::new()
            }
        }
    }

    fn node_role(&self) -> NodeRole {
        match crate::cluster_boot::machine().map(|m| m.role) {
            Some(bascule_cluster::Role::ControlPlane) => NodeRole::ControlPlane,
            _ => NodeRole::Worker,
        }
    }

    fn read_meta(&mut self) -> Result<MetaRecord, HostError> {
        self.bridge
            .ask(LoopCall::ReadMeta)
            .ok_or_else(loop_gone)?
            .map_err(|e| host_err("reading META", e))
    }

    fn slot_capacity(&mut self, slot: Slot) -> Result<u64, HostError> {
        let label = slot.layout().partition_label;
        slot_io::partition(label)
            .and_then(|p| slot_io::capacity(&p))
            .map_err(|e| host_err(format!("sizing {label}"), e))
    }

    fn esp_free(&mut self) -> Result<u64, HostError> {
        let st = rustix::fs::statvfs(layout::MOUNT_ESP)
            .map_err(|e| host_err(format!("statvfs {}", layout::MOUNT_ESP), e))?;
        Ok(st.f_bavail * st.f_frsize)
    }

    fn verify_disk(&mut self, slot: Slot, needed: u64) -> Result<(), HostError> {
        let label = slot.layout().partition_label;
        let disk = disk_holding(label)?;
        let report = bascule_boot::gpt::Gpt::read_path(&disk)
            .map_err(|e| host_err(format!("reading the GPT of {}", disk.display()), e))?;
        if !report.fully_valid() {
            return Err(host_err(
                format!("verifying the GPT of {}", disk.display()),
                format!(
                    "primary {:?}, backup {:?}: repair the partition table before upgrading",
                    report.primary, report.backup
                ),
            ));
        }
        let p = report
            .gpt
            .find(label)
            .ok_or_else(|| host_err("verifying the disk", format!("no partition {label}")))?;
        if p.size() < needed {
            return Err(host_err(
                format!("verifying {label} on {}", disk.display()),
                format!("{} bytes are needed, it holds {}", needed, p.size()),
            ));
        }
        Ok(())
    }

    fn open_bundle(&mut self, pass: Pass) -> Result<Box<dyn Read>, HostError> {
        match &self.source {
            Source::Path(p) => File::open(p)
                .map(|f| Box::new(std::io::BufReader::new(f)) as Box<dyn Read>)
                .map_err(|e| host_err(format!("opening the bundle {}", p.display()), e)),
            Source::Url(u) => fetch(u),
            Source::Prepared => Err(host_err(
                "opening the bundle",
                "this run applies a prepared slot and has no bundle",
            )),
            Source::Stream => {
                let (fd, complete) = self
                    .bridge
                    .ask(|r| LoopCall::SendBundle(pass, r))
                    .ok_or_else(loop_gone)?
                    .map_err(|e| host_err("receiving the bundle from the client", e))?;
                Ok(Box::new(std::io::BufReader::new(ClientStream::new(
                    File::from(fd),
                    complete,
                ))))
            }
        }
    }

    fn writable_mounts(&mut self) -> Result<Vec<PathBuf>, HostError> {
        let mounts = bascule_sys::mountinfo::read_own()
            .map_err(|e| host_err("reading the mount table", e))?;
        let roots = [layout::MOUNT_EPHEMERAL, layout::MOUNT_STATE];
        let mut out: Vec<PathBuf> = mounts
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| roots.iter().any(|r| p.starts_with(r)))
            .collect();
        // Deepest first; a stack of mounts on one point is unmounted once per layer.
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        Ok(out)
    }

    fn holders(&mut self, mount: &Path) -> Result<Vec<Holder>, HostError> {
        Ok(bascule_sys::holders::scan(mount)
            .into_iter()
            .map(|h| Holder {
                pid: h.pid as u32,
                name: h.name,
                how: match h.how {
                    bascule_sys::holders::HoldKind::Fd(_) => HoldKind::OpenFile,
                    bascule_sys::holders::HoldKind::Cwd => HoldKind::Cwd,
                    bascule_sys::holders::HoldKind::Root => HoldKind::Root,
                    bascule_sys::holders::HoldKind::Map(_) => HoldKind::MemoryMap,
                    bascule_sys::holders::HoldKind::MountNamespace => HoldKind::MountNamespace,
                },
            })
            .collect())
    }

    fn cordon(&mut self) -> Result<(), HostError> {
        self.bridge.ask(LoopCall::Cordon).ok_or_else(loop_gone)
    }

    fn drain_workloads(&mut self) -> Result<(), StopError> {
        match self.bridge.ask(LoopCall::Drain) {
            Some(Ok(())) => Ok(()),
            Some(Err(services)) => Err(StopError::NotStopped { services }),
            None => Err(StopError::Host(loop_gone())),
        }
    }

    fn cluster_lock(
        &mut self,
        target_version: &str,
        data: DataPolicy,
        quorum: QuorumPolicy,
        waiting: &mut dyn FnMut(&LeaseHolder),
    ) -> Result<ClusterLock, HostError> {
        self.cluster_target = target_version.to_owned();
        self.cluster.lock(
            crate::cluster_boot::machine(),
            &self.running.version,
            target_version,
            data,
            quorum,
            waiting,
        )
    }

    fn cluster_release(&mut self, failure: &str) {
        let target = self.cluster_target.clone();
        self.cluster
            .release(crate::cluster_boot::machine(), &target, failure);
    }

    fn leave_cluster(&mut self) -> Result<(), HostError> {
        ClusterSide::leave(crate::cluster_boot::machine())
    }

    fn stop_services(&mut self) -> Result<(), StopError> {
        match self.bridge.ask(LoopCall::StopAll) {
            Some(Ok(())) => Ok(()),
            Some(Err(services)) => Err(StopError::NotStopped { services }),
            None => Err(StopError::Host(loop_gone())),
        }
    }

    fn signal(&mut self, pid: u32, signal: Signal) -> Result<(), HostError> {
        let sig = match signal {
            Signal::Term => rustix::process::Signal::TERM,
            Signal::Kill => rustix::process::Signal::KILL,
        };
        let Some(p) = rustix::process::Pid::from_raw(pid as i32) else {
            return Ok(());
        };
        match rustix::process::kill_process(p, sig) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(host_err(format!("signalling pid {pid}"), e)),
        }
    }

    fn wait_exit(&mut self, holders: &[Holder], grace: Duration) -> Vec<Holder> {
        use rustix::event::{poll, PollFd, PollFlags, Timespec};
        use rustix::process::{pidfd_open, Pid, PidfdFlags};
        // A pidfd turns readable once its process has exited (a zombie
        // counts: PID 1 reaps it on its loop). No pidfd because the
        // process is gone (ESRCH) means it has exited already.
        let mut waiting: Vec<(Holder, std::os::fd::OwnedFd)> = Vec::new();
        let mut unwatched = Vec::new();
        for h in holders {
            match Pid::from_raw(h.pid as i32).map(|p| pidfd_open(p, PidfdFlags::empty())) {
                Some(Ok(fd)) => waiting.push((h.clone(), fd)),
                Some(Err(rustix::io::Errno::SRCH)) | None => {}
                Some(Err(_)) => unwatched.push(h.clone()),
            }
        }
        let deadline = Instant::now() + grace;
        while !waiting.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|(_, fd)| PollFd::new(fd, PollFlags::IN))
                .collect();
            let timeout = Timespec {
                tv_sec: left.as_secs() as i64,
                tv_nsec: i64::from(left.subsec_nanos()),
            };
            if poll(&mut fds, Some(&timeout)).is_err() {
                break;
            }
            let exited: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let mut i = 0;
            waiting.retain(|_| {
                i += 1;
                !exited[i - 1]
            });
        }
        // Those without a pidfd are judged by /proc once the wait is over.
        unwatched.retain(|h| {
            std::fs::read_to_string(format!("/proc/{}/stat", h.pid))
                .is_ok_and(|s| !s.contains(") Z "))
        });
        unwatched.extend(waiting.into_iter().map(|(h, _)| h));
        unwatched
    }

    /// Unmounts `mount` here, and once no mount of its device is left in
    /// this namespace, checks that none is left anywhere: a mount
    /// namespace kept alive by a namespace file (an nsfs bind mount) holds
    /// the filesystem with no process to kill, and writing the partition
    /// then (the EPHEMERAL wipe) would corrupt a mounted filesystem.
    fn unmount(&mut self, mount: &Path) -> Result<(), HostError> {
        let what = || format!("unmounting {}", mount.display());
        let device = bascule_sys::mountinfo::read_own().ok().and_then(|own| {
            own.into_iter()
                .rev()
                .find(|m| m.mount_point == mount)
                .map(|m| m.device)
        });
        rustix::mount::unmount(mount, rustix::mount::UnmountFlags::empty())
            .map_err(|e| host_err(what(), e))?;
        let Some(device) = device else {
            return Ok(());
        };
        let own = bascule_sys::mountinfo::read_own().map_err(|e| host_err(what(), e))?;
        if own.iter().any(|m| m.device == device) {
            return Ok(());
        }
        let Some(node) = bascule_sys::blockdev::node_of(&device) else {
            return Ok(());
        };
        match bascule_sys::blockdev::in_use(&node) {
            Ok(false) => Ok(()),
            Ok(true) => {
                let ns_files: Vec<String> = own
                    .iter()
                    .filter(|m| m.fstype == "nsfs")
                    .map(|m| m.mount_point.display().to_string())
                    .collect();
                let hint = if ns_files.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (mount namespaces kept by {}: unmount them)",
                        ns_files.join(", ")
                    )
                };
                Err(host_err(
                    what(),
                    format!(
                        "unmounted here, but {} is still mounted in another mount namespace{hint}",
                        node.display()
                    ),
                ))
            }
            Err(e) => Err(host_err(what(), e)),
        }
    }

    fn write_meta(&mut self, record: &MetaRecord) -> Result<(), HostError> {
        self.bridge
            .ask(|r| LoopCall::WriteMeta(record.clone(), r))
            .ok_or_else(loop_gone)?
            .map_err(|e| host_err("writing META", e))
    }

    fn write_slot(&mut self, slot: Slot, data: &mut dyn Read, size: u64) -> Result<(), HostError> {
        slot_io::write_slot(slot, data, size)
            .map_err(|e| host_err(format!("writing slot {slot}"), e))
    }

    fn slot_digest(&mut self, slot: Slot, size: u64) -> Result<[u8; 32], HostError> {
        slot_io::slot_digest(slot, size)
            .map_err(|e| host_err(format!("reading back slot {slot}"), e))
    }

    fn write_esp_file(
        &mut self,
        slot: Slot,
        kind: PayloadKind,
        data: &mut dyn Read,
        size: u64,
    ) -> Result<(), HostError> {
        let path = slot_io::esp_file(slot, kind)
            .ok_or_else(|| host_err("writing the ESP", format!("no ESP file for {kind}")))?;
        slot_io::write_file_atomic(&path, data, size)
            .map_err(|e| host_err(format!("writing slot {slot}'s {kind}"), e))
    }

    fn esp_digest(&mut self, slot: Slot, kind: PayloadKind) -> Result<[u8; 32], HostError> {
        let path = slot_io::esp_file(slot, kind)
            .ok_or_else(|| host_err("reading the ESP", format!("no ESP file for {kind}")))?;
        let size = std::fs::metadata(&path)
            .map_err(|e| host_err(format!("reading back {}", path.display()), e))?
            .len();
        slot_io::digest(&path, size).map_err(|e| host_err("reading back the ESP", e))
    }

    fn wipe_ephemeral(&mut self) -> Result<(), HostError> {
        slot_io::wipe_ephemeral().map_err(|e| host_err("wiping EPHEMERAL", e))
    }

    fn loader_set_once(&mut self, slot: Slot) -> Result<(), HostError> {
        self.bridge
            .ask(|r| LoopCall::SetOnce(slot, r))
            .ok_or_else(loop_gone)?
            .map_err(|e| host_err(format!("setting the boot-once entry for slot {slot}"), e))
    }

    fn loader_set_default(&mut self, slot: Slot) -> Result<(), HostError> {
        self.bridge
            .ask(|r| LoopCall::SetDefault(slot, r))
            .ok_or_else(loop_gone)?
            .map_err(|e| host_err(format!("making slot {slot} the default"), e))
    }

    fn kexec_load(&mut self, slot: Slot, version: &str) -> Result<(), KexecError> {
        let failed = |what: &str, e: &dyn std::fmt::Display| KexecError::Failed(host_err(what, e));
        let partuuid =
            slot_partuuid(slot).map_err(|e| failed("naming the slot's partition", &e))?;
        let cmdline = bascule_boot::slot::entry_cmdline(
            slot,
            Some(version),
            Some(partuuid),
            &common_cmdline(),
        )
        .map_err(|e| failed("building the kexec command line", &e))?;
        let (Some(kernel), Some(initrd)) = (
            slot_io::esp_file(slot, PayloadKind::Kernel),
            slot_io::esp_file(slot, PayloadKind::Initramfs),
        ) else {
            return Err(failed("kexec", &"no kernel path"));
        };
        match bascule_sys::kexec::load_files(&kernel, Some(&initrd), &cmdline) {
            Ok(()) => Ok(()),
            Err(e @ bascule_sys::Error::Kexec { .. }) => Err(KexecError::Refused {
                reason: e.to_string(),
            }),
            Err(e) => Err(failed(&format!("loading {}", kernel.display()), &e)),
        }
    }

    fn reboot(&mut self, mode: RebootMode) -> Result<(), HostError> {
        let action = match mode {
            RebootMode::Kexec => PowerAction::Kexec,
            RebootMode::Firmware => PowerAction::Reboot,
        };
        self.cluster
            .renew_before_reboot(crate::cluster_boot::machine());
        self.bridge.send(LoopCall::Reboot(action));
        Ok(())
    }

    fn save_journal(&mut self, journal: &Journal) -> Result<(), HostError> {
        self.bridge.send(LoopCall::Journal(journal.clone()));
        let mut runs = read_journals(&self.journal_file);
        runs.retain(|j| j.started_unix_ms != journal.started_unix_ms);
        runs.push(journal.clone());
        let text = journal_bytes(&runs)?;
        let path = &self.journal_file;
        let saving = |e: &dyn std::fmt::Display| host_err(format!("saving {}", path.display()), e);
        let same_size = std::fs::metadata(path).is_ok_and(|m| m.len() == text.len() as u64);
        if !same_size {
            // The first save (or a journal of another size): made once.
            return slot_io::write_file_atomic(path, &mut &text[..], text.len() as u64)
                .map_err(|e| saving(&e));
        }
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| saving(&e))?;
        f.write_all_at(&text, 0)
            .and_then(|()| f.sync_data())
            .map_err(|e| saving(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_journal_file_has_one_size_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j/upgrades.json");
        ensure_journal(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            JOURNAL_BYTES as u64
        );
        assert!(read_journals(&path).is_empty());
        let runs = vec![Journal::new(
            bascule_sequencer::journal::RunKind::Upgrade,
            5,
            Some(Slot::A),
            "1.0.0",
        )];
        let bytes = journal_bytes(&runs).unwrap();
        assert_eq!(bytes.len(), JOURNAL_BYTES);
        std::fs::write(&path, &bytes).unwrap();
        let back = read_journals(&path);
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].started_unix_ms, 5);
    }
}
