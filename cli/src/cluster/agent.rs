//! `bascule cluster agent`: the node's side of the cluster's upgrade lease
//! after a reboot. PID 1 took the lease and kept it alive up to the
//! reboot, leaving its id on STATE; here the booted slot keeps it alive
//! until it knows how the upgrade ended: confirmed on the new version (and,
//! on a control-plane node, listed healthy by etcd again) releases it; a
//! boot back on the old version records the failure under the node's key
//! first. A node that has been a healthy member is marked so on STATE
//! (after a wipe it joins again instead of bootstrapping).

use std::path::Path;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_cluster::config::{MachineConfig, Role};
use bascule_cluster::desired;
use bascule_cluster::gateway::EndpointHealth;
use bascule_cluster::lock::{self, Release};
use bascule_cluster::record::{self, LeaseRecord};
use bascule_cluster::Etcd;

use crate::commands::Ctx;
use crate::exit::Failure;

/// Between two looks at the machine or at etcd.
const POLL: Duration = Duration::from_secs(1);

/// How an upgrade that rebooted ended, seen from the booted slot.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The booted slot is still being tried.
    Pending,
    /// Running the target version, confirmed.
    Upgraded,
    /// Running another version: the try failed, or the run stopped.
    Failed(String),
}

/// Decides from the running version and the boot status.
pub(crate) fn verdict(rec: &LeaseRecord, version: &str, boot: &pb::BootStatus) -> Verdict {
    let trying = boot.pending_try != pb::Slot::Unspecified as i32;
    let booted_good = boot
        .slots
        .iter()
        .find(|s| s.slot == boot.booted)
        .is_some_and(|s| s.state == pb::SlotState::Good as i32);
    if trying {
        return Verdict::Pending;
    }
    if version == rec.target {
        return if booted_good {
            Verdict::Upgraded
        } else {
            Verdict::Pending
        };
    }
    let why = boot
        .last_failure
        .as_ref()
        .filter(|f| f.version == rec.target)
        .map(|f| f.reason.clone())
        .unwrap_or_else(|| "the upgrade stopped before its new slot booted".into());
    Verdict::Failed(format!(
        "{} → {}: {why}; running {version}",
        rec.from, rec.target
    ))
}

pub fn run(ctx: &Ctx, config: &Path) -> Result<(), Failure> {
    let cfg = MachineConfig::load(config).map_err(|e| Failure::failed(e.to_string()))?;
    let etcd = Etcd::new(cfg.etcd.endpoints.clone(), Duration::from_secs(5));
    let dir = Path::new(record::DIR);
    let this_boot = record::this_boot();
    loop {
        match LeaseRecord::load(dir) {
            // A record of this boot is an upgrade under way: its lease is
            // PID 1's (or was handed to it) until the reboot.
            Ok(Some(rec)) if rec.from_earlier_boot(&this_boot) => {
                follow(ctx, &cfg, &etcd, dir, &rec)
            }
            Ok(_) => {}
            Err(e) => eprintln!("agent: {e}"),
        }
        if cfg.role == Role::ControlPlane && !record::was_member(dir) && member_healthy(&cfg, &etcd)
        {
            match record::mark_member(dir, &cfg.name) {
                Ok(()) => eprintln!("agent: {} is a healthy member of the cluster", cfg.name),
                Err(e) => eprintln!("agent: {e}"),
            }
        }
        if let Some((running, slot)) = super::rollout::running(ctx) {
            super::rollout::step(ctx, &cfg, &etcd, &running, slot);
        }
        // A change of the desired version wakes it at once; anything else
        // (a pause, another node's progress) within a few seconds.
        if etcd
            .watch(desired::DESIRED_KEY, 0, Instant::now() + POLL * 5)
            .is_err()
        {
            std::thread::sleep(POLL * 5);
        }
    }
}

