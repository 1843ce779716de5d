//! The upgrade lock: one node at a time may take itself out of the cluster
//! for an upgrade.
//!
//! The lock is the key [`LOCK_KEY`] attached to a lease: created only if
//! absent (a transaction comparing its create revision with 0), renewed by
//! a keep-alive thread, and gone by itself if the holder dies and stops
//! renewing. Its value names the holder, so a waiting node can say for whom
//! it waits, and a node rebooted mid-upgrade finds its own lock and adopts
//! it. Across a reboot the lease id is carried on disk and the booted slot
//! resumes keeping it alive ([`resume`]), then releases it ([`release`]).

use std::fmt;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::desired::{self, LastFailure};
use crate::gateway::{self, CreateOutcome, Etcd, LeaseId};

pub const LOCK_KEY: &str = "/bascule/upgrade-lock";
/// Long enough to outlast a kexec reboot into the new slot, whose agent
/// then resumes the keep-alive; short enough that a dead holder frees the
/// lock soon.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Longest single wait for the lock to change before looking again (and
/// telling `on_wait` again), in case a watch hangs on a silent network.
const WAIT_ROUND: Duration = Duration::from_secs(30);
/// Between tries when watching fails.
const POLL: Duration = Duration::from_secs(1);

/// The lock's value: who holds it, for which version, on which lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub holder: String,
    pub target: String,
    pub lease: LeaseId,
    pub since_unix: u64,
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let held = desired::unix_now().saturating_sub(self.since_unix);
        write!(
            f,
            "{} (upgrading to {} for {held} s, lease {})",
            self.holder, self.target, self.lease
        )
    }
}

/// How an upgrade ended, for [`release`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Release {
    Upgraded {
        version: String,
    },
    /// Recorded under the node's `last-failure` key before the lock goes.
    Failed {
        version: String,
        reason: String,
    },
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Release::Upgraded { version } => write!(f, "upgraded to {version}"),
            Release::Failed { version, reason } => {
                write!(f, "upgrade to {version} failed: {reason}")
            }
        }
    }
}

/// Why a kept lease is no longer held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseLost {
    /// etcd says the lease expired or was revoked.
    Gone { lease: LeaseId },
    /// No keep-alive got through for a whole TTL: it has expired by now.
    Unrenewed { lease: LeaseId, last_error: String },
}

impl fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LeaseLost::Gone { lease } => write!(
                f,
                "upgrade lease {lease} expired or was revoked: another node may upgrade now"
            ),
            LeaseLost::Unrenewed { lease, last_error } => write!(
                f,
                "upgrade lease {lease} could not be renewed for a whole TTL ({last_error}): \
                 it has expired and another node may upgrade now"
            ),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(transparent)]
    Etcd(#[from] gateway::Error),
    #[error("{LOCK_KEY} is still held by {holder} after waiting {waited_s} s; wait for that upgrade to end, or if that node is gone for good free the lock with `etcdctl lease revoke {}`", holder.lease)]
    Timeout { holder: Holder, waited_s: u64 },
    #[error("{LOCK_KEY} holds {value:?}, not a lock record ({problem}); remove it with `etcdctl del {LOCK_KEY}`")]
    Garbled { value: String, problem: String },
    #[error("upgrade lease {lease} is gone (expired or revoked), so this node no longer holds {LOCK_KEY}; acquire it again if the upgrade must go on")]
    LeaseGone { lease: LeaseId },
    #[error(transparent)]
    Record(#[from] desired::DesiredError),
    #[error("{0}")]
    Lost(LeaseLost),
}

/// The held lock, renewed in the background until released or detached.
pub struct UpgradeLock {
    etcd: Etcd,
    holder: Holder,
    keeper: LeaseKeeper,
}

impl fmt::Debug for UpgradeLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpgradeLock")
            .field("holder", &self.holder)
            .finish()
    }
}

