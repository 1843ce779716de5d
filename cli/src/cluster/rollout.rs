//! Roll-outs driven by the desired version in etcd (`/bascule/desired`):
//! each node's agent publishes its status, and when the desired version
//! differs from what it runs and its turn has come (control-plane nodes
//! first, then workers; none while the roll-out is paused by a failure),
//! it takes the cluster's upgrade lease and asks its own PID 1 to upgrade
//! from the URL (the bundle's signature is checked against the machine's
//! own trusted keys as for any upgrade). The lease is then PID 1's, and
//! after the reboot the agent releases it (see `agent.rs`).

use std::path::Path;
use std::time::{Duration, Instant};

use bascule_api::pb::{self, request::Call, response::Result as Reply};
use bascule_cluster::config::{MachineConfig, Role};
use bascule_cluster::desired::{self, Desired, LastFailure, NodeState, NodeStatus};
use bascule_cluster::lock::{self, Release, UpgradeLock};
use bascule_cluster::record::{self, LeaseRecord};
use bascule_cluster::Etcd;

use crate::args::{RebootModeArg, UpgradeArgs, WaitArgs};
use crate::commands::Ctx;
use crate::exit;
use crate::progress::Mode;

/// How long a node waits for the lease before looking again.
const LOCK_PATIENCE: Duration = Duration::from_secs(3600);

/// Why a node has nothing to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Idle {
    NoDesiredVersion,
    /// It runs the desired version.
    Current,
    /// The desired version failed here: only a new one is tried.
    FailedHere,
}

/// What this node does about the desired version now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// Nothing to do.
    Idle(Idle, String),
    /// Its turn has not come (says for what it waits).
    Wait(String),
    /// Upgrade now.
    Go,
}

/// Decides this node's turn from what etcd says.
/// `own_failure` is this node's last failure (its `last-failure` key).
pub(crate) fn decide(
    role: Role,
    running: &str,
    desired: Option<&Desired>,
    own_failure: Option<&LastFailure>,
    paused_at: Option<&str>,
    nodes: &[(String, NodeStatus)],
) -> Turn {
    let Some(d) = desired else {
        return Turn::Idle(Idle::NoDesiredVersion, "no desired version".into());
    };
    if d.version == running {
        return Turn::Idle(Idle::Current, format!("runs the desired version {running}"));
    }
    if own_failure.is_some_and(|f| f.version == d.version) {
        return Turn::Idle(
            Idle::FailedHere,
            format!(
                "the upgrade to {} failed here: a new desired version is needed",
                d.version
            ),
        );
    }
    if let Some(node) = paused_at {
        return Turn::Wait(format!(
            "the roll-out is stopped at {node}'s failure: `bascule cluster resume` or a new desired version"
        ));
    }
    if role == Role::Worker {
        let behind: Vec<&str> = nodes
            .iter()
            .filter(|(_, s)| s.role == Role::ControlPlane && s.version != d.version)
            .map(|(n, _)| n.as_str())
            .collect();
        if !behind.is_empty() {
            return Turn::Wait(format!(
                "control-plane nodes first: {} not on {} yet",
                behind.join(", "),
                d.version
            ));
        }
    }
    Turn::Go
}

/// One look at etcd: publishes this node's status and, if its turn has
/// come, upgrades it (the machine reboots; the agent is stopped).
pub(crate) fn step(ctx: &Ctx, cfg: &MachineConfig, etcd: &Etcd, running: &str, slot: i32) {
    let get = || -> Result<_, desired::DesiredError> {
        Ok((
            desired::get_desired(etcd)?,
            desired::rollout_paused(etcd)?,
            desired::list_node_status(etcd)?,
            desired::get_last_failure(etcd, &cfg.name)?,
        ))
    };
    let (d, paused, nodes, failure) = match get() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("agent: reading the roll-out state: {e}");
            return;
        }
    };
    let mine = nodes.iter().find(|(n, _)| *n == cfg.name).map(|(_, s)| s);
    let turn = decide(
        cfg.role,
        running,
        d.as_ref(),
        failure.as_ref(),
        paused.as_deref(),
        &nodes,
    );
    let (state, progress) = match &turn {
        Turn::Idle(idle, why) => (
            match (idle, mine.map(|s| s.state)) {
                (Idle::FailedHere, _) => NodeState::Failed,
                (Idle::Current, Some(NodeState::Upgrading | NodeState::Confirmed)) => {
                    NodeState::Confirmed
                }
                _ => NodeState::Idle,
            },
            why.clone(),
        ),
        Turn::Wait(why) => (NodeState::Waiting, why.clone()),
        Turn::Go => (NodeState::Waiting, "taking the upgrade lease".into()),
    };
    let here = Here {
        cfg,
        etcd,
        running,
        slot,
    };
    publish(&here, state, &progress, failure.as_ref(), mine);
    if let (Turn::Go, Some(d)) = (turn, d) {
        roll(ctx, &here, &d, failure.as_ref());
    }
}

