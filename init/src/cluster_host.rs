//! The cluster steps of an upgrade on this machine (run on the sequencer's
//! thread, never PID 1's loop): the upgrade lease and etcd's quorum check
//! before the first disruptive phase, leaving etcd's membership before the
//! data is wiped, and giving the lease back when the run stops without a
//! reboot. After a reboot `bascule cluster agent` releases the lease,
//! reading what is recorded here on STATE.

use std::path::Path;
use std::time::{Duration, Instant};

use bascule_cluster::config::{MachineConfig, Role};
use bascule_cluster::lock::{self, LeaseKeeper, Release, UpgradeLock};
use bascule_cluster::quorum::{self, Departure};
use bascule_cluster::record::{self, LeaseRecord};
use bascule_cluster::{Etcd, LeaseId};
use bascule_sequencer::host::{ClusterLock, HostError, LeaseHolder};
use bascule_sequencer::{DataPolicy, QuorumPolicy};

use crate::log;

/// How long a node waits for another node's upgrade to end.
const LOCK_PATIENCE: Duration = Duration::from_secs(3600);
/// Each member must answer a linearizable read within this.
const READ_DEADLINE: Duration = Duration::from_secs(2);
/// How long etcd may refuse to remove this node's member.
const REMOVE_PATIENCE: Duration = Duration::from_secs(60);
/// One etcd request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The lease this machine holds during an upgrade.
#[derive(Default)]
pub struct ClusterSide {
    held: Option<Held>,
}

enum Held {
    /// Taken by this run (a control-plane node).
    Lock(UpgradeLock),
    /// Taken by the roll-out agent for this worker and left on STATE:
    /// renewed here until the reboot.
    Kept(LeaseKeeper, LeaseId),
}

fn err(context: &str, e: impl std::fmt::Display) -> HostError {
    HostError::new(context, e.to_string())
}

fn etcd(cfg: &MachineConfig) -> Etcd {
    Etcd::new(cfg.etcd.endpoints.clone(), REQUEST_TIMEOUT)
}

impl ClusterSide {
    /// Takes the lease and checks the quorum (see `Host::cluster_lock`).
    pub fn lock(
        &mut self,
        cfg: Option<&MachineConfig>,
        from: &str,
        target: &str,
        data: DataPolicy,
        policy: QuorumPolicy,
        waiting: &mut dyn FnMut(&LeaseHolder),
    ) -> Result<ClusterLock, HostError> {
        let Some(cfg) = cfg else {
            return Ok(ClusterLock::NotClustered);
        };
        let etcd = etcd(cfg);
        if cfg.role == Role::Worker {
            return Ok(self.keep_agents_lease(cfg, &etcd, target));
        }
        let deadline = Instant::now() + LOCK_PATIENCE;
        let held =
            UpgradeLock::acquire(&etcd, &cfg.name, target, lock::DEFAULT_TTL, deadline, |h| {
                log!("upgrade: waiting for the upgrade lease: {h}");
                waiting(&LeaseHolder {
                    node: h.holder.clone(),
                    target: h.target.clone(),
                })
            })
            .map_err(|e| err(&format!("taking {}", lock::LOCK_KEY), e))?;
        let departure = match data {
            DataPolicy::Preserve => Departure::Preserve,
            DataPolicy::Wipe => Departure::Leave,
        };
        let checked = quorum::gather(&etcd, READ_DEADLINE)
            .map_err(|e| err("asking etcd for its members", e))
            .and_then(|members| {
                quorum::check(
                    &members,
                    &cfg.name,
                    departure,
                    policy == QuorumPolicy::Force,
                )
                .map_err(|refusal| err("etcd's quorum", refusal))
            });
        let record = LeaseRecord {
            lease: held.lease(),
            holder: cfg.name.clone(),
            target: target.to_owned(),
            from: from.to_owned(),
            ttl_s: lock::DEFAULT_TTL.as_secs(),
            boot_id: record::this_boot(),
        };
        let recorded = checked.and_then(|()| {
            record
                .save(Path::new(record::DIR))
                .map_err(|e| err("recording the upgrade lease on STATE", e))
        });
        if let Err(e) = recorded {
            // A refusal: nobody else must wait for this node.
            if let Err(r) = held.release(
                &cfg.name,
                &Release::Failed {
                    version: target.to_owned(),
                    reason: e.to_string(),
                },
            ) {
                log!("upgrade: releasing the upgrade lease: {r}");
            }
            return Err(e);
        }
        let lease = held.lease().to_string();
        self.held = Some(Held::Lock(held));
        Ok(ClusterLock::Held { lease })
    }

