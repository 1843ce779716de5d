//! The upgrade: the ten phases in order, and what each failure means for
//! the machine.

use crate::clock::Clock;
use crate::host::Host;
use crate::journal::{Journal, Phase, RecordedOptions, RunKind, SkipReason};
use crate::machine::RebootMode;
use crate::options::{AfterInstall, DataPolicy, RunMode, UpgradeOptions};
use crate::outcome::{DryRunReport, Finished, Outcome, PhaseError, PlannedStep, Recovery};
use crate::progress::Progress;
use crate::run::{Run, Stop};
use crate::verify::{SlotContent, Verified};

/// What the host must do if `phase` fails.
fn recovery_after(phase: Phase, stop: &Stop, options: &UpgradeOptions) -> Recovery {
    let disruptive = options.run != RunMode::Prepare && options.after != AfterInstall::Stage;
    match phase {
        Phase::Verify => Recovery::NothingChanged,
        _ if !disruptive => Recovery::KeepRunning,
        // Services were only cordoned or drained: the disk is untouched
        // and the supervisor can start them again (Talos #13802: a failed
        // drain must not leave the node cordoned).
        Phase::Cordon | Phase::Drain | Phase::LeaveCluster => Recovery::Resume,
        Phase::Reboot if matches!(stop, Stop::Failed(PhaseError::Reboot { .. })) => {
            Recovery::RebootPending
        }
        _ => Recovery::RebootCurrentSlot,
    }
}

/// Runs an upgrade to its end. Blocks for as long as the phases take;
/// every event goes to `progress`, and the journal is handed to
/// [`Host::save_journal`] at each phase's start and end (not in a dry
/// run). The returned journal is the last one saved.
pub fn upgrade<H: Host + ?Sized, C: Clock + ?Sized>(
    host: &mut H,
    clock: &C,
    progress: &mut dyn Progress,
    options: &UpgradeOptions,
) -> Finished {
    let running = host.running();
    let mut journal = Journal::new(
        RunKind::Upgrade,
        clock.unix_ms(),
        running.slot,
        &running.version,
    );
    journal.options = Some(RecordedOptions {
        data: options.data,
        after: options.after,
        versions: options.versions,
        reboot: options.reboot,
        run: options.run,
    });
    let mut run = Run::new(host, clock, progress, journal, options.run);

    macro_rules! phase {
        ($phase:expr, $body:expr) => {
            match run.phase($phase, $body) {
                Ok(v) => v,
                Err(stop) => {
                    let recovery = recovery_after($phase, &stop, options);
                    // After a reboot the booted slot releases the lease.
                    if matches!(recovery, Recovery::Resume | Recovery::KeepRunning) {
                        run.release_lease(&format!("{}: {}", $phase.name(), stop));
                    }
                    return run.stopped($phase, stop, recovery);
                }
            }
        };
    }

    let (verified, mounts) = phase!(Phase::Verify, |r| {
        let v = match options.run {
            RunMode::ApplyPrepared => r.verify_prepared(&running, options)?,
            _ => r.verify(&running, options)?,
        };
        let mounts = match options.run {
            RunMode::DryRun => r.survey_mounts()?,
            _ => Vec::new(),
        };
        if matches!(v.content, SlotContent::Prepared(_))
            && options.reboot == RebootMode::Kexec
            && options.after == AfterInstall::Reboot
            && options.run != RunMode::DryRun
        {
            r.preload_kexec(&v);
        }
        // Last, so that a node waiting for the lease has checked its bundle
        // already and a refusal before it costs the cluster nothing.
        if matches!(options.run, RunMode::Apply | RunMode::ApplyPrepared)
            && options.after == AfterInstall::Reboot
        {
            r.cluster_lock(&v.version, options)?;
        }
        Ok((v, mounts))
    });
    match options.run {
        RunMode::DryRun => {
            let report = dry_run_report(&run, verified, mounts, &running.version, options);
            return run.finish(Outcome::DryRun(report));
        }
        RunMode::Prepare => {
            // Every service keeps running: only the inactive slot and its
            // ESP files are written. /var is left for the apply to wipe.
            phase!(Phase::VerifyDisk, |r| r.verify_disk(&verified));
            phase!(Phase::Install, |r| {
                r.install(&verified, DataPolicy::Preserve)?;
                r.mark_prepared(&verified, None)
            });
            return run.finish(Outcome::Prepared);
        }
        // Staged: prepared now, applied by the next boot before its
        // services start and before /var is mounted.
        RunMode::Apply if options.after == AfterInstall::Stage => {
            phase!(Phase::VerifyDisk, |r| r.verify_disk(&verified));
            phase!(Phase::Install, |r| {
                r.install(&verified, DataPolicy::Preserve)?;
                r.mark_prepared(&verified, Some(options))
            });
            return run.finish(Outcome::Staged);
        }
        RunMode::Apply | RunMode::ApplyPrepared => {}
    }

    phase!(Phase::Cordon, |r| r.cordon());
    phase!(Phase::Drain, |r| r.drain());
    phase!(Phase::LeaveCluster, |r| r.leave_cluster(options.data));
    phase!(Phase::StopServices, |r| r.stop_services());
    phase!(Phase::Unmount, |r| r.unmount_all(&options.timeouts));
    phase!(Phase::VerifyDisk, |r| r.verify_disk(&verified));
    phase!(Phase::Install, |r| r.install(&verified, options.data));
    phase!(Phase::BootOnce, |r| r.boot_once(&verified, options.reboot));
    let mode = phase!(Phase::Reboot, |r| r.reboot(&verified, options.reboot));
    run.finish(Outcome::Rebooting(mode))
}

fn dry_run_report<H: Host + ?Sized, C: Clock + ?Sized>(
    run: &Run<'_, H, C>,
    v: Verified,
    mounts: Vec<(std::path::PathBuf, Vec<crate::host::Holder>)>,
    running_version: &str,
    options: &UpgradeOptions,
) -> DryRunReport {
    let leave = match (run.host.node_role(), options.data) {
        (crate::host::NodeRole::Worker, _) => PlannedStep::Skip(SkipReason::WorkerNode),
        (_, DataPolicy::Preserve) => PlannedStep::Skip(SkipReason::PreservingData),
        (_, DataPolicy::Wipe) => PlannedStep::Run,
    };
    let reboot = match options.after {
        AfterInstall::Stage => PlannedStep::Skip(SkipReason::Staged),
        AfterInstall::Reboot => PlannedStep::Reboot(options.reboot),
    };
    let phases = Phase::UPGRADE
        .into_iter()
        .map(|p| {
            let step = match p {
                Phase::LeaveCluster => leave,
                Phase::Reboot => reboot,
                _ => PlannedStep::Run,
            };
            (p, step)
        })
        .collect();
    DryRunReport {
        from_slot: v.booted,
        from_version: running_version.to_string(),
        target: v.target,
        image_version: v.version.clone(),
        payloads: v
            .manifest()
            .into_iter()
            .flat_map(|m| &m.payloads)
            .map(|p| (p.kind, p.size))
            .collect(),
        slot_capacity: v.capacity,
        esp_free: v.esp_free,
        phases,
        mounts,
        data: options.data,
    }
}
