//! Phase 1: everything that can refuse an upgrade before anything
//! changes. Cheap checks first (META, versions, sizes, the disk), then the
//! whole bundle is read and every payload's digest checked.

use crate::clock::Clock;
use crate::host::{Host, Pass, Running};
use crate::journal::Note;
use crate::options::{UpgradeOptions, VersionPolicy};
use crate::outcome::{PhaseError, Refusal};
use crate::run::{Run, Stop};
use crate::version::compare_versions;
use bascule_boot::meta_record::{MetaRecord, SlotState};
use bascule_boot::Slot;
use bascule_bundle::{BundleReader, Manifest, PayloadKind};
use std::cmp::Ordering;
use std::io::Read;

/// Copy buffer for the passes the sequencer reads itself.
pub(crate) const CHUNK: usize = 1 << 20;

/// What the verify phase established.
#[derive(Clone, Debug)]
pub(crate) struct Verified {
    pub(crate) booted: Slot,
    pub(crate) target: Slot,
    /// The image version the target slot will hold.
    pub(crate) version: String,
    pub(crate) content: SlotContent,
    pub(crate) capacity: u64,
    pub(crate) esp_free: u64,
}

/// What the install has to write.
#[derive(Clone, Debug)]
pub(crate) enum SlotContent {
    /// The bundle's payloads, to the target slot and the ESP.
    ToWrite(Manifest),
    /// Nothing: a prepare run already wrote and checked them (META says
    /// so). The manifest when the same bundle was given again.
    Prepared(Option<Manifest>),
}

impl Verified {
    pub(crate) fn manifest(&self) -> Option<&Manifest> {
        match &self.content {
            SlotContent::ToWrite(m) | SlotContent::Prepared(Some(m)) => Some(m),
            SlotContent::Prepared(None) => None,
        }
    }

    pub(crate) fn size_of(&self, kind: PayloadKind) -> u64 {
        self.manifest()
            .and_then(|m| m.payload(kind))
            .map_or(0, |p| p.size)
    }
}

/// Whether `meta` records `target` as prepared from `manifest`.
fn prepared_from(meta: &MetaRecord, target: Slot, manifest: &Manifest) -> bool {
    let info = meta.slot_info(target);
    info.state() == SlotState::Prepared
        && info.version == manifest.image_version
        && info.prepared == manifest.fingerprint()
}

/// The META refusals shared by upgrade and rollback: a try in flight.
pub(crate) fn check_no_pending_try(meta: &MetaRecord) -> Result<(), Refusal> {
    match (&meta.pending_try, meta.pending_slot()) {
        (Some(t), Some(slot)) => Err(Refusal::TryPending {
            slot,
            version: t.version.clone(),
        }),
        // A try naming no valid slot cannot be booted: nothing pending.
        _ => Ok(()),
    }
}

/// Refuses to overwrite the only known-good slot (omni#1552: the booted
/// slot was picked by hand after a boot loop and never confirmed; writing
/// the other one destroyed the last good image).
fn check_not_only_good(meta: &MetaRecord, booted: Slot) -> Result<(), Refusal> {
    let target = booted.other();
    let booted_state = meta.slot_info(booted).state();
    let target_info = meta.slot_info(target);
    if booted_state != SlotState::Good && target_info.state() == SlotState::Good {
        return Err(Refusal::OnlyGoodSlot {
            target,
            target_version: target_info.version,
            booted,
            booted_state,
        });
    }
    Ok(())
}

fn check_version(running: &str, image: &str, policy: VersionPolicy) -> Result<(), Refusal> {
    if policy == VersionPolicy::AllowAny {
        return Ok(());
    }
    match compare_versions(image, running) {
        Ordering::Greater => Ok(()),
        Ordering::Equal => Err(Refusal::SameVersion {
            version: image.to_string(),
        }),
        Ordering::Less => Err(Refusal::Older {
            running: running.to_string(),
            image: image.to_string(),
        }),
    }
}