impl UpgradeLock {
    /// Takes the lock for `holder` (this node's name) upgrading to `target`
    /// on a lease of `ttl`. While another node holds it, calls `on_wait`
    /// with that holder (again after each wait round) and waits for the key
    /// to change; gives up with `LockError::Timeout` at `deadline`. A lock
    /// held under this node's own name (a run before a reboot) is adopted.
    pub fn acquire(
        etcd: &Etcd,
        holder: &str,
        target: &str,
        ttl: Duration,
        deadline: Instant,
        mut on_wait: impl FnMut(&Holder),
    ) -> Result<UpgradeLock, LockError> {
        let started = Instant::now();
        loop {
            let (lease, granted) = etcd.lease_grant(ttl)?;
            let record = Holder {
                holder: holder.to_string(),
                target: target.to_string(),
                lease,
                since_unix: desired::unix_now(),
            };
            let created = etcd.txn_create(LOCK_KEY, &to_json(&record), Some(lease));
            let (value, their_lease, mod_revision) = match created {
                Ok(CreateOutcome::Created) => {
                    return Ok(UpgradeLock::keep(etcd, record, granted));
                }
                Ok(CreateOutcome::Exists {
                    value,
                    lease: their_lease,
                    mod_revision,
                }) => {
                    revoke_quietly(etcd, lease);
                    (value, their_lease, mod_revision)
                }
                Err(error) => {
                    revoke_quietly(etcd, lease);
                    return Err(error.into());
                }
            };
            let current: Holder =
                serde_json::from_slice(&value).map_err(|e| LockError::Garbled {
                    value: String::from_utf8_lossy(&value).into_owned(),
                    problem: e.to_string(),
                })?;
            if current.holder == holder {
                if let Some(adopted) = adopt(etcd, current.clone(), their_lease, target)? {
                    return Ok(adopted);
                }
                continue;
            }
            on_wait(&current);
            let now = Instant::now();
            if now >= deadline {
                return Err(LockError::Timeout {
                    holder: current,
                    waited_s: (now - started).as_secs(),
                });
            }
            let round_end = deadline.min(now + WAIT_ROUND);
            // Any event on the key (its deletion, mostly) is worth a new try.
            if etcd.watch(LOCK_KEY, mod_revision + 1, round_end).is_err() {
                std::thread::sleep(POLL.min(round_end.saturating_duration_since(Instant::now())));
            }
        }
    }

    fn keep(etcd: &Etcd, holder: Holder, ttl: Duration) -> UpgradeLock {
        UpgradeLock {
            etcd: etcd.clone(),
            keeper: LeaseKeeper::start(etcd.clone(), holder.lease, ttl),
            holder,
        }
    }

    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    pub fn lease(&self) -> LeaseId {
        self.holder.lease
    }

    pub fn keeper(&self) -> &LeaseKeeper {
        &self.keeper
    }

    /// Stops renewing here but leaves the lease (and the lock) in place for
    /// the next boot to [`resume`]; it expires after its TTL otherwise.
    pub fn detach(self) -> Result<Holder, LeaseLost> {
        self.keeper.stop().map(|()| self.holder)
    }

    /// Stops renewing and releases the lock (see [`release`]).
    pub fn release(self, node: &str, outcome: &Release) -> Result<(), LockError> {
        let lost = self.keeper.stop();
        release(&self.etcd, node, self.holder.lease, outcome)?;
        lost.map_err(LockError::Lost)
    }
}