/// Keeps the recorded lease alive until the upgrade's end is known, then
/// releases it.
fn follow(ctx: &Ctx, cfg: &MachineConfig, etcd: &Etcd, dir: &Path, rec: &LeaseRecord) {
    eprintln!(
        "agent: holding upgrade lease {} ({} → {}) until this boot is confirmed",
        rec.lease, rec.from, rec.target
    );
    let keeper = match lock::resume(etcd, rec.lease) {
        Ok(k) => Some(k),
        Err(e) => {
            eprintln!("agent: {e}");
            None
        }
    };
    let outcome = loop {
        if let Some(lost) = keeper.as_ref().and_then(|k| k.lost()) {
            eprintln!("agent: {lost}");
            break None;
        }
        match look(ctx) {
            Ok((version, boot)) => match verdict(rec, &version, &boot) {
                Verdict::Pending => {}
                Verdict::Upgraded
                    if cfg.role == Role::ControlPlane && !member_healthy(cfg, etcd) => {}
                v => break Some(v),
            },
            Err(e) => eprintln!("agent: {}", e.message.unwrap_or_default()),
        }
        std::thread::sleep(POLL);
    };
    if let Some(k) = keeper {
        let _ = k.stop();
    }
    let release = match outcome {
        None => None,
        Some(Verdict::Failed(reason)) => Some(Release::Failed {
            version: rec.target.clone(),
            reason,
        }),
        Some(_) => Some(Release::Upgraded {
            version: rec.target.clone(),
        }),
    };
    // A failure stops a roll-out of this version where it is.
    if matches!(release, Some(Release::Failed { .. }))
        && desired::get_desired(etcd)
            .ok()
            .flatten()
            .is_some_and(|d| d.version == rec.target)
    {
        if let Err(e) = desired::pause_rollout(etcd, &cfg.name) {
            eprintln!("agent: pausing the roll-out: {e}");
        }
    }
    if let Some(release) = release {
        match lock::release(etcd, &cfg.name, rec.lease, &release) {
            Ok(()) => eprintln!("agent: upgrade lease {} released ({release})", rec.lease),
            Err(e) => eprintln!(
                "agent: releasing upgrade lease {}: {e}; it expires after its TTL",
                rec.lease
            ),
        }
    }
    if cfg.role == Role::ControlPlane && member_healthy(cfg, etcd) {
        let _ = record::mark_member(dir, &cfg.name);
    }
    if let Err(e) = LeaseRecord::remove(dir) {
        eprintln!("agent: {e}");
    }
}

/// The running image version and the boot status, from PID 1.
fn look(ctx: &Ctx) -> Result<(String, pb::BootStatus), Failure> {
    let version = match ctx.call("version", Call::Version(pb::VersionRequest {}))? {
        Reply::Version(v) => v.image_version,
        other => return Err(Failure::failed(format!("unexpected reply {other:?}"))),
    };
    match ctx.call("boot status", Call::BootStatus(pb::BootStatusRequest {}))? {
        Reply::BootStatus(b) => Ok((version, b)),
        other => Err(Failure::failed(format!("unexpected reply {other:?}"))),
    }
}

/// Whether etcd lists this node as a started member and its own endpoint
/// answers healthy.
fn member_healthy(cfg: &MachineConfig, etcd: &Etcd) -> bool {
    let listed = etcd
        .member_list_current()
        .map(|ms| {
            ms.iter()
                .any(|m| m.name == cfg.name && !m.client_urls.is_empty())
        })
        .unwrap_or(false);
    listed
        && matches!(
            etcd.at(&cfg.client_url()).health(),
            Ok(EndpointHealth::Healthy)
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use bascule_cluster::LeaseId;

    fn rec() -> LeaseRecord {
        LeaseRecord {
            lease: LeaseId(1),
            holder: "cp1".into(),
            target: "2.0.0".into(),
            from: "1.0.0".into(),
            ttl_s: 60,
            boot_id: String::new(),
        }
    }

    fn boot(booted: pb::Slot, state: pb::SlotState, trying: bool) -> pb::BootStatus {
        pb::BootStatus {
            booted: booted as i32,
            pending_try: if trying { booted as i32 } else { 0 },
            slots: vec![pb::SlotStatus {
                slot: booted as i32,
                version: String::new(),
                state: state as i32,
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_verdict_waits_for_the_confirmation_and_names_a_failure() {
        let r = rec();
        assert_eq!(
            verdict(&r, "2.0.0", &boot(pb::Slot::B, pb::SlotState::Trying, true)),
            Verdict::Pending
        );
        assert_eq!(
            verdict(&r, "2.0.0", &boot(pb::Slot::B, pb::SlotState::Good, false)),
            Verdict::Upgraded
        );
        let mut back = boot(pb::Slot::A, pb::SlotState::Good, false);
        back.last_failure = Some(pb::SlotFailure {
            slot: pb::Slot::B as i32,
            version: "2.0.0".into(),
            reason: "self-check: gate not ready".into(),
            at_unix_secs: 1,
        });
        match verdict(&r, "1.0.0", &back) {
            Verdict::Failed(why) => assert!(why.contains("gate not ready"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