/// This node, as the roll-out sees it.
#[derive(Clone, Copy)]
struct Here<'a> {
    cfg: &'a MachineConfig,
    etcd: &'a Etcd,
    /// The running version and the booted slot.
    running: &'a str,
    slot: i32,
}

fn publish(
    here: &Here,
    state: NodeState,
    progress: &str,
    last_failure: Option<&LastFailure>,
    before: Option<&NodeStatus>,
) {
    let Here {
        cfg,
        etcd,
        running,
        slot,
    } = *here;
    let status = NodeStatus {
        role: cfg.role,
        version: running.to_owned(),
        slot: if slot == pb::Slot::B as i32 {
            desired::Slot::B
        } else {
            desired::Slot::A
        },
        state,
        progress: progress.to_owned(),
        last_failure: last_failure.cloned(),
        updated_unix: desired::unix_now(),
    };
    let unchanged = before.is_some_and(|b| {
        b.state == status.state
            && b.version == status.version
            && b.progress == status.progress
            && b.last_failure == status.last_failure
    });
    if !unchanged {
        if let Err(e) = desired::put_node_status(etcd, &cfg.name, &status) {
            eprintln!("agent: publishing this node's status: {e}");
        }
    }
}

/// Takes the lease, hands it to PID 1 through the record on STATE, and
/// asks for the upgrade.
/// `failure` is this node's last failure (of another version: see
/// [`decide`]), kept in its status.
fn roll(ctx: &Ctx, here: &Here, d: &Desired, failure: Option<&LastFailure>) {
    let (cfg, etcd, running) = (here.cfg, here.etcd, here.running);
    let held = UpgradeLock::acquire(
        etcd,
        &cfg.name,
        &d.version,
        lock::DEFAULT_TTL,
        Instant::now() + LOCK_PATIENCE,
        |h| {
            let why = format!("waiting for the upgrade lease: {h}");
            publish(here, NodeState::Waiting, &why, failure, None);
        },
    );
    let held = match held {
        Ok(l) => l,
        Err(e) => {
            eprintln!("agent: taking the upgrade lease: {e}");
            return;
        }
    };
    // The roll-out may have moved on while this node waited.
    let still = desired::get_desired(etcd).ok().flatten().as_ref() == Some(d)
        && desired::rollout_paused(etcd).ok().flatten().is_none();
    let rec = LeaseRecord {
        lease: held.lease(),
        holder: cfg.name.clone(),
        target: d.version.clone(),
        from: running.to_owned(),
        ttl_s: lock::DEFAULT_TTL.as_secs(),
        boot_id: record::this_boot(),
    };
    let saved = rec.save(Path::new(record::DIR));
    if !still || saved.is_err() {
        if let Err(e) = &saved {
            eprintln!("agent: {e}");
        }
        let _ = held.release(
            &cfg.name,
            &Release::Upgraded {
                version: running.to_owned(),
            },
        );
        let _ = LeaseRecord::remove(Path::new(record::DIR));
        return;
    }
    // PID 1 renews it from now on (it adopts the lease named on STATE).
    let lease = held.lease();
    let _ = held.detach();
    publish(
        here,
        NodeState::Upgrading,
        &format!("upgrading to {}", d.version),
        failure,
        None,
    );
    eprintln!("agent: upgrading to {} from {}", d.version, d.url);
    let args = UpgradeArgs {
        command: None,
        image: Some(d.url.clone()),
        preserve: true,
        stage: false,
        force: false,
        reboot_mode: RebootModeArg::Kexec,
        dry_run: false,
        prepare: false,
        apply: false,
        wait: WaitArgs {
            wait: false,
            wait_timeout: Duration::from_secs(600),
        },
    };
    let (code, why) = match crate::upgrade::upgrade(ctx, &args, Mode::Lines) {
        Ok(done) => (done.code, done.summary),
        Err(f) => (f.code, f.message.unwrap_or_default()),
    };
    if code == exit::SUCCESS {
        // Rebooting: the next boot's agent releases the lease.
        return;
    }
    eprintln!("agent: the upgrade to {} did not start: {why}", d.version);
    let release = Release::Failed {
        version: d.version.clone(),
        reason: why.clone(),
    };
    if let Err(e) = lock::release(etcd, &cfg.name, lease, &release) {
        eprintln!("agent: releasing the upgrade lease: {e}");
    }
    let _ = LeaseRecord::remove(Path::new(record::DIR));
    let _ = desired::pause_rollout(etcd, &cfg.name);
    // What the release just recorded under the node's last-failure key.
    let recorded = LastFailure {
        version: d.version.clone(),
        reason: why.clone(),
        unix: desired::unix_now(),
    };
    publish(here, NodeState::Failed, &why, Some(&recorded), None);
}