/// Adopts this node's own lock found in etcd: keeps its lease alive, and
/// rewrites the record if the target changed. None if it vanished meanwhile.
fn adopt(
    etcd: &Etcd,
    mut current: Holder,
    lease: Option<LeaseId>,
    target: &str,
) -> Result<Option<UpgradeLock>, LockError> {
    let Some(lease) = lease else {
        // Never expires without a lease; ours anyway, so take it over anew.
        etcd.delete(LOCK_KEY)?;
        return Ok(None);
    };
    let ttl = match etcd.lease_keepalive(lease) {
        Ok(ttl) => ttl,
        Err(gateway::Error::LeaseGone { .. }) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    if current.target != target || current.lease != lease {
        current.target = target.to_string();
        current.lease = lease;
        match etcd.put(LOCK_KEY, &to_json(&current), Some(lease)) {
            Ok(()) => {}
            Err(gateway::Error::LeaseGone { .. }) => return Ok(None),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(Some(UpgradeLock::keep(etcd, current, ttl)))
}

fn to_json(holder: &Holder) -> Vec<u8> {
    // A struct of strings and numbers always serializes.
    serde_json::to_vec(holder).unwrap_or_default()
}

fn revoke_quietly(etcd: &Etcd, lease: LeaseId) {
    // Unused; it would expire after its TTL anyway.
    let _ = etcd.lease_revoke(lease);
}

/// Ends an upgrade's hold on the lock: on failure first records
/// `/bascule/nodes/<node>/last-failure` (without a lease, so it stays for
/// the operator), then revokes the lease, which deletes the lock. A lease
/// already gone counts as released.
pub fn release(
    etcd: &Etcd,
    node: &str,
    lease: LeaseId,
    outcome: &Release,
) -> Result<(), LockError> {
    if let Release::Failed { version, reason } = outcome {
        let failure = LastFailure {
            version: version.clone(),
            reason: reason.clone(),
            unix: desired::unix_now(),
        };
        desired::put_last_failure(etcd, node, &failure)?;
    }
    match etcd.lease_revoke(lease) {
        Ok(()) | Err(gateway::Error::LeaseGone { .. }) => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Continues keeping `lease` alive after a reboot (its id read from what
/// the previous boot recorded), at the TTL it was granted with.
pub fn resume(etcd: &Etcd, lease: LeaseId) -> Result<LeaseKeeper, LockError> {
    match etcd.lease_time_to_live(lease) {
        Ok(ttl) => Ok(LeaseKeeper::start(etcd.clone(), lease, ttl.granted)),
        Err(gateway::Error::LeaseGone { .. }) => Err(LockError::LeaseGone { lease }),
        Err(error) => Err(error.into()),
    }
}

/// Where the keeper thread leaves the loss of its lease.
type LostSlot = Arc<(Mutex<Option<LeaseLost>>, Condvar)>;

/// A thread renewing a lease every TTL/3 until stopped or the lease is lost.
/// Dropping it stops renewing (the lease then runs out its TTL).
pub struct LeaseKeeper {
    lease: LeaseId,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    lost: LostSlot,
}

impl fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("lease", &self.lease)
            .field("lost", &self.lost())
            .finish()
    }
}

impl LeaseKeeper {
    /// Renews `lease` (granted with `ttl`) at once and then every `ttl`/3.
    pub fn start(etcd: Etcd, lease: LeaseId, ttl: Duration) -> LeaseKeeper {
        let interval = (ttl / 3).max(Duration::from_millis(100));
        // A keep-alive slower than the interval is as bad as a lost one.
        let etcd = etcd.with_timeout(etcd.timeout().min(interval));
        let (stop, stopped) = mpsc::channel();
        let lost: LostSlot = Arc::new((Mutex::new(None), Condvar::new()));
        let slot = Arc::clone(&lost);
        let thread = std::thread::Builder::new()
            .name(format!("lease-{lease}"))
            .spawn(move || {
                if let Some(loss) = keep_alive(&etcd, lease, ttl, interval, &stopped) {
                    let (mutex, condvar) = &*slot;
                    if let Ok(mut guard) = mutex.lock() {
                        *guard = Some(loss);
                    }
                    condvar.notify_all();
                }
            });
        let (thread, lost) = match thread {
            Ok(thread) => (Some(thread), lost),
            Err(error) => {
                let slot: LostSlot = Arc::new((
                    Mutex::new(Some(LeaseLost::Unrenewed {
                        lease,
                        last_error: format!("cannot start the keep-alive thread: {error}"),
                    })),
                    Condvar::new(),
                ));
                (None, slot)
            }
        };
        LeaseKeeper {
            lease,
            stop: Some(stop),
            thread,
            lost,
        }
    }

    pub fn lease(&self) -> LeaseId {
        self.lease
    }

    /// Whether the lease was lost, without waiting.
    pub fn lost(&self) -> Option<LeaseLost> {
        self.lost.0.lock().ok().and_then(|guard| guard.clone())
    }

    /// Waits up to `timeout` for the lease to be lost.
    pub fn wait_lost(&self, timeout: Duration) -> Option<LeaseLost> {
        let (mutex, condvar) = &*self.lost;
        let guard = mutex.lock().ok()?;
        let (guard, _) = condvar
            .wait_timeout_while(guard, timeout, |lost| lost.is_none())
            .ok()?;
        guard.clone()
    }

    /// Stops renewing; Err if the lease had been lost already.
    pub fn stop(mut self) -> Result<(), LeaseLost> {
        self.halt();
        self.lost().map_or(Ok(()), Err)
    }

    fn halt(&mut self) {
        // Dropping the sender wakes the thread's wait at once.
        self.stop.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        self.halt();
    }
}

/// The keeper thread's loop; returns the loss, or None when stopped.
fn keep_alive(
    etcd: &Etcd,
    lease: LeaseId,
    ttl: Duration,
    interval: Duration,
    stopped: &mpsc::Receiver<()>,
) -> Option<LeaseLost> {
    let mut renewed = Instant::now();
    let mut wait = Duration::ZERO;
    loop {
        match stopped.recv_timeout(wait) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(mpsc::RecvTimeoutError::Disconnected) => return None,
        }
        wait = interval;
        match etcd.lease_keepalive(lease) {
            Ok(_) => renewed = Instant::now(),
            Err(gateway::Error::LeaseGone { .. }) => return Some(LeaseLost::Gone { lease }),
            // Transient (an endpoint down, an election): try again next
            // round, unless a whole TTL went by without a renewal.
            Err(error) if renewed.elapsed() >= ttl => {
                return Some(LeaseLost::Unrenewed {
                    lease,
                    last_error: error.cause(),
                })
            }
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holder_json_and_messages() {
        let holder = Holder {
            holder: "cp2".into(),
            target: "2.0.0".into(),
            lease: LeaseId(0x694d77aa9e38260f),
            since_unix: 1700000000,
        };
        let value = serde_json::to_value(&holder).unwrap();
        assert_eq!(
            value,
            serde_json::json!({"holder": "cp2", "target": "2.0.0", "lease": "694d77aa9e38260f", "since_unix": 1700000000u64})
        );
        assert_eq!(serde_json::from_value::<Holder>(value).unwrap(), holder);
        let timeout = LockError::Timeout {
            holder,
            waited_s: 600,
        };
        let message = timeout.to_string();
        assert!(
            message
                .starts_with("/bascule/upgrade-lock is still held by cp2 (upgrading to 2.0.0 for "),
            "{message}"
        );
        assert!(
            message.ends_with("`etcdctl lease revoke 694d77aa9e38260f`"),
            "{message}"
        );
    }

    #[test]
    fn a_keeper_of_an_unreachable_lease_reports_it_lost_after_the_ttl() {
        let etcd = Etcd::new(
            vec!["http://127.0.0.1:1".into()],
            Duration::from_millis(200),
        );
        let keeper = LeaseKeeper::start(etcd, LeaseId(1), Duration::from_millis(300));
        let lost = keeper.wait_lost(Duration::from_secs(5));
        assert!(
            matches!(&lost, Some(LeaseLost::Unrenewed { lease: LeaseId(1), last_error }) if last_error == "connection refused"),
            "{lost:?}"
        );
        assert_eq!(keeper.stop(), Err(lost.unwrap()));
    }

    #[test]
    fn stopping_a_keeper_is_prompt() {
        let etcd = Etcd::new(
            vec!["http://127.0.0.1:1".into()],
            Duration::from_millis(200),
        );
        let keeper = LeaseKeeper::start(etcd, LeaseId(1), Duration::from_secs(60));
        let started = Instant::now();
        assert_eq!(keeper.stop(), Ok(()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