    /// A worker takes no lease of its own; one its agent took for a
    /// roll-out to `target` is renewed until the reboot.
    fn keep_agents_lease(&mut self, cfg: &MachineConfig, etcd: &Etcd, target: &str) -> ClusterLock {
        let rec = match LeaseRecord::load(Path::new(record::DIR)) {
            Ok(Some(r)) if r.holder == cfg.name && r.target == target => r,
            _ => return ClusterLock::NotClustered,
        };
        match lock::resume(etcd, rec.lease) {
            Ok(keeper) => {
                self.held = Some(Held::Kept(keeper, rec.lease));
                ClusterLock::Held {
                    lease: rec.lease.to_string(),
                }
            }
            Err(e) => {
                log!("upgrade: the roll-out's lease {}: {e}", rec.lease);
                ClusterLock::NotClustered
            }
        }
    }

    /// Renews the lease once more just before the reboot: the next boot's
    /// agent then has the lease's whole TTL to take it over, not what was
    /// left since the keeper's last round.
    pub fn renew_before_reboot(&self, cfg: Option<&MachineConfig>) {
        let (Some(held), Some(cfg)) = (&self.held, cfg) else {
            return;
        };
        let lease = match held {
            Held::Lock(l) => l.lease(),
            Held::Kept(_, lease) => *lease,
        };
        if let Err(e) = etcd(cfg).lease_keepalive(lease) {
            log!("upgrade: renewing upgrade lease {lease} before the reboot: {e}");
        }
    }

    /// Gives the lease back after a run that stopped before its reboot.
    pub fn release(&mut self, cfg: Option<&MachineConfig>, target: &str, failure: &str) {
        let (Some(held), Some(cfg)) = (self.held.take(), cfg) else {
            return;
        };
        let outcome = Release::Failed {
            version: target.to_owned(),
            reason: failure.to_owned(),
        };
        let released = match held {
            Held::Lock(l) => l.release(&cfg.name, &outcome),
            Held::Kept(keeper, lease) => {
                let _ = keeper.stop();
                lock::release(&etcd(cfg), &cfg.name, lease, &outcome)
            }
        };
        if let Err(e) = released {
            log!("upgrade: releasing the upgrade lease: {e}; it expires after its TTL");
        }
        if let Err(e) = LeaseRecord::remove(Path::new(record::DIR)) {
            log!("upgrade: {e}");
        }
    }

    /// Removes this node from etcd's membership through the other members.
    pub fn leave(cfg: Option<&MachineConfig>) -> Result<(), HostError> {
        let Some(cfg) = cfg else {
            return Ok(());
        };
        let etcd = Etcd::new(cfg.other_endpoints(), REQUEST_TIMEOUT);
        let members = etcd
            .member_list_current()
            .map_err(|e| err("asking etcd for its members", e))?;
        let Some(me) = members.iter().find(|m| m.name == cfg.name) else {
            log!(
                "upgrade: {} is not an etcd member: nothing to leave",
                cfg.name
            );
            return Ok(());
        };
        // After the wipe and the reboot `bascule cluster etcd` joins again
        // only if this mark says the node was a member; the agent may not
        // have written it yet.
        record::mark_member(Path::new(record::DIR), &cfg.name)
            .map_err(|e| err("recording the etcd membership on STATE", e))?;
        // etcd refuses a removal ("unhealthy cluster") until its leader has
        // been connected to a quorum for 5 s, e.g. right after the previous
        // node came back: retry within a bound.
        let start = Instant::now();
        loop {
            match etcd.member_remove(me.id) {
                Ok(_) => break,
                Err(e) if start.elapsed() < REMOVE_PATIENCE => {
                    log!(
                        "upgrade: removing etcd member {}: {}; trying again",
                        cfg.name,
                        e.cause()
                    );
                    std::thread::sleep(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(err(
                        &format!("removing etcd member {} ({})", cfg.name, me.id),
                        e,
                    ))
                }
            }
        }
        log!(
            "upgrade: left etcd: member {} ({}) removed",
            cfg.name,
            me.id
        );
        Ok(())
    }
}