/// The running image version and booted slot, from PID 1.
pub(crate) fn running(ctx: &Ctx) -> Option<(String, i32)> {
    match ctx.call("version", Call::Version(pb::VersionRequest {})) {
        Ok(Reply::Version(v)) => Some((v.image_version, v.booted_slot)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(role: Role, version: &str) -> NodeStatus {
        NodeStatus {
            role,
            version: version.into(),
            slot: desired::Slot::A,
            state: NodeState::Idle,
            progress: String::new(),
            last_failure: None,
            updated_unix: 0,
        }
    }

    fn want(v: &str) -> Desired {
        Desired {
            version: v.into(),
            url: "http://h/b".into(),
            sha256: "00".into(),
        }
    }

    #[test]
    fn control_plane_first_then_workers_and_a_pause_stops_everyone() {
        let d = want("2.0.0");
        let nodes = vec![
            ("cp1".to_string(), st(Role::ControlPlane, "1.0.0")),
            ("w1".to_string(), st(Role::Worker, "1.0.0")),
        ];
        assert_eq!(
            decide(Role::ControlPlane, "1.0.0", Some(&d), None, None, &nodes),
            Turn::Go
        );
        assert!(matches!(
            decide(Role::Worker, "1.0.0", Some(&d), None, None, &nodes),
            Turn::Wait(w) if w.contains("cp1")
        ));
        let done = vec![
            ("cp1".to_string(), st(Role::ControlPlane, "2.0.0")),
            ("w1".to_string(), st(Role::Worker, "1.0.0")),
        ];
        assert_eq!(
            decide(Role::Worker, "1.0.0", Some(&d), None, None, &done),
            Turn::Go
        );
        assert!(matches!(
            decide(Role::Worker, "1.0.0", Some(&d), None, Some("cp1"), &done),
            Turn::Wait(w) if w.contains("cp1's failure")
        ));
        assert!(matches!(
            decide(Role::ControlPlane, "2.0.0", Some(&d), None, None, &done),
            Turn::Idle(Idle::Current, _)
        ));
        assert!(matches!(
            decide(Role::ControlPlane, "1.0.0", None, None, None, &done),
            Turn::Idle(Idle::NoDesiredVersion, _)
        ));
    }

    #[test]
    fn a_node_does_not_retry_the_version_that_failed_on_it() {
        let d = want("2.0.0");
        let failure = LastFailure {
            version: "2.0.0".into(),
            reason: "self-check".into(),
            unix: 1,
        };
        let nodes = vec![("cp1".to_string(), st(Role::ControlPlane, "1.0.0"))];
        // Even while the roll-out is paused at its own failure.
        assert!(matches!(
            decide(
                Role::ControlPlane,
                "1.0.0",
                Some(&d),
                Some(&failure),
                Some("cp1"),
                &nodes
            ),
            Turn::Idle(Idle::FailedHere, _)
        ));
        assert_eq!(
            decide(
                Role::ControlPlane,
                "1.0.0",
                Some(&want("2.0.1")),
                Some(&failure),
                None,
                &nodes
            ),
            Turn::Go
        );
    }
}
