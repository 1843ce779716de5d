//! Phases 7 and 8: check the disk once more, then write the payloads from
//! the second pass over the bundle and read each back.

use crate::clock::Clock;
use crate::host::RebootMode;
use crate::host::{Host, Pass};
use crate::journal::Note;
use crate::options::DataPolicy;
use crate::options::UpgradeOptions;
use crate::outcome::{InstallTarget, MetaChange, PhaseError};
use crate::progress::{Event, Progress};
use crate::run::{Run, Stop};
use crate::verify::{bundle_error, SlotContent, Verified};
use bascule_boot::meta_record::{SlotId, SlotState, StagedApply};
use bascule_boot::Slot;
use bascule_bundle::{BundleReader, DigestCheck, Manifest, PayloadInfo, PayloadKind};
use std::io::{self, Read};

impl<H: Host + ?Sized, C: Clock + ?Sized> Run<'_, H, C> {
    /// Phase 7: nothing may be written to a disk whose partition table is
    /// damaged, or to a slot that shrank since phase 1.
    pub(crate) fn verify_disk(&mut self, v: &Verified) -> Result<(), Stop> {
        let slot = v.target;
        self.host
            .verify_disk(slot, v.size_of(PayloadKind::Rootfs))
            .map_err(|source| PhaseError::Disk { slot, source })?;
        Ok(())
    }

    /// Phase 8.
    pub(crate) fn install(&mut self, v: &Verified, data: DataPolicy) -> Result<(), Stop> {
        match &v.content {
            SlotContent::ToWrite(manifest) => self.write_payloads(v.target, manifest)?,
            SlotContent::Prepared(_) => self.note(Note::AlreadyPrepared {
                slot: v.target,
                version: v.version.clone(),
            }),
        }
        match data {
            DataPolicy::Preserve => {}
            DataPolicy::Wipe => {
                self.host.wipe_ephemeral().map_err(PhaseError::Wipe)?;
                self.note(Note::EphemeralWiped);
            }
        }
        Ok(())
    }

    /// META records the slot just written as prepared from its bundle, so
    /// a later apply (or the same bundle again) boots it without writing.
    /// With `staged` (the run's options), the next boot of the running
    /// slot applies it too.
    pub(crate) fn mark_prepared(
        &mut self,
        v: &Verified,
        staged: Option<&UpgradeOptions>,
    ) -> Result<(), Stop> {
        let slot = v.target;
        let mut meta = self.host.read_meta().map_err(PhaseError::ReadMeta)?;
        meta.staged = staged.map(|o| StagedApply {
            from_slot: SlotId::from(v.booted) as i32,
            slot: SlotId::from(slot) as i32,
            version: v.version.clone(),
            wipe_data: o.data == DataPolicy::Wipe,
            firmware_reboot: o.reboot == RebootMode::Firmware,
        });
        let info = meta.slot_info_mut(slot);
        info.version.clone_from(&v.version);
        info.set_state(SlotState::Prepared);
        info.prepared = v
            .manifest()
            .map(|m| m.fingerprint().to_vec())
            .unwrap_or_default();
        self.host
            .write_meta(&meta)
            .map_err(|source| PhaseError::WriteMeta {
                what: MetaChange::MarkPrepared(slot),
                source,
            })?;
        self.note(Note::SlotPrepared {
            slot,
            version: v.version.clone(),
        });
        if staged.is_some() {
            self.note(Note::Staged { slot });
        }
        Ok(())
    }

    /// The payloads from the second pass over the bundle, each read back.
    fn write_payloads(&mut self, slot: Slot, manifest: &Manifest) -> Result<(), Stop> {
        let keys = self.host.trusted_keys();
        let source =
            self.host
                .open_bundle(Pass::Install)
                .map_err(|source| PhaseError::OpenBundle {
                    pass: Pass::Install,
                    source,
                })?;
        // Each payload is hashed once, on the read-back against the signed
        // manifest: that catches a source that changed since the verify
        // pass as well as a device that stored other bytes.
        let mut bundle = BundleReader::open(source, &keys)
            .map_err(PhaseError::Bundle)?
            .check_digests(DigestCheck::Consumer);
        if bundle.manifest() != manifest {
            return Err(PhaseError::BundleChanged {
                now: bundle.manifest().image_version.clone(),
            }
            .into());
        }
        self.mark_writing(slot)?;

        let total = manifest.payloads.iter().map(|p| p.size).sum();
        self.bytes_total(total);
        let mut done = 0u64;
        while let Some(payload) = bundle.next_payload().map_err(PhaseError::Bundle)? {
            let info = payload.info().clone();
            let target = match info.kind {
                PayloadKind::Rootfs => InstallTarget::Slot(slot),
                kind => InstallTarget::Esp(slot, kind),
            };
            let mut metered = Metered {
                inner: payload,
                progress: &mut *self.progress,
                phase_done: done,
                phase_total: total,
                kind: info.kind,
                taken: 0,
                failure: None,
            };
            let written = match target {
                InstallTarget::Slot(slot) => self.host.write_slot(slot, &mut metered, info.size),
                InstallTarget::Esp(slot, kind) => {
                    self.host
                        .write_esp_file(slot, kind, &mut metered, info.size)
                }
            };
            let (taken, failure) = (metered.taken, metered.failure.take());
            done += taken;
            self.bytes_done(info.kind, done);
            // The bundle's own failure explains a write error better than
            // the host's wrapping of it.
            if let Some(message) = failure {
                return Err(PhaseError::PayloadSource {
                    kind: info.kind,
                    target,
                    message,
                }
                .into());
            }
            written.map_err(|source| PhaseError::Write {
                kind: info.kind,
                target,
                source,
            })?;
            if taken != info.size {
                return Err(PhaseError::ShortWrite {
                    kind: info.kind,
                    target,
                    taken,
                    size: info.size,
                }
                .into());
            }
            self.read_back(&info, target)?;
            self.note(Note::Payload {
                kind: info.kind,
                size: info.size,
            });
        }
        bundle.finish().map_err(PhaseError::Bundle)?;
        Ok(())
    }

    /// META says the slot is being written before its first byte changes,
    /// so a power cut mid-write leaves a slot nothing will boot or roll
    /// back to.
    fn mark_writing(&mut self, slot: Slot) -> Result<(), Stop> {
        let mut meta = self.host.read_meta().map_err(PhaseError::ReadMeta)?;
        let info = meta.slot_info_mut(slot);
        info.version.clear();
        info.set_state(SlotState::Empty);
        info.prepared.clear();
        self.host
            .write_meta(&meta)
            .map_err(|source| PhaseError::WriteMeta {
                what: MetaChange::MarkWriting(slot),
                source,
            })?;
        self.note(Note::SlotMarkedWriting { slot });
        Ok(())
    }

    fn read_back(&mut self, info: &PayloadInfo, target: InstallTarget) -> Result<(), Stop> {
        let got = match target {
            InstallTarget::Slot(slot) => self.host.slot_digest(slot, info.size),
            InstallTarget::Esp(slot, kind) => self.host.esp_digest(slot, kind),
        }
        .map_err(|source| PhaseError::ReadBack { target, source })?;
        if got != info.sha256 {
            return Err(PhaseError::ReadBackMismatch {
                kind: info.kind,
                target,
                got: hex(&got),
                expected: hex(&info.sha256),
            }
            .into());
        }
        Ok(())
    }
}

/// The payload as the host reads it: counts the bytes, reports progress,
/// and remembers a failure of the bundle itself (truncation) so it
/// is reported as the bundle's fault, not the device's.
struct Metered<'p, R: Read> {
    inner: R,
    progress: &'p mut dyn Progress,
    phase_done: u64,
    phase_total: u64,
    kind: PayloadKind,
    taken: u64,
    failure: Option<String>,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.taken += n as u64;
                if n > 0 {
                    self.progress.event(Event::Bytes {
                        phase: crate::journal::Phase::Install,
                        payload: self.kind,
                        done: self.phase_done + self.taken,
                        total: self.phase_total,
                    });
                }
                Ok(n)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Err(e),
            Err(e) => {
                let kind = e.kind();
                let err = bundle_error(e);
                self.failure = Some(err.to_string());
                Err(io::Error::new(kind, err))
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
