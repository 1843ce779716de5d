//! The cluster's upgrade lease around the disruptive phases: taken at the
//! end of phase 1 (so a refusal still changes nothing), released here only
//! when the run stops and the node goes on running its current slot; after
//! a reboot the booted slot releases it (see docs/upgrade.md).

use crate::clock::Clock;
use crate::host::{ClusterLock, Host, LeaseHolder};
use crate::journal::{Note, Phase};
use crate::options::UpgradeOptions;
use crate::outcome::Refusal;
use crate::progress::Event;
use crate::run::{Run, Stop};

impl<H: Host + ?Sized, C: Clock + ?Sized> Run<'_, H, C> {
    /// Takes the lease (waiting for it, each holder noted once) and has
    /// the host check etcd's quorum. A failure is a refusal.
    pub(crate) fn cluster_lock(
        &mut self,
        target: &str,
        options: &UpgradeOptions,
    ) -> Result<(), Stop> {
        let mut waits: Vec<Note> = Vec::new();
        let progress = &mut *self.progress;
        let mut waiting = |h: &LeaseHolder| {
            let note = Note::WaitingForLease {
                holder: h.node.clone(),
                target: h.target.clone(),
            };
            if waits.last() != Some(&note) {
                progress.event(Event::Note {
                    phase: Phase::Verify,
                    note: note.clone(),
                });
                waits.push(note);
            }
        };
        let lock = self
            .host
            .cluster_lock(target, options.data, options.quorum, &mut waiting);
        self.record_notes(Phase::Verify, waits);
        match lock.map_err(Refusal::Cluster)? {
            ClusterLock::NotClustered => {}
            ClusterLock::Held { lease } => {
                self.lease = Some(lease.clone());
                self.note(Note::LeaseTaken { lease });
            }
        }
        Ok(())
    }

    /// The run stopped and the node keeps its current slot: give the lease
    /// back, with the failure recorded for the operator.
    pub(crate) fn release_lease(&mut self, failure: &str) {
        if self.lease.take().is_some() {
            self.host.cluster_release(failure);
            self.note_last(Note::LeaseReleased);
        }
    }
}