impl<H: Host + ?Sized, C: Clock + ?Sized> Run<'_, H, C> {
    /// Phase 1. Read-only: safe in a dry run.
    pub(crate) fn verify(
        &mut self,
        running: &Running,
        options: &UpgradeOptions,
    ) -> Result<Verified, Stop> {
        let (booted, target, meta) = self.booted_target_meta(running)?;
        check_not_only_good(&meta, booted)?;

        let keys = self.host.trusted_keys();
        // Nothing has changed yet: a reference that cannot be opened is
        // refused like a bad bundle.
        let source = self
            .host
            .open_bundle(Pass::Verify)
            .map_err(Refusal::Unreadable)?;
        let mut bundle = BundleReader::open(source, &keys).map_err(Refusal::Bundle)?;
        let manifest = bundle.manifest().clone();
        self.journal.to_version = Some(manifest.image_version.clone());
        manifest
            .check_upgrade_from(&running.version)
            .map_err(Refusal::Bundle)?;
        check_version(&running.version, &manifest.image_version, options.versions)?;
        for kind in PayloadKind::ALL {
            if manifest.payload(kind).is_none() {
                return Err(Refusal::MissingPayload { kind }.into());
            }
        }

        let capacity_err = |source| PhaseError::Capacity {
            slot: target,
            source,
        };
        let capacity = self.host.slot_capacity(target).map_err(capacity_err)?;
        let esp_free = self.host.esp_free().map_err(capacity_err)?;
        let version = manifest.image_version.clone();
        let content = if prepared_from(&meta, target, &manifest) {
            SlotContent::Prepared(Some(manifest))
        } else {
            SlotContent::ToWrite(manifest)
        };
        let verified = Verified {
            booted,
            target,
            version,
            content,
            capacity,
            esp_free,
        };
        let rootfs = verified.size_of(PayloadKind::Rootfs);
        if rootfs > capacity {
            return Err(Refusal::TooLargeForSlot {
                kind: PayloadKind::Rootfs,
                slot: target,
                size: rootfs,
                capacity,
            }
            .into());
        }
        let needed =
            verified.size_of(PayloadKind::Kernel) + verified.size_of(PayloadKind::Initramfs);
        if needed > esp_free && matches!(verified.content, SlotContent::ToWrite(_)) {
            return Err(Refusal::EspTooSmall {
                slot: target,
                needed,
                free: esp_free,
            }
            .into());
        }
        self.host
            .verify_disk(target, rootfs)
            .map_err(|source| Refusal::Disk {
                slot: target,
                source,
            })?;

        self.read_through(&mut bundle)?;
        bundle.finish().map_err(Refusal::Bundle)?;
        Ok(verified)
    }

    /// The running slot, the one to install into, and META without a try
    /// in flight: where every upgrade's checks start.
    fn booted_target_meta(&mut self, running: &Running) -> Result<(Slot, Slot, MetaRecord), Stop> {
        let booted = running.slot.ok_or(Refusal::NotBootedFromSlot)?;
        let target = booted.other();
        self.journal.to_slot = Some(target);
        let meta = self.host.read_meta().map_err(PhaseError::ReadMeta)?;
        check_no_pending_try(&meta)?;
        Ok((booted, target, meta))
    }

    /// Phase 1 of [`crate::RunMode::ApplyPrepared`]: the slot a prepare
    /// run wrote, from META alone (its bundle was verified then, and every
    /// payload read back).
    pub(crate) fn verify_prepared(
        &mut self,
        running: &Running,
        options: &UpgradeOptions,
    ) -> Result<Verified, Stop> {
        let (booted, target, meta) = self.booted_target_meta(running)?;
        let info = meta.slot_info(target);
        if info.state() != SlotState::Prepared {
            return Err(Refusal::NothingPrepared {
                slot: target,
                state: info.state(),
            }
            .into());
        }
        self.journal.to_version = Some(info.version.clone());
        check_version(&running.version, &info.version, options.versions)?;
        let capacity_err = |source| PhaseError::Capacity {
            slot: target,
            source,
        };
        let capacity = self.host.slot_capacity(target).map_err(capacity_err)?;
        let esp_free = self.host.esp_free().map_err(capacity_err)?;
        self.host
            .verify_disk(target, 0)
            .map_err(|source| Refusal::Disk {
                slot: target,
                source,
            })?;
        Ok(Verified {
            booted,
            target,
            version: info.version,
            content: SlotContent::Prepared(None),
            capacity,
            esp_free,
        })
    }

    /// Reads every payload to its end, discarding it, so the reader checks
    /// each digest; reports the bytes as they go.
    fn read_through<R: Read>(&mut self, bundle: &mut BundleReader<R>) -> Result<(), Stop> {
        let total = bundle.manifest().payloads.iter().map(|p| p.size).sum();
        self.bytes_total(total);
        let mut buf = vec![0u8; CHUNK];
        let mut done = 0u64;
        while let Some(mut payload) = bundle.next_payload().map_err(Refusal::Bundle)? {
            let info = payload.info().clone();
            loop {
                let n = match payload.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(Refusal::Bundle(bundle_error(e)).into()),
                };
                done += n as u64;
                self.bytes_done(info.kind, done);
            }
            self.note(Note::Payload {
                kind: info.kind,
                size: info.size,
            });
        }
        Ok(())
    }

    /// The verify phase of a dry run also lists what phase 6 would meet.
    pub(crate) fn survey_mounts(
        &mut self,
    ) -> Result<Vec<(std::path::PathBuf, Vec<crate::host::Holder>)>, PhaseError> {
        let mounts = self
            .host
            .writable_mounts()
            .map_err(PhaseError::ListMounts)?;
        let mut out = Vec::with_capacity(mounts.len());
        for mount in mounts {
            let holders = self
                .host
                .holders(&mount)
                .map_err(|source| PhaseError::Holders {
                    mount: mount.clone(),
                    source,
                })?;
            out.push((mount, holders));
        }
        Ok(out)
    }
}

/// The bundle error inside a payload read error (the reader wraps one in
/// every error it returns).
pub(crate) fn bundle_error(e: std::io::Error) -> bascule_bundle::BundleError {
    let kind = e.kind();
    match e
        .into_inner()
        .map(|inner| inner.downcast::<bascule_bundle::BundleError>())
    {
        Some(Ok(b)) => *b,
        Some(Err(other)) => bascule_bundle::BundleError::Read {
            part: bascule_bundle::Part::End,
            source: std::io::Error::new(kind, other),
        },
        None => bascule_bundle::BundleError::Read {
            part: bascule_bundle::Part::End,
            source: kind.into(),
        },
    }
}
